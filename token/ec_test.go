package token

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"testing"

	"github.com/miekg/pkcs11"

	"github.com/p11escrow/p11escrow/escrow"
)

// hostFileKey is a file key in Go memory, for wrapping to a token's EC key on the host as a
// sender does.
type hostFileKey []byte

func (k hostFileKey) Value() ([]byte, error) { return bytes.Clone(k), nil }

// ecStanza wraps key for pub as a sender does (escrow.ECRecipient) and parses the stanza.
func ecStanza(t *testing.T, pub *ecdsa.PublicKey, key []byte) *escrow.ECStanza {
	t.Helper()
	s, err := (&escrow.ECRecipient{Public: pub, Role: escrow.RoleOwner}).Wrap(hostFileKey(key))
	if err != nil {
		t.Fatal(err)
	}
	e, err := escrow.ParseECStanza(s)
	if err != nil {
		t.Fatal(err)
	}
	return e
}

// secretObjects counts the secret-key objects visible to the session: a KEK or an unwrapped key
// left behind would show here.
func secretObjects(t *testing.T, tk *Token) int {
	t.Helper()
	hs, err := tk.findObjects([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY)})
	if err != nil {
		t.Fatal(err)
	}
	return len(hs)
}

// TestGenerateEC makes P-256 and P-384 exchange keys, checks that the private half is sensitive,
// never extractable and may only derive, and opens a host-wrapped ecdh stanza on the token
// (FORMAT.md section 2.2.2: the KEK is the last 32 bytes of x, derived inside), leaving no
// KEK or key object behind. A changed body is ErrDecrypt (a stanza that does not open).
func TestGenerateEC(t *testing.T) {
	tk := mainToken(t)
	for _, curve := range []string{"p256", "p384"} {
		label := uniq(t, "ec-"+curve)
		kp, err := tk.GenerateEC(label, curve)
		if err != nil {
			t.Fatal(err)
		}
		want := map[string]elliptic.Curve{"p256": elliptic.P256(), "p384": elliptic.P384()}[curve]
		if kp.Public.Curve != want {
			t.Fatalf("%s: key on %s", curve, kp.Public.Curve.Params().Name)
		}
		id, _ := KeyID(kp.Public)
		if !bytes.Equal(kp.ID, id) {
			t.Errorf("%s: CKA_ID %x, want KeyID %x", curve, kp.ID, id)
		}
		a, err := tk.attrs(kp.priv, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_DERIVE,
			pkcs11.CKA_SIGN, pkcs11.CKA_DECRYPT, pkcs11.CKA_UNWRAP, pkcs11.CKA_TOKEN)
		if err != nil {
			t.Fatal(err)
		}
		if !boolAttr(a[pkcs11.CKA_SENSITIVE]) || boolAttr(a[pkcs11.CKA_EXTRACTABLE]) || !boolAttr(a[pkcs11.CKA_DERIVE]) ||
			boolAttr(a[pkcs11.CKA_SIGN]) || boolAttr(a[pkcs11.CKA_DECRYPT]) || boolAttr(a[pkcs11.CKA_UNWRAP]) || !boolAttr(a[pkcs11.CKA_TOKEN]) {
			t.Errorf("%s: private key attributes %v", curve, a)
		}
		before := secretObjects(t, tk)
		key := randBytes(t, 32)
		e := ecStanza(t, kp.Public, key)
		got, err := kp.UnwrapECDH(e.Ephemeral, e.Wrapped)
		if err != nil || !bytes.Equal(got, key) {
			t.Fatalf("%s: UnwrapECDH = %x, %v; want %x", curve, got, err, key)
		}
		bad := bytes.Clone(e.Wrapped)
		bad[3] ^= 1
		if _, err := kp.UnwrapECDH(e.Ephemeral, bad); !errors.Is(err, ErrDecrypt) || !errors.Is(err, rsa.ErrDecryption) {
			t.Fatalf("%s: changed body: %v, want ErrDecrypt", curve, err)
		}
		if n := secretObjects(t, tk); n != before {
			t.Errorf("%s: %d secret objects left behind", curve, n-before)
		}
		found, err := tk.FindECKeyPair(label, nil)
		if err != nil || !found.Public.Equal(kp.Public) {
			t.Fatalf("%s: FindECKeyPair: %v", curve, err)
		}
		if _, err := tk.FindKeyPair(label, nil); !errors.Is(err, ErrKeyNotFound) && !errors.Is(err, ErrUnsupportedKey) {
			t.Errorf("%s: FindKeyPair (RSA) of an EC key: %v", curve, err)
		}
	}
	if _, err := tk.GenerateEC(uniq(t, "ec-p521"), "p521"); err == nil {
		t.Error("P-521 was generated")
	}
}

