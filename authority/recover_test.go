package authority

import (
	"bytes"
	"crypto"
	"encoding/json"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// memDelivery is a Delivery in memory. Commit can be made to fail, as a full disk would, and
// before reports what the audit log said when the output was created.
type memDelivery struct {
	bytes.Buffer
	failCommit bool
	committed  bool
	before     func() // called when the output is created
}

func (m *memDelivery) create() (Delivery, error) {
	if m.before != nil {
		m.before()
	}
	m.Reset()
	return m, nil
}

func (m *memDelivery) Commit() error {
	if m.failCommit {
		return errors.New("no space left on device")
	}
	m.committed = true
	return nil
}

// auditActions lists the audit log's actions from entry from on, in order.
func auditActions(t *testing.T, a *Authority, from int) []string {
	t.Helper()
	entries, err := a.st.Audit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, e := range entries[from:] {
		out = append(out, e.Action)
	}
	return out
}

func auditLen(t *testing.T, a *Authority) int {
	t.Helper()
	entries, err := a.st.Audit(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return len(entries)
}

// TestRecoveryExactlyOnce: a recovery is audited as started before its output exists and as
// delivered only after the output is committed; a failed attempt leaves the request open for a
// rerun with the same approvals; a delivered request is never reused; the action the officers
// approved is the only one carried out; refusals are audited.
func TestRecoveryExactlyOnce(t *testing.T) {
	a, f, req, _, _ := approvedRecovery(t, escrow.ChunkSize+1, escrow.ActionDecrypt, "plaintext", 2)
	req = roundTrip(t, req)

	// The approvals are for the plaintext: a new header is refused, and the refusal audited.
	n := auditLen(t, a)
	err := a.Recover(t.Context(), req, (&memDelivery{}).create)
	if err == nil || !strings.Contains(err.Error(), `approved for "decrypt", not "reheader"`) {
		t.Fatalf("reheader under a decrypt approval: %v", err)
	}
	if got := auditActions(t, a, n); strings.Join(got, " ") != "recover-refuse" {
		t.Errorf("audit after the refusal: %v", got)
	}

	// The disk fills up at the end: the attempt is audited as started, then failed, and the
	// request stays open.
	n = auditLen(t, a)
	full := &memDelivery{failCommit: true}
	full.before = func() {
		if got := auditActions(t, a, n); strings.Join(got, " ") != "recover-start" {
			t.Errorf("when the output was created, the audit said %v, want the start", got)
		}
	}
	err = a.RecoverDecrypt(t.Context(), req, bytes.NewReader(f.file), full.create)
	if err == nil || !strings.Contains(err.Error(), "no space left") {
		t.Fatalf("a failed delivery: %v", err)
	}
	if got := auditActions(t, a, n); strings.Join(got, " ") != "recover-start recover-fail" {
		t.Errorf("audit after a failed delivery: %v", got)
	}

	// While another process runs an attempt at the request (here: another opening of the store
	// holds its lock), this one is refused before any output exists, and audited.
	ref, _ := refs.Load(a.st)
	other := openTestStore(t, ref.(string))
	unlock, err := other.LockRequest(t.Context(), req.ID)
	if err != nil {
		t.Fatal(err)
	}
	n = auditLen(t, a)
	busy := &memDelivery{}
	err = a.RecoverDecrypt(t.Context(), req, bytes.NewReader(f.file), busy.create)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "another recovery attempt") || busy.committed || busy.Len() != 0 {
		t.Fatalf("an attempt while another runs: %v", err)
	}
	if got := auditActions(t, a, n); strings.Join(got, " ") != "recover-refuse" {
		t.Errorf("audit after the refusal of a concurrent attempt: %v", got)
	}
	unlock()

	// The same command, with the same approvals, completes it.
	n = auditLen(t, a)
	out := &memDelivery{}
	if err := a.RecoverDecrypt(t.Context(), req, bytes.NewReader(f.file), out.create); err != nil {
		t.Fatal(err)
	}
	if !out.committed || !bytes.Equal(out.Bytes(), f.plain) {
		t.Error("the rerun did not deliver the plaintext")
	}
	if got := auditActions(t, a, n); strings.Join(got, " ") != "recover-start recover-deliver" {
		t.Errorf("audit after the rerun: %v", got)
	}
	entries, _ := a.st.Audit(t.Context())
	var d map[string]any
	if err := json.Unmarshal([]byte(entries[len(entries)-1].Details), &d); err != nil || d["action"] != "decrypt" || d["request"] != req.ID {
		t.Errorf("delivery entry details %v %v", d, err)
	}

	// Delivered: never again, and the attempt is audited.
	n = auditLen(t, a)
	again := &memDelivery{}
	if err := a.RecoverDecrypt(t.Context(), req, bytes.NewReader(f.file), again.create); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("a delivered request was reused: %v", err)
	}
	if again.Len() != 0 || again.committed {
		t.Error("a refused recovery wrote output")
	}
	if got := auditActions(t, a, n); strings.Join(got, " ") != "recover-refuse" {
		t.Errorf("audit after reuse: %v", got)
	}
	if _, _, err := a.VerifyAudit(t.Context()); err != nil {
		t.Error(err)
	}
}

