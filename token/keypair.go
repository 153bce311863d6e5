package token

import (
	"crypto"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"fmt"
	"math/big"
	"strings"

	"github.com/miekg/pkcs11"
)

// KeyPair is an RSA exchange key: a private key object on the token and its
// public half, held in Go. Label and ID are the private key's CKA_LABEL and
// CKA_ID.
type KeyPair struct {
	Label  string
	ID     []byte
	Public *rsa.PublicKey
	t      *Token
	priv   pkcs11.ObjectHandle
}

// GenerateRSA creates an RSA key pair of bits (2048, 3072 or 4096) with
// exponent 65537 and explicit templates. The private key is a token object
// that is private, sensitive and never extractable, and may only decrypt and
// unwrap (not sign: an exchange key should not double as a signing key).
// The public key object may wrap and encrypt.
//
// Its CKA_ID is KeyID(public), or a random ID on a token that refuses to
// change CKA_ID (see generatePair); KeyPair.ID says which.
//
// GenerateRSA refuses a label that any key on the token already has, so
// that labels keep naming exactly one pair. With AllowDualUse, a token that
// refuses the decrypt-only template gets a key without that restriction
// (see AllowDualUse); check PrivateAttributes().DualUse().
func (t *Token) GenerateRSA(label string, bits int, opts ...GenOption) (*KeyPair, error) {
	return t.generateRSA(label, bits, false, opts)
}

// GenerateUnwrapRSA is GenerateRSA for a backup authority's key: the private
// key may unwrap (C_UnwrapKey) but not decrypt (CKA_DECRYPT false), so a file
// key it opens exists only as a key object inside the token, never as bytes
// returned to a caller. Where the module accepts CKA_UNWRAP_TEMPLATE, the key
// also carries {CKA_SENSITIVE true}, so that a module that enforces the
// template makes every key it unwraps sensitive whatever the caller asks for
// (SoftHSM2 2.6.1 stores the template; see the README for what it enforces).
// A module that refuses the template attribute gets the key without it. It
// takes no AllowDualUse: an authority key that can also decrypt or sign is
// exactly what it must not be.
func (t *Token) GenerateUnwrapRSA(label string, bits int) (*KeyPair, error) {
	return t.generateRSA(label, bits, true, nil)
}

func (t *Token) generateRSA(label string, bits int, unwrapOnly bool, opts []GenOption) (*KeyPair, error) {
	op := fmt.Sprintf("generate RSA key %q", label)
	if bits != 2048 && bits != 3072 && bits != 4096 {
		return nil, newErr(op, nil, "%d-bit RSA is not offered; choose 2048, 3072 or 4096", bits)
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, nil)}
	gen := func(id []byte) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
		pub, priv := rsaPublicTemplate(label, id, bits), rsaPrivateTemplate(label, id, unwrapOnly)
		if !unwrapOnly {
			return t.generateKeyPair(mech, pub, priv, opts)
		}
		tmpl := newSensitiveUnwrapTemplate()
		pubH, privH, err := t.ctx.GenerateKeyPair(t.sh, mech, pub, append(priv, tmpl.attr))
		tmpl.free()
		if refused(err) {
			// The module does not know array attributes: the key is still unwrap-only.
			pubH, privH, err = t.ctx.GenerateKeyPair(t.sh, mech, pub, priv)
		}
		return pubH, privH, err
	}
	pub, id, privH, err := t.generatePair(op, label, gen)
	if err != nil {
		return nil, err
	}
	return &KeyPair{Label: label, ID: id, Public: pub.(*rsa.PublicKey), t: t, priv: privH}, nil
}

// publicFromObject builds an rsa.PublicKey from CKA_MODULUS and
// CKA_PUBLIC_EXPONENT of a public or private key object.
func (t *Token) publicFromObject(h pkcs11.ObjectHandle) (*rsa.PublicKey, error) {
	a, err := t.attrs(h, pkcs11.CKA_MODULUS, pkcs11.CKA_PUBLIC_EXPONENT)
	if err != nil {
		return nil, err
	}
	n := new(big.Int).SetBytes(a[pkcs11.CKA_MODULUS])
	e := new(big.Int).SetBytes(a[pkcs11.CKA_PUBLIC_EXPONENT])
	if n.BitLen() < 1024 || !e.IsInt64() || e.Int64() < 3 || e.Int64() > 1<<31-1 {
		return nil, errors.New("the object has no usable RSA public key")
	}
	return &rsa.PublicKey{N: n, E: int(e.Int64())}, nil
}

// FindKeyPair finds exactly one RSA private key by label, or by CKA_ID if
// label is empty (both, if both are given). Keys made by other tools
// (pkcs11-tool --keypairgen, p11tool) work: the public half comes from a
// public key object with the same CKA_ID (or else the same label) whose
// modulus matches, or else from the private key's own CKA_MODULUS and
// CKA_PUBLIC_EXPONENT. Private keys are visible only after Login.
func (t *Token) FindKeyPair(label string, id []byte) (*KeyPair, error) {
	h, err := t.findPrivateKey("RSA", rsaClass(pkcs11.CKO_PRIVATE_KEY), label, id, t.unsupportedKey)
	if err != nil {
		return nil, err
	}
	return t.loadKeyPair(h)
}

