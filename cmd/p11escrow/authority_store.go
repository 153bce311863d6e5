package main

import (
	"crypto"
	"fmt"
	"os"
	"os/user"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/escrow/authority"
	"github.com/urfave/cli/v2"
)

// dbFlag is the authority's database, for every authority command that uses the store.
func dbFlag() cli.Flag {
	return &cli.StringFlag{Name: "db", EnvVars: []string{"P11ESCROW_DB"}, Value: "authority.db",
		Usage: "the authority's SQLite database `PATH`"}
}

// storeFlags are for authority commands that use the store but no token.
func storeFlags(extra ...cli.Flag) []cli.Flag { return append([]cli.Flag{dbFlag()}, extra...) }

// hsmFlags are for authority commands that use the store and a token.
func hsmFlags(extra ...cli.Flag) []cli.Flag {
	return append(append(tokenFlags(), dbFlag()), extra...)
}

// osUser names the person at the keyboard for the audit log.
func osUser() string {
	if u, err := user.Current(); err == nil && u.Username != "" {
		return u.Username
	}
	if u := os.Getenv("USER"); u != "" {
		return u
	}
	return fmt.Sprintf("uid:%d", os.Getuid())
}

// withStore opens the store and runs f with an Authority that has no token.
func withStore(c *cli.Context, f func(a *authority.Authority) error) error {
	st, err := authority.OpenSQLite(c.String("db"))
	if err != nil {
		return err
	}
	defer st.Close()
	return f(authority.New(st, nil, "user="+osUser()))
}

// withAuthority opens the token, logs in once, opens the store and runs f. It logs in before it
// opens the store, so that a command that cannot log in (no PIN, a wrong one) leaves no new
// database behind. The actor in the audit log is the OS user and the token's label and serial.
func withAuthority(c *cli.Context, f func(a *authority.Authority, s *session) error) error {
	return withSession(c, func(s *session) error {
		if err := s.login(); err != nil {
			return err
		}
		st, err := authority.OpenSQLite(c.String("db"))
		if err != nil {
			return err
		}
		defer st.Close()
		info := s.token.Info()
		actor := fmt.Sprintf("user=%s token=%s serial=%s", osUser(), info.Label, info.Serial)
		return f(authority.New(st, s.token, actor), s)
	})
}

// readSigningPublicKey reads an officer's public key: a PEM "PUBLIC KEY" (ECDSA P-256 or RSA).
func readSigningPublicKey(name string) (crypto.PublicKey, error) {
	pub, _, err := readPKIXFile(name)
	if err != nil {
		return nil, err
	}
	if _, err := escrow.SignatureAlgorithm(pub); err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return pub, nil
}

// readRequest reads and parses a recovery request file.
func readRequest(name string) (*escrow.Request, error) {
	data, err := os.ReadFile(name)
	if err != nil {
		return nil, unwrapPath(err)
	}
	req, err := escrow.ParseRequest(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return req, nil
}

// writeFile writes data to name through a temporary file and a rename.
func writeFile(name string, data []byte, force bool) error {
	o, err := createOutput(name, force)
	if err != nil {
		return err
	}
	defer o.abort()
	if _, err := o.Write(data); err != nil {
		return err
	}
	return o.commit()
}
