package token

import (
	"crypto"
	"encoding/binary"

	"github.com/miekg/pkcs11"
)

// GCM parameters of every token-side AES-GCM call. 12-byte nonces are the
// size every token and crypto/cipher handle natively; 16-byte tags are the
// full strength.
const (
	GCMNonceSize = 12 // bytes of nonce (IV)
	GCMTagSize   = 16 // bytes of tag appended to the ciphertext
)

// SecretKey is an AES session object that may be sensitive: its value can
// stay inside the token while the token digests it, seals or opens with it,
// or (later) re-wraps it. This is the seam for re-issuing headers inside an
// HSM without the plaintext key ever reaching the host.
type SecretKey struct {
	t         *Token
	h         pkcs11.ObjectHandle
	destroyed bool
}

// UnwrapOAEP decrypts a wrapped AES key on the token into a sensitive,
// extractable (so it can be re-wrapped) session key. A key that is not 32
// bytes is refused and destroyed: the token's CKA_VALUE_LEN says so where it
// reports one, and where it reports 0 (SoftHSM2 2.6.1 after an unwrap) the
// key is measured on the token (see measureLen).
func (k *KeyPair) UnwrapOAEP(hash crypto.Hash, wrapped []byte) (*SecretKey, error) {
	return k.unwrapOAEP(hash, wrapped, true)
}

// unwrapOAEP is UnwrapOAEP with CKA_EXTRACTABLE chosen by the caller (see
// UnwrapOAEPSealed in rewrap.go for the non-extractable kind).
//
// Either way the key must be shown to be 32 bytes before it is used
// (FORMAT.md section 2.2, the 32-byte key rule): a token computes GCM and
// C_DigestKey with an AES-128 key as readily as with an AES-256 one, so a
// forged header with a short key would open here and fail on every host.
// A sealed key on a module that does not report the length of unwrapped
// keys is therefore unwrapped extractable, measured, and only then made
// non-extractable (PKCS#11 lets CKA_EXTRACTABLE go from true to false).
func (k *KeyPair) unwrapOAEP(hash crypto.Hash, wrapped []byte, extractable bool) (*SecretKey, error) {
	const op = "unwrap key"
	mech, err := oaepMech(hash)
	if err != nil {
		return nil, err
	}
	return k.t.unwrapChecked(extractable, func(extractable bool) (*SecretKey, error) {
		return k.t.unwrapOnce(op, ctxDecrypt, mech, k.priv, wrapped, extractable)
	})
}

// unwrapChecked runs unwrap (one C_UnwrapKey into a sensitive session key,
// extractable or not) and applies the 32-byte key rule to its result, for
// every kind of token-side unwrap: RSA-OAEP (unwrapOAEP) and AES key wrap
// under an ECDH-derived key (ECKeyPair.unwrapECDH).
func (t *Token) unwrapChecked(extractable bool, unwrap func(extractable bool) (*SecretKey, error)) (*SecretKey, error) {
	if !extractable && !t.m.unwrapLenUnknown.Load() {
		s, err := unwrap(false)
		if err != nil {
			return nil, err
		}
		known, err := s.checkLen()
		if err != nil {
			_ = s.Destroy()
			return nil, err
		}
		if known {
			return s, nil
		}
		// The module does not say how long the key is: measure it below.
		t.m.unwrapLenUnknown.Store(true)
		_ = s.Destroy()
	}
	s, err := unwrap(true)
	if err != nil {
		return nil, err
	}
	// A module known to report no length is not asked again: the measurement decides.
	known := false
	if !t.m.unwrapLenUnknown.Load() {
		known, err = s.checkLen()
	}
	if err == nil && !known {
		t.m.unwrapLenUnknown.Store(true)
		err = s.measureLen()
	}
	if err == nil && !extractable {
		err = s.seal()
	}
	if err != nil {
		_ = s.Destroy()
		return nil, err
	}
	return s, nil
}

