package token

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
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

// TestMeasuringKeyOnePerSession: the key that measures unwrapped keys is made once per session,
// not once per unwrap, can only wrap, never leaves the token, and goes with the session.
func TestMeasuringKeyOnePerSession(t *testing.T) {
	kp := sharedKey(t)
	opened := kp.t.Sessions(1)
	if len(opened) != 1 {
		t.Fatal("no session")
	}
	s := opened[0]
	on := kp.On(s)
	count := func() []pkcs11.ObjectHandle {
		t.Helper()
		if err := s.ctx.FindObjectsInit(s.sh, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow length check")}); err != nil {
			t.Fatal(err)
		}
		defer s.ctx.FindObjectsFinal(s.sh)
		hs, _, err := s.ctx.FindObjects(s.sh, 100)
		if err != nil {
			t.Fatal(err)
		}
		return hs
	}
	before := len(count()) // the shared session's own measuring key, if it has measured
	for _, n := range []int{32, 16, 32, 24, 32} {
		wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, kp.Public, randBytes(t, n), nil)
		if err != nil {
			t.Fatal(err)
		}
		sk, err := on.UnwrapOAEPSealed(crypto.SHA1, wrapped)
		if (n == FileKeySize) != (err == nil) {
			t.Fatalf("%d bytes: %v", n, err)
		}
		sk.Destroy()
	}
	hs := count()
	if len(hs) != before+1 {
		t.Fatalf("%d measuring keys after five unwraps on a new session, want one", len(hs)-before)
	}
	a, err := s.ctx.GetAttributeValue(s.sh, s.measureKEK, []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, nil), pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, nil),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, nil), pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, nil),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, nil), pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, nil)})
	if err != nil {
		t.Fatal(err)
	}
	want := []bool{true, false, false, false, false, false}
	for i, attr := range a {
		if got := len(attr.Value) == 1 && attr.Value[0] == 1; got != want[i] {
			t.Errorf("measuring key attribute %#x is %v, want %v", attr.Type, got, want[i])
		}
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if s.measureKEK != 0 {
		t.Error("Close left the measuring key's handle")
	}
}

// TestSecretValueOwnCall: a readable secret's value is read through the module's own
// C_GetAttributeValue (whose C buffer p11escrow zeroes), gives what miekg/pkcs11 gives, and a
// sensitive key's value is refused.
func TestSecretValueOwnCall(t *testing.T) {
	tk := mainToken(t)
	gen := func(sensitive bool) pkcs11.ObjectHandle {
		h, err := tk.ctx.GenerateKey(tk.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)},
			[]*pkcs11.Attribute{
				pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
				pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
				pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, FileKeySize),
				pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
				pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, sensitive),
				pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, !sensitive),
			})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { tk.ctx.DestroyObject(tk.sh, h) })
		return h
	}
	readable := gen(false)
	v, ok, err := tk.secretValue(readable)
	if !ok || err != nil || len(v) != FileKeySize {
		t.Fatalf("secretValue: %d bytes, own call %v, %v", len(v), ok, err)
	}
	a, err := tk.attrs(readable, pkcs11.CKA_VALUE)
	if err != nil || !bytes.Equal(a[pkcs11.CKA_VALUE], v) {
		t.Fatalf("secretValue and GetAttributeValue differ: %v", err)
	}
	if v, ok, err := tk.secretValue(gen(true)); !ok || err == nil || v != nil {
		t.Fatalf("a sensitive key's value: %d bytes, own call %v, %v", len(v), ok, err)
	}
}
