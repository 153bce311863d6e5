package main

import (
	"context"
	"fmt"
	"strings"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

func authorityCommand() *cli.Command {
	return &cli.Command{
		Name:  "authority",
		Usage: "backup authority operations, run against the authority's HSM",
		Subcommands: []*cli.Command{
			{
				Name:  "init",
				Usage: "create the authority key pair and the receipt-signing key on the authority's token, register them in the store, and write their public keys",
				Flags: hsmFlags(
					&cli.StringFlag{Name: "label", Required: true, Usage: "key `LABEL` on the authority's token"},
					&cli.StringFlag{Name: "type", Value: "rsa-3072", Usage: authorityTypeUsage},
					&cli.StringFlag{Name: "out", Usage: "public key `FILE` to give to users (default: LABEL.pub)"},
					&cli.StringFlag{Name: "receipt-label", Usage: "the receipt-signing key's `LABEL` (default: LABEL-receipt)"},
					&cli.StringFlag{Name: "receipt-key-out", Usage: "receipt public key `FILE` to give to users (default: OUT with .receipt.pub for .pub)"},
					&cli.BoolFlag{Name: "force", Usage: "replace existing public key files"},
				),
				Action: authorityInit,
			},
			{
				Name:  "decrypt",
				Usage: "decrypt files through their authority stanza, on the HSM, while no officers are registered",
				Description: "Every use is audited. Once officers are registered, the two-person rule applies and\n" +
					"this command refuses: use authority request, approve and recover --decrypt.",
				ArgsUsage: "IN...",
				Flags: hsmFlags(
					&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FILE` (default: IN without .p11e; - for stdout); one input only"},
					&cli.BoolFlag{Name: "force", Usage: "replace existing output files"},
				),
				Action: authorityDecrypt,
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
			intakeCommand(),
			listCommand(),
			showCommand(),
			officerCommand(),
			policyCommand(),
			requestCommand(),
			approveCommand(),
			applyCommand(),
			recoverCommand(),
			rotateCommand(),
			retireCommand(),
			auditCommand(),
			backupCommand(),
			receiptKeyCommand(),
			serveCommand(),
		},
	}
}

func authorityStanza(s *escrow.Stanza) bool { return escrow.StanzaRole(s) == escrow.RoleAuthority }

// verifyRecord unwraps the record's key on the authority's token, as a sensitive,
// non-extractable session object, and lets the token check every binding: the key never
// reaches this host's memory.
func verifyRecord(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("verify takes one escrow record")
	}
	data, err := readFileLimited(c.Args().First(), "an escrow record", maxRecordFile)
	if err != nil {
		return err
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
	h, st, err := rec.AuthorityStanza()
	if err != nil {
		return err
	}
	return withSession(c, func(s *session) error {
		ids := &identities{s: s, label: c.String("key"), filter: authorityStanza}
		keys, err := ids.load()
		if err != nil {
			return err
		}
		for _, k := range keys {
			var kp authority.Key
			switch k := k.(type) {
			case rsaExchangeKey:
				kp.RSA = k.KeyPair
			case ecExchangeKey:
				kp.EC = k.ECKeyPair
			default:
				continue
			}
			if fpr, _ := escrow.FingerprintOf(kp.Public()); fpr.Tag() != escrow.StanzaTag(st) {
				continue
			}
			if err := verifyRecordWith(s, rec, h, st, kp); err != nil {
				return err
			}
			fmt.Printf("escrow record for file %s verified: the authority key %s opens its header, and its fields are intact\n", h.ID, safetext.Quote(kp.Label()))
			return nil
		}
		return &escrow.RecordError{Reason: fmt.Sprintf("it is wrapped for authority key %s, which is not on this token", rec.Authority.KeyTag)}
	})
}

// verifyRecordWith checks on the token where it can. A token without OAEP unwrap, AES-GCM or
// SHA-256 digests (a smart card or a TPM standing in for an HSM) cannot, so the key is then checked on the host,
// as before the authority's store existed, with a warning; intake and recovery refuse such a
// token outright.
func verifyRecordWith(s *session, rec *escrow.Record, h *escrow.Header, st *escrow.Stanza, kp authority.Key) error {
	if kp.RSA != nil {
		if w := authority.KeyWarning(kp.RSA); w != nil {
			warn("%s", advise(w))
		}
	}
	c, err := s.token.Capabilities()
	if err != nil {
		return err
	}
	ok, missing := c.KeepsKeysInside()
	if ok {
		return authority.VerifyOnToken(rec, h, st, kp)
	}
	warn("token %q lacks %s, so the session key is checked in this host's memory", s.token.Info().Label, strings.Join(missing, ", "))
	var id escrow.Identity = &escrow.RSAIdentity{Public: kp.RSA.Public, Key: kp.RSA}
	if kp.EC != nil {
		id = &escrow.ECIdentity{Public: kp.EC.Public, Key: kp.EC}
	}
	_, err = rec.Verify(id)
	return err
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

// authorityDecrypt decrypts each input on the HSM through its authority stanza.
func authorityDecrypt(c *cli.Context) error {
	ins := c.Args().Slice()
	if len(ins) == 0 {
		return usagef("no input files; give one or more, or - for stdin")
	}
	if len(ins) > 1 && c.String("output") != "" {
		return usagef("-o names one file; with several inputs, outputs are IN without .p11e")
	}
	for _, in := range ins {
		out, err := decryptOutputName(in, c.String("output"))
		if err != nil {
			return err
		}
		if err := checkInputs(in); err != nil {
			return err
		}
		if err := checkOutputs(c.Bool("force"), out); err != nil {
			return err
		}
	}
	return withAuthority(c, func(a *authority.Authority, _ *session) error {
		for _, in := range ins {
			if err := directDecrypt(c.Context, a, in, c.String("output"), c.Bool("force")); err != nil {
				return fmt.Errorf("%s: %w", in, err)
			}
		}
		return nil
	})
}

func directDecrypt(ctx context.Context, a *authority.Authority, in, out string, force bool) error {
	out, err := decryptOutputName(in, out)
	if err != nil {
		return err
	}
	src, err := openInput(in)
	if err != nil {
		return err
	}
	defer src.Close()
	o, err := createOutput(out, force)
	if err != nil {
		return err
	}
	defer o.abort()
	if err := a.DirectDecrypt(ctx, src, o); err != nil {
		return err
	}
	return o.commit()
}
