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
type pinSource struct {
	file  string // --pin-file, or pin-source from a PKCS#11 URI
	label string // the token's label, for the prompt
}

const pinEnv = "P11ESCROW_PIN"

// read returns the PIN from $P11ESCROW_PIN, the PIN file, or a no-echo prompt on the terminal.
func (p pinSource) read() (string, error) {
	if pin := os.Getenv(pinEnv); pin != "" {
		return pin, nil
	}
	if p.file != "" {
		data, err := readFileLimited(p.file, "a PIN file", maxPINFile)
		if err != nil {
			return "", fmt.Errorf("reading the PIN file: %w", err)
		}
		return strings.TrimRight(string(data), "\r\n"), nil
	}
	return p.prompt()
}

// prompt asks on the controlling terminal, not stdin, because stdin may carry the data.
func (p pinSource) prompt() (string, error) {
	noPIN := errors.New("no PIN: set $" + pinEnv + ", use --pin-file, or run on a terminal to be asked")
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
