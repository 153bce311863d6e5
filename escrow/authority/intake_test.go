package authority

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
)

// hostKey is a file key made in Go memory, as a user with their own tooling (or an attacker)
// can make one: the authority must not rely on files being made by p11escrow on a token.
type hostKey []byte

func (k hostKey) Value() ([]byte, error) { return bytes.Clone(k), nil }

func (k hostKey) WrapOAEP(pub *rsa.PublicKey, hash crypto.Hash) ([]byte, error) {
	return rsa.EncryptOAEP(hash.New(), rand.Reader, pub, k, nil)
}

// hostRecord makes a correctly bound record for a file encrypted with a host key, its authority
// stanza wrapped with authHash, and the record claiming owner fingerprint claim.
func hostRecord(t *testing.T, owner, authority *rsa.PublicKey, authHash crypto.Hash, claim string) []byte {
	t.Helper()
	key := make(hostKey, 32)
	rand.Read(key)
	var out bytes.Buffer
	w, err := escrow.Encrypt(&out, escrow.NewFileID(), key,
		&escrow.RSARecipient{Public: owner, Hash: crypto.SHA1, Role: escrow.RoleOwner},
		&escrow.RSARecipient{Public: authority, Hash: authHash, Role: escrow.RoleAuthority})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	rec, err := escrow.NewRecord(w.Header(), key, "host file", escrow.RecordOwner{Fingerprint: claim,
		TokenLabel: "alice", TokenSerial: "0001"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return rec.Marshal()
}

// TestIntakeGoesOnAfterABadRecord: a record the HSM cannot process (a sha256 stanza on
// SoftHSM2, which does OAEP with SHA-1 only) and a record whose owner fingerprint is not the
// header's owner are rejected with their reasons and audited, and the records after them are
// still taken in.
func TestIntakeGoesOnAfterABadRecord(t *testing.T) {
	a, authKP := newAuthority(t)
	alice, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	bob, _ := rsa.GenerateKey(rand.Reader, 2048)
	aliceFpr, _ := escrow.FingerprintOf(&alice.PublicKey)
	bobFpr, _ := escrow.FingerprintOf(&bob.PublicKey)
	data := map[string][]byte{
		"sha256":     hostRecord(t, &alice.PublicKey, authKP.Public, crypto.SHA256, aliceFpr.String()),
		"wrongowner": hostRecord(t, &alice.PublicKey, authKP.Public, crypto.SHA1, bobFpr.String()),
		"good":       hostRecord(t, &alice.PublicKey, authKP.Public, crypto.SHA1, aliceFpr.String()),
	}
	names := []string{"sha256", "wrongowner", "good"}
	want := map[string]string{"sha256": "the HSM cannot process it", "wrongowner": "owner fingerprint does not match"}
	got := map[string]IntakeResult{}
	err = a.IntakeAll(names, func(n string) ([]byte, error) { return data[n], nil }, 2, func(_ int, r IntakeResult) { got[r.Name] = r })
	if err != nil {
		t.Fatalf("IntakeAll stopped: %v", err)
	}
	for name, reason := range want {
		if r := got[name]; r.Outcome != Rejected || r.Reason == nil || !strings.Contains(r.Reason.Error(), reason) {
			t.Errorf("%s: %s %v, want rejected: %s", name, r.Outcome, r.Reason, reason)
		}
	}
	if got["good"].Outcome != Held {
		t.Errorf("good: %s %v", got["good"].Outcome, got["good"].Reason)
	}
	entries, _ := a.Store.Audit()
	rejects := 0
	for _, e := range entries {
		if e.Action == "reject" {
			rejects++
		}
	}
	if rejects != 2 {
		t.Errorf("%d rejections audited, want 2", rejects)
	}
}