// TestPkcs11ToolECKeys finds an EC key made by pkcs11-tool by label and by CKA_ID and opens a
// stanza with it; an EC key that may not derive is refused with a sentence that says why.
func TestPkcs11ToolECKeys(t *testing.T) {
	tk := mainToken(t)
	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("pkcs11-tool is required in CI: apt-get install opensc")
		}
		t.Skip("pkcs11-tool not found; apt-get install opensc")
	}
	gen := func(label string, id []byte) {
		cmd := exec.Command(tool, "--module", fixture.env.ModulePath, "--token-label", mainLabel,
			"--login", "--pin", userPIN, "--keypairgen", "--key-type", "EC:prime256v1", "--label", label, "--id", hex.EncodeToString(id))
		cmd.Env = append(os.Environ(), fixture.env.Environ()...)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("pkcs11-tool: %v\n%s", err, out)
		}
	}
	label, id := uniq(t, "tool-ec"), randBytes(t, 4)
	gen(label, id) // as the README says, with no usage flags
	byLabel, err := tk.FindECKeyPair(label, nil)
	if err != nil {
		t.Fatal(err)
	}
	byID, err := tk.FindECKeyPair("", id)
	if err != nil {
		t.Fatal(err)
	}
	if !byID.Public.Equal(byLabel.Public) || !bytes.Equal(byLabel.ID, id) || byID.Label != label {
		t.Errorf("by label %+v, by ID %+v", byLabel, byID)
	}
	key := randBytes(t, 32)
	e := ecStanza(t, byID.Public, key)
	if got, err := byID.UnwrapECDH(e.Ephemeral, e.Wrapped); err != nil || !bytes.Equal(got, key) {
		t.Fatalf("UnwrapECDH = %x, %v", got, err)
	}

	// An officer's signing key is EC but may not derive (CKA_DERIVE false).
	noDerive := uniq(t, "ec-sign")
	if _, err := tk.GenerateSigner(noDerive, SignECDSAP256); err != nil {
		t.Fatal(err)
	}
	kp, err := tk.FindECKeyPair(noDerive, nil)
	if err != nil {
		t.Fatal(err)
	}
	e = ecStanza(t, kp.Public, key)
	_, err = kp.UnwrapECDH(e.Ephemeral, e.Wrapped)
	var te *Error
	if !errors.As(err, &te) || errors.Is(err, ErrDecrypt) || !bytes.Contains([]byte(te.Msg), []byte("CKA_DERIVE")) {
		t.Fatalf("a key that may not derive: %v", err)
	}
}

