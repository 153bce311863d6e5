package authority

import (
	"bytes"
	"crypto"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// newECAuthority makes a store with a fresh EC authority key on curve on the shared token.
func newECAuthority(t *testing.T, curve string) (*Authority, *token.ECKeyPair) {
	t.Helper()
	tok := testToken(t)
	a := New(testStore(t), tok, "user=test token=authority")
	kp, err := tok.GenerateEC(uniq(t, "auth-ec"), curve)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RegisterECKey(t.Context(), kp, "init"); err != nil {
		t.Fatal(err)
	}
	return a, kp
}

// authorityStanzaOf returns the authority stanza of a header.
func authorityStanzaOf(t *testing.T, h *escrow.Header) *escrow.Stanza {
	t.Helper()
	for _, s := range h.Stanzas {
		if escrow.StanzaRole(s) == escrow.RoleAuthority {
			return s
		}
	}
	t.Fatal("no authority stanza")
	return nil
}

// TestECAuthorityKey checks the key `authority init --type ec-p256|ec-p384` registers: made on
// the HSM, sensitive, never extractable, and derive-only; and that RegisterECKey refuses an EC
// key that may sign as well.
func TestECAuthorityKey(t *testing.T) {
	for _, curve := range []string{"p256", "p384"} {
		a, kp := newECAuthority(t, curve)
		attrs, err := kp.PrivateAttributes()
		if err != nil {
			t.Fatal(err)
		}
		if !attrs.NeverLeftToken() || !attrs.Sensitive || attrs.Extractable || !attrs.Derive || attrs.Sign || attrs.Decrypt || attrs.Unwrap {
			t.Errorf("%s authority key attributes %+v", curve, attrs)
		}
		k := mustCurrent(t, a)
		if k.OAEPHash != "" || k.Label != kp.Label {
			t.Errorf("registered %+v", k)
		}
	}
	// A signing EC key (an officer's) is not an authority key.
	a, _ := newECAuthority(t, "p256")
	s, err := a.Token.GenerateSigner(uniq(t, "signer"), token.SignECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	signer, err := a.Token.FindECKeyPair(s.Label, nil)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RegisterECKey(t.Context(), signer, "rotate-start"); err == nil || !strings.Contains(err.Error(), "must only derive") {
		t.Errorf("RegisterECKey(a signing key) = %v", err)
	}
}

// TestECAuthorityLostCard is the lost-card story with an EC authority key: intake of an ecdh
// authority stanza verified on the HSM with the unwrapped key sensitive and unreadable; a
// tampered record rejected; re-issue for a new EC owner and a new RSA owner (the EC owner's stanza made on the HSM); decrypt-only
// recovery; then rotation EC to RSA and RSA to EC, each re-wrapped on the HSM and recovered
// through.
func TestECAuthorityLostCard(t *testing.T) {
	a, authKP := newECAuthority(t, "p256")
	alice, err := a.Token.GenerateEC(uniq(t, "alice"), "p384")
	if err != nil {
		t.Fatal(err)
	}
	f := encryptTo(t, &escrow.ECRecipient{Public: alice.Public, Role: escrow.RoleOwner},
		&escrow.ECRecipient{Public: authKP.Public, Role: escrow.RoleAuthority}, alice.Public, 2*escrow.ChunkSize+3)
	rec, err := escrow.ParseRecord(f.record)
	if err != nil {
		t.Fatal(err)
	}
	if rec.Authority.Type != "ecdh" {
		t.Fatalf("record authority type %q", rec.Authority.Type)
	}
	h, st, err := rec.AuthorityStanza()
	if err != nil {
		t.Fatal(err)
	}
	// The token-side check: the KEK is derived and K unwrapped on the token; K is sensitive,
	// not extractable, and the token will not reveal it.
	sk, err := unwrapStanzaSealed(st, Key{EC: authKP})
	if err != nil {
		t.Fatal(err)
	}
	if attrs, err := sk.Attributes(); err != nil || !attrs.Sensitive || attrs.Extractable || sk.RevealsValue() {
		t.Errorf("the unwrapped key: %+v %v, reveals %v", attrs, err, sk.RevealsValue())
	}
	if err := rec.VerifyOn(h, sk); err != nil {
		t.Errorf("VerifyOn: %v", err)
	}
	sk.Destroy()

	// A record with a changed description fails the binding on the token.
	bad := *rec
	bad.Description += "!"
	if res, err := a.Intake(t.Context(), "bad.json", bad.Marshal()); err != nil || res.Outcome != Rejected {
		t.Fatalf("tampered intake: %+v %v", res, err)
	}
	res, err := a.Intake(t.Context(), "alice.json", f.record)
	if err != nil || res.Outcome != Held {
		t.Fatalf("intake: %+v %v", res, err)
	}
	o1 := officer(t, a, "olivia", token.SignECDSAP256)
	o2 := officer(t, a, "oscar", token.SignECDSAP256)

	var seen int
	testHookUnwrapped = func(sk *token.SecretKey) {
		seen++
		if attrs, err := sk.Attributes(); err != nil || !attrs.Sensitive || sk.RevealsValue() {
			t.Errorf("the unwrapped key is readable: %+v %v", attrs, err)
		}
	}
	defer func() { testHookUnwrapped = nil }()

	// recoverFor re-issues the header for a new owner key, EC (P-256) or RSA, made on the
	// token, and checks that the new owner opens the file, that the owner stanza is of the
	// key's type, and that the authority stanza is for the current key, of its type.
	recoverFor := func(why string, ec bool) {
		t.Helper()
		var pub crypto.PublicKey
		var id escrow.Identity
		if ec {
			owner, err := a.Token.GenerateEC(uniq(t, "alice-new"), "p256")
			if err != nil {
				t.Fatal(err)
			}
			pub, id = owner.Public, &escrow.ECIdentity{Public: owner.Public, Key: owner}
		} else {
			owner, err := a.Token.GenerateRSA(uniq(t, "alice-new"), 2048)
			if err != nil {
				t.Fatal(err)
			}
			pub, id = owner.Public, &escrow.RSAIdentity{Public: owner.Public, Key: owner}
		}
		req, err := a.NewRequest(t.Context(), res.FileID, "", escrow.ActionReheader, pub, crypto.SHA1, why, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		approve(t, a, req, o1)
		approve(t, a, req, o2)
		before := seen
		hdr := &memDelivery{}
		if err := a.Recover(t.Context(), roundTrip(t, req), hdr.create); err != nil {
			t.Fatalf("%s: %v", why, err)
		}
		if seen == before {
			t.Errorf("%s: recovery unwrapped no key through the inspected path", why)
		}
		_, payload, _ := escrow.ParseHeader(bytes.NewReader(f.file))
		rest, _ := io.ReadAll(payload)
		nh, _, err := escrow.ParseHeader(bytes.NewReader(hdr.Bytes()))
		if err != nil {
			t.Fatal(err)
		}
		cur := mustCurrent(t, a)
		as := authorityStanzaOf(t, nh)
		if escrow.StanzaTag(as) != cur.Tag || (as.Type == "ecdh") != (cur.OAEPHash == "") {
			t.Errorf("%s: authority stanza %s %s, current key %s", why, as.Type, escrow.StanzaTag(as), cur.Tag)
		}
		if os := nh.Stanzas[0]; escrow.StanzaRole(os) != escrow.RoleOwner || (os.Type == "ecdh") != ec {
			t.Errorf("%s: owner stanza %s %v", why, os.Type, os.Args)
		}
		r, err := escrow.Decrypt(bytes.NewReader(append(hdr.Bytes(), rest...)), id)
		if err != nil {
			t.Fatalf("%s: %v", why, err)
		}
		if got, err := io.ReadAll(r); err != nil || !bytes.Equal(got, f.plain) {
			t.Fatalf("%s: decrypt after reheader: %v", why, err)
		}
	}
	recoverFor("lost card, EC authority, EC owner", true)
	recoverFor("lost card, EC authority, RSA owner", false)

	// Decrypt-only recovery with the EC authority key.
	owner, err := a.Token.GenerateRSA(uniq(t, "alice-rsa"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	req, err := a.NewRequest(t.Context(), res.FileID, "", escrow.ActionDecrypt, owner.Public, crypto.SHA1, "plaintext only", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	approve(t, a, req, o1)
	approve(t, a, req, o2)
	out := &memDelivery{}
	if err := a.RecoverDecrypt(t.Context(), req, bytes.NewReader(f.file), out.create); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), f.plain) {
		t.Error("recover-decrypt with an EC authority differs from the original")
	}

	// Rotation EC -> RSA, then RSA -> EC (P-384); the old key is retired each time, so the
	// recovery after it can only go through the re-wrapped key.
	for _, spec := range []KeySpec{{Bits: 2048}, {Curve: "p384"}} {
		old := mustCurrent(t, a)
		label := uniq(t, "auth-next")
		if _, created, err := a.RotateStart(t.Context(), label, spec); err != nil || !created {
			t.Fatal(created, err)
		}
		if n, err := a.Rotate(t.Context(), nil); err != nil || n != 1 {
			t.Fatalf("rotation to %+v re-wrapped %d: %v", spec, n, err)
		}
		// Rerun, as after a kill: the registered key is found again (by its type), nothing is
		// left to re-wrap.
		a.keys = map[string]Key{}
		if _, created, err := a.RotateStart(t.Context(), label, spec); err != nil || created {
			t.Fatalf("resume to %+v: created %v, %v", spec, created, err)
		}
		if n, err := a.Rotate(t.Context(), nil); err != nil || n != 0 {
			t.Fatalf("resumed rotation to %+v re-wrapped %d: %v", spec, n, err)
		}
		if _, err := a.RetireKey(t.Context(), old.Label); err != nil {
			t.Fatal(err)
		}
		recoverFor("after rotation to "+mustCurrent(t, a).Label, spec.Curve == "")
	}
	if _, _, err := a.VerifyAudit(t.Context()); err != nil {
		t.Errorf("audit: %v", err)
	}
}
