package token

import (
	"crypto/ecdh"
	"crypto/rand"
	"testing"

	"github.com/miekg/pkcs11"
)

// TestDeriveOnlyKeyGivesReadableSecret pins what README.md ("What the HSM enforces") says of an
// EC authority key: CKA_DERIVE lets whoever holds the PIN derive the shared secret into a
// readable key with any PKCS#11 tool; unlike an unwrap template, nothing on the private key
// keeps derived keys sensitive. If a module refuses this, that README paragraph is too
// cautious for it; on SoftHSM2 2.6.1 it holds.
func TestDeriveOnlyKeyGivesReadableSecret(t *testing.T) {
	tk := mainToken(t)
	kp, err := tk.GenerateEC(uniq(t, "derive-only"), "p256")
	if err != nil {
		t.Fatal(err)
	}
	peer, err := ecdh.P256().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	readable := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
	}
	h, err := kp.deriveWith(peer.PublicKey().Bytes(), readable)
	if err != nil {
		t.Fatalf("SoftHSM2 refused to derive a readable secret with a derive-only key: %v (update README.md)", err)
	}
	defer tk.ctx.DestroyObject(tk.sh, h)
	a, err := tk.attrs(h, pkcs11.CKA_VALUE)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := kp.Public.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	z, err := peer.ECDH(pub)
	if err != nil {
		t.Fatal(err)
	}
	if string(a[pkcs11.CKA_VALUE]) != string(z) {
		t.Fatalf("the derived secret is not Z: %d bytes", len(a[pkcs11.CKA_VALUE]))
	}
}