// TestECKeyPairs checks that ECKeyPairs lists a P-384 exchange key, its point read back from the
// public object, and not an officer's EC signing key, which may not derive.
func TestECKeyPairs(t *testing.T) {
	tk := mainToken(t)
	kp, err := tk.GenerateEC(uniq(t, "ec-list"), "p384")
	if err != nil {
		t.Fatal(err)
	}
	signer, err := tk.GenerateSigner(uniq(t, "ec-officer"), SignECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	all, err := tk.ECKeyPairs()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range all {
		found = found || k.Public.Equal(kp.Public)
		if k.Label == signer.Label {
			t.Errorf("ECKeyPairs lists the signing key %s", k.Label)
		}
	}
	if !found {
		t.Fatalf("ECKeyPairs lacks %s", kp.Label)
	}
}

// TestECDHKeyStaysOnToken is the authority's side of an ecdh stanza (FORMAT.md sections 2.2.2 and
// 11): UnwrapECDHKey gives a sensitive key whose value the token never reveals, held to the
// 32-byte key rule, that the token digests like the host; WrapECDH re-wraps it for another EC
// key with an ephemeral key made on the token, and that key's holder gets K. Nothing is left
// behind.
func TestECDHKeyStaysOnToken(t *testing.T) {
	tk := mainToken(t)
	for _, curve := range []string{"p256", "p384"} {
		kp, err := tk.GenerateEC(uniq(t, "ec-auth-"+curve), curve)
		if err != nil {
			t.Fatal(err)
		}
		key := randBytes(t, 32)
		e := ecStanza(t, kp.Public, key)
		// SoftHSM2 2.6.1 keeps the object of the first unwrap it refuses for its CKA_VALUE_LEN
		// (a sensitive session key, gone with the session); the module then leaves the attribute
		// out. Count from after that.
		if warm, err := kp.UnwrapECDHKey(e.Ephemeral, e.Wrapped, false); err == nil {
			warm.Destroy()
		}
		before := secretObjects(t, tk)

		sealed, err := kp.UnwrapECDHKey(e.Ephemeral, e.Wrapped, false)
		if err != nil {
			t.Fatalf("%s: %v", curve, err)
		}
		a, err := sealed.Attributes()
		if err != nil || !a.Sensitive || a.Extractable || sealed.RevealsValue() {
			t.Fatalf("%s: sealed key attributes %+v, %v", curve, a, err)
		}
		prefix := []byte("p11escrow/v1 commit 0123456789abcdef")
		got, err := sealed.DigestSHA256(prefix, nil)
		want := sha256.Sum256(append(bytes.Clone(prefix), key...))
		if err != nil || !bytes.Equal(got, want[:]) {
			t.Fatalf("%s: token digest %x, %v; host %x", curve, got, err, want)
		}
		if _, _, err := sealed.WrapECDH(kp.Public); err == nil {
			t.Fatalf("%s: a sealed key was wrapped", curve)
		}
		sealed.Destroy()

		// Re-issue to a new owner's EC key, on the token.
		k, err := kp.UnwrapECDHKey(e.Ephemeral, e.Wrapped, true)
		if err != nil {
			t.Fatal(err)
		}
		if a, err := k.Attributes(); err != nil || !a.Sensitive || k.RevealsValue() {
			t.Fatalf("%s: re-wrappable key attributes %+v, %v", curve, a, err)
		}
		for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
			newOwner, err := ecdsa.GenerateKey(c, rand.Reader)
			if err != nil {
				t.Fatal(err)
			}
			eph, wrapped, err := k.WrapECDH(&newOwner.PublicKey)
			if err != nil {
				t.Fatalf("%s to %s: %v", curve, c.Params().Name, err)
			}
			s, err := escrow.NewECStanza(&newOwner.PublicKey, eph, escrow.RoleOwner, wrapped)
			if err != nil {
				t.Fatal(err)
			}
			priv, _ := newOwner.ECDH()
			id := &escrow.ECIdentity{Public: &newOwner.PublicKey, Key: escrow.ECHostKey{Private: priv}}
			got, err := id.Unwrap([]*escrow.Stanza{s})
			if err != nil || !bytes.Equal(got, key) {
				t.Fatalf("%s to %s: the new owner gets %x, %v", curve, c.Params().Name, got, err)
			}
			eph2, _, err := k.WrapECDH(&newOwner.PublicKey)
			if err != nil || bytes.Equal(eph, eph2) {
				t.Fatalf("%s: an ephemeral key was used twice (%v)", curve, err)
			}
		}
		k.Destroy()

		// A short key and a changed body are refused, as for RSA.
		shortEph, shortWrapped := wrapAnyLength(t, kp.Public, randBytes(t, 16))
		if _, err := kp.UnwrapECDHKey(shortEph, shortWrapped, false); !errors.Is(err, ErrKeyLength) {
			t.Errorf("%s: a 16-byte key: %v, want ErrKeyLength", curve, err)
		}
		bad := bytes.Clone(e.Wrapped)
		bad[0] ^= 1
		if _, err := kp.UnwrapECDHKey(e.Ephemeral, bad, false); !errors.Is(err, ErrDecrypt) {
			t.Errorf("%s: a changed body: %v, want ErrDecrypt", curve, err)
		}
		if n := secretObjects(t, tk); n != before {
			t.Errorf("%s: %d secret objects left behind", curve, n-before)
		}
	}
}

// wrapAnyLength is a sender that breaks the 32-byte key rule: it wraps key, of any length, for
// pub as an ecdh stanza would.
func wrapAnyLength(t *testing.T, pub *ecdsa.PublicKey, key []byte) (ephemeral, wrapped []byte) {
	t.Helper()
	peer, err := pub.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	eph, err := peer.Curve().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	z, err := eph.ECDH(peer)
	if err != nil {
		t.Fatal(err)
	}
	wrapped, err = escrow.WrapKeyPadded(escrow.ECDHKEK(z), key)
	if err != nil {
		t.Fatal(err)
	}
	return eph.PublicKey().Bytes(), wrapped
}
