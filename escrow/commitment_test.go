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
// writes it; the field is required and signed, so an approval names one exact record.
func TestRequestKeyCommitment(t *testing.T) {
	k, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	var c, c2 [32]byte
	rand.Read(c[:])
	rand.Read(c2[:])
	r, err := NewRequest(strings.Repeat("ab", 16), NewFileID(), CommitmentText(c), ActionReheader, &k.PublicKey, crypto.SHA1, "why", "who", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	before := r.CanonicalBytes()
	r.KeyCommitment = CommitmentText(c2)
	if bytes.Equal(r.CanonicalBytes(), before) {
		t.Error("the key commitment is not a signed field")
	}
	p, err := ParseRequest(r.Marshal())
	if err != nil || p.KeyCommitment != r.KeyCommitment || !bytes.Equal(p.CanonicalBytes(), r.CanonicalBytes()) {
		t.Fatalf("round trip: %v", err)
	}
	missing := bytes.Replace(r.Marshal(), []byte(`"key_commitment": "`+r.KeyCommitment+`",`), nil, 1)
	if bytes.Equal(missing, r.Marshal()) {
		t.Fatal("the test could not remove key_commitment")
	}
	if _, err := ParseRequest(missing); err == nil {
		t.Error("a request without key_commitment was accepted")
	}
	if _, err := NewRequest(strings.Repeat("ab", 16), NewFileID(), "", ActionReheader, &k.PublicKey, crypto.SHA1, "why", "who", time.Now(), time.Hour); err == nil {
		t.Error("NewRequest made a request without a key commitment")
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
