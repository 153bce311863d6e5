package token

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
)

// TestDecryptOAEP checks DecryptOAEP, one C_Decrypt (the call count is proven with pkcs11-spy
// in cmd/p11escrow/testdata/tpm/onedecrypt.txt): it returns the plaintext of any length,
// reports a bad ciphertext as ErrDecrypt, and works for a key made by another tool without
// CKA_UNWRAP.
func TestDecryptOAEP(t *testing.T) {
	tk := mainToken(t)
	kp := sharedKey(t)
	for _, n := range []int{16, 32, 100} {
		msg := randBytes(t, n)
		ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, kp.Public, msg, nil)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := kp.DecryptOAEP(crypto.SHA1, ct); err != nil || !bytes.Equal(got, msg) {
			t.Errorf("DecryptOAEP of %d bytes = %x, %v", n, got, err)
		}
	}
	if _, err := kp.DecryptOAEP(crypto.SHA1, randBytes(t, kp.Public.Size())); !errors.Is(err, ErrDecrypt) {
		t.Errorf("DecryptOAEP(garbage) = %v, want ErrDecrypt", err)
	}

	label := uniq(t, "decrypt-only")
	id := randBytes(t, 16)
	pub := rsaPublicTemplate(label, id, 2048)
	priv := rsaPrivateTemplate(label, id, false)
	for i, a := range priv {
		if a.Type == pkcs11.CKA_UNWRAP {
			priv[i] = pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false)
		}
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}
	if _, _, err := tk.ctx.GenerateKeyPair(tk.sh, mech, pub, priv); err != nil {
		t.Fatal(err)
	}
	only, err := tk.FindKeyPair(label, nil)
	if err != nil {
		t.Fatal(err)
	}
	msg := randBytes(t, FileKeySize)
	ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, only.Public, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := only.DecryptOAEP(crypto.SHA1, ct); err != nil || !bytes.Equal(got, msg) {
		t.Errorf("DecryptOAEP without CKA_UNWRAP = %x, %v", got, err)
	}
}
