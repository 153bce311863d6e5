package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
)

// Commands check their files before they open a token: a missing input or an output that may not
// be written should cost the user neither a PIN prompt nor one of the token's PIN tries.

// checkInputs checks that every named input (not "-") exists, is not a directory, and, if it is
// a regular file, can be opened for reading. A FIFO or device is not opened here: opening a FIFO
// would pair with its writer and then leave it writing to nobody; openInput waits for it.
func checkInputs(names ...string) error {
	for _, name := range names {
		if name == "-" {
			continue
		}
		fi, err := os.Stat(name)
		switch {
		case err != nil:
			return unwrapPath(err)
		case fi.IsDir():
			return fmt.Errorf("%s is a directory; name a file", name)
		case !fi.Mode().IsRegular():
			continue
		}
		f, err := os.Open(name)
		if err != nil {
			return unwrapPath(err)
		}
		f.Close()
	}
	return nil
}

// checkOutputs checks that every named output (not "-" or "") may be created: without force it
// must not exist, and its directory must be writable. An existing device or FIFO is left to
// createOutput, which writes to it in place, and so is /dev/fd/N (see isFDPath).
func checkOutputs(force bool, names ...string) error {
	for _, name := range names {
		if name == "-" || name == "" || isFDPath(name) {
			continue
		}
		fi, err := os.Lstat(name)
		switch {
		case err == nil && fi.IsDir():
			return fmt.Errorf("%s is a directory; name a file", name)
		case err == nil && !force && (fi.Mode().IsRegular() || fi.Mode()&fs.ModeSymlink != 0):
			return fmt.Errorf("%s already exists; use --force to replace it", name)
		case err == nil && !fi.Mode().IsRegular() && fi.Mode()&fs.ModeSymlink == 0:
			continue
		case err != nil && !errors.Is(err, fs.ErrNotExist):
			return unwrapPath(err)
		}
		dir := filepath.Dir(name)
		if err := syscall.Access(dir, 0x2 /* W_OK */); err != nil {
			return fmt.Errorf("%s cannot be written: directory %s: %w", name, dir, err)
		}
	}
	return nil
}
