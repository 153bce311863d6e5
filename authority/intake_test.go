package authority

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/authority/store"
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
	return hostRecordFor(t, escrow.NewFileID(), owner, authority, authHash, claim)
}

// hostRecordFor is hostRecord for a file with the given ID.
func hostRecordFor(t *testing.T, id escrow.FileID, owner, authority *rsa.PublicKey, authHash crypto.Hash, claim string) []byte {
	t.Helper()
	key := make(hostKey, 32)
	rand.Read(key)
	var out bytes.Buffer
	w, err := escrow.Encrypt(&out, id, key,
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
	data["shortkey"] = shortKeyRecord(t, data["good"], authKP.Public)
	names := []string{"sha256", "wrongowner", "shortkey", "good"}
	want := map[string]string{"sha256": "the HSM cannot process it", "wrongowner": "owner fingerprint does not match",
		"shortkey": "not a 32-byte (AES-256) key"}
	got := map[string]IntakeResult{}
	err = a.IntakeAll(t.Context(), names, func(n string) ([]byte, error) { return data[n], nil }, 2, func(_ int, r IntakeResult) { got[r.Name] = r })
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
	entries, _ := a.st.Audit(t.Context())
	rejects := 0
	for _, e := range entries {
		if e.Action == "reject" {
			rejects++
		}
	}
	if rejects != 3 {
		t.Errorf("%d rejections audited, want 3", rejects)
	}
}

// TestSquattedID: a record made with a copied file ID and a key of its own is held beside the
// genuine one; a name by ID alone is then refused, and a request acts on the record whose
// commitment it names. A request without a commitment (made by an older release) is refused.
func TestSquattedID(t *testing.T) {
	a, authKP := newAuthority(t)
	owner, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	genuine := encryptFor(t, owner, authKP.Public, 10)
	rec, _ := escrow.ParseRecord(genuine.record)
	id, _ := escrow.ParseFileID(rec.FileID)
	mallory, _ := rsa.GenerateKey(rand.Reader, 2048)
	mfpr, _ := escrow.FingerprintOf(&mallory.PublicKey)
	squat := hostRecordFor(t, id, &mallory.PublicKey, authKP.Public, crypto.SHA1, mfpr.String())

	for i, data := range [][]byte{squat, genuine.record, genuine.record} {
		res, err := a.Intake(t.Context(), "r", data)
		want := []Outcome{Held, Held, Duplicate}[i]
		if err != nil || res.Outcome != want {
			t.Fatalf("intake %d: %s %v %v, want %s", i, res.Outcome, res.Reason, err, want)
		}
		if i == 1 && res.SameID != 1 {
			t.Errorf("the collision was not reported: SameID %d", res.SameID)
		}
	}
	// A writer that did not see the records already held under the ID is refused, so that every
	// collision is audited as one.
	stale := &HeldRecord{FileID: rec.FileID, Commitment: "another", SameID: 0}
	if got, err := a.st.Intake(t.Context(), []store.NewRecord{{Record: stale, Wrap: &Wrap{}, Event: a.event("intake", nil)}}); err != nil || !errors.Is(got[0].Err, ErrChanged) {
		t.Errorf("Store.Intake with a stale collision count = %v, %v, want ErrChanged", got, err)
	}
	if _, err := a.FindRecord(t.Context(), rec.FileID, ""); err == nil || !strings.Contains(err.Error(), "held 2 times") {
		t.Errorf("FindRecord by ID alone = %v, want a refusal", err)
	}
	h, _, _ := rec.AuthorityStanza()
	c := escrow.CommitmentText(h.Commitment)
	req, err := a.NewRequest(t.Context(), rec.FileID, c, escrow.ActionReheader, owner.Public, crypto.SHA1, "lost card", time.Hour)
	if err != nil || req.KeyCommitment != c {
		t.Fatalf("NewRequest = %v, %v", req, err)
	}
	if got, err := a.requestedRecord(t.Context(), req); err != nil || got.Commitment != c || got.OwnerFingerprint != rec.Owner.Fingerprint {
		t.Errorf("requestedRecord = %+v, %v; want the genuine record", got, err)
	}
	other := *req
	other.KeyCommitment = escrow.CommitmentText([32]byte{1})
	if _, err := a.requestedRecord(t.Context(), &other); err == nil {
		t.Error("a request naming a commitment that is not held found a record")
	}
	entries, _ := a.st.Audit(t.Context())
	found := false
	for _, e := range entries {
		found = found || e.Action == "intake-collision"
	}
	if !found {
		t.Error("the collision was not audited")
	}
}

// shortKeyRecord is good with its authority stanza (in the header and the record alike) replaced
// by a 16-byte key wrapped for authority.
func shortKeyRecord(t *testing.T, good []byte, authority *rsa.PublicKey) []byte {
	t.Helper()
	rec, err := escrow.ParseRecord(good)
	if err != nil {
		t.Fatal(err)
	}
	h, st, err := rec.AuthorityStanza()
	if err != nil {
		t.Fatal(err)
	}
	short := make([]byte, 16)
	rand.Read(short)
	body, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, authority, short, nil)
	if err != nil {
		t.Fatal(err)
	}
	st.Body = body
	for _, s := range h.Stanzas {
		if escrow.StanzaRole(s) == escrow.RoleAuthority {
			s.Body = body
		}
	}
	rec.Authority.WrappedKey = body
	rec.Header = h.Marshal()
	return rec.Marshal()
}
