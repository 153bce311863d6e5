// Package store is the authority's persistent state: the Store interface that every backend
// implements, the types it keeps, and the rules every backend shares (the audit entry's hash, the
// digest of a bound row). Backends are sibling packages: store/sqlite and store/postgres.
package store

import (
	"context"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
)

// Store is where the authority keeps its records, keys, officers, policy, requests and audit
// log. Every backend keeps this contract:
//
//   - Every method that changes something takes the Event that describes the change and appends
//     it to the audit log in the same transaction as the change itself: a crash, a cancelled
//     ctx or a failed commit leaves either both or neither.
//   - Audit appends are serialised: of writers in any number of processes or hosts, each reads
//     the head and appends to it with no other append in between, so the chain stays linear,
//     without forks or gaps (AuditEntry.ComputeHash chains each entry to the one before).
//   - Every row of a bound table (BoundTables) that a change inserts, updates or deletes is
//     recorded in the entry's State with its RowDigest, so that the authority's VerifyState
//     catches a row changed without p11escrow. AuditSnapshot reads the log, the head and every
//     bound row in one consistent read.
//   - A change that is refused (ErrExists, ErrChanged, ErrGoverned, ErrInUse) changes nothing
//     and appends nothing.
//
// ctx bounds each call; a backend gives up and rolls back when it is done.
type Store interface {
	// InstanceID is a random ID made when the store was created. Requests name it, so an
	// approval given for one authority cannot be replayed at another.
	InstanceID(ctx context.Context) (string, error)

	// Intake stores verified records, each with its first wrapped key and its own audit entry,
	// in one transaction and in the order given: a group commit, with one head lock and one
	// durable commit for them all. A record is identified by its file ID and key commitment
	// together. A record is refused, with nothing of it stored and no entry appended for it, if
	// that pair is already held (ErrExists), or if the number of other records held under its
	// file ID is not its SameID (ErrChanged: the caller saw, and audited, another collision than
	// there is; it reads again and retries), or if its authority key is retired (ErrRetired: the
	// key was retired after the caller looked it up; checked here, in the transaction, because
	// RetireKey's check that no record depends on the key would otherwise race with intake).
	// Records earlier in recs count for later ones. The others are stored, and Stored says which
	// is which. The error is the transaction's: when it is not nil, nothing was stored.
	Intake(ctx context.Context, recs []NewRecord) ([]Stored, error)
	// Record returns the record with this file ID and key commitment; ErrNotFound if absent.
	Record(ctx context.Context, fileID, commitment string) (*HeldRecord, error)
	// RecordsByID returns every record held under a file ID (more than one if the ID was
	// copied into another file), with their record bytes.
	RecordsByID(ctx context.Context, fileID string) ([]*HeldRecord, error)
	// Records lists records without their record bytes (HeldRecord.Record is nil).
	Records(ctx context.Context, f Filter) ([]*HeldRecord, error)
	// Wraps returns a record's wrapped keys, oldest first.
	Wraps(ctx context.Context, fileID, commitment string) ([]*Wrap, error)
	// PendingRewrap lists the records that have no wrap under key fingerprint to.
	PendingRewrap(ctx context.Context, to string) ([]RecordRef, error)
	// AddWrap stores a record's key wrapped under another authority key (rotation) and makes
	// that key the record's authority key.
	AddWrap(ctx context.Context, w *Wrap, ev Event) error

	// AuthorityKeys lists every registered authority key, retired ones included.
	AuthorityKeys(ctx context.Context) ([]*AuthorityKey, error)
	// AddAuthorityKey registers a key as current; the previous current key becomes previous.
	AddAuthorityKey(ctx context.Context, k *AuthorityKey, ev Event) error
	// RetireKey marks a key retired. It returns ErrInUse, and changes nothing, while a record
	// has no wrap under any other key that is not retired.
	RetireKey(ctx context.Context, fingerprint string, ev Event) error

	// AddOfficer registers an officer directly, which is allowed only while the authority is
	// bootstrapping (see Governed): it returns ErrGoverned otherwise, checked in the same
	// transaction as the insert. ErrExists for a known key or name.
	AddOfficer(ctx context.Context, o *Officer, ev Event) error
	// Officers lists the registered officers by name.
	Officers(ctx context.Context) ([]*Officer, error)
	// Approvals is the policy: how many officers must approve a request.
	Approvals(ctx context.Context) (int, error)
	// SetApprovals sets the policy directly; like AddOfficer, only while bootstrapping.
	SetApprovals(ctx context.Context, n int, ev Event) error
	// Governed reports whether at least as many officers are registered as the policy needs:
	// from then on officers and policy change only by approved change requests.
	Governed(ctx context.Context) (bool, error)

	// AddRequest registers a recovery request, open.
	AddRequest(ctx context.Context, r *StoredRequest, ev Event) error
	Request(ctx context.Context, id string) (*StoredRequest, error) // ErrNotFound if absent
	// Recovered closes a request (it can be used once) and marks its record recovered.
	Recovered(ctx context.Context, requestID string, ev Event) error
	// LockRequest keeps every other process and host from locking the same request ID until
	// unlock is called or this process ends, whichever comes first (a killed attempt holds
	// nothing). It returns ErrInUse, holding nothing, if another holds it. It changes and
	// appends nothing: it is what makes a recovery attempt the only one at its request.
	LockRequest(ctx context.Context, id string) (unlock func(), err error)

	// AddChangeRequest registers a governance change request, open.
	AddChangeRequest(ctx context.Context, r *StoredRequest, ev Event) error
	ChangeRequest(ctx context.Context, id string) (*StoredRequest, error) // ErrNotFound if absent
	// ApplyChange closes a change request (it can be used once) and makes its change, in one
	// transaction. It returns ErrExists, and changes nothing, for an officer already known.
	ApplyChange(ctx context.Context, requestID string, g Governance, ev Event) error

	// Log appends an event that changes nothing else (a rejection, an approval).
	Log(ctx context.Context, ev Event) error
	// Audit returns the whole audit log in order.
	Audit(ctx context.Context) ([]*AuditEntry, error)
	// AuditSnapshot reads the log, its head and the digest of every bound row (the state that
	// decides recoveries, see FORMAT.md section 12) in one read transaction.
	AuditSnapshot(ctx context.Context) (*AuditSnapshot, error)
	// AuditHead is the number of entries and the last entry's hash, kept apart from the log so
	// that deleting the last entries is caught.
	AuditHead(ctx context.Context) (count int64, hash []byte, err error)

	// Close releases the store's connections.
	Close() error

	// ReceiptKey returns the registered receipt-signing key: its label on the HSM and its PKIX
	// DER public key; ErrNotFound if none is registered.
	ReceiptKey(ctx context.Context) (label string, pub []byte, err error)
	// SetReceiptKey registers the receipt-signing key (in meta, a bound table); ErrExists, with
	// nothing changed, if one is registered already.
	SetReceiptKey(ctx context.Context, label string, pub []byte, ev Event) error
	// IntakeSeq returns the sequence number of the audit entry that stored the record with this
	// file ID and key commitment; ErrNotFound if no entry names it (a record held before entries
	// named key commitments).
	IntakeSeq(ctx context.Context, fileID, commitment string) (int, error)
}

