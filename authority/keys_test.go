package authority

import (
	"bytes"
	"crypto"
	"errors"
	"strings"
	"testing"
)

// An authority key made the old way (CKA_DECRYPT true) is still used, so its records stay
// recoverable, but every use on the HSM reports it with the fix; it is never accepted as a new key.
func TestOldDecryptingKeyIsReported(t *testing.T) {
	tok := testToken(t)
	a := New(testStore(t), tok, "user=test token=authority")
	var warnings []string
	var warned []error
	a.Warn = func(w error) { warnings, warned = append(warnings, w.Error()), append(warned, w) }
	old, err := tok.GenerateRSA(uniq(t, "old-auth"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RegisterKey(t.Context(), old, crypto.SHA1, "init"); err == nil || !strings.Contains(err.Error(), "may decrypt") {
		t.Fatalf("RegisterKey(a key that decrypts) = %v", err)
	}
	// As an older p11escrow registered it.
	k, err := authorityKey(old.Label, old.Public, "sha1", a.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.st.AddAuthorityKey(t.Context(), k, a.event("init", map[string]any{"key": k.Fingerprint})); err != nil {
		t.Fatal(err)
	}
	alice, err := tok.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := encryptFor(t, alice, old.Public, 1000)
	var out bytes.Buffer
	if err := a.DirectDecrypt(t.Context(), bytes.NewReader(f.file), &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), f.plain) {
		t.Error("direct decryption under the old key differs")
	}
	var dk *DecryptingKeyWarning
	if len(warnings) != 1 || !strings.Contains(warnings[0], "can decrypt") || !errors.As(warned[0], &dk) || dk.Label != old.Label {
		t.Errorf("warnings = %q, want one DecryptingKeyWarning naming the key", warnings)
	}
	// A fresh Authority (the next command) reports it again, here on intake.
	b := New(a.st, tok, a.Actor)
	warnings = nil
	b.Warn = func(w error) { warnings = append(warnings, w.Error()) }
	if res, err := b.Intake(t.Context(), "r", f.record); err != nil || res.Outcome != Held {
		t.Fatal(res, err)
	}
	if len(warnings) != 1 {
		t.Errorf("intake warnings = %q", warnings)
	}
	// Rotating to a new, unwrap-only key clears it.
	if _, created, err := b.RotateStart(t.Context(), uniq(t, "new-auth"), KeySpec{Bits: 2048}); err != nil || !created {
		t.Fatal(created, err)
	}
	if _, err := b.Rotate(t.Context(), nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RetireKey(t.Context(), old.Label); err != nil {
		t.Fatal(err)
	}
	c := New(a.st, tok, a.Actor)
	warnings = nil
	c.Warn = func(w error) { warnings = append(warnings, w.Error()) }
	out.Reset()
	g := encryptFor(t, alice, mustCurrentPub(t, c), 10)
	if err := c.DirectDecrypt(t.Context(), bytes.NewReader(g.file), &out); err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("after the rotation: %q", warnings)
	}
}
