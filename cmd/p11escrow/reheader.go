package main

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

func reheaderCommand() *cli.Command {
	return &cli.Command{
		Name:      "reheader",
		Usage:     "replace a file's header with one the authority re-issued; the payload is copied unchanged",
		ArgsUsage: "IN",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "header", Required: true, Usage: "the re-issued header `FILE` (from `authority recover`)"},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FILE` (default: replace IN)"},
			&cli.BoolFlag{Name: "force", Usage: "replace an existing output file"},
		},
		Action: reheaderAction,
	}
}

// reheaderAction writes the new header and then IN's payload bytes, through a temporary file.
// It refuses a header whose core (file ID and key commitment) differs from IN's: the payload
// binds the core, so such a header belongs to another file. It cannot check the new header's
// MAC, which needs the key; the new owner's decrypt does.
func reheaderAction(c *cli.Context) error {
	if c.NArg() != 1 {
		return errors.New("reheader takes one encrypted file")
	}
	in := c.Args().First()
	newHeader, err := readHeaderFile(c.String("header"))
	if err != nil {
		return err
	}
	out, force := c.String("output"), c.Bool("force")
	if out == "" || out == in {
		out, force = in, true // replacing IN is what reheader is for; the rename is atomic
	}
	src, err := os.Open(in)
	if err != nil {
		return unwrapPath(err)
	}
	defer src.Close()
	old, payload, err := escrow.ParseHeader(src)
	if err != nil {
		return fmt.Errorf("%s: %w", in, err)
	}
	if old.ID != newHeader.ID || old.Commitment != newHeader.Commitment {
		return fmt.Errorf("the header is for file %s, not for %s (file %s); refusing", newHeader.ID, in, old.ID)
	}
	o, err := createOutput(out, force)
	if err != nil {
		return err
	}
	defer o.abort()
	if _, err := o.Write(newHeader.Marshal()); err != nil {
		return err
	}
	if _, err := io.Copy(o, payload); err != nil {
		return err
	}
	if err := o.commit(); err != nil {
		return err
	}
	fmt.Fprintf(os.Stderr, "%s: header replaced (file %s); written to %s\n", safetext.Clean(in), old.ID, safetext.Clean(out))
	return nil
}

// readHeaderFile parses a file that holds exactly one header and nothing after it.
func readHeaderFile(name string) (*escrow.Header, error) {
	data, err := readFileLimited(name, "a header file", maxHeaderFile)
	if err != nil {
		return nil, err
	}
	h, rest, err := escrow.ParseHeader(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", name, err)
	}
	if n, _ := io.Copy(io.Discard, rest); n != 0 {
		return nil, fmt.Errorf("%s: %d bytes follow the header; a header file holds only the header", name, n)
	}
	return h, nil
}
