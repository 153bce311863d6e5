package token

import (
	"crypto/ecdsa"
	"encoding/asn1"
	"errors"
	"fmt"

	"github.com/miekg/pkcs11"
)

// ECKeyPair is an EC exchange key on P-256 or P-384: a private key object on the token that
// may derive (ECDH), and its public half, held in Go. It opens ecdh stanzas (FORMAT.md
// section 2.2.2): escrow.ECIdentity uses it as an escrow.ECUnwrapper.
type ECKeyPair struct {
	Label  string
	ID     []byte
	Public *ecdsa.PublicKey
	t      *Token
	priv   pkcs11.ObjectHandle
}

// ecCurveOIDs are the curves GenerateEC offers, by the names of `key generate --type ec-NAME`,
// with their CKA_EC_PARAMS.
var ecCurveOIDs = map[string][]byte{"p256": oidP256, "p384": oidP384}

// GenerateEC creates an EC exchange key pair on curve ("p256" or "p384"). The private key is a
// token object that is private, sensitive, never extractable, and may only derive. Its CKA_ID
// and the label rules are those of GenerateRSA; with AllowDualUse, a token that refuses the
// derive-only template gets a key without that restriction.
func (t *Token) GenerateEC(label, curve string, opts ...GenOption) (*ECKeyPair, error) {
	op := fmt.Sprintf("generate EC key %q", label)
	params, ok := ecCurveOIDs[curve]
	if !ok {
		return nil, newErr(op, nil, "the curve %q is not offered; choose p256 or p384", curve)
	}
	// A key that cannot derive on its token could never open a file encrypted to it
	// (tpm2-pkcs11 1.9, for one, has no C_DeriveKey): refuse it before it exists.
	if c, err := t.Capabilities(); err == nil && !c.ECDHDerive {
		return nil, newErr(op, ErrUnsupportedKey, "token %q cannot derive with EC keys (no CKM_ECDH1_DERIVE), so it could never open a file encrypted to an EC key; use an RSA key (--type rsa-3072)", t.info.Label)
	}
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}
	gen := func(id []byte) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
		return t.generateKeyPair(mech, ecPublicTemplate(label, id, params), ecPrivateTemplate(label, id), opts)
	}
	pub, id, privH, err := t.generatePair(op, label, gen)
	if err != nil {
		return nil, err
	}
	ec, ok := pub.(*ecdsa.PublicKey)
	if !ok {
		_ = t.ctx.DestroyObject(t.sh, privH)
		return nil, newErr(op, nil, "the token made a key that is not EC")
	}
	return &ECKeyPair{Label: label, ID: id, Public: ec, t: t, priv: privH}, nil
}

// FindECKeyPair finds exactly one EC private key (P-256 or P-384) by label, or by CKA_ID if
// label is empty (both, if both are given), and its public half: the EC public key object with
// the same CKA_ID (or else the same label). Keys made by pkcs11-tool or p11tool work, if they may
// derive. Private keys are visible only after Login.
func (t *Token) FindECKeyPair(label string, id []byte) (*ECKeyPair, error) {
	h, err := t.findPrivateKey("EC", ecClass(pkcs11.CKO_PRIVATE_KEY), label, id, nil)
	if err != nil {
		return nil, err
	}
	return t.loadECKeyPair(h)
}

// ECKeyPairs lists every EC private key on P-256 or P-384 that may derive and has a public
// half: the EC exchange keys. Others, officers' signing keys among them, are skipped
// (OtherPrivateKeys still lists them).
func (t *Token) ECKeyPairs() ([]*ECKeyPair, error) {
	hs, err := t.findObjects(append(ecClass(pkcs11.CKO_PRIVATE_KEY), pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true)))
	if err != nil {
		return nil, err
	}
	var out []*ECKeyPair
	for _, h := range hs {
		kp, err := t.loadECKeyPair(h)
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

func ecClass(class uint) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
	}
}

