package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/p11escrow/p11escrow/authority"
)

// advised is an error reworded for the command line; it unwraps to the library's error.
type advised struct {
	msg string
	err error
}

func (e advised) Error() string { return e.msg }
func (e advised) Unwrap() error { return e.err }

// advise adds to an authority error how to put it right with this command line: the authority
// package names no flags or commands, so that other front ends can word their own advice.
// err's chain is kept, so exit statuses are unchanged.
func advise(err error) error {
	var (
		amb     *authority.AmbiguousError
		action  *authority.ActionError
		direct  *authority.ApprovalsNeededError
		decrypt *authority.DecryptingKeyWarning
		officer *authority.NotOfficerError
		reason  *authority.NoReasonError
	)
	switch {
	case err == nil:
		return nil
	case errors.Is(err, authority.ErrNoToken):
		return fmt.Errorf("%w; name it with --token", err)
	case errors.As(err, &reason):
		return advised{fmt.Sprintf("give the reason for the %s with --reason", reason.Kind), err}
	case errors.Is(err, authority.ErrNoName):
		return advised{"give the officer's name with --name", err}
	case errors.Is(err, authority.ErrNoBackup):
		return fmt.Errorf("%w: back up a PostgreSQL authority database with pg_dump (README, \"Backups of the database\")", err)
	case errors.Is(err, authority.ErrNoDatabase):
		return fmt.Errorf("%w; check --db (or $P11ESCROW_DB), or create the authority with `p11escrow authority init`", err)
	case errors.As(err, &amb):
		return fmt.Errorf("%w; name the record with --file FILE.p11e (reads the owner's file) or --commitment C, where C is one of: %s",
			err, strings.Join(amb.Commitments, ", "))
	case errors.As(err, &action):
		return fmt.Errorf("%w; make a new request with --action %s", err, action.Wanted)
	case errors.As(err, &direct):
		return fmt.Errorf("%w: use authority request, approve and recover --decrypt", err)
	case errors.As(err, &officer):
		return fmt.Errorf("%w; register it with `authority officer add`", err)
	case errors.As(err, &decrypt):
		return fmt.Errorf("%w; replace it with `p11escrow authority rotate --new-label NEW`, then `authority retire-key --label %s`", err, decrypt.Label)
	}
	return err
}
