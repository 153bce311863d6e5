package escrow

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
	"testing"
)

// tokenWrapKey is a file key whose holder wraps it itself (as token.FileKey does with
// C_WrapKey), or says it cannot (err).
type tokenWrapKey struct {
	hostKey
	calls int
	err   error
}

func (k *tokenWrapKey) WrapOAEP(pub *rsa.PublicKey, hash crypto.Hash) ([]byte, error) {
	k.calls++
	if k.err != nil {
		return nil, k.err
	}
	return rsa.EncryptOAEP(hash.New(), rand.Reader, pub, k.hostKey, nil)
}

// TestOAEPWrapperOptional checks that RSARecipient asks a key that can wrap itself, falls back to
// the host when it answers errors.ErrUnsupported, and stops on any other error: a token failure
// is never papered over by a host wrap.
func TestOAEPWrapperOptional(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	r := &RSARecipient{Public: &owner.PublicKey, Hash: crypto.SHA256, Role: RoleOwner}
	for _, tc := range []struct {
		name    string
		err     error
		wantErr bool
	}{
		{"token wraps", nil, false},
		{"token cannot", fmt.Errorf("no OAEP-SHA256 here: %w", errors.ErrUnsupported), false},
		{"token fails", errors.New("the token was removed"), true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			k := &tokenWrapKey{hostKey: newHostKey(), err: tc.err}
			s, err := r.Wrap(k)
			if k.calls != 1 {
				t.Fatalf("WrapOAEP called %d times", k.calls)
			}
			if tc.wantErr {
				if err == nil || !errors.Is(err, tc.err) {
					t.Fatalf("Wrap = %v, want the token's error", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got, err := identity(owner).Unwrap([]*Stanza{s})
			if err != nil || string(got) != string(k.hostKey) {
				t.Fatalf("the stanza holds %x, %v; want %x", got, err, []byte(k.hostKey))
			}
		})
	}
	// A key without WrapOAEP at all is wrapped on the host.
	k := newHostKey()
	s, err := r.Wrap(k)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := identity(owner).Unwrap([]*Stanza{s}); err != nil || string(got) != string(k) {
		t.Fatalf("host wrap holds %x, %v", got, err)
	}
}
