package token

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"errors"
	"fmt"
	"strings"
	"testing"
)

// TestUnwrapRefusesShortKeys is FORMAT.md section 2.2's 32-byte key rule on the token: SoftHSM2
// unwraps a 16- or 24-byte AES key and reports CKA_VALUE_LEN 0, and would then compute GCM and
// digests with it. Both kinds of unwrap must refuse it, and a sealed 32-byte key must still come
// out non-extractable. (A key of 25 to 31 bytes measures like a 32-byte one, see measureLen, but
// no AES operation accepts it, so it can never open a header.)
func TestUnwrapRefusesShortKeys(t *testing.T) {
	kp := sharedKey(t)
	for _, n := range []int{16, 24, 33, 40, 32} {
		key := randBytes(t, n)
		wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, kp.Public, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		for _, sealed := range []bool{false, true} {
			name := fmt.Sprintf("%d bytes, sealed %v", n, sealed)
			unwrap := kp.UnwrapOAEP
			if sealed {
				unwrap = kp.UnwrapOAEPSealed
			}
			sk, err := unwrap(crypto.SHA1, wrapped)
			if n != FileKeySize {
				if !errors.Is(err, ErrKeyLength) || !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "bytes, not 32") {
					t.Errorf("%s: %v, want a refusal", name, err)
				}
				if sk != nil {
					sk.Destroy()
				}
				continue
			}
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			attrs, err := sk.Attributes()
			if err != nil || !attrs.Sensitive || attrs.Extractable != !sealed {
				t.Errorf("%s: attributes %+v, %v", name, attrs, err)
			}
			sk.Destroy()
		}
	}
}
