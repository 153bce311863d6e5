package main

import (
	"bufio"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

func officerCommand() *cli.Command {
	return &cli.Command{
		Name:  "officer",
		Usage: "register and list the officers who approve recoveries",
		Subcommands: []*cli.Command{
			{
				Name:  "add",
				Usage: "register an officer by the public key of the signing key on their own token",
				Description: "While fewer officers are registered than the policy needs, the officer is registered\n" +
					"directly. After that, this writes a change request that the officers approve\n" +
					"(`authority approve`) and `authority apply` carries out.",
				Flags: storeFlags(append([]cli.Flag{
					&cli.StringFlag{Name: "name", Required: true, Usage: "the officer's `NAME`"},
					&cli.StringFlag{Name: "pub", Required: true, Usage: "the officer's signing public key `FILE` (from `key generate --usage sign`)"},
				}, changeFlags()...)...),
				Action: officerAdd,
			},
			{Name: "list", Usage: "list the registered officers", Flags: storeFlags(), Action: officerList},
		},
	}
}

func policyCommand() *cli.Command {
	return &cli.Command{
		Name:  "policy",
		Usage: "show or set how many distinct officers must approve a recovery or a change (default 2, at least 2)",
		Description: "While fewer officers are registered than the policy needs, --approvals sets it\n" +
			"directly. After that, it writes a change request that the officers approve under the\n" +
			"current policy (`authority approve`) and `authority apply` carries out.",
		Flags: storeFlags(append([]cli.Flag{
			&cli.IntFlag{Name: "approvals", Usage: "approvals `N` a recovery or a change needs"},
		}, changeFlags()...)...),
		Action: policyAction,
	}
}

func requestCommand() *cli.Command {
	return &cli.Command{
		Name:  "request",
		Usage: "write a recovery request for a held file and a new owner's public key",
		Flags: storeFlags(append(recordFlags(),
			&cli.StringFlag{Name: "id", Usage: "the file `ID` (see `p11escrow inspect FILE`); or name the record with --file"},
			&cli.StringFlag{Name: "to", Required: true, Usage: "the new owner's public key `FILE`"},
			&cli.StringFlag{Name: "action", Value: escrow.ActionReheader, Usage: "what the officers approve: `reheader` (a new header for the new owner's key) or decrypt (the plaintext, decrypted on the HSM, for the operator to hand over)"},
			&cli.StringFlag{Name: "reason", Required: true, Usage: "why, e.g. the ticket of the identity check"},
			&cli.DurationFlag{Name: "expires-in", Value: 7 * 24 * time.Hour, Usage: "how long the request stays valid"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "request `FILE` (default: FILEID.request.json)"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing file"},
		)...),
		Action: requestAction,
	}
}

func approveCommand() *cli.Command {
	return &cli.Command{
		Name:      "approve",
		Usage:     "sign a recovery or change request on an officer's own token and append the approval to it",
		ArgsUsage: "REQUEST",
		Description: "It first shows what the officer signs (the file, its description, the action, the new\n" +
			"owner's fingerprint, the reason and the expiry) and asks for confirmation on the terminal;\n" +
			"without a terminal it needs --yes.",
		Flags: hsmFlags(
			&cli.StringFlag{Name: "key", Required: true, Usage: "the officer's signing key `LABEL`"},
			&cli.BoolFlag{Name: "yes", Usage: "sign without asking (the request is still shown, on stderr)"},
		),
		Action: approveAction,
	}
}

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name: "recover",
		Usage: "with enough approvals, re-issue the file's header for the new owner on the HSM " +
			"(or, with --decrypt, decrypt the file on the HSM); rerun it to complete an interrupted recovery",
		ArgsUsage: "REQUEST",
		Flags: hsmFlags(
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FILE` (default: FILEID.header; with --decrypt, IN without .p11e)"},
			&cli.StringFlag{Name: "decrypt", Usage: "decrypt this encrypted `FILE` instead of issuing a header"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing output file"},
		),
		Action: recoverAction,
	}
}

func officerList(c *cli.Context) error {
	return withStore(c, func(a *authority.Authority) error {
		list, err := a.Officers(c.Context)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "NAME\tALGORITHM\tADDED\tKEY\n")
		for _, o := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", safetext.Clean(o.Name), safetext.Clean(o.Algorithm), safetext.Clean(o.Added), safetext.Clean(o.Fingerprint))
		}
		return w.Flush()
	})
}

func requestAction(c *cli.Context) error {
	k, err := readPublicKey(c.String("to"))
	if err != nil {
		return err
	}
	owner := k.pub // RSA or EC: the re-issued header wraps the key for either on the HSM
	id, commitment, err := recordChoice(c, c.String("id"))
	if err != nil {
		return err
	}
	out := c.String("output")
	if out == "" {
		out = id + ".request.json"
	}
	return withStore(c, func(a *authority.Authority) error {
		o, err := createOutput(out, c.Bool("force"))
		if err != nil {
			return err
		}
		defer o.abort()
		req, err := a.NewRequest(c.Context, id, commitment, c.String("action"), owner, k.hash, c.String("reason"), c.Duration("expires-in"))
		if err != nil {
			return err
		}
		if _, err := o.Write(req.Marshal()); err != nil {
			return err
		}
		if err := o.commit(); err != nil {
			return err
		}
		fmt.Printf("request %s (%s) for file %s written to %s; it expires %s and needs officers' approvals (`authority approve`)\n",
			req.ID, req.Action, req.FileID, out, req.Expires)
		return nil
	})
}

// approveAction approves either kind of request, told apart by its format field, after showing
// the officer what they sign and getting their confirmation.
func approveAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("approve takes one request file")
	}
	name := c.Args().First()
	data, err := readFileLimited(name, "a request", maxRequestFile)
	if err != nil {
		return err
	}
	req, err := escrow.ParseApprovable(data)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	var tty *os.File
	if !c.Bool("yes") {
		if tty = openTerminal(); tty == nil {
			return errors.New("approve shows the request and asks for confirmation on a terminal, and there is none; run it on a terminal, or add --yes to sign without asking")
		}
		defer tty.Close()
	}
	var summary string
	if err := withStore(c, func(a *authority.Authority) error {
		summary = describeApprovable(c.Context, a, req)
		return nil
	}); err != nil {
		return err
	}
	if tty == nil {
		fmt.Fprint(os.Stderr, summary)
	} else if !confirm(tty, summary+fmt.Sprintf("Sign this with your key %q? [y/N] ", c.String("key"))) {
		return errors.New("not approved: the officer declined; nothing was signed")
	}
	return withAuthority(c, func(a *authority.Authority, s *session) error {
		signer, err := s.findSigner(c.String("key"))
		if err != nil {
			return err
		}
		// Checked before the officer's token signs, and the signature checked again when the
		// authority records it.
		if _, err := a.CheckApprover(c.Context, req, signer.Public()); err != nil {
			return err
		}
		ap, err := req.Approve(signer)
		if err != nil {
			return err
		}
		off, err := a.RecordApproval(c.Context, req, ap)
		if err != nil {
			return err
		}
		req.AddApproval(ap)
		if err := writeFile(name, req.Marshal(), true); err != nil {
			return err
		}
		need, _ := a.Approvals(c.Context)
		info := req.Info()
		fmt.Printf("officer %s approved %s %s (%d approval(s) on it; the policy needs %d)\n", safetext.Quote(off.Name), info.Kind, info.ID, len(info.Approvals), need)
		return nil
	})
}

// describeApprovable says what an approval of req authorises, for the officer to read before
// signing. Every string from the request or the store is quoted, so that it cannot drive the
// terminal.
func describeApprovable(ctx context.Context, a *authority.Authority, req escrow.Approvable) string {
	var b strings.Builder
	info := req.Info()
	fmt.Fprintf(&b, "%s %s\n", info.Kind, info.ID)
	switch r := req.(type) {
	case *escrow.Request:
		desc := "(not held by this authority)"
		if rec, err := a.Record(ctx, r.FileID, r.KeyCommitment); err == nil {
			desc = safetext.Quote(rec.Description)
		}
		what := "a new header for the new owner's key (reheader)"
		if r.Action == escrow.ActionDecrypt {
			what = "the file's plaintext, decrypted on the HSM and handed to the operator (decrypt)"
		}
		fmt.Fprintf(&b, "  file:        %s %s\n", r.FileID, desc)
		fmt.Fprintf(&b, "  commitment:  %s\n", r.KeyCommitment)
		fmt.Fprintf(&b, "  action:      %s\n", what)
		fmt.Fprintf(&b, "  new owner:   %s\n", r.NewOwner.Fingerprint)
		fmt.Fprintf(&b, "  reason:      %s\n", safetext.Quote(r.Reason))
		fmt.Fprintf(&b, "  requester:   %s\n", safetext.Quote(r.Requester))
		fmt.Fprintf(&b, "  expires:     %s\n", r.Expires)
	case *escrow.ChangeRequest:
		fmt.Fprintf(&b, "  change:      %s\n", r.Change.Kind)
		if r.Change.Kind == escrow.ChangePolicy {
			fmt.Fprintf(&b, "  approvals:   %d\n", r.Change.Approvals)
		} else {
			sum := sha256.Sum256(r.Change.PublicKey)
			fmt.Fprintf(&b, "  officer:     %s, key %x\n", safetext.Quote(r.Change.Name), sum)
		}
		fmt.Fprintf(&b, "  reason:      %s\n", safetext.Quote(r.Reason))
		fmt.Fprintf(&b, "  requester:   %s\n", safetext.Quote(r.Requester))
		fmt.Fprintf(&b, "  expires:     %s\n", r.Expires)
	}
	return b.String()
}

// openTerminal opens the controlling terminal, or returns nil if there is none. Questions go
// there, not to stdin, which may carry data (as for the PIN prompt).
func openTerminal() *os.File {
	tty, err := os.OpenFile("/dev/tty", os.O_RDWR, 0)
	if err != nil {
		return nil
	}
	if !term.IsTerminal(int(tty.Fd())) {
		tty.Close()
		return nil
	}
	return tty
}

// confirm shows question on tty and reports whether the answer is yes.
func confirm(tty *os.File, question string) bool {
	fmt.Fprint(tty, question)
	line, _ := bufio.NewReader(io.LimitReader(tty, 64)).ReadString('\n')
	switch strings.ToLower(strings.TrimSpace(line)) {
	case "y", "yes":
		return true
	}
	return false
}

func recoverAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("recover takes one request file")
	}
	req, err := readRequest(c.Args().First())
	if err != nil {
		return err
	}
	if in := c.String("decrypt"); in != "" {
		return recoverDecrypt(c, req, in)
	}
	out := c.String("output")
	if out == "" {
		out = req.FileID + ".header"
	}
	if err := checkOutputs(c.Bool("force"), out); err != nil {
		return err
	}
	return withAuthority(c, func(a *authority.Authority, s *session) error {
		d := &delivery{name: out, force: c.Bool("force")}
		defer d.abort()
		if err := a.Recover(c.Context, req, d.create); err != nil {
			return err
		}
		fmt.Printf("new header for file %s written to %s; the new owner runs `p11escrow reheader FILE --header %s`\n",
			req.FileID, out, out)
		return nil
	})
}

// delivery creates a recovery's output only when the authority asks for it, after the attempt
// is audited, and gives it its final name on Commit.
type delivery struct {
	name  string
	force bool
	o     *output
}

func (d *delivery) create() (authority.Delivery, error) {
	o, err := createOutput(d.name, d.force)
	if err != nil {
		return nil, err
	}
	d.o = o
	return d, nil
}

func (d *delivery) Write(p []byte) (int, error) { return d.o.Write(p) }
func (d *delivery) Commit() error               { return d.o.commit() }

// abort removes the temporary file of an output that was not committed.
func (d *delivery) abort() {
	if d.o != nil {
		d.o.abort()
	}
}

func recoverDecrypt(c *cli.Context, req *escrow.Request, in string) error {
	out, err := decryptOutputName(in, c.String("output"))
	if err != nil {
		return err
	}
	if out == "-" {
		return errors.New("recover --decrypt writes a file, never stdout, so that nothing is released before the whole file verifies; name it with -o")
	}
	if err := checkInputs(in); err != nil {
		return err
	}
	if err := checkOutputs(c.Bool("force"), out); err != nil {
		return err
	}
	return withAuthority(c, func(a *authority.Authority, s *session) error {
		src, err := openInput(in)
		if err != nil {
			return err
		}
		defer src.Close()
		d := &delivery{name: out, force: c.Bool("force")}
		defer d.abort()
		if err := a.RecoverDecrypt(c.Context, req, src, d.create); err != nil {
			return err
		}
		fmt.Printf("file %s decrypted on the HSM to %s\n", req.FileID, out)
		return nil
	})
}