// The action is part of the signed bytes: an approval for a new header does not verify on the
// same request turned into a decryption.
func TestActionIsSigned(t *testing.T) {
	a, f, req, _, _ := approvedRecovery(t, 10, escrow.ActionReheader, "new card", 2)
	req = roundTrip(t, req)
	req.Action = escrow.ActionDecrypt
	out := &memDelivery{}
	err := a.RecoverDecrypt(t.Context(), roundTrip(t, req), bytes.NewReader(f.file), out.create)
	if err == nil || !strings.Contains(err.Error(), "altered") {
		t.Errorf("a request whose action was changed after approval: %v", err)
	}
	if out.Len() != 0 {
		t.Error("plaintext was written")
	}
	req.Action = "everything"
	if _, err := escrow.ParseRequest(req.Marshal()); err == nil || !strings.Contains(err.Error(), "action") {
		t.Errorf("unknown action: %v", err)
	}
}

// TestRecoveryHeldWhileRunning: an attempt started while another runs at the same request (here,
// from inside the first, as its output is being made) is refused and audited, and makes no
// output; the first delivers. Before attempts held their request, both delivered and the second
// copy showed only as recover-fail.
func TestRecoveryHeldWhileRunning(t *testing.T) {
	a, _, req, _, _ := approvedRecovery(t, 10, escrow.ActionReheader, "new card", 2)
	n := auditLen(t, a)
	first := &memDelivery{}
	second := &memDelivery{}
	first.before = func() {
		first.before = nil
		err := a.Recover(t.Context(), req, second.create)
		if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "another recovery attempt") {
			t.Errorf("the attempt started while another ran: %v", err)
		}
	}
	if err := a.Recover(t.Context(), req, first.create); err != nil {
		t.Fatalf("the first attempt: %v", err)
	}
	if !first.committed || second.committed || second.Len() != 0 {
		t.Errorf("delivered: first %v, second %v (%d bytes)", first.committed, second.committed, second.Len())
	}
	if got := auditActions(t, a, n); strings.Join(got, " ") != "recover-start recover-refuse recover-deliver" {
		t.Errorf("audit: %v", got)
	}
}

