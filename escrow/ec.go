package escrow

import (
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
)

// This file is the ecdh stanza type: the only code that knows its arguments (FORMAT.md
// section 2.2.2): "-> ecdh CURVE EPHEMERAL TAG ROLE", with K wrapped by AES key wrap with
// padding (RFC 5649) under the last 32 bytes of the ECDH x-coordinate as body.

const typeECDH = "ecdh"

// ecdhBodySize is the length of every ecdh stanza body: a 32-byte key wrapped with RFC 5649.
const ecdhBodySize = fileKeySize + 8

// KEKSize is the length of the key-encryption key derived from an ECDH shared secret.
const KEKSize = 32

// ecCurves are the curves of the format, by the name a stanza writes.
var ecCurves = map[string]ecdh.Curve{"p256": ecdh.P256(), "p384": ecdh.P384()}

// CurveName returns the name the format gives an EC public key's curve ("p256" or "p384").
func CurveName(pub *ecdsa.PublicKey) (string, error) {
	switch pub.Curve {
	case elliptic.P256():
		return "p256", nil
	case elliptic.P384():
		return "p384", nil
	}
	return "", fmt.Errorf("EC keys on %s are not supported; use P-256 or P-384", pub.Curve.Params().Name)
}

// ECDHKEK returns the key-encryption key of an ecdh stanza from the shared x-coordinate z: its
// last 32 bytes, which is what a token keeps when CKM_ECDH1_DERIVE with CKD_NULL derives a
// 32-byte AES key (FORMAT.md section 2.2.2). The result aliases z.
func ECDHKEK(z []byte) []byte { return z[len(z)-KEKSize:] }

// ECStanza is a parsed ecdh stanza. It implements TypedStanza.
type ECStanza struct {
	Curve     string // "p256" or "p384"
	Ephemeral []byte // the ephemeral public key, an uncompressed point on Curve
	Wrapped   []byte // K wrapped with RFC 5649 under the KEK, the stanza body
	tag       string
	role      Role
}

// Role returns the stanza's role.
func (e *ECStanza) Role() Role { return e.role }

// Tag returns the key tag of the EC key the stanza is addressed to.
func (e *ECStanza) Tag() string { return e.tag }

// ParseECStanza parses and checks an ecdh stanza: its arguments and its body length.
func ParseECStanza(s *Stanza) (*ECStanza, error) {
	e, err := parseECArgs(s)
	if err != nil {
		return nil, err
	}
	if err := e.checkBody(); err != nil {
		return nil, err
	}
	return e, nil
}

// parseECArgs parses an ecdh stanza's arguments, without checking its body. The ephemeral point
// must be on the curve, so that no invalid-curve point ever reaches a token.
func parseECArgs(s *Stanza) (*ECStanza, error) {
	if s.Type != typeECDH {
		return nil, fmt.Errorf("a %q stanza is not an ecdh stanza", s.Type)
	}
	if len(s.Args) != 4 {
		return nil, errors.New("an ecdh stanza takes a curve, an ephemeral point, a key tag and a role")
	}
	curve, ok := ecCurves[s.Args[0]]
	if !ok {
		return nil, fmt.Errorf("unknown ecdh curve %q", s.Args[0])
	}
	point, err := b64.DecodeString(s.Args[1])
	if err != nil || b64.EncodeToString(point) != s.Args[1] {
		return nil, errors.New("the ephemeral point is not canonical base64")
	}
	if _, err := curve.NewPublicKey(point); err != nil {
		return nil, fmt.Errorf("the ephemeral point is not an uncompressed point on %s", s.Args[0])
	}
	tag, err := parseTag(s.Args[2])
	if err != nil {
		return nil, err
	}
	role, err := parseRole(s.Args[3])
	if err != nil {
		return nil, err
	}
	return &ECStanza{Curve: s.Args[0], Ephemeral: point, Wrapped: s.Body, tag: tag, role: role}, nil
}

func (e *ECStanza) checkBody() error {
	if len(e.Wrapped) != ecdhBodySize {
		return fmt.Errorf("an ecdh body of %d bytes is not a wrapped 32-byte key (%d bytes)", len(e.Wrapped), ecdhBodySize)
	}
	return nil
}

