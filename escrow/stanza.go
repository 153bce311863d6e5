package escrow

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"fmt"
)

// TypedStanza is a stanza of a type this version knows, parsed and checked by its type's own
// file (rsa.go for rsa-oaep, ec.go for ecdh), as age gives each recipient type a file of its own. Every type says
// whom a stanza is for and why, so that the header's role rule (one owner, at most one
// authority), tag matching and NoIdentityError work for any type.
type TypedStanza interface {
	// Role says why the stanza is in the header (FORMAT.md section 2.2).
	Role() Role
	// Tag is the key tag, the first 4 bytes of the fingerprint, of the key it is addressed to.
	Tag() string
}

// typedStanza is what a stanza type's parser returns: a TypedStanza that can also check its
// body, once the header parser has read it.
type typedStanza interface {
	TypedStanza
	checkBody() error
}

// stanzaTypes maps each known stanza type to the parser of its arguments. The parser does not
// look at the body, so that a bad stanza line is reported before the body is read (FORMAT.md
// section 8.1). Stanzas of other types are kept, re-issued unchanged and skipped by every
// identity.
var stanzaTypes = map[string]func(*Stanza) (typedStanza, error){
	typeRSAOAEP: func(s *Stanza) (typedStanza, error) {
		r, err := parseRSAArgs(s)
		if err != nil {
			return nil, err
		}
		return r, nil
	},
	typeECDH: func(s *Stanza) (typedStanza, error) {
		e, err := parseECArgs(s)
		if err != nil {
			return nil, err
		}
		return e, nil
	},
}

// parseArgs parses the arguments of a known stanza type. It returns nil, nil for an unknown type.
func parseArgs(s *Stanza) (typedStanza, error) {
	parse := stanzaTypes[s.Type]
	if parse == nil {
		return nil, nil
	}
	return parse(s)
}

// ParseStanza parses and checks a stanza of a known type into its typed value (such as an
// *RSAStanza). It returns nil, nil for a type this version does not know.
func ParseStanza(s *Stanza) (TypedStanza, error) {
	t, err := parseArgs(s)
	if t == nil || err != nil {
		return nil, err
	}
	if err := t.checkBody(); err != nil {
		return nil, err
	}
	return t, nil
}

// StanzaRole returns the role of a stanza of a known type, or "" for an unknown type or a
// stanza that does not parse.
func StanzaRole(s *Stanza) Role {
	if t, err := parseArgs(s); err == nil && t != nil {
		return t.Role()
	}
	return ""
}

// StanzaTag returns the key tag of a stanza of a known type, or "" for an unknown type or a
// stanza that does not parse.
func StanzaTag(s *Stanza) string {
	if t, err := parseArgs(s); err == nil && t != nil {
		return t.Tag()
	}
	return ""
}

// StanzaTags returns the key tags of the stanzas of known types, in order: the keys a header
// is addressed to, as NoIdentityError lists them.
func StanzaTags(stanzas []*Stanza) []string {
	var tags []string
	for _, s := range stanzas {
		if t := StanzaTag(s); t != "" {
			tags = append(tags, t)
		}
	}
	return tags
}

// checkRoles applies the role rule of FORMAT.md section 2.2 to stanzas of every known type: at
// most one owner and one authority stanza.
func checkRoles(stanzas []*Stanza) error {
	seen := map[Role]bool{}
	for _, s := range stanzas {
		role := StanzaRole(s)
		if role == "" {
			continue
		}
		if role != RoleRecipient && seen[role] {
			return &HeaderError{Reason: fmt.Sprintf("more than one %s stanza", role)}
		}
		seen[role] = true
	}
	return nil
}

// parseRole checks a stanza role argument, for every stanza type.
func parseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleOwner, RoleAuthority, RoleRecipient:
		return r, nil
	}
	return "", fmt.Errorf("unknown stanza role %q", s)
}

// parseTag checks a key tag argument, for every stanza type.
func parseTag(t string) (string, error) {
	if len(t) != 8 || !isLowerHex(t) {
		return "", fmt.Errorf("key tag %q is not 8 lower-case hex digits", t)
	}
	return t, nil
}

func isLowerHex(s string) bool {
	for _, c := range s {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}

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

// Fingerprint is the SHA-256 of a public key's PKIX DER encoding. Its first four bytes are the
// key tag written in stanzas; officers' keys are named by it too.
type Fingerprint [32]byte

// FingerprintOf computes the fingerprint of any public key that PKIX can encode (RSA, ECDSA,
// Ed25519).
func FingerprintOf(pub crypto.PublicKey) (Fingerprint, error) {
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
