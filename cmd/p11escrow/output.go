package main

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/term"
)

// output is where a command writes a result. A regular file is written first where no one can
// see it and takes its final name only in commit, so that a failure or a kill never leaves a
// partial file, or any plaintext, behind:
//
//   - on Linux, an unnamed file in the final directory (O_TMPFILE), linked to its name once it is
//     complete and synced; a crash, even kill -9, leaves nothing, because the file has no name;
//   - where the file system has no unnamed files, a hidden temporary file, removed on error and
//     on SIGINT, SIGTERM and SIGHUP (only kill -9 or a power cut can leave it);
//
// Stdout ("-"), character devices (/dev/null, a terminal), FIFOs and /dev/fd/N are written in
// place: they cannot be replaced, so callers release only verified data to them.
type output struct {
	io.Writer
	file   *os.File
	final  string
	force  bool
	tmp    string // the hidden temporary file's name; "" if unnamed or direct
	direct bool   // written in place
}

// createOutput opens name for writing. Without force it refuses a regular file that exists.
func createOutput(name string, force bool) (*output, error) {
	return newOutput(name, force, true)
}

// createNamedOutput is createOutput for a writer that needs a path to write to (SQLite's
// VACUUM INTO): the file is always a named temporary file, found in o.tmp.
func createNamedOutput(name string, force bool) (*output, error) {
	return newOutput(name, force, false)
}

// useUnnamed is false only in tests of the fallback for file systems without unnamed files.
var useUnnamed = true

func newOutput(name string, force, unnamed bool) (*output, error) {
	if name == "-" {
		return &output{Writer: os.Stdout, file: os.Stdout, final: name, direct: true}, nil
	}
	if fi, err := os.Stat(name); err == nil && !fi.Mode().IsRegular() || isFDPath(name) {
		if err == nil && fi.IsDir() {
			return nil, fmt.Errorf("%s is a directory", name)
		}
		f, err := openInPlace(name)
		if err != nil {
			return nil, err
		}
		return &output{Writer: f, file: f, final: name, direct: true}, nil
	}
	if !force {
		if _, err := os.Lstat(name); err == nil {
			return nil, fmt.Errorf("%s already exists; use --force to replace it", name)
		}
	}
	dir := filepath.Dir(name)
	if unnamed && useUnnamed {
		f, err := openUnnamed(dir)
		if err == nil {
			return &output{Writer: f, file: f, final: name, force: force}, nil
		}
		if !errors.Is(err, errNoUnnamed) {
			return nil, fmt.Errorf("creating %s: %w", name, unwrapPath(err))
		}
	}
	f, err := createTemp(dir, filepath.Base(name))
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", name, unwrapPath(err))
	}
	return &output{Writer: f, file: f, final: name, force: force, tmp: f.Name()}, nil
}

// isFDPath reports whether name is one of the process's open files (/dev/fd/N, /dev/stdout, or a
// link to one), which is written in place whatever it is: the shell opened it for this command.
func isFDPath(name string) bool {
	fdPath := func(p string) bool {
		return strings.HasPrefix(p, "/dev/fd/") || strings.HasPrefix(p, "/proc/self/fd/")
	}
	if fdPath(name) {
		return true
	}
	target, err := os.Readlink(name)
	return err == nil && (fdPath(target) || target == "/dev/stdout" || target == "/dev/stderr")
}

// isTerminal reports whether the output is a terminal.
func (o *output) isTerminal() bool {
	return o.direct && term.IsTerminal(int(o.file.Fd()))
}

// commit makes the output whole: it syncs the file and gives it its final name. Without force it
// never replaces a file that appeared meanwhile: a link fails if the name exists, where a rename
// would not.
func (o *output) commit() error {
	if o.file == nil {
		return nil
	}
	f := o.file
	o.file = nil
	if o.direct {
		if f == os.Stdout {
			return nil
		}
		return f.Close()
	}
	err := f.Sync()
	if err == nil && o.tmp == "" {
		err = o.linkUnnamed(f)
	} else if err == nil {
		err = o.renameNamed()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if o.tmp != "" {
		forgetTemp(o.tmp)
	}
	return err
}

// linkUnnamed gives the unnamed file f its final name; with force, through a hidden name and a
// rename, which replaces the old file atomically.
func (o *output) linkUnnamed(f *os.File) error {
	if !o.force {
		err := linkFile(f, o.final)
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("%s already exists; use --force to replace it", o.final)
		}
		return err
	}
	for range 100 {
		tmp := tempName(filepath.Dir(o.final), filepath.Base(o.final))
		err := linkFile(f, tmp)
		if errors.Is(err, fs.ErrExist) {
			continue
		}
		if err != nil {
			return err
		}
		if err := os.Rename(tmp, o.final); err != nil {
			os.Remove(tmp)
			return err
		}
		return nil
	}
	return fmt.Errorf("creating %s: no free temporary name", o.final)
}

