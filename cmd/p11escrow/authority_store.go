package main

import (
	"crypto"
	"errors"
	"fmt"
	"os"
	"os/user"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/escrow"
	"github.com/urfave/cli/v2"
)

// dbFlag is the authority's database, for every authority command that uses the store.
func dbFlag() cli.Flag {
	return &cli.StringFlag{Name: "db", EnvVars: []string{"P11ESCROW_DB"}, Value: "authority.db",
		Usage: "the authority's database: a SQLite file `PATH`, or a postgres:// URL"}
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

// withStore opens the store, creating it if needed, and runs f with an Authority that has no
// token.
func withStore(c *cli.Context, f func(a *authority.Authority) error) error {
	return runStore(c, true, f)
}

// withExistingStore is withStore for commands that only read (list, show, audit, backup): they
// never create a database, so a mistyped --db is an error, not an empty store.
func withExistingStore(c *cli.Context, f func(a *authority.Authority) error) error {
	return runStore(c, false, f)
}

func runStore(c *cli.Context, create bool, f func(a *authority.Authority) error) error {
	st, err := openStore(c, create)
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
		st, err := openStore(c, true)
		if err != nil {
			return err
		}
		defer st.Close()
		info := s.token.Info()
		actor := fmt.Sprintf("user=%s token=%s serial=%s", osUser(), info.Label, info.Serial)
		a := authority.New(st, s.token, actor)
		a.Warn = func(w error) { warn("%s", advise(w)) }
		return f(a, s)
	})
}

// openStore opens the store --db names (a path or a postgres:// URL, see authority.OpenStore).
// create false is for commands that only read: a database that does not exist is an error
// (advise says where its name came from).
func openStore(c *cli.Context, create bool) (authority.Store, error) {
	return authority.OpenStore(c.Context, c.String("db"), create)
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

// recordFlags name one held record for commands that act on one (show, request). A file ID can
// be copied into another file, so the ID alone may name several held records; --file and
// --commitment pick one.
func recordFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "file", Usage: "name the record by the encrypted `FILE` itself (its file ID and key commitment)"},
		&cli.StringFlag{Name: "commitment", Usage: "the record's key `COMMITMENT` (base64 as in `authority list --json`, or hex as `inspect` prints it), for a file ID held more than once"},
	}
}

// recordChoice returns the file ID and key commitment (escrow.CommitmentText, or empty for "the
// only record with this ID") that id, --file and --commitment name.
func recordChoice(c *cli.Context, id string) (string, string, error) {
	var commitment string
	if s := c.String("commitment"); s != "" {
		cm, err := escrow.ParseCommitment(s)
		if err != nil {
			return "", "", fmt.Errorf("--commitment: %v", err)
		}
		commitment = escrow.CommitmentText(cm)
	}
	name := c.String("file")
	if name == "" {
		if id == "" {
			return "", "", errors.New("name the file with --file FILE.p11e or its file ID")
		}
		return id, commitment, nil
	}
	f, err := os.Open(name)
	if err != nil {
		return "", "", unwrapPath(err)
	}
	defer f.Close()
	h, _, err := escrow.ParseHeader(f)
	if err != nil {
		return "", "", fmt.Errorf("%s: %w", name, err)
	}
	fc := escrow.CommitmentText(h.Commitment)
	switch {
	case id != "" && id != h.ID.String():
		return "", "", fmt.Errorf("%s is file %s, not %s", name, h.ID, id)
	case commitment != "" && commitment != fc:
		return "", "", fmt.Errorf("%s has key commitment %s, not %s", name, fc, commitment)
	}
	return h.ID.String(), fc, nil
}

// readRequest reads and parses a recovery request file.
func readRequest(name string) (*escrow.Request, error) {
	data, err := readFileLimited(name, "a request", maxRequestFile)
	if err != nil {
		return nil, err
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
