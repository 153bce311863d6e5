package authority

import (
	"crypto"
	"crypto/x509"
	"errors"
	"fmt"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
)

// MinApprovals is the smallest approval policy: no single person may recover a key alone.
const MinApprovals = 2

// AddOfficer registers a person allowed to approve recoveries, by the public half of the
// signing key on their own token (ECDSA P-256 or RSA, made with `key generate --usage sign`).
func (a *Authority) AddOfficer(name string, pub crypto.PublicKey) (*Officer, error) {
	if name == "" {
		return nil, errors.New("give the officer's name with --name")
	}
	alg, err := escrow.SignatureAlgorithm(pub)
	if err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	fpr, err := escrow.PublicFingerprint(pub)
	if err != nil {
		return nil, err
	}
	o := &Officer{Fingerprint: fpr, Name: name, Algorithm: alg, PublicKey: der, Added: a.Now().UTC().Format(time.RFC3339)}
	err = a.Store.AddOfficer(o, a.event("officer-add", map[string]any{"name": name, "key": fpr, "algorithm": alg}))
	if errors.Is(err, ErrExists) {
		return nil, fmt.Errorf("an officer named %q or with this key is already registered", name)
	}
	return o, err
}

// SetApprovals sets how many distinct officers must approve a recovery. Fewer than
// MinApprovals is refused.
func (a *Authority) SetApprovals(n int) error {
	if n < MinApprovals {
		return fmt.Errorf("a recovery needs at least %d approvals, so that no single person can recover a key alone", MinApprovals)
	}
	old, err := a.Store.Approvals()
	if err != nil {
		return err
	}
	return a.Store.SetApprovals(n, a.event("policy", map[string]any{"approvals": n, "was": old}))
}
