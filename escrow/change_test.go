package escrow

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

func TestChangeRequest(t *testing.T) {
	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := OfficerAddChange("olivia", k.Public())
	if err != nil {
		t.Fatal(err)
	}
	auth := strings.Repeat("ab", 16)
	req, err := NewChangeRequest(auth, ch, "ticket 7", "user=test", time.Now(), time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := req.Approve(k)
	if err != nil {
		t.Fatal(err)
	}
	req.AddApproval(ap)
	parsed, err := ParseApprovable(req.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	got, ok := parsed.(*ChangeRequest)
	if !ok || !bytes.Equal(got.CanonicalBytes(), req.CanonicalBytes()) {
		t.Fatalf("round trip: %T, canonical bytes differ", parsed)
	}
	if err := got.VerifyApproval(got.Approvals[0], k.Public()); err != nil {
		t.Errorf("approval does not verify after a round trip: %v", err)
	}
	got.Change.Name = "mallory"
	if got.VerifyApproval(got.Approvals[0], k.Public()) == nil {
		t.Error("an approval verified over an edited name")
	}
	policy := PolicyChange(3)
	policy.Approvals = 3
	mixed, _ := NewChangeRequest(auth, policy, "x", "y", time.Now(), time.Hour)
	mixed.Change.Name = "smuggled"
	if _, err := ParseChangeRequest(mixed.Marshal()); err == nil || !strings.Contains(err.Error(), "only an approvals field") {
		t.Errorf("a policy change with an officer name: %v", err)
	}
	if _, err := ParseApprovable(bytes.Replace(req.Marshal(), []byte("officer-add"), []byte("officer-del"), 1)); err == nil {
		t.Error("an unknown kind of change was accepted")
	}
}
