package main

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

// changeFlags are for the commands that write a change request once a quorum of officers exists.
func changeFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "reason", Usage: "why, for the change request (needed once a quorum of officers is registered)"},
		&cli.DurationFlag{Name: "expires-in", Value: 7 * 24 * time.Hour, Usage: "how long a change request stays valid"},
		&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "change request `FILE` (default: change-ID.json)"},
		&cli.BoolFlag{Name: "force", Usage: "replace an existing change request file"},
	}
}

func applyCommand() *cli.Command {
	return &cli.Command{
		Name:      "apply",
		Usage:     "with enough approvals, register the officer or set the policy that a change request asks for",
		ArgsUsage: "CHANGE-REQUEST",
		Flags:     storeFlags(),
		Action:    applyAction,
	}
}

func officerAdd(c *cli.Context) error {
	pub, err := readSigningPublicKey(c.String("pub"))
	if err != nil {
		return err
	}
	return withStore(c, func(a *authority.Authority) error {
		governed, err := a.Governed(c.Context)
		if err != nil {
			return err
		}
		if governed {
			ch, err := escrow.OfficerAddChange(c.String("name"), pub)
			if err != nil {
				return err
			}
			return writeChangeRequest(c, a, ch)
		}
		o, err := a.AddOfficer(c.Context, c.String("name"), pub)
		if err != nil {
			return err
		}
		fmt.Printf("officer %s registered (%s, key %s)\n", safetext.Quote(o.Name), o.Algorithm, o.Fingerprint)
		fmt.Println("registered directly: fewer officers than the policy needs were registered, so no quorum existed to approve it")
		return nil
	})
}

func policyAction(c *cli.Context) error {
	return withStore(c, func(a *authority.Authority) error {
		if c.IsSet("approvals") {
			if done, err := setPolicy(c, a, c.Int("approvals")); done || err != nil {
				return err
			}
		}
		return showPolicy(c.Context, a)
	})
}

// setPolicy sets the policy directly while bootstrapping, or writes a change request (done is
// then true: nothing changed, so there is no new policy to show).
func setPolicy(c *cli.Context, a *authority.Authority, n int) (done bool, err error) {
	old, err := a.Approvals(c.Context)
	if err != nil {
		return false, err
	}
	governed, err := a.Governed(c.Context)
	if err != nil || !governed || n == old {
		return false, a.SetApprovals(c.Context, n)
	}
	return true, writeChangeRequest(c, a, escrow.PolicyChange(n))
}

func showPolicy(ctx context.Context, a *authority.Authority) error {
	n, err := a.Approvals(ctx)
	if err != nil {
		return err
	}
	officers, err := a.Officers(ctx)
	if err != nil {
		return err
	}
	fmt.Printf("a recovery needs %d approval(s) from distinct registered officers (%d registered)\n", n, len(officers))
	if len(officers) < n {
		warn("fewer officers are registered than a recovery needs; register more with `authority officer add`")
	}
	return nil
}

// writeChangeRequest registers a change request and writes it for the officers to approve.
func writeChangeRequest(c *cli.Context, a *authority.Authority, ch escrow.Change) error {
	req, err := a.NewChangeRequest(c.Context, ch, c.String("reason"), c.Duration("expires-in"))
	if err != nil {
		return err
	}
	out := c.String("output")
	if out == "" {
		out = "change-" + req.ID + ".json"
	}
	if err := writeFile(out, req.Marshal(), c.Bool("force")); err != nil {
		return err
	}
	need, err := a.Approvals(c.Context)
	if err != nil {
		return err
	}
	fmt.Printf("nothing changed yet: a quorum of officers is registered, so change request %s (%s) was written to %s; it needs %d officers' approvals (`authority approve`), then `authority apply`; it expires %s\n",
		req.ID, req.Change.Kind, out, need, req.Expires)
	return nil
}

func applyAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("apply takes one change request file")
	}
	name := c.Args().First()
	data, err := readFileLimited(name, "a change request", maxRequestFile)
	if err != nil {
		return err
	}
	req, err := escrow.ParseChangeRequest(data)
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return withStore(c, func(a *authority.Authority) error {
		if err := a.Apply(c.Context, req); err != nil {
			return err
		}
		switch ch := req.Change; ch.Kind {
		case escrow.ChangePolicy:
			fmt.Printf("change request %s applied: a recovery or a change now needs %d approvals\n", req.ID, ch.Approvals)
		default:
			fmt.Printf("change request %s applied: officer %s registered\n", req.ID, safetext.Quote(ch.Name))
		}
		return nil
	})
}
