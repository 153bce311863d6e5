// Package storetest is the conformance suite that every Store backend passes: the same tests,
// run by each backend's own test with a Backend that makes its databases.
package storetest

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/authority/store"
)

// Backend makes databases for the suite.
type Backend struct {
	// New makes a new, empty database and returns its reference (a path or a URL).
	New func(t *testing.T) string
	// Open opens the store at ref, creating its schema if needed.
	Open func(ctx context.Context, ref string) (store.Store, error)
	// Raw opens a connection to ref that bypasses p11escrow, as an intruder's client would.
	Raw func(t *testing.T, ref string) *sql.DB
}

// Run runs the whole suite against b.
func Run(t *testing.T, b Backend) {
	t.Run("Lifecycle", func(t *testing.T) { testLifecycle(t, b) })
	t.Run("Tamper", func(t *testing.T) { testTamper(t, b) })
	t.Run("ConcurrentWriters", func(t *testing.T) { testConcurrentWriters(t, b) })
	t.Run("SnapshotWhileWriting", func(t *testing.T) { testSnapshotWhileWriting(t, b) })
	t.Run("OfficerRace", func(t *testing.T) { testOfficerRace(t, b) })
	t.Run("Receipts", func(t *testing.T) { testReceipts(t, b) })
	t.Run("GroupCommit", func(t *testing.T) { testGroupCommit(t, b) })
	t.Run("RequestLock", func(t *testing.T) { testRequestLock(t, b) })
}

