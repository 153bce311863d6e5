package authority

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// NewRequest makes a recovery request for a held record and registers it in the store, so that
// a request file altered later is refused. The record is named by its file ID and key commitment;
// an empty commitment names the only record held under the ID (see FindRecord). The request
// carries the commitment, so that approvals name one exact record. action is
// escrow.ActionReheader (a new header for owner's key) or escrow.ActionDecrypt (the plaintext,
// decrypted on the HSM, for owner); it is part of what the officers sign. requester is a.Actor.
func (a *Authority) NewRequest(ctx context.Context, fileID, commitment, action string, owner crypto.PublicKey, hash crypto.Hash, reason string, ttl time.Duration) (*escrow.Request, error) {
	id, err := escrow.ParseFileID(fileID)
	if err != nil {
		return nil, err
	}
	if reason == "" {
		return nil, &NoReasonError{Kind: "recovery"}
	}
	rec, err := a.FindRecord(ctx, fileID, commitment)
	if err != nil {
		return nil, err
	}
	inst, err := a.st.InstanceID(ctx)
	if err != nil {
		return nil, err
	}
	req, err := escrow.NewRequest(inst, id, rec.Commitment, action, owner, hash, reason, a.Actor, a.Now(), ttl)
	if err != nil {
		return nil, err
	}
	ev := a.event("request", map[string]any{"request": req.ID, "file_id": fileID, "key_commitment": rec.Commitment, "action": action,
		"new_owner": req.NewOwner.Fingerprint, "reason": reason, "expires": req.Expires})
	err = a.st.AddRequest(ctx, &StoredRequest{ID: req.ID, FileID: fileID, Commitment: rec.Commitment,
		Created: req.Created, Canonical: req.CanonicalBytes()}, ev)
	return req, err
}

// requestedRecord returns the held record a recovery request is for: the one with the file ID
// and key commitment it names.
func (a *Authority) requestedRecord(ctx context.Context, req *escrow.Request) (*HeldRecord, error) {
	return a.FindRecord(ctx, req.FileID, req.KeyCommitment)
}

// checkOpen checks that req is this authority's, registered, unaltered, unused and unexpired.
func (a *Authority) checkOpen(ctx context.Context, req escrow.Approvable) error {
	info := req.Info()
	inst, err := a.st.InstanceID(ctx)
	if err != nil {
		return err
	}
	if info.Authority != inst {
		return refusef("%s %s was made for another authority (%s)", info.Kind, info.ID, info.Authority)
	}
	stored, err := a.registered(ctx, req)
	if err != nil {
		return err
	}
	switch {
	case !bytes.Equal(stored.Canonical, req.CanonicalBytes()):
		return refusef("%s %s was altered after it was made", info.Kind, info.ID)
	case stored.State != "open":
		return refusef("%s %s was already used; make a new request", info.Kind, info.ID)
	case req.Expired(a.Now()):
		return refusef("%s %s expired at %s; make a new request", info.Kind, info.ID, info.Expires)
	}
	return nil
}

// registered returns the request as the store registered it, from the table of its kind.
func (a *Authority) registered(ctx context.Context, req escrow.Approvable) (*StoredRequest, error) {
	id := req.Info().ID
	var stored *StoredRequest
	var err error
	hint := "make requests with `p11escrow authority request`"
	if _, ok := req.(*escrow.ChangeRequest); ok {
		stored, err = a.st.ChangeRequest(ctx, id)
		hint = "change requests are made by `authority officer add` and `authority policy`"
	} else {
		stored, err = a.st.Request(ctx, id)
	}
	if errors.Is(err, ErrNotFound) {
		return nil, fmt.Errorf("%s %s is not registered here; %s", req.Info().Kind, id, hint)
	}
	return stored, err
}

// requestDetails names a request in audit entries: recovery requests by their file, change
// requests by their kind of change.
func requestDetails(req escrow.Approvable) map[string]any {
	switch r := req.(type) {
	case *escrow.Request:
		return map[string]any{"request": r.ID, "file_id": r.FileID}
	case *escrow.ChangeRequest:
		return map[string]any{"request": r.ID, "change": r.Change.Kind}
	}
	return map[string]any{"request": req.Info().ID}
}

