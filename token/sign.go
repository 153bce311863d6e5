package token

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/asn1"
	"fmt"
	"io"
	"math/big"
	"slices"

	"github.com/miekg/pkcs11"
)

// Signing keys are for the backup authority's officers: each approves a
// recovery by signing it on their own token. They are a separate kind of
// key from exchange keys: the private half may sign and nothing else (no
// decrypt, unwrap or derive), so an approval key can never open a file and
// an exchange key never signs.
//
// Signer signs with C_Sign (CKM_ECDSA or CKM_RSA_PKCS_PSS) on raw
// miekg/pkcs11, not with crypto11's crypto.Signer; the package doc says why.

// SignKeyType names a kind of signing key.
type SignKeyType string

// The signing key types offered.
const (
	SignECDSAP256  SignKeyType = "ecdsa-p256"   // ECDSA on P-256 with SHA-256
	SignRSAPSS2048 SignKeyType = "rsa-pss-2048" // RSA-PSS, SHA-256, MGF1-SHA256, 32-byte salt
	SignRSAPSS3072 SignKeyType = "rsa-pss-3072"
)

// SignKeyTypes lists the valid SignKeyType values, for help texts.
var SignKeyTypes = []SignKeyType{SignECDSAP256, SignRSAPSS2048, SignRSAPSS3072}

// oidP256 is the DER of the OID 1.2.840.10045.3.1.7 (prime256v1), the
// CKA_EC_PARAMS of a P-256 key.
var oidP256 = []byte{0x06, 0x08, 0x2a, 0x86, 0x48, 0xce, 0x3d, 0x03, 0x01, 0x07}

// oidP384 is CKA_EC_PARAMS for P-384 (secp384r1), the DER OID.
var oidP384 = []byte{0x06, 0x05, 0x2b, 0x81, 0x04, 0x00, 0x22}

// Signer is a signing key on the token. It implements crypto.Signer.
// Like Token, it is not safe for concurrent use.
type Signer struct {
	Label string
	ID    []byte
	pub   crypto.PublicKey // *ecdsa.PublicKey or *rsa.PublicKey
	t     *Token
	priv  pkcs11.ObjectHandle
}

// Public returns the public half: *ecdsa.PublicKey or *rsa.PublicKey.
func (s *Signer) Public() crypto.PublicKey { return s.pub }

// PrivateAttributes reads the private key's security and usage attributes,
// as KeyPair.PrivateAttributes does.
func (s *Signer) PrivateAttributes() (KeyAttributes, error) {
	return s.t.privateAttributes(s.priv)
}

// GenerateSigner creates a signing key pair of the given type with explicit
// templates. The private key is a token object that is private, sensitive,
// never extractable, and may only sign. Its CKA_ID is KeyID(public), or a
// random ID on a token that refuses to change CKA_ID (see generatePair). A
// label already used on the token is refused. With AllowDualUse, a token that refuses the sign-only template gets a key
// without that restriction (see AllowDualUse); check
// PrivateAttributes().DualUse().
func (t *Token) GenerateSigner(label string, typ SignKeyType, opts ...GenOption) (*Signer, error) {
	op := fmt.Sprintf("generate signing key %q", label)
	if !slices.Contains(SignKeyTypes, typ) {
		return nil, newErr(op, nil, "unknown signing key type %q; choose one of %v", typ, SignKeyTypes)
	}
	gen := func(id []byte) (pkcs11.ObjectHandle, pkcs11.ObjectHandle, error) {
		mech, pub, priv := signTemplates(typ, label, id)
		return t.generateKeyPair(mech, pub, priv, opts)
	}
	pub, id, privH, err := t.generatePair(op, label, gen)
	if err != nil {
		return nil, err
	}
	return &Signer{Label: label, ID: id, pub: pub, t: t, priv: privH}, nil
}

// objectPublic reads an EC (P-256 or P-384) or RSA public key from a public key object.
func (t *Token) objectPublic(h pkcs11.ObjectHandle) (crypto.PublicKey, error) {
	a, err := t.attrs(h, pkcs11.CKA_KEY_TYPE)
	if err != nil {
		return nil, err
	}
	if ulong(a[pkcs11.CKA_KEY_TYPE]) == pkcs11.CKK_RSA {
		return t.publicFromObject(h)
	}
	a, err = t.attrs(h, pkcs11.CKA_EC_PARAMS, pkcs11.CKA_EC_POINT)
	if err != nil {
		return nil, err
	}
	curve, ok := ecCurves[string(a[pkcs11.CKA_EC_PARAMS])]
	if !ok {
		return nil, fmt.Errorf("the EC key is not on P-256 or P-384")
	}
	return parseECPoint(curve, a[pkcs11.CKA_EC_POINT])
}

// ecCurves are the curves p11escrow uses, by their CKA_EC_PARAMS (a DER OID).
var ecCurves = map[string]elliptic.Curve{string(oidP256): elliptic.P256(), string(oidP384): elliptic.P384()}

