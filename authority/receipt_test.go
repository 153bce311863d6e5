package authority

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
)

// TestIntakerReceipts: records submitted at once from several goroutines are verified on
// several sessions, held, and answered with receipts that verify with the registered receipt
// key; a record submitted again gets the same statement; a malformed body and a record for
// another authority are refused and nothing of them is stored; the audit chain, which binds the
// receipt key's registration, verifies.
func TestIntakerReceipts(t *testing.T) {
	ctx := context.Background()
	a, authKP := newAuthority(t)
	if _, err := a.ReceiptSigner(ctx); err == nil || !strings.Contains(err.Error(), "receipt-key init") {
		t.Fatalf("ReceiptSigner without a key: %v", err)
	}
	signer, err := a.CreateReceiptKey(ctx, uniq(t, "receipt"))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.CanCreateReceiptKey(ctx); err == nil {
		t.Fatal("a second receipt key was allowed")
	}
	in, err := a.NewIntaker(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if err := in.Ping(ctx); err != nil {
		t.Fatal(err)
	}

	owner, _ := rsa.GenerateKey(rand.Reader, 2048)
	fpr, _ := escrow.FingerprintOf(&owner.PublicKey)
	const n = 6
	recs := make([][]byte, n)
	for i := range recs {
		recs[i] = hostRecord(t, &owner.PublicKey, authKP.Public, crypto.SHA1, fpr.String())
	}
	subs := make([]Submission, n)
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range recs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			subs[i], errs[i] = in.Submit(ctx, "net", recs[i])
		}()
	}
	wg.Wait()
	for i, s := range subs {
		if errs[i] != nil || s.Result.Outcome != Held || s.Receipt == nil {
			t.Fatalf("record %d: %+v, %v", i, s.Result, errs[i])
		}
		rec, _ := escrow.ParseRecord(recs[i])
		h, _, _ := rec.AuthorityStanza()
		if err := s.Receipt.Verify(signer.Public()); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if err := s.Receipt.MatchesFile(h); err != nil {
			t.Fatalf("record %d: %v", i, err)
		}
		if s.Receipt.AuditSeq == 0 {
			t.Fatalf("record %d: receipt without its audit entry", i)
		}
	}

	again, err := in.Submit(ctx, "net", recs[0])
	if err != nil || again.Result.Outcome != Duplicate || !again.Receipt.SameStatement(subs[0].Receipt) {
		t.Fatalf("submitted again: %+v, %v", again.Result, err)
	}
	// Another receipt's file does not match.
	rec1, _ := escrow.ParseRecord(recs[1])
	h1, _, _ := rec1.AuthorityStanza()
	if err := subs[0].Receipt.MatchesFile(h1); err == nil {
		t.Fatal("a receipt matched another file")
	}

	before := auditLen(t, a)
	bad, err := in.Submit(ctx, "net", []byte("{not a record"))
	if err != nil || !bad.Malformed || bad.Receipt != nil {
		t.Fatalf("malformed: %+v, %v", bad, err)
	}
	if auditLen(t, a) != before {
		t.Fatal("a malformed body was audited")
	}
	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	wrong, err := in.Submit(ctx, "net", hostRecord(t, &owner.PublicKey, &other.PublicKey, crypto.SHA1, fpr.String()))
	if err != nil || !wrong.WrongAuthority || wrong.Result.Outcome != Rejected || wrong.Receipt != nil {
		t.Fatalf("wrong authority: %+v, %v", wrong, err)
	}
	held, err := a.Records(ctx, Filter{})
	if err != nil || len(held) != n {
		t.Fatalf("%d records held, want %d (%v)", len(held), n, err)
	}
	if _, _, err := a.VerifyAudit(ctx); err != nil {
		t.Fatal(err)
	}
}

// TestIntakerRetiredKey: a record for a key retired after the Intaker read the live keys is
// verified on the HSM, since its key pair is still there, but the store refuses it in the
// transaction that would hold it, so no record comes to depend on a retired key alone.
func TestIntakerRetiredKey(t *testing.T) {
	ctx := context.Background()
	a, oldKP := newAuthority(t)
	if _, err := a.CreateReceiptKey(ctx, uniq(t, "receipt")); err != nil {
		t.Fatal(err)
	}
	old := mustCurrent(t, a)
	if _, _, err := a.RotateStart(ctx, uniq(t, "auth2"), KeySpec{Bits: 2048}); err != nil {
		t.Fatal(err)
	}
	in, err := a.NewIntaker(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, err := a.RetireKey(ctx, old.Label); err != nil {
		t.Fatal(err)
	}
	owner, _ := rsa.GenerateKey(rand.Reader, 2048)
	fpr, _ := escrow.FingerprintOf(&owner.PublicKey)
	rec := hostRecord(t, &owner.PublicKey, oldKP.Public, crypto.SHA1, fpr.String())
	sub, err := in.Submit(ctx, "net", rec)
	if err != nil {
		t.Fatal(err)
	}
	if sub.Result.Outcome != Rejected || sub.Receipt != nil || sub.Result.Reason == nil ||
		!strings.Contains(sub.Result.Reason.Error(), "retired") {
		t.Fatalf("a record for a retired key: %s %v, receipt %v", sub.Result.Outcome, sub.Result.Reason, sub.Receipt)
	}
	parsed, _ := escrow.ParseRecord(rec)
	if held, err := a.st.RecordsByID(ctx, parsed.FileID); err != nil || len(held) != 0 {
		t.Fatalf("the record for a retired key was stored: %v, %v", held, err)
	}
	// The current key's records are still taken.
	cur, _, err := mustCurrent(t, a).RSAPublic()
	if err != nil {
		t.Fatal(err)
	}
	sub, err = in.Submit(ctx, "net", hostRecord(t, &owner.PublicKey, cur, crypto.SHA1, fpr.String()))
	if err != nil || sub.Result.Outcome != Held || sub.Receipt == nil {
		t.Fatalf("a record for the current key: %s %v %v", sub.Result.Outcome, sub.Result.Reason, err)
	}
}

// TestIntakerFindsRotatedKey: a key rotated in after the Intaker started is found on the HSM when
// a record first names it, so the service takes records for it without a restart.
func TestIntakerFindsRotatedKey(t *testing.T) {
	ctx := context.Background()
	a, _ := newAuthority(t)
	if _, err := a.CreateReceiptKey(ctx, uniq(t, "receipt")); err != nil {
		t.Fatal(err)
	}
	in, err := a.NewIntaker(ctx, 2)
	if err != nil {
		t.Fatal(err)
	}
	defer in.Close()
	if _, _, err := a.RotateStart(ctx, uniq(t, "auth2"), KeySpec{Bits: 2048}); err != nil {
		t.Fatal(err)
	}
	cur, _, err := mustCurrent(t, a).RSAPublic()
	if err != nil {
		t.Fatal(err)
	}
	owner, _ := rsa.GenerateKey(rand.Reader, 2048)
	fpr, _ := escrow.FingerprintOf(&owner.PublicKey)
	// The Intaker reads the live keys again at most once a second: as if that second had passed.
	in.keys.mu.Lock()
	in.keys.read = time.Time{}
	in.keys.mu.Unlock()
	sub, err := in.Submit(ctx, "net", hostRecord(t, &owner.PublicKey, cur, crypto.SHA1, fpr.String()))
	if err != nil || sub.Result.Outcome != Held || sub.Receipt == nil {
		t.Fatalf("a record for a key rotated in after the start: %s %v %v", sub.Result.Outcome, sub.Result.Reason, err)
	}
}
