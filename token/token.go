package token

import (
	"crypto"
	"crypto/rsa"
	"fmt"

	"github.com/miekg/pkcs11"
)

// Token is one open read-write session on one token. It is not safe for
// concurrent use: PKCS#11 sessions run one operation at a time, so give each
// goroutine its own Token (Module.Open again).
type Token struct {
	m    *Module
	ctx  *pkcs11.Ctx
	sh   pkcs11.SessionHandle
	info SlotInfo
	caps *Capabilities
	// pubs caches imported session public keys by PKIX DER, so wrapping
	// many files to the same recipient imports its key once.
	pubs    map[string]pkcs11.ObjectHandle
	pubPtrs map[*rsa.PublicKey]pkcs11.ObjectHandle // the same handles, by the caller's pointer
	// noWrapHash remembers the OAEP hashes C_WrapKey refused, so later file keys go straight
	// to the host wrap (see FileKey.WrapOAEP).
	noWrapHash map[crypto.Hash]bool
	// measureKEK is the session's key for measuring unwrapped keys (see measureLen); 0 until
	// the first measurement.
	measureKEK pkcs11.ObjectHandle
	closed     bool
}

// Info returns the slot and token description read when the token was opened.
func (t *Token) Info() SlotInfo { return t.info }

// Close destroys the cached imported public keys and the measuring key, and closes the session.
// Session objects (file keys) die with the session. Close does not log out
// explicitly; the token does that when the process's last session closes.
func (t *Token) Close() error {
	if t == nil || t.closed {
		return nil
	}
	t.closed = true
	t.m.track(t, false)
	for k, h := range t.pubs {
		_ = t.ctx.DestroyObject(t.sh, h) // best effort; CloseSession removes it anyway
		delete(t.pubs, k)
	}
	clear(t.pubPtrs)
	if t.measureKEK != 0 {
		_ = t.ctx.DestroyObject(t.sh, t.measureKEK) // likewise
		t.measureKEK = 0
	}
	return tokenErr(fmt.Sprintf("close token %q", t.info.Label), ctxPlain, t.ctx.CloseSession(t.sh))
}

// Login logs the user in with one C_Login call. A wrong PIN is never
// retried, since each failure counts toward locking the token. If the
// token's flags already say the PIN is locked, C_Login is not even called.
// If the user is already logged in (login state is per process and token),
// or the token needs no login at all (see NeedsLogin), the PIN is not sent.
func (t *Token) Login(pin string) error {
	op := fmt.Sprintf("log in to token %q", t.info.Label)
	if !t.NeedsLogin() {
		return nil
	}
	flags, err := t.tokenFlags()
	if err != nil {
		return tokenErr(op, ctxPlain, err)
	}
	if flags&pkcs11.CKF_USER_PIN_LOCKED != 0 {
		return &Error{Op: op, Msg: sentences[pkcs11.CKR_PIN_LOCKED].msg + "; p11escrow did not try the PIN", Kind: ErrPINLocked}
	}
	if pin == "" && flags&pkcs11.CKF_PROTECTED_AUTHENTICATION_PATH == 0 {
		return newErr(op, ErrWrongPIN, "no PIN was given; supply the user PIN")
	}
	err = t.ctx.Login(t.sh, pkcs11.CKU_USER, pin)
	if err == nil || isCode(err, pkcs11.CKR_USER_ALREADY_LOGGED_IN) {
		return nil
	}
	e := tokenErr(op, ctxPlain, err)
	if isCode(err, pkcs11.CKR_PIN_INCORRECT) {
		e.(*Error).Msg += t.pinWarning()
	}
	return e
}

// pinWarning reads the flags after a failed login, so the user learns
// before a second attempt whether it could lock the token.
func (t *Token) pinWarning() string {
	flags, err := t.tokenFlags()
	switch {
	case err != nil:
		return ""
	case flags&pkcs11.CKF_USER_PIN_LOCKED != 0:
		return "; the token is now locked"
	case flags&pkcs11.CKF_USER_PIN_FINAL_TRY != 0:
		return "; careful: one more wrong PIN locks the token"
	case flags&pkcs11.CKF_USER_PIN_COUNT_LOW != 0:
		return "; careful: the token says tries are running low"
	}
	return ""
}

