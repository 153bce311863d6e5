package token

import (
	"crypto"

	"github.com/miekg/pkcs11"
)

// PublicKeys returns the RSA and EC (P-256, P-384) public key objects that the session can see. Public objects need no
// login, so a caller can learn whether a file is addressed to this token before it asks for the
// PIN: a PIN typed for nothing is a PIN typed once more, and PINs lock tokens. A key pair whose
// public half is not stored on the token is missing from the list.
func (t *Token) PublicKeys() ([]crypto.PublicKey, error) {
	var out []crypto.PublicKey
	for _, class := range [][]*pkcs11.Attribute{rsaClass(pkcs11.CKO_PUBLIC_KEY), ecClass(pkcs11.CKO_PUBLIC_KEY)} {
		hs, err := t.findObjects(class)
		if err != nil {
			return nil, err
		}
		for _, h := range hs {
			if pub, err := t.objectPublic(h); err == nil {
				out = append(out, pub)
			}
		}
	}
	return out, nil
}