func (t *Token) loadECKeyPair(priv pkcs11.ObjectHandle) (*ECKeyPair, error) {
	a, err := t.attrs(priv, pkcs11.CKA_LABEL, pkcs11.CKA_ID, pkcs11.CKA_EC_PARAMS)
	if err != nil {
		return nil, tokenErr("read key attributes", ctxPlain, err)
	}
	kp := &ECKeyPair{Label: string(a[pkcs11.CKA_LABEL]), ID: a[pkcs11.CKA_ID], t: t, priv: priv}
	what := describeKey(kp.Label, kp.ID)
	if _, ok := ecCurves[string(a[pkcs11.CKA_EC_PARAMS])]; !ok {
		return nil, newErr("find key "+what, ErrKeyNotFound, "the EC key %s on token %q is not on P-256 or P-384", what, t.info.Label)
	}
	var queries [][]*pkcs11.Attribute
	if len(kp.ID) > 0 {
		queries = append(queries, append(ecClass(pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, kp.ID)))
	}
	if kp.Label != "" {
		queries = append(queries, append(ecClass(pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_LABEL, kp.Label)))
	}
	for _, q := range queries {
		hs, err := t.findObjects(q)
		if err != nil || len(hs) != 1 {
			continue
		}
		pub, err := t.objectPublic(hs[0])
		if ec, ok := pub.(*ecdsa.PublicKey); err == nil && ok && string(t.curveParams(hs[0])) == string(a[pkcs11.CKA_EC_PARAMS]) {
			kp.Public = ec
			return kp, nil
		}
	}
	return nil, newErr("find key "+what, ErrKeyNotFound,
		"the EC private key %s on token %q has no public half; import its public key with the same CKA_ID", what, t.info.Label)
}

func (t *Token) curveParams(h pkcs11.ObjectHandle) []byte {
	a, err := t.attrs(h, pkcs11.CKA_EC_PARAMS)
	if err != nil {
		return nil
	}
	return a[pkcs11.CKA_EC_PARAMS]
}

// PrivateAttributes reads the private key's security and usage attributes.
func (k *ECKeyPair) PrivateAttributes() (KeyAttributes, error) {
	return k.t.privateAttributes(k.priv)
}

// On returns the same key pair used through session s (see Sessions).
func (k *ECKeyPair) On(s *Token) *ECKeyPair {
	c := *k
	c.t = s
	return &c
}

// deriveKEK derives the KEK of an ecdh stanza on the token (FORMAT.md section 2.2.2):
// CKM_ECDH1_DERIVE with CKD_NULL and the ephemeral point into a sensitive, non-extractable
// 32-byte AES key that may only unwrap. Tokens disagree on the form of the peer's point: the raw
// point is tried first, then the point in a DER OCTET STRING, and the module remembers which one
// it took. The caller destroys the KEK.
func (k *ECKeyPair) deriveKEK(ephemeral []byte) (pkcs11.ObjectHandle, error) {
	return k.deriveWith(ephemeral, kekTemplate())
}

// deriveWith is deriveKEK into the template tmpl (an unwrapping or a wrapping KEK).
func (k *ECKeyPair) deriveWith(peerPoint []byte, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	const op = "derive a key with ECDH on token"
	der := k.t.m.ecdhPeerDER.Load()
	h, err := k.derive(peerPoint, der, tmpl)
	if err != nil && !der && isCode(err, pkcs11.CKR_ARGUMENTS_BAD, pkcs11.CKR_MECHANISM_PARAM_INVALID,
		pkcs11.CKR_DOMAIN_PARAMS_INVALID, pkcs11.CKR_DATA_INVALID, pkcs11.CKR_DATA_LEN_RANGE) {
		if h2, err2 := k.derive(peerPoint, true, tmpl); err2 == nil {
			k.t.m.ecdhPeerDER.Store(true)
			return h2, nil
		}
	}
	if err != nil {
		return 0, tokenErr(op, ctxDerive, err)
	}
	return h, nil
}

func (k *ECKeyPair) derive(point []byte, der bool, tmpl []*pkcs11.Attribute) (pkcs11.ObjectHandle, error) {
	peer := point
	if der {
		var err error
		if peer, err = asn1.Marshal(point); err != nil {
			return 0, err
		}
	}
	params := pkcs11.NewECDH1DeriveParams(pkcs11.CKD_NULL, nil, peer)
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDH1_DERIVE, params)}
	return k.t.ctx.DeriveKey(k.t.sh, mech, k.priv, tmpl)
}

// aesKeyWrapPad is CKM_AES_KEY_WRAP_PAD with its default initial value (RFC 5649).
func aesKeyWrapPad() []*pkcs11.Mechanism {
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_WRAP_PAD, nil)}
}

