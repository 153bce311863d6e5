package escrow

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strings"
	"time"

	"github.com/p11escrow/p11escrow/escrow/internal/strictjson"
	"github.com/p11escrow/p11escrow/internal/safetext"
)

const requestFormat = "p11escrow-recovery-request/v1"

// Signature algorithms of approvals (FORMAT.md section 10.2).
const (
	AlgECDSAP256 = "ecdsa-p256-sha256" // ECDSA on P-256 over SHA-256, ASN.1 DER signature
	AlgRSAPSS    = "rsa-pss-sha256"    // RSA-PSS, SHA-256, MGF1-SHA256, 32-byte salt
)

// Recovery actions: what an approved recovery request lets the authority deliver. The action is
// part of the signed request-bytes, so an approval for one never authorises the other.
const (
	// ActionReheader: re-issue the file's header for the new owner's key (FORMAT.md section 11).
	ActionReheader = "reheader"
	// ActionDecrypt: decrypt the file on the HSM and hand the plaintext to the operator, for the
	// new owner.
	ActionDecrypt = "decrypt"
)

// Request is a recovery request (FORMAT.md section 10): the authority is asked to re-issue the
// header of file FileID for NewOwner (ActionReheader), or to decrypt it for them
// (ActionDecrypt). Officers approve it by signing its canonical bytes. Its struct tags are its
// field table for strictjson, as for Record.
type Request struct {
	Format    string `json:"format"`
	ID        string `json:"id"`
	Authority string `json:"authority"`
	FileID    string `json:"file_id"`
	// KeyCommitment names the one held record of FileID that the request is for: the file's key
	// commitment as its core line writes it (CommitmentText). A file ID alone can be copied into
	// another file; the commitment cannot.
	KeyCommitment string      `json:"key_commitment"`
	Action        string      `json:"action"`
	NewOwner      RequestKey  `json:"new_owner"`
	Reason        string      `json:"reason" max:"1024"`
	Requester     string      `json:"requester" max:"512"`
	Created       string      `json:"created"`
	Expires       string      `json:"expires"`
	Approvals     []*Approval `json:"approvals" max:"64"`
	newOwner      crypto.PublicKey
}

// RequestKey is the new owner's public key (PKIX DER), RSA or EC (P-256, P-384), and, for an
// RSA key only, the OAEP hash their token decrypts; an EC key has no OAEPHash (the member is
// absent, FORMAT.md section 10).
type RequestKey struct {
	PublicKey   []byte `json:"public_key" max:"1024"`
	OAEPHash    string `json:"oaep_hash,omitempty"`
	Fingerprint string `json:"fingerprint"`
}

// Approval is one officer's signature over a request's canonical bytes.
type Approval struct {
	Officer   string `json:"officer"` // fingerprint: SHA-256 of the officer's PKIX public key, hex
	Algorithm string `json:"algorithm"`
	Signature []byte `json:"signature" max:"1024"`
}

// NewRequest builds an unapproved request for action (ActionReheader or ActionDecrypt) on the
// file with ID id and key commitment commitment (CommitmentText), valid from now until now+ttl,
// for the new owner's key owner: *rsa.PublicKey with its OAEP hash, or *ecdsa.PublicKey on P-256
// or P-384 (hash is then ignored). The reason and the requester are made valid text with safetext.Clean
// (FORMAT.md section 5.1), so that the bytes officers sign are exactly the bytes written, and
// the request is checked with ParseRequest.
func NewRequest(authority string, id FileID, commitment, action string, owner crypto.PublicKey, hash crypto.Hash, reason, requester string, now time.Time, ttl time.Duration) (*Request, error) {
	if err := checkAction(action); err != nil {
		return nil, err
	}
	der, err := x509.MarshalPKIXPublicKey(owner)
	if err != nil {
		return nil, err
	}
	var hashName string
	switch owner := owner.(type) {
	case *rsa.PublicKey:
		if hashName, err = OAEPHash(hash); err != nil {
			return nil, err
		}
		if !rsaBodySizes[owner.Size()] {
			return nil, fmt.Errorf("RSA-%d keys are not supported; the new owner needs a 2048, 3072 or 4096-bit key", owner.N.BitLen())
		}
	case *ecdsa.PublicKey:
		if _, err := CurveName(owner); err != nil {
			return nil, err
		}
	default:
		return nil, errors.New("the new owner's key is neither RSA nor EC")
	}
	if ttl <= 0 {
		return nil, errors.New("a request must expire in the future")
	}
	rid, err := newRequestID()
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	r := &Request{
		Format: requestFormat, ID: rid, Authority: authority, FileID: id.String(), KeyCommitment: commitment, Action: action,
		NewOwner: RequestKey{PublicKey: der, OAEPHash: hashName, Fingerprint: hex.EncodeToString(sum[:])},
		Reason:   safetext.Clean(reason), Requester: safetext.Clean(requester),
		Created: formatTime(now), Expires: formatTime(now.Add(ttl)),
		Approvals: []*Approval{}, newOwner: owner,
	}
	if _, err := ParseRequest(r.Marshal()); err != nil {
		return nil, err
	}
	return r, nil
}

