package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/p11escrow/p11escrow/token"
	"github.com/urfave/cli/v2"
)

// tokenFlags select the module, the token and the PIN file. Every command that uses a token has them.
func tokenFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "module", EnvVars: []string{"P11ESCROW_MODULE"}, Usage: "PKCS#11 module `PATH` (default: SoftHSM2 or p11-kit-proxy where installed)"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"P11ESCROW_TOKEN"}, Usage: "token `LABEL`, or a PKCS#11 URI (pkcs11:token=...;object=...?module-path=...&pin-source=...)"},
		&cli.StringFlag{Name: "token-serial", Usage: "token serial `NUMBER`"},
		&cli.StringFlag{Name: "pin-file", Usage: "read the PIN from `FILE`; beats a URI's pin-source and the PIN variables (see README, PINs)"},
	}
}

// session is one open token for one command. It logs in at most once, and only when asked to.
type session struct {
	module *token.Module
	token  *token.Token
	pin    pinSource
	key    keyRef // the key the URI names, if any
}

// keyRef names a key by label or CKA_ID.
type keyRef struct {
	label string
	id    []byte
}

// openModule loads the module named by --module, a URI's module-path, or the default.
func openModule(path string) (*token.Module, error) {
	if path == "" {
		var err error
		if path, err = token.DefaultModulePath(); err != nil {
			return nil, err
		}
	}
	return token.Load(path)
}

// openSession resolves --token (label or URI), --token-serial and --pin-file, and opens the token.
func openSession(c *cli.Context) (*session, error) {
	sel := token.Selector{Label: c.String("token"), Serial: c.String("token-serial")}
	modulePath := c.String("module")
	pin := pinSource{file: c.String("pin-file"), role: roleOf(c)}
	var key keyRef
	if u, ok, err := parseTokenURI(sel.Label); err != nil {
		return nil, err
	} else if ok {
		sel = u.Selector()
		if s := c.String("token-serial"); s != "" {
			sel.Serial = s
		}
		if modulePath == "" {
			modulePath = u.ModulePath
		}
		pin.uriFile = u.PinSource
		key = keyRef{label: u.Object, id: u.ID}
	}
	m, err := openModule(modulePath)
	if err != nil {
		return nil, err
	}
	t, err := m.Open(sel)
	if err != nil {
		m.Close()
		return nil, err
	}
	pin.label = t.Info().Label
	return &session{module: m, token: t, pin: pin, key: key}, nil
}

// roleOf says which part the command's token plays, for its PIN variable.
func roleOf(c *cli.Context) pinRole {
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil || ctx.Command.Name != "authority" {
			continue
		}
		if c.Command.Name == "approve" {
			return roleOfficer
		}
		return roleAuthority
	}
	return roleUser
}

func parseTokenURI(s string) (*token.URI, bool, error) {
	if len(s) < 7 || !strings.EqualFold(s[:7], "pkcs11:") { // RFC 3986: schemes are case-insensitive
		return nil, false, nil
	}
	u, err := token.ParseURI(s)
	return u, err == nil, err
}

// login reads the PIN and logs in once. A wrong PIN is reported, never retried: PINs lock tokens.
func (s *session) login() error {
	if s.token.LoggedIn() {
		return nil
	}
	pin, err := s.pin.read()
	if err != nil {
		return err
	}
	return s.token.Login(pin)
}

func (s *session) close() {
	s.token.Close()
	s.module.Close()
}

// findKey finds the key pair named by --key, by the URI's object or id, or fails.
func (s *session) findKey(label string) (*token.KeyPair, error) {
	ref := s.key
	if label != "" {
		ref = keyRef{label: label}
	}
	if ref.label == "" && ref.id == nil {
		return nil, errors.New("name the key with --key LABEL, or with object= in a PKCS#11 URI")
	}
	return s.token.FindKeyPair(ref.label, ref.id)
}

// withSession opens the token, runs f, and closes the token.
func withSession(c *cli.Context, f func(s *session) error) error {
	s, err := openSession(c)
	if err != nil {
		return err
	}
	defer s.close()
	return f(s)
}

// warn prints a warning line on stderr.
func warn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "p11escrow: warning: "+format+"\n", args...)
}
