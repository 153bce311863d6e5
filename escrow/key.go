package escrow

import (
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"fmt"
)

// FileKey is a fresh per-file session key, made by the owner's token. token.FileKey implements
// it: the key is a session object there, which also implements OAEPWrapper.
type FileKey interface {
	// Value returns a copy of the 32 key bytes, for host-side AES-GCM. The caller zeroes it.
	Value() ([]byte, error)
}

// OAEPWrapper is a FileKey that can wrap itself with RSA-OAEP where it is held: token.FileKey
// runs C_WrapKey on the token, so that the owner's token, not this host, makes the stanza.
//
// It is optional. A FileKey without it is wrapped on the host, and so is one whose WrapOAEP
// returns an error matching errors.ErrUnsupported: a key drawn with C_GenerateRandom on a token
// without AES, or a token without OAEP for the recipient's hash (SoftHSM2 and SHA-256). On
// those paths the key is readable by the host already (the host does the bulk AES-GCM).
type OAEPWrapper interface {
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

// memKey is a file key in host memory behind the KeyOpener interface that a token's key
// implements, so that the owner's host and the authority's token check headers and records
// through the same code (Header.VerifyOn, Record.VerifyOn). It does not own key: the caller
// zeroes it.
type memKey struct {
	key  []byte
	aead cipher.AEAD
}

// newMemKey applies the 32-byte key rule (FORMAT.md section 2.2) and returns the key.
func newMemKey(key []byte) (*memKey, error) {
	if len(key) != fileKeySize {
		return nil, &TamperedError{Reason: "the unwrapped key is not 32 bytes"}
	}
	return &memKey{key: key, aead: newAEAD(key)}, nil
}

// DigestSHA256 returns SHA-256(prefix || key || suffix), as C_DigestKey does on a token.
func (k *memKey) DigestSHA256(prefix, suffix []byte) ([]byte, error) {
	h := sha256.New()
	h.Write(prefix)
	h.Write(k.key)
	h.Write(suffix)
	return h.Sum(nil), nil
}

// SealGCM returns AES-256-GCM ciphertext || tag, as C_Encrypt(CKM_AES_GCM) does on a token.
func (k *memKey) SealGCM(nonce, aad, plaintext []byte) ([]byte, error) {
	if len(nonce) != k.aead.NonceSize() {
		return nil, fmt.Errorf("escrow: a %d-byte GCM nonce; this is a bug", len(nonce))
	}
	return k.aead.Seal(nil, nonce, plaintext, aad), nil
}

// OpenGCM reverses SealGCM, releasing nothing unless the tag verifies.
func (k *memKey) OpenGCM(nonce, aad, ciphertextAndTag []byte) ([]byte, error) {
	if len(nonce) != k.aead.NonceSize() {
		return nil, fmt.Errorf("escrow: a %d-byte GCM nonce; this is a bug", len(nonce))
	}
	pt, err := k.aead.Open(nil, nonce, ciphertextAndTag, aad)
	if err != nil {
		return nil, errUnauthentic{err}
	}
	return pt, nil
}

// errUnauthentic is an AEAD's refusal of data whose tag does not verify, marked as such for
// KeyOpener's callers (see authFailed).
type errUnauthentic struct{ error }

func (e errUnauthentic) Unwrap() error { return e.error }

// AuthFailed reports that the data does not authenticate.
func (errUnauthentic) AuthFailed() bool { return true }
