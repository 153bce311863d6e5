package main

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/token"
	"github.com/urfave/cli/v2"
)

func rotateCommand() *cli.Command {
	return &cli.Command{
		Name: "rotate",
		Usage: "make a new authority key on the HSM and re-wrap every record for it there; " +
			"rerun the same command to resume an interrupted rotation",
		Flags: hsmFlags(
			&cli.StringFlag{Name: "new-label", Required: true, Usage: "the new key's `LABEL`"},
			&cli.StringFlag{Name: "type", Value: "rsa-3072", Usage: authorityTypeUsage},
			&cli.StringFlag{Name: "out", Usage: "public key `FILE` for users (default: LABEL.pub)"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing public key file"},
		),
		Action: rotateAction,
	}
}

func retireCommand() *cli.Command {
	return &cli.Command{
		Name:   "retire-key",
		Usage:  "retire an old authority key once every record is wrapped under another key",
		Flags:  storeFlags(&cli.StringFlag{Name: "label", Required: true, Usage: "the old key's `LABEL`"}),
		Action: retireAction,
	}
}

// authorityInit makes the first authority key and registers it. The store is checked before
// the key is made, so a refused init leaves nothing on the token.
func authorityInit(c *cli.Context) error {
	spec, err := authorityKeySpec(c.String("type"))
	if err != nil {
		return err
	}
	out := pubFileName(c.String("out"), c.String("label"))
	receiptLabel := c.String("receipt-label")
	if receiptLabel == "" {
		receiptLabel = c.String("label") + "-receipt"
	}
	receiptOut := receiptPubName(c.String("receipt-key-out"), out, receiptLabel)
	if err := checkOutputs(c.Bool("force"), out, receiptOut); err != nil {
		return err
	}
	return withAuthority(c, func(a *authority.Authority, s *session) error {
		if err := a.CanInit(c.Context); err != nil {
			return err
		}
		if err := a.CanCreateReceiptKey(c.Context); err != nil {
			return err
		}
		o, err := createOutput(out, c.Bool("force"))
		if err != nil {
			return err
		}
		defer o.abort()
		ro, err := createOutput(receiptOut, c.Bool("force"))
		if err != nil {
			return err
		}
		defer ro.abort()
		k, ek, err := initKey(c, a, s, spec)
		if err != nil {
			return err
		}
		if err := writePublicKey(o, ek); err != nil {
			return err
		}
		fmt.Fprintf(os.Stderr, "created authority key %q (%s, tag %s) on token %q and registered it in %s; public key in %s\n",
			k.Label, strings.ToUpper(c.String("type")), k.Tag, s.token.Info().Label, c.String("db"), out)
		if err := createReceiptKey(c.Context, a, s, receiptLabel, ro); err != nil {
			return fmt.Errorf("the authority key is registered, but the receipt key was not made: %w; make it with `p11escrow authority receipt-key init`", err)
		}
		return nil
	})
}

// authorityTypeUsage is the --type flag's usage for authority keys.
const authorityTypeUsage = "rsa-2048, rsa-3072, rsa-4096, ec-p256 or ec-p384"

// authorityKeySpec is the authority key type named by --type: an RSA size or an EC curve.
func authorityKeySpec(name string) (authority.KeySpec, error) {
	if bits, ok := keyTypes[name]; ok {
		return authority.KeySpec{Bits: bits}, nil
	}
	if curve, ok := keyCurves[name]; ok {
		return authority.KeySpec{Curve: curve}, nil
	}
	return authority.KeySpec{}, usagef("unknown key type %q; use %s", name, authorityTypeUsage)
}

// initKey makes the first authority key of type spec on the HSM and registers it.
func initKey(c *cli.Context, a *authority.Authority, s *session, spec authority.KeySpec) (*authority.AuthorityKey, exchangeKey, error) {
	if spec.Curve != "" {
		kp, err := s.token.GenerateEC(c.String("label"), spec.Curve)
		if err != nil {
			return nil, nil, err
		}
		k, err := a.RegisterECKey(c.Context, kp, "init")
		return k, ecExchangeKey{kp}, err
	}
	kp, err := s.token.GenerateUnwrapRSA(c.String("label"), spec.Bits)
	if err != nil {
		return nil, nil, err
	}
	hash, err := kp.OAEPHash()
	if err != nil {
		return nil, nil, err
	}
	k, err := a.RegisterKey(c.Context, kp, hash, "init")
	return k, rsaExchangeKey{kp}, err
}

func pubFileName(out, label string) string {
	if out == "" {
		return label + ".pub"
	}
	return out
}

// rotateAction starts or resumes a rotation and re-wraps every record, one transaction each.
func rotateAction(c *cli.Context) error {
	spec, err := authorityKeySpec(c.String("type"))
	if err != nil {
		return err
	}
	label := c.String("new-label")
	out := pubFileName(c.String("out"), label)
	return withAuthority(c, func(a *authority.Authority, s *session) error {
		k, created, err := a.RotateStart(c.Context, label, spec)
		if err != nil {
			return err
		}
		if created || c.IsSet("out") {
			if err := writeAuthorityPub(s.token, label, out, c.Bool("force") || !created); err != nil {
				return err
			}
			fmt.Printf("new authority key %q (tag %s) is current; give %s to users\n", k.Label, k.Tag, out)
		} else {
			fmt.Printf("resuming the rotation to authority key %q (tag %s)\n", k.Label, k.Tag)
		}
		n, err := a.Rotate(c.Context, func(id string, done, total int) {
			fmt.Printf("[%d/%d] re-wrapped %s\n", done, total, id)
		})
		if err != nil {
			return err
		}
		fmt.Printf("rotation done: %d record(s) re-wrapped; every record is now wrapped for %q\n", n, k.Label)
		return nil
	})
}

func writeAuthorityPub(t *token.Token, label, out string, force bool) error {
	var ek exchangeKey
	kp, err := t.FindKeyPair(label, nil)
	if errors.Is(err, token.ErrKeyNotFound) {
		var ec *token.ECKeyPair
		if ec, err = t.FindECKeyPair(label, nil); err == nil {
			ek = ecExchangeKey{ec}
		}
	} else if err == nil {
		ek = rsaExchangeKey{kp}
	}
	if err != nil {
		return err
	}
	o, err := createOutput(out, force)
	if err != nil {
		return err
	}
	defer o.abort()
	return writePublicKey(o, ek)
}

func retireAction(c *cli.Context) error {
	return withStore(c, func(a *authority.Authority) error {
		k, err := a.RetireKey(c.Context, c.String("label"))
		if err != nil {
			return err
		}
		fmt.Printf("authority key %q (%s) is retired; no record needs it. Destroy it on the HSM with the HSM's own tools.\n", k.Label, k.Tag)
		return nil
	})
}
