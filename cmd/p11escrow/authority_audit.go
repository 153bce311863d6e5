package main

import (
	"bytes"
	"context"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"
	"text/tabwriter"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

func auditCommand() *cli.Command {
	return &cli.Command{
		Name:  "audit",
		Usage: "print the hash-chained audit log, or verify it",
		Flags: storeFlags(
			&cli.BoolFlag{Name: "json", Usage: "print JSON"},
			&cli.BoolFlag{Name: "verify", Usage: "check every entry's hash and the chain; name the first bad entry"},
			&cli.StringSliceFlag{Name: "anchor", Usage: "with --verify, also check that entry SEQ has the hash recorded elsewhere earlier (`SEQ:HASH`, as --verify prints); repeatable"},
		),
		Action: auditAction,
	}
}

func backupCommand() *cli.Command {
	return &cli.Command{
		Name:  "backup",
		Usage: "write a consistent copy of the authority's database, safe while other commands run",
		Flags: storeFlags(
			&cli.StringFlag{Name: "out", Required: true, Usage: "backup `FILE`"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing file"},
		),
		Action: backupAction,
	}
}

// backupAction lets SQLite write the copy into the empty temporary file of createNamedOutput, which
// is then synced and moved into place like every other output.
func backupAction(c *cli.Context) error {
	return withExistingStore(c, func(a *authority.Authority) error {
		o, err := createNamedOutput(c.String("out"), c.Bool("force"))
		if err != nil {
			return err
		}
		defer o.abort()
		if o.direct {
			return errors.New("a backup is written to a regular file, not stdout or a device")
		}
		if err := a.Backup(c.Context, o.tmp); err != nil {
			return err
		}
		if err := o.commit(); err != nil {
			return err
		}
		fmt.Printf("database backed up to %s; check it with `p11escrow authority audit --verify --db %s`\n", c.String("out"), c.String("out"))
		return nil
	})
}

func auditAction(c *cli.Context) error {
	return withExistingStore(c, func(a *authority.Authority) error {
		if c.Bool("verify") {
			return verifyAudit(c.Context, a, c.StringSlice("anchor"))
		}
		entries, err := a.Audit(c.Context)
		if err != nil {
			return err
		}
		if c.Bool("json") {
			if entries == nil {
				entries = []*authority.AuditEntry{}
			}
			return printJSON(entries)
		}
		w := tabwriter.NewWriter(os.Stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintf(w, "SEQ\tTIME\tACTOR\tACTION\tDETAILS\n")
		for _, e := range entries {
			fmt.Fprintf(w, "%d\t%s\t%s\t%s\t%s\n", e.Seq, safetext.Clean(e.Time), safetext.Clean(e.Actor),
				safetext.Clean(e.Action), safetext.Clean(e.Details))
		}
		return w.Flush()
	})
}

// verifyAudit checks the chain and any anchors. The head it prints is what an operator records
// outside the database (a ticket, a signed mail, another machine), because someone who can
// rewrite the whole database can rebuild a consistent chain; an anchor recorded earlier cannot
// be rebuilt.
func verifyAudit(ctx context.Context, a *authority.Authority, anchors []string) error {
	n, head, err := a.VerifyAudit(ctx)
	if err != nil {
		return err
	}
	if err := checkAnchors(ctx, a, anchors); err != nil {
		return err
	}
	fmt.Printf("audit log verified: %d entries; head %d:%s\n", n, n, hex.EncodeToString(head))
	return nil
}

func checkAnchors(ctx context.Context, a *authority.Authority, anchors []string) error {
	if len(anchors) == 0 {
		return nil
	}
	entries, err := a.Audit(ctx)
	if err != nil {
		return err
	}
	for _, an := range anchors {
		seqText, hashText, ok := strings.Cut(an, ":")
		seq, err := strconv.ParseInt(seqText, 10, 64)
		want, herr := hex.DecodeString(hashText)
		if !ok || err != nil || herr != nil || seq < 1 {
			return fmt.Errorf("--anchor %q is not SEQ:HASH as `audit --verify` prints it", an)
		}
		if seq > int64(len(entries)) {
			return &authority.AuditError{Seq: seq, Reason: "the log no longer reaches this anchored entry (its end was cut off)"}
		}
		if !bytes.Equal(entries[seq-1].Hash, want) {
			return &authority.AuditError{Seq: seq, Reason: "its hash differs from the anchor recorded earlier (the log was rewritten)"}
		}
	}
	return nil
}