// unwrapOnce runs C_UnwrapKey. It first asks for CKA_VALUE_LEN=32, which
// some HSMs require, then retries without it, because SoftHSM2 rejects
// CKA_VALUE_LEN in unwrap templates; the module remembers the refusal, so
// later unwraps make one call.
func (t *Token) unwrapOnce(op string, ctx opContext, mech []*pkcs11.Mechanism, unwrapping pkcs11.ObjectHandle, wrapped []byte, extractable bool) (*SecretKey, error) {
	if len(wrapped) == 0 { // miekg's UnwrapKey indexes wrapped[0]
		return nil, newErr(op, ErrDecrypt, msgNotForKey)
	}
	withLen := !t.m.noUnwrapValueLen.Load()
	h, err := t.ctx.UnwrapKey(t.sh, mech, unwrapping, wrapped, unwrapTemplate(withLen, extractable))
	if withLen && isCode(err, pkcs11.CKR_ATTRIBUTE_READ_ONLY, pkcs11.CKR_TEMPLATE_INCONSISTENT) {
		h, err = t.ctx.UnwrapKey(t.sh, mech, unwrapping, wrapped, unwrapTemplate(false, extractable))
		if err == nil {
			t.m.noUnwrapValueLen.Store(true)
		}
	}
	if err != nil {
		return nil, tokenErr(op, ctx, err)
	}
	return &SecretKey{t: t, h: h}, nil
}

// checkLen reads CKA_VALUE_LEN and refuses a key that the token reports
// is not AES-256. known is false when the token does not tell (SoftHSM2
// reports 0 after an unwrap); the caller then measures the key.
func (s *SecretKey) checkLen() (known bool, err error) {
	a, err := s.t.attrs(s.h, pkcs11.CKA_VALUE_LEN)
	if err != nil {
		return false, nil // cannot tell; measure it
	}
	n := ulong(a[pkcs11.CKA_VALUE_LEN])
	if n == 0 {
		return false, nil
	}
	return true, s.refuseLen(int(n))
}

// measureLen learns the length of an extractable key without revealing it:
// the token wraps it with CKM_AES_KEY_WRAP (RFC 3394, whose output is 8
// bytes longer than the key, padded to 8 bytes) under a sensitive,
// non-extractable session key that can only wrap, and the wrapped copy is
// thrown away. AES-128 and AES-192 keys, the ones a token would use, are
// refused exactly. SoftHSM2 zero-pads a key of 25 to 31 bytes, which
// then measures as 32, but that is no AES key size and every AES operation
// with it fails (CKR_MECHANISM_INVALID), so it can never open a header.
//
// The measuring key is made once per session and destroyed with it (Close):
// making one per unwrap cost the authority a tenth of its RSA time. It
// holds nothing secret of its own: nothing can unwrap or decrypt with it,
// and what it wraps is discarded.
func (s *SecretKey) measureLen() error {
	const op = "check unwrapped key length"
	t := s.t
	fresh := false
	if t.measureKEK == 0 {
		kek, err := t.ctx.GenerateKey(t.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, measureKeyTemplate())
		if err != nil {
			return newErr(op, nil, "the token reports no length for unwrapped keys and cannot make an AES key to measure one: %v", err)
		}
		t.measureKEK, fresh = kek, true
	}
	w, err := t.ctx.WrapKey(t.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP, nil)}, t.measureKEK, s.h)
	if err != nil && !fresh {
		// The session's key may be gone (a logout ends private session objects): make another
		// once.
		_ = t.ctx.DestroyObject(t.sh, t.measureKEK)
		t.measureKEK = 0
		return s.measureLen()
	}
	if err != nil {
		return newErr(op, nil, "the token reports no length for unwrapped keys and cannot measure one with CKM_AES_KEY_WRAP: %v", err)
	}
	clear(w)
	return s.refuseLen(len(w) - 8)
}

// refuseLen refuses a key of n bytes unless n is 32.
func (s *SecretKey) refuseLen(n int) error {
	if n == FileKeySize {
		return nil
	}
	return newErr("unwrap key", ErrKeyLength, "the unwrapped key is %d bytes, not %d; the header is corrupt or forged", n, FileKeySize)
}

// seal makes an extractable key non-extractable, and checks that it is.
func (s *SecretKey) seal() error {
	const op = "seal unwrapped key"
	err := s.t.ctx.SetAttributeValue(s.t.sh, s.h, []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false)})
	if err != nil {
		return tokenErr(op, ctxPlain, err)
	}
	a, err := s.Attributes()
	if err != nil {
		return err
	}
	if a.Extractable {
		return newErr(op, nil, "the token kept the unwrapped key extractable; refusing to use it")
	}
	return nil
}

// Destroy removes the session object. Idempotent.
func (s *SecretKey) Destroy() error {
	if s == nil || s.destroyed {
		return nil
	}
	s.destroyed = true
	if s.t.closed {
		return nil // the session, and with it the object, is already gone
	}
	return tokenErr("destroy key", ctxPlain, s.t.ctx.DestroyObject(s.t.sh, s.h))
}

