package main

import (
	"errors"
	"fmt"
	"os"
	"time"

	"golang.org/x/sys/unix"
)

// errNoUnnamed says the directory's file system cannot make unnamed files.
var errNoUnnamed = errors.New("no unnamed temporary files here")

// openUnnamed creates a file without a name in dir (O_TMPFILE). Only linkFile can give it one;
// until then no other process can open it, and it vanishes when the process ends, however it
// ends.
func openUnnamed(dir string) (*os.File, error) {
	fd, err := unix.Open(dir, unix.O_TMPFILE|unix.O_WRONLY|unix.O_CLOEXEC, 0o600)
	switch {
	// EOPNOTSUPP: the file system lacks it; EISDIR or EINVAL: the kernel predates it.
	case errors.Is(err, unix.EOPNOTSUPP) || errors.Is(err, unix.EISDIR) || errors.Is(err, unix.EINVAL):
		return nil, errNoUnnamed
	case err != nil:
		return nil, &os.PathError{Op: "open", Path: dir, Err: err}
	}
	return os.NewFile(uintptr(fd), dir), nil
}

// linkFile gives the unnamed file f the name name, failing with fs.ErrExist if it is taken.
// Linking through /proc/self/fd needs no privilege; AT_EMPTY_PATH, for a system without /proc,
// needs CAP_DAC_READ_SEARCH.
func linkFile(f *os.File, name string) error {
	proc := fmt.Sprintf("/proc/self/fd/%d", f.Fd())
	err := unix.Linkat(unix.AT_FDCWD, proc, unix.AT_FDCWD, name, unix.AT_SYMLINK_FOLLOW)
	if errors.Is(err, unix.ENOENT) {
		if _, serr := os.Stat("/proc/self/fd"); serr != nil {
			err = unix.Linkat(int(f.Fd()), "", unix.AT_FDCWD, name, unix.AT_EMPTY_PATH)
		}
	}
	if err != nil {
		return &os.PathError{Op: "link", Path: name, Err: err}
	}
	return nil
}

// openInPlace opens a device, FIFO or /dev/fd/N for writing. A FIFO is opened without blocking,
// retried for up to fifoWait while no process reads it, then refused: never waited on forever.
func openInPlace(name string) (*os.File, error) {
	deadline := time.Now().Add(fifoWait)
	for {
		fd, err := unix.Open(name, unix.O_WRONLY|unix.O_NONBLOCK|unix.O_CLOEXEC|unix.O_NOCTTY, 0)
		if errors.Is(err, unix.ENXIO) && time.Now().Before(deadline) {
			time.Sleep(10 * time.Millisecond)
			continue
		}
		if errors.Is(err, unix.ENXIO) {
			return nil, fmt.Errorf("%s: a FIFO that no process opened for reading within %v; start the reader first", name, fifoWait)
		}
		if err != nil {
			return nil, unwrapPath(&os.PathError{Op: "open", Path: name, Err: err})
		}
		if err := unix.SetNonblock(fd, false); err != nil {
			unix.Close(fd)
			return nil, unwrapPath(&os.PathError{Op: "open", Path: name, Err: err})
		}
		return os.NewFile(uintptr(fd), name), nil
	}
}
