package escrow

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
)

// TestReceiptRoundTrip: a signed receipt survives Marshal and ParseReceipt and verifies; a
// change to any field of the statement, another key, or a malformed document is refused.
func TestReceiptRoundTrip(t *testing.T) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	var c [32]byte
	c[0] = 7
	r := NewReceipt(strings.Repeat("ab", 16), NewFileID().String(), CommitmentText(c), []byte("record"), "2026-11-30T06:00:00Z", 42)
	if err := r.Sign(key); err != nil {
		t.Fatal(err)
	}
	got, err := ParseReceipt(r.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if err := got.Verify(&key.PublicKey); err != nil || !got.SameStatement(r) {
		t.Fatalf("round trip: %v", err)
	}
	other, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err := got.Verify(&other.PublicKey); err == nil {
		t.Fatal("verified with another key")
	}
	for name, change := range map[string]func(*Receipt){
		"seq":        func(r *Receipt) { r.AuditSeq++ },
		"file":       func(r *Receipt) { r.FileID = NewFileID().String() },
		"time":       func(r *Receipt) { r.IntakeTime = "2026-11-30T06:00:01Z" },
		"commitment": func(r *Receipt) { r.KeyCommitment = CommitmentText([32]byte{}) },
		"record":     func(r *Receipt) { r.RecordSHA256 = strings.Repeat("0", 64) },
	} {
		bad := *got
		change(&bad)
		if err := bad.Verify(&key.PublicKey); err == nil {
			t.Errorf("%s changed: still verifies", name)
		}
	}
	for _, doc := range []string{`{}`, strings.Replace(string(r.Marshal()), `"audit_seq": 42`, `"audit_seq": -1`, 1),
		strings.Replace(string(r.Marshal()), "p11escrow-receipt/v1", "p11escrow-receipt/v2", 1)} {
		if _, err := ParseReceipt([]byte(doc)); err == nil {
			t.Errorf("parsed %q", doc)
		}
	}
}
