package token

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/p11escrow/p11escrow/escrow"
)

// TestWrapOAEPSHA256OnSHA1Token: SoftHSM2 wraps with OAEP-SHA1 only, yet a recipient whose key
// file says sha256 (a TPM user) must get a stanza. The token's FileKey says it cannot
// (ErrHostWrap), and escrow.RSARecipient wraps the key on the host then, with SHA-256: the
// recipient's SHA-256 decryption recovers it.
func TestWrapOAEPSHA256OnSHA1Token(t *testing.T) {
	tok := mainToken(t)
	recipient, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	for range 2 { // the second file key goes straight to the host
		fk, err := tok.NewFileKey([]byte("mixed-site-test"))
		if err != nil {
			t.Fatal(err)
		}
		if fk.Path() != PathTokenWrap {
			t.Fatalf("path %v; this test needs SoftHSM2's token-wrap path", fk.Path())
		}
		if _, err := fk.WrapOAEP(&recipient.PublicKey, crypto.SHA256); !errors.Is(err, ErrHostWrap) {
			t.Fatalf("WrapOAEP(SHA-256) on SoftHSM2 = %v, want ErrHostWrap", err)
		}
		st, err := (&escrow.RSARecipient{Public: &recipient.PublicKey, Hash: crypto.SHA256, Role: escrow.RoleRecipient}).Wrap(fk)
		if err != nil {
			t.Fatalf("RSARecipient.Wrap(SHA-256) on SoftHSM2: %v", err)
		}
		w := st.Body
		got, err := rsa.DecryptOAEP(sha256.New(), nil, recipient, w, nil)
		if err != nil {
			t.Fatalf("the SHA-256 wrap does not decrypt with SHA-256: %v", err)
		}
		want, err := fk.Value()
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, want) {
			t.Error("the SHA-256 wrap holds another key")
		}
		fk.Destroy()
	}
	if !tok.noWrapHash[crypto.SHA256] || tok.noWrapHash[crypto.SHA1] {
		t.Errorf("remembered refusals %v; want SHA-256 only", tok.noWrapHash)
	}
}
