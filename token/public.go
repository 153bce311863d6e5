package token

import (
	"crypto/rsa"

	"github.com/miekg/pkcs11"
)

// PublicKeys returns the RSA public key objects that the session can see. Public objects need no
// login, so a caller can learn whether a file is addressed to this token before it asks for the
// PIN: a PIN typed for nothing is a PIN typed once more, and PINs lock tokens. A key pair whose
// public half is not stored on the token is missing from the list.
func (t *Token) PublicKeys() ([]*rsa.PublicKey, error) {
	hs, err := t.findObjects(rsaClass(pkcs11.CKO_PUBLIC_KEY))
	if err != nil {
		return nil, err
	}
	var out []*rsa.PublicKey
	for _, h := range hs {
		if pub, err := t.publicFromObject(h); err == nil {
			out = append(out, pub)
		}
	}
	return out, nil
}
