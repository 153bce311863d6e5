package token

import (
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// ErrUnsupportedKey: the key exists but is of a type p11escrow cannot encrypt with (EC on
// curves other than P-256 and P-384, Edwards keys).
var ErrUnsupportedKey = errors.New("unsupported key type")

// OtherKey is a private key that is not RSA, listed so that a user sees the keys other tools
// made, with their type, instead of wondering where they went. EC exchange keys are listed
// here too; ECKeyPairs says which EC keys p11escrow can use.
type OtherKey struct {
	Label, Type string // "EC-P256", "EC-P384", "EC-P521", "EC", "EDWARDS", or "CKK 0x..."
	ID          []byte
	KeyAttributes
}

// curveOIDs names the curves of CKA_EC_PARAMS (DER OIDs).
var curveOIDs = map[string]string{
	string(oidP256): "EC-P256",
	string(oidP384): "EC-P384",
	string([]byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x23}): "EC-P521",
}

// OtherPrivateKeys lists the private keys that are not RSA. Like KeyPairs, it sees private keys
// only after Login.
func (t *Token) OtherPrivateKeys() ([]OtherKey, error) {
	hs, err := t.findObjects([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY)})
	if err != nil {
		return nil, err
	}
	var out []OtherKey
	for _, h := range hs {
		a, err := t.attrs(h, pkcs11.CKA_KEY_TYPE, pkcs11.CKA_LABEL, pkcs11.CKA_ID,
			pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_ALWAYS_SENSITIVE,
			pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_TOKEN)
		if err != nil {
			return nil, tokenErr("read key attributes", ctxPlain, err)
		}
		kt := ulong(a[pkcs11.CKA_KEY_TYPE])
		if kt == pkcs11.CKK_RSA {
			continue
		}
		out = append(out, OtherKey{Label: string(a[pkcs11.CKA_LABEL]), ID: a[pkcs11.CKA_ID], Type: t.keyTypeName(h, kt),
			KeyAttributes: KeyAttributes{
				Sensitive:        boolAttr(a[pkcs11.CKA_SENSITIVE]),
				Extractable:      boolAttr(a[pkcs11.CKA_EXTRACTABLE]),
				AlwaysSensitive:  boolAttr(a[pkcs11.CKA_ALWAYS_SENSITIVE]),
				NeverExtractable: boolAttr(a[pkcs11.CKA_NEVER_EXTRACTABLE]),
				Token:            boolAttr(a[pkcs11.CKA_TOKEN]),
			}})
	}
	return out, nil
}

func (t *Token) keyTypeName(h pkcs11.ObjectHandle, kt uint) string {
	switch kt {
	case pkcs11.CKK_EC:
		if a, err := t.attrs(h, pkcs11.CKA_EC_PARAMS); err == nil {
			if name, ok := curveOIDs[string(a[pkcs11.CKA_EC_PARAMS])]; ok {
				return name
			}
		}
		return "EC"
	case 0x40: // CKK_EC_EDWARDS (PKCS#11 3.0), which miekg/pkcs11 v1.1.2 does not name
		return "EDWARDS"
	}
	return fmt.Sprintf("CKK 0x%X", kt)
}

// unsupportedKey explains why a key named for encryption is not found among the RSA keys, if it
// exists as another type; it returns nil otherwise.
func (t *Token) unsupportedKey(label string, id []byte) error {
	keys, err := t.OtherPrivateKeys()
	if err != nil {
		return nil
	}
	for _, k := range keys {
		if (label == "" || k.Label == label) && (len(id) == 0 || string(k.ID) == string(id)) {
			what := describeKey(label, id)
			if k.Type == "EC-P256" || k.Type == "EC-P384" {
				return nil // an EC exchange key: FindECKeyPair finds it
			}
			if strings.HasPrefix(k.Type, "EC") || k.Type == "EDWARDS" {
				return newErr("find key "+what, ErrUnsupportedKey,
					"the key %s on token %q is an %s key: only EC keys on P-256 and P-384 are supported; use one of those or an RSA key (p11escrow key generate --type ec-p256)", what, t.info.Label, k.Type)
			}
			return newErr("find key "+what, ErrUnsupportedKey,
				"the key %s on token %q is of type %s, which p11escrow cannot encrypt with; use an RSA key", what, t.info.Label, k.Type)
		}
	}
	return nil
}
