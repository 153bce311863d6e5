package escrow

import (
	"bytes"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
	"io"

	"github.com/p11escrow/p11escrow/escrow/internal/stream"
)

// This file is the token-side seam (FORMAT.md section 3): everything the format computes with
// the file key, done by a token that holds the key as a sensitive object, so that the backup
// authority can verify records, re-issue headers and decrypt files without the key ever being in
// its host's memory. token.SecretKey implements KeyOps and KeyOpener; this package does not
// import token.

// KeyOps is a file key that stays inside a token: it can be digested (C_DigestKey) and used for
// AES-256-GCM, but not read.
type KeyOps interface {
	// DigestSHA256 returns SHA-256(prefix || key || suffix).
	DigestSHA256(prefix, suffix []byte) ([]byte, error)
	// SealGCM returns AES-256-GCM ciphertext || 16-byte tag; with no plaintext, just the tag.
	SealGCM(nonce, aad, plaintext []byte) ([]byte, error)
}

// KeyOpener is a KeyOps that can also decrypt AES-256-GCM, releasing data only when its tag
// verifies.
type KeyOpener interface {
	KeyOps
	// OpenGCM's error for data that does not authenticate has a method AuthFailed() bool that
	// returns true (token.Error has one); any other error is the key's own failure, such as a
	// token removed mid-file, and is never reported as tampering.
	OpenGCM(nonce, aad, ciphertextAndTag []byte) ([]byte, error)
}

// authFailed reports whether err, from KeyOpener.OpenGCM, says the data does not authenticate.
func authFailed(err error) bool {
	var af interface{ AuthFailed() bool }
	return errors.As(err, &af) && af.AuthFailed()
}

// VerifyOn checks the key commitment and then the header MAC with a key held by a token. The
// token computes both values; the host compares them in constant time.
func (h *Header) VerifyOn(k KeyOps) error {
	c, err := k.DigestSHA256(CommitmentPrefix(h.ID), nil)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(c, h.Commitment[:]) != 1 {
		return &TamperedError{Reason: "the key in the stanza does not match the file's key commitment"}
	}
	tag, err := k.SealGCM(MACNonce(h.Nonce), h.macInput(), nil)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(tag, h.MAC[:]) != 1 {
		return &TamperedError{Reason: "the header MAC does not verify"}
	}
	return nil
}

// AuthorityStanza parses the record's header and checks the fields that the record repeats from
// it (file ID, authority stanza). It returns the header and the authority stanza, whose key the
// caller unwraps on its token before VerifyOn. Nothing is authenticated yet.
func (r *Record) AuthorityStanza() (*Header, *Stanza, error) {
	h, _, err := ParseHeader(bytes.NewReader(r.Header))
	if err != nil {
		return nil, nil, &RecordError{Reason: "its header: " + err.Error()}
	}
	if err := r.matchHeader(h); err != nil {
		return nil, nil, err
	}
	return h, h.stanza(RoleAuthority), nil
}

// VerifyOn is Verify for a key held by a token (verified escrow without the key in host memory):
// h, from AuthorityStanza, must open under k (commitment and MAC), and every field of the record
// must be bound to k.
func (r *Record) VerifyOn(h *Header, k KeyOps) error {
	if err := h.VerifyOn(k); err != nil {
		var tampered *TamperedError
		if errors.As(err, &tampered) {
			return &RecordError{Reason: "the wrapped key does not open the header: " + err.Error()}
		}
		return err // the token failed; that says nothing about the record
	}
	tag, err := k.SealGCM(r.BindingNonce(), r.BindingInput(), nil)
	if err != nil {
		return err
	}
	if subtle.ConstantTimeCompare(tag, r.Binding.Tag) != 1 {
		return &RecordError{Reason: "its fields were changed after it was made (the binding tag does not verify)"}
	}
	return nil
}

// ReissueOn re-issues h for a key held by a token, or in host memory: it first checks that h opens under k, then
// builds a header with the same core and the given stanzas, a fresh random header nonce, and a
// MAC computed on the token (FORMAT.md section 11).
func (h *Header) ReissueOn(k KeyOps, stanzas []*Stanza) (*Header, error) {
	if err := h.VerifyOn(k); err != nil {
		return nil, err
	}
	if len(stanzas) == 0 || len(stanzas) > maxStanzas {
		return nil, fmt.Errorf("a header holds 1 to %d stanzas, not %d", maxStanzas, len(stanzas))
	}
	for _, s := range stanzas {
		if _, err := ParseStanza(s); err != nil {
			return nil, err
		}
	}
	if err := checkRoles(stanzas); err != nil {
		return nil, err
	}
	n := &Header{ID: h.ID, Commitment: h.Commitment, Stanzas: stanzas}
	if _, err := rand.Read(n.Nonce[:]); err != nil {
		return nil, err
	}
	tag, err := k.SealGCM(MACNonce(n.Nonce), n.macInput(), nil)
	if err != nil {
		return nil, err
	}
	if len(tag) != len(n.MAC) {
		return nil, fmt.Errorf("the token returned a %d-byte GCM tag instead of %d", len(tag), len(n.MAC))
	}
	copy(n.MAC[:], tag)
	return n, nil
}

// ReissuedStanzas returns the stanzas of a header re-issued from h (FORMAT.md section 11), in
// their order: owner first, authority second, then every other stanza of h, recipient stanzas
// and stanzas of types this version does not know alike, unchanged and in their order.
func (h *Header) ReissuedStanzas(owner, authority *Stanza) []*Stanza {
	out := []*Stanza{owner, authority}
	for _, s := range h.Stanzas {
		if r := StanzaRole(s); r != RoleOwner && r != RoleAuthority {
			out = append(out, s)
		}
	}
	return out
}

// DecryptOn decrypts the payload that follows h with a key held by a token, one single-part
// AES-GCM call per chunk (FORMAT.md section 4), and writes each chunk to dst only after the token
// verified its tag. It checks h with VerifyOn first. The chunks go through the same reader as
// Decrypt's, one at a time because a token session is not safe for concurrent use, so every
// payload fails here with the same error class as on the owner's host.
func (h *Header) DecryptOn(k KeyOpener, payload io.Reader, dst io.Writer) error {
	if err := h.VerifyOn(k); err != nil {
		return err
	}
	r := stream.NewSerialReader(gcmChunks{k}, h.Core(), payload)
	defer r.Close()
	_, err := r.WriteTo(dst)
	return payloadErr(err)
}

// gcmChunks is the stream's chunk opener for a key held by a token.
type gcmChunks struct{ k KeyOpener }

// Open opens one chunk on the token. The token returns the plaintext in a buffer of its own,
// which is copied to dst and zeroed.
func (g gcmChunks) Open(dst, nonce, sealed, aad []byte) ([]byte, error) {
	pt, err := g.k.OpenGCM(nonce, aad, sealed)
	if err != nil && !authFailed(err) {
		return nil, fmt.Errorf("%w: %w", stream.ErrFault, err)
	}
	if err != nil {
		return nil, err
	}
	out := append(dst, pt...)
	clear(pt)
	return out, nil
}