// checkAction accepts the two recovery actions.
func checkAction(action string) error {
	if action != ActionReheader && action != ActionDecrypt {
		return fmt.Errorf("the recovery action is %q; it must be %q (a new header for the new owner) or %q (the plaintext, decrypted on the HSM)", action, ActionReheader, ActionDecrypt)
	}
	return nil
}

// CanonicalBytes returns request-bytes, what approvals sign (FORMAT.md section 10.1). Approvals
// are not part of it, so each officer signs the same bytes. The key commitment is a last field
// when present, so that requests made before it existed keep their bytes.
func (r *Request) CanonicalBytes() []byte {
	return canonical(requestFormat,
		[]byte(r.ID), []byte(r.Authority), []byte(r.FileID), []byte(r.KeyCommitment), []byte(r.Action),
		r.NewOwner.PublicKey, []byte(r.NewOwner.OAEPHash), []byte(r.Reason), []byte(r.Requester),
		[]byte(r.Created), []byte(r.Expires))
}

// CommitmentText writes a key commitment as the core line does (FORMAT.md section 2): unpadded
// base64, 43 characters. Records held by the authority and requests name files by it.
func CommitmentText(c [32]byte) string { return b64.EncodeToString(c[:]) }

// ParseCommitment reads a key commitment written as the core line writes it, or as 64 hex
// digits (as `p11escrow inspect` prints it).
func ParseCommitment(s string) ([32]byte, error) {
	var c [32]byte
	if len(s) == 64 && isLowerHex(strings.ToLower(s)) {
		hex.Decode(c[:], []byte(strings.ToLower(s)))
		return c, nil
	}
	if b, err := b64.DecodeString(s); err == nil && len(b) == len(c) {
		copy(c[:], b)
		return c, nil
	}
	return c, fmt.Errorf("a key commitment is 43 characters of base64 (as in the file's core line) or 64 hex digits (as `p11escrow inspect` prints it), not %q", s)
}

// canonical is the versioned, length-prefixed encoding that approvals sign (section 10.1, and
// section 13.1 for change requests): the format line, then each field as uint32(len) || bytes,
// so no two different requests share it.
func canonical(format string, fields ...[]byte) []byte {
	var b bytes.Buffer
	b.WriteString(format + "\n")
	for _, f := range fields {
		binary.Write(&b, binary.BigEndian, uint32(len(f)))
		b.Write(f)
	}
	return b.Bytes()
}

// newRequestID is 16 random bytes in hex: a request's ID.
func newRequestID() (string, error) {
	var rid [16]byte
	if _, err := rand.Read(rid[:]); err != nil {
		return "", err
	}
	return hex.EncodeToString(rid[:]), nil
}

// checkIDs checks the syntax of a request's ID and authority ID.
func checkIDs(id, authority string) error {
	if len(id) != 32 || !isLowerHex(id) || len(authority) != 32 || !isLowerHex(authority) {
		return errors.New("the request ID and authority ID are 32 lower-case hex digits")
	}
	return nil
}

