// Package authority is the backup authority: it takes in escrow records after verifying them on
// its HSM, keeps them in a Store, registers officers and the approval policy, re-issues a file's
// header for a new owner once enough officers approved, rotates its key, and keeps a
// hash-chained audit log of all of it.
//
// Session keys never exist in the authority's host memory: every operation with a file key
// (verify, re-wrap, re-issue a header, decrypt) runs on the HSM with the key as a sensitive
// session object (token.SecretKey), through escrow's token-side functions (escrow.KeyOps).
package authority

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/p11escrow/p11escrow/authority/store"
	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// Authority runs the authority's operations against one store and, for those that need keys,
// the authority's logged-in token.
type Authority struct {
	st    Store
	Token *token.Token // nil for commands that need no key
	Actor string       // who acts, for the audit log: OS user and token
	Now   func() time.Time
	// Warn receives warnings that do not stop the command, such as an authority key made by
	// an older p11escrow that can still decrypt (a *DecryptingKeyWarning). nil discards them.
	Warn func(w error)

	keys map[string]Key // by fingerprint, found once per run
}

// New returns an Authority; tok may be nil.
func New(st Store, tok *token.Token, actor string) *Authority {
	return &Authority{st: st, Token: tok, Actor: actor, Now: time.Now, keys: map[string]Key{}}
}

func (a *Authority) warn(w error) {
	if a.Warn != nil && w != nil {
		a.Warn(w)
	}
}

// KeyWarning returns a *DecryptingKeyWarning for an authority key on the HSM that can decrypt
// (CKA_DECRYPT true), as authority keys made before unwrap-only keys could: with it, whoever
// holds the HSM's PIN can open escrowed files with C_Decrypt, outside the quorum and the audit
// log. It returns nil for an unwrap-only key. Every command that uses an authority key on the
// HSM reports it.
func KeyWarning(kp *token.KeyPair) error {
	attrs, err := kp.PrivateAttributes()
	if err != nil || !attrs.Decrypt {
		return nil
	}
	return &DecryptingKeyWarning{Label: kp.Label}
}

// checkNewKey accepts as a new authority key only a key pair that the HSM generated and that
// never left it (CKA_LOCAL, CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE), and that may
// unwrap but not decrypt (RSA), or derive and do nothing else (EC: no sign, decrypt or unwrap). A
// key imported by someone who once held the HSM's PIN has a copy outside the HSM; a key that
// decrypts opens files outside the quorum.
func checkNewKey(kp Key) error {
	attrs, err := kp.attributes()
	if err != nil {
		return err
	}
	if !attrs.NeverLeftToken() {
		return fmt.Errorf("the key labelled %q was not generated on the HSM or was once extractable (CKA_LOCAL %v, CKA_ALWAYS_SENSITIVE %v, CKA_NEVER_EXTRACTABLE %v), so a copy may exist outside it; the authority accepts only keys it generated itself: remove that key with the HSM's tools, or choose another label", kp.Label(), attrs.Local, attrs.AlwaysSensitive, attrs.NeverExtractable)
	}
	if kp.EC != nil {
		if !attrs.Derive || attrs.Sign || attrs.Decrypt || attrs.Unwrap {
			return fmt.Errorf("the EC key labelled %q may do more than derive (CKA_DERIVE %v, CKA_SIGN %v, CKA_DECRYPT %v, CKA_UNWRAP %v); an EC authority key must only derive: choose another label and let p11escrow make the key", kp.Label(), attrs.Derive, attrs.Sign, attrs.Decrypt, attrs.Unwrap)
		}
		return nil
	}
	if attrs.Decrypt || !attrs.Unwrap {
		return fmt.Errorf("the key labelled %q may decrypt (CKA_DECRYPT %v, CKA_UNWRAP %v); an authority key must only unwrap, so that files open only through recovery: choose another label and let p11escrow make the key", kp.Label(), attrs.Decrypt, attrs.Unwrap)
	}
	return nil
}

