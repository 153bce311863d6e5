package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
	"github.com/urfave/cli/v2"
	"golang.org/x/term"
)

func encryptCommand() *cli.Command {
	return &cli.Command{
		Name:      "encrypt",
		Usage:     "encrypt files for your token's key and escrow each file's key with the authority",
		ArgsUsage: "IN... (- for stdin)",
		Flags: append(append(tokenFlags(),
			&cli.StringFlag{Name: "key", Usage: "your exchange key: its `LABEL` on the token, or a PKCS#11 URI"},
			&cli.StringFlag{Name: "authority", Usage: "the backup authority's public key `FILE` (PEM or DER key, or certificate) (default: $P11ESCROW_AUTHORITY)"},
			&cli.BoolFlag{Name: "no-escrow", Usage: "encrypt without an authority: nobody can recover the file if you lose your key"},
			&cli.StringSliceFlag{Name: "to", Usage: "also encrypt to this public key `FILE` (repeatable)"},
			&cli.StringFlag{Name: "description", Usage: "description for the escrow record (default: the input's name)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FILE` (default: IN.p11e for a regular file; - for stdout); one input only"},
			&cli.StringFlag{Name: "escrow-record", Usage: "escrow record `FILE` (default: OUT.escrow.json); one input only"},
			&cli.BoolFlag{Name: "force", Usage: "replace existing output files"},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "say nothing about each file, only warnings and errors"},
			&cli.BoolFlag{Name: "require-receipt", Usage: "fail, and leave no encrypted file, when the authority's service cannot be reached (default: spool the record)"},
		), submitFlags()...),
		Action: encryptAction,
	}
}

// encryptJob is one input and where its results go. replaceRecord says the record's name holds
// an orphan record, whose file never appeared, to be replaced.
type encryptJob struct {
	in, out, record, description string
	replaceRecord                bool
}

// encryptPlan is what every file of one call shares: the token, the recipients, the owner.
type encryptPlan struct {
	s          *session
	recipients []escrow.Recipient
	owner      escrow.RecordOwner
	force      bool
	sub        *submitter // nil: records are sent by hand
	require    bool       // --require-receipt
	batch      *batch     // what is said about each file
}

func encryptAction(c *cli.Context) error {
	jobs, err := encryptJobs(c)
	if err != nil || len(jobs) == 0 {
		return err
	}
	recipients, err := extraRecipients(c)
	if err != nil {
		return err
	}
	var sub *submitter
	if !c.Bool("no-escrow") {
		if sub, err = newSubmitter(c); err != nil {
			return err
		}
	}
	if c.Bool("require-receipt") && sub == nil {
		return usagef("--require-receipt needs --authority-url (or $P11ESCROW_AUTHORITY_URL)")
	}
	for _, j := range jobs {
		if err := checkInputs(j.in); err != nil {
			return err
		}
		if err := checkOutputs(c.Bool("force"), j.out); err != nil {
			return err
		}
		// An orphan record is replaced without --force (see checkDone).
		if err := checkOutputs(c.Bool("force") || j.replaceRecord, j.record); err != nil {
			return err
		}
	}
	return withSession(c, func(s *session) error {
		plan, err := newEncryptPlan(s, c.String("key"), recipients)
		if err != nil {
			return err
		}
		plan.force, plan.sub, plan.require = c.Bool("force"), sub, c.Bool("require-receipt")
		plan.batch = &batch{total: len(jobs), quiet: c.Bool("quiet")}
		err = s.forEachJob(len(jobs), func(t *token.Token, i int) error {
			if err := plan.encrypt(t, jobs[i]); err != nil {
				return fmt.Errorf("%s: %w", jobs[i].in, err)
			}
			return nil
		})
		if err == nil {
			plan.batch.summary("encrypt", "encrypted", c.NArg()-len(jobs))
		}
		return err
	})
}

// errTerminal refuses to write ciphertext to a terminal, as age does: it is useless there, and
// its bytes can drive the terminal.
var errTerminal = errors.New("refusing to write ciphertext to a terminal; redirect it, or name a file with -o")

