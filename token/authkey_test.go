package token

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"errors"
	"math/big"
	"testing"

	"github.com/miekg/pkcs11"
)

// An authority key unwraps and never decrypts: C_Decrypt under it is refused by the token, so
// no file key it opens can come back to the host as bytes.
func TestGenerateUnwrapRSA(t *testing.T) {
	tk := mainToken(t)
	kp, err := tk.GenerateUnwrapRSA(uniq(t, "authority"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kp.PrivateAttributes()
	if err != nil {
		t.Fatal(err)
	}
	want := KeyAttributes{Sensitive: true, AlwaysSensitive: true, NeverExtractable: true, Token: true,
		Local: true, Decrypt: false, Unwrap: true}
	if a != want {
		t.Errorf("PrivateAttributes() = %+v, want %+v", a, want)
	}
	if !a.NeverLeftToken() {
		t.Error("a generated key does not count as never having left the token")
	}
	msg := randBytes(t, FileKeySize)
	ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, kp.Public, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := kp.DecryptOAEP(crypto.SHA1, ct); err == nil {
		t.Fatalf("C_Decrypt under an authority key returned %d bytes", len(pt))
	} else if e := (*Error)(nil); !errors.As(err, &e) || e.Code != pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED {
		t.Errorf("C_Decrypt under an authority key: %v, want CKR_KEY_FUNCTION_NOT_PERMITTED", err)
	}
	sk, err := kp.UnwrapOAEPSealed(crypto.SHA1, ct)
	if err != nil {
		t.Fatalf("unwrap under an authority key: %v", err)
	}
	defer sk.Destroy()
	if sk.RevealsValue() {
		t.Error("the unwrapped key's value left the token")
	}
	// The OAEP-hash probe cannot decrypt, so it unwraps; SoftHSM2 2.6.1 does OAEP with SHA-1 only.
	if h, err := kp.OAEPHash(); err != nil || h != crypto.SHA1 {
		t.Errorf("OAEPHash() = %v, %v; want SHA-1 on SoftHSM2", h, err)
	}
}

// TestUnwrapTemplateProbe records what the module does with CKA_UNWRAP_TEMPLATE =
// {CKA_SENSITIVE true} on the unwrapping key when an unwrap asks for a non-sensitive key. The
// README ("What the HSM enforces") reports the result for SoftHSM2 2.6.1, which this test pins:
// if a module update changes it, the test fails and the README must change too.
func TestUnwrapTemplateProbe(t *testing.T) {
	tk := mainToken(t)
	kp, err := tk.GenerateUnwrapRSA(uniq(t, "tmpl"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	msg := randBytes(t, FileKeySize)
	ct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, kp.Public, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	mech, _ := oaepMech(crypto.SHA1)
	tmpl := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
	}
	// Control: the same unwrap under a key without the template works, so a refusal below is
	// the template's doing.
	plain := sharedKey(t)
	pct, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, plain.Public, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	ph, err := tk.ctx.UnwrapKey(tk.sh, mech, plain.priv, pct, tmpl)
	if err != nil {
		t.Fatalf("a non-sensitive unwrap without the template: %v", err)
	}
	tk.ctx.DestroyObject(tk.sh, ph)

	h, err := tk.ctx.UnwrapKey(tk.sh, mech, kp.priv, ct, tmpl)
	if err != nil {
		t.Logf("SoftHSM2 refused a non-sensitive unwrap under the template: %v", err)
		if !isCode(err, pkcs11.CKR_TEMPLATE_INCONSISTENT) {
			t.Errorf("unexpected refusal %v", err)
		}
		return
	}
	defer tk.ctx.DestroyObject(tk.sh, h)
	sk := &SecretKey{t: tk, h: h}
	attrs, err := sk.Attributes()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("SoftHSM2 unwrapped a key with CKA_SENSITIVE=%v, value revealed: %v", attrs.Sensitive, sk.RevealsValue())
	t.Errorf("the module does not enforce CKA_UNWRAP_TEMPLATE: it made a key with CKA_SENSITIVE=%v", attrs.Sensitive)
}

// importRSA creates an RSA private key with C_CreateObject, as someone holding the PIN could:
// the token reports it CKA_LOCAL false.
func importRSA(t *testing.T, tk *Token, label string) *KeyPair {
	t.Helper()
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	id := randBytes(t, 16)
	b := func(i *big.Int) []byte { return i.Bytes() }
	h, err := tk.ctx.CreateObject(tk.sh, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, b(k.N)),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(k.E)).Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE_EXPONENT, b(k.D)),
		pkcs11.NewAttribute(pkcs11.CKA_PRIME_1, b(k.Primes[0])),
		pkcs11.NewAttribute(pkcs11.CKA_PRIME_2, b(k.Primes[1])),
		pkcs11.NewAttribute(pkcs11.CKA_EXPONENT_1, b(k.Precomputed.Dp)),
		pkcs11.NewAttribute(pkcs11.CKA_EXPONENT_2, b(k.Precomputed.Dq)),
		pkcs11.NewAttribute(pkcs11.CKA_COEFFICIENT, b(k.Precomputed.Qinv)),
	})
	if err != nil {
		t.Fatal(err)
	}
	kp, err := tk.loadKeyPair(h)
	if err != nil {
		t.Fatal(err)
	}
	return kp
}

// A key created with C_CreateObject says so: CKA_LOCAL is false, and even though it is marked
// sensitive and not extractable now, it does not count as never having left the token.
func TestImportedKeyIsNotLocal(t *testing.T) {
	tk := mainToken(t)
	kp := importRSA(t, tk, uniq(t, "imported"))
	a, err := kp.PrivateAttributes()
	if err != nil {
		t.Fatal(err)
	}
	if a.Local || a.AlwaysSensitive || a.NeverLeftToken() {
		t.Errorf("an imported key reads %+v, NeverLeftToken %v", a, a.NeverLeftToken())
	}
}