// Digest is SHA-256 of the canonical bytes: the value officers' tokens sign.
func (r *Request) Digest() []byte {
	d := sha256.Sum256(r.CanonicalBytes())
	return d[:]
}

// Info returns what the authority's approval checks need, the same for every kind of request.
func (r *Request) Info() RequestInfo {
	return RequestInfo{Kind: "request", ID: r.ID, Authority: r.Authority, Expires: r.Expires, Approvals: r.Approvals}
}

// AddApproval appends an approval made with Approve.
func (r *Request) AddApproval(a *Approval) { r.Approvals = append(r.Approvals, a) }

// Marshal encodes the request, with its approvals, as indented JSON.
func (r *Request) Marshal() []byte {
	b, _ := json.MarshalIndent(r, "", "  ")
	return append(b, '\n')
}

// ParseRequest decodes a request by the rules of FORMAT.md section 5.1 and checks its fields'
// syntax. It verifies no approval; see VerifyApproval.
func ParseRequest(data []byte) (*Request, error) {
	r := &Request{}
	bad := func(format string, args ...any) (*Request, error) {
		return nil, fmt.Errorf("not a valid recovery request: "+format, args...)
	}
	if err := strictjson.Unmarshal(data, r); err != nil {
		return bad("%v", err)
	}
	if r.Format != requestFormat {
		return bad("unknown format %s", safetext.Quote(r.Format))
	}
	if err := checkIDs(r.ID, r.Authority); err != nil {
		return bad("%v", err)
	}
	if _, err := ParseFileID(r.FileID); err != nil {
		return bad("%v", err)
	}
	if c, err := b64.DecodeString(r.KeyCommitment); err != nil || len(c) != 32 {
		return bad("key_commitment is not 43 characters of base64, as in the file's core line")
	}
	if err := checkAction(r.Action); err != nil {
		return bad("%v", err)
	}
	if _, err := r.Times(); err != nil {
		return bad("%v", err)
	}
	pub, err := r.parseOwner()
	if err != nil {
		return bad("%v", err)
	}
	r.newOwner = pub
	return r, nil
}

func (r *Request) parseOwner() (crypto.PublicKey, error) {
	k, err := x509.ParsePKIXPublicKey(r.NewOwner.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("the new owner's public key: %v", err)
	}
	switch pub := k.(type) {
	case *rsa.PublicKey:
		if !rsaBodySizes[pub.Size()] {
			return nil, errors.New("the new owner's key is not an RSA-2048, 3072 or 4096 key, nor EC on P-256 or P-384")
		}
		if _, err := ParseOAEPHash(r.NewOwner.OAEPHash); err != nil {
			return nil, err
		}
	case *ecdsa.PublicKey:
		if _, err := CurveName(pub); err != nil {
			return nil, err
		}
		if r.NewOwner.OAEPHash != "" {
			return nil, errors.New("the new owner's key is EC, and has no oaep_hash")
		}
	default:
		return nil, errors.New("the new owner's key is not an RSA-2048, 3072 or 4096 key, nor EC on P-256 or P-384")
	}
	sum := sha256.Sum256(r.NewOwner.PublicKey)
	if r.NewOwner.Fingerprint != hex.EncodeToString(sum[:]) {
		return nil, errors.New("the new owner's fingerprint does not match the key")
	}
	return k, nil
}

// NewOwnerKey returns the new owner's public key (*rsa.PublicKey or *ecdsa.PublicKey) and, for
// RSA, its OAEP hash (0 for EC).
func (r *Request) NewOwnerKey() (crypto.PublicKey, crypto.Hash) {
	h, _ := ParseOAEPHash(r.NewOwner.OAEPHash)
	return r.newOwner, h
}

// RequestTimes are a request's creation and expiry times.
type RequestTimes struct{ Created, Expires time.Time }

// Times parses Created and Expires (RFC 3339, UTC).
func (r *Request) Times() (RequestTimes, error) { return parseTimes(r.Created, r.Expires) }

// timeLayout is the one form of created and expires: RFC 3339 in UTC, to the second.
const timeLayout = "2006-01-02T15:04:05Z"

// formatTime writes t in timeLayout.
func formatTime(t time.Time) string { return t.UTC().Format(timeLayout) }

