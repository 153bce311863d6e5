package authority

import (
	"errors"
	"fmt"
)

// The library's errors say what is wrong; a front end (the CLI, a service) adds how to put it
// right in its own terms, so that no error here names a flag or a command. These are the errors
// that need such advice.
var (
	// ErrNoToken: an operation that needs the authority's HSM was run without a token.
	ErrNoToken = errors.New("this needs the authority's token")
	// ErrNoName: an officer was registered without a name.
	ErrNoName = errors.New("an officer needs a name")
)

// NoReasonError refuses a recovery or change request made without a reason.
type NoReasonError struct {
	Kind string // "recovery" or "change"
}

func (e *NoReasonError) Error() string { return fmt.Sprintf("a %s request needs a reason", e.Kind) }

// AmbiguousError says that a file ID is held more than once, with different key commitments
// (someone made another file with the same ID), so the ID alone does not name a record.
type AmbiguousError struct {
	FileID      string
	Commitments []string
}

func (e *AmbiguousError) Error() string {
	return fmt.Sprintf("file ID %s is held %d times, with different key commitments (someone made another file with the same ID)", e.FileID, len(e.Commitments))
}

// ActionError refuses (and audits as recover-refuse) a recovery whose request was approved for
// another action.
type ActionError struct {
	RequestID, Approved, Wanted string
}

func (e *ActionError) Error() string {
	return fmt.Sprintf("request %s was approved for %q, not %q", e.RequestID, e.Approved, e.Wanted)
}

// ApprovalsNeededError refuses a direct decryption once officers are registered: recoveries
// then go through a request and its approvals.
type ApprovalsNeededError struct {
	Officers int
}

func (e *ApprovalsNeededError) Error() string {
	return fmt.Sprintf("%d officer(s) are registered, so recoveries need approvals", e.Officers)
}

// Is makes an ApprovalsNeededError a refusal (ErrRefused).
func (e *ApprovalsNeededError) Is(target error) bool { return target == ErrRefused }

// DecryptingKeyWarning warns of an authority key that can decrypt (see KeyWarning). It should be
// replaced by rotation to a new key, and then retired.
type DecryptingKeyWarning struct {
	Label string
}

func (w *DecryptingKeyWarning) Error() string {
	return fmt.Sprintf("authority key %q can decrypt (it was made by an older p11escrow), so whoever holds the HSM's PIN can open escrowed files with it outside the quorum", w.Label)
}

// NotOfficerError refuses an approval by a signing key that is not a registered officer's.
type NotOfficerError struct {
	Fingerprint string
}

func (e *NotOfficerError) Error() string {
	return fmt.Sprintf("this signing key (%s) is not a registered officer's", e.Fingerprint)
}
