package escrow

import (
	"crypto"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"fmt"
)

const typeRSAOAEP = "rsa-oaep"

// Role says why a stanza is in the header (FORMAT.md section 2.2).
type Role string

// The stanza roles.
const (
	RoleOwner     Role = "owner"
	RoleAuthority Role = "authority"
	RoleRecipient Role = "recipient"
)

// fileKeySize is the length of every file key: AES-256.
const fileKeySize = 32

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

// Fingerprint is the SHA-256 of a public key's PKIX DER encoding. Its first four bytes are the
// key tag written in stanzas.
type Fingerprint [32]byte

// FingerprintOf computes a public key's fingerprint.
func FingerprintOf(pub *rsa.PublicKey) (Fingerprint, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Fingerprint{}, err
	}
	return sha256.Sum256(der), nil
}

// String returns the fingerprint as 64 hex digits.
func (f Fingerprint) String() string { return hex.EncodeToString(f[:]) }

// Tag returns the 8-hex-digit key tag (FORMAT.md section 2.2).
func (f Fingerprint) Tag() string { return hex.EncodeToString(f[:4]) }

// checkStanza validates the arguments and body length of a known stanza type.
func checkStanza(s *Stanza) error {
	if err := checkStanzaArgs(s); err != nil {
		return err
	}
	if s.Type == typeRSAOAEP && !rsaBodySizes[len(s.Body)] {
		return fmt.Errorf("an rsa-oaep body of %d bytes is not an RSA-2048, 3072 or 4096 ciphertext", len(s.Body))
	}
	return nil
}

// checkStanzaArgs validates the arguments of a known stanza type.
func checkStanzaArgs(s *Stanza) error {
	if s.Type != typeRSAOAEP {
		return nil // unknown types are parsed, then skipped by every identity
	}
	if len(s.Args) != 3 {
		return errors.New("an rsa-oaep stanza takes a hash, a key tag and a role")
	}
	if _, err := ParseOAEPHash(s.Args[0]); err != nil {
		return err
	}
	if t := s.Args[1]; len(t) != 8 || !isLowerHex(t) {
		return fmt.Errorf("key tag %q is not 8 lower-case hex digits", t)
	}
	switch Role(s.Args[2]) {
	case RoleOwner, RoleAuthority, RoleRecipient:
	default:
		return fmt.Errorf("unknown stanza role %q", s.Args[2])
	}
	return nil
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
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
	name, err := OAEPHash(r.Hash)
	if err != nil {
		return nil, err
	}
	fpr, err := FingerprintOf(r.Public)
	if err != nil {
		return nil, err
	}
	body, err := key.WrapOAEP(r.Public, r.Hash)
	if err != nil {
		return nil, fmt.Errorf("wrapping the file key for %s %s: %w", r.Role, fpr.Tag(), err)
	}
	return &Stanza{Type: typeRSAOAEP, Args: []string{name, fpr.Tag(), string(r.Role)}, Body: body}, nil
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
		if s.Type != typeRSAOAEP || s.Args[1] != fpr.Tag() {
			continue
		}
		if len(s.Body) != id.Public.Size() {
			last = &TamperedError{Reason: "the stanza for this key has the wrong length"}
			continue
		}
		hash, _ := ParseOAEPHash(s.Args[0]) // checked by the parser
		key, err := id.Key.DecryptOAEP(hash, s.Body)
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

// StanzaRole returns the role of an rsa-oaep stanza, or "" for other types.
func StanzaRole(s *Stanza) Role {
	if s.Type != typeRSAOAEP {
		return ""
	}
	return Role(s.Args[2])
}