// officersByFingerprint maps registered officers by key fingerprint.
func (a *Authority) officersByFingerprint(ctx context.Context) (map[string]*Officer, error) {
	list, err := a.st.Officers(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string]*Officer{}
	for _, o := range list {
		m[o.Fingerprint] = o
	}
	return m, nil
}

// CheckApprover refuses, before an officer signs req on their token, what RecordApproval would
// refuse: a request that is not open (see checkOpen), a key that is not a registered officer's,
// and a second approval by the same officer. It returns the officer.
func (a *Authority) CheckApprover(ctx context.Context, req escrow.Approvable, pub crypto.PublicKey) (*Officer, error) {
	key, err := escrow.FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	return a.approver(ctx, req, key.String())
}

func (a *Authority) approver(ctx context.Context, req escrow.Approvable, fpr string) (*Officer, error) {
	if err := a.checkOpen(ctx, req); err != nil {
		return nil, err
	}
	officers, err := a.officersByFingerprint(ctx)
	if err != nil {
		return nil, err
	}
	off := officers[fpr]
	if off == nil {
		return nil, &NotOfficerError{Fingerprint: fpr}
	}
	for _, ap := range req.Info().Approvals {
		if ap.Officer == fpr {
			return nil, fmt.Errorf("officer %q already approved %s %s", off.Name, req.Info().Kind, req.Info().ID)
		}
	}
	return off, nil
}

// RecordApproval takes an approval that an officer made on their own token (req.Approve) and
// records it in the audit log, after the checks of CheckApprover and of the signature itself
// against the officer's registered key. req is the request as the officer signed it, without ap
// among its approvals; the caller appends ap to the request file.
func (a *Authority) RecordApproval(ctx context.Context, req escrow.Approvable, ap *escrow.Approval) (*Officer, error) {
	off, err := a.approver(ctx, req, ap.Officer)
	if err != nil {
		return nil, err
	}
	pub, err := x509.ParsePKIXPublicKey(off.PublicKey)
	if err != nil {
		return nil, err
	}
	if err := req.VerifyApproval(ap, pub); err != nil {
		return nil, fmt.Errorf("the approval by officer %q is invalid: %v", off.Name, err)
	}
	details := requestDetails(req)
	details["officer"], details["officer_key"] = off.Name, ap.Officer
	return off, a.Log(ctx, "approve", details)
}

// CheckApprovals refuses req unless the audit log and the rows it binds verify (VerifyAudit),
// req is open (see checkOpen), and it carries at least the policy's number of valid approvals
// from distinct registered officers. Any approval that is forged, altered or from an
// unregistered key refuses the whole request: someone tampered with it. It returns the
// approving officers' names. Recovery and change requests are checked alike, under the policy
// in force now.
func (a *Authority) CheckApprovals(ctx context.Context, req escrow.Approvable) ([]string, error) {
	// The rows that decide (the request, the officers, the policy, the record and its wraps) must
	// be those the audit chain recorded: a row changed with another database client is refused
	// here, before it can lower the quorum or add an officer, and not only by `audit --verify`.
	if _, _, err := a.VerifyAudit(ctx); err != nil {
		return nil, refusef("the audit log or the rows it binds do not verify, so the officers, the policy and the request cannot be trusted (%v); see `p11escrow authority audit --verify`, and restore the database from a backup", err)
	}
	if err := a.checkOpen(ctx, req); err != nil {
		return nil, err
	}
	officers, err := a.officersByFingerprint(ctx)
	if err != nil {
		return nil, err
	}
	need, err := a.st.Approvals(ctx)
	if err != nil {
		return nil, err
	}
	info := req.Info()
	seen := map[string]bool{}
	var names []string
	for i, ap := range info.Approvals {
		off := officers[ap.Officer]
		if off == nil {
			return nil, fmt.Errorf("approval %d is from key %s, which is not a registered officer", i+1, ap.Officer)
		}
		pub, err := x509.ParsePKIXPublicKey(off.PublicKey)
		if err != nil {
			return nil, err
		}
		if err := req.VerifyApproval(ap, pub); err != nil {
			return nil, fmt.Errorf("approval %d, by officer %q, is invalid: %v", i+1, off.Name, err)
		}
		if !seen[ap.Officer] {
			seen[ap.Officer] = true
			names = append(names, off.Name)
		}
	}
	if len(names) < need {
		return nil, refusef("%s %s has %d valid approval(s) from distinct registered officers; the policy needs %d", info.Kind, info.ID, len(names), need)
	}
	return names, nil
}

