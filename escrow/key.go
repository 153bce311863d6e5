package escrow

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/subtle"
)

// FileKey is a fresh per-file session key, made by the owner's token. token.FileKey implements
// it: the key is a session object there, and WrapOAEP runs C_WrapKey on the token.
type FileKey interface {
	// Value returns a copy of the 32 key bytes, for host-side AES-GCM. The caller zeroes it.
	Value() ([]byte, error)
	// WrapOAEP encrypts the key to pub with RSA-OAEP (MGF1 with the same hash, empty label).
	WrapOAEP(pub *rsa.PublicKey, hash crypto.Hash) ([]byte, error)
}

// Recipient wraps a file key into a stanza.
type Recipient interface {
	Wrap(key FileKey) (*Stanza, error)
}

// Identity unwraps the file key from the stanza addressed to it. It returns ErrIncorrectIdentity
// when no stanza is; the caller checks the result against the header's commitment.
type Identity interface {
	Unwrap(stanzas []*Stanza) ([]byte, error)
}

// NewFileID draws a random file ID.
func NewFileID() FileID {
	var id FileID
	rand.Read(id[:])
	return id
}

// Nonce suffixes: the last byte of every GCM nonce under a file key (FORMAT.md sections 3-5).
const (
	nonceHeader = 0x02
	nonceRecord = 0x03
)

const commitPrefix = "p11escrow/v1 commit "

// CommitmentPrefix returns the bytes hashed before the key: "p11escrow/v1 commit " || file ID.
// A token computes the commitment as C_DigestUpdate(prefix), C_DigestKey(K), C_DigestFinal.
func CommitmentPrefix(id FileID) []byte {
	return append([]byte(commitPrefix), id[:]...)
}

// Commitment computes the key commitment (FORMAT.md section 3.1) on the host.
func Commitment(id FileID, key []byte) [32]byte {
	h := sha256.New()
	h.Write(CommitmentPrefix(id))
	h.Write(key)
	var c [32]byte
	h.Sum(c[:0])
	return c
}

// MACNonce returns the full 12-byte GCM nonce for a header MAC with the given random part.
func MACNonce(random [11]byte) []byte { return append(random[:], nonceHeader) }

// MACInput returns the additional data of the header MAC: the header through "---".
func (h *Header) MACInput() []byte { return h.macInput() }

// gmac is AES-256-GCM over an empty plaintext: the tag authenticates aad under key and nonce.
// A token computes the same tag with C_EncryptInit(CKM_AES_GCM) and C_Encrypt of zero bytes.
func gmac(aead cipher.AEAD, nonce, aad []byte) [16]byte {
	var tag [16]byte
	copy(tag[:], aead.Seal(nil, nonce, nil, aad))
	return tag
}

// newAEAD returns AES-256-GCM under key.
func newAEAD(key []byte) cipher.AEAD {
	block, err := aes.NewCipher(key)
	if err != nil {
		panic("escrow: file key is not 32 bytes") // every caller checks the length first
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// seal computes the commitment, a fresh nonce and the MAC for h under key.
func (h *Header) seal(aead cipher.AEAD, key []byte) {
	h.Commitment = Commitment(h.ID, key)
	rand.Read(h.Nonce[:])
	h.MAC = gmac(aead, MACNonce(h.Nonce), h.macInput())
}

// verify checks the commitment, then the MAC, both in constant time.
func (h *Header) verify(aead cipher.AEAD, key []byte) error {
	c := Commitment(h.ID, key)
	if subtle.ConstantTimeCompare(c[:], h.Commitment[:]) != 1 {
		return &TamperedError{Reason: "the key in your stanza does not match the file's key commitment"}
	}
	nonce := MACNonce(h.Nonce)
	if _, err := aead.Open(nil, nonce, h.MAC[:], h.macInput()); err != nil {
		return &TamperedError{Reason: "the header MAC does not verify"}
	}
	return nil
}

// Reissue replaces the stanzas of an authenticated header and re-MACs it with key, which the
// caller has already checked against the header. The payload stays valid because it binds only
// the core (FORMAT.md section 2.1).
func (h *Header) Reissue(key []byte, stanzas []*Stanza) (*Header, error) {
	aead := newAEAD(key)
	if err := h.verify(aead, key); err != nil {
		return nil, err
	}
	n := &Header{ID: h.ID, Commitment: h.Commitment, Stanzas: stanzas}
	rand.Read(n.Nonce[:])
	n.MAC = gmac(aead, MACNonce(n.Nonce), n.macInput())
	return n, nil
}
