package main

import (
	"fmt"
	"io"
	"os"
	"sync"
	"sync/atomic"
	"time"

	"github.com/p11escrow/p11escrow/internal/safetext"
	"golang.org/x/term"
)

// batch numbers what a command with several files says about each, "[n/m] ...", on stderr, in
// the order the files finish, and ends with one summary line. With quiet it says neither;
// warnings and errors are always shown.
type batch struct {
	total int
	quiet bool
	mu    sync.Mutex
	done  int
}

// line reports one finished file. A single file's line has no number.
func (b *batch) line(msg string) {
	if b.quiet {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	b.done++
	if b.total > 1 {
		msg = fmt.Sprintf("[%d/%d] %s", b.done, b.total, msg)
	}
	fmt.Fprintln(os.Stderr, safetext.Clean(msg))
}

// summary ends a batch of several files with one line, such as "encrypt: 3 file(s) encrypted,
// 1 skipped".
func (b *batch) summary(command, verb string, skipped int) {
	if b.quiet || b.total+skipped <= 1 {
		return
	}
	msg := fmt.Sprintf("%s: %d file(s) %s", command, b.done, verb)
	if skipped > 0 {
		msg += fmt.Sprintf(", %d skipped", skipped)
	}
	fmt.Fprintln(os.Stderr, msg)
}

// meterMin is the size from which one file's progress is shown: smaller files are done before
// a meter would be read.
const meterMin = 16 << 20

// meter shows how far one large file has got, as a line on stderr that rewrites itself, and
// only where stderr is a terminal: never in a pipe, a log or a file. stop clears the line.
type meter struct {
	n    atomic.Int64
	stop func()
}

// startMeter wraps r, the input named name of size bytes, in a meter if one is to be shown;
// otherwise it returns r and a stop that does nothing.
func startMeter(r io.Reader, name string, size int64, quiet bool) (io.Reader, func()) {
	if quiet || size < meterMin || !term.IsTerminal(int(os.Stderr.Fd())) {
		return r, func() {}
	}
	m := &meter{}
	done := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	label := safetext.Clean(name)
	show := func() {
		n := m.n.Load()
		fmt.Fprintf(os.Stderr, "\r\x1b[K%s: %d%% (%d of %d MiB)", label, min(n*100/size, 100), n>>20, size>>20)
	}
	show() // at once, so that even a fast file shows what it is doing
	go func() {
		defer wg.Done()
		tick := time.NewTicker(250 * time.Millisecond)
		defer tick.Stop()
		for {
			select {
			case <-done:
				fmt.Fprint(os.Stderr, "\r\x1b[K")
				return
			case <-tick.C:
				show()
			}
		}
	}()
	var once sync.Once
	return &meterReader{r: r, m: m}, func() { once.Do(func() { close(done); wg.Wait() }) }
}

type meterReader struct {
	r io.Reader
	m *meter
}

func (r *meterReader) Read(p []byte) (int, error) {
	n, err := r.r.Read(p)
	r.m.n.Add(int64(n))
	return n, err
}

// inputSize is the size of a regular file named as an input, or 0 (stdin, a device, a FIFO).
func inputSize(name string) int64 {
	if name == "-" {
		return 0
	}
	fi, err := os.Stat(name)
	if err != nil || !fi.Mode().IsRegular() {
		return 0
	}
	return fi.Size()
}