// testHookUnwrapped, when set by a test, sees every key that recovery unwraps, so the test can
// show that the key is sensitive and that the token will not reveal it.
var testHookUnwrapped func(*token.SecretKey)

// unwrapHeld unwraps a held record's key on the HSM, sensitive, preferring the current
// authority key's wrap. extractable is needed only to re-wrap it.
func (a *Authority) unwrapHeld(ctx context.Context, rec RecordRef, extractable bool) (*token.SecretKey, *AuthorityKey, *Wrap, error) {
	wraps, err := a.st.Wraps(ctx, rec.FileID, rec.Commitment)
	if err != nil {
		return nil, nil, nil, err
	}
	keys, err := a.liveKeys(ctx)
	if err != nil {
		return nil, nil, nil, err
	}
	for _, state := range []string{KeyCurrent, KeyPrevious} {
		for _, k := range keys {
			for _, w := range wraps {
				if k.State == state && w.KeyFingerprint == k.Fingerprint {
					sk, err := a.unwrapWith(k, w, extractable)
					return sk, k, w, err
				}
			}
		}
	}
	return nil, nil, nil, fmt.Errorf("file %s (key commitment %s) has no wrapped key under a live authority key", rec.FileID, rec.Commitment)
}

func (a *Authority) unwrapWith(k *AuthorityKey, w *Wrap, extractable bool) (*token.SecretKey, error) {
	kp, err := a.keyPair(k)
	if err != nil {
		return nil, err
	}
	sk, err := kp.unwrap(w, extractable)
	if err != nil {
		return nil, err
	}
	attrs, err := sk.Attributes()
	if err == nil && !attrs.Sensitive {
		err = errors.New("the HSM made the unwrapped session key non-sensitive, against the template; refusing to use it")
	}
	if err != nil {
		sk.Destroy()
		return nil, err
	}
	if testHookUnwrapped != nil {
		testHookUnwrapped(sk)
	}
	return sk, nil
}

// heldHeader returns the header of a held record (as received, so authenticated at intake).
func heldHeader(rec *HeldRecord) (*escrow.Header, error) {
	r, err := escrow.ParseRecord(rec.Record)
	if err != nil {
		return nil, err
	}
	h, _, err := r.AuthorityStanza()
	return h, err
}

// Delivery is where a recovery puts its output: it is written, then Commit gives it its final
// name (durably: synced, then renamed). A recovery is audited as delivered, and its request
// closed, only after Commit returned.
type Delivery interface {
	io.Writer
	Commit() error
}

// A recovery runs in audited steps, so that it happens exactly once and visibly (README,
// "Recovery"):
//
//  1. the request is locked for this attempt (no other process or host can run one at it until
//     this one ends) and checked (registered, unaltered, open, unexpired, enough valid
//     approvals, and approved for this action); a refusal is audited as recover-refuse;
//  2. recover-start is audited, before any output exists;
//  3. the output is made on the HSM and delivered under its final name (Delivery.Commit);
//  4. recover-deliver is audited and the request closed, in one transaction.
//
// A failure after step 2 is audited as recover-fail and leaves the request open, so the same
// command, with the same approvals, can run again; a kill leaves recover-start without its
// recover-deliver. Every attempt shows in the log; a delivered request is closed for good.

