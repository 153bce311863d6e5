package main

import (
	"bytes"
	"context"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"strings"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

// maxReceiptFile bounds a receipt: a dozen short fields and a 72-byte signature.
const maxReceiptFile = 4 << 10

func receiptKeyCommand() *cli.Command {
	return &cli.Command{
		Name:  "receipt-key",
		Usage: "the key that signs receipts for the records the authority holds",
		Subcommands: []*cli.Command{{
			Name: "init",
			Usage: "create the receipt-signing key (ECDSA P-256, sign only) on the authority's token, " +
				"register it in the store, and write its public key; for stores made before receipts",
			Flags: hsmFlags(
				&cli.StringFlag{Name: "label", Value: "p11escrow-receipt", Usage: "key `LABEL` on the authority's token"},
				&cli.StringFlag{Name: "out", Usage: "public key `FILE` to give to users (default: LABEL.pub)"},
				&cli.BoolFlag{Name: "force", Usage: "replace an existing public key file"},
			),
			Action: func(c *cli.Context) error {
				out := pubFileName(c.String("out"), c.String("label"))
				if err := checkOutputs(c.Bool("force"), out); err != nil {
					return err
				}
				return withAuthority(c, func(a *authority.Authority, s *session) error {
					if err := a.CanCreateReceiptKey(c.Context); err != nil {
						return err
					}
					o, err := createOutput(out, c.Bool("force"))
					if err != nil {
						return err
					}
					defer o.abort()
					return createReceiptKey(c.Context, a, s, c.String("label"), o)
				})
			},
		}},
	}
}

// receiptPubName is where init writes the receipt key beside the authority's: A.pub gives
// A.receipt.pub; an authority key written to stdout or a descriptor gives LABEL.pub.
func receiptPubName(out, authorityOut, label string) string {
	switch {
	case out != "":
		return out
	case authorityOut == "-" || isFDPath(authorityOut):
		return label + ".pub"
	}
	return strings.TrimSuffix(authorityOut, ".pub") + ".receipt.pub"
}

// createReceiptKey makes and registers the receipt key and publishes it in o.
func createReceiptKey(ctx context.Context, a *authority.Authority, s *session, label string, o *output) error {
	signer, err := a.CreateReceiptKey(ctx, label)
	if err != nil {
		return err
	}
	der, err := x509.MarshalPKIXPublicKey(signer.Public())
	if err != nil {
		return err
	}
	fpr, err := escrow.FingerprintOf(signer.Public())
	if err != nil {
		return err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# p11escrow receipt key %s (ecdsa-p256), fingerprint %s\n", safetext.Quote(label), fpr)
	pem.Encode(&b, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	if _, err := o.Write(b.Bytes()); err != nil {
		return err
	}
	if err := publish(o); err != nil {
		return err
	}
	if err := o.commit(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "created receipt key %s (ECDSA P-256, fingerprint %s) on token %s; public key in %s\n",
		safetext.Quote(label), fpr, safetext.Quote(s.token.Info().Label), safetext.Clean(o.final))
	return nil
}

func receiptCommand() *cli.Command {
	return &cli.Command{
		Name:  "receipt",
		Usage: "check the backup authority's receipts",
		Subcommands: []*cli.Command{{
			Name:      "verify",
			Usage:     "check that a receipt is signed by the authority's receipt key and is for this file",
			ArgsUsage: "FILE.p11e",
			Flags: []cli.Flag{
				&cli.StringFlag{Name: "receipt", Usage: "the receipt `FILE` (default: FILE.p11e.receipt.json)"},
				&cli.StringFlag{Name: "key", Required: true, Usage: "the authority's published receipt key `FILE`"},
			},
			Action: receiptVerify,
		}},
	}
}

func receiptVerify(c *cli.Context) error {
	if c.NArg() != 1 {
		return usagef("receipt verify takes one encrypted file")
	}
	file := c.Args().First()
	name := c.String("receipt")
	if name == "" {
		name = file + ".receipt.json"
	}
	pub, _, err := readPKIXFile(c.String("key"))
	if err != nil {
		return err
	}
	r, err := readReceipt(name)
	if err != nil {
		return err
	}
	f, err := openInput(file)
	if err != nil {
		return err
	}
	defer f.Close()
	h, _, err := escrow.ParseHeader(f)
	if err != nil {
		return fmt.Errorf("%s: %w", file, err)
	}
	if err := r.Verify(pub); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	if err := r.MatchesFile(h); err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	fmt.Printf("receipt verified: authority %s holds the record of file %s since %s (audit entry %d)\n",
		r.Authority, r.FileID, r.IntakeTime, r.AuditSeq)
	return nil
}

func readReceipt(name string) (*escrow.Receipt, error) {
	data, err := readFileLimited(name, "a receipt", maxReceiptFile)
	if err != nil {
		return nil, err
	}
	r, err := escrow.ParseReceipt(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	return r, nil
}