// encryptJobs checks the arguments and the file system before any token is touched.
func encryptJobs(c *cli.Context) ([]encryptJob, error) {
	ins := c.Args().Slice()
	if len(ins) == 0 {
		return nil, usagef("no input files; give one or more, or - for stdin")
	}
	auth, noEscrow := authorityFile(c), c.Bool("no-escrow")
	if auth == "" && !noEscrow {
		return nil, usagef("no --authority (or $P11ESCROW_AUTHORITY): every file's key is escrowed; to encrypt without escrow, say --no-escrow")
	}
	if auth != "" && noEscrow {
		return nil, usagef("--authority and --no-escrow contradict each other")
	}
	if len(ins) > 1 && (c.String("output") != "" || c.String("escrow-record") != "") {
		return nil, usagef("-o and --escrow-record name one file; with several inputs, outputs are IN.p11e")
	}
	if c.String("output") == "-" && term.IsTerminal(int(os.Stdout.Fd())) {
		return nil, errTerminal
	}
	var jobs []encryptJob
	for _, in := range ins {
		j := encryptJob{in: in, out: c.String("output"), record: c.String("escrow-record"), description: c.String("description")}
		if j.out == "" {
			if in == "-" {
				return nil, usagef("reading stdin: name the output with -o (- for stdout)")
			}
			if strings.HasSuffix(in, ".p11e") || strings.HasSuffix(in, ".escrow.json") {
				warn("%s: skipped, it is already p11escrow's output; to encrypt it again, name the output with -o", in)
				continue
			}
			// The default output sits next to the input, which only makes sense for a regular
			// file: for /dev/null it would be /dev/null.p11e, a file in /dev. age writes to
			// stdout instead; we ask, so that ciphertext never lands on a terminal by surprise.
			if fi, err := os.Stat(in); err == nil && !fi.Mode().IsRegular() {
				return nil, fmt.Errorf("%s is not a regular file: name the output with -o (- for stdout)", in)
			}
			j.out = in + ".p11e"
		}
		if j.record == "" && !noEscrow {
			if j.out == "-" {
				return nil, usagef("writing to stdout: name the escrow record with --escrow-record")
			}
			if fi, err := os.Stat(j.out); (err == nil && !fi.Mode().IsRegular()) || isFDPath(j.out) {
				return nil, fmt.Errorf("writing to %s, which is not a regular file: name the escrow record with --escrow-record", j.out)
			}
			j.record = j.out + ".escrow.json"
		}
		if j.description == "" && in != "-" {
			j.description = filepath.Base(in)
		}
		skip, err := j.checkDone(c.Bool("force"))
		if err != nil {
			return nil, err
		}
		if !skip {
			jobs = append(jobs, j)
		}
	}
	if noEscrow && len(jobs) > 0 {
		warn("--no-escrow: no backup authority holds these files' keys. If you lose your key or its token, the files are lost for good.")
	}
	return jobs, nil
}

// checkDone applies the rules that make an interrupted batch safe to run again. encrypt moves a
// file's record into place before the file itself, so:
//   - an output that exists with its record (or with --no-escrow) is a finished job, skipped
//     with a warning, unless its input changed after it was written;
//   - a record without its output is an orphan of an interrupted run: it protects no file,
//     so it is replaced;
//   - an output without the record it should have was not made by this rule, and is refused.
//
// With force every output is replaced.
func (j *encryptJob) checkDone(force bool) (skip bool, err error) {
	if force || j.out == "-" {
		return false, nil
	}
	outInfo, outErr := os.Lstat(j.out)
	_, recErr := os.Lstat(j.record)
	hasRecord := j.record == "" || recErr == nil
	switch {
	case outErr != nil && j.record != "" && recErr == nil:
		j.replaceRecord = true
		return false, nil
	case outErr != nil || !outInfo.Mode().IsRegular():
		return false, nil // no output yet, or a device or FIFO, which is written in place
	case !hasRecord || j.in == "-":
		return false, fmt.Errorf("%s already exists; use --force to replace it", j.out)
	}
	if in, err := os.Stat(j.in); err == nil && in.ModTime().After(outInfo.ModTime()) {
		return false, fmt.Errorf("%s already exists, and %s changed after it was written; use --force to replace it", j.out, j.in)
	}
	warn("%s: skipped, %s already exists; use --force to encrypt it again", j.in, j.out)
	return true, nil
}

// authorityEnv names the authority's public key file for every encrypt, so that an organisation
// sets it once.
const authorityEnv = "P11ESCROW_AUTHORITY"

// authorityFile is --authority, else $P11ESCROW_AUTHORITY unless --no-escrow says otherwise: an
// explicit choice on the command line beats the environment.
func authorityFile(c *cli.Context) string {
	if a := c.String("authority"); a != "" || c.Bool("no-escrow") {
		return a
	}
	return os.Getenv(authorityEnv)
}

// extraRecipients reads --authority and every --to.
func extraRecipients(c *cli.Context) ([]escrow.Recipient, error) {
	var rs []escrow.Recipient
	if name := authorityFile(c); name != "" {
		k, err := readPublicKey(name)
		if err != nil {
			return nil, err
		}
		rs = append(rs, k.recipient(escrow.RoleAuthority))
	}
	for _, name := range c.StringSlice("to") {
		k, err := readPublicKey(name)
		if err != nil {
			return nil, err
		}
		rs = append(rs, k.recipient(escrow.RoleRecipient))
	}
	return rs, nil
}

