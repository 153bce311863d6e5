package escrow

import (
	"errors"
	"fmt"
)

// ErrNotP11e reports input that does not start with a p11escrow header.
var ErrNotP11e = errors.New("not a p11escrow file (it does not start with \"p11escrow/v1\")")

// ErrIncorrectIdentity is returned by Identity.Unwrap when no stanza is addressed to it.
var ErrIncorrectIdentity = errors.New("no stanza is addressed to this key")

// HeaderError reports a header that breaks the syntax or limits of FORMAT.md.
type HeaderError struct {
	Line   int
	Reason string
}

func (e *HeaderError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("malformed header (line %d): %s", e.Line, e.Reason)
	}
	return "malformed header: " + e.Reason
}

// TruncatedError reports input that ended too early.
type TruncatedError struct{ What string }

func (e *TruncatedError) Error() string {
	return fmt.Sprintf("the file is truncated: its %s ends early", e.What)
}

// TamperedError reports a failed authentication: a MAC, commitment or chunk tag.
type TamperedError struct{ Reason string }

func (e *TamperedError) Error() string {
	return "the file has been tampered with or corrupted: " + e.Reason
}

// NoIdentityError reports a file that none of the given keys can open.
type NoIdentityError struct {
	Tags []string // key tags of the stanzas in the file
	Errs []error  // why each identity failed, when it failed for another reason than a missing stanza
}

func (e *NoIdentityError) Error() string {
	for _, err := range e.Errs {
		if !errors.Is(err, ErrIncorrectIdentity) {
			return "no key opened this file: " + err.Error()
		}
	}
	return fmt.Sprintf("this file is not addressed to your key (it is for key tags %v)", e.Tags)
}

// Unwrap returns the per-identity errors, so errors.Is sees a wrong PIN or a token error.
func (e *NoIdentityError) Unwrap() []error { return e.Errs }

// RecordError reports an escrow record that does not match its key or its file.
type RecordError struct{ Reason string }

func (e *RecordError) Error() string {
	return "the escrow record does not match: " + e.Reason
}