// UnwrapECDH opens an ecdh stanza for a user's own key (escrow.ECUnwrapper): the KEK is derived
// on the token and never leaves it; the file key is unwrapped under it into a readable session
// object, read and destroyed at once (the user's host does the bulk AES-GCM with it anyway). A
// body that does not unwrap gives an error matching ErrDecrypt (and so rsa.ErrDecryption).
func (k *ECKeyPair) UnwrapECDH(ephemeral, wrapped []byte) ([]byte, error) {
	const op = "unwrap the file key on token"
	if len(wrapped) == 0 { // miekg's UnwrapKey indexes wrapped[0]
		return nil, newErr(op, ErrDecrypt, msgNotForKey)
	}
	kek, err := k.deriveKEK(ephemeral)
	if err != nil {
		return nil, err
	}
	defer k.t.ctx.DestroyObject(k.t.sh, kek)
	h, err := k.t.ctx.UnwrapKey(k.t.sh, aesKeyWrapPad(), kek, wrapped, decryptedKeyTemplate())
	if err != nil {
		return nil, tokenErr(op, ctxKeyUnwrap, err)
	}
	defer k.t.ctx.DestroyObject(k.t.sh, h)
	v, err := k.t.readSecret(h)
	if err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	return v, nil
}

// UnwrapECDHKey opens an ecdh stanza into a sensitive session key that never reaches the host,
// for the backup authority: the KEK is derived on the token (sensitive, non-extractable), the
// file key unwrapped under it with CKM_AES_KEY_WRAP_PAD, held to the 32-byte key rule exactly as
// UnwrapOAEP, and the KEK destroyed. extractable lets the key be re-wrapped on the token
// (SecretKey.WrapOAEP, SecretKey.WrapECDH); without it, not even C_WrapKey can take it out.
func (k *ECKeyPair) UnwrapECDHKey(ephemeral, wrapped []byte, extractable bool) (*SecretKey, error) {
	const op = "unwrap key"
	kek, err := k.deriveKEK(ephemeral)
	if err != nil {
		return nil, err
	}
	defer k.t.ctx.DestroyObject(k.t.sh, kek)
	return k.t.unwrapChecked(extractable, func(extractable bool) (*SecretKey, error) {
		return k.t.unwrapOnce(op, ctxKeyUnwrap, aesKeyWrapPad(), kek, wrapped, extractable)
	})
}

// WrapECDH wraps this key on the token for an EC public key (an ecdh stanza, FORMAT.md section
// 2.2.2), so that a sensitive key is re-wrapped without its value reaching the host: an
// ephemeral key pair is generated on the token as session objects, a KEK derived from it and
// pub (sensitive, non-extractable, wrap only), the key wrapped with CKM_AES_KEY_WRAP_PAD, and the
// ephemeral private key and the KEK destroyed. It returns the ephemeral public point
// (uncompressed) and the wrapped key. The key must be extractable.
func (s *SecretKey) WrapECDH(pub *ecdsa.PublicKey) (ephemeral, wrapped []byte, err error) {
	const op = "wrap key for an EC key on token"
	if s.destroyed {
		return nil, nil, newErr(op, nil, "the key was destroyed; unwrap it again")
	}
	var params []byte
	for _, oid := range ecCurveOIDs {
		if ecCurves[string(oid)] == pub.Curve {
			params = oid
		}
	}
	if params == nil {
		return nil, nil, newErr(op, nil, "the EC key is not on P-256 or P-384")
	}
	t := s.t
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_EC_KEY_PAIR_GEN, nil)}
	pubH, privH, err := t.ctx.GenerateKeyPair(t.sh, mech, ephemeralPublicTemplate(params), ephemeralPrivateTemplate())
	if err != nil {
		return nil, nil, tokenErr(op, ctxGenerate, err)
	}
	defer t.ctx.DestroyObject(t.sh, privH)
	defer t.ctx.DestroyObject(t.sh, pubH)
	eph, err := t.objectPublic(pubH)
	if err != nil {
		return nil, nil, tokenErr(op, ctxPlain, err)
	}
	ephKey, err := eph.(*ecdsa.PublicKey).ECDH()
	if err != nil {
		return nil, nil, err
	}
	peer, err := pub.ECDH()
	if err != nil {
		return nil, nil, err
	}
	ek := &ECKeyPair{t: t, priv: privH}
	kek, err := ek.deriveWith(peer.Bytes(), wrapKEKTemplate())
	if err != nil {
		return nil, nil, err
	}
	defer t.ctx.DestroyObject(t.sh, kek)
	w, err := t.ctx.WrapKey(t.sh, aesKeyWrapPad(), kek, s.h)
	if err != nil {
		return nil, nil, tokenErr(op, ctxKeyUnwrap, err)
	}
	return ephKey.Bytes(), w, nil
}
