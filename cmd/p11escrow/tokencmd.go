package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/urfave/cli/v2"
)

func tokenCommand() *cli.Command {
	return &cli.Command{
		Name:  "token",
		Usage: "list tokens and show what a token can do",
		Subcommands: []*cli.Command{
			{
				Name:   "list",
				Usage:  "list the module's slots and tokens",
				Flags:  tokenFlags()[:1],
				Action: tokenList,
			},
			{
				Name:   "info",
				Usage:  "show the mechanisms this tool uses and the path the token takes",
				Flags:  tokenFlags(),
				Action: tokenInfo,
			},
		},
	}
}

func tokenList(c *cli.Context) error {
	m, err := openModule(c.String("module"))
	if err != nil {
		return err
	}
	defer m.Close()
	slots, err := m.Slots()
	if err != nil {
		return err
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "SLOT\tLABEL\tSERIAL\tMODEL\tMANUFACTURER\tURI\n")
	for _, s := range slots {
		if !s.TokenPresent {
			fmt.Fprintf(w, "%d\t(no token)\t\t\t%s\n", s.SlotID, s.Description)
			continue
		}
		if !s.Initialized {
			fmt.Fprintf(w, "%d\t(not initialized)\t%s\t%s\t%s\n", s.SlotID, s.Serial, s.Model, s.Manufacturer)
			continue
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", s.SlotID, s.Label, s.Serial, s.Model, s.Manufacturer, s.URI())
	}
	return w.Flush()
}

func tokenInfo(c *cli.Context) error {
	return withSession(c, func(s *session) error {
		caps, err := s.token.Capabilities()
		if err != nil {
			return err
		}
		info := s.token.Info()
		path, reason := caps.Plan()
		yes := map[bool]string{true: "yes", false: "no"}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "token\t%s (serial %s, %s %s)\n", info.Label, info.Serial, info.Manufacturer, info.Model)
		fmt.Fprintf(w, "module\t%s\n", s.module.Path())
		for _, row := range []struct {
			what string
			ok   bool
		}{
			{"CKM_AES_KEY_GEN (session keys on the token)", caps.AESKeyGen},
			{"CKM_RSA_PKCS_OAEP wrap (C_WrapKey)", caps.WrapWithOAEP},
			{"CKM_RSA_PKCS_OAEP unwrap (C_UnwrapKey)", caps.UnwrapWithOAEP},
			{"CKM_RSA_PKCS_OAEP decrypt", caps.RSAOAEP},
			{"CKM_RSA_PKCS_KEY_PAIR_GEN", caps.RSAKeyGen},
			{"CKM_AES_GCM (token-side payload and MAC)", caps.AESGCM},
			{"CKM_SHA256 digest (token-side key commitment)", caps.SHA256Digest},
			{"C_GenerateRandom", caps.GenerateRandom},
		} {
			fmt.Fprintf(w, "%s\t%s\n", row.what, yes[row.ok])
		}
		fmt.Fprintf(w, "path\t%s: %s\n", path, reason)
		return w.Flush()
	})
}
