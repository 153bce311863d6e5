package authority

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"sync/atomic"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// Intaker takes in records one at a time from many goroutines, as a server receives them: each
// is checked on one of several HSM sessions exactly as Intake checks it, then stored (one
// commit at a time, so the audit chain has a single writer in this process), and answered with
// a receipt signed on the HSM. Close it to close its sessions.
type Intaker struct {
	a        *Authority
	keys     map[string]Key    // found before any session runs, read-only after
	sessions chan *token.Token // idle verification sessions
	opened   []*token.Token
	busy     atomic.Int64

	commitMu sync.Mutex

	signMu sync.Mutex // the signing session runs one operation at a time
	signOn *token.Token
	signer *token.Signer
}

// Submission is what an Intaker did with one submitted record.
type Submission struct {
	Result IntakeResult
	// Receipt is set for a record held now or already held.
	Receipt *escrow.Receipt
	// Malformed: the body is not an escrow record. It is not audited (anyone on the network
	// could fill the audit log with noise); a record that parses and fails is audited as intake
	// audits it.
	Malformed bool
	// WrongAuthority: the record is wrapped for a key that is not a live key of this authority.
	WrongAuthority bool
}

// NewIntaker opens up to sessions HSM sessions for verification (fewer if the token allows
// fewer) and one for signing receipts, and finds the authority keys and the receipt key.
func (a *Authority) NewIntaker(ctx context.Context, sessions int) (*Intaker, error) {
	if err := a.checkHSM(); err != nil {
		return nil, err
	}
	signer, err := a.ReceiptSigner(ctx)
	if err != nil {
		return nil, err
	}
	keys, err := a.findKeys(ctx)
	if err != nil {
		return nil, err
	}
	if len(keys) == 0 {
		return nil, errors.New("no live authority key of the store is on this token")
	}
	sessions = max(1, sessions)
	in := &Intaker{a: a, keys: keys, sessions: make(chan *token.Token, sessions)}
	// Sessions opens up to sessions (fewer if the token allows fewer, at least one).
	in.opened = a.Token.Sessions(sessions)
	if len(in.opened) == 0 {
		return nil, errors.New("the HSM opened no session for verification")
	}
	for _, s := range in.opened {
		in.sessions <- s
	}
	// Receipts are signed on the authority's own session, which verification never uses.
	in.signOn, in.signer = a.Token, signer
	return in, nil
}

// Sessions is the number of HSM sessions records are verified on: the most records verified at
// once.
func (in *Intaker) Sessions() int { return len(in.opened) }

// Busy is the number of verification sessions in use now.
func (in *Intaker) Busy() int { return int(in.busy.Load()) }

// Close closes the verification sessions. Call it after the last Submit has returned.
func (in *Intaker) Close() error {
	var errs []error
	for _, s := range in.opened {
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// Ping checks that the HSM's session is logged in and the store answers.
func (in *Intaker) Ping(ctx context.Context) error {
	in.signMu.Lock()
	ok := in.signOn.LoggedIn()
	in.signMu.Unlock()
	if !ok {
		return errors.New("the HSM session is gone or logged out")
	}
	if _, _, err := in.a.st.AuditHead(ctx); err != nil {
		return fmt.Errorf("the store does not answer: %v", err)
	}
	return nil
}

// Submit verifies, stores and acknowledges one record. It waits for a free session until ctx
// ends. The error is for failures that are not the record's (the HSM, the store, ctx); the
// record's own faults are in the Submission.
func (in *Intaker) Submit(ctx context.Context, name string, data []byte) (Submission, error) {
	var sub Submission
	rec, err := escrow.ParseRecord(data)
	if err != nil {
		sub.Malformed, sub.Result = true, IntakeResult{Name: name, Outcome: Rejected, Reason: err}
		return sub, nil
	}
	if _, err := in.a.keyForTag(ctx, rec.Authority.KeyTag); err != nil {
		var re *escrow.RecordError
		if !errors.As(err, &re) {
			return sub, err
		}
		sub.WrongAuthority = true
	}
	var on *token.Token
	select {
	case on = <-in.sessions:
	case <-ctx.Done():
		return sub, ctx.Err()
	}
	in.busy.Add(1)
	c := in.a.check(ctx, name, data, nil, on, in.keyPair)
	in.busy.Add(-1)
	in.sessions <- on

	in.commitMu.Lock()
	sub.Result, err = in.a.commit(ctx, c)
	in.commitMu.Unlock()
	if err != nil || sub.Result.Outcome == Rejected {
		return sub, err
	}
	in.signMu.Lock()
	defer in.signMu.Unlock()
	sub.Receipt, err = in.a.Receipt(ctx, c.rec.FileID, escrow.CommitmentText(c.h.Commitment), in.signer.On(in.signOn))
	return sub, err
}

func (in *Intaker) keyPair(k *AuthorityKey) (Key, error) {
	if kp, ok := in.keys[k.Fingerprint]; ok {
		return kp, nil
	}
	return Key{}, fmt.Errorf("%w: %q (%s)", errKeyUnusable, k.Label, k.Tag)
}
