package escrow

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"strings"
	"testing"
	"time"
)

// TestRequestKeyCommitment: a request names its record by key commitment, as the core line
// writes it; the field is signed, and a request without it keeps its old canonical bytes.
func TestRequestKeyCommitment(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRequest(strings.Repeat("ab", 16), NewFileID(), &k.PublicKey, crypto.SHA1, "why", "who", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	before := r.CanonicalBytes()
	var c [32]byte
	rand.Read(c[:])
	r.KeyCommitment = CommitmentText(c)
	after := r.CanonicalBytes()
	if !bytes.HasPrefix(after, before) || bytes.Equal(after, before) {
		t.Error("the key commitment is not a last, signed field")
	}
	p, err := ParseRequest(r.Marshal())
	if err != nil || p.KeyCommitment != r.KeyCommitment || !bytes.Equal(p.CanonicalBytes(), after) {
		t.Fatalf("round trip: %v", err)
	}
	bad := bytes.Replace(r.Marshal(), []byte(r.KeyCommitment), []byte("not-a-commitment"), 1)
	if _, err := ParseRequest(bad); err == nil {
		t.Error("a malformed key_commitment was accepted")
	}
	for _, s := range []string{CommitmentText(c), hex.EncodeToString(c[:]), strings.ToUpper(hex.EncodeToString(c[:]))} {
		if got, err := ParseCommitment(s); err != nil || got != c {
			t.Errorf("ParseCommitment(%q) = %x, %v", s, got, err)
		}
	}
	if _, err := ParseCommitment("abc"); err == nil {
		t.Error("ParseCommitment accepted a short value")
	}
}
