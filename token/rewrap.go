package token

import (
	"crypto"
	"crypto/rsa"

	"github.com/miekg/pkcs11"
)

// UnwrapOAEPSealed is UnwrapOAEP for keys that only need to be checked or
// used on the token, never re-wrapped: the session key is sensitive and
// NOT extractable, so not even C_WrapKey can take it out. The authority's
// intake uses it: verifying a record needs only C_DigestKey and AES-GCM.
func (k *KeyPair) UnwrapOAEPSealed(hash crypto.Hash, wrapped []byte) (*SecretKey, error) {
	return k.unwrapOAEP(hash, wrapped, false)
}

// WrapOAEP wraps this key on the token for pub with RSA-OAEP(hash,
// MGF1(hash), empty label): pub is imported as a session object and
// C_WrapKey runs on the token, so a sensitive key is re-wrapped without its
// value ever reaching the host. The key must be extractable (UnwrapOAEP
// makes it so; UnwrapOAEPSealed does not, and the token then refuses).
func (s *SecretKey) WrapOAEP(pub *rsa.PublicKey, hash crypto.Hash) ([]byte, error) {
	const op = "re-wrap key on token"
	mech, err := oaepMech(hash)
	if err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, newErr(op, nil, "no public key was given; this is a p11escrow bug")
	}
	if s.destroyed {
		return nil, newErr(op, nil, "the key was destroyed; unwrap it again")
	}
	ph, err := s.t.importPublic(pub)
	if err != nil {
		return nil, err
	}
	w, err := s.t.ctx.WrapKey(s.t.sh, mech, ph, s.h)
	return w, tokenErr(op, ctxOAEP, err)
}

// SecretAttributes are the attributes that say whether a key's value can
// leave the token.
type SecretAttributes struct {
	Sensitive, Extractable, AlwaysSensitive, NeverExtractable bool
}

// Attributes reads CKA_SENSITIVE, CKA_EXTRACTABLE, CKA_ALWAYS_SENSITIVE and
// CKA_NEVER_EXTRACTABLE, so callers can refuse a token that ignored the
// unwrap template and made a key it would reveal.
func (s *SecretKey) Attributes() (SecretAttributes, error) {
	a, err := s.t.attrs(s.h, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE,
		pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE)
	if err != nil {
		return SecretAttributes{}, tokenErr("read key attributes", ctxPlain, err)
	}
	return SecretAttributes{
		Sensitive:        boolAttr(a[pkcs11.CKA_SENSITIVE]),
		Extractable:      boolAttr(a[pkcs11.CKA_EXTRACTABLE]),
		AlwaysSensitive:  boolAttr(a[pkcs11.CKA_ALWAYS_SENSITIVE]),
		NeverExtractable: boolAttr(a[pkcs11.CKA_NEVER_EXTRACTABLE]),
	}, nil
}

// RevealsValue asks the token for CKA_VALUE and reports whether it handed
// the key's value out. Whatever comes back is zeroed at once. It exists so
// tests (and cautious callers) can show that a key stays inside the token:
// for a sensitive key the token must refuse (CKR_ATTRIBUTE_SENSITIVE).
func (s *SecretKey) RevealsValue() bool {
	v, err := s.t.readSecret(s.h)
	if err != nil {
		return false
	}
	defer clear(v)
	return len(v) > 0
}