// TestConcurrentRecoveriesDeliverOnce: several processes (here: goroutines, each with its own
// opening of the store and its own HSM session) run the same approved recovery at once. Exactly
// one delivers; the others are refused, and nothing is delivered twice.
func TestConcurrentRecoveriesDeliverOnce(t *testing.T) {
	a, f, req, _, _ := approvedRecovery(t, 1000, escrow.ActionDecrypt, "race", 2)
	req = roundTrip(t, req)

	ref, _ := refs.Load(a.st)
	const attempts = 4
	outs := make([]*memDelivery, attempts)
	errs := make([]error, attempts)
	authorities := make([]*Authority, attempts)
	for i := range authorities {
		sessions := a.Token.Sessions(1)
		if len(sessions) != 1 {
			t.Fatal("no HSM session")
		}
		t.Cleanup(func() { sessions[0].Close() })
		authorities[i] = New(openTestStore(t, ref.(string)), sessions[0], "user=test")
		outs[i] = &memDelivery{}
	}
	var wg sync.WaitGroup
	start := make(chan struct{})
	for i := range authorities {
		wg.Add(1)
		go func() {
			defer wg.Done()
			<-start
			errs[i] = authorities[i].RecoverDecrypt(t.Context(), req, bytes.NewReader(f.file), outs[i].create)
		}()
	}
	close(start)
	wg.Wait()
	delivered := 0
	for i := range outs {
		switch {
		case errs[i] == nil:
			delivered++
			if !outs[i].committed || !bytes.Equal(outs[i].Bytes(), f.plain) {
				t.Errorf("attempt %d succeeded without delivering the plaintext", i)
			}
		case !errors.Is(errs[i], ErrRefused):
			t.Errorf("attempt %d failed instead of being refused: %v", i, errs[i])
		case outs[i].committed:
			t.Errorf("attempt %d was refused but delivered", i)
		}
	}
	if delivered != 1 {
		t.Fatalf("%d attempts delivered, want exactly 1 (errors: %v)", delivered, errs)
	}
	counts := map[string]int{}
	for _, act := range auditActions(t, a, 0) {
		counts[act]++
	}
	if counts["recover-deliver"] != 1 || counts["recover-fail"] != 0 || counts["recover-refuse"] != attempts-1 {
		t.Errorf("audit counts %v, want one recover-deliver, no recover-fail, %d recover-refuse", counts, attempts-1)
	}
}

// TestRecoveryRefusesTamperedState: someone with write access to the database lowers the policy
// to one approval with another client, bypassing p11escrow. A recovery with a single approval is
// then refused, because the rows no longer match what the audit chain recorded; so is a change
// request. The refusal is audited.
func TestRecoveryRefusesTamperedState(t *testing.T) {
	a, _, req, o1, _ := approvedRecovery(t, 10, escrow.ActionReheader, "lost card", 1)
	// One approval: refused while the policy says two.
	if err := a.Recover(t.Context(), req, (&memDelivery{}).create); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "policy needs 2") {
		t.Fatalf("one approval under a policy of two: %v", err)
	}
	if _, err := rawDB(t, a).Exec(`UPDATE meta SET value = '1' WHERE key = 'approvals'`); err != nil {
		t.Fatal(err)
	}
	n := auditLen(t, a)
	out := &memDelivery{}
	err := a.Recover(t.Context(), req, out.create)
	if !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "do not verify") || out.committed {
		t.Fatalf("a recovery after the policy was lowered behind p11escrow's back: %v", err)
	}
	if got := auditActions(t, a, n); strings.Join(got, " ") != "recover-refuse" {
		t.Errorf("audit after the refusal: %v", got)
	}
	ch, _ := changeFor(t, a, "mallory")
	approveChange(t, a, ch, o1)
	if err := a.Apply(t.Context(), ch); !errors.Is(err, ErrRefused) || !strings.Contains(err.Error(), "do not verify") {
		t.Fatalf("a change after the policy was lowered behind p11escrow's back: %v", err)
	}
}

// approvedRecovery holds a file of size bytes made for a fresh owner key on the shared token,
// registers two officers, and makes a request for action on the file, approved by the first
// approvals of them.
func approvedRecovery(t *testing.T, size int, action, reason string, approvals int) (*Authority, *encrypted, *escrow.Request, *token.Signer, *token.Signer) {
	t.Helper()
	a, authKP := newAuthority(t)
	owner, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := encryptFor(t, owner, authKP.Public, size)
	res, err := a.Intake(t.Context(), "r", f.record)
	if err != nil || res.Outcome != Held {
		t.Fatal(res, err)
	}
	o1 := officer(t, a, "o1", token.SignECDSAP256)
	o2 := officer(t, a, "o2", token.SignECDSAP256)
	req, err := a.NewRequest(t.Context(), res.FileID, "", action, owner.Public, crypto.SHA1, reason, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	for _, o := range []*token.Signer{o1, o2}[:approvals] {
		approve(t, a, req, o)
	}
	return a, f, req, o1, o2
}
