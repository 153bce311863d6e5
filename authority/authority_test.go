package authority

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

func uniq(t *testing.T, label string) string {
	t.Helper()
	b := make([]byte, 4)
	rand.Read(b)
	return label + "-" + hex.EncodeToString(b)
}

// newAuthority makes a store with a fresh RSA-2048 authority key on the shared token.
func newAuthority(t *testing.T) (*Authority, *token.KeyPair) {
	t.Helper()
	tok := testToken(t)
	a := New(testStore(t), tok, "user=test token=authority")
	kp, err := tok.GenerateUnwrapRSA(uniq(t, "auth"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RegisterKey(t.Context(), kp, crypto.SHA1, "init"); err != nil {
		t.Fatal(err)
	}
	return a, kp
}

// encrypted is a file made by an owner on the token, as the CLI makes it.
type encrypted struct {
	file, record []byte
	plain        []byte
	key          []byte // the file key, read on the owner's side (not the authority's)
}

func encryptFor(t *testing.T, owner *token.KeyPair, authority *rsa.PublicKey, size int) *encrypted {
	t.Helper()
	return encryptTo(t, &escrow.RSARecipient{Public: owner.Public, Hash: crypto.SHA1, Role: escrow.RoleOwner},
		&escrow.RSARecipient{Public: authority, Hash: crypto.SHA1, Role: escrow.RoleAuthority}, owner.Public, size)
}

// encryptTo is encryptFor with any owner and authority recipients; ownerPub is the owner's key.
func encryptTo(t *testing.T, owner, authority escrow.Recipient, ownerPub crypto.PublicKey, size int) *encrypted {
	t.Helper()
	tok := testToken(t)
	plain := make([]byte, size)
	rand.Read(plain)
	id := escrow.NewFileID()
	key, err := tok.NewFileKey(id[:])
	if err != nil {
		t.Fatal(err)
	}
	defer key.Destroy()
	var out bytes.Buffer
	w, err := escrow.Encrypt(&out, id, key, owner, authority)
	if err != nil {
		t.Fatal(err)
	}
	w.Write(plain)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	fpr, _ := escrow.FingerprintOf(ownerPub)
	rec, err := escrow.NewRecord(w.Header(), key, "test file", escrow.RecordOwner{Fingerprint: fpr.String(),
		TokenLabel: "alice", TokenSerial: "0001"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	value, err := key.Value()
	if err != nil {
		t.Fatal(err)
	}
	return &encrypted{file: out.Bytes(), record: rec.Marshal(), plain: plain, key: value}
}

// TestTokenComputesWhatTheHostComputes is FORMAT.md section 3's claim: a token holding the file
// key as a sensitive, non-extractable object computes the same commitment, header MAC and
// record binding as the host does with the key bytes.
func TestTokenComputesWhatTheHostComputes(t *testing.T) {
	a, authKP := newAuthority(t)
	owner, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := encryptFor(t, owner, authKP.Public, 1000)
	rec, err := escrow.ParseRecord(f.record)
	if err != nil {
		t.Fatal(err)
	}
	h, st, err := rec.AuthorityStanza()
	if err != nil {
		t.Fatal(err)
	}
	sk, err := authKP.UnwrapOAEPSealed(crypto.SHA1, st.Body)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Destroy()
	if sk.RevealsValue() {
		t.Fatal("the token revealed the unwrapped key")
	}

	commit, err := sk.DigestSHA256(escrow.CommitmentPrefix(h.ID), nil)
	if err != nil {
		t.Fatal(err)
	}
	host := escrow.Commitment(h.ID, f.key)
	if !bytes.Equal(commit, host[:]) || !bytes.Equal(commit, h.Commitment[:]) {
		t.Errorf("commitment: token %x, host %x, header %x", commit, host, h.Commitment)
	}
	mac, err := sk.SealGCM(escrow.MACNonce(h.Nonce), h.MACInput(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(mac, h.MAC[:]) {
		t.Errorf("header MAC: token %x, header %x", mac, h.MAC)
	}
	binding, err := sk.SealGCM(rec.BindingNonce(), rec.BindingInput(), nil)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(binding, rec.Binding.Tag) {
		t.Errorf("binding: token %x, record %x", binding, rec.Binding.Tag)
	}
	if err := rec.VerifyOn(h, sk); err != nil {
		t.Errorf("VerifyOn: %v", err)
	}
	// The token-side check fails where the host-side one does.
	rec.Description += "!"
	if err := rec.VerifyOn(h, sk); err == nil {
		t.Error("VerifyOn accepted an edited description")
	}
}

// officer makes a signing key on the token and registers it.
func officer(t *testing.T, a *Authority, name string, typ token.SignKeyType) *token.Signer {
	t.Helper()
	s, err := a.Token.GenerateSigner(uniq(t, name), typ)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.AddOfficer(t.Context(), name, s.Public()); err != nil {
		t.Fatal(err)
	}
	return s
}

// TestLostCard is the whole story at the library level: intake, a new key, a request with two
// approvals, recovery on the HSM (whose unwrapped key the test inspects), reheader, decrypt;
// and the decrypt-only recovery.
func TestLostCard(t *testing.T) {
	a, authKP := newAuthority(t)
	alice, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := encryptFor(t, alice, authKP.Public, 3*escrow.ChunkSize+7)
	res, err := a.Intake(t.Context(), "alice.json", f.record)
	if err != nil || res.Outcome != Held {
		t.Fatalf("intake: %+v %v", res, err)
	}
	if res, _ := a.Intake(t.Context(), "again.json", f.record); res.Outcome != Duplicate {
		t.Errorf("second intake: %v", res.Outcome)
	}
	o1 := officer(t, a, "olivia", token.SignECDSAP256)
	o2 := officer(t, a, "oscar", token.SignRSAPSS2048)

	alice2, err := a.Token.GenerateRSA(uniq(t, "alice2"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	req, err := a.NewRequest(t.Context(), res.FileID, "", escrow.ActionReheader, alice2.Public, crypto.SHA1, "lost card", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	approve(t, a, req, o1)
	approve(t, a, req, o2)
	req = roundTrip(t, req)

	var seen int
	testHookUnwrapped = func(sk *token.SecretKey) {
		seen++
		attrs, err := sk.Attributes()
		if err != nil || !attrs.Sensitive {
			t.Errorf("the unwrapped key is not sensitive: %+v %v", attrs, err)
		}
		if sk.RevealsValue() {
			t.Error("the token revealed the unwrapped session key")
		}
	}
	defer func() { testHookUnwrapped = nil }()
	hdr := &memDelivery{}
	if err := a.Recover(t.Context(), req, hdr.create); err != nil {
		t.Fatal(err)
	}
	header := hdr.Bytes()
	if seen == 0 {
		t.Fatal("recovery unwrapped no key through the inspected path")
	}
	old, payload, err := escrow.ParseHeader(bytes.NewReader(f.file))
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(payload)
	reheadered := append(append([]byte(nil), header...), rest...)
	if !bytes.HasPrefix(f.file[len(old.Marshal()):], rest) {
		t.Fatal("payload split wrong")
	}
	r, err := escrow.Decrypt(bytes.NewReader(reheadered), &escrow.RSAIdentity{Public: alice2.Public, Key: alice2})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, f.plain) {
		t.Fatalf("decrypt after reheader: %v, equal %v", err, bytes.Equal(got, f.plain))
	}
	// The request is used up.
	if err := a.Recover(t.Context(), req, (&memDelivery{}).create); err == nil || !strings.Contains(err.Error(), "already used") {
		t.Errorf("second use of a request: %v", err)
	}

	// Decrypt-only recovery needs its own approved request, and produces the same plaintext.
	req2, err := a.NewRequest(t.Context(), res.FileID, "", escrow.ActionDecrypt, alice2.Public, crypto.SHA1, "plaintext only", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	approve(t, a, req2, o2)
	approve(t, a, req2, o1)
	out := &memDelivery{}
	if err := a.RecoverDecrypt(t.Context(), req2, bytes.NewReader(f.file), out.create); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(out.Bytes(), f.plain) {
		t.Error("recover-decrypt differs from the original")
	}
	if n, _, err := a.VerifyAudit(t.Context()); err != nil || n < 8 {
		t.Errorf("audit: %d entries, %v", n, err)
	}
}

// signApproval approves req as `authority approve` does: the authority checks the officer,
// the officer's token signs, and the authority checks the signature and records the approval.
func signApproval(t *testing.T, a *Authority, req escrow.Approvable, s *token.Signer) (*escrow.Approval, *Officer, error) {
	t.Helper()
	if _, err := a.CheckApprover(t.Context(), req, s.Public()); err != nil {
		return nil, nil, err
	}
	ap, err := req.Approve(s)
	if err != nil {
		t.Fatal(err)
	}
	off, err := a.RecordApproval(t.Context(), req, ap)
	return ap, off, err
}

func approve(t *testing.T, a *Authority, req *escrow.Request, s *token.Signer) {
	t.Helper()
	ap, _, err := signApproval(t, a, req, s)
	if err != nil {
		t.Fatal(err)
	}
	req.Approvals = append(req.Approvals, ap)
}

// roundTrip writes and parses a request, as the files between the commands do.
func roundTrip(t *testing.T, req *escrow.Request) *escrow.Request {
	t.Helper()
	r, err := escrow.ParseRequest(req.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	return r
}

func TestApprovalsRefused(t *testing.T) {
	a, authKP := newAuthority(t)
	alice, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := encryptFor(t, alice, authKP.Public, 10)
	res, err := a.Intake(t.Context(), "r.json", f.record)
	if err != nil || res.Outcome != Held {
		t.Fatalf("intake: %+v %v", res, err)
	}
	o1 := officer(t, a, "o1", token.SignECDSAP256)
	o2 := officer(t, a, "o2", token.SignECDSAP256)
	stranger, err := a.Token.GenerateSigner(uniq(t, "stranger"), token.SignECDSAP256)
	if err != nil {
		t.Fatal(err)
	}
	newReq := func(ttl time.Duration) *escrow.Request {
		req, err := a.NewRequest(t.Context(), res.FileID, "", escrow.ActionReheader, alice.Public, crypto.SHA1, "test", ttl)
		if err != nil {
			t.Fatal(err)
		}
		return req
	}
	check := func(name string, req *escrow.Request, want string) {
		t.Helper()
		_, err := a.CheckApprovals(t.Context(), roundTrip(t, req))
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("%s: got %v, want %q", name, err, want)
		}
	}

	one := newReq(time.Hour)
	approve(t, a, one, o1)
	check("one approval", one, "needs 2")
	if _, _, err := signApproval(t, a, one, o1); err == nil {
		t.Error("an officer approved twice")
	}
	twice := newReq(time.Hour)
	approve(t, a, twice, o1)
	twice.Approvals = append(twice.Approvals, twice.Approvals[0])
	check("same officer twice", twice, "needs 2")

	if _, _, err := signApproval(t, a, newReq(time.Hour), stranger); err == nil {
		t.Error("an unregistered key approved")
	}
	foreign := newReq(time.Hour)
	approve(t, a, foreign, o1)
	ap, err := foreign.Approve(stranger) // signed outside the authority's checks
	if err != nil {
		t.Fatal(err)
	}
	var notOfficer *NotOfficerError
	if _, err := a.RecordApproval(t.Context(), foreign, ap); !errors.As(err, &notOfficer) {
		t.Errorf("RecordApproval of an unregistered key's approval = %v", err)
	}
	foreign.Approvals = append(foreign.Approvals, ap)
	check("unregistered key", foreign, "not a registered officer")

	forged := newReq(time.Hour)
	approve(t, a, forged, o1)
	approve(t, a, forged, o2)
	forged.Approvals[1].Signature[10] ^= 1
	check("forged signature", forged, "invalid")

	// The authority records only an approval whose signature it verified itself.
	unsigned := newReq(time.Hour)
	bad, err := unsigned.Approve(o2)
	if err != nil {
		t.Fatal(err)
	}
	bad.Signature[10] ^= 1
	before, _, _ := a.st.AuditHead(t.Context())
	if _, err := a.RecordApproval(t.Context(), unsigned, bad); err == nil || !strings.Contains(err.Error(), "invalid") {
		t.Errorf("RecordApproval of a forged signature = %v", err)
	}
	if after, _, _ := a.st.AuditHead(t.Context()); after != before {
		t.Error("a refused approval was audited")
	}

	altered := newReq(time.Hour)
	approve(t, a, altered, o1)
	approve(t, a, altered, o2)
	altered.Reason = "something else"
	check("altered request", altered, "altered")

	expired := newReq(time.Hour)
	approve(t, a, expired, o1)
	approve(t, a, expired, o2)
	a.Now = func() time.Time { return time.Now().Add(2 * time.Hour) }
	check("expired", expired, "expired")
	a.Now = time.Now

	ok := newReq(time.Hour)
	approve(t, a, ok, o1)
	approve(t, a, ok, o2)
	if names, err := a.CheckApprovals(t.Context(), roundTrip(t, ok)); err != nil || len(names) != 2 {
		t.Errorf("valid request refused: %v %v", names, err)
	}
	if err := a.SetApprovals(t.Context(), 1); err == nil {
		t.Error("a policy of one approval was accepted")
	}
}

func TestIntakeRejects(t *testing.T) {
	a, authKP := newAuthority(t)
	alice, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	other, err := a.Token.GenerateRSA(uniq(t, "other-authority"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := encryptFor(t, alice, authKP.Public, 10)
	g := encryptFor(t, alice, authKP.Public, 10)
	foreign := encryptFor(t, alice, other.Public, 10)

	edit := func(data []byte, f func(r map[string]any)) []byte {
		var m map[string]any
		json.Unmarshal(data, &m)
		f(m)
		out, _ := json.Marshal(m)
		return out
	}
	swapped := edit(f.record, func(m map[string]any) {
		var gm map[string]any
		json.Unmarshal(g.record, &gm)
		m["authority"] = gm["authority"] // another file's key: the header's stanza differs
	})
	cases := map[string][]byte{
		"edited description": edit(f.record, func(m map[string]any) { m["description"] = "other" }),
		"edited owner":       edit(f.record, func(m map[string]any) { m["owner"].(map[string]any)["token_label"] = "mallory" }),
		"foreign authority":  foreign.record,
		"swapped key":        swapped,
		"not a record":       []byte("hello"),
	}
	for name, data := range cases {
		res, err := a.Intake(t.Context(), name, data)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if res.Outcome != Rejected || res.Reason == nil {
			t.Errorf("%s: %v", name, res.Outcome)
		}
	}
	recs, err := a.st.Records(t.Context(), Filter{})
	if err != nil || len(recs) != 0 {
		t.Errorf("rejected records were stored: %d %v", len(recs), err)
	}
	if _, _, err := a.VerifyAudit(t.Context()); err != nil {
		t.Error(err)
	}
}

// TestRotation rotates halfway (as if killed), resumes, retires the old key and recovers a file
// made before the rotation.
func TestRotation(t *testing.T) {
	a, authKP := newAuthority(t)
	alice, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	var files []*encrypted
	for i := 0; i < 4; i++ {
		f := encryptFor(t, alice, authKP.Public, 100)
		if res, err := a.Intake(t.Context(), "r", f.record); err != nil || res.Outcome != Held {
			t.Fatal(res, err)
		}
		files = append(files, f)
	}
	oldKey, _ := a.CurrentKey(t.Context())
	label := uniq(t, "auth2")
	if _, created, err := a.RotateStart(t.Context(), label, KeySpec{Bits: 2048}); err != nil || !created {
		t.Fatal(created, err)
	}
	if _, err := a.RetireKey(t.Context(), oldKey.Label); err == nil {
		t.Error("retired a key that records still need")
	}
	// Re-wrap two records, as a rotation that was killed after two would have.
	pending, _ := a.st.PendingRewrap(t.Context(), mustCurrent(t, a).Fingerprint)
	for _, id := range pending[:2] {
		if err := a.rewrap(t.Context(), id, mustCurrent(t, a)); err != nil {
			t.Fatal(err)
		}
	}
	if _, created, err := a.RotateStart(t.Context(), label, KeySpec{Bits: 2048}); err != nil || created {
		t.Fatalf("resume: created %v, %v", created, err)
	}
	n, err := a.Rotate(t.Context(), nil)
	if err != nil || n != 2 {
		t.Fatalf("resumed rotation re-wrapped %d: %v", n, err)
	}
	if n, err := a.Rotate(t.Context(), nil); err != nil || n != 0 {
		t.Errorf("a finished rotation re-wrapped %d more: %v", n, err)
	}
	if _, err := a.RetireKey(t.Context(), oldKey.Label); err != nil {
		t.Fatal(err)
	}
	// A record made before the rotation is recovered through the new key.
	o1 := officer(t, a, "o1", token.SignECDSAP256)
	o2 := officer(t, a, "o2", token.SignECDSAP256)
	rec, _ := escrow.ParseRecord(files[0].record)
	req, err := a.NewRequest(t.Context(), rec.FileID, "", escrow.ActionReheader, alice.Public, crypto.SHA1, "after rotation", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	approve(t, a, req, o1)
	approve(t, a, req, o2)
	hdr := &memDelivery{}
	if err := a.Recover(t.Context(), req, hdr.create); err != nil {
		t.Fatal(err)
	}
	h, _, err := escrow.ParseHeader(bytes.NewReader(hdr.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	newFpr, _ := escrow.FingerprintOf(mustCurrentPub(t, a))
	found := false
	for _, s := range h.Stanzas {
		if escrow.StanzaRole(s) == escrow.RoleAuthority && escrow.StanzaTag(s) == newFpr.Tag() {
			found = true
		}
	}
	if !found {
		t.Error("the re-issued header's authority stanza is not for the new key")
	}
	// A record for the retired key is no longer taken in.
	late := encryptFor(t, alice, authKP.Public, 10)
	if res, err := a.Intake(t.Context(), "late", late.record); err != nil || res.Outcome != Rejected {
		t.Errorf("record for a retired key: %v %v", res.Outcome, err)
	}
}

func mustCurrent(t *testing.T, a *Authority) *AuthorityKey {
	t.Helper()
	k, err := a.CurrentKey(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func mustCurrentPub(t *testing.T, a *Authority) *rsa.PublicKey {
	t.Helper()
	pub, _, err := mustCurrent(t, a).RSAPublic()
	if err != nil {
		t.Fatal(err)
	}
	return pub
}

// TestIntakeAllInOrder takes in good, bad and duplicate records on several sessions at once and
// checks that every outcome is right and reported in input order, as the committer stores them.
func TestIntakeAllInOrder(t *testing.T) {
	a, authKP := newAuthority(t)
	alice, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	data := map[string][]byte{}
	var names []string
	want := map[string]Outcome{}
	add := func(name string, rec []byte, o Outcome) {
		names = append(names, name)
		data[name], want[name] = rec, o
	}
	first := encryptFor(t, alice, authKP.Public, 10)
	add("r00", first.record, Held)
	for i := 1; i < 12; i++ {
		add(fmt.Sprintf("r%02d", i), encryptFor(t, alice, authKP.Public, 10).record, Held)
	}
	add("dup", first.record, Duplicate)
	add("junk", []byte("{}"), Rejected)
	add("missing", nil, Rejected)
	read := func(name string) ([]byte, error) {
		if name == "missing" {
			return nil, errors.New("missing: no such file")
		}
		return data[name], nil
	}
	var got []string
	err = a.IntakeAll(t.Context(), names, read, 3, func(i int, res IntakeResult) {
		if res.Name != names[i] || res.Outcome != want[res.Name] {
			t.Errorf("record %d: %s %s, want %s %s", i, res.Name, res.Outcome, names[i], want[names[i]])
		}
		got = append(got, res.Name)
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(got, ",") != strings.Join(names, ",") {
		t.Errorf("reported %v, want %v", got, names)
	}
	recs, err := a.st.Records(t.Context(), Filter{})
	if err != nil || len(recs) != 12 {
		t.Errorf("the store holds %d records, want 12 (%v)", len(recs), err)
	}
	if _, _, err := a.VerifyAudit(t.Context()); err != nil {
		t.Error(err)
	}
}
