package authority

import (
	"errors"
	"fmt"
	"time"

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
}

// Intake verifies one escrow record on the HSM and stores it (verified escrow, README):
//
//  1. the authority stanza is unwrapped on the token with C_UnwrapKey into a sensitive,
//     non-extractable session key;
//  2. the token computes the key commitment, the header MAC and the record binding, which
//     must all match;
//  3. the record and an audit entry are stored in one transaction.
//
// A record that fails is rejected (and the rejection audited) with a one-line reason; nothing
// of it is stored. A valid record whose file ID is already held is reported as a duplicate. The
// returned error is for failures of the token or the store, after which intake should stop.
func (a *Authority) Intake(name string, data []byte) (IntakeResult, error) {
	res := IntakeResult{Name: name}
	rec, err := escrow.ParseRecord(data)
	if err != nil {
		return a.reject(res, err)
	}
	res.FileID = rec.FileID
	// Verify before looking for a duplicate, so that an altered copy of a held record is
	// reported as the forgery it is, not as "already held".
	h, st, err := rec.AuthorityStanza()
	if err != nil {
		return a.reject(res, err)
	}
	key, err := a.keyForTag(st.Args[1])
	if err != nil {
		return a.reject(res, err)
	}
	if err := a.verifyOnToken(rec, h, st, key); err != nil {
		var re *escrow.RecordError
		if errors.As(err, &re) {
			return a.reject(res, err)
		}
		return res, err
	}
	return a.store(res, rec, st, key)
}

// keyForTag finds the live authority key a stanza's key tag names.
func (a *Authority) keyForTag(tag string) (*AuthorityKey, error) {
	keys, err := a.liveKeys()
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.Tag == tag {
			return k, nil
		}
	}
	return nil, &escrow.RecordError{Reason: fmt.Sprintf("it is wrapped for authority key %s, which is not a key of this authority", tag)}
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
// the session key never reaches this host's memory.
func VerifyOnToken(rec *escrow.Record, h *escrow.Header, st *escrow.Stanza, kp *token.KeyPair) error {
	hash, err := escrow.ParseOAEPHash(st.Args[0])
	if err != nil {
		return &escrow.RecordError{Reason: err.Error()}
	}
	if len(st.Body) != kp.Public.Size() {
		return &escrow.RecordError{Reason: "its wrapped key has the wrong length for the authority key"}
	}
	sk, err := kp.UnwrapOAEPSealed(hash, st.Body)
	if errors.Is(err, token.ErrDecrypt) {
		return &escrow.RecordError{Reason: "its wrapped key does not decrypt with the authority key"}
	}
	if err != nil {
		return err
	}
	defer sk.Destroy()
	return rec.VerifyOn(h, sk)
}

func (a *Authority) store(res IntakeResult, rec *escrow.Record, st *escrow.Stanza, key *AuthorityKey) (IntakeResult, error) {
	now := a.Now().UTC().Format(time.RFC3339)
	held := &HeldRecord{
		FileID: rec.FileID, OwnerFingerprint: rec.Owner.Fingerprint, OwnerTokenLabel: rec.Owner.TokenLabel,
		OwnerTokenSerial: rec.Owner.TokenSerial, Description: rec.Description, Created: rec.Created,
		IntakeTime: now, AuthorityKey: key.Fingerprint, Status: StatusHeld, Record: rec.Marshal(),
	}
	w := &Wrap{FileID: rec.FileID, KeyFingerprint: key.Fingerprint, OAEPHash: st.Args[0], Wrapped: st.Body, Added: now}
	ev := a.event("intake", map[string]any{"file_id": rec.FileID, "source": res.Name,
		"owner": rec.Owner.Fingerprint, "authority_key": key.Fingerprint})
	err := a.Store.Intake(held, w, ev)
	if errors.Is(err, ErrExists) {
		return a.duplicate(res)
	}
	if err != nil {
		return res, err
	}
	res.Outcome = Held
	return res, nil
}

func (a *Authority) reject(res IntakeResult, why error) (IntakeResult, error) {
	res.Outcome, res.Reason = Rejected, why
	details := map[string]any{"source": res.Name, "reason": why.Error()}
	if res.FileID != "" {
		details["file_id"] = res.FileID
	}
	return res, a.Log("reject", details)
}

func (a *Authority) duplicate(res IntakeResult) (IntakeResult, error) {
	res.Outcome = Duplicate
	return res, a.Log("duplicate", map[string]any{"source": res.Name, "file_id": res.FileID})
}
