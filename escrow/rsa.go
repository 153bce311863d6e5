package escrow

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"fmt"
)

// This file is the rsa-oaep stanza type: the only code that knows its arguments
// (FORMAT.md section 2.2): "-> rsa-oaep HASH TAG ROLE", with an RSA-OAEP ciphertext as body.

const typeRSAOAEP = "rsa-oaep"

// rsaBodySizes are the accepted modulus sizes, in bytes, and so the exact stanza body lengths.
var rsaBodySizes = map[int]bool{256: true, 384: true, 512: true}

// OAEPHash names an OAEP hash as it appears in a stanza.
func OAEPHash(h crypto.Hash) (string, error) {
	switch h {
	case crypto.SHA1:
		return "sha1", nil
	case crypto.SHA256:
		return "sha256", nil
	}
	return "", fmt.Errorf("OAEP hash %v is not part of the format", h)
}

// ParseOAEPHash is the inverse of OAEPHash.
func ParseOAEPHash(s string) (crypto.Hash, error) {
	switch s {
	case "sha1":
		return crypto.SHA1, nil
	case "sha256":
		return crypto.SHA256, nil
	}
	return 0, fmt.Errorf("unknown OAEP hash %q", s)
}

// RSAStanza is a parsed rsa-oaep stanza. It implements TypedStanza.
type RSAStanza struct {
	Hash    crypto.Hash // the OAEP hash, and MGF1's
	Wrapped []byte      // the OAEP ciphertext of the file key, the stanza body
	tag     string
	role    Role
}

// Role returns the stanza's role.
func (r *RSAStanza) Role() Role { return r.role }

// Tag returns the key tag of the RSA key the stanza is addressed to.
func (r *RSAStanza) Tag() string { return r.tag }

// HashName returns the OAEP hash as the stanza writes it ("sha1" or "sha256").
func (r *RSAStanza) HashName() string {
	name, _ := OAEPHash(r.Hash) // parsed from, or checked against, the same names
	return name
}

// ParseRSAStanza parses and checks an rsa-oaep stanza: its arguments and its body length.
func ParseRSAStanza(s *Stanza) (*RSAStanza, error) {
	r, err := parseRSAArgs(s)
	if err != nil {
		return nil, err
	}
	if err := r.checkBody(); err != nil {
		return nil, err
	}
	return r, nil
}

// parseRSAArgs parses an rsa-oaep stanza's arguments, without checking its body.
func parseRSAArgs(s *Stanza) (*RSAStanza, error) {
	if s.Type != typeRSAOAEP {
		return nil, fmt.Errorf("a %q stanza is not an rsa-oaep stanza", s.Type)
	}
	if len(s.Args) != 3 {
		return nil, errors.New("an rsa-oaep stanza takes a hash, a key tag and a role")
	}
	hash, err := ParseOAEPHash(s.Args[0])
	if err != nil {
		return nil, err
	}
	tag, err := parseTag(s.Args[1])
	if err != nil {
		return nil, err
	}
	role, err := parseRole(s.Args[2])
	if err != nil {
		return nil, err
	}
	return &RSAStanza{Hash: hash, Wrapped: s.Body, tag: tag, role: role}, nil
}

func (r *RSAStanza) checkBody() error {
	if !rsaBodySizes[len(r.Wrapped)] {
		return fmt.Errorf("an rsa-oaep body of %d bytes is not an RSA-2048, 3072 or 4096 ciphertext", len(r.Wrapped))
	}
	return nil
}

