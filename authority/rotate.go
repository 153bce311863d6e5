package authority

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/p11escrow/p11escrow/token"
)

// KeySpec is the type of a new authority key: RSA of Bits bits, or, with Curve set ("p256" or
// "p384"), EC on that curve.
type KeySpec struct {
	Bits  int
	Curve string
}

// RotateStart makes (or, when resuming, finds) the new authority key of type spec and makes it
// current. created says whether the key pair was generated now. The new key's fingerprint is
// registered in the store, with its audit entry, before any record is re-wrapped (Rotate), and a
// resumed rotation accepts only the key on the HSM with that fingerprint: a key put under the
// label afterwards is refused. A key pair with the label that is on the HSM but not yet in the
// store (a rotation killed between generating and registering it) is adopted only if the HSM
// generated it and it never left the HSM (see RegisterKey and RegisterECKey).
func (a *Authority) RotateStart(ctx context.Context, label string, spec KeySpec) (*AuthorityKey, bool, error) {
	if err := a.needToken(); err != nil {
		return nil, false, err
	}
	if k, err := a.keyByLabel(ctx, label); err == nil {
		if k.State != KeyCurrent {
			return nil, false, fmt.Errorf("authority key %q is %s; choose a new label", label, k.State)
		}
		if _, err := a.keyPair(k); err != nil {
			return nil, false, fmt.Errorf("cannot resume the rotation: %w, and only the key it registered is accepted", err)
		}
		return k, false, nil // resume
	}
	if _, err := a.CurrentKey(ctx); err != nil {
		return nil, false, err
	}
	created := false
	if spec.Curve != "" {
		kp, err := a.Token.FindECKeyPair(label, nil)
		if errors.Is(err, token.ErrKeyNotFound) {
			kp, err = a.Token.GenerateEC(label, spec.Curve)
			created = true
		}
		if err != nil {
			return nil, false, err
		}
		k, err := a.RegisterECKey(ctx, kp, "rotate-start")
		return k, created, err
	}
	kp, err := a.Token.FindKeyPair(label, nil)
	if errors.Is(err, token.ErrKeyNotFound) {
		kp, err = a.Token.GenerateUnwrapRSA(label, spec.Bits)
		created = true
	}
	if err != nil {
		return nil, false, err
	}
	hash, err := kp.OAEPHash()
	if err != nil {
		return nil, false, err
	}
	k, err := a.RegisterKey(ctx, kp, hash, "rotate-start")
	return k, created, err
}

// RotateProgress is called after each record is re-wrapped.
type RotateProgress func(fileID string, done, total int)

// Rotate re-wraps every record that has no wrap under the current key, on the HSM: unwrap under
// an older key (sensitive, extractable), check it against the record's header on the token,
// C_WrapKey for the new key, and store the new wrap with its audit entry in one transaction. A
// killed rotation resumes where it stopped, because finished records are skipped.
func (a *Authority) Rotate(ctx context.Context, progress RotateProgress) (int, error) {
	cur, err := a.CurrentKey(ctx)
	if err != nil {
		return 0, err
	}
	// The registered key must be on the HSM, unchanged, before anything is wrapped for it.
	if _, err := a.keyPair(cur); err != nil {
		return 0, err
	}
	pending, err := a.st.PendingRewrap(ctx, cur.Fingerprint)
	if err != nil {
		return 0, err
	}
	for i, ref := range pending {
		if err := a.rewrap(ctx, ref, cur); err != nil {
			return i, fmt.Errorf("re-wrapping file %s: %w", ref.FileID, err)
		}
		if progress != nil {
			progress(ref.FileID, i+1, len(pending))
		}
	}
	return len(pending), a.Log(ctx, "rotate-done", map[string]any{"key": cur.Fingerprint, "rewrapped": len(pending)})
}

func (a *Authority) rewrap(ctx context.Context, ref RecordRef, cur *AuthorityKey) error {
	rec, err := a.st.Record(ctx, ref.FileID, ref.Commitment)
	if err != nil {
		return err
	}
	h, err := heldHeader(rec)
	if err != nil {
		return err
	}
	sk, from, _, err := a.unwrapHeld(ctx, ref, true)
	if err != nil {
		return err
	}
	defer sk.Destroy()
	if err := h.VerifyOn(sk); err != nil {
		return err
	}
	hash, wrapped, err := wrapFor(sk, cur)
	if err != nil {
		return err
	}
	w := &Wrap{FileID: ref.FileID, Commitment: ref.Commitment, KeyFingerprint: cur.Fingerprint, OAEPHash: hash, Wrapped: wrapped,
		Added: a.Now().UTC().Format(time.RFC3339)}
	return a.st.AddWrap(ctx, w, a.event("rewrap", map[string]any{"file_id": ref.FileID, "key_commitment": ref.Commitment, "from": from.Fingerprint, "to": cur.Fingerprint}))
}

// RetireKey marks an authority key retired once no record depends on it alone. The current key
// cannot be retired. The key pair stays on the HSM until the operator destroys it there.
func (a *Authority) RetireKey(ctx context.Context, label string) (*AuthorityKey, error) {
	k, err := a.keyByLabel(ctx, label)
	if err != nil {
		return nil, err
	}
	switch k.State {
	case KeyCurrent:
		return nil, fmt.Errorf("authority key %q is the current key; rotate to a new key first", label)
	case KeyRetired:
		return nil, fmt.Errorf("authority key %q is already retired", label)
	}
	err = a.st.RetireKey(ctx, k.Fingerprint, a.event("retire-key", map[string]any{"key": k.Fingerprint, "label": label}))
	if errors.Is(err, ErrInUse) {
		return nil, fmt.Errorf("authority key %q still holds records that no other key wraps (%v); finish `authority rotate` first", label, err)
	}
	return k, err
}