// checkRecovery is step 1: it locks the request (Store.LockRequest) for this attempt alone, so
// that two attempts at once cannot both deliver, and returns the approving officers and the
// unlock, or audits the refusal. The checks run under the lock, so an attempt that was waiting
// for another to deliver finds the request used.
func (a *Authority) checkRecovery(ctx context.Context, req *escrow.Request, action string, check func() error) ([]string, func(), error) {
	unlock, err := a.st.LockRequest(ctx, req.ID)
	if errors.Is(err, ErrInUse) {
		err = refusef("another recovery attempt at request %s is running; let it end, and run this again only if it fails", req.ID)
	}
	if err != nil {
		if rerr := a.refuseRecovery(ctx, req, action, err); rerr != nil {
			return nil, nil, rerr
		}
		return nil, nil, err
	}
	names, err := a.CheckApprovals(ctx, req)
	if err == nil && req.Action != action {
		err = &ActionError{RequestID: req.ID, Approved: req.Action, Wanted: action}
	}
	if err == nil && check != nil {
		err = check()
	}
	if err != nil {
		unlock()
		if rerr := a.refuseRecovery(ctx, req, action, err); rerr != nil {
			return nil, nil, rerr
		}
		return nil, nil, err
	}
	return names, unlock, nil
}

// refuseRecovery audits a refused recovery attempt; it returns the audit's own failure.
func (a *Authority) refuseRecovery(ctx context.Context, req *escrow.Request, action string, why error) error {
	return a.Log(ctx, "recover-refuse", map[string]any{"request": req.ID, "file_id": req.FileID, "action": action, "why": why.Error()})
}

// recoveryDetails names a recovery attempt in its audit entries.
func recoveryDetails(req *escrow.Request, names []string) map[string]any {
	return map[string]any{"request": req.ID, "file_id": req.FileID, "action": req.Action,
		"new_owner": req.NewOwner.Fingerprint, "approved_by": names}
}

// runRecovery runs steps 2 to 4 around deliver, which makes and commits the output and returns
// the authority key it unwrapped with.
func (a *Authority) runRecovery(ctx context.Context, req *escrow.Request, names []string, deliver func() (*AuthorityKey, error)) error {
	if err := a.Log(ctx, "recover-start", recoveryDetails(req, names)); err != nil {
		return err
	}
	fail := func(err error) error {
		d := recoveryDetails(req, names)
		d["why"] = err.Error()
		if lerr := a.Log(ctx, "recover-fail", d); lerr != nil {
			return errors.Join(err, lerr)
		}
		return err
	}
	key, err := deliver()
	if err != nil {
		return fail(err)
	}
	d := recoveryDetails(req, names)
	d["authority_key"] = key.Fingerprint
	if err := a.st.Recovered(ctx, req.ID, a.event("recover-deliver", d)); err != nil {
		// The attempt holds the request's lock, so no other attempt delivered meanwhile; the
		// store failed. The output exists, and the log must say so.
		return fail(fmt.Errorf("the output was delivered, but the request could not be closed: %w", err))
	}
	return nil
}

// Recover re-issues the file's header for the request's new owner, entirely on the HSM: the
// session key is unwrapped as a sensitive object, re-wrapped with C_WrapKey for the new owner's
// public key, and the new header's MAC is computed with it on the token, after the token has
// checked the held header. The new header keeps the authority stanza (for the current authority
// key) and any extra recipients. The request must be for escrow.ActionReheader. create is
// called once the attempt is audited; the header is written to what it returns and committed
// (see the steps above).
func (a *Authority) Recover(ctx context.Context, req *escrow.Request, create func() (Delivery, error)) error {
	var rec *HeldRecord
	names, unlock, err := a.checkRecovery(ctx, req, escrow.ActionReheader, func() (err error) {
		rec, err = a.requestedRecord(ctx, req)
		return err
	})
	if err != nil {
		return err
	}
	defer unlock()
	return a.runRecovery(ctx, req, names, func() (*AuthorityKey, error) {
		old, err := heldHeader(rec)
		if err != nil {
			return nil, err
		}
		sk, key, w, err := a.unwrapHeld(ctx, rec.Ref(), true)
		if err != nil {
			return nil, err
		}
		defer sk.Destroy()
		stanzas, err := a.newStanzas(sk, old, key, w, req)
		if err != nil {
			return nil, err
		}
		h, err := old.ReissueOn(sk, stanzas)
		if err != nil {
			return nil, err
		}
		out, err := create()
		if err != nil {
			return nil, err
		}
		if _, err := out.Write(h.Marshal()); err != nil {
			return nil, err
		}
		return key, out.Commit()
	})
}

