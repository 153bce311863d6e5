package authority

import (
	"errors"
	"fmt"
)

// ErrRefused marks an action that the authority's rules forbid, as opposed to one that failed:
// a recovery without enough approvals, a direct decryption once officers exist, a request that
// was used, altered or has expired. Test for it with errors.Is; the CLI gives it its own exit
// status so that scripts can tell a refusal from a fault.
var ErrRefused = errors.New("refused by the authority's rules")

// refusal is an error whose message is its sentence and which Is ErrRefused.
type refusal struct{ error }

// Is reports whether target is ErrRefused.
func (r refusal) Is(target error) bool { return target == ErrRefused }

// Unwrap returns the underlying error.
func (r refusal) Unwrap() error { return r.error }

// refusef formats a refusal like fmt.Errorf.
func refusef(format string, args ...any) error { return refusal{fmt.Errorf(format, args...)} }
