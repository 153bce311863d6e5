package authority

import (
	"bytes"
	"context"
	"fmt"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
)

// Governed reports whether changes to the officers and the policy need officers' approval. That
// is so once at least N officers are registered (N being the policy): from then on a quorum
// exists that can approve them. Before, while the authority is bootstrapping, nobody could
// approve anything, so such changes are made directly (and audited).
//
// Officers are never removed and a policy above the number of officers is refused once
// governed (checkChange), so an authority that is governed stays governed: nobody can reopen
// the direct path.
func (a *Authority) Governed(ctx context.Context) (bool, error) { return a.st.Governed(ctx) }

// refuseIfGoverned refuses a direct governance change once a quorum exists. The store checks
// again in the transaction that makes the change (ErrGoverned), which governedErr words alike.
func (a *Authority) refuseIfGoverned(ctx context.Context, what string) error {
	governed, err := a.Governed(ctx)
	if err != nil || !governed {
		return err
	}
	return governedErr(what)
}

func governedErr(what string) error {
	return refusef("%s needs the officers' approval now that a quorum is registered: make a change request", what)
}

// NewChangeRequest makes a change request and registers it in the store, so that a request file
// altered later is refused. requester is a.Actor. A change that could not be applied now (an
// officer already registered, a policy out of range) is refused at once.
func (a *Authority) NewChangeRequest(ctx context.Context, ch escrow.Change, reason string, ttl time.Duration) (*escrow.ChangeRequest, error) {
	if _, err := a.checkChange(ctx, ch); err != nil {
		return nil, err
	}
	if reason == "" {
		return nil, &NoReasonError{Kind: "change"}
	}
	inst, err := a.st.InstanceID(ctx)
	if err != nil {
		return nil, err
	}
	req, err := escrow.NewChangeRequest(inst, ch, reason, a.Actor, a.Now(), ttl)
	if err != nil {
		return nil, err
	}
	details := changeDetails(ch)
	details["request"], details["reason"], details["expires"] = req.ID, reason, req.Expires
	err = a.st.AddChangeRequest(ctx, &StoredRequest{ID: req.ID, Created: req.Created, Canonical: req.CanonicalBytes()}, a.event("change-request", details))
	return req, err
}

// changeDetails describes a change in audit entries.
func changeDetails(ch escrow.Change) map[string]any {
	if ch.Kind == escrow.ChangePolicy {
		return map[string]any{"change": ch.Kind, "approvals": ch.Approvals}
	}
	k, _ := ch.OfficerKey() // checked by checkChange before any audit entry is made
	fpr, _ := escrow.FingerprintOf(k)
	return map[string]any{"change": ch.Kind, "name": ch.Name, "key": fpr.String(), "algorithm": ch.Algorithm}
}

// checkChange checks that ch can be applied to the store as it is now, and returns it as the
// store's Governance.
func (a *Authority) checkChange(ctx context.Context, ch escrow.Change) (Governance, error) {
	switch ch.Kind {
	case escrow.ChangeOfficerAdd:
		return a.checkOfficerAdd(ctx, ch)
	case escrow.ChangePolicy:
		return Governance{Approvals: ch.Approvals}, a.checkPolicy(ctx, ch.Approvals)
	}
	return Governance{}, fmt.Errorf("unknown kind of change %q", ch.Kind)
}

func (a *Authority) checkOfficerAdd(ctx context.Context, ch escrow.Change) (Governance, error) {
	pub, err := ch.OfficerKey()
	if err != nil {
		return Governance{}, err
	}
	o, err := a.newOfficer(ch.Name, pub)
	if err != nil {
		return Governance{}, err
	}
	officers, err := a.st.Officers(ctx)
	if err != nil {
		return Governance{}, err
	}
	for _, known := range officers {
		if known.Name == o.Name || bytes.Equal(known.PublicKey, o.PublicKey) {
			return Governance{}, a.officerExists(ErrExists, o)
		}
	}
	return Governance{Officer: o}, nil
}

// checkPolicy refuses a policy below MinApprovals, the policy in force, and a policy above the
// number of registered officers: that would leave nobody able to approve anything, and reopen
// direct changes (see Governed).
func (a *Authority) checkPolicy(ctx context.Context, n int) error {
	if n < MinApprovals {
		return fmt.Errorf("a recovery needs at least %d approvals, so that no single person can recover a key alone", MinApprovals)
	}
	old, err := a.st.Approvals(ctx)
	if err != nil {
		return err
	}
	officers, err := a.st.Officers(ctx)
	switch {
	case err != nil:
		return err
	case n == old:
		return fmt.Errorf("the policy already needs %d approvals", n)
	case n > len(officers):
		return fmt.Errorf("only %d officers are registered, so a policy of %d approvals could never be met; register more officers first", len(officers), n)
	}
	return nil
}

// Apply makes the change of req once it carries the approvals the policy in force needs (see
// CheckApprovals: the same rule as for recoveries; a change to the policy is approved under the
// old one). The request is closed and the change made in one transaction. A refusal is audited
// too, so that attempts show in the log.
func (a *Authority) Apply(ctx context.Context, req *escrow.ChangeRequest) error {
	names, err := a.CheckApprovals(ctx, req)
	var g Governance
	if err == nil {
		g, err = a.checkChange(ctx, req.Change)
	}
	if err != nil {
		if lerr := a.Log(ctx, "change-refuse", map[string]any{"request": req.ID, "change": req.Change.Kind, "why": err.Error()}); lerr != nil {
			return lerr
		}
		return err
	}
	details := changeDetails(req.Change)
	details["request"], details["approved_by"] = req.ID, names
	err = a.st.ApplyChange(ctx, req.ID, g, a.event("change-apply", details))
	if g.Officer != nil {
		return a.officerExists(err, g.Officer)
	}
	return err
}