// newStanzas builds the re-issued header's stanzas: the new owner's (wrapped on the token),
// the authority's, and the old header's extra recipients.
func (a *Authority) newStanzas(sk *token.SecretKey, old *escrow.Header, key *AuthorityKey, w *Wrap, req *escrow.Request) ([]*escrow.Stanza, error) {
	owner, err := ownerStanza(sk, req)
	if err != nil {
		return nil, err
	}
	auth, err := authorityStanza(key, w)
	if err != nil {
		return nil, err
	}
	return old.ReissuedStanzas(owner, auth), nil
}

// RecoverDecrypt decrypts a file for a request on the HSM, chunk by chunk with the sensitive
// key (escrow.Header.DecryptOn), writing only verified plaintext. The request must be for
// escrow.ActionDecrypt, and in must be the held file (same file ID and commitment), with any
// valid header. create is called once the attempt is audited; the plaintext is committed under
// its final name before the recovery is audited as delivered and the request closed.
func (a *Authority) RecoverDecrypt(ctx context.Context, req *escrow.Request, in io.Reader, create func() (Delivery, error)) error {
	var h *escrow.Header
	var payload io.Reader
	var rec *HeldRecord
	names, unlock, err := a.checkRecovery(ctx, req, escrow.ActionDecrypt, func() error {
		var err error
		if rec, err = a.requestedRecord(ctx, req); err != nil {
			return err
		}
		held, err := heldHeader(rec)
		if err != nil {
			return err
		}
		if h, payload, err = escrow.ParseHeader(in); err != nil {
			return err
		}
		if h.ID != held.ID || h.Commitment != held.Commitment {
			return fmt.Errorf("the input is file %s with key commitment %s, but the request is for file %s with key commitment %s",
				h.ID, escrow.CommitmentText(h.Commitment), req.FileID, rec.Commitment)
		}
		return nil
	})
	if err != nil {
		return err
	}
	defer unlock()
	return a.runRecovery(ctx, req, names, func() (*AuthorityKey, error) {
		sk, key, _, err := a.unwrapHeld(ctx, rec.Ref(), false)
		if err != nil {
			return nil, err
		}
		defer sk.Destroy()
		out, err := create()
		if err != nil {
			return nil, err
		}
		if err := h.DecryptOn(sk, payload, out); err != nil {
			return nil, err
		}
		return key, out.Commit()
	})
}

// ownerStanza wraps sk on the HSM for the request's new owner: C_WrapKey with RSA-OAEP for an
// RSA key; for an EC key, an ephemeral key pair made on the HSM, a KEK derived there and
// C_WrapKey with CKM_AES_KEY_WRAP_PAD (token.SecretKey.WrapECDH), an ecdh stanza.
func ownerStanza(sk *token.SecretKey, req *escrow.Request) (*escrow.Stanza, error) {
	pub, hash := req.NewOwnerKey()
	if ec, ok := pub.(*ecdsa.PublicKey); ok {
		eph, wrapped, err := sk.WrapECDH(ec)
		if err != nil {
			return nil, err
		}
		return escrow.NewECStanza(ec, eph, escrow.RoleOwner, wrapped)
	}
	rsaPub, ok := pub.(*rsa.PublicKey)
	if !ok {
		return nil, errors.New("the new owner's key is neither RSA nor EC")
	}
	wrapped, err := sk.WrapOAEP(rsaPub, hash)
	if err != nil && hash != crypto.SHA1 && errors.Is(err, token.ErrMechanism) {
		// The HSM re-wraps with OAEP-SHA1 only (SoftHSM2, many HSMs), and the new owner's key
		// file asks for SHA-256. Every token decrypts OAEP-SHA1, and the stanza names its hash
		// (FORMAT.md section 2.2.1), so the key never has to leave the HSM to reach its owner.
		hash = crypto.SHA1
		wrapped, err = sk.WrapOAEP(rsaPub, hash)
	}
	if err != nil {
		return nil, err
	}
	return escrow.NewRSAStanza(rsaPub, hash, escrow.RoleOwner, wrapped)
}
