package authority

import (
	"strings"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// changeFor makes a change request to register a new officer key, as the CLI does.
func changeFor(t *testing.T, a *Authority, name string) (*escrow.ChangeRequest, *token.Signer) {
	t.Helper()
	s, err := a.Token.GenerateSigner(uniq(t, name), token.SignECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	ch, err := escrow.OfficerAddChange(name, s.Public())
	if err != nil {
		t.Fatal(err)
	}
	req, err := a.NewChangeRequest(t.Context(), ch, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return req, s
}

func approveChange(t *testing.T, a *Authority, req *escrow.ChangeRequest, s *token.Signer) {
	t.Helper()
	ap, _, err := signApproval(t, a, req, s)
	if err != nil {
		t.Fatal(err)
	}
	req.AddApproval(ap)
}

func wantErr(t *testing.T, what string, err error, want string) {
	t.Helper()
	if err == nil || !strings.Contains(err.Error(), want) {
		t.Errorf("%s: got %v, want %q", what, err, want)
	}
}

func officerCount(t *testing.T, a *Authority) int {
	t.Helper()
	list, err := a.st.Officers(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return len(list)
}

func TestGovernance(t *testing.T) {
	a, _ := newAuthority(t)
	if g, err := a.Governed(t.Context()); err != nil || g {
		t.Fatalf("a new authority is governed: %v %v", g, err)
	}
	o1 := officer(t, a, "o1", token.SignECDSAP256) // bootstrap: direct
	o2 := officer(t, a, "o2", token.SignRSAPSS2048)
	if g, _ := a.Governed(t.Context()); !g {
		t.Fatal("two officers under a policy of two are not a quorum")
	}
	puppet, err := a.Token.GenerateSigner(uniq(t, "puppet"), token.SignECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	_, err = a.AddOfficer(t.Context(), "puppet", puppet.Public())
	wantErr(t, "direct officer add with a quorum", err, "needs the officers' approval")
	wantErr(t, "direct policy with a quorum", a.SetApprovals(t.Context(), 3), "needs the officers' approval")
	if err := a.SetApprovals(t.Context(), 2); err != nil {
		t.Errorf("setting the policy in force: %v", err)
	}

	req, o3 := changeFor(t, a, "o3")
	approveChange(t, a, req, o1)
	wantErr(t, "one approval", a.Apply(t.Context(), roundTripChange(t, req)), "the policy needs 2")
	approveChange(t, a, req, o2)

	altered := roundTripChange(t, req)
	altered.Change.Name = "mallory"
	wantErr(t, "altered", a.Apply(t.Context(), altered), "altered")
	a.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	wantErr(t, "expired", a.Apply(t.Context(), roundTripChange(t, req)), "expired")
	a.Now = time.Now
	if n := officerCount(t, a); n != 2 {
		t.Fatalf("%d officers registered before the change was applied", n)
	}
	if err := a.Apply(t.Context(), roundTripChange(t, req)); err != nil {
		t.Fatalf("approved change refused: %v", err)
	}
	if n := officerCount(t, a); n != 3 {
		t.Errorf("%d officers after the change, want 3", n)
	}
	wantErr(t, "applied twice", a.Apply(t.Context(), roundTripChange(t, req)), "already used")

	_, err = a.NewChangeRequest(t.Context(), escrow.PolicyChange(4), "x", time.Hour)
	wantErr(t, "policy above the officers", err, "only 3 officers")
	pol, err := a.NewChangeRequest(t.Context(), escrow.PolicyChange(3), "x", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	approveChange(t, a, pol, o3)
	approveChange(t, a, pol, o1)
	if err := a.Apply(t.Context(), roundTripChange(t, pol)); err != nil {
		t.Fatalf("a policy change approved under the old policy was refused: %v", err)
	}
	if n, _ := a.st.Approvals(t.Context()); n != 3 {
		t.Errorf("policy %d after the change, want 3", n)
	}
	if _, _, err := a.VerifyAudit(t.Context()); err != nil {
		t.Error(err)
	}
}

// roundTripChange writes and parses a change request, as the files between the commands do.
func roundTripChange(t *testing.T, req *escrow.ChangeRequest) *escrow.ChangeRequest {
	t.Helper()
	r, err := escrow.ParseChangeRequest(req.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return r
}
