package authority

import (
	"errors"
	"time"
)

// Store is where the authority keeps its records, keys, officers, policy, requests and audit
// log. Every method that changes something takes the Event that describes the change, and
// appends it to the audit log in the same transaction as the change itself: a crash leaves
// either both or neither. OpenSQLite is the implementation today; a PostgreSQL one needs only
// this interface (and the same hash chain, see AuditEntry.ComputeHash).
type Store interface {
	// InstanceID is a random ID made when the store was created. Requests name it, so an
	// approval given for one authority cannot be replayed at another.
	InstanceID() (string, error)

	// Intake stores a verified record and its first wrapped key. A record is identified by its
	// file ID and key commitment together: it returns ErrExists, and changes nothing, if that
	// pair is already held. Another commitment under a held file ID is a second record; rec.SameID
	// says how many the caller saw (and audited in ev), and ErrChanged, with nothing changed,
	// says that this is no longer so.
	Intake(rec *HeldRecord, w *Wrap, ev Event) error
	// Record returns the record with this file ID and key commitment; ErrNotFound if absent.
	Record(fileID, commitment string) (*HeldRecord, error)
	// RecordsByID returns every record held under a file ID (more than one if the ID was
	// copied into another file), with their record bytes.
	RecordsByID(fileID string) ([]*HeldRecord, error)
	// Records lists records without their record bytes (HeldRecord.Record is nil).
	Records(f Filter) ([]*HeldRecord, error)
	Wraps(fileID, commitment string) ([]*Wrap, error)
	// PendingRewrap lists the records that have no wrap under key fingerprint to.
	PendingRewrap(to string) ([]RecordRef, error)
	// AddWrap stores a record's key wrapped under another authority key (rotation) and makes
	// that key the record's authority key.
	AddWrap(w *Wrap, ev Event) error

	AuthorityKeys() ([]*AuthorityKey, error)
	// AddAuthorityKey registers a key as current; the previous current key becomes previous.
	AddAuthorityKey(k *AuthorityKey, ev Event) error
	// RetireKey marks a key retired. It returns ErrInUse, and changes nothing, while a record
	// has no wrap under any other key that is not retired.
	RetireKey(fingerprint string, ev Event) error

	// AddOfficer registers an officer directly, which is allowed only while the authority is
	// bootstrapping (see Governed): it returns ErrGoverned otherwise, checked in the same
	// transaction as the insert. ErrExists for a known key or name.
	AddOfficer(o *Officer, ev Event) error
	Officers() ([]*Officer, error)
	Approvals() (int, error)
	// SetApprovals sets the policy directly; like AddOfficer, only while bootstrapping.
	SetApprovals(n int, ev Event) error
	// Governed reports whether at least as many officers are registered as the policy needs:
	// from then on officers and policy change only by approved change requests.
	Governed() (bool, error)

	AddRequest(r *StoredRequest, ev Event) error
	Request(id string) (*StoredRequest, error) // ErrNotFound if absent
	// Recovered closes a request (it can be used once) and marks its record recovered.
	Recovered(requestID string, ev Event) error

	AddChangeRequest(r *StoredRequest, ev Event) error
	ChangeRequest(id string) (*StoredRequest, error) // ErrNotFound if absent
	// ApplyChange closes a change request (it can be used once) and makes its change, in one
	// transaction. It returns ErrExists, and changes nothing, for an officer already known.
	ApplyChange(requestID string, g Governance, ev Event) error

	// Log appends an event that changes nothing else (a rejection, an approval).
	Log(ev Event) error
	Audit() ([]*AuditEntry, error)
	// AuditSnapshot reads the log, its head and the digest of every bound row (the state that
	// decides recoveries, see FORMAT.md section 12) in one read transaction.
	AuditSnapshot() (*AuditSnapshot, error)
	// AuditHead is the number of entries and the last entry's hash, kept apart from the log so
	// that deleting the last entries is caught.
	AuditHead() (count int64, hash []byte, err error)

	Close() error

	// ReceiptKey returns the registered receipt-signing key: its label on the HSM and its PKIX
	// DER public key; ErrNotFound if none is registered.
	ReceiptKey() (label string, pub []byte, err error)
	// SetReceiptKey registers the receipt-signing key; ErrExists, with nothing changed, if one
	// is registered already.
	SetReceiptKey(label string, pub []byte, ev Event) error
	// IntakeSeq returns the sequence number of the audit entry that stored the record with this
	// file ID and key commitment; ErrNotFound if no entry names it (a record held before entries
	// named key commitments).
	IntakeSeq(fileID, commitment string) (int, error)
}

