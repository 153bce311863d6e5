package main

import (
	"errors"
	"fmt"
	"os"
	"text/tabwriter"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/escrow/authority"
	"github.com/urfave/cli/v2"
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
		Flags: storeFlags(
			&cli.StringFlag{Name: "id", Required: true, Usage: "the file `ID` (see `p11escrow inspect FILE`)"},
			&cli.StringFlag{Name: "to", Required: true, Usage: "the new owner's public key `FILE`"},
			&cli.StringFlag{Name: "reason", Required: true, Usage: "why, e.g. the ticket of the identity check"},
			&cli.DurationFlag{Name: "expires-in", Value: 7 * 24 * time.Hour, Usage: "how long the request stays valid"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "request `FILE` (default: FILEID.request.json)"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing file"},
		),
		Action: requestAction,
	}
}

func approveCommand() *cli.Command {
	return &cli.Command{
		Name:      "approve",
		Usage:     "sign a recovery or change request on an officer's own token and append the approval to it",
		ArgsUsage: "REQUEST",
		Flags:     hsmFlags(&cli.StringFlag{Name: "key", Required: true, Usage: "the officer's signing key `LABEL`"}),
		Action:    approveAction,
	}
}

func recoverCommand() *cli.Command {
	return &cli.Command{
		Name: "recover",
		Usage: "with enough approvals, re-issue the file's header for the new owner on the HSM " +
			"(or, with --decrypt, decrypt the file on the HSM)",
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
		list, err := a.Store.Officers()
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "NAME\tALGORITHM\tADDED\tKEY\n")
		for _, o := range list {
			fmt.Fprintf(w, "%s\t%s\t%s\t%s\n", o.Name, o.Algorithm, o.Added, o.Fingerprint)
		}
		return w.Flush()
	})
}

func requestAction(c *cli.Context) error {
	k, err := readPublicKey(c.String("to"))
	if err != nil {
		return err
	}
	out := c.String("output")
	if out == "" {
		out = c.String("id") + ".request.json"
	}
	return withStore(c, func(a *authority.Authority) error {
		o, err := createOutput(out, c.Bool("force"))
		if err != nil {
			return err
		}
		defer o.abort()
		req, err := a.NewRequest(c.String("id"), k.pub, k.hash, c.String("reason"), c.Duration("expires-in"))
		if err != nil {
			return err
		}
		if _, err := o.Write(req.Marshal()); err != nil {
			return err
		}
		if err := o.commit(); err != nil {
			return err
		}
		fmt.Printf("request %s for file %s written to %s; it expires %s and needs officers' approvals (`authority approve`)\n",
			req.ID, req.FileID, out, req.Expires)
		return nil
	})
}

// approveAction approves either kind of request, told apart by its format field.
func approveAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("approve takes one request file")
	}
	name := c.Args().First()
	data, err := os.ReadFile(name)
	if err != nil {
		return unwrapPath(err)
	}
	req, err := escrow.ParseApprovable(data)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return withAuthority(c, func(a *authority.Authority, s *session) error {
		signer, err := s.findSigner(c.String("key"))
		if err != nil {
			return err
		}
		ap, off, err := a.Approve(req, signer)
		if err != nil {
			return err
		}
		req.AddApproval(ap)
		if err := writeFile(name, req.Marshal(), true); err != nil {
			return err
		}
		need, _ := a.Store.Approvals()
		info := req.Info()
		fmt.Printf("officer %q approved %s %s (%d approval(s) on it; the policy needs %d)\n", off.Name, info.Kind, info.ID, len(info.Approvals), need)
		return nil
	})
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
		o, err := createOutput(out, c.Bool("force"))
		if err != nil {
			return err
		}
		defer o.abort()
		err = a.Recover(req, func(h *escrow.Header) error {
			_, err := o.Write(h.Marshal())
			return err
		})
		if err != nil {
			return err
		}
		if err := o.commit(); err != nil {
			return err
		}
		fmt.Printf("new header for file %s written to %s; the new owner runs `p11escrow reheader FILE --header %s`\n",
			req.FileID, out, out)
		return nil
	})
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
		o, err := createOutput(out, c.Bool("force"))
		if err != nil {
			return err
		}
		defer o.abort()
		if err := a.RecoverDecrypt(req, src, o); err != nil {
			return err
		}
		if err := o.commit(); err != nil {
			return err
		}
		fmt.Printf("file %s decrypted on the HSM to %s\n", req.FileID, out)
		return nil
	})
}
