package main

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/p11escrow/p11escrow/token"
	"github.com/urfave/cli/v2"
)

// keyTypes are the exchange key types of `key generate --type`: RSA sizes, and EC curves
// (keyCurves).
var keyTypes = map[string]int{"rsa-2048": 2048, "rsa-3072": 3072, "rsa-4096": 4096}

// keyCurves are the EC exchange key types, by the curve names of token.GenerateEC.
var keyCurves = map[string]string{"ec-p256": "p256", "ec-p384": "p384"}

func keyCommand() *cli.Command {
	return &cli.Command{
		Name:  "key",
		Usage: "create, list and export exchange keys on the token",
		Subcommands: []*cli.Command{
			{
				Name:  "generate",
				Usage: "create a key pair on the token and write its public key: an RSA exchange key, or an officer's signing key",
				Flags: append(tokenFlags(),
					&cli.StringFlag{Name: "key", Usage: "the new key's `LABEL` on the token (required)"},
					deprecatedLabelFlag(),
					&cli.StringFlag{Name: "usage", Value: "exchange", Usage: "exchange (encrypt files) or sign (approve recoveries, for authority officers)"},
					&cli.StringFlag{Name: "type", Value: "rsa-3072", Usage: "exchange: rsa-2048, rsa-3072, rsa-4096, ec-p256 or ec-p384; sign: ecdsa-p256 (the default), rsa-pss-2048 or rsa-pss-3072"},
					&cli.StringFlag{Name: "out", Usage: "public key `FILE` (default: LABEL.pub; - for stdout)"},
					&cli.BoolFlag{Name: "force", Usage: "replace an existing public key file"},
				),
				Action: func(c *cli.Context) error {
					switch c.String("usage") {
					case "exchange":
						return generateKey(c, "exchange key")
					case "sign":
						return generateSigningKey(c)
					}
					return fmt.Errorf("unknown --usage %q; use exchange or sign", c.String("usage"))
				},
			},
			{
				Name:   "list",
				Usage:  "list the key pairs on the token, with their URIs",
				Flags:  append(tokenFlags(), jsonFlag()),
				Action: listKeys,
			},
			{
				Name:  "export",
				Usage: "write the public half of a key pair as PEM",
				Flags: append(tokenFlags(),
					&cli.StringFlag{Name: "key", Usage: "key `LABEL` or PKCS#11 URI (default: object= of a --token URI)"},
					deprecatedLabelFlag(),
					&cli.StringFlag{Name: "out", Value: "-", Usage: "output `FILE`"},
					&cli.BoolFlag{Name: "force", Usage: "replace an existing file"},
				),
				Action: exportKey,
			},
		},
	}
}

// generateKey creates a key pair and writes its public key. It serves `key generate` and
// `authority init`, which differ only in what the key is for.
func generateKey(c *cli.Context, what string) error {
	bits, ok := keyTypes[c.String("type")]
	curve, isEC := keyCurves[c.String("type")]
	if !ok && !isEC {
		return fmt.Errorf("unknown key type %q; use rsa-2048, rsa-3072, rsa-4096, ec-p256 or ec-p384", c.String("type"))
	}
	label, err := newKeyLabel(c)
	if err != nil {
		return err
	}
	out := pubFileName(c.String("out"), label)
	o, err := createOutput(out, c.Bool("force"))
	if err != nil {
		return err
	}
	defer o.abort()
	return withSession(c, func(s *session) error {
		if err := s.login(); err != nil {
			return err
		}
		var kp exchangeKey
		if isEC {
			ec, err := s.token.GenerateEC(label, curve, token.AllowDualUse)
			if err != nil {
				return err
			}
			kp = ecExchangeKey{ec}
		} else {
			k, err := s.token.GenerateRSA(label, bits, token.AllowDualUse)
			if err != nil {
				return err
			}
			kp = rsaExchangeKey{k}
		}
		if err := warnDualUse(kp.attributes()); err != nil {
			return err
		}
		if err := writePublicKey(o, kp); err != nil {
			return err
		}
		fpr, _ := escrow.FingerprintOf(kp.public())
		fmt.Fprintf(os.Stderr, "created %s %q (%s, tag %s) on token %q; public key in %s\n",
			what, label, keyTypeName(kp.public()), fpr.Tag(), s.token.Info().Label, out)
		return nil
	})
}

// warnDualUse says once that the token made a key that can both sign and decrypt, because it
// refused a single-use key (every key on a TPM is dual-use).
func warnDualUse(attrs token.KeyAttributes, err error) error {
	if err != nil {
		return err
	}
	if attrs.DualUse() {
		warn("the token does not make single-use keys, so this key can both sign and decrypt (dual-use)")
	}
	return nil
}

