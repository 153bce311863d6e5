package main

import (
	"errors"
	"fmt"
	"os"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/urfave/cli/v2"
)

func authorityCommand() *cli.Command {
	return &cli.Command{
		Name:  "authority",
		Usage: "backup authority operations, run against the authority's HSM",
		Subcommands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create the authority key pair on the authority's token and write its public key",
				Flags: append(tokenFlags(),
					&cli.StringFlag{Name: "label", Required: true, Usage: "key `LABEL` on the authority's token"},
					&cli.StringFlag{Name: "type", Value: "rsa-3072", Usage: "rsa-2048, rsa-3072 or rsa-4096"},
					&cli.StringFlag{Name: "out", Usage: "public key `FILE` to give to users (default: LABEL.pub)"},
					&cli.BoolFlag{Name: "force", Usage: "replace an existing public key file"},
				),
				Action: func(c *cli.Context) error { return generateKey(c, "authority key") },
			},
			{
				Name:      "decrypt",
				Usage:     "decrypt files through their authority stanza",
				ArgsUsage: "IN...",
				Flags: append(tokenFlags(),
					&cli.StringFlag{Name: "key", Usage: "the authority key's `LABEL` (default: every RSA key on the token)"},
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FILE` (default: IN without .p11e; - for stdout)"},
					&cli.BoolFlag{Name: "force", Usage: "replace existing output files"},
				),
				Action: func(c *cli.Context) error { return decryptFiles(c, authorityStanza) },
			},
			{
				Name:      "verify",
				Usage:     "check that an escrow record is intact and opens its file's header",
				ArgsUsage: "RECORD",
				Flags: append(tokenFlags(),
					&cli.StringFlag{Name: "key", Usage: "the authority key's `LABEL` (default: every RSA key on the token)"},
					&cli.StringFlag{Name: "file", Usage: "also check that the record belongs to this encrypted `FILE`"},
				),
				Action: verifyRecord,
			},
		},
	}
}

func authorityStanza(s *escrow.Stanza) bool { return escrow.StanzaRole(s) == escrow.RoleAuthority }

// verifyRecord unwraps the record's key on the authority's token and checks every binding.
func verifyRecord(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("verify takes one escrow record")
	}
	data, err := os.ReadFile(c.Args().First())
	if err != nil {
		return unwrapPath(err)
	}
	rec, err := escrow.ParseRecord(data)
	if err != nil {
		return err
	}
	if name := c.String("file"); name != "" {
		if err := recordMatchesFile(rec, name); err != nil {
			return err
		}
	}
	return withSession(c, func(s *session) error {
		ids := &identities{s: s, label: c.String("key"), filter: authorityStanza}
		keys, err := ids.load()
		if err != nil {
			return err
		}
		for _, kp := range keys {
			h, err := rec.Verify(&escrow.RSAIdentity{Public: kp.Public, Key: kp})
			if errors.Is(err, escrow.ErrIncorrectIdentity) {
				continue
			}
			if err != nil {
				return err
			}
			fmt.Printf("escrow record for file %s verified: the authority key %q opens its header, and its fields are intact\n", h.ID, kp.Label)
			return nil
		}
		return &escrow.RecordError{Reason: fmt.Sprintf("it is wrapped for authority key %s, which is not on this token", rec.Authority.KeyTag)}
	})
}

func recordMatchesFile(rec *escrow.Record, name string) error {
	f, err := openInput(name)
	if err != nil {
		return err
	}
	defer f.Close()
	h, _, err := escrow.ParseHeader(f)
	if err != nil {
		return err
	}
	return rec.MatchesFile(h)
}
