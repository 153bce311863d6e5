//go:build !linux

package main

import (
	"errors"
	"os"
)

// errNoUnnamed says the system cannot make unnamed files: outputs use named temporary files,
// removed on error and on signals.
var errNoUnnamed = errors.New("no unnamed temporary files here")

func openUnnamed(string) (*os.File, error) { return nil, errNoUnnamed }

func linkFile(*os.File, string) error { return errNoUnnamed }

// openInPlace opens a device, FIFO or /dev/fd/N for writing.
func openInPlace(name string) (*os.File, error) {
	f, err := os.OpenFile(name, os.O_WRONLY, 0)
	if err != nil {
		return nil, unwrapPath(err)
	}
	return f, nil
}