// AuditSnapshot is the audit log, its head and the current bound state, read at one instant.
type AuditSnapshot struct {
	Entries []*AuditEntry
	Count   int64
	Head    []byte
	State   map[string][]byte // "TABLE KEY" to the row's digest
}

// Store errors that callers branch on.
var (
	ErrNotFound = errors.New("not found")
	ErrExists   = errors.New("already exists")
	ErrInUse    = errors.New("still in use")
	// ErrChanged: what the caller read before a change is no longer so; read again and retry.
	ErrChanged = errors.New("changed meanwhile")
	// ErrGoverned: a direct change to officers or policy once a quorum is registered.
	ErrGoverned = errors.New("a quorum of officers is registered")
)

// Record statuses.
const (
	StatusHeld      = "held"
	StatusRecovered = "recovered" // a new header was issued; the record is still held
)

// Authority key states.
const (
	KeyCurrent  = "current"  // new files should be encrypted to it
	KeyPrevious = "previous" // still holds records; being rotated away from
	KeyRetired  = "retired"  // no record depends on it; the tool no longer uses it
)

// RecordRef names one held record: a file ID and a key commitment (escrow.CommitmentText).
type RecordRef struct {
	FileID     string `json:"file_id"`
	Commitment string `json:"key_commitment"`
}

// HeldRecord is one escrow record in the store.
type HeldRecord struct {
	FileID           string `json:"file_id"`
	Commitment       string `json:"key_commitment"` // the header's, as escrow.CommitmentText writes it
	OwnerFingerprint string `json:"owner_fingerprint"`
	OwnerTokenLabel  string `json:"owner_token_label"`
	OwnerTokenSerial string `json:"owner_token_serial"`
	Description      string `json:"description"`
	Created          string `json:"created"`       // when the owner made it (RFC 3339)
	IntakeTime       string `json:"intake_time"`   // when the authority verified it
	AuthorityKey     string `json:"authority_key"` // fingerprint of the key that wraps it now
	Status           string `json:"status"`
	// SameID is how many other records are held under the same file ID: someone copied the ID
	// into another file, so the ID alone does not name this record.
	SameID int    `json:"same_file_id"`
	Record []byte `json:"-"` // the record as received
}

// Ref returns the record's identity.
func (r *HeldRecord) Ref() RecordRef { return RecordRef{FileID: r.FileID, Commitment: r.Commitment} }

// Wrap is a record's file key wrapped under one authority key.
type Wrap struct {
	FileID         string
	Commitment     string
	KeyFingerprint string
	OAEPHash       string
	Wrapped        []byte
	Added          string
}

// AuthorityKey is a key pair on the authority's HSM.
type AuthorityKey struct {
	Fingerprint string `json:"fingerprint"`
	Label       string `json:"label"`
	Tag         string `json:"key_tag"`
	OAEPHash    string `json:"oaep_hash"`
	State       string `json:"state"`
	Created     string `json:"created"`
	PublicKey   []byte `json:"-"` // PKIX DER
}

// Officer is a person allowed to approve recoveries, known by their signing key.
type Officer struct {
	Fingerprint string `json:"fingerprint"`
	Name        string `json:"name"`
	Algorithm   string `json:"algorithm"`
	Added       string `json:"added"`
	PublicKey   []byte `json:"-"` // PKIX DER
}

// StoredRequest is a recovery or change request as registered: its canonical bytes, so that a
// request file altered afterwards is refused.
type StoredRequest struct {
	ID         string
	FileID     string // recovery requests only
	Commitment string // recovery requests only: with FileID, the record it is for
	State      string // "open" until a recovery or an apply uses it, then "used"
	Created    string
	Canonical  []byte
}

// Governance is one change to who approves, or how many must: exactly one field is set.
type Governance struct {
	Officer   *Officer // register this officer
	Approvals int      // set the policy to this many approvals
}

// Filter selects records for Records. Zero fields match everything.
type Filter struct {
	Owner       string
	TokenSerial string
	Since       time.Time
}

// Event is what one audit entry says happened.
type Event struct {
	Time    time.Time
	Actor   string
	Action  string
	Details string
}
