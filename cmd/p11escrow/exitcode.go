package main

import (
	"errors"
	"fmt"
	"strings"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
	"github.com/urfave/cli/v2"
)

// Exit statuses, so that scripts can tell failures apart. README "Exit status" lists them; keep
// the two in step.
const (
	exitFailure  = 1 // anything else: a missing file, a token fault, ...
	exitUsage    = 2 // the command line is wrong
	exitPIN      = 3 // the PIN is wrong or locked, or there is none to be had
	exitNotForUs = 4 // the file is not addressed to any key on this token
	exitDamaged  = 5 // the input is tampered with, truncated, or not a p11escrow file
	exitRefused  = 6 // the backup authority's rules refuse the action
)

// usageError is a mistake on the command line. Its message is one line; main adds a hint.
type usageError struct{ msg string }

func (e usageError) Error() string { return e.msg }

// usagef returns a usageError.
func usagef(format string, args ...any) error { return usageError{fmt.Sprintf(format, args...)} }

// exitCode picks the exit status for err. A PIN problem wins over the rest, because a
// NoIdentityError can carry the wrong PIN that made every key fail.
func exitCode(err error) int {
	var (
		usage    usageError
		noID     *escrow.NoIdentityError
		header   *escrow.HeaderError
		trunc    *escrow.TruncatedError
		tampered *escrow.TamperedError
		record   *escrow.RecordError
	)
	var helpErr cli.ExitCoder // urfave/cli's "No help topic for ..."
	switch {
	case errors.As(err, &usage) || isFlagError(err) || errors.As(err, &helpErr):
		return exitUsage
	case errors.Is(err, token.ErrWrongPIN) || errors.Is(err, token.ErrPINLocked) || isNoPIN(err):
		return exitPIN
	case errors.Is(err, authority.ErrRefused):
		return exitRefused
	case errors.As(err, &trunc) || errors.As(err, &tampered) || errors.As(err, &header) ||
		errors.As(err, &record) || errors.Is(err, escrow.ErrNotP11e) || errors.Is(err, token.ErrAuthFailed):
		return exitDamaged
	case errors.As(err, &noID) || errors.Is(err, escrow.ErrIncorrectIdentity):
		return exitNotForUs
	}
	return exitFailure
}

// isFlagError recognises the errors urfave/cli returns for required flags, which it does not
// route through OnUsageError.
func isFlagError(err error) bool {
	return strings.HasPrefix(err.Error(), "Required flag") || strings.HasPrefix(err.Error(), "Required flags")
}

// onUsageError keeps urfave/cli from printing the whole help on stdout for a bad flag: the error
// goes to main, which prints one line and a hint on stderr.
func onUsageError(c *cli.Context, err error, _ bool) error {
	msg := err.Error()
	if name, ok := strings.CutPrefix(msg, "flag provided but not defined: -"); ok {
		name = strings.TrimLeft(name, "-")
		msg = "unknown flag " + dashes(name) + name
		if s := suggestFlag(c, name); s != "" {
			msg += "; did you mean " + s + "?"
		}
	}
	return usageError{msg}
}

// suggestFlag names the command's flag closest to a mistyped one, or "".
func suggestFlag(c *cli.Context, name string) string {
	if c.Command == nil {
		return ""
	}
	var names []string
	for _, f := range c.Command.VisibleFlags() {
		names = append(names, f.Names()...)
	}
	if s := nearest(name, names); s != "" {
		return dashes(s) + s
	}
	return ""
}

// dashes is "-" for a one-letter flag and "--" for a long one, as the help writes them.
func dashes(name string) string {
	if len(name) == 1 {
		return "-"
	}
	return "--"
}

// nearest returns the candidate within a small edit distance of s (a swap of two neighbours
// counts as one edit), or "". urfave/cli's own suggestions use Jaro-Winkler, which ranks
// "token-serial" above "key" for "kye".
func nearest(s string, candidates []string) string {
	best, bestD := "", 3
	for _, c := range candidates {
		if d := editDistance(s, c); d < bestD && d <= len(c)/2 {
			best, bestD = c, d
		}
	}
	return best
}

// editDistance is the optimal string alignment distance between a and b.
func editDistance(a, b string) int {
	d := make([][]int, len(a)+1)
	for i := range d {
		d[i] = make([]int, len(b)+1)
		d[i][0] = i
	}
	for j := range d[0] {
		d[0][j] = j
	}
	for i := 1; i <= len(a); i++ {
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			d[i][j] = min(d[i-1][j]+1, d[i][j-1]+1, d[i-1][j-1]+cost)
			if i > 1 && j > 1 && a[i-1] == b[j-2] && a[i-2] == b[j-1] {
				d[i][j] = min(d[i][j], d[i-2][j-2]+1)
			}
		}
	}
	return d[len(a)][len(b)]
}

// groupAction runs for the app or a command group with no subcommand found: help when nothing
// was named, else a usage error that suggests the nearest command.
func groupAction(c *cli.Context) error {
	root := c.Command == nil || c.Command.Name == c.App.Name
	cmds := c.App.Commands
	if !root {
		cmds = c.Command.Subcommands
	}
	if !c.Args().Present() {
		if root {
			return cli.ShowAppHelp(c)
		}
		return cli.ShowSubcommandHelp(c)
	}
	name := c.Args().First()
	msg := fmt.Sprintf("unknown command %q", name)
	var names []string
	for _, c := range cmds {
		if !c.Hidden {
			names = append(names, c.Names()...)
		}
	}
	if s := nearest(name, names); s != "" {
		msg += fmt.Sprintf("; did you mean %q?", s)
	}
	return usageError{msg}
}

// setUsageErrors installs onUsageError on every command, and groupAction on every group.
func setUsageErrors(cmds []*cli.Command) {
	for _, c := range cmds {
		c.OnUsageError = onUsageError
		checkRequired(c)
		if len(c.Subcommands) > 0 && c.Action == nil {
			c.Action = groupAction
		}
		setUsageErrors(c.Subcommands)
	}
}

// checkRequired moves the check of a command's required flags from urfave/cli, which prints the
// whole help on stdout when one is missing, into a Before hook that returns a usage error.
func checkRequired(c *cli.Command) {
	var names []string
	for _, f := range c.Flags {
		switch f := f.(type) {
		case *cli.StringFlag:
			if f.Required {
				f.Required = false
				names = append(names, f.Name)
			}
		case *cli.StringSliceFlag:
			if f.Required {
				f.Required = false
				names = append(names, f.Name)
			}
		}
	}
	if len(names) == 0 {
		return
	}
	before := c.Before
	c.Before = func(ctx *cli.Context) error {
		for _, n := range names {
			if !ctx.IsSet(n) {
				return usagef("--%s is required", n)
			}
		}
		if before != nil {
			return before(ctx)
		}
		return nil
	}
}
