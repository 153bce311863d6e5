package authority

import (
	"crypto"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
)

// TestStateBoundToChain: the rows that decide recoveries are bound to the audit chain, so an
// edit made with the database's own client, without p11escrow, is caught by --verify. A used
// request flipped back to open would otherwise allow a second recovery with the same approvals.
// (The store conformance suite tries an edit of every bound table.)
func TestStateBoundToChain(t *testing.T) {
	a, kp := newAuthority(t)
	owner, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Intake(t.Context(), "f", encryptFor(t, owner, kp.Public, 10).record)
	if err != nil || res.Outcome != Held {
		t.Fatal(res, err)
	}
	req, err := a.NewRequest(t.Context(), res.FileID, "", escrow.ActionReheader, owner.Public, crypto.SHA1, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.st.Recovered(t.Context(), req.ID, a.event("recover", nil)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.VerifyAudit(t.Context()); err != nil {
		t.Fatalf("untouched store: %v", err)
	}
	if _, err := rawDB(t, a).Exec(`UPDATE requests SET state = 'open'`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.VerifyAudit(t.Context()); err == nil {
		t.Error("a request flipped back to open was not caught")
	}
}
