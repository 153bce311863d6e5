package escrow

import (
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/p11escrow/p11escrow/escrow/internal/strictjson"
	"github.com/p11escrow/p11escrow/internal/safetext"
)

const changeFormat = "p11escrow-change-request/v1"

// Kinds of governance change (FORMAT.md section 13).
const (
	ChangeOfficerAdd = "officer-add" // register an officer
	ChangePolicy     = "policy"      // set how many approvals a recovery or a change needs
)

// ChangeRequest is a governance change request (FORMAT.md section 13): the authority is asked
// to register an officer or to change its approval policy. Once a quorum of officers exists,
// such changes need the same approvals as a recovery, so that nobody can add puppet officers
// alone. Officers approve it exactly as they approve a recovery Request.
// Its struct tags are its field table for strictjson, as for Record.
type ChangeRequest struct {
	Format    string      `json:"format"`
	ID        string      `json:"id"`
	Authority string      `json:"authority"`
	Change    Change      `json:"change"`
	Reason    string      `json:"reason" max:"1024"`
	Requester string      `json:"requester" max:"512"`
	Created   string      `json:"created"`
	Expires   string      `json:"expires"`
	Approvals []*Approval `json:"approvals" max:"64"`
}

// Change is what a ChangeRequest changes. Kind says which other fields are set: Name,
// PublicKey and Algorithm for ChangeOfficerAdd; Approvals for ChangePolicy.
type Change struct {
	Kind      string `json:"kind"`
	Name      string `json:"name,omitempty" max:"128"`
	PublicKey []byte `json:"public_key,omitempty" max:"1024"` // the officer's signing key, PKIX DER
	Algorithm string `json:"algorithm,omitempty"`             // the approval algorithm of that key
	Approvals int    `json:"approvals,omitempty"`
}

// RequestInfo is what the authority's approval checks and messages need from any kind of
// request.
type RequestInfo struct {
	Kind      string // "request" (recovery) or "change request", for messages
	ID        string
	Authority string
	Expires   string
	Approvals []*Approval
}

// Approvable is a request that officers approve by signing its canonical bytes (section 10.2):
// a recovery Request or a ChangeRequest. The authority checks both the same way.
type Approvable interface {
	Info() RequestInfo
	CanonicalBytes() []byte
	Expired(now time.Time) bool
	Approve(signer crypto.Signer) (*Approval, error)
	VerifyApproval(a *Approval, pub crypto.PublicKey) error
	AddApproval(a *Approval)
	Marshal() []byte
}

// OfficerAddChange is the change that registers an officer by their signing public key. The
// name is made valid text with safetext.Clean (FORMAT.md section 5.1).
func OfficerAddChange(name string, pub crypto.PublicKey) (Change, error) {
	alg, err := SignatureAlgorithm(pub)
	if err != nil {
		return Change{}, err
	}
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return Change{}, err
	}
	return Change{Kind: ChangeOfficerAdd, Name: safetext.Clean(name), PublicKey: der, Algorithm: alg}, nil
}

// PolicyChange is the change that sets the number of approvals to n.
func PolicyChange(n int) Change { return Change{Kind: ChangePolicy, Approvals: n} }

// check refuses a change whose fields do not fit its kind. Fields of the other kind must be
// empty, so that a field no approval looked at cannot change a change's meaning.
func (c *Change) check() error {
	switch c.Kind {
	case ChangeOfficerAdd:
		if c.Approvals != 0 {
			return errors.New("an officer-add change has no approvals field")
		}
		if c.Name == "" {
			return errors.New("the officer has no name")
		}
		_, err := c.OfficerKey()
		return err
	case ChangePolicy:
		if c.Name != "" || c.PublicKey != nil || c.Algorithm != "" {
			return errors.New("a policy change has only an approvals field")
		}
		if c.Approvals < 1 {
			return errors.New("a policy change needs a positive number of approvals")
		}
		return nil
	}
	return fmt.Errorf("unknown kind of change %q", c.Kind)
}

// OfficerKey parses an officer-add change's public key and checks that it signs with the
// algorithm the change names.
func (c *Change) OfficerKey() (crypto.PublicKey, error) {
	pub, err := x509.ParsePKIXPublicKey(c.PublicKey)
	if err != nil {
		return nil, fmt.Errorf("the officer's public key: %v", err)
	}
	alg, err := SignatureAlgorithm(pub)
	if err != nil {
		return nil, err
	}
	if alg != c.Algorithm {
		return nil, fmt.Errorf("the officer's key signs %q, not %q", alg, c.Algorithm)
	}
	return pub, nil
}

