package authority

import (
	"context"
	"errors"
	"fmt"
	"sync/atomic"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// Intaker takes in records one at a time from many goroutines, as a server receives them: each
// is checked on one of several HSM sessions exactly as Intake checks it, then stored, and
// answered with a receipt signed on the HSM. The stores are group commits: one goroutine
// commits, and the records that reach it while it is committing go together into its next
// transaction, so that the audit chain keeps a single writer in this process and a transaction's
// fixed cost (the head lock, the head update, the durable commit) is shared. Each record is
// answered only after the transaction that stored it has committed. Close it to close its
// sessions.
type Intaker struct {
	a        *Authority
	keys     *keySet           // key pairs found at the start, and later ones on a signing session
	sessions chan *token.Token // idle verification sessions
	opened   []*token.Token
	busy     atomic.Int64

	commits   chan pendingCommit // unbuffered: a record handed over is the committer's
	stop      chan struct{}      // closed by Close
	committed chan struct{}      // closed when the committer has stopped

	signers  chan *token.Token // idle signing sessions
	signOn   []*token.Token    // every signing session; the first is the authority's own
	signer   *token.Signer
	instance string // the store's instance ID, which receipts name
}

// pendingCommit is a checked record waiting for the committer, and where its result goes.
type pendingCommit struct {
	c    checked
	done chan committed
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

// commitDelay is the longest a record waits for others to join its group commit, and only
// while others are being verified: about one RSA-3072 private operation on a software HSM, so
// that a group gathers the records of a round of verifications.
const commitDelay = 2 * time.Millisecond

// commitTimeout bounds one group commit: a store that does not answer fails the group's records
// (their submitters get an error and may retry) instead of holding them forever.
const commitTimeout = time.Minute

// NewIntaker opens up to sessions HSM sessions for verification (fewer if the token allows
// fewer), and up to two for signing receipts (the authority's own session and one more), and
// finds the authority keys and the receipt key.
func (a *Authority) NewIntaker(ctx context.Context, sessions int) (*Intaker, error) {
	if err := a.checkHSM(); err != nil {
		return nil, err
	}
	signer, err := a.ReceiptSigner(ctx)
	if err != nil {
		return nil, err
	}
	in := &Intaker{a: a}
	// A key registered after the service started (authority rotate) is found when a record first
	// names it, on a signing session: the verification sessions may be busy, and the Authority's
	// own session is one of the signing ones.
	keys, err := a.findKeys(ctx, func(k *AuthorityKey) (Key, error) {
		on := <-in.signers
		defer func() { in.signers <- on }()
		return a.keyPairOn(on, k)
	})
	if err != nil {
		return nil, err
	}
	if keys.found == 0 {
		return nil, errors.New("no live authority key of the store is on this token")
	}
	instance, err := a.st.InstanceID(ctx)
	if err != nil {
		return nil, err
	}
	sessions = max(1, sessions)
	in.keys, in.sessions, in.signer, in.instance = keys, make(chan *token.Token, sessions), signer, instance
	in.commits, in.stop, in.committed = make(chan pendingCommit), make(chan struct{}), make(chan struct{})
	// Sessions opens up to sessions (fewer if the token allows fewer, at least one).
	in.opened = a.Token.Sessions(sessions)
	if len(in.opened) == 0 {
		return nil, errors.New("the HSM opened no session for verification")
	}
	for _, s := range in.opened {
		in.sessions <- s
	}
	// Receipts are signed on sessions that verification never uses: the authority's own, and
	// one more, so that a signature never waits for an RSA operation. A signature costs a small
	// fraction of a verification, so two keep up with any number of verification sessions.
	in.signOn = append([]*token.Token{a.Token}, a.Token.Sessions(1)...)
	in.signers = make(chan *token.Token, len(in.signOn))
	for _, s := range in.signOn {
		in.signers <- s
	}
	go in.committer()
	return in, nil
}

// Sessions is the number of HSM sessions records are verified on: the most records verified at
// once.
func (in *Intaker) Sessions() int { return len(in.opened) }

// Busy is the number of verification sessions in use now.
func (in *Intaker) Busy() int { return int(in.busy.Load()) }

// Close stops the committer, once the group it is committing is done, and closes the sessions
// it opened. Call it after the last Submit has returned: a Submit still running (a shutdown
// whose grace ran out) fails without storing its record.
func (in *Intaker) Close() error {
	close(in.stop)
	<-in.committed
	var errs []error
	for _, s := range in.opened {
		errs = append(errs, s.Close())
	}
	for _, s := range in.signOn[1:] { // the first is the authority's own
		errs = append(errs, s.Close())
	}
	return errors.Join(errs...)
}

// Ping checks that the HSM's session is logged in and the store answers.
func (in *Intaker) Ping(ctx context.Context) error {
	var on *token.Token
	select {
	case on = <-in.signers:
	case <-ctx.Done():
		return ctx.Err()
	}
	ok := on.LoggedIn()
	in.signers <- on
	if !ok {
		return errors.New("the HSM session is gone or logged out")
	}
	if _, _, err := in.a.st.AuditHead(ctx); err != nil {
		return fmt.Errorf("the store does not answer: %v", err)
	}
	return nil
}

// Submit verifies, stores and acknowledges one record. It waits for a free session until ctx
// ends; once the record is verified it waits for its commit whatever ctx does, so that a record
// is never left half done. The error is for failures that are not the record's (the HSM, the
// store, ctx); the record's own faults are in the Submission.
func (in *Intaker) Submit(ctx context.Context, name string, data []byte) (Submission, error) {
	var sub Submission
	rec, err := escrow.ParseRecord(data)
	if err != nil {
		sub.Malformed, sub.Result = true, IntakeResult{Name: name, Outcome: Rejected, Reason: err}
		return sub, nil
	}
	// The host's part of the check runs before a session is taken, so that a session is held
	// only for the HSM's part.
	c := in.a.prepare(ctx, name, rec, in.keys)
	sub.WrongAuthority = c.wrongAuthority
	if c.bad == nil && c.err == nil {
		var on *token.Token
		select {
		case on = <-in.sessions:
		case <-ctx.Done():
			return sub, ctx.Err()
		}
		in.busy.Add(1)
		in.a.verify(&c, on)
		in.busy.Add(-1)
		in.sessions <- on
	}

	p := pendingCommit{c: c, done: make(chan committed, 1)}
	select {
	case in.commits <- p:
	case <-in.stop:
		return sub, errors.New("the authority is shutting down; the record was not stored")
	}
	done := <-p.done
	sub.Result = done.res
	if done.err != nil || sub.Result.Outcome == Rejected {
		return sub, done.err
	}
	sub.Receipt, err = in.receipt(ctx, c, sub.Result)
	return sub, err
}

// committer commits the records that Submit hands it, in groups: each group is the records
// waiting when the previous commit ended (see commitAll).
func (in *Intaker) committer() {
	defer close(in.committed)
	for {
		var first pendingCommit
		select {
		case first = <-in.commits:
		case <-in.stop:
			return
		}
		group := []pendingCommit{first}
		// While other records are being verified, wait a little for them: a commit's fixed
		// cost (on SQLite the WAL write and the fsync, on PostgreSQL the round trips and the WAL
		// flush) is then paid once for several records. A record alone is committed at once.
		deadline := time.NewTimer(commitDelay)
	more:
		for len(group) < maxGroup {
			select {
			case p := <-in.commits:
				group = append(group, p)
				continue
			default:
			}
			if in.busy.Load() == 0 {
				break
			}
			select {
			case p := <-in.commits:
				group = append(group, p)
			case <-deadline.C:
				break more
			case <-in.stop:
				break more
			}
		}
		deadline.Stop()
		cs := make([]checked, len(group))
		for i, p := range group {
			cs[i] = p.c
		}
		// Not a submitter's ctx: a client that goes away must not fail the others' commit.
		ctx, cancel := context.WithTimeout(context.Background(), commitTimeout)
		out := in.a.commitAll(ctx, cs)
		cancel()
		for i, p := range group {
			p.done <- out[i]
		}
	}
}

// receipt signs the receipt for a record held now (built from what was just stored, with no
// store read) or already held (read from the store, so that it says what the first one said).
func (in *Intaker) receipt(ctx context.Context, c checked, res IntakeResult) (*escrow.Receipt, error) {
	var r *escrow.Receipt
	if res.held != nil {
		r = newReceipt(in.instance, res.held, res.Seq)
	} else {
		var err error
		if r, err = in.a.receiptStatement(ctx, c.rec.FileID, escrow.CommitmentText(c.h.Commitment)); err != nil {
			return nil, err
		}
	}
	on := <-in.signers
	defer func() { in.signers <- on }()
	if err := r.Sign(in.signer.On(on)); err != nil {
		return nil, err
	}
	return r, nil
}