// event builds an audit event; details are encoded as JSON with sorted keys, so they are
// canonical text.
func (a *Authority) event(action string, details map[string]any) Event {
	d, _ := json.Marshal(details)
	return Event{Time: a.Now(), Actor: a.Actor, Action: action, Details: string(d)}
}

// needToken fails clearly when a command that needs the HSM has none.
func (a *Authority) needToken() error {
	if a.Token == nil {
		return ErrNoToken
	}
	return nil
}

// checkHSM refuses a token that cannot keep session keys inside it: the authority needs
// C_UnwrapKey with OAEP, CKM_AES_GCM and SHA-256 digests (C_DigestKey) on the token.
func (a *Authority) checkHSM() error {
	if err := a.needToken(); err != nil {
		return err
	}
	c, err := a.Token.Capabilities()
	if err != nil {
		return err
	}
	if ok, missing := c.KeepsKeysInside(); !ok {
		return fmt.Errorf("token %q cannot keep session keys inside it: it lacks %s, and the authority's HSM must offer C_UnwrapKey with RSA-OAEP, CKM_AES_GCM and SHA-256 digests (see `p11escrow token info`)", a.Token.Info().Label, strings.Join(missing, ", "))
	}
	return nil
}

// keyPair returns the HSM key pair of a registered authority key, RSA or EC, checking that the
// key found by label is really the registered one (a relabelled or replaced key is refused).
func (a *Authority) keyPair(k *AuthorityKey) (Key, error) { return a.keyPairOn(a.Token, k) }

// keyPairOn is keyPair searching on session on of the authority's token, for a caller that has
// lent the authority's own session to other work. Its results are cached for both.
func (a *Authority) keyPairOn(on *token.Token, k *AuthorityKey) (Key, error) {
	if kp, ok := a.keys[k.Fingerprint]; ok {
		return kp, nil
	}
	if err := a.checkHSM(); err != nil {
		return Key{}, err
	}
	pub, err := registeredPublic(k)
	if err != nil {
		return Key{}, err
	}
	var kp Key
	if _, ok := pub.(*ecdsa.PublicKey); ok {
		kp.EC, err = on.FindECKeyPair(k.Label, nil)
	} else {
		kp.RSA, err = on.FindKeyPair(k.Label, nil)
	}
	if err != nil {
		return Key{}, err
	}
	fpr, err := escrow.FingerprintOf(kp.Public())
	if err != nil {
		return Key{}, err
	}
	if fpr.String() != k.Fingerprint {
		return Key{}, fmt.Errorf("the key labelled %q on token %q is not the registered authority key %s", k.Label, a.Token.Info().Label, k.Fingerprint)
	}
	if kp.RSA != nil {
		a.warn(KeyWarning(kp.RSA))
	}
	a.keys[k.Fingerprint] = kp
	return kp, nil
}

// liveKeys returns the authority keys that are not retired.
func (a *Authority) liveKeys(ctx context.Context) ([]*AuthorityKey, error) {
	all, err := a.st.AuthorityKeys(ctx)
	if err != nil {
		return nil, err
	}
	var live []*AuthorityKey
	for _, k := range all {
		if k.State != KeyRetired {
			live = append(live, k)
		}
	}
	return live, nil
}

