package token

import (
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// FindObjectToken finds the one token that holds an object with this label and/or CKA_ID, for a
// PKCS#11 URI that names an object but no token. It looks only at objects visible without a
// login (public keys, certificates), so that no token is asked for a PIN before it is chosen.
// It fails with ErrKeyNotFound if no token has such an object, and with ErrAmbiguous if more
// than one does: picking one would be a guess about whose key to use.
func (m *Module) FindObjectToken(label string, id []byte) (Selector, error) {
	const op = "find the token of a key"
	what := "an object " + describeKey(label, id)
	slots, err := m.Slots()
	if err != nil {
		return Selector{}, err
	}
	var found []SlotInfo
	for _, si := range slots {
		if !si.TokenPresent || !si.Initialized {
			continue
		}
		ok, err := m.hasObject(si, label, id)
		if err != nil {
			return Selector{}, err
		}
		if ok {
			found = append(found, si)
		}
	}
	switch len(found) {
	case 1:
		return Selector{Label: found[0].Label, Serial: found[0].Serial}, nil
	case 0:
		return Selector{}, newErr(op, ErrKeyNotFound,
			"no token in %s shows %s without a login; add token= (or serial=) to the URI to name the token", m.path, what)
	}
	names := make([]string, len(found))
	for i, si := range found {
		names[i] = fmt.Sprintf("%q (serial %s)", si.Label, si.Serial)
	}
	return Selector{}, newErr(op, ErrAmbiguous, "%d tokens hold %s: %s; add token= or serial= to the URI to pick one",
		len(found), what, strings.Join(names, ", "))
}

// hasObject opens a short read-only session on si and looks for the object.
func (m *Module) hasObject(si SlotInfo, label string, id []byte) (bool, error) {
	sh, err := m.ctx.OpenSession(si.SlotID, pkcs11.CKF_SERIAL_SESSION)
	if err != nil {
		return false, tokenErr(fmt.Sprintf("open token %q", si.Label), ctxPlain, err)
	}
	defer m.ctx.CloseSession(sh)
	var tmpl []*pkcs11.Attribute
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	if id != nil {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	if err := m.ctx.FindObjectsInit(sh, tmpl); err != nil {
		return false, tokenErr("search token objects", ctxPlain, err)
	}
	hs, _, err := m.ctx.FindObjects(sh, 1)
	if ferr := m.ctx.FindObjectsFinal(sh); err == nil {
		err = ferr
	}
	if err != nil {
		return false, tokenErr("search token objects", ctxPlain, err)
	}
	return len(hs) > 0, nil
}
