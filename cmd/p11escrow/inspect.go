package main

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

func inspectCommand() *cli.Command {
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show a file's header or an escrow record, without any key",
		ArgsUsage: "IN (a .p11e file or an escrow record; - for stdin)",
		Flags:     []cli.Flag{&cli.BoolFlag{Name: "json", Usage: "print JSON"}},
		Action:    inspectAction,
	}
}

// fileSummary is what inspect shows of a file. Nothing in it is authenticated: that needs a key.
type fileSummary struct {
	FileID     string          `json:"file_id"`
	Commitment string          `json:"commitment"`
	ChunkSize  int             `json:"chunk_size"`
	Chunks     int64           `json:"chunks"`
	Stanzas    []stanzaSummary `json:"stanzas"`
	HeaderSize int             `json:"header_size"`
}

type stanzaSummary struct {
	Type  string `json:"type"`
	Role  string `json:"role,omitempty"`
	Tag   string `json:"key_tag,omitempty"`
	Hash  string `json:"oaep_hash,omitempty"`
	Curve string `json:"curve,omitempty"`
	Size  int    `json:"wrapped_size"`
}

func inspectAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("inspect takes one file")
	}
	in, err := openInput(c.Args().First())
	if err != nil {
		return err
	}
	defer in.Close()
	br := bufio.NewReader(in)
	if first, _ := br.Peek(1); len(first) == 1 && first[0] == '{' {
		return inspectRecord(br, c.Args().First(), c.Bool("json"))
	}
	return inspectFile(br, c.Bool("json"))
}

func inspectFile(r io.Reader, asJSON bool) error {
	h, payload, err := escrow.ParseHeader(r)
	if err != nil {
		return err
	}
	n, err := io.Copy(io.Discard, payload)
	if err != nil {
		return err
	}
	chunks, err := escrow.ChunkCount(n)
	if err != nil {
		return err
	}
	sum := fileSummary{FileID: h.ID.String(), Commitment: fmt.Sprintf("%x", h.Commitment),
		ChunkSize: escrow.ChunkSize, Chunks: chunks, HeaderSize: len(h.Marshal())}
	for _, s := range h.Stanzas {
		ss := stanzaSummary{Type: s.Type, Size: len(s.Body)}
		if t, err := escrow.ParseStanza(s); err == nil && t != nil {
			ss.Role, ss.Tag = string(t.Role()), t.Tag()
			switch r := t.(type) {
			case *escrow.RSAStanza:
				ss.Hash = r.HashName()
			case *escrow.ECStanza:
				ss.Curve = r.Curve
			}
		}
		sum.Stanzas = append(sum.Stanzas, ss)
	}
	if asJSON {
		return printJSON(sum)
	}
	fmt.Printf("p11escrow file, format v1\n")
	fmt.Printf("file ID:     %s\n", sum.FileID)
	fmt.Printf("payload:     %d chunk(s) of up to %d bytes\n", sum.Chunks, sum.ChunkSize)
	fmt.Printf("commitment:  %s\n", sum.Commitment)
	fmt.Printf("stanzas:\n")
	for _, s := range sum.Stanzas {
		if s.Role == "" {
			fmt.Printf("  %-9s (unknown type %s, %d bytes)\n", "?", safetext.Quote(s.Type), s.Size)
			continue
		}
		kind := "rsa-oaep-" + s.Hash
		if s.Curve != "" {
			kind = "ecdh-" + s.Curve
		}
		fmt.Printf("  %-9s  key tag %s  %s  %d-byte wrap\n", s.Role, s.Tag, kind, s.Size)
	}
	fmt.Printf("(nothing here is authenticated until a key opens the file)\n")
	return nil
}

func inspectRecord(r io.Reader, name string, asJSON bool) error {
	data, err := readLimited(r, name, "an escrow record", maxRecordFile)
	if err != nil {
		return err
	}
	rec, err := escrow.ParseRecord(data)
	if err != nil {
		return err
	}
	if asJSON {
		return printJSON(rec)
	}
	fmt.Printf("p11escrow escrow record, format v1\n")
	fmt.Printf("file ID:      %s\n", rec.FileID)
	fmt.Printf("description:  %s\n", safetext.Clean(rec.Description))
	fmt.Printf("created:      %s\n", rec.Created)
	fmt.Printf("owner:        %s (token %s, serial %s)\n", rec.Owner.Fingerprint, safetext.Quote(rec.Owner.TokenLabel), safetext.Clean(rec.Owner.TokenSerial))
	kind := "rsa-oaep-" + rec.Authority.Hash
	if rec.Authority.Type != "" {
		kind = rec.Authority.Type + "-" + rec.Authority.Curve
	}
	fmt.Printf("authority:    key tag %s, %s, %d-byte wrap\n", rec.Authority.KeyTag, kind, len(rec.Authority.WrappedKey))
	fmt.Printf("(the authority verifies the record with `p11escrow authority verify`)\n")
	return nil
}

func printJSON(v any) error {
	enc := json.NewEncoder(os.Stdout)
	enc.SetIndent("", "  ")
	return enc.Encode(v)
}