func open(t *testing.T, b Backend, ref string) store.Store {
	t.Helper()
	st, err := b.Open(context.Background(), ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

func ev(action string) store.Event {
	return store.Event{Time: time.Now(), Actor: "storetest", Action: action, Details: "{}"}
}

// verify checks the chain and the bound state at one instant, and returns the entry count.
func verify(t *testing.T, st store.Store) int64 {
	t.Helper()
	snap, err := st.AuditSnapshot(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	n, err := store.VerifyChain(snap.Entries, snap.Count, snap.Head)
	if err != nil {
		t.Fatal(err)
	}
	if err := store.VerifyState(snap.Entries, snap.State); err != nil {
		t.Fatal(err)
	}
	return n
}

func key(n int) *store.AuthorityKey {
	return &store.AuthorityKey{Fingerprint: fmt.Sprintf("SHA256:key%d", n), Label: fmt.Sprintf("k%d", n),
		Tag: fmt.Sprintf("tag%d", n), OAEPHash: "sha256", Created: fmt.Sprintf("2026-11-30T00:00:0%dZ", n),
		PublicKey: []byte{0x30, byte(n)}}
}

func record(id, commitment, key string, sameID int) (*store.HeldRecord, *store.Wrap) {
	r := &store.HeldRecord{FileID: id, Commitment: commitment, OwnerFingerprint: "SHA256:owner",
		OwnerTokenLabel: "alice", OwnerTokenSerial: "0001", Description: "d", Created: "2026-11-30T00:00:00Z",
		IntakeTime: "2026-11-30T00:00:01Z", AuthorityKey: key, Status: store.StatusHeld, SameID: sameID,
		Record: []byte("record " + id + " " + commitment)}
	w := &store.Wrap{FileID: id, Commitment: commitment, KeyFingerprint: key, OAEPHash: "sha256",
		Wrapped: []byte{1, 2, 3}, Added: "2026-11-30T00:00:01Z"}
	return r, w
}

// refused runs change and checks that it fails with want and appends nothing.
func refused(t *testing.T, st store.Store, what string, change func() error, want error) {
	t.Helper()
	before, _, _ := st.AuditHead(context.Background())
	if err := change(); !errors.Is(err, want) {
		t.Fatalf("%s: %v, want %v", what, err, want)
	}
	if after, _, _ := st.AuditHead(context.Background()); after != before {
		t.Fatalf("%s was refused but appended to the audit log", what)
	}
}

func testLifecycle(t *testing.T, b Backend) {
	ctx := context.Background()
	ref := b.New(t)
	st := open(t, b, ref)
	id, err := st.InstanceID(ctx)
	if err != nil || len(id) != 32 {
		t.Fatalf("InstanceID = %q, %v", id, err)
	}
	if again := open(t, b, ref); again != nil {
		if id2, _ := again.InstanceID(ctx); id2 != id {
			t.Fatalf("instance ID changed on reopen: %q, %q", id, id2)
		}
	}
	if n, err := st.Approvals(ctx); err != nil || n != 2 {
		t.Fatalf("default approvals %d, %v; want 2", n, err)
	}
	k1, k2 := key(1), key(2)
	if err := st.AddAuthorityKey(ctx, k1, ev("init")); err != nil {
		t.Fatal(err)
	}
	refused(t, st, "a second key with the same label", func() error {
		return st.AddAuthorityKey(ctx, &store.AuthorityKey{Fingerprint: "SHA256:other", Label: k1.Label, PublicKey: []byte{1}}, ev("init"))
	}, store.ErrExists)

	r1, w1 := record("f1", "c1", k1.Fingerprint, 0)
	if err := intakeOne(ctx, st, r1, w1, ev("intake")); err != nil {
		t.Fatal(err)
	}
	refused(t, st, "the same record again", func() error { return intakeOne(ctx, st, r1, w1, ev("intake")) }, store.ErrExists)
	r2, w2 := record("f1", "c2", k1.Fingerprint, 0)
	refused(t, st, "a second commitment under a held ID unseen", func() error { return intakeOne(ctx, st, r2, w2, ev("intake")) }, store.ErrChanged)
	r2.SameID = 1
	if err := intakeOne(ctx, st, r2, w2, ev("intake")); err != nil {
		t.Fatal(err)
	}
	got, err := st.Record(ctx, "f1", "c2")
	if err != nil || string(got.Record) != string(r2.Record) || got.SameID != 1 || got.OwnerTokenLabel != "alice" {
		t.Fatalf("Record = %+v, %v", got, err)
	}
	if _, err := st.Record(ctx, "f1", "c3"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Record(absent) = %v, want ErrNotFound", err)
	}
	if recs, err := st.RecordsByID(ctx, "f1"); err != nil || len(recs) != 2 || recs[0].Record == nil {
		t.Fatalf("RecordsByID = %v, %v", recs, err)
	}
	if recs, err := st.Records(ctx, store.Filter{Owner: "SHA256:owner"}); err != nil || len(recs) != 2 || recs[0].Record != nil {
		t.Fatalf("Records = %v, %v; want two, without their bytes", recs, err)
	}
	if recs, err := st.Records(ctx, store.Filter{TokenSerial: "none"}); err != nil || len(recs) != 0 {
		t.Fatalf("Records(other serial) = %v, %v", recs, err)
	}
	if ws, err := st.Wraps(ctx, "f1", "c1"); err != nil || len(ws) != 1 || string(ws[0].Wrapped) != "\x01\x02\x03" {
		t.Fatalf("Wraps = %v, %v", ws, err)
	}

	// Rotation: k2 becomes current, k1 previous; k1 retires only once every record has a wrap
	// under k2.
	if err := st.AddAuthorityKey(ctx, k2, ev("rotate-start")); err != nil {
		t.Fatal(err)
	}
	keys, err := st.AuthorityKeys(ctx)
	if err != nil || len(keys) != 2 || keys[0].State != store.KeyPrevious || keys[1].State != store.KeyCurrent {
		t.Fatalf("AuthorityKeys after rotation = %v, %v", keys, err)
	}
	pending, err := st.PendingRewrap(ctx, k2.Fingerprint)
	if err != nil || len(pending) != 2 {
		t.Fatalf("PendingRewrap = %v, %v", pending, err)
	}
	refused(t, st, "retiring a key that records need", func() error { return st.RetireKey(ctx, k1.Fingerprint, ev("retire-key")) }, store.ErrInUse)
	for _, p := range pending {
		w := &store.Wrap{FileID: p.FileID, Commitment: p.Commitment, KeyFingerprint: k2.Fingerprint,
			OAEPHash: "sha256", Wrapped: []byte{4}, Added: "2026-11-30T00:00:02Z"}
		if err := st.AddWrap(ctx, w, ev("rewrap")); err != nil {
			t.Fatal(err)
		}
	}
	if pending, _ := st.PendingRewrap(ctx, k2.Fingerprint); len(pending) != 0 {
		t.Fatalf("PendingRewrap after rewrapping = %v", pending)
	}
	if r, _ := st.Record(ctx, "f1", "c1"); r.AuthorityKey != k2.Fingerprint {
		t.Fatalf("record's key after rewrap = %s", r.AuthorityKey)
	}
	if err := st.RetireKey(ctx, k1.Fingerprint, ev("retire-key")); err != nil {
		t.Fatal(err)
	}

	// Officers: direct changes only while bootstrapping.
	if g, err := st.Governed(ctx); err != nil || g {
		t.Fatalf("Governed with no officers = %v, %v", g, err)
	}
	for i := range 2 {
		o := &store.Officer{Fingerprint: fmt.Sprintf("SHA256:o%d", i), Name: fmt.Sprintf("o%d", i),
			Algorithm: "ecdsa-p256-sha256", PublicKey: []byte{byte(i)}, Added: "2026-11-30T00:00:00Z"}
		if err := st.AddOfficer(ctx, o, ev("officer-add")); err != nil {
			t.Fatal(err)
		}
	}
	if g, err := st.Governed(ctx); err != nil || !g {
		t.Fatalf("Governed with a quorum = %v, %v", g, err)
	}
	o3 := &store.Officer{Fingerprint: "SHA256:o3", Name: "o3", Algorithm: "ecdsa-p256-sha256", PublicKey: []byte{3}, Added: "x"}
	refused(t, st, "a direct officer once governed", func() error { return st.AddOfficer(ctx, o3, ev("officer-add")) }, store.ErrGoverned)
	refused(t, st, "a direct policy once governed", func() error { return st.SetApprovals(ctx, 1, ev("policy")) }, store.ErrGoverned)
	if os, err := st.Officers(ctx); err != nil || len(os) != 2 || os[0].Name != "o0" {
		t.Fatalf("Officers = %v, %v", os, err)
	}

	// A recovery request is used once, and marks its record recovered.
	rq := &store.StoredRequest{ID: "00112233445566778899aabbccddeeff", FileID: "f1", Commitment: "c1",
		Created: "2026-11-30T00:00:03Z", Canonical: []byte("request")}
	if err := st.AddRequest(ctx, rq, ev("request")); err != nil {
		t.Fatal(err)
	}
	if got, err := st.Request(ctx, rq.ID); err != nil || got.State != "open" || got.Commitment != "c1" || string(got.Canonical) != "request" {
		t.Fatalf("Request = %+v, %v", got, err)
	}
	if _, err := st.Request(ctx, "ffffffffffffffffffffffffffffffff"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("Request(absent) = %v, want ErrNotFound", err)
	}
	if err := st.Recovered(ctx, rq.ID, ev("recover-deliver")); err != nil {
		t.Fatal(err)
	}
	n, _, _ := st.AuditHead(ctx)
	if err := st.Recovered(ctx, rq.ID, ev("recover-deliver")); err == nil {
		t.Fatal("a request was used twice")
	}
	if m, _, _ := st.AuditHead(ctx); m != n {
		t.Fatal("a refused second use was audited as done")
	}
	if r, _ := st.Record(ctx, "f1", "c1"); r.Status != store.StatusRecovered {
		t.Fatalf("status after recovery = %s", r.Status)
	}

	// A change request is applied once.
	cr := &store.StoredRequest{ID: "ffeeddccbbaa99887766554433221100", Created: "2026-11-30T00:00:04Z", Canonical: []byte("change")}
	if err := st.AddChangeRequest(ctx, cr, ev("change-request")); err != nil {
		t.Fatal(err)
	}
	if err := st.ApplyChange(ctx, cr.ID, store.Governance{Approvals: 1}, ev("change-apply")); err != nil {
		t.Fatal(err)
	}
	if err := st.ApplyChange(ctx, cr.ID, store.Governance{Approvals: 2}, ev("change-apply")); err == nil {
		t.Fatal("a change request was applied twice")
	}
	if n, _ := st.Approvals(ctx); n != 1 {
		t.Fatalf("approvals after the change = %d, want 1", n)
	}
	if err := st.Log(ctx, ev("note")); err != nil {
		t.Fatal(err)
	}
	entries, err := st.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	count, head, err := st.AuditHead(ctx)
	if err != nil || count != int64(len(entries)) || string(head) != string(entries[len(entries)-1].Hash) {
		t.Fatalf("AuditHead = %d, %x, %v; the log has %d entries", count, head, err, len(entries))
	}
	if n := verify(t, st); n != count {
		t.Fatalf("verified %d entries, head says %d", n, count)
	}
}

// testTamper edits the database with another client: every bound row changed, inserted or
// deleted, and every audit entry edited, is caught.
func testTamper(t *testing.T, b Backend) {
	ctx := context.Background()
	fresh := func(t *testing.T) (store.Store, *sql.DB) {
		ref := b.New(t)
		st := open(t, b, ref)
		k := key(1)
		r, w := record("f1", "c1", k.Fingerprint, 0)
		rq := &store.StoredRequest{ID: "00112233445566778899aabbccddeeff", FileID: "f1", Commitment: "c1", Created: "x", Canonical: []byte("r")}
		o := &store.Officer{Fingerprint: "SHA256:o", Name: "o", Algorithm: "ecdsa-p256-sha256", PublicKey: []byte{1}, Added: "x"}
		for _, err := range []error{
			st.AddAuthorityKey(ctx, k, ev("init")),
			intakeOne(ctx, st, r, w, ev("intake")),
			st.AddOfficer(ctx, o, ev("officer-add")),
			st.AddRequest(ctx, rq, ev("request")),
			st.Recovered(ctx, rq.ID, ev("recover-deliver")),
			st.Log(ctx, ev("note")),
		} {
			if err != nil {
				t.Fatal(err)
			}
		}
		verify(t, st)
		return st, b.Raw(t, ref)
	}
	state := []struct{ name, sql, table string }{
		{"request reopened", `UPDATE requests SET state = 'open'`, "requests"},
		{"record status", `UPDATE records SET status = 'held'`, "records"},
		{"policy", `UPDATE meta SET value = '5' WHERE key = 'approvals'`, "meta"},
		{"officer inserted", `INSERT INTO officers SELECT 'SHA256:m', 'mallory', algorithm, public_key, added FROM officers`, "officers"},
		{"officer deleted", `DELETE FROM officers`, "officers"},
		{"wrap deleted", `DELETE FROM wraps`, "wraps"},
		{"key state", `UPDATE authority_keys SET state = 'retired'`, "authority_keys"},
	}
	for _, c := range state {
		t.Run(c.name, func(t *testing.T) {
			st, raw := fresh(t)
			if _, err := raw.Exec(c.sql); err != nil {
				t.Fatal(err)
			}
			snap, err := st.AuditSnapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := store.VerifyChain(snap.Entries, snap.Count, snap.Head); err != nil {
				t.Fatalf("the chain itself was not touched: %v", err)
			}
			var se *store.StateError
			if err := store.VerifyState(snap.Entries, snap.State); !errors.As(err, &se) || se.Table != c.table {
				t.Fatalf("VerifyState = %v, want a change to %s", err, c.table)
			}
		})
	}
	chain := []struct {
		name string
		sql  []string
		seq  int64
	}{
		{"edit", []string{`UPDATE audit SET details = '{"n":9}' WHERE seq = 4`}, 4},
		{"edit actor", []string{`UPDATE audit SET actor = 'someone' WHERE seq = 3`}, 3},
		{"delete middle", []string{`DELETE FROM audit WHERE seq = 4`}, 4},
		{"delete first", []string{`DELETE FROM audit WHERE seq = 1`}, 1},
		{"delete last", []string{`DELETE FROM audit WHERE seq = 6`}, 6},
		{"reorder", []string{`UPDATE audit SET seq = 100 WHERE seq = 3`, `UPDATE audit SET seq = 3 WHERE seq = 4`, `UPDATE audit SET seq = 4 WHERE seq = 100`}, 3},
		{"insert", []string{`UPDATE audit SET seq = seq + 100 WHERE seq >= 5`, `UPDATE audit SET seq = seq - 99 WHERE seq >= 100`,
			`INSERT INTO audit(seq, time, actor, action, details, prev_hash, hash, state) SELECT 5, time, actor, action, details, hash, hash, state FROM audit WHERE seq = 4`}, 5},
		{"append", []string{`INSERT INTO audit(seq, time, actor, action, details, prev_hash, hash, state) SELECT 8, time, actor, action, details, hash, hash, state FROM audit WHERE seq = 7`}, 8},
	}
	for _, c := range chain {
		t.Run(c.name, func(t *testing.T) {
			st, raw := fresh(t)
			if count, _, _ := st.AuditHead(ctx); count != 7 {
				t.Fatalf("the fresh log has %d entries, the cases expect 7", count)
			}
			for _, q := range c.sql {
				if _, err := raw.Exec(q); err != nil {
					t.Fatal(err)
				}
			}
			snap, err := st.AuditSnapshot(ctx)
			if err != nil {
				t.Fatal(err)
			}
			_, err = store.VerifyChain(snap.Entries, snap.Count, snap.Head)
			var ae *store.AuditError
			if !errors.As(err, &ae) || ae.Seq != c.seq {
				t.Fatalf("VerifyChain = %v, want a break at entry %d", err, c.seq)
			}
		})
	}
}

// testConcurrentWriters appends from several connections at once: the chain stays linear, with
// every append in it exactly once.
func testConcurrentWriters(t *testing.T, b Backend) {
	ctx := context.Background()
	ref := b.New(t)
	first := open(t, b, ref)
	if err := first.AddAuthorityKey(ctx, key(1), ev("init")); err != nil {
		t.Fatal(err)
	}
	start, _, _ := first.AuditHead(ctx)
	const writers, each = 4, 25
	var wg sync.WaitGroup
	errs := make(chan error, writers*each)
	for w := range writers {
		st := open(t, b, ref)
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				var err error
				if i%5 == 0 {
					r, wr := record(fmt.Sprintf("w%d-%d", w, i), "c", key(1).Fingerprint, 0)
					err = intakeOne(ctx, st, r, wr, ev("intake"))
				} else {
					err = st.Log(ctx, ev(fmt.Sprintf("note %d %d", w, i)))
				}
				if err != nil {
					errs <- err
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	n := verify(t, first)
	if n != start+writers*each {
		t.Fatalf("the log has %d entries, want %d", n, start+writers*each)
	}
	if recs, _ := first.Records(ctx, store.Filter{}); len(recs) != writers*each/5 {
		t.Fatalf("%d records held, want %d", len(recs), writers*each/5)
	}
}

// testSnapshotWhileWriting: a snapshot is read at one instant, so a writer on another connection
// never makes a sound log look broken.
func testSnapshotWhileWriting(t *testing.T, b Backend) {
	ctx := context.Background()
	ref := b.New(t)
	w, r := open(t, b, ref), open(t, b, ref)
	done := make(chan error, 1)
	go func() {
		for i := range 100 {
			if err := w.Log(ctx, ev(fmt.Sprint("note ", i))); err != nil {
				done <- err
				return
			}
		}
		done <- nil
	}()
	for checks := 0; ; checks++ {
		select {
		case err := <-done:
			if err != nil {
				t.Fatal(err)
			}
			return
		default:
		}
		snap, err := r.AuditSnapshot(ctx)
		if err == nil {
			if _, err = store.VerifyChain(snap.Entries, snap.Count, snap.Head); err == nil {
				err = store.VerifyState(snap.Entries, snap.State)
			}
		}
		if err != nil {
			<-done
			t.Fatalf("verify during writes (check %d): %v", checks, err)
		}
	}
}

// testOfficerRace: the bootstrap check and the insert are one transaction, so officers added at
// once through separate connections never exceed the policy directly.
func testOfficerRace(t *testing.T, b Backend) {
	ctx := context.Background()
	for round := range 3 {
		ref := b.New(t)
		var wg sync.WaitGroup
		var mu sync.Mutex
		added := 0
		for i := range 4 {
			st := open(t, b, ref)
			wg.Add(1)
			go func() {
				defer wg.Done()
				o := &store.Officer{Fingerprint: fmt.Sprintf("SHA256:o%d", i), Name: fmt.Sprintf("o%d", i),
					Algorithm: "ecdsa-p256-sha256", PublicKey: []byte{byte(i)}, Added: "x"}
				if err := st.AddOfficer(ctx, o, ev("officer-add")); err == nil {
					mu.Lock()
					added++
					mu.Unlock()
				} else if !errors.Is(err, store.ErrGoverned) {
					t.Error(err)
				}
			}()
		}
		wg.Wait()
		st := open(t, b, ref)
		officers, _ := st.Officers(ctx)
		if len(officers) != 2 || added != 2 {
			t.Fatalf("round %d: %d officers registered directly (%d calls succeeded), policy 2", round, len(officers), added)
		}
		verify(t, st)
	}
}

// testReceipts: the receipt key is registered once, read back exactly, and bound to the chain;
// IntakeSeq finds the entry that stored a record, named by its file ID and key commitment.
func testReceipts(t *testing.T, b Backend) {
	ctx := context.Background()
	st := open(t, b, b.New(t))
	if _, _, err := st.ReceiptKey(ctx); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("ReceiptKey before one is registered: %v, want ErrNotFound", err)
	}
	pub := []byte{0x30, 0x59, 0x01, 0x02}
	if err := st.SetReceiptKey(ctx, "escrow-receipt", pub, ev("receipt-key")); err != nil {
		t.Fatal(err)
	}
	refused(t, st, "a second receipt key", func() error { return st.SetReceiptKey(ctx, "other", []byte{9}, ev("receipt-key")) }, store.ErrExists)
	if label, got, err := st.ReceiptKey(ctx); err != nil || label != "escrow-receipt" || string(got) != string(pub) {
		t.Fatalf("ReceiptKey = %q, %x, %v", label, got, err)
	}
	k := key(1)
	if err := st.AddAuthorityKey(ctx, k, ev("init")); err != nil {
		t.Fatal(err)
	}
	r, w := record("f9", "c9", k.Fingerprint, 0)
	intake := ev("intake")
	intake.Details = `{"file_id":"f9","key_commitment":"c9"}`
	if err := intakeOne(ctx, st, r, w, intake); err != nil {
		t.Fatal(err)
	}
	count, _, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if seq, err := st.IntakeSeq(ctx, "f9", "c9"); err != nil || int64(seq) != count {
		t.Fatalf("IntakeSeq = %d, %v; want %d", seq, err, count)
	}
	if _, err := st.IntakeSeq(ctx, "f9", "other"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("IntakeSeq of a record never held: %v, want ErrNotFound", err)
	}
	verify(t, st)
}

// intakeOne stores one record with Intake: the transaction's error, or the record's refusal.
func intakeOne(ctx context.Context, st store.Store, r *store.HeldRecord, w *store.Wrap, e store.Event) error {
	got, err := st.Intake(ctx, []store.NewRecord{{Record: r, Wrap: w, Event: e}})
	if err != nil {
		return err
	}
	if len(got) != 1 {
		return fmt.Errorf("Intake of one record returned %d results", len(got))
	}
	if got[0].Err == nil && got[0].Seq == 0 {
		return errors.New("Intake stored a record but gave no audit sequence number")
	}
	return got[0].Err
}

// testGroupCommit stores several records in one Intake: each refused record (already held, by
// an earlier record of the same batch too, or with a collision its caller did not see) leaves
// nothing, the others get consecutive entries with their own events, and a batch whose
// transaction fails stores none of its records.
func testGroupCommit(t *testing.T, b Backend) {
	ctx := context.Background()
	st := open(t, b, b.New(t))
	k := key(1)
	if err := st.AddAuthorityKey(ctx, k, ev("init")); err != nil {
		t.Fatal(err)
	}
	r1, w1 := record("f1", "c1", k.Fingerprint, 0)
	if err := intakeOne(ctx, st, r1, w1, ev("intake")); err != nil {
		t.Fatal(err)
	}
	start, _, err := st.AuditHead(ctx)
	if err != nil {
		t.Fatal(err)
	}
	item := func(id, c string, sameID int) store.NewRecord {
		r, w := record(id, c, k.Fingerprint, sameID)
		e := ev("intake")
		e.Details = fmt.Sprintf(`{"file_id":%q,"key_commitment":%q}`, id, c)
		return store.NewRecord{Record: r, Wrap: w, Event: e}
	}
	batch := []store.NewRecord{
		item("f2", "c2", 0),
		item("f1", "c1", 0), // held before the batch
		item("f3", "c3", 0),
		item("f3", "c3", 0), // held by the batch's third record
		item("f2", "c9", 0), // a collision with the batch's first record, not seen by its caller
		item("f4", "c4", 0),
	}
	want := []error{nil, store.ErrExists, nil, store.ErrExists, store.ErrChanged, nil}
	got, err := st.Intake(ctx, batch)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(batch) {
		t.Fatalf("Intake returned %d results for %d records", len(got), len(batch))
	}
	entries, err := st.Audit(ctx)
	if err != nil {
		t.Fatal(err)
	}
	next := start + 1
	for i, g := range got {
		nr := batch[i].Record
		if !errors.Is(g.Err, want[i]) {
			t.Fatalf("record %d (%s %s): %v, want %v", i, nr.FileID, nr.Commitment, g.Err, want[i])
		}
		if want[i] != nil {
			if g.Seq != 0 {
				t.Fatalf("record %d was refused but has audit entry %d", i, g.Seq)
			}
			continue
		}
		if g.Seq != next {
			t.Fatalf("record %d has audit entry %d, want %d (one entry per stored record, in order)", i, g.Seq, next)
		}
		next++
		if e := entries[g.Seq-1]; e.Seq != g.Seq || e.Details != batch[i].Event.Details {
			t.Fatalf("audit entry %d is %+v, want record %d's event %s", g.Seq, e, i, batch[i].Event.Details)
		}
		if _, err := st.Record(ctx, nr.FileID, nr.Commitment); err != nil {
			t.Fatalf("record %d (%s %s) stored but not found: %v", i, nr.FileID, nr.Commitment, err)
		}
	}
	if _, err := st.Record(ctx, "f2", "c9"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("the refused collision was stored: %v", err)
	}
	if n := verify(t, st); n != next-1 {
		t.Fatalf("the chain has %d entries, want %d", n, next-1)
	}

	refused(t, st, "a batch of records all held", func() error {
		got, err := st.Intake(ctx, []store.NewRecord{item("f1", "c1", 0), item("f4", "c4", 0)})
		if err != nil {
			return err
		}
		return errors.Join(got[0].Err, got[1].Err)
	}, store.ErrExists)

	// A record for a key retired after its caller looked the key up is refused in the
	// transaction, so that no record comes to depend on a retired key alone.
	k2 := key(2)
	if err := st.AddAuthorityKey(ctx, k2, ev("init")); err != nil {
		t.Fatal(err)
	}
	if err := st.RetireKey(ctx, k2.Fingerprint, ev("retire-key")); err != nil {
		t.Fatal(err)
	}
	refused(t, st, "a record for a retired key", func() error {
		r, w := record("f7", "c7", k2.Fingerprint, 0)
		return intakeOne(ctx, st, r, w, ev("intake"))
	}, store.ErrRetired)
	if _, err := st.Record(ctx, "f7", "c7"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a record for a retired key was stored: %v", err)
	}

	// A record wrapped under an unregistered key breaks the transaction: the new record before it
	// in the batch is not stored either.
	bad := item("f6", "c6", 0)
	bad.Wrap.KeyFingerprint = "SHA256:unregistered"
	before, _, _ := st.AuditHead(ctx)
	if _, err := st.Intake(ctx, []store.NewRecord{item("f5", "c5", 0), bad}); err == nil {
		t.Fatal("a wrap under an unregistered key was stored")
	}
	if after, _, _ := st.AuditHead(ctx); after != before {
		t.Fatalf("a failed batch appended %d entries", after-before)
	}
	if _, err := st.Record(ctx, "f5", "c5"); !errors.Is(err, store.ErrNotFound) {
		t.Fatalf("a failed batch stored its first record: %v", err)
	}
	verify(t, st)
}

// testRequestLock: a request locked through one opening of the store cannot be locked through
// another until it is unlocked; other requests can; locking appends nothing.
func testRequestLock(t *testing.T, b Backend) {
	ctx := context.Background()
	ref := b.New(t)
	st1, st2 := open(t, b, ref), open(t, b, ref)
	before, _, _ := st1.AuditHead(ctx)
	unlock, err := st1.LockRequest(ctx, "r1")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := st2.LockRequest(ctx, "r1"); !errors.Is(err, store.ErrInUse) {
		t.Fatalf("a second lock of a locked request: %v, want ErrInUse", err)
	}
	unlock2, err := st2.LockRequest(ctx, "r2")
	if err != nil {
		t.Fatalf("another request: %v", err)
	}
	unlock2()
	unlock()
	unlock, err = st2.LockRequest(ctx, "r1")
	if err != nil {
		t.Fatalf("the request once unlocked: %v", err)
	}
	unlock()
	if after, _, _ := st1.AuditHead(ctx); after != before {
		t.Fatalf("locking appended %d audit entries", after-before)
	}
}