// Sensitive reads CKA_SENSITIVE: true means the value cannot leave the token
// in the clear.
func (s *SecretKey) Sensitive() (bool, error) {
	a, err := s.t.attrs(s.h, pkcs11.CKA_SENSITIVE)
	if err != nil {
		return false, tokenErr("read key attributes", ctxPlain, err)
	}
	return boolAttr(a[pkcs11.CKA_SENSITIVE]), nil
}

// DigestSHA256 returns SHA-256(prefix || key value || suffix), computed on
// the token with C_DigestKey, so a sensitive key can be committed to (e.g.
// a key-commitment tag) without the host ever seeing it.
func (s *SecretKey) DigestSHA256(prefix, suffix []byte) ([]byte, error) {
	const op = "digest key on token"
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_SHA256, nil)}
	ctx, sh := s.t.ctx, s.t.sh
	if err := ctx.DigestInit(sh, mech); err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	// Each failing call below ends the digest operation (PKCS#11 §5.10).
	if len(prefix) > 0 {
		if err := ctx.DigestUpdate(sh, prefix); err != nil {
			return nil, tokenErr(op, ctxPlain, err)
		}
	}
	if err := ctx.DigestKey(sh, s.h); err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	if len(suffix) > 0 {
		if err := ctx.DigestUpdate(sh, suffix); err != nil {
			return nil, tokenErr(op, ctxPlain, err)
		}
	}
	d, err := ctx.DigestFinal(sh)
	return d, tokenErr(op, ctxPlain, err)
}

// SealGCM encrypts plaintext on the token with AES-GCM (12-byte nonce, aad,
// 128-bit tag) in one single-part call and returns ciphertext||tag. An
// empty plaintext yields just the 16-byte tag (a GMAC over aad). Never
// reuse a nonce with the same key.
func (s *SecretKey) SealGCM(nonce, aad, plaintext []byte) ([]byte, error) {
	const op = "AES-GCM encrypt on token"
	if len(nonce) != GCMNonceSize {
		return nil, newErr(op, nil, "the nonce is %d bytes, not %d; this is a p11escrow bug", len(nonce), GCMNonceSize)
	}
	// A fresh GCMParams per call, freed after the call: miekg keeps the
	// IV/AAD in C memory that must outlive C_Encrypt.
	p := pkcs11.NewGCMParams(nonce, aad, GCMTagSize*8)
	defer p.Free()
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, p)}
	if err := s.t.ctx.EncryptInit(s.t.sh, mech, s.h); err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	out, err := s.t.ctx.Encrypt(s.t.sh, plaintext)
	return out, tokenErr(op, ctxPlain, err)
}

// OpenGCM reverses SealGCM on the token. A wrong tag (altered data, wrong
// nonce, aad or key) returns an error matching ErrAuthFailed and no data.
func (s *SecretKey) OpenGCM(nonce, aad, ciphertextAndTag []byte) ([]byte, error) {
	const op = "AES-GCM decrypt on token"
	if len(nonce) != GCMNonceSize {
		return nil, newErr(op, nil, "the nonce is %d bytes, not %d; this is a p11escrow bug", len(nonce), GCMNonceSize)
	}
	if len(ciphertextAndTag) < GCMTagSize {
		return nil, newErr(op, ErrAuthFailed, "the data is shorter than a GCM tag; it was truncated")
	}
	p := pkcs11.NewGCMParams(nonce, aad, GCMTagSize*8)
	defer p.Free()
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, p)}
	if err := s.t.ctx.DecryptInit(s.t.sh, mech, s.h); err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	// One C_Decrypt into a Go buffer that is zeroed after the copy (decryptInto), where the
	// module's function was found: miekg/pkcs11's Decrypt leaves the plaintext in a C buffer it
	// frees without zeroing.
	out, ok, err := s.t.decryptInto(ciphertextAndTag, len(ciphertextAndTag))
	if !ok {
		out, err = s.t.ctx.Decrypt(s.t.sh, ciphertextAndTag)
	}
	if err != nil {
		return nil, tokenErr(op, ctxGCMOpen, err)
	}
	return out, nil
}

// ulong decodes a CK_ULONG attribute value (native byte order and size).
func ulong(b []byte) uint {
	switch len(b) {
	case 8:
		return uint(binary.NativeEndian.Uint64(b))
	case 4:
		return uint(binary.NativeEndian.Uint32(b))
	}
	return 0
}