// parseTime accepts exactly what formatTime writes, so that every time has one spelling.
func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(timeLayout, s)
	if err != nil || t.Format(timeLayout) != s {
		return time.Time{}, fmt.Errorf("%s is not an RFC 3339 UTC time to the second, like 2026-11-27T10:31:05Z", safetext.Quote(s))
	}
	return t, nil
}

// parseTimes parses a request's created and expires fields and checks their order.
func parseTimes(created, expires string) (RequestTimes, error) {
	c, err := parseTime(created)
	if err != nil {
		return RequestTimes{}, fmt.Errorf("created: %v", err)
	}
	e, err := parseTime(expires)
	if err != nil {
		return RequestTimes{}, fmt.Errorf("expires: %v", err)
	}
	if !e.After(c) {
		return RequestTimes{}, errors.New("it expires before it was made")
	}
	return RequestTimes{Created: c, Expires: e}, nil
}

// Expired reports whether the request has expired at now.
func (r *Request) Expired(now time.Time) bool { return expired(r.Created, r.Expires, now) }

// expired is true at or after expires, and for times that do not parse.
func expired(created, expires string, now time.Time) bool {
	t, err := parseTimes(created, expires)
	return err != nil || !now.Before(t.Expires)
}

// SignatureAlgorithm returns the approval algorithm for an officer's public key.
func SignatureAlgorithm(pub crypto.PublicKey) (string, error) {
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if k.Curve == elliptic.P256() {
			return AlgECDSAP256, nil
		}
	case *rsa.PublicKey:
		if k.N.BitLen() >= 2048 {
			return AlgRSAPSS, nil
		}
	}
	return "", errors.New("an officer key is ECDSA P-256 or RSA (at least 2048 bits)")
}

var pssOptions = &rsa.PSSOptions{SaltLength: sha256.Size, Hash: crypto.SHA256}

// Approve signs the request's digest with signer (an officer's key on their token) and returns
// the approval; the caller appends it.
func (r *Request) Approve(signer crypto.Signer) (*Approval, error) {
	return signApproval(r.Digest(), signer)
}

// signApproval signs digest, a request's Digest, with an officer's signer and checks the
// result, so that a token that signs wrongly is caught when approving, not at recovery.
func signApproval(digest []byte, signer crypto.Signer) (*Approval, error) {
	alg, err := SignatureAlgorithm(signer.Public())
	if err != nil {
		return nil, err
	}
	fpr, err := FingerprintOf(signer.Public())
	if err != nil {
		return nil, err
	}
	var opts crypto.SignerOpts = crypto.SHA256
	if alg == AlgRSAPSS {
		opts = pssOptions
	}
	sig, err := signer.Sign(rand.Reader, digest, opts)
	if err != nil {
		return nil, err
	}
	a := &Approval{Officer: fpr.String(), Algorithm: alg, Signature: sig}
	if err := verifyApproval(digest, a, signer.Public()); err != nil {
		return nil, fmt.Errorf("the token's signature does not verify: %v", err)
	}
	return a, nil
}

// VerifyApproval checks that a was made by pub over exactly this request's canonical bytes, with
// the algorithm that belongs to pub.
func (r *Request) VerifyApproval(a *Approval, pub crypto.PublicKey) error {
	return verifyApproval(r.Digest(), a, pub)
}

// verifyApproval checks a against digest, a request's Digest (section 10.2).
func verifyApproval(digest []byte, a *Approval, pub crypto.PublicKey) error {
	alg, err := SignatureAlgorithm(pub)
	if err != nil {
		return err
	}
	if a.Algorithm != alg {
		return fmt.Errorf("it says %q, but the officer's key signs %q", a.Algorithm, alg)
	}
	switch k := pub.(type) {
	case *ecdsa.PublicKey:
		if !ecdsa.VerifyASN1(k, digest, a.Signature) {
			return errors.New("the signature does not verify over this request")
		}
	case *rsa.PublicKey:
		if rsa.VerifyPSS(k, crypto.SHA256, digest, a.Signature, pssOptions) != nil {
			return errors.New("the signature does not verify over this request")
		}
	}
	return nil
}
