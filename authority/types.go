package authority

import "github.com/p11escrow/p11escrow/authority/store"

// The store's types, named here too so that callers of the authority need not import the store
// package for the values its methods return. Their home, and their documentation, is package
// store.
type (
	Store         = store.Store
	HeldRecord    = store.HeldRecord
	Wrap          = store.Wrap
	AuthorityKey  = store.AuthorityKey
	Officer       = store.Officer
	StoredRequest = store.StoredRequest
	Governance    = store.Governance
	Filter        = store.Filter
	Event         = store.Event
	AuditEntry    = store.AuditEntry
	AuditSnapshot = store.AuditSnapshot
	RecordRef     = store.RecordRef
)

// The store's errors that callers of the authority branch on (see package store).
var (
	ErrNotFound   = store.ErrNotFound
	ErrExists     = store.ErrExists
	ErrInUse      = store.ErrInUse
	ErrChanged    = store.ErrChanged
	ErrGoverned   = store.ErrGoverned
	ErrRetired    = store.ErrRetired
	ErrNoDatabase = store.ErrNoDatabase
)

// Record statuses and authority key states (see package store).
const (
	StatusHeld      = store.StatusHeld
	StatusRecovered = store.StatusRecovered
	KeyCurrent      = store.KeyCurrent
	KeyPrevious     = store.KeyPrevious
	KeyRetired      = store.KeyRetired
)

// The audit log's errors (see package store, which checks the chain).
type (
	AuditError = store.AuditError
	StateError = store.StateError
)