// parseECPoint accepts CKA_EC_POINT as a DER OCTET STRING (the standard,
// and SoftHSM2's form) or as the raw uncompressed point, since tokens
// disagree.
func parseECPoint(curve elliptic.Curve, v []byte) (*ecdsa.PublicKey, error) {
	point := v
	var inner []byte
	if rest, err := asn1.Unmarshal(v, &inner); err == nil && len(rest) == 0 {
		point = inner
	}
	size := (curve.Params().BitSize + 7) / 8
	name := curve.Params().Name
	if len(point) != 1+2*size || point[0] != 4 {
		return nil, fmt.Errorf("the EC public key is not an uncompressed %s point", name)
	}
	pub := &ecdsa.PublicKey{Curve: curve,
		X: new(big.Int).SetBytes(point[1 : 1+size]), Y: new(big.Int).SetBytes(point[1+size:])}
	if !curve.IsOnCurve(pub.X, pub.Y) { //nolint:staticcheck // the point comes from a token; check it
		return nil, fmt.Errorf("the EC public key is not on %s", name)
	}
	return pub, nil
}

// FindSigner finds exactly one signing private key (CKA_SIGN true, EC or
// RSA) by label, and its public half from the public key object with the
// same CKA_ID (or label). Private keys are visible only after Login.
func (t *Token) FindSigner(label string) (*Signer, error) {
	op := fmt.Sprintf("find signing key %q", label)
	if label == "" {
		return nil, newErr(op, nil, "no key label was given; name the key")
	}
	hs, err := t.findObjects([]*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
	})
	switch {
	case err != nil:
		return nil, err
	case len(hs) == 0 && t.NeedsLogin():
		return nil, newErr(op, ErrNotLoggedIn, "no signing key labelled %q is visible on token %q without a login; log in first", label, t.info.Label)
	case len(hs) == 0:
		return nil, newErr(op, ErrKeyNotFound, "token %q has no signing key labelled %q; check the name or generate one with `key generate --usage sign`", t.info.Label, label)
	case len(hs) > 1:
		return nil, newErr(op, ErrAmbiguous, "token %q has %d signing keys labelled %q; give them distinct labels", t.info.Label, len(hs), label)
	}
	a, err := t.attrs(hs[0], pkcs11.CKA_ID)
	if err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	pub, err := t.findSignPublic(label, a[pkcs11.CKA_ID])
	if ec, ok := pub.(*ecdsa.PublicKey); ok && ec.Curve != elliptic.P256() {
		err = fmt.Errorf("an EC signing key must be on P-256")
	}
	if err != nil {
		return nil, newErr(op, ErrKeyNotFound, "the signing key %q on token %q has no usable public half (%v)", label, t.info.Label, err)
	}
	return &Signer{Label: label, ID: a[pkcs11.CKA_ID], pub: pub, t: t, priv: hs[0]}, nil
}

func (t *Token) findSignPublic(label string, id []byte) (crypto.PublicKey, error) {
	q := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}
	if len(id) > 0 {
		q = append(q, pkcs11.NewAttribute(pkcs11.CKA_ID, id))
	}
	hs, err := t.findObjects(q)
	if err != nil {
		return nil, err
	}
	if len(hs) != 1 {
		return nil, fmt.Errorf("found %d public key objects for it", len(hs))
	}
	return t.objectPublic(hs[0])
}

// Sign signs a SHA-256 digest on the token. For an ECDSA key it runs
// CKM_ECDSA and converts the token's raw r||s into the ASN.1 form that
// crypto/ecdsa verifies; for an RSA key opts must be *rsa.PSSOptions and it
// runs CKM_RSA_PKCS_PSS with MGF1-SHA256 and a 32-byte salt.
func (s *Signer) Sign(_ io.Reader, digest []byte, opts crypto.SignerOpts) ([]byte, error) {
	const op = "sign on token"
	if opts.HashFunc() != crypto.SHA256 || len(digest) != sha256.Size {
		return nil, newErr(op, nil, "only SHA-256 digests are signed; this is a p11escrow bug")
	}
	var mech *pkcs11.Mechanism
	switch s.pub.(type) {
	case *ecdsa.PublicKey:
		mech = pkcs11.NewMechanism(pkcs11.CKM_ECDSA, nil)
	case *rsa.PublicKey:
		pss, ok := opts.(*rsa.PSSOptions)
		if !ok || (pss.SaltLength != rsa.PSSSaltLengthEqualsHash && pss.SaltLength != sha256.Size) {
			return nil, newErr(op, nil, "an RSA signing key signs only RSA-PSS with a 32-byte salt; this is a p11escrow bug")
		}
		mech = pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_PSS, pkcs11.NewPSSParams(pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256, sha256.Size))
	}
	if err := s.t.ctx.SignInit(s.t.sh, []*pkcs11.Mechanism{mech}, s.priv); err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	sig, err := s.t.ctx.Sign(s.t.sh, digest)
	if err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	if _, ok := s.pub.(*ecdsa.PublicKey); ok {
		return ecdsaASN1(sig)
	}
	return sig, nil
}

// ecdsaASN1 turns PKCS#11's r||s (each the size of the group order) into
// the DER SEQUENCE{r, s} of RFC 3279.
func ecdsaASN1(raw []byte) ([]byte, error) {
	if len(raw) != 64 {
		return nil, newErr("sign on token", nil, "the token returned a %d-byte ECDSA signature instead of 64; the module is faulty", len(raw))
	}
	return asn1.Marshal(struct{ R, S *big.Int }{new(big.Int).SetBytes(raw[:32]), new(big.Int).SetBytes(raw[32:])})
}
