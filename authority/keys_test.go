package authority

import (
	"bytes"
	"crypto"
	"strings"
	"testing"
)

// An authority key made the old way (CKA_DECRYPT true) is still used, so its records stay
// recoverable, but every use on the HSM reports it with the fix; it is never accepted as a new key.
func TestOldDecryptingKeyIsReported(t *testing.T) {
	tok := testToken(t)
	a := New(testStore(t), tok, "user=test token=authority")
	var warnings []string
	a.Warn = func(msg string) { warnings = append(warnings, msg) }
	old, err := tok.GenerateRSA(uniq(t, "old-auth"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RegisterKey(old, crypto.SHA1, "init"); err == nil || !strings.Contains(err.Error(), "may decrypt") {
		t.Fatalf("RegisterKey(a key that decrypts) = %v", err)
	}
	// As an older p11escrow registered it.
	k, err := authorityKey(old.Label, old.Public, crypto.SHA1, a.Now())
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Store.AddAuthorityKey(k, a.event("init", map[string]any{"key": k.Fingerprint})); err != nil {
		t.Fatal(err)
	}
	alice, err := tok.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := encryptFor(t, alice, old.Public, 1000)
	var out bytes.Buffer
	if err := a.DirectDecrypt(bytes.NewReader(f.file), &out); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), f.plain) {
		t.Error("direct decryption under the old key differs")
	}
	if len(warnings) != 1 || !strings.Contains(warnings[0], "can decrypt") || !strings.Contains(warnings[0], "authority rotate") {
		t.Errorf("warnings = %q, want one naming the key and `authority rotate`", warnings)
	}
	// A fresh Authority (the next command) reports it again, here on intake.
	b := New(a.Store, tok, a.Actor)
	warnings = nil
	b.Warn = func(msg string) { warnings = append(warnings, msg) }
	if res, err := b.Intake("r", f.record); err != nil || res.Outcome != Held {
		t.Fatal(res, err)
	}
	if len(warnings) != 1 {
		t.Errorf("intake warnings = %q", warnings)
	}
	// Rotating to a new, unwrap-only key clears it.
	if _, created, err := b.RotateStart(uniq(t, "new-auth"), 2048); err != nil || !created {
		t.Fatal(created, err)
	}
	if _, err := b.Rotate(nil); err != nil {
		t.Fatal(err)
	}
	if _, err := b.RetireKey(old.Label); err != nil {
		t.Fatal(err)
	}
	c := New(a.Store, tok, a.Actor)
	warnings = nil
	c.Warn = func(msg string) { warnings = append(warnings, msg) }
	out.Reset()
	g := encryptFor(t, alice, mustCurrentPub(t, c), 10)
	if err := c.DirectDecrypt(bytes.NewReader(g.file), &out); err != nil {
		t.Fatal(err)
	}
	if len(warnings) != 0 {
		t.Errorf("after the rotation: %q", warnings)
	}
}