// NewECStanza builds an ecdh stanza for a file key wrapped (on a token with C_WrapKey, or on the
// host) for pub under the KEK derived with the ephemeral point.
func NewECStanza(pub *ecdsa.PublicKey, ephemeral []byte, role Role, wrapped []byte) (*Stanza, error) {
	curve, err := CurveName(pub)
	if err != nil {
		return nil, err
	}
	fpr, err := FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	s := &Stanza{Type: typeECDH, Args: []string{curve, b64.EncodeToString(ephemeral), fpr.Tag(), string(role)}, Body: wrapped}
	if _, err := ParseECStanza(s); err != nil {
		return nil, err
	}
	return s, nil
}

// ECRecipient wraps file keys for one EC public key, with an ephemeral key made on the host.
type ECRecipient struct {
	Public *ecdsa.PublicKey
	Role   Role
}

// Wrap wraps key for the recipient: a fresh ephemeral key pair, ECDH with the recipient's key,
// and RFC 5649 under the KEK. The ephemeral private key is used once and dropped.
func (r *ECRecipient) Wrap(key FileKey) (*Stanza, error) {
	if _, err := CurveName(r.Public); err != nil {
		return nil, err
	}
	pub, err := r.Public.ECDH()
	if err != nil {
		return nil, err
	}
	eph, err := pub.Curve().GenerateKey(rand.Reader)
	if err != nil {
		return nil, err
	}
	z, err := eph.ECDH(pub)
	if err != nil {
		return nil, err
	}
	defer clear(z)
	v, err := key.Value()
	if err != nil {
		return nil, err
	}
	defer clear(v)
	body, err := WrapKeyPadded(ECDHKEK(z), v)
	if err != nil {
		return nil, err
	}
	return NewECStanza(r.Public, eph.PublicKey().Bytes(), r.Role, body)
}

// ECUnwrapper is an EC private key that opens ecdh stanzas: it derives the KEK with the
// ephemeral point and unwraps the body under it. token.ECKeyPair implements it on a token, where
// the KEK is a sensitive object that never leaves it. When the body does not unwrap, the error
// must match rsa.ErrDecryption, as for a Decrypter: it is the one sign of a stanza that does not
// open, and any other error is the token's and is reported as it is.
type ECUnwrapper interface {
	UnwrapECDH(ephemeral, wrapped []byte) ([]byte, error)
}

// ECIdentity opens the ecdh stanzas addressed to one EC key pair.
type ECIdentity struct {
	Public *ecdsa.PublicKey
	Key    ECUnwrapper
}

// Unwrap unwraps the first stanza addressed to this key pair. It returns ErrIncorrectIdentity if
// none is, and the last failure if every addressed stanza failed (FORMAT.md section 2.2).
func (id *ECIdentity) Unwrap(stanzas []*Stanza) ([]byte, error) {
	curve, err := CurveName(id.Public)
	if err != nil {
		return nil, err
	}
	fpr, err := FingerprintOf(id.Public)
	if err != nil {
		return nil, err
	}
	last := error(ErrIncorrectIdentity)
	for _, s := range stanzas {
		if s.Type != typeECDH {
			continue
		}
		e, err := parseECArgs(s) // checked by the parser, but a Header can be built by hand
		if err != nil || e.Curve != curve || e.Tag() != fpr.Tag() {
			continue
		}
		if e.checkBody() != nil {
			last = &TamperedError{Reason: "the stanza for this key has the wrong length"}
			continue
		}
		key, err := id.Key.UnwrapECDH(e.Ephemeral, e.Wrapped)
		if errors.Is(err, rsa.ErrDecryption) {
			last = &TamperedError{Reason: "the stanza addressed to key " + fpr.Tag() + " does not unwrap"}
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("key %s: %w", fpr.Tag(), err) // a token error: stop, never retry
		}
		if len(key) != fileKeySize {
			clear(key)
			last = &TamperedError{Reason: "the stanza for this key does not hold a 32-byte key"}
			continue
		}
		return key, nil
	}
	return nil, last
}

// ECHostKey is an EC private key held on the host, for test keys and the by-hand vectors; keys
// that matter live on tokens (token.ECKeyPair).
type ECHostKey struct {
	Private *ecdh.PrivateKey
}

// UnwrapECDH implements ECUnwrapper on the host.
func (k ECHostKey) UnwrapECDH(ephemeral, wrapped []byte) ([]byte, error) {
	peer, err := k.Private.Curve().NewPublicKey(ephemeral)
	if err != nil {
		return nil, err
	}
	z, err := k.Private.ECDH(peer)
	if err != nil {
		return nil, err
	}
	defer clear(z)
	key, err := UnwrapKeyPadded(ECDHKEK(z), wrapped)
	if err != nil {
		return nil, fmt.Errorf("%v: %w", err, rsa.ErrDecryption)
	}
	return key, nil
}
