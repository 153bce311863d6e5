package authority

import (
	"bytes"
	"context"
	"crypto/subtle"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/p11escrow/p11escrow/authority/store"
	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// Outcome is what intake did with one record.
type Outcome string

// Intake outcomes.
const (
	Held      Outcome = "held"
	Rejected  Outcome = "rejected"
	Duplicate Outcome = "already held"
)

// IntakeResult reports one record.
type IntakeResult struct {
	Name    string // where the record came from, e.g. its file name
	FileID  string // empty if the record could not be parsed
	Outcome Outcome
	Reason  error // why it was rejected
	SameID  int   // held: how many other records were already held under the same file ID
	// Seq is the sequence number of the audit entry that stored a record held now; 0 otherwise.
	Seq int64

	held *HeldRecord // a record held now, as stored
}

// Intake verifies one escrow record on the HSM and stores it (verified escrow, README):
//
//  1. the authority stanza is unwrapped on the token with C_UnwrapKey into a sensitive,
//     non-extractable session key (for an ecdh stanza, under a KEK derived on the token,
//     itself sensitive and non-extractable);
//  2. the token computes the key commitment, the header MAC and the record binding, which
//     must all match;
//  3. the record and an audit entry are stored in one transaction.
//
// A record that fails is rejected (and the rejection audited) with a one-line reason; nothing
// of it is stored. So is a record the HSM cannot process (see recordOrFatal). A valid record
// whose file ID and key commitment are already held is reported as a duplicate. The returned
// error is for failures that would hit every record (the token gone or logged out, the store),
// after which intake should stop.
func (a *Authority) Intake(ctx context.Context, name string, data []byte) (IntakeResult, error) {
	ks, err := a.newKeySet(ctx, a.keyPair)
	if err != nil {
		return IntakeResult{Name: name}, err
	}
	c := a.commitAll(ctx, []checked{a.check(ctx, name, data, nil, a.Token, ks)})[0]
	return c.res, c.err
}

// checked is a record after the token's checks, ready to be stored or rejected.
type checked struct {
	res IntakeResult
	rec *escrow.Record
	h   *escrow.Header
	st  *escrow.Stanza
	key *AuthorityKey
	kp  Key   // key's pair on the HSM
	bad error // why the record is rejected; nil if it verified
	err error // a token or store failure, after which intake stops
	// wrongAuthority: bad because the record is wrapped for a key that is not a live key of
	// this authority.
	wrongAuthority bool
}

// check parses and verifies one record on session on, with the keys of ks (prepare, then
// verify). It writes nothing, so it can run on several sessions at once.
func (a *Authority) check(ctx context.Context, name string, data []byte, readErr error, on *token.Token, ks *keySet) checked {
	if readErr != nil {
		return checked{res: IntakeResult{Name: name}, bad: readErr}
	}
	rec, err := escrow.ParseRecord(data)
	if err != nil {
		return checked{res: IntakeResult{Name: name}, bad: err}
	}
	c := a.prepare(ctx, name, rec, ks)
	a.verify(&c, on)
	return c
}

// prepare does a check's host work, which needs no session: the record's header and stanza, its
// owner, and the authority key it names. The record is rejected already if one of them fails.
func (a *Authority) prepare(ctx context.Context, name string, rec *escrow.Record, ks *keySet) checked {
	c := checked{res: IntakeResult{Name: name}}
	c.rec, c.res.FileID = rec, rec.FileID
	// Verify before looking for a duplicate, so that an altered copy of a held record is
	// reported as the forgery it is, not as "already held".
	h, st, err := rec.AuthorityStanza()
	if err != nil {
		c.bad = err
		return c
	}
	c.h, c.st = h, st
	if err := ownerMatches(rec, h); err != nil {
		c.bad = err
		return c
	}
	if c.key, err = ks.forTag(ctx, escrow.StanzaTag(st)); err != nil {
		var re *escrow.RecordError
		c.wrongAuthority = errors.As(err, &re)
		c.bad, c.err = recordOrFatal(err)
		return c
	}
	if c.kp, err = ks.pair(c.key); err != nil {
		c.bad, c.err = recordOrFatal(err)
	}
	return c
}

// verify does a prepared check's token work on session on, unless prepare already rejected the
// record: the authority stanza unwrapped on the HSM, and the record checked with it.
func (a *Authority) verify(c *checked, on *token.Token) {
	if c.bad != nil || c.err != nil {
		return
	}
	c.bad, c.err = recordOrFatal(VerifyOnToken(c.rec, c.h, c.st, c.kp.On(on)))
}

// recordOrFatal sorts a failure to check one record: into a reason to reject that record, or,
// for a failure that would hit every record (the token gone or logged out, the store), into an
// error that stops intake. A record the HSM cannot process (a mechanism or parameter it
// refuses, such as a sha256 stanza on a SHA-1-only HSM, or a key not found for its tag) is
// rejected with the HSM's reason, so that one bad record does not stop a batch.
func recordOrFatal(err error) (bad, fatal error) {
	var re *escrow.RecordError
	var te *token.Error
	switch {
	case err == nil:
		return nil, nil
	case errors.As(err, &re):
		return err, nil
	case token.Broken(err):
		return nil, err
	case errors.As(err, &te), errors.Is(err, token.ErrKeyNotFound), errors.Is(err, errKeyUnusable):
		return &escrow.RecordError{Reason: "the HSM cannot process it: " + err.Error()}, nil
	}
	return nil, err
}

// retiredKey is why a record for an authority key retired during its intake is rejected.
func retiredKey(k *AuthorityKey) error {
	return &escrow.RecordError{Reason: fmt.Sprintf("it is wrapped for authority key %s, which has been retired", k.Tag)}
}

// errKeyUnusable is why a record wrapped for a live authority key not found on the token is
// rejected.
var errKeyUnusable = errors.New("its authority key is not usable on this token")

// ownerMatches checks that the record's owner fingerprint is the key the header's owner stanza
// is addressed to (the stanza's tag is the fingerprint's first 4 bytes), so that a record cannot
// name an owner the file was not made for.
func ownerMatches(rec *escrow.Record, h *escrow.Header) error {
	for _, s := range h.Stanzas {
		if escrow.StanzaRole(s) != escrow.RoleOwner {
			continue
		}
		fpr, tag := rec.Owner.Fingerprint, escrow.StanzaTag(s)
		if len(fpr) != 64 || subtle.ConstantTimeCompare([]byte(fpr[:8]), []byte(tag)) != 1 {
			return &escrow.RecordError{Reason: fmt.Sprintf("its owner fingerprint does not match the header's owner stanza (key tag %s)", tag)}
		}
		return nil
	}
	return &escrow.RecordError{Reason: "its header has no owner stanza"}
}

// committed is what commitAll did with one checked record.
type committed struct {
	res IntakeResult
	err error // a token or store failure (see Intake)
}

// commitAll stores the checked records cs, and audits the rejected ones, in order. Consecutive
// verified records go to the store together, in one transaction (a group commit), so that the
// head lock, the head update and the durable commit are paid once for the group, not once per
// record. Each result is final when commitAll returns: a record is acknowledged only after the
// transaction that stored it has committed.
func (a *Authority) commitAll(ctx context.Context, cs []checked) []committed {
	out := make([]committed, len(cs))
	var group []int
	for i, c := range cs {
		if c.err == nil && c.bad == nil {
			group = append(group, i)
			continue
		}
		a.storeGroup(ctx, cs, group, out)
		group = group[:0]
		if c.err != nil {
			out[i] = committed{c.res, c.err}
		} else {
			out[i].res, out[i].err = a.reject(ctx, c.res, c.bad)
		}
	}
	a.storeGroup(ctx, cs, group, out)
	return out
}

// storeGroup holds the verified records cs[i], i in group, in one store transaction. Each is
// first offered as a new file ID (the common case, which needs no read); one the store refuses
// (its file ID or its file ID and key commitment are held already, perhaps by an earlier record
// of the group) goes through store, which reads what is held and audits the collision or the
// duplicate.
func (a *Authority) storeGroup(ctx context.Context, cs []checked, group []int, out []committed) {
	if len(group) == 0 {
		return
	}
	now := a.Now().UTC().Format(time.RFC3339)
	recs := make([]store.NewRecord, len(group))
	for j, i := range group {
		nr, err := a.newRecord(cs[i], now, nil)
		if err != nil {
			for _, i := range group {
				out[i] = committed{cs[i].res, err}
			}
			return
		}
		recs[j] = nr
	}
	got, err := a.st.Intake(ctx, recs)
	for j, i := range group {
		c := cs[i]
		switch {
		case err != nil:
			out[i] = committed{c.res, err}
		case got[j].Err == nil:
			res := c.res
			res.Outcome, res.Seq, res.held = Held, got[j].Seq, recs[j].Record
			out[i] = committed{res, nil}
		case errors.Is(got[j].Err, ErrRetired):
			out[i].res, out[i].err = a.reject(ctx, c.res, retiredKey(c.key))
		default:
			out[i].res, out[i].err = a.store(ctx, c)
		}
	}
}

// IntakeAll takes in many records. The token checks run on up to sessions sessions of the
// authority's token at once, because the RSA private operation of each unwrap is the limit;
// the store writes run one at a time, in the order of names, so that acknowledgements stay in
// order and the audit chain has a single writer. read loads a record; its error rejects that
// record. report is called after each record is committed. It stops at the first token or
// store failure.
func (a *Authority) IntakeAll(ctx context.Context, names []string, read func(string) ([]byte, error), sessions int, report func(int, IntakeResult)) error {
	if err := a.checkHSM(); err != nil {
		return err
	}
	p, err := a.startChecks(ctx, names, read, sessions)
	if err != nil {
		return err
	}
	defer p.stop()
	for i := 0; i < len(names); {
		// The group is every record whose check is done, in order: at least the next one,
		// and up to one that failed on the token or the store, after which intake stops.
		group := []checked{<-p.results[i]}
	ready:
		for group[len(group)-1].err == nil && i+len(group) < len(names) && len(group) < maxGroup {
			select {
			case c := <-p.results[i+len(group)]:
				group = append(group, c)
			default:
				break ready
			}
		}
		for _, c := range a.commitAll(ctx, group) {
			p.window <- struct{}{}
			if c.err != nil {
				return fmt.Errorf("%s: %w", names[i], c.err)
			}
			report(i, c.res)
			i++
		}
	}
	return nil
}

// maxGroup is the most records committed in one transaction: enough to pay a transaction's
// fixed cost once for a whole window of checks, few enough that no transaction holds the audit
// head for long.
const maxGroup = 64

// checkPool runs check on several sessions, ahead of the committer by at most a window.
type checkPool struct {
	results []chan checked
	window  chan struct{} // one value per record the committer has taken
	done    chan struct{}
	wg      sync.WaitGroup
	keys    *keySet
}

// findKeys reads the live authority keys and finds each one's key pair on the token, before any
// other session runs: looking one up later would use the first session while a check may be
// running an operation on it. A key not on the token stays missing, so only records wrapped for
// it fail, unless lookup is not nil: then a key not found at first (one registered later, by a
// rotation) is looked up with it, once, when a record names it.
func (a *Authority) findKeys(ctx context.Context, lookup func(*AuthorityKey) (Key, error)) (*keySet, error) {
	found := map[string]Key{}
	tried := map[string]bool{}
	var ks *keySet
	ks, err := a.newKeySet(ctx, func(k *AuthorityKey) (Key, error) {
		ks.mu.Lock()
		defer ks.mu.Unlock()
		if kp, ok := found[k.Fingerprint]; ok {
			return kp, nil
		}
		if lookup != nil && !tried[k.Fingerprint] {
			tried[k.Fingerprint] = true
			if kp, err := lookup(k); err == nil {
				found[k.Fingerprint] = kp
				return kp, nil
			}
		}
		return Key{}, fmt.Errorf("%w: %q (%s)", errKeyUnusable, k.Label, k.Tag)
	})
	if err != nil {
		return nil, err
	}
	for _, k := range ks.live {
		if kp, err := a.keyPair(k); err == nil {
			found[k.Fingerprint] = kp
			tried[k.Fingerprint] = true
		}
	}
	ks.found = len(found)
	return ks, nil
}

func (a *Authority) startChecks(ctx context.Context, names []string, read func(string) ([]byte, error), sessions int) (*checkPool, error) {
	keys, err := a.findKeys(ctx, nil)
	if err != nil {
		return nil, err
	}
	sessions = max(1, min(sessions, len(names)))
	p := &checkPool{results: make([]chan checked, len(names)), window: make(chan struct{}, len(names)),
		done: make(chan struct{}), keys: keys}
	for i := range p.results {
		p.results[i] = make(chan checked, 1)
	}
	jobs := make(chan int)
	go p.feed(jobs, len(names), 4*sessions)
	for _, on := range append([]*token.Token{a.Token}, a.Token.Sessions(sessions-1)...) {
		p.wg.Add(1)
		go func() {
			defer p.wg.Done()
			if on != a.Token {
				defer on.Close()
			}
			for i := range jobs {
				data, err := read(names[i])
				p.results[i] <- a.check(ctx, names[i], data, err, on, p.keys)
			}
		}()
	}
	return p, nil
}

// feed hands out record indexes, never more than ahead records past the committer.
func (p *checkPool) feed(jobs chan<- int, n, ahead int) {
	defer close(jobs)
	for i := 0; i < n; i++ {
		if i >= ahead {
			select {
			case <-p.window:
			case <-p.done:
				return
			}
		}
		select {
		case jobs <- i:
		case <-p.done:
			return
		}
	}
}

// stop ends the feeder and waits for the workers, so that no session is used after return.
func (p *checkPool) stop() {
	close(p.done)
	p.wg.Wait()
}

// keyForTag finds the live authority key a stanza's key tag names.
func (a *Authority) keyForTag(ctx context.Context, tag string) (*AuthorityKey, error) {
	keys, err := a.liveKeys(ctx)
	if err != nil {
		return nil, err
	}
	return withTag(keys, tag)
}

// withTag finds the key with a stanza's key tag among keys.
func withTag(keys []*AuthorityKey, tag string) (*AuthorityKey, error) {
	for _, k := range keys {
		if k.Tag == tag {
			return k, nil
		}
	}
	return nil, &escrow.RecordError{Reason: fmt.Sprintf("it is wrapped for authority key %s, which is not a key of this authority", tag)}
}

// keySet is what the checks of an intake know of the authority's keys: the live keys, read from
// the store when the intake begins and again when a record names a key tag that is not among
// them (at most once a second, so that records with made-up tags cannot make every check a
// store read), and how to find each one's key pair on the token. A key retired meanwhile is
// refused by the store, in the transaction that would hold the record (ErrRetired).
type keySet struct {
	a     *Authority
	pair  func(*AuthorityKey) (Key, error)
	found int // findKeys: how many key pairs were found on the token

	mu   sync.Mutex
	live []*AuthorityKey
	read time.Time
}

func (a *Authority) newKeySet(ctx context.Context, pair func(*AuthorityKey) (Key, error)) (*keySet, error) {
	live, err := a.liveKeys(ctx)
	if err != nil {
		return nil, err
	}
	return &keySet{a: a, pair: pair, live: live, read: time.Now()}, nil
}

// forTag finds the live key a stanza's key tag names.
func (ks *keySet) forTag(ctx context.Context, tag string) (*AuthorityKey, error) {
	ks.mu.Lock()
	defer ks.mu.Unlock()
	k, err := withTag(ks.live, tag)
	if err == nil || time.Since(ks.read) < time.Second {
		return k, err
	}
	live, rerr := ks.a.liveKeys(ctx)
	if rerr != nil {
		return nil, rerr
	}
	ks.live, ks.read = live, time.Now()
	return withTag(live, tag)
}

// verifyOnToken unwraps the stanza as a sealed key and lets the token check the record.
func (a *Authority) verifyOnToken(rec *escrow.Record, h *escrow.Header, st *escrow.Stanza, key *AuthorityKey) error {
	kp, err := a.keyPair(key)
	if err != nil {
		return err
	}
	return VerifyOnToken(rec, h, st, kp)
}

// VerifyOnToken unwraps the record's authority stanza st with kp as a sensitive, non-extractable
// session key and lets the token check the commitment, the header MAC and the record binding:
// the session key never reaches this host's memory. For an EC key (an ecdh stanza) the
// key-encryption key is derived on the token too, sensitive and non-extractable, and destroyed
// after the unwrap: neither the shared secret nor the file key is ever readable by the host.
func VerifyOnToken(rec *escrow.Record, h *escrow.Header, st *escrow.Stanza, kp Key) error {
	sk, err := unwrapStanzaSealed(st, kp)
	if errors.Is(err, token.ErrKeyLength) {
		return &escrow.RecordError{Reason: "its wrapped key is not a 32-byte (AES-256) key; " + err.Error()}
	}
	if errors.Is(err, token.ErrDecrypt) {
		return &escrow.RecordError{Reason: "its wrapped key does not decrypt with the authority key"}
	}
	if err != nil {
		return err
	}
	defer sk.Destroy()
	return rec.VerifyOn(h, sk)
}

// unwrapStanzaSealed unwraps an authority stanza of kp's type on the token, sensitive and
// non-extractable. A stanza of the other type, or for another curve, is a RecordError.
func unwrapStanzaSealed(st *escrow.Stanza, kp Key) (*token.SecretKey, error) {
	if kp.EC != nil {
		es, err := escrow.ParseECStanza(st)
		if err != nil {
			return nil, &escrow.RecordError{Reason: err.Error()}
		}
		if curve, _ := escrow.CurveName(kp.EC.Public); es.Curve != curve {
			return nil, &escrow.RecordError{Reason: fmt.Sprintf("its ecdh stanza is on %s, but the authority key is on %s", es.Curve, curve)}
		}
		return kp.EC.UnwrapECDHKey(es.Ephemeral, es.Wrapped, false)
	}
	rs, err := escrow.ParseRSAStanza(st)
	if err != nil {
		return nil, &escrow.RecordError{Reason: err.Error()}
	}
	if len(rs.Wrapped) != kp.RSA.Public.Size() {
		return nil, &escrow.RecordError{Reason: "its wrapped key has the wrong length for the authority key"}
	}
	return kp.RSA.UnwrapOAEPSealed(rs.Hash, rs.Wrapped)
}

// newRecord is what the store keeps of a verified record, intake at now, with others the key
// commitments of the records already held under its file ID.
func (a *Authority) newRecord(c checked, now string, others []string) (store.NewRecord, error) {
	rec, commitment := c.rec, escrow.CommitmentText(c.h.Commitment)
	held := &HeldRecord{
		FileID: rec.FileID, Commitment: commitment, OwnerFingerprint: rec.Owner.Fingerprint,
		OwnerTokenLabel: rec.Owner.TokenLabel, OwnerTokenSerial: rec.Owner.TokenSerial, Description: rec.Description,
		Created: rec.Created, IntakeTime: now, AuthorityKey: c.key.Fingerprint, Status: StatusHeld, Record: rec.Marshal(),
		SameID: len(others),
	}
	hash, wrapped, err := stanzaWrap(c.st)
	if err != nil {
		return store.NewRecord{}, err
	}
	w := &Wrap{FileID: rec.FileID, Commitment: commitment, KeyFingerprint: c.key.Fingerprint, OAEPHash: hash,
		Wrapped: wrapped, Added: now}
	details := map[string]any{"file_id": rec.FileID, "key_commitment": commitment, "source": c.res.Name,
		"owner": rec.Owner.Fingerprint, "authority_key": c.key.Fingerprint}
	action := "intake"
	if len(others) > 0 {
		action, details["same_file_id"] = "intake-collision", others
	}
	return store.NewRecord{Record: held, Wrap: w, Event: a.event(action, details)}, nil
}

// store holds a verified record whose file ID may be held already. A record is identified by
// its file ID and key commitment: a record with a held file ID but another commitment is held
// too (someone made a file with a copied ID, or the owner's genuine record arrives after such a
// copy), and the collision is audited. Only the same core, byte for byte, is "already held".
func (a *Authority) store(ctx context.Context, c checked) (IntakeResult, error) {
	res, commitment := c.res, escrow.CommitmentText(c.h.Commitment)
	// Another intake may hold a record under this ID between the read and the write; the store
	// then refuses (ErrChanged) and the collision is read again, so that it is always audited.
	for try := 0; ; try++ {
		same, err := a.st.RecordsByID(ctx, c.rec.FileID)
		if err != nil {
			return res, err
		}
		var others []string
		for _, r := range same {
			if r.Commitment == commitment {
				return a.duplicate(ctx, res, r, c.h)
			}
			others = append(others, r.Commitment)
		}
		nr, err := a.newRecord(c, a.Now().UTC().Format(time.RFC3339), others)
		if err != nil {
			return res, err
		}
		got, err := a.st.Intake(ctx, []store.NewRecord{nr})
		if err == nil {
			err = got[0].Err
		}
		if (errors.Is(err, ErrChanged) || errors.Is(err, ErrExists)) && try < 3 {
			continue // another intake held a record under this ID meanwhile: read again
		}
		if errors.Is(err, ErrRetired) {
			return a.reject(ctx, res, retiredKey(c.key))
		}
		if err != nil {
			return res, err
		}
		res.Outcome, res.SameID, res.Seq, res.held = Held, len(others), got[0].Seq, nr.Record
		return res, nil
	}
}

func (a *Authority) reject(ctx context.Context, res IntakeResult, why error) (IntakeResult, error) {
	res.Outcome, res.Reason = Rejected, why
	details := map[string]any{"source": res.Name, "reason": why.Error()}
	if res.FileID != "" {
		details["file_id"] = res.FileID
	}
	return res, a.Log(ctx, "reject", details)
}

// duplicate reports a record whose file ID and key commitment are held, if held has the same
// core as h: the same file. Another core with the same commitment could be made only by someone
// who has the file key; it is rejected.
func (a *Authority) duplicate(ctx context.Context, res IntakeResult, held *HeldRecord, h *escrow.Header) (IntakeResult, error) {
	old, err := heldHeader(held)
	if err != nil {
		return res, err
	}
	if !bytes.Equal(old.Core(), h.Core()) {
		return a.reject(ctx, res, &escrow.RecordError{Reason: "a record with this file ID and key commitment but another core line is already held"})
	}
	res.Outcome = Duplicate
	return res, a.Log(ctx, "duplicate", map[string]any{"source": res.Name, "file_id": res.FileID,
		"key_commitment": escrow.CommitmentText(h.Commitment)})
}