// NewRSAStanza builds an rsa-oaep stanza for a file key wrapped (on a token with C_WrapKey, or
// on the host) for pub with the OAEP hash and role.
func NewRSAStanza(pub *rsa.PublicKey, hash crypto.Hash, role Role, wrapped []byte) (*Stanza, error) {
	name, err := OAEPHash(hash)
	if err != nil {
		return nil, err
	}
	fpr, err := FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	if len(wrapped) != pub.Size() {
		return nil, fmt.Errorf("the wrapped key is %d bytes, not the %d of an RSA-%d ciphertext", len(wrapped), pub.Size(), pub.N.BitLen())
	}
	s := &Stanza{Type: typeRSAOAEP, Args: []string{name, fpr.Tag(), string(role)}, Body: wrapped}
	if _, err := ParseRSAStanza(s); err != nil {
		return nil, err
	}
	return s, nil
}

// RSARecipient wraps file keys with RSA-OAEP for one public key.
type RSARecipient struct {
	Public *rsa.PublicKey
	Hash   crypto.Hash // crypto.SHA1 unless the recipient's token is known to do SHA-256
	Role   Role
}

// Wrap wraps key for the recipient, on the token where the key lives there.
func (r *RSARecipient) Wrap(key FileKey) (*Stanza, error) {
	if !rsaBodySizes[r.Public.Size()] {
		return nil, fmt.Errorf("RSA-%d keys are not supported; use 2048, 3072 or 4096 bits", r.Public.N.BitLen())
	}
	if _, err := OAEPHash(r.Hash); err != nil {
		return nil, err
	}
	fpr, err := FingerprintOf(r.Public)
	if err != nil {
		return nil, err
	}
	body, err := wrapOAEP(key, r.Public, r.Hash)
	if err != nil {
		return nil, fmt.Errorf("wrapping the file key for %s %s: %w", r.Role, fpr.Tag(), err)
	}
	return NewRSAStanza(r.Public, r.Hash, r.Role, body)
}

// wrapOAEP wraps key for pub where key is held if it can be wrapped there (OAEPWrapper), and on
// the host otherwise.
func wrapOAEP(key FileKey, pub *rsa.PublicKey, hash crypto.Hash) ([]byte, error) {
	if w, ok := key.(OAEPWrapper); ok {
		body, err := w.WrapOAEP(pub, hash)
		if !errors.Is(err, errors.ErrUnsupported) {
			return body, err
		}
	}
	v, err := key.Value()
	if err != nil {
		return nil, err
	}
	defer clear(v)
	return rsa.EncryptOAEP(hash.New(), rand.Reader, pub, v, nil)
}

// Decrypter is an RSA private key that decrypts OAEP. token.KeyPair implements it on a token.
// When the ciphertext does not decrypt under the key, the error must match rsa.ErrDecryption,
// so that a corrupt stanza is reported as tampering and not as a token failure.
type Decrypter interface {
	DecryptOAEP(hash crypto.Hash, ciphertext []byte) ([]byte, error)
}

// RSAIdentity opens the rsa-oaep stanzas addressed to one key pair.
type RSAIdentity struct {
	Public *rsa.PublicKey
	Key    Decrypter
}

// Unwrap decrypts the first stanza addressed to this key pair. It returns ErrIncorrectIdentity
// if none is, and the last decryption error if every addressed stanza failed.
func (id *RSAIdentity) Unwrap(stanzas []*Stanza) ([]byte, error) {
	fpr, err := FingerprintOf(id.Public)
	if err != nil {
		return nil, err
	}
	last := error(ErrIncorrectIdentity)
	for _, s := range stanzas {
		if s.Type != typeRSAOAEP {
			continue
		}
		r, err := parseRSAArgs(s) // checked by the parser, but a Header can be built by hand
		if err != nil || r.Tag() != fpr.Tag() {
			continue
		}
		if len(r.Wrapped) != id.Public.Size() {
			last = &TamperedError{Reason: "the stanza for this key has the wrong length"}
			continue
		}
		key, err := id.Key.DecryptOAEP(r.Hash, r.Wrapped)
		if errors.Is(err, rsa.ErrDecryption) {
			last = &TamperedError{Reason: "the stanza addressed to key " + fpr.Tag() + " does not decrypt"}
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