// findPrivateKey finds exactly one private key of kind ("RSA", "EC") that class selects, by
// label, by CKA_ID, or by both, with one sentence for each way it can fail. notFound, if not
// nil, may explain a miss better (a key of a type p11escrow cannot use).
func (t *Token) findPrivateKey(kind string, class []*pkcs11.Attribute, label string, id []byte,
	notFound func(label string, id []byte) error) (pkcs11.ObjectHandle, error) {
	what := describeKey(label, id)
	op := "find key " + what
	if label == "" && len(id) == 0 {
		return 0, newErr(op, nil, "no key label or ID was given; name the key")
	}
	tmpl := class
	if label != "" {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_LABEL, label))
	}
	if len(id) > 0 {
		tmpl = append(tmpl, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	hs, err := t.findObjects(tmpl)
	if err != nil {
		return 0, err
	}
	switch {
	case len(hs) == 0 && t.NeedsLogin():
		return 0, newErr(op, ErrNotLoggedIn, "no %s private key %s is visible on token %q without a login; log in first", kind, what, t.info.Label)
	case len(hs) == 0:
		if notFound != nil {
			if err := notFound(label, id); err != nil {
				return 0, err
			}
		}
		return 0, newErr(op, ErrKeyNotFound, "token %q has no %s private key %s; check the name or generate the key", t.info.Label, kind, what)
	case len(hs) > 1:
		return 0, newErr(op, ErrAmbiguous, "token %q has %d %s private keys %s; select the key by ID as well", t.info.Label, len(hs), kind, what)
	}
	return hs[0], nil
}

func describeKey(label string, id []byte) string {
	var parts []string
	if label != "" {
		parts = append(parts, fmt.Sprintf("labelled %q", label))
	}
	if len(id) > 0 {
		parts = append(parts, "with ID "+hex.EncodeToString(id))
	}
	return strings.Join(parts, " and ")
}

// KeyPairs lists every RSA private key with a usable public half; others
// (e.g. a private key with neither public object nor modulus) are skipped.
func (t *Token) KeyPairs() ([]*KeyPair, error) {
	hs, err := t.findObjects(rsaClass(pkcs11.CKO_PRIVATE_KEY))
	if err != nil {
		return nil, err
	}
	var out []*KeyPair
	for _, h := range hs {
		kp, err := t.loadKeyPair(h)
		if errors.Is(err, ErrKeyNotFound) {
			continue
		}
		if err != nil {
			return nil, err
		}
		out = append(out, kp)
	}
	return out, nil
}

func (t *Token) loadKeyPair(priv pkcs11.ObjectHandle) (*KeyPair, error) {
	a, err := t.attrs(priv, pkcs11.CKA_LABEL, pkcs11.CKA_ID)
	if err != nil {
		return nil, tokenErr("read key attributes", ctxPlain, err)
	}
	kp := &KeyPair{Label: string(a[pkcs11.CKA_LABEL]), ID: a[pkcs11.CKA_ID], t: t, priv: priv}
	own, _ := t.publicFromObject(priv) // may be absent on some tokens
	kp.Public = t.matchPublic(kp.Label, kp.ID, own)
	if kp.Public == nil {
		what := describeKey(kp.Label, kp.ID)
		return nil, newErr("find key "+what, ErrKeyNotFound,
			"the private key %s on token %q has no public half; import its public key with the same CKA_ID", what, t.info.Label)
	}
	return kp, nil
}

// matchPublic looks for the public key object belonging to a private key:
// same CKA_ID first, then same label. With own (the private key's modulus)
// known, only an equal key is accepted; without it, only a unique candidate.
func (t *Token) matchPublic(label string, id []byte, own *rsa.PublicKey) *rsa.PublicKey {
	var queries [][]*pkcs11.Attribute
	if len(id) > 0 {
		queries = append(queries, append(rsaClass(pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, id)))
	}
	if label != "" {
		queries = append(queries, append(rsaClass(pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)))
	}
	for _, q := range queries {
		hs, err := t.findObjects(q)
		if err != nil {
			continue
		}
		if pub := t.pickPublic(hs, own); pub != nil {
			return pub
		}
	}
	return own
}

func (t *Token) pickPublic(hs []pkcs11.ObjectHandle, own *rsa.PublicKey) *rsa.PublicKey {
	var cands []*rsa.PublicKey
	for _, h := range hs {
		pub, err := t.publicFromObject(h)
		if err != nil {
			continue
		}
		if own != nil && pub.Equal(own) {
			return pub
		}
		cands = append(cands, pub)
	}
	if own == nil && len(cands) == 1 {
		return cands[0]
	}
	return nil
}

// DecryptOAEP decrypts ciphertext with the private key on the token using
// RSA-OAEP(hash, MGF1(hash), empty label). The result is typically a file
// key: clear() it when done.
//
// It runs one private-key operation: the module's own C_Decrypt, called once
// with a buffer of the modulus size (decryptInto). miekg/pkcs11's Ctx.Decrypt
// (v1.1.2) calls C_Decrypt twice, first with no output buffer to learn the
// length, and a TPM (tpm2-pkcs11) runs the whole RSA operation for that
// query; it is used only where the module's function cannot be found.
func (k *KeyPair) DecryptOAEP(hash crypto.Hash, ciphertext []byte) ([]byte, error) {
	const op = "RSA-OAEP decrypt on token"
	mech, err := oaepMech(hash)
	if err != nil {
		return nil, err
	}
	if err := k.t.ctx.DecryptInit(k.t.sh, mech, k.priv); err != nil {
		return nil, tokenErr(op, ctxDecrypt, err)
	}
	// One C_Decrypt into a buffer of the modulus size (see decryptInto), which always holds an
	// OAEP plaintext; miekg's two-call Decrypt only where the module's function is not found.
	pt, ok, err := k.t.decryptInto(ciphertext, k.Public.Size())
	if !ok {
		pt, err = k.t.ctx.Decrypt(k.t.sh, ciphertext)
	}
	if err != nil {
		return nil, tokenErr(op, ctxDecrypt, err)
	}
	return pt, nil
}

// KeyAttributes are the security and usage attributes of a private key.
type KeyAttributes struct {
	Sensitive, Extractable, AlwaysSensitive, NeverExtractable, Token bool
	// Local: the token generated the key itself (CKA_LOCAL); false for an
	// imported key.
	Local bool
	// Sign, Decrypt and Unwrap are CKA_SIGN, CKA_DECRYPT and CKA_UNWRAP: what
	// the key may be used for. An authority key made by GenerateUnwrapRSA
	// unwraps and does not decrypt.
	Sign, Decrypt, Unwrap bool
	// Derive is CKA_DERIVE: an EC exchange key derives (ECDH) and does
	// nothing else.
	Derive bool
}

// NeverLeftToken reports whether the key was generated on the token and its
// value was never readable or extractable there: CKA_LOCAL,
// CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE all true. An imported key,
// or one that was ever extractable, may have a copy elsewhere.
func (a KeyAttributes) NeverLeftToken() bool {
	return a.Local && a.AlwaysSensitive && a.NeverExtractable
}

// DualUse reports a key that may both sign and decrypt (or, for EC, derive), as
// every key on a TPM (tpm2-pkcs11) is.
func (a KeyAttributes) DualUse() bool { return a.Sign && (a.Decrypt || a.Derive) }

// PrivateAttributes reads the private key's CKA_SENSITIVE, CKA_EXTRACTABLE,
// CKA_ALWAYS_SENSITIVE, CKA_NEVER_EXTRACTABLE, CKA_TOKEN, CKA_LOCAL,
// CKA_SIGN, CKA_DECRYPT, CKA_UNWRAP and CKA_DERIVE, so `key list`, the authority and tests
// can show that the key cannot leave the token and what it may do.
func (k *KeyPair) PrivateAttributes() (KeyAttributes, error) {
	return k.t.privateAttributes(k.priv)
}

func (t *Token) privateAttributes(priv pkcs11.ObjectHandle) (KeyAttributes, error) {
	a, err := t.attrs(priv, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE,
		pkcs11.CKA_ALWAYS_SENSITIVE, pkcs11.CKA_NEVER_EXTRACTABLE, pkcs11.CKA_TOKEN,
		pkcs11.CKA_LOCAL, pkcs11.CKA_SIGN, pkcs11.CKA_DECRYPT, pkcs11.CKA_UNWRAP, pkcs11.CKA_DERIVE)
	if err != nil {
		return KeyAttributes{}, tokenErr("read key attributes", ctxPlain, err)
	}
	return KeyAttributes{
		Sensitive:        boolAttr(a[pkcs11.CKA_SENSITIVE]),
		Extractable:      boolAttr(a[pkcs11.CKA_EXTRACTABLE]),
		AlwaysSensitive:  boolAttr(a[pkcs11.CKA_ALWAYS_SENSITIVE]),
		NeverExtractable: boolAttr(a[pkcs11.CKA_NEVER_EXTRACTABLE]),
		Token:            boolAttr(a[pkcs11.CKA_TOKEN]),
		Local:            boolAttr(a[pkcs11.CKA_LOCAL]),
		Sign:             boolAttr(a[pkcs11.CKA_SIGN]),
		Decrypt:          boolAttr(a[pkcs11.CKA_DECRYPT]),
		Unwrap:           boolAttr(a[pkcs11.CKA_UNWRAP]),
		Derive:           boolAttr(a[pkcs11.CKA_DERIVE]),
	}, nil
}