// Backuper is a Store that can write a consistent copy of itself to a new file while others use
// it. A backend whose copies are made with its own tools (PostgreSQL's pg_dump) does not
// implement it.
type Backuper interface {
	Backup(ctx context.Context, path string) error
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
	// ErrRetired: a record for an authority key that is retired.
	ErrRetired = errors.New("its authority key is retired")
	// ErrGoverned: a direct change to officers or policy once a quorum is registered.
	ErrGoverned = errors.New("a quorum of officers is registered")
	// ErrNoDatabase: a command that only reads named a database that does not exist, or holds
	// no authority store. Backends wrap it in a sentence that names the database: "the authority
	// database X does not exist", "the PostgreSQL database X holds no authority store".
	ErrNoDatabase = errors.New("does not exist")
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

// NewRecord is one verified record for Intake: the record, its first wrapped key, and the event
// that audits its intake.
type NewRecord struct {
	Record *HeldRecord
	Wrap   *Wrap
	Event  Event
}

// Stored is what Intake did with one NewRecord.
type Stored struct {
	// Seq is the sequence number of the audit entry that stored the record; 0 if it was refused.
	Seq int64
	// Err is nil, or why the record was refused (ErrExists, ErrChanged or ErrRetired).
	Err error
}

// Wrap is a record's file key wrapped under one authority key. Its bytes depend on the key's
// type: under an RSA key, Wrapped is the rsa-oaep stanza's body and OAEPHash its hash; under an
// EC key, Wrapped is the ecdh stanza's ephemeral point, uncompressed (65 bytes on P-256, 97 on
// P-384), followed by its body (K wrapped with RFC 5649, 40 bytes), and OAEPHash is empty. So
// an EC wrap needs no column of its own, and is bound to the audit chain like any other row.
type Wrap struct {
	FileID         string
	Commitment     string
	KeyFingerprint string
	OAEPHash       string // empty for an EC key
	Wrapped        []byte
	Added          string
}

// AuthorityKey is a key pair on the authority's HSM.
type AuthorityKey struct {
	Fingerprint string `json:"fingerprint"`
	Label       string `json:"label"`
	Tag         string `json:"key_tag"`
	OAEPHash    string `json:"oaep_hash"` // empty for an EC key (P-256 or P-384)
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

// RSAPublic parses the registered public key and its OAEP hash.
func (k *AuthorityKey) RSAPublic() (*rsa.PublicKey, crypto.Hash, error) {
	p, err := x509.ParsePKIXPublicKey(k.PublicKey)
	if err != nil {
		return nil, 0, err
	}
	pub, ok := p.(*rsa.PublicKey)
	if !ok {
		return nil, 0, errors.New("the registered authority key is not RSA")
	}
	h, err := escrow.ParseOAEPHash(k.OAEPHash)
	return pub, h, err
}
