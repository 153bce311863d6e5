package main

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// output is a file written under a temporary name in its final directory and moved into place
// only by commit, so that a failure never leaves a partial file under the final name. "-" is
// stdout, which cannot be taken back: callers release only verified data to it.
type output struct {
	io.Writer
	file  *os.File
	final string
	force bool
}

// createOutput opens name for writing. Without force it refuses a name that exists.
func createOutput(name string, force bool) (*output, error) {
	if name == "-" {
		return &output{Writer: os.Stdout}, nil
	}
	if !force {
		if _, err := os.Lstat(name); err == nil {
			return nil, fmt.Errorf("%s already exists; use --force to replace it", name)
		}
	}
	dir, base := filepath.Split(name)
	if dir == "" {
		dir = "."
	}
	f, err := os.CreateTemp(dir, "."+base+".p11escrow-*")
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", name, unwrapPath(err))
	}
	return &output{Writer: f, file: f, final: name, force: force}, nil
}

// commit flushes the file and gives it its final name. Without force it never replaces a file
// that appeared meanwhile: a hard link fails if the name exists, where a rename would not.
func (o *output) commit() error {
	if o.file == nil {
		return nil
	}
	tmp := o.file.Name()
	err := o.file.Sync()
	if cerr := o.file.Close(); err == nil {
		err = cerr
	}
	o.file = nil
	if err == nil && o.force {
		err = os.Rename(tmp, o.final)
	} else if err == nil {
		err = os.Link(tmp, o.final)
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%s already exists; use --force to replace it", o.final)
		} else if err != nil { // a file system without hard links
			err = os.Rename(tmp, o.final)
		}
	}
	os.Remove(tmp)
	return err
}

// abort removes the temporary file. It is safe after commit.
func (o *output) abort() {
	if o.file != nil {
		o.file.Close()
		os.Remove(o.file.Name())
		o.file = nil
	}
}

// openInput opens a named file, or stdin for "-".
func openInput(name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, unwrapPath(err)
	}
	return f, nil
}

// unwrapPath turns "open x: no such file or directory" into "x: no such file or directory".
func unwrapPath(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return fmt.Errorf("%s: %w", pe.Path, pe.Err)
	}
	return err
}

// oneLine keeps an error message on one line, whatever a lower layer put in it.
func oneLine(err error) string {
	return strings.Join(strings.Fields(err.Error()), " ")
}