// CurrentKey returns the current authority key, or an error saying how to make one.
func (a *Authority) CurrentKey(ctx context.Context) (*AuthorityKey, error) {
	keys, err := a.liveKeys(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range keys {
		if k.State == KeyCurrent {
			return k, nil
		}
	}
	return nil, errors.New("the store has no authority key yet; create one with `p11escrow authority init`")
}

// keyByLabel finds a registered key by label.
func (a *Authority) keyByLabel(ctx context.Context, label string) (*AuthorityKey, error) {
	all, err := a.st.AuthorityKeys(ctx)
	if err != nil {
		return nil, err
	}
	for _, k := range all {
		if k.Label == label {
			return k, nil
		}
	}
	return nil, fmt.Errorf("no authority key labelled %q is registered in the store", label)
}

// CanInit refuses a token that cannot keep session keys inside it (checkHSM), before any key
// is made, and a second initial key: a store changes keys only by rotation, which re-wraps
// every record.
func (a *Authority) CanInit(ctx context.Context) error {
	if err := a.checkHSM(); err != nil {
		return err
	}
	keys, err := a.st.AuthorityKeys(ctx)
	if err != nil {
		return err
	}
	for _, k := range keys {
		if k.State == KeyCurrent {
			return fmt.Errorf("the store already has authority key %q; to change keys, use `p11escrow authority rotate`", k.Label)
		}
	}
	return nil
}

// RegisterKey records a freshly made RSA key pair as the current authority key. hash is the
// OAEP hash its token decrypts (see the README on oaep-hash). It refuses a key that the HSM did
// not generate, that was ever extractable, or that may decrypt (see checkNewKey).
func (a *Authority) RegisterKey(ctx context.Context, kp *token.KeyPair, hash crypto.Hash, action string) (*AuthorityKey, error) {
	name, err := escrow.OAEPHash(hash)
	if err != nil {
		return nil, err
	}
	return a.register(ctx, Key{RSA: kp}, name, action)
}

// RegisterECKey records a freshly made EC key pair (P-256 or P-384) as the current authority
// key. It refuses a key that the HSM did not generate, that was ever extractable, or that may
// do anything but derive (see checkNewKey).
func (a *Authority) RegisterECKey(ctx context.Context, kp *token.ECKeyPair, action string) (*AuthorityKey, error) {
	return a.register(ctx, Key{EC: kp}, "", action)
}

// register registers kp; oaepHash is empty for an EC key.
func (a *Authority) register(ctx context.Context, kp Key, oaepHash, action string) (*AuthorityKey, error) {
	if err := checkNewKey(kp); err != nil {
		return nil, err
	}
	k, err := authorityKey(kp.Label(), kp.Public(), oaepHash, a.Now())
	if err != nil {
		return nil, err
	}
	details := map[string]any{"key": k.Fingerprint, "label": k.Label, "oaep_hash": k.OAEPHash}
	if kp.EC != nil {
		curve, _ := escrow.CurveName(kp.EC.Public)
		details = map[string]any{"key": k.Fingerprint, "label": k.Label, "curve": curve}
	}
	if err := a.st.AddAuthorityKey(ctx, k, a.event(action, details)); err != nil {
		if errors.Is(err, ErrExists) {
			return nil, fmt.Errorf("an authority key with label %q or the same public key is already registered", kp.Label())
		}
		return nil, err
	}
	a.keys[k.Fingerprint] = kp
	return k, nil
}

// authorityKey is the store's row for a key; oaepHash is empty for an EC key.
func authorityKey(label string, pub crypto.PublicKey, oaepHash string, now time.Time) (*AuthorityKey, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	fpr, err := escrow.FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	return &AuthorityKey{Fingerprint: fpr.String(), Label: label, Tag: fpr.Tag(), OAEPHash: oaepHash,
		PublicKey: der, Created: now.UTC().Format(time.RFC3339)}, nil
}

// Log appends an event that changes nothing else.
func (a *Authority) Log(ctx context.Context, action string, details map[string]any) error {
	return a.st.Log(ctx, a.event(action, details))
}

// VerifyAudit checks the whole audit chain against the head, and every row that decides
// recoveries against the last state the chain recorded for it, all read at one instant. It
// returns the entry count and the head.
func (a *Authority) VerifyAudit(ctx context.Context) (int64, []byte, error) {
	snap, err := a.st.AuditSnapshot(ctx)
	if err != nil {
		return 0, nil, err
	}
	n, err := store.VerifyChain(snap.Entries, snap.Count, snap.Head)
	if err != nil {
		return 0, nil, err
	}
	return n, snap.Head, store.VerifyState(snap.Entries, snap.State)
}
