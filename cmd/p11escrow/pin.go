package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"golang.org/x/term"
)

// pinSource says where the PIN comes from. A PIN is never taken from argv: other users can read
// a process's arguments, and shells keep them in history.
//
// The order, the one place it is decided (README "PINs" describes it): --pin-file, then a URI's
// pin-source, then the role's variable (pinEnvs), then $P11ESCROW_PIN, then a prompt. An
// explicit source beats the environment because a variable is easily left over from another
// token, and a wrong PIN costs one of the token's few tries.
type pinSource struct {
	file    string // --pin-file
	uriFile string // pin-source from a PKCS#11 URI
	role    pinRole
	label   string // the token's label, for the prompt
}

// pinRole is the part a token plays in a command. One shell often holds a user's card and an
// authority's HSM, with different PINs, so each role may have its own variable.
type pinRole int

const (
	roleUser      pinRole = iota // encrypt, decrypt, key, token, reheader
	roleAuthority                // authority commands run on the authority's HSM
	roleOfficer                  // authority approve, on an officer's own token
)

// pinEnv is every role's fallback variable.
const pinEnv = "P11ESCROW_PIN"

// pinEnvs are the variables a role reads, most specific first.
var pinEnvs = map[pinRole][]string{
	roleUser:      {pinEnv},
	roleAuthority: {"P11ESCROW_AUTHORITY_PIN", pinEnv},
	roleOfficer:   {"P11ESCROW_OFFICER_PIN", pinEnv},
}

// read returns the PIN from the first source that is set (see pinSource).
func (p pinSource) read() (string, error) {
	for _, f := range []struct{ name, what string }{{p.file, "--pin-file"}, {p.uriFile, "the URI's pin-source"}} {
		if f.name == "" {
			continue
		}
		data, err := readFileLimited(f.name, "a PIN file", maxPINFile)
		if err != nil {
			return "", fmt.Errorf("reading the PIN file (%s): %w", f.what, unwrapPath(err))
		}
		return strings.TrimRight(string(data), "\r\n"), nil
	}
	for _, v := range pinEnvs[p.role] {
		if pin := os.Getenv(v); pin != "" {
			return pin, nil
		}
	}
	return p.prompt()
}

// errNoPIN reports that no PIN source is set and there is no terminal to ask on.
type errNoPIN struct{ envs []string }

func (e errNoPIN) Error() string {
	return "no PIN: set $" + strings.Join(e.envs, " or $") + ", use --pin-file, or run on a terminal to be asked"
}

// prompt asks on the controlling terminal, not stdin, because stdin may carry the data.
func (p pinSource) prompt() (string, error) {
	noPIN := errNoPIN{pinEnvs[p.role]}
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return "", noPIN
	}
	defer tty.Close()
	if !term.IsTerminal(int(tty.Fd())) {
		return "", noPIN
	}
	fmt.Fprintf(tty, "PIN for token %q: ", p.label)
	pin, err := term.ReadPassword(int(tty.Fd()))
	fmt.Fprintln(tty)
	if err != nil {
		return "", fmt.Errorf("reading the PIN: %w", err)
	}
	return string(pin), nil
}

// isNoPIN reports whether err says no PIN was available.
func isNoPIN(err error) bool {
	var e errNoPIN
	return errors.As(err, &e)
}