// writePublicKey writes the key's public key file (for an RSA key, with its OAEP hash: see
// rsaExchangeKey.pemFile).
func writePublicKey(o *output, kp exchangeKey) error {
	data, err := kp.pemFile()
	if err != nil {
		return err
	}
	if _, err := o.Write(data); err != nil {
		return err
	}
	if err := publish(o); err != nil {
		return err
	}
	return o.commit()
}

func listKeys(c *cli.Context) error {
	return withSession(c, func(s *session) error {
		if err := s.login(); err != nil {
			return err
		}
		kps, err := s.exchangeKeys()
		if err != nil {
			return err
		}
		if c.Bool("json") {
			return listKeysJSON(s, kps)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "LABEL\tID\tTYPE\tTAG\tSENSITIVE\tEXTRACTABLE\tGENERATED-ON-TOKEN\tUSE\tDUAL-USE\tFINGERPRINT\tURI\n")
		for _, kp := range kps {
			fpr, _ := escrow.FingerprintOf(kp.public())
			attrs, err := kp.attributes()
			if err != nil {
				return err
			}
			// GENERATED-ON-TOKEN is CKA_LOCAL with CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE:
			// an imported key, or one that was ever extractable, may have a copy elsewhere.
			fmt.Fprintf(w, "%s\t%x\t%s\t%s\t%v\t%v\t%v\t%s\t%v\t%s\t%s\n", safetext.Clean(kp.label()), kp.id(), keyTypeName(kp.public()),
				fpr.Tag(), attrs.Sensitive, attrs.Extractable, attrs.NeverLeftToken(), keyUse(attrs), attrs.DualUse(), fpr, keyURI(s, kp))
		}
		if err := listOtherKeys(w, s, kps); err != nil {
			return err
		}
		return w.Flush()
	})
}

func exportKey(c *cli.Context) error {
	o, err := createOutput(c.String("out"), c.Bool("force"))
	if err != nil {
		return err
	}
	defer o.abort()
	return withSession(c, func(s *session) error {
		if err := s.login(); err != nil {
			return err
		}
		kp, err := s.findExchangeKey(keyName(c))
		if err != nil {
			return err
		}
		return writePublicKey(o, kp)
	})
}

// generateSigningKey creates an officer's signing key (sign only; never decrypt or unwrap) and
// writes its public key as PEM, for `authority officer add`.
func generateSigningKey(c *cli.Context) error {
	typ := token.SignECDSAP256
	if c.IsSet("type") {
		typ = token.SignKeyType(c.String("type"))
		if !slices.Contains(token.SignKeyTypes, typ) {
			return fmt.Errorf("unknown signing key type %q; use one of %v", typ, token.SignKeyTypes)
		}
	}
	label, err := newKeyLabel(c)
	if err != nil {
		return err
	}
	out := pubFileName(c.String("out"), label)
	o, err := createOutput(out, c.Bool("force"))
	if err != nil {
		return err
	}
	defer o.abort()
	return withSession(c, func(s *session) error {
		if err := s.login(); err != nil {
			return err
		}
		signer, err := s.token.GenerateSigner(label, typ, token.AllowDualUse)
		if err != nil {
			return err
		}
		if err := warnDualUse(signer.PrivateAttributes()); err != nil {
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
		fmt.Fprintf(&b, "# p11escrow signing key %q (%s), fingerprint %s\n", label, typ, fpr)
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
		fmt.Fprintf(os.Stderr, "created signing key %q (%s) on token %q; public key in %s\n", label, typ, s.token.Info().Label, out)
		return nil
	})
}

// deprecatedLabelFlag keeps the old name of `key generate --key` and `key export --key` working,
// hidden from the help.
func deprecatedLabelFlag() cli.Flag {
	return &cli.StringFlag{Name: "label", Hidden: true, Usage: "deprecated: use --key"}
}

// keyName is --key, or the deprecated --label.
func keyName(c *cli.Context) string {
	if k := c.String("key"); k != "" {
		return k
	}
	return c.String("label")
}

// newKeyLabel is the label for a key to be made: --key (or --label), or a URI's object.
func newKeyLabel(c *cli.Context) (string, error) {
	name := keyName(c)
	if isURI(name) {
		u, err := token.ParseURI(name)
		if err != nil {
			return "", err
		}
		name = u.Object
	}
	if name == "" {
		return "", usagef("--key is required: the new key's label")
	}
	return name, nil
}
