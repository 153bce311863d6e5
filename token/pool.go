package token

import (
	"crypto/rsa"
	"fmt"

	"github.com/miekg/pkcs11"
)

// NewSession opens another session on t's token, for another goroutine: a PKCS#11 session runs
// one operation at a time, but one *pkcs11.Ctx serves any number of sessions at once.
//
// The new session needs no C_Login. Login state belongs to the token and the application, not
// to a session, so once t is logged in every session of this process is (PKCS#11 v2.40 §5.6);
// one PIN entry serves a whole batch. The capabilities t has already probed are shared, so the
// new session asks the token nothing before its first real operation. Close each session when
// done; closing the Module closes any left open.
func (t *Token) NewSession() (*Token, error) {
	if t.closed {
		return nil, newErr("open session", nil, "the token %q was closed; open it again", t.info.Label)
	}
	sh, err := t.ctx.OpenSession(t.info.SlotID, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, tokenErr(fmt.Sprintf("open another session on token %q", t.info.Label), ctxPlain, err)
	}
	s := &Token{m: t.m, ctx: t.ctx, sh: sh, info: t.info, caps: t.caps, pubs: map[string]pkcs11.ObjectHandle{},
		pubPtrs: map[*rsa.PublicKey]pkcs11.ObjectHandle{}}
	t.m.track(s, true)
	return s, nil
}

// Sessions opens up to n more sessions on t's token (NewSession), one for each further goroutine
// of a batch, and returns those it could open. A token that limits its sessions (many smart
// cards allow only a few) gives a batch fewer workers rather than a failure. Close each one.
func (t *Token) Sessions(n int) []*Token {
	var out []*Token
	for range n {
		s, err := t.NewSession()
		if err != nil {
			break
		}
		out = append(out, s)
	}
	return out
}

// On returns the key pair for use on session s. Token objects are visible to every session of
// the application, so the private key's handle is valid there too; only the session that runs
// the operation changes. Use it to unwrap or decrypt from several goroutines at once.
func (k *KeyPair) On(s *Token) *KeyPair {
	c := *k
	c.t = s
	return &c
}

// On returns the signing key for use on session s, as KeyPair.On does: to sign from another
// goroutine than the one that found the key.
func (s *Signer) On(t *Token) *Signer {
	c := *s
	c.t = t
	return &c
}