// renameNamed moves the hidden temporary file to its final name.
func (o *output) renameNamed() error {
	var err error
	if o.force {
		err = os.Rename(o.tmp, o.final)
	} else {
		err = os.Link(o.tmp, o.final)
		if errors.Is(err, fs.ErrExist) {
			err = fmt.Errorf("%s already exists; use --force to replace it", o.final)
		} else if err != nil { // a file system without hard links
			err = os.Rename(o.tmp, o.final)
		}
	}
	os.Remove(o.tmp)
	return err
}

// abort discards the output: an unnamed file vanishes when it is closed, a named one is
// removed. It is safe after commit.
func (o *output) abort() {
	if o.file == nil {
		return
	}
	if o.file != os.Stdout {
		o.file.Close()
	}
	if o.tmp != "" {
		os.Remove(o.tmp)
		forgetTemp(o.tmp)
	}
	o.file = nil
}

// The named temporary files that exist now, removed if a signal ends the process.
var temps struct {
	sync.Mutex
	names    map[string]bool
	watching bool
}

// createTemp creates a hidden temporary file for base in dir and registers it for removal on
// SIGINT, SIGTERM and SIGHUP.
func createTemp(dir, base string) (*os.File, error) {
	temps.Lock()
	defer temps.Unlock()
	f, err := os.CreateTemp(dir, "."+base+".p11escrow-*")
	if err != nil {
		return nil, err
	}
	if temps.names == nil {
		temps.names = map[string]bool{}
	}
	temps.names[f.Name()] = true
	if !temps.watching {
		temps.watching = true
		sigs := make(chan os.Signal, 1)
		signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP)
		go func() {
			sig := <-sigs
			removeTemps()
			// Die of the signal, as the process would have without the handler.
			signal.Reset(sig)
			syscall.Kill(os.Getpid(), sig.(syscall.Signal))
		}()
	}
	return f, nil
}

// removeTemps removes every registered temporary file, and keeps new ones from being made.
// The lock stays held: the process is about to die.
func removeTemps() {
	temps.Lock()
	for name := range temps.names {
		os.Remove(name)
	}
	temps.names = nil
}

func forgetTemp(name string) {
	temps.Lock()
	delete(temps.names, name)
	temps.Unlock()
}

// fifoWait is how long a FIFO input or output may wait for the process at its other end.
var fifoWait = 10 * time.Second

// openInput opens a named file, or stdin for "-". A FIFO is read as a stream, as stdin is, once
// a process opens it for writing; if none does within fifoWait, it is refused.
func openInput(name string) (io.ReadCloser, error) {
	if name == "-" {
		return io.NopCloser(os.Stdin), nil
	}
	if fi, err := os.Stat(name); err == nil && fi.Mode()&fs.ModeNamedPipe != 0 {
		return openFIFO(name)
	}
	f, err := os.Open(name)
	if err != nil {
		return nil, unwrapPath(err)
	}
	return f, nil
}

// openFIFO opens a FIFO for reading, waiting at most fifoWait for a writer. An open that is
// still waiting then is left to the process's end, which an error brings soon.
func openFIFO(name string) (*os.File, error) {
	type result struct {
		f   *os.File
		err error
	}
	ch := make(chan result, 1)
	go func() {
		f, err := os.Open(name)
		ch <- result{f, err}
	}()
	select {
	case r := <-ch:
		if r.err != nil {
			return nil, unwrapPath(r.err)
		}
		return r.f, nil
	case <-time.After(fifoWait):
		return nil, fmt.Errorf("%s: a FIFO that no process opened for writing within %v; start the writer first", name, fifoWait)
	}
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

// tempName returns a hidden, random name for base in dir.
func tempName(dir, base string) string {
	var b [8]byte
	rand.Read(b[:])
	return filepath.Join(dir, fmt.Sprintf(".%s.p11escrow-%x", base, b))
}
