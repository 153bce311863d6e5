package token

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"errors"
	"testing"

	"github.com/miekg/pkcs11"
)

// TestSigners generates each signing key type, signs on the token and
// verifies with crypto/ecdsa or crypto/rsa on the host.
func TestSigners(t *testing.T) {
	tk := mainToken(t)
	for _, typ := range []SignKeyType{SignECDSAP256, SignRSAPSS2048} {
		t.Run(string(typ), func(t *testing.T) {
			label := uniq(t, "officer")
			s, err := tk.GenerateSigner(label, typ)
			if err != nil {
				t.Fatal(err)
			}
			digest := sha256.Sum256([]byte("request bytes"))
			var opts crypto.SignerOpts = crypto.SHA256
			if typ != SignECDSAP256 {
				opts = &rsa.PSSOptions{SaltLength: rsa.PSSSaltLengthEqualsHash, Hash: crypto.SHA256}
			}
			sig, err := s.Sign(nil, digest[:], opts)
			if err != nil {
				t.Fatal(err)
			}
			found, err := tk.FindSigner(label)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(found.ID, s.ID) {
				t.Errorf("FindSigner ID %x, generated %x", found.ID, s.ID)
			}
			// Signing keys get their CKA_ID by the same rule as exchange keys, on both halves.
			want, err := KeyID(s.Public())
			if err != nil || !bytes.Equal(s.ID, want) {
				t.Errorf("ID %x, want KeyID %x (%v)", s.ID, want, err)
			}
			for _, class := range []uint{pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_PRIVATE_KEY} {
				hs, err := tk.findObjects([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
					pkcs11.NewAttribute(pkcs11.CKA_LABEL, label), pkcs11.NewAttribute(pkcs11.CKA_ID, want)})
				if err != nil || len(hs) != 1 {
					t.Errorf("class %d objects with the KeyID: %d, %v", class, len(hs), err)
				}
			}
			other := sha256.Sum256([]byte("other bytes"))
			switch pub := found.Public().(type) {
			case *ecdsa.PublicKey:
				if !ecdsa.VerifyASN1(pub, digest[:], sig) {
					t.Error("the ECDSA signature does not verify")
				}
				if ecdsa.VerifyASN1(pub, other[:], sig) {
					t.Error("the ECDSA signature verifies for other bytes")
				}
			case *rsa.PublicKey:
				pss := &rsa.PSSOptions{SaltLength: sha256.Size, Hash: crypto.SHA256}
				if err := rsa.VerifyPSS(pub, crypto.SHA256, digest[:], sig, pss); err != nil {
					t.Errorf("the PSS signature does not verify: %v", err)
				}
				if rsa.VerifyPSS(pub, crypto.SHA256, other[:], sig, pss) == nil {
					t.Error("the PSS signature verifies for other bytes")
				}
			default:
				t.Fatalf("public key of type %T", pub)
			}
			a, err := tk.attrs(s.priv, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_DECRYPT)
			if err != nil {
				t.Fatal(err)
			}
			if !boolAttr(a[pkcs11.CKA_SENSITIVE]) || boolAttr(a[pkcs11.CKA_EXTRACTABLE]) || boolAttr(a[pkcs11.CKA_DECRYPT]) {
				t.Errorf("signing key attributes: sensitive %v extractable %v decrypt %v",
					boolAttr(a[pkcs11.CKA_SENSITIVE]), boolAttr(a[pkcs11.CKA_EXTRACTABLE]), boolAttr(a[pkcs11.CKA_DECRYPT]))
			}
		})
	}
}

func TestSignerErrors(t *testing.T) {
	tk := mainToken(t)
	if _, err := tk.FindSigner(uniq(t, "nobody")); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("missing signer: %v", err)
	}
	label := uniq(t, "dup")
	s, err := tk.GenerateSigner(label, SignECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := tk.GenerateSigner(label, SignECDSAP256); !errors.Is(err, ErrExists) {
		t.Errorf("duplicate label: %v", err)
	}
	if _, err := tk.GenerateSigner(uniq(t, "x"), "dsa-1024"); err == nil {
		t.Error("an unknown key type was accepted")
	}
	short := sha1.Sum([]byte("x"))
	if _, err := s.Sign(nil, short[:], crypto.SHA1); err == nil {
		t.Error("a SHA-1 digest was signed")
	}
	// An exchange key is not a signing key: FindSigner must not return it.
	kp := sharedKey(t)
	if _, err := tk.FindSigner(kp.Label); !errors.Is(err, ErrKeyNotFound) {
		t.Errorf("FindSigner on an exchange key: %v", err)
	}
}

// TestRewrapStaysOnToken unwraps a key as sensitive and extractable, re-wraps
// it for another public key on the token, and shows that the token never
// reveals the value while the re-wrapped copy still holds the same key.
func TestRewrapStaysOnToken(t *testing.T) {
	tk := mainToken(t)
	kp := sharedKey(t)
	other, err := tk.GenerateRSA(uniq(t, "new-owner"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	key := randBytes(t, FileKeySize)
	wrapped, err := rsa.EncryptOAEP(sha1.New(), rand.Reader, kp.Public, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	sk, err := kp.UnwrapOAEP(crypto.SHA1, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Destroy()
	attrs, err := sk.Attributes()
	if err != nil {
		t.Fatal(err)
	}
	if !attrs.Sensitive || !attrs.Extractable {
		t.Errorf("re-wrappable key: %+v", attrs)
	}
	if sk.RevealsValue() {
		t.Fatal("the token revealed a sensitive key's value")
	}
	rewrapped, err := sk.WrapOAEP(other.Public, crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := other.DecryptOAEP(crypto.SHA1, rewrapped)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, key) {
		t.Error("the re-wrapped key differs from the original")
	}

	sealed, err := kp.UnwrapOAEPSealed(crypto.SHA1, wrapped)
	if err != nil {
		t.Fatal(err)
	}
	defer sealed.Destroy()
	attrs, err = sealed.Attributes()
	if err != nil {
		t.Fatal(err)
	}
	if !attrs.Sensitive || attrs.Extractable {
		t.Errorf("sealed key: %+v", attrs)
	}
	if _, err := sealed.WrapOAEP(other.Public, crypto.SHA1); err == nil {
		t.Error("the token wrapped a non-extractable key")
	}
	d, err := sealed.DigestSHA256([]byte("p"), nil)
	if err != nil {
		t.Fatal(err)
	}
	want := sha256.Sum256(append([]byte("p"), key...))
	if !bytes.Equal(d, want[:]) {
		t.Error("the sealed key digests to another value")
	}
}