// newEncryptPlan logs in once, finds the owner's key and decides its OAEP hash (cached: see
// oaepHashFor).
func newEncryptPlan(s *session, keyLabel string, others []escrow.Recipient) (*encryptPlan, error) {
	if err := s.login(); err != nil {
		return nil, err
	}
	kp, err := s.findExchangeKey(keyLabel)
	if err != nil {
		return nil, err
	}
	if _, ok := kp.(ecExchangeKey); ok {
		// The owner must be able to open what is encrypted to them: an EC key opens its stanza
		// only with C_DeriveKey on its token.
		if c, err := s.token.Capabilities(); err == nil && !c.ECDHDerive {
			return nil, fmt.Errorf("token %q cannot derive with EC keys (no CKM_ECDH1_DERIVE), so it could not open files encrypted to EC key %q; use an RSA key on it", s.token.Info().Label, kp.label())
		}
	}
	if a, err := kp.attributes(); err == nil && !a.NeverLeftToken() {
		warn("key %q was not generated on token %q, or was once extractable, so a copy of it may exist elsewhere; for a key that never left the token, use `p11escrow key generate`", kp.label(), s.token.Info().Label)
	}
	owner, err := kp.recipient(escrow.RoleOwner)
	if err != nil {
		return nil, err
	}
	fpr, err := escrow.FingerprintOf(kp.public())
	if err != nil {
		return nil, err
	}
	info := s.token.Info()
	return &encryptPlan{
		s:          s,
		recipients: append([]escrow.Recipient{owner}, others...),
		owner:      escrow.RecordOwner{Fingerprint: fpr.String(), TokenLabel: info.Label, TokenSerial: info.Serial},
	}, nil
}

// encrypt encrypts one file on the token session t. Several run at once, one per session; the
// plan is shared and read-only. The record is moved into place before the file, so that a file
// never exists without its escrow record.
func (p *encryptPlan) encrypt(t *token.Token, j encryptJob) error {
	in, err := openInput(j.in)
	if err != nil {
		return err
	}
	defer in.Close()
	out, err := createOutput(j.out, p.force)
	if err != nil {
		return err
	}
	defer out.abort()
	if out.isTerminal() {
		return errTerminal
	}
	id := escrow.NewFileID()
	key, err := t.NewFileKey(id[:])
	if err != nil {
		return err
	}
	defer key.Destroy()
	w, err := escrow.Encrypt(out, id, key, p.recipients...)
	if err != nil {
		return err
	}
	src, stopMeter := io.Reader(in), func() {}
	if p.batch.total == 1 {
		src, stopMeter = startMeter(in, j.in, inputSize(j.in), p.batch.quiet)
	}
	_, err = io.Copy(w, src)
	stopMeter()
	if err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	escrowed := ""
	if j.record != "" {
		rec, err := p.writeRecord(j, w.Header(), key)
		if err != nil {
			return err
		}
		if p.sub != nil {
			if escrowed, err = p.submit(j, w.Header(), rec); err != nil {
				return err
			}
		}
	}
	if err := out.commit(); err != nil {
		return err
	}
	p.report(j, w.Header(), escrowed)
	return nil
}

// receiptName is where a file's receipt goes: FILE.p11e.receipt.json beside its record.
func receiptName(record string) string {
	return strings.TrimSuffix(record, ".escrow.json") + ".receipt.json"
}

// submit sends the record to the authority's service before the file gets its name, and
// stores the receipt; if the service cannot be reached, it spools the record (or, with
// --require-receipt, fails, so that no file exists without its receipt). It returns what
// report says about it.
func (p *encryptPlan) submit(j encryptJob, h *escrow.Header, rec []byte) (string, error) {
	receipt := receiptName(j.record)
	r, raw, err := p.sub.submit(context.Background(), rec, h)
	var down errUnreachable
	switch {
	case errors.As(err, &down) && p.require:
		return "", fmt.Errorf("%w; --require-receipt: the file was not written (its record is in %s)", err, j.record)
	case errors.As(err, &down):
		name, serr := spool(rec, receipt)
		if serr != nil {
			return "", fmt.Errorf("%v, and the record could not be spooled: %v", err, serr)
		}
		warn("%s: %v; the record waits in %s: run `p11escrow escrow sync` later", j.in, oneLine(err), name)
		return "; record spooled for the authority (run `p11escrow escrow sync`)", nil
	case err != nil:
		return "", err
	}
	if err := writeReceipt(receipt, raw); err != nil {
		return "", err
	}
	return fmt.Sprintf("; escrowed with the authority, receipt %s (audit entry %d)", receipt, r.AuditSeq), nil
}

// report says where a file went, on stderr, so that stdout can carry the ciphertext.
func (p *encryptPlan) report(j encryptJob, h *escrow.Header, escrowed string) {
	msg := fmt.Sprintf("%s: encrypted to %s, file ID %s", j.in, j.out, h.ID)
	switch {
	case escrowed != "":
		msg += escrowed
	case j.record != "":
		msg += "; escrow record " + j.record + " (send it to the backup authority)"
	}
	p.batch.line(msg)
}

func (p *encryptPlan) writeRecord(j encryptJob, h *escrow.Header, key *token.FileKey) ([]byte, error) {
	rec, err := escrow.NewRecord(h, key, j.description, p.owner, time.Now())
	if err != nil {
		return nil, err
	}
	o, err := createOutput(j.record, p.force || j.replaceRecord)
	if err != nil {
		return nil, err
	}
	defer o.abort()
	data := rec.Marshal()
	if _, err := o.Write(data); err != nil {
		return nil, err
	}
	return data, o.commit()
}
