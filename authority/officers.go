package authority

import (
	"context"
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
)

// MinApprovals is the smallest approval policy: no single person may recover a key alone.
const MinApprovals = 2

// AddOfficer registers a person allowed to approve recoveries, by the public half of the
// signing key on their own token (ECDSA P-256 or RSA, made with `key generate --usage sign`).
// It works only while the authority is bootstrapping (see Governed): after that, registering an
// officer takes a change request (NewChangeRequest) approved by the officers.
func (a *Authority) AddOfficer(ctx context.Context, name string, pub crypto.PublicKey) (*Officer, error) {
	if err := a.refuseIfGoverned(ctx, "registering an officer"); err != nil {
		return nil, err
	}
	o, err := a.newOfficer(name, pub)
	if err != nil {
		return nil, err
	}
	err = a.st.AddOfficer(ctx, o, a.event("officer-add", officerDetails(o)))
	if errors.Is(err, ErrGoverned) { // another officer was registered since the check above
		return nil, governedErr("registering an officer")
	}
	return o, a.officerExists(err, o)
}

// newOfficer builds the Officer row for a signing public key. The name is made valid text by
// the rule of FORMAT.md section 5.1, as a change request's is, so both ways of registering an
// officer store the same name.
func (a *Authority) newOfficer(name string, pub crypto.PublicKey) (*Officer, error) {
	if name == "" {
		return nil, ErrNoName
	}
	alg, err := escrow.SignatureAlgorithm(pub)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	fpr, err := escrow.FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	return &Officer{Fingerprint: fpr.String(), Name: safetext.Clean(name), Algorithm: alg, PublicKey: der, Added: a.Now().UTC().Format(time.RFC3339)}, nil
}

func officerDetails(o *Officer) map[string]any {
	return map[string]any{"name": o.Name, "key": o.Fingerprint, "algorithm": o.Algorithm}
}

// officerExists turns the store's ErrExists into a sentence about o.
func (a *Authority) officerExists(err error, o *Officer) error {
	if errors.Is(err, ErrExists) {
		return fmt.Errorf("an officer named %q or with this key is already registered", o.Name)
	}
	return err
}

// SetApprovals sets how many distinct officers must approve a recovery or a change. Fewer than
// MinApprovals is refused. Setting the value in force changes nothing and is not audited. Any
// other value is set directly only while the authority is bootstrapping (see Governed): after
// that, it takes a change request approved by the officers.
func (a *Authority) SetApprovals(ctx context.Context, n int) error {
	if n < MinApprovals {
		return fmt.Errorf("a recovery needs at least %d approvals, so that no single person can recover a key alone", MinApprovals)
	}
	old, err := a.st.Approvals(ctx)
	if err != nil || n == old {
		return err
	}
	if err := a.refuseIfGoverned(ctx, "changing the policy"); err != nil {
		return err
	}
	err = a.st.SetApprovals(ctx, n, a.event("policy", map[string]any{"approvals": n, "was": old}))
	if errors.Is(err, ErrGoverned) {
		return governedErr("changing the policy")
	}
	return err
}
