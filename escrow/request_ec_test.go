package escrow

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"time"
)

// TestRequestECOwner: a recovery request for an EC new owner (FORMAT.md section 10) has no
// oaep_hash member, its request-bytes carry the empty field there, and it round-trips; an EC
// key with an oaep_hash, or on a curve the format does not know, is refused.
func TestRequestECOwner(t *testing.T) {
	var c [32]byte
	rand.Read(c[:])
	for _, curve := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		k, err := ecdsa.GenerateKey(curve, rand.Reader)
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewRequest(strings.Repeat("ab", 16), NewFileID(), CommitmentText(c), ActionReheader, &k.PublicKey, crypto.SHA1, "why", "who", time.Now(), time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(r.Marshal(), []byte("oaep_hash")) {
			t.Errorf("an EC owner's request has an oaep_hash member:\n%s", r.Marshal())
		}
		p, err := ParseRequest(r.Marshal())
		if err != nil || !bytes.Equal(p.CanonicalBytes(), r.CanonicalBytes()) {
			t.Fatalf("round trip: %v", err)
		}
		pub, _ := p.NewOwnerKey()
		if ec, ok := pub.(*ecdsa.PublicKey); !ok || !ec.Equal(&k.PublicKey) {
			t.Errorf("NewOwnerKey = %T", pub)
		}
		with := bytes.Replace(r.Marshal(), []byte(`"fingerprint"`), []byte(`"oaep_hash": "sha1", "fingerprint"`), 1)
		if _, err := ParseRequest(with); err == nil || !strings.Contains(err.Error(), "no oaep_hash") {
			t.Errorf("an EC owner with an oaep_hash: %v", err)
		}
	}
	// oaep_hash is optional in the JSON now, but an RSA owner still needs it.
	rk, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	r, err := NewRequest(strings.Repeat("ab", 16), NewFileID(), CommitmentText(c), ActionReheader, &rk.PublicKey, crypto.SHA1, "why", "who", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	without := bytes.Replace(r.Marshal(), []byte(`"oaep_hash": "sha1",`), nil, 1)
	if bytes.Equal(without, r.Marshal()) {
		t.Fatal("the test could not remove oaep_hash")
	}
	if _, err := ParseRequest(without); err == nil {
		t.Error("an RSA owner without oaep_hash was accepted")
	}
	k, _ := ecdsa.GenerateKey(elliptic.P224(), rand.Reader)
	if _, err := NewRequest(strings.Repeat("ab", 16), NewFileID(), CommitmentText(c), ActionReheader, &k.PublicKey, 0, "why", "who", time.Now(), time.Hour); err == nil {
		t.Error("NewRequest took a P-224 owner")
	}
}
