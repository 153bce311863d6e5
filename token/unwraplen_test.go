package token

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"testing"
)

// TestUnwrapRefusesShortKeys: SoftHSM2 reports CKA_VALUE_LEN = 0 after an unwrap, so an AES-128
// or AES-192 key used to come through. Every unwrap must now refuse a key that is not 32 bytes,
// and a sealed key must still end up non-extractable.
func TestUnwrapRefusesShortKeys(t *testing.T) {
	kp := sharedKey(t)
	for _, n := range []int{16, 24, 32} {
		key := make([]byte, n)
		rand.Read(key)
		w, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, kp.Public, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, sealed := range []bool{true, false} {
			var sk *SecretKey
			if sealed {
				sk, err = kp.UnwrapOAEPSealed(crypto.SHA1, w)
			} else {
				sk, err = kp.UnwrapOAEP(crypto.SHA1, w)
			}
			if n != FileKeySize {
				if !errors.Is(err, ErrKeyLength) || !errors.Is(err, ErrDecrypt) || sk != nil {
					t.Errorf("%d-byte key, sealed=%v: unwrap = %v, want ErrDecrypt", n, sealed, err)
				}
				continue
			}
			if err != nil {
				t.Fatalf("32-byte key, sealed=%v: %v", sealed, err)
			}
			a, err := sk.Attributes()
			if err != nil || !a.Sensitive || a.Extractable != !sealed {
				t.Errorf("32-byte key, sealed=%v: attributes %+v, %v", sealed, a, err)
			}
			sk.Destroy()
		}
	}
}
