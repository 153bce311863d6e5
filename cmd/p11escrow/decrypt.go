package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/urfave/cli/v2"
)

func decryptCommand() *cli.Command {
	return &cli.Command{
		Name:      "decrypt",
		Usage:     "decrypt files with a key on your token",
		ArgsUsage: "IN... (- for stdin)",
		Flags: append(tokenFlags(),
			&cli.StringFlag{Name: "key", Usage: "the key's `LABEL` or PKCS#11 URI (default: every RSA key on the token that a stanza is addressed to)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FILE` (default: IN without .p11e; - for stdout); one input only"},
			&cli.BoolFlag{Name: "force", Usage: "replace existing output files"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "say nothing about each file, only warnings and errors"},
		),
		Action: func(c *cli.Context) error { return decryptFiles(c, ownerStanza) },
	}
}

// ownerStanza keeps the stanzas that `decrypt` may open: never the authority's. A file opens
// through its authority stanza only by a recovery that officers approved, on the HSM and audited.
func ownerStanza(s *escrow.Stanza) bool { return escrow.StanzaRole(s) != escrow.RoleAuthority }

// authorityKeyError says that the token's key is a backup authority key, which `decrypt` never
// uses, and where recovery goes instead.
func authorityKeyError(what string) error {
	return fmt.Errorf("%s is a backup authority key: it does not decrypt files, so that every recovery is approved and audited; recovery goes through `p11escrow authority request`, the officers' `authority approve` and `authority recover`", what)
}

// refuseAuthorityKey fails, before any PIN or C_Decrypt, when the file is addressed to this
// token only through its authority stanza.
func refuseAuthorityKey(h *escrow.Header, ids *identities) error {
	pubs, err := ids.s.token.PublicKeys()
	if err != nil {
		return nil // decided after the login, by the keys' own attributes (identities.forHeader)
	}
	mine := map[string]bool{}
	for _, pub := range pubs {
		if fpr, err := escrow.FingerprintOf(pub); err == nil {
			mine[fpr.Tag()] = true
		}
	}
	var authority string
	for _, s := range h.Stanzas {
		tag := escrow.StanzaTag(s)
		if !mine[tag] {
			continue
		}
		if ownerStanza(s) {
			return nil
		}
		authority = tag
	}
	if authority != "" {
		return authorityKeyError(fmt.Sprintf("the key with tag %s on token %q", authority, ids.s.token.Info().Label))
	}
	return nil
}

// stanzaFilter limits which stanzas an identity may open: `authority decrypt` uses only the
// authority stanza.
type stanzaFilter func(*escrow.Stanza) bool

// decryptFiles decrypts every input with the keys on the session's token.
func decryptFiles(c *cli.Context, filter stanzaFilter) error {
	ins := c.Args().Slice()
	if len(ins) == 0 {
		return usagef("no input files; give one or more, or - for stdin")
	}
	if len(ins) > 1 && c.String("output") != "" {
		return usagef("-o names one file; with several inputs, outputs are IN without .p11e")
	}
	outs := make([]string, len(ins))
	for i, in := range ins {
		out, err := decryptOutputName(in, c.String("output"))
		if err != nil {
			return err
		}
		outs[i] = out
	}
	if err := checkInputs(ins...); err != nil {
		return err
	}
	if err := checkOutputs(c.Bool("force"), outs...); err != nil {
		return err
	}
	return withSession(c, func(s *session) error {
		ids := &identities{s: s, label: c.String("key"), filter: filter}
		b := &batch{total: len(ins), quiet: c.Bool("quiet")}
		for i, in := range ins {
			if err := decryptFile(in, outs[i], c.Bool("force"), ids, b); err != nil {
				return fmt.Errorf("%s: %w", in, err)
			}
			if len(ins) > 1 {
				b.line(in + ": decrypted to " + outs[i])
			}
		}
		b.summary("decrypt", "decrypted", 0)
		return nil
	})
}

func decryptOutputName(in, out string) (string, error) {
	switch {
	case out != "":
		return out, nil
	case in == "-":
		return "-", nil
	case strings.HasSuffix(in, ".p11e") && len(in) > len(".p11e"):
		return strings.TrimSuffix(in, ".p11e"), nil
	}
	return "", usagef("%s does not end in .p11e; name the output with -o", in)
}

// decryptFile parses the header before it asks for a PIN, so that a file that is not ours
// fails without touching the token, then writes only verified plaintext.
func decryptFile(in, out string, force bool, ids *identities, b *batch) error {
	src, err := openInput(in)
	if err != nil {
		return err
	}
	defer src.Close()
	h, payload, err := escrow.ParseHeader(src)
	if err != nil {
		return err
	}
	if err := refuseAuthorityKey(h, ids); err != nil {
		return err
	}
	list, err := ids.forHeader(h)
	if err != nil {
		return err
	}
	r, err := h.Decrypt(payload, list...)
	if err != nil {
		return err
	}
	defer r.Close()
	o, err := createOutput(out, force)
	if err != nil {
		return err
	}
	defer o.abort()
	plain, stopMeter := io.Reader(r), func() {}
	if b.total == 1 {
		// The meter counts plaintext against the file's size: close enough to show progress.
		plain, stopMeter = startMeter(r, in, inputSize(in), b.quiet)
	}
	_, err = io.Copy(o, plain)
	stopMeter()
	if err != nil {
		return err
	}
	return o.commit()
}
