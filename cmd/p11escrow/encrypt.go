package main

import (
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
	"github.com/urfave/cli/v2"
)

func encryptCommand() *cli.Command {
	return &cli.Command{
		Name:      "encrypt",
		Usage:     "encrypt files for your token's key and escrow each file's key with the authority",
		ArgsUsage: "IN... (- for stdin)",
		Flags: append(tokenFlags(),
			&cli.StringFlag{Name: "key", Usage: "your exchange key: its `LABEL` on the token, or a PKCS#11 URI"},
			&cli.StringFlag{Name: "authority", Usage: "the backup authority's public key `FILE` (PEM or DER key, or certificate) (default: $P11ESCROW_AUTHORITY)"},
			&cli.BoolFlag{Name: "no-escrow", Usage: "encrypt without an authority: nobody can recover the file if you lose your key"},
			&cli.StringSliceFlag{Name: "to", Usage: "also encrypt to this public key `FILE` (repeatable)"},
			&cli.StringFlag{Name: "description", Usage: "description for the escrow record (default: the input's name)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FILE` (default: IN.p11e; - for stdout); one input only"},
			&cli.StringFlag{Name: "escrow-record", Usage: "escrow record `FILE` (default: OUT.escrow.json); one input only"},
			&cli.BoolFlag{Name: "force", Usage: "replace existing output files"},
		),
		Action: encryptAction,
	}
}

// encryptJob is one input and where its results go.
type encryptJob struct {
	in, out, record, description string
}

// encryptPlan is what every file of one call shares: the token, the recipients, the owner.
type encryptPlan struct {
	s          *session
	recipients []escrow.Recipient
	owner      escrow.RecordOwner
	force      bool
}

func encryptAction(c *cli.Context) error {
	jobs, err := encryptJobs(c)
	if err != nil {
		return err
	}
	recipients, err := extraRecipients(c)
	if err != nil {
		return err
	}
	for _, j := range jobs {
		if err := checkInputs(j.in); err != nil {
			return err
		}
		if err := checkOutputs(c.Bool("force"), j.out, j.record); err != nil {
			return err
		}
	}
	return withSession(c, func(s *session) error {
		plan, err := newEncryptPlan(s, c.String("key"), recipients)
		if err != nil {
			return err
		}
		plan.force = c.Bool("force")
		return s.forEachJob(len(jobs), func(t *token.Token, i int) error {
			if err := plan.encrypt(t, jobs[i]); err != nil {
				return fmt.Errorf("%s: %w", jobs[i].in, err)
			}
			return nil
		})
	})
}

// encryptJobs checks the arguments before any token is touched.
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
	var jobs []encryptJob
	for _, in := range ins {
		j := encryptJob{in: in, out: c.String("output"), record: c.String("escrow-record"), description: c.String("description")}
		if j.out == "" {
			if in == "-" {
				return nil, usagef("reading stdin: name the output with -o (- for stdout)")
			}
			j.out = in + ".p11e"
		}
		if j.record == "" && !noEscrow {
			if j.out == "-" {
				return nil, usagef("writing to stdout: name the escrow record with --escrow-record")
			}
			j.record = j.out + ".escrow.json"
		}
		if j.description == "" && in != "-" {
			j.description = filepath.Base(in)
		}
		jobs = append(jobs, j)
	}
	if noEscrow {
		warn("--no-escrow: no backup authority holds these files' keys. If you lose your key or its token, the files are lost for good.")
	}
	return jobs, nil
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
		rs = append(rs, &escrow.RSARecipient{Public: k.pub, Hash: k.hash, Role: escrow.RoleAuthority})
	}
	for _, name := range c.StringSlice("to") {
		k, err := readPublicKey(name)
		if err != nil {
			return nil, err
		}
		rs = append(rs, &escrow.RSARecipient{Public: k.pub, Hash: k.hash, Role: escrow.RoleRecipient})
	}
	return rs, nil
}

// newEncryptPlan logs in once, finds the owner's key and decides its OAEP hash.
func newEncryptPlan(s *session, keyLabel string, others []escrow.Recipient) (*encryptPlan, error) {
	if err := s.login(); err != nil {
		return nil, err
	}
	kp, err := s.findKey(keyLabel)
	if err != nil {
		return nil, err
	}
	hash, err := kp.OAEPHash()
	if err != nil {
		return nil, err
	}
	fpr, err := escrow.FingerprintOf(kp.Public)
	if err != nil {
		return nil, err
	}
	info := s.token.Info()
	owner := &escrow.RSARecipient{Public: kp.Public, Hash: hash, Role: escrow.RoleOwner}
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
	if _, err := io.Copy(w, in); err != nil {
		return err
	}
	if err := w.Close(); err != nil {
		return err
	}
	if j.record != "" {
		if err := p.writeRecord(j, w.Header(), key); err != nil {
			return err
		}
	}
	if err := out.commit(); err != nil {
		return err
	}
	p.report(j, w.Header())
	return nil
}

// report says where a file went, on stderr, so that stdout can carry the ciphertext.
func (p *encryptPlan) report(j encryptJob, h *escrow.Header) {
	msg := fmt.Sprintf("%s: encrypted to %s, file ID %s", j.in, j.out, h.ID)
	if j.record != "" {
		msg += "; escrow record " + j.record + " (send it to the backup authority)"
	}
	fmt.Fprintln(os.Stderr, msg)
}

func (p *encryptPlan) writeRecord(j encryptJob, h *escrow.Header, key *token.FileKey) error {
	rec, err := escrow.NewRecord(h, key, j.description, p.owner, time.Now())
	if err != nil {
		return err
	}
	o, err := createOutput(j.record, p.force)
	if err != nil {
		return err
	}
	defer o.abort()
	if _, err := o.Write(rec.Marshal()); err != nil {
		return err
	}
	return o.commit()
}
