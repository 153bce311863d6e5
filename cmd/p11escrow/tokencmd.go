package main

import (
	"fmt"
	"os"
	"text/tabwriter"

	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/p11escrow/p11escrow/token"
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
				Flags:  append(tokenFlags()[:2:2], jsonFlag()),
				Action: tokenList,
			},
			{
				Name:   "info",
				Usage:  "show the mechanisms this tool uses and the path the token takes",
				Flags:  append(tokenFlags(), jsonFlag()),
				Action: tokenInfo,
			},
		},
	}
}

func tokenList(c *cli.Context) error {
	m, err := openModule(c, nil)
	if err != nil {
		return err
	}
	defer m.Close()
	slots, err := m.Slots()
	if err != nil {
		return err
	}
	if c.Bool("json") {
		list := make([]slotJSON, 0, len(slots))
		for _, s := range slots {
			list = append(list, newSlotJSON(s))
		}
		return printJSON(list)
	}
	w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintf(w, "SLOT\tLABEL\tSERIAL\tMODEL\tMANUFACTURER\tURI\n")
	for _, s := range slots {
		if !s.TokenPresent {
			fmt.Fprintf(w, "%d\t(no token)\t\t\t%s\n", s.SlotID, safetext.Clean(s.Description))
			continue
		}
		if !s.Initialized {
			fmt.Fprintf(w, "%d\t(not initialized)\t%s\t%s\t%s\n", s.SlotID, safetext.Clean(s.Serial), safetext.Clean(s.Model), safetext.Clean(s.Manufacturer))
			continue
		}
		fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\t%s\n", s.SlotID, safetext.Clean(s.Label), safetext.Clean(s.Serial), safetext.Clean(s.Model), safetext.Clean(s.Manufacturer), s.URI())
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
		if c.Bool("json") {
			return printJSON(tokenInfoJSON{Token: newSlotJSON(info), Module: s.module.Path(), Path: path.String(), Reason: reason,
				Mechanisms: map[string]bool{
					"CKM_AES_KEY_GEN": caps.AESKeyGen, "CKM_RSA_PKCS_OAEP_wrap": caps.WrapWithOAEP,
					"CKM_RSA_PKCS_OAEP_unwrap": caps.UnwrapWithOAEP, "CKM_RSA_PKCS_OAEP_decrypt": caps.RSAOAEP,
					"CKM_RSA_PKCS_KEY_PAIR_GEN": caps.RSAKeyGen, "CKM_AES_GCM": caps.AESGCM,
					"CKM_SHA256": caps.SHA256Digest, "C_GenerateRandom": caps.GenerateRandom,
					"CKM_EC_KEY_PAIR_GEN": caps.ECKeyGen, "CKM_ECDH1_DERIVE": caps.ECDHDerive,
					"CKM_AES_KEY_WRAP_PAD": caps.AESKeyWrapPad,
				}})
		}
		yes := map[bool]string{true: "yes", false: "no"}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "token\t%s (serial %s, %s %s)\n", safetext.Clean(info.Label), safetext.Clean(info.Serial), safetext.Clean(info.Manufacturer), safetext.Clean(info.Model))
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
			{"CKM_EC_KEY_PAIR_GEN (EC exchange keys)", caps.ECKeyGen},
			{"CKM_ECDH1_DERIVE (EC keys: the stanza's key-encryption key)", caps.ECDHDerive},
			{"CKM_AES_KEY_WRAP_PAD (EC keys: the file key's wrap)", caps.AESKeyWrapPad},
		} {
			fmt.Fprintf(w, "%s\t%s\n", row.what, yes[row.ok])
		}
		fmt.Fprintf(w, "path\t%s: %s\n", path, reason)
		return w.Flush()
	})
}

// jsonFlag is --json, for listings that scripts read.
func jsonFlag() cli.Flag { return &cli.BoolFlag{Name: "json", Usage: "print JSON"} }

// slotJSON is a slot in `token list --json` and `token info --json`.
type slotJSON struct {
	SlotID       uint   `json:"slot_id"`
	Description  string `json:"slot_description"`
	TokenPresent bool   `json:"token_present"`
	Initialized  bool   `json:"initialized"`
	Label        string `json:"label,omitempty"`
	Serial       string `json:"serial,omitempty"`
	Model        string `json:"model,omitempty"`
	Manufacturer string `json:"manufacturer,omitempty"`
	URI          string `json:"uri,omitempty"`
}

func newSlotJSON(s token.SlotInfo) slotJSON {
	j := slotJSON{SlotID: s.SlotID, Description: s.Description, TokenPresent: s.TokenPresent, Initialized: s.Initialized,
		Label: s.Label, Serial: s.Serial, Model: s.Model, Manufacturer: s.Manufacturer}
	if s.TokenPresent && s.Initialized {
		j.URI = s.URI().String()
	}
	return j
}

// tokenInfoJSON is `token info --json`.
type tokenInfoJSON struct {
	Token      slotJSON        `json:"token"`
	Module     string          `json:"module"`
	Mechanisms map[string]bool `json:"mechanisms"`
	Path       string          `json:"path"`
	Reason     string          `json:"reason"`
}
