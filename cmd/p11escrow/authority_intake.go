package main

import (
	"context"
	"errors"
	"fmt"
	"os"
	"runtime"
	"text/tabwriter"
	"time"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

// sessionsFlag is the number of HSM sessions intake and serve verify records on. The default is
// twice the cores, at least 4: the RSA operation is the limit, and with more sessions than cores
// the HSM always has a record to work on while the host parses, stores or answers another.
func sessionsFlag() cli.Flag {
	return &cli.IntFlag{Name: "sessions", Value: max(4, 2*runtime.NumCPU()),
		Usage: "HSM sessions to verify records on: the most records verified at once"}
}

func intakeCommand() *cli.Command {
	return &cli.Command{
		Name:      "intake",
		Usage:     "verify escrow records on the HSM and store them; one line per record, then a summary",
		ArgsUsage: "RECORD...",
		Flags:     hsmFlags(sessionsFlag()),
		Action:    intakeAction,
	}
}

func listCommand() *cli.Command {
	return &cli.Command{
		Name:  "list",
		Usage: "list the records the authority holds",
		Flags: storeFlags(
			&cli.StringFlag{Name: "owner", Usage: "only records of this owner key `FINGERPRINT`"},
			&cli.StringFlag{Name: "token-serial", Usage: "only records from the token with this `SERIAL`"},
			&cli.StringFlag{Name: "since", Usage: "only records taken in at or after `TIME` (RFC 3339, or a date 2026-01-31)"},
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
		),
		Action: listAction,
	}
}

func showCommand() *cli.Command {
	return &cli.Command{
		Name:      "show",
		Usage:     "show one held record and the authority keys that wrap it",
		ArgsUsage: "[FILEID]",
		Flags:     storeFlags(append(recordFlags(), &cli.BoolFlag{Name: "json", Usage: "print JSON"})...),
		Action:    showAction,
	}
}

// intakeAction takes in every record with one login, checking records on one token session per
// core. A record is acknowledged on stdout only after its transaction committed.
func intakeAction(c *cli.Context) error {
	names := c.Args().Slice()
	if len(names) == 0 {
		return errors.New("no records; give one or more escrow record files")
	}
	if c.Int("sessions") < 1 {
		return usagef("--sessions is at least 1")
	}
	return withAuthority(c, func(a *authority.Authority, _ *session) error {
		count := map[authority.Outcome]int{}
		report := func(i int, res authority.IntakeResult) {
			count[res.Outcome]++
			prefix := fmt.Sprintf("[%d/%d]", i+1, len(names))
			if res.Outcome == authority.Rejected {
				fmt.Printf("%s rejected %s: %s\n", prefix, safetext.Clean(res.Name), safetext.Clean(oneLine(res.Reason)))
				return
			}
			fmt.Printf("%s %s %s %s\n", prefix, res.Outcome, res.FileID, safetext.Clean(res.Name))
			if res.SameID > 0 {
				fmt.Printf("%s   warning: file ID %s was already held with %d other key commitment(s); both are held, see `authority show %s`\n",
					prefix, res.FileID, res.SameID, res.FileID)
			}
		}
		if err := a.IntakeAll(c.Context, names, readRecord, c.Int("sessions"), report); err != nil {
			return fmt.Errorf("%w (stopped after %d held; rerun to continue)", err, count[authority.Held])
		}
		fmt.Printf("intake: %d held, %d rejected, %d already held\n",
			count[authority.Held], count[authority.Rejected], count[authority.Duplicate])
		if n := count[authority.Rejected]; n > 0 {
			return fmt.Errorf("%d record(s) rejected; nothing of them was stored", n)
		}
		return nil
	})
}

// readRecord reads one record file; its error, without the "open" prefix, rejects the record.
func readRecord(name string) ([]byte, error) {
	return readFileLimited(name, "an escrow record", maxRecordFile)
}

func listAction(c *cli.Context) error {
	f := authority.Filter{Owner: c.String("owner"), TokenSerial: c.String("token-serial")}
	if s := c.String("since"); s != "" {
		t, err := parseTime(s)
		if err != nil {
			return err
		}
		f.Since = t
	}
	return withExistingStore(c, func(a *authority.Authority) error {
		recs, err := a.Records(c.Context, f)
		if err != nil {
			return err
		}
		if c.Bool("json") {
			if recs == nil {
				recs = []*authority.HeldRecord{}
			}
			return printJSON(recs)
		}
		labels, err := keyLabels(c.Context, a)
		if err != nil {
			return err
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "FILE ID\tCOMMITMENT\tOWNER\tTOKEN\tSERIAL\tINTAKE\tKEY\tSTATUS\tDESCRIPTION\n")
		for _, r := range recs {
			status := safetext.Clean(string(r.Status))
			if r.SameID > 0 {
				status += fmt.Sprintf(" (file ID held %d times)", r.SameID+1)
			}
			fmt.Fprintf(w, "%s\t%.12s\t%.8s\t%s\t%s\t%s\t%s\t%s\t%s\n", safetext.Clean(r.FileID), safetext.Clean(r.Commitment),
				safetext.Clean(r.OwnerFingerprint), safetext.Clean(r.OwnerTokenLabel), safetext.Clean(r.OwnerTokenSerial),
				safetext.Clean(r.IntakeTime), safetext.Clean(labels[r.AuthorityKey]), status, safetext.Clean(r.Description))
		}
		return w.Flush()
	})
}

func parseTime(s string) (time.Time, error) {
	if t, err := time.Parse(time.RFC3339, s); err == nil {
		return t, nil
	}
	if t, err := time.Parse("2006-01-02", s); err == nil {
		return t, nil
	}
	return time.Time{}, fmt.Errorf("--since %q is not a time; use RFC 3339 (2026-01-31T12:00:00Z) or a date (2026-01-31)", s)
}

func keyLabels(ctx context.Context, a *authority.Authority) (map[string]string, error) {
	keys, err := a.AuthorityKeys(ctx)
	if err != nil {
		return nil, err
	}
	m := map[string]string{}
	for _, k := range keys {
		m[k.Fingerprint] = k.Label
	}
	return m, nil
}

// shownRecord is what `authority show --json` prints.
type shownRecord struct {
	*authority.HeldRecord
	Wraps []shownWrap `json:"wrapped_under"`
}

type shownWrap struct {
	Key   string `json:"key"`
	Label string `json:"label"`
	Hash  string `json:"oaep_hash,omitempty"` // absent for a wrap under an EC key
	Added string `json:"added"`
}

func showAction(c *cli.Context) error {
	if c.NArg() > 1 {
		return errors.New("show takes one file ID (see `p11escrow inspect FILE`), or --file FILE")
	}
	id, commitment, err := recordChoice(c, c.Args().First())
	if err != nil {
		return err
	}
	return withExistingStore(c, func(a *authority.Authority) error {
		r, err := a.FindRecord(c.Context, id, commitment)
		if err != nil {
			return err
		}
		wraps, err := a.Wraps(c.Context, r.FileID, r.Commitment)
		if err != nil {
			return err
		}
		labels, err := keyLabels(c.Context, a)
		if err != nil {
			return err
		}
		out := shownRecord{HeldRecord: r}
		for _, w := range wraps {
			out.Wraps = append(out.Wraps, shownWrap{Key: w.KeyFingerprint, Label: labels[w.KeyFingerprint], Hash: w.OAEPHash, Added: w.Added})
		}
		if c.Bool("json") {
			return printJSON(out)
		}
		// Every field may be outside text, or an old row written before the strict reader.
		fmt.Printf("file ID:       %s\n", safetext.Clean(r.FileID))
		fmt.Printf("commitment:    %s\n", safetext.Clean(r.Commitment))
		if r.SameID > 0 {
			fmt.Printf("warning:       %d other record(s) are held under this file ID (see `authority list`); name this one with --commitment %s\n", r.SameID, safetext.Clean(r.Commitment))
		}
		fmt.Printf("description:   %s\n", safetext.Clean(r.Description))
		fmt.Printf("owner:         %s (token %s, serial %s)\n", safetext.Clean(r.OwnerFingerprint),
			safetext.Quote(r.OwnerTokenLabel), safetext.Clean(r.OwnerTokenSerial))
		fmt.Printf("created:       %s\n", safetext.Clean(r.Created))
		fmt.Printf("taken in:      %s\n", safetext.Clean(r.IntakeTime))
		fmt.Printf("status:        %s\n", safetext.Clean(string(r.Status)))
		for _, w := range out.Wraps {
			how := "oaep " + safetext.Clean(w.Hash)
			if w.Hash == "" { // a wrap under an EC key (see store.Wrap)
				how = "ecdh"
			}
			fmt.Printf("wrapped under: authority key %s (%s, %s), since %s\n", safetext.Quote(w.Label),
				safetext.Clean(w.Key), how, safetext.Clean(w.Added))
		}
		return nil
	})
}