// NewChangeRequest builds an unapproved change request, valid from now until now+ttl. The
// reason and requester are made valid text with safetext.Clean (FORMAT.md section 5.1), and the
// request is checked with ParseChangeRequest, so that readers accept every request it returns.
func NewChangeRequest(authority string, ch Change, reason, requester string, now time.Time, ttl time.Duration) (*ChangeRequest, error) {
	if err := ch.check(); err != nil {
		return nil, err
	}
	if ttl <= 0 {
		return nil, errors.New("a request must expire in the future")
	}
	id, err := newRequestID()
	if err != nil {
		return nil, err
	}
	r := &ChangeRequest{
		Format: changeFormat, ID: id, Authority: authority, Change: ch,
		Reason: safetext.Clean(reason), Requester: safetext.Clean(requester),
		Created: formatTime(now), Expires: formatTime(now.Add(ttl)),
		Approvals: []*Approval{},
	}
	if _, err := ParseChangeRequest(r.Marshal()); err != nil {
		return nil, err
	}
	return r, nil
}

// CanonicalBytes returns change-bytes, what approvals sign (FORMAT.md section 13.1). Every
// field of Change is in it, set or not, so the encoding does not depend on the kind.
func (r *ChangeRequest) CanonicalBytes() []byte {
	c := r.Change
	return canonical(changeFormat,
		[]byte(r.ID), []byte(r.Authority), []byte(c.Kind), []byte(c.Name), c.PublicKey, []byte(c.Algorithm),
		[]byte(strconv.Itoa(c.Approvals)), []byte(r.Reason), []byte(r.Requester), []byte(r.Created), []byte(r.Expires))
}

// Digest is SHA-256 of the canonical bytes: the value officers' tokens sign.
func (r *ChangeRequest) Digest() []byte {
	d := sha256.Sum256(r.CanonicalBytes())
	return d[:]
}

// Info returns what the authority's approval checks need.
func (r *ChangeRequest) Info() RequestInfo {
	return RequestInfo{Kind: "change request", ID: r.ID, Authority: r.Authority, Expires: r.Expires, Approvals: r.Approvals}
}

// Expired reports whether the request has expired at now.
func (r *ChangeRequest) Expired(now time.Time) bool { return expired(r.Created, r.Expires, now) }

// Approve signs the request's digest with an officer's signer; the caller appends it.
func (r *ChangeRequest) Approve(signer crypto.Signer) (*Approval, error) {
	return signApproval(r.Digest(), signer)
}

// VerifyApproval checks that a was made by pub over exactly this request's canonical bytes.
func (r *ChangeRequest) VerifyApproval(a *Approval, pub crypto.PublicKey) error {
	return verifyApproval(r.Digest(), a, pub)
}

// AddApproval appends an approval made with Approve.
func (r *ChangeRequest) AddApproval(a *Approval) { r.Approvals = append(r.Approvals, a) }

// Marshal encodes the request, with its approvals, as indented JSON.
func (r *ChangeRequest) Marshal() []byte {
	b, _ := json.MarshalIndent(r, "", "  ")
	return append(b, '\n')
}

// ParseChangeRequest decodes a change request by the rules of FORMAT.md section 5.1 and checks
// its fields' syntax. It verifies no approval.
func ParseChangeRequest(data []byte) (*ChangeRequest, error) {
	r := &ChangeRequest{}
	err := strictjson.Unmarshal(data, r)
	switch {
	case err != nil:
	case r.Format != changeFormat:
		err = fmt.Errorf("unknown format %s", safetext.Quote(r.Format))
	default:
		err = r.checkFields()
	}
	if err != nil {
		return nil, fmt.Errorf("not a valid change request: %v", err)
	}
	return r, nil
}

func (r *ChangeRequest) checkFields() error {
	if err := checkIDs(r.ID, r.Authority); err != nil {
		return err
	}
	if _, err := parseTimes(r.Created, r.Expires); err != nil {
		return err
	}
	return r.Change.check()
}

// ParseApprovable decodes either kind of request, by its format field. Anything that is not a
// change request is parsed, and refused, as a recovery request.
func ParseApprovable(data []byte) (Approvable, error) {
	var r Approvable
	var err error
	if strictjson.String(data, "format") == changeFormat { // the strict parsers report malformed input
		r, err = ParseChangeRequest(data)
	} else {
		r, err = ParseRequest(data)
	}
	if err != nil {
		return nil, err // not a typed nil inside the interface
	}
	return r, nil
}
