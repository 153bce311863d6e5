package authority

import (
	"bytes"
	"context"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// CanCreateReceiptKey refuses a second receipt key before anything is made on the HSM: a
// receipt key, once published, is what users check receipts against.
func (a *Authority) CanCreateReceiptKey(ctx context.Context) error {
	if err := a.needToken(); err != nil {
		return err
	}
	label, _, err := a.st.ReceiptKey(ctx)
	switch {
	case err == nil:
		return fmt.Errorf("the store already has receipt key %q", label)
	case !errors.Is(err, ErrNotFound):
		return err
	}
	return nil
}

// CreateReceiptKey makes the receipt-signing key on the HSM (ECDSA P-256, sign only, sensitive
// and never extractable) and registers it in the store, audited as "receipt-key". Receipts
// (FORMAT.md section 14) are signed with it.
func (a *Authority) CreateReceiptKey(ctx context.Context, label string) (*token.Signer, error) {
	if err := a.CanCreateReceiptKey(ctx); err != nil {
		return nil, err
	}
	s, err := a.Token.GenerateSigner(label, token.SignECDSAP256)
	if err != nil {
		return nil, err
	}
	attrs, err := s.PrivateAttributes()
	if err != nil {
		return nil, err
	}
	if !attrs.NeverLeftToken() || attrs.Decrypt || attrs.Unwrap {
		return nil, fmt.Errorf("the HSM made receipt key %q without the sign-only, never-extractable attributes it was asked for; remove it with the HSM's tools", label)
	}
	der, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil {
		return nil, err
	}
	fpr, err := escrow.FingerprintOf(s.Public())
	if err != nil {
		return nil, err
	}
	ev := a.event("receipt-key", map[string]any{"label": label, "key": fpr.String(), "algorithm": escrow.AlgECDSAP256})
	if err := a.st.SetReceiptKey(ctx, label, der, ev); err != nil {
		if errors.Is(err, ErrExists) {
			return nil, errors.New("another receipt key was registered meanwhile")
		}
		return nil, err
	}
	return s, nil
}

// ReceiptSigner finds the registered receipt key on the HSM, checking that the key found by
// label is the registered one.
func (a *Authority) ReceiptSigner(ctx context.Context) (*token.Signer, error) {
	if err := a.needToken(); err != nil {
		return nil, err
	}
	label, der, err := a.st.ReceiptKey(ctx)
	if errors.Is(err, ErrNotFound) {
		return nil, errors.New("the store has no receipt key yet; create one with `p11escrow authority receipt-key init`")
	}
	if err != nil {
		return nil, err
	}
	s, err := a.Token.FindSigner(label)
	if err != nil {
		return nil, err
	}
	got, err := x509.MarshalPKIXPublicKey(s.Public())
	if err != nil || !bytes.Equal(got, der) {
		return nil, fmt.Errorf("the signing key labelled %q on token %q is not the registered receipt key", label, a.Token.Info().Label)
	}
	return s, nil
}

// Receipt signs a receipt for a held record with signer (from ReceiptSigner). Every field comes
// from the store, so a record submitted again gets a receipt with the same statement.
func (a *Authority) Receipt(ctx context.Context, fileID, commitment string, signer *token.Signer) (*escrow.Receipt, error) {
	r, err := a.receiptStatement(ctx, fileID, commitment)
	if err != nil {
		return nil, err
	}
	if err := r.Sign(signer); err != nil {
		return nil, err
	}
	return r, nil
}

// receiptStatement is the unsigned receipt for a held record, read from the store.
func (a *Authority) receiptStatement(ctx context.Context, fileID, commitment string) (*escrow.Receipt, error) {
	held, err := a.st.Record(ctx, fileID, commitment)
	if err != nil {
		return nil, err
	}
	seq, err := a.st.IntakeSeq(ctx, fileID, commitment)
	if err != nil && !errors.Is(err, ErrNotFound) {
		return nil, err
	}
	inst, err := a.st.InstanceID(ctx)
	if err != nil {
		return nil, err
	}
	return newReceipt(inst, held, int64(seq)), nil
}

// newReceipt is the unsigned receipt for a held record, stored by audit entry seq (0 for a
// record held before entries named key commitments) of the store with this instance ID.
func newReceipt(instance string, held *HeldRecord, seq int64) *escrow.Receipt {
	return escrow.NewReceipt(instance, held.FileID, held.Commitment, held.Record, held.IntakeTime, int(seq))
}