func (t *Token) tokenFlags() (uint, error) {
	ti, err := t.ctx.GetTokenInfo(t.info.SlotID)
	return ti.Flags, err
}

// NeedsLogin reports whether a PIN is needed: the token says some functions
// need a login (CKF_LOGIN_REQUIRED) and the user is not logged in yet. A
// token without CKF_LOGIN_REQUIRED, such as an NSS database with an empty
// password, serves its private keys with no C_Login, and refuses any PIN but
// the empty one; its session state may stay public all the same.
func (t *Token) NeedsLogin() bool {
	return t.info.LoginRequired && !t.LoggedIn()
}

// LoggedIn reports whether the session is in a user state (C_GetSessionInfo).
func (t *Token) LoggedIn() bool {
	si, err := t.ctx.GetSessionInfo(t.sh)
	return err == nil && (si.State == pkcs11.CKS_RW_USER_FUNCTIONS || si.State == pkcs11.CKS_RO_USER_FUNCTIONS)
}

// Random returns n bytes from the token's generator (C_GenerateRandom).
func (t *Token) Random(n int) ([]byte, error) {
	if n <= 0 {
		return nil, newErr("generate random", nil, "asked for %d random bytes; ask for at least one", n)
	}
	b, err := t.ctx.GenerateRandom(t.sh, n)
	if err != nil {
		return nil, tokenErr("generate random", ctxPlain, err)
	}
	if len(b) != n {
		return nil, newErr("generate random", nil, "the token returned %d random bytes instead of %d; the module is faulty", len(b), n)
	}
	return b, nil
}

// findObjects returns every object matching tmpl.
func (t *Token) findObjects(tmpl []*pkcs11.Attribute) ([]pkcs11.ObjectHandle, error) {
	if err := t.ctx.FindObjectsInit(t.sh, tmpl); err != nil {
		return nil, tokenErr("search token objects", ctxPlain, err)
	}
	var all []pkcs11.ObjectHandle
	for {
		hs, _, err := t.ctx.FindObjects(t.sh, 64)
		if err != nil {
			_ = t.ctx.FindObjectsFinal(t.sh)
			return nil, tokenErr("search token objects", ctxPlain, err)
		}
		if len(hs) == 0 {
			break
		}
		all = append(all, hs...)
	}
	return all, tokenErr("search token objects", ctxPlain, t.ctx.FindObjectsFinal(t.sh))
}

// attrs reads the given attribute types of h, returned by type.
// readSecret reads a secret object's CKA_VALUE, through secretValue where the module's own
// C_GetAttributeValue was found (its C buffer zeroed), else through miekg/pkcs11.
func (t *Token) readSecret(h pkcs11.ObjectHandle) ([]byte, error) {
	if v, ok, err := t.secretValue(h); ok {
		return v, err
	}
	a, err := t.attrs(h, pkcs11.CKA_VALUE)
	if err != nil {
		return nil, err
	}
	return a[pkcs11.CKA_VALUE], nil
}

func (t *Token) attrs(h pkcs11.ObjectHandle, types ...uint) (map[uint][]byte, error) {
	q := make([]*pkcs11.Attribute, len(types))
	for i, typ := range types {
		q[i] = pkcs11.NewAttribute(typ, nil)
	}
	got, err := t.ctx.GetAttributeValue(t.sh, h, q)
	if err != nil {
		return nil, err
	}
	out := make(map[uint][]byte, len(got))
	for _, a := range got {
		out[a.Type] = a.Value
	}
	return out, nil
}

// boolAttr decodes a CK_BBOOL.
func boolAttr(v []byte) bool { return len(v) == 1 && v[0] != 0 }
