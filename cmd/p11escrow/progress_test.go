package main

import (
	"bytes"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"golang.org/x/sys/unix"
)

// openPTY opens a pseudo-terminal pair: what a program writes to the second file, a terminal,
// can be read from the first.
func openPTY(t *testing.T) (master, slave *os.File) {
	t.Helper()
	m, err := os.OpenFile("/dev/ptmx", os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatalf("no pseudo-terminals here: %v", err)
	}
	if err := unix.IoctlSetPointerInt(int(m.Fd()), unix.TIOCSPTLCK, 0); err != nil {
		t.Fatal(err)
	}
	n, err := unix.IoctlGetInt(int(m.Fd()), unix.TIOCGPTN)
	if err != nil {
		t.Fatal(err)
	}
	s, err := os.OpenFile(fmt.Sprintf("/dev/pts/%d", n), os.O_RDWR|syscall.O_NOCTTY, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(); s.Close() })
	return m, s
}

// TestMeterOnTerminal: decrypting a large file with stderr on a terminal shows a line that
// rewrites itself with the percentage done, and clears it at the end; the output is whole.
// progress.txt shows that the same command with stderr in a file shows no meter.
func TestMeterOnTerminal(t *testing.T) {
	dir, environ, plaintext, _ := killEnv(t, 48<<20)
	master, slave := openPTY(t)
	cmd := exec.Command("p11escrow", "decrypt", "--token", "user", "-o", "big", "big.p11e")
	cmd.Dir, cmd.Env, cmd.Stderr = dir, environ, slave
	var seen bytes.Buffer
	done := make(chan struct{})
	go func() { io.Copy(&seen, master); close(done) }()
	if err := cmd.Run(); err != nil {
		t.Fatalf("decrypt: %v\n%s", err, seen.Bytes())
	}
	slave.Close()
	master.Close()
	<-done
	got, err := os.ReadFile(filepath.Join(dir, "big"))
	if err != nil || !bytes.Equal(got, plaintext) {
		t.Fatalf("the output is not the plaintext (%v)", err)
	}
	out := seen.String()
	if !strings.Contains(out, "\r\x1b[Kbig.p11e: ") || !strings.Contains(out, "% (") {
		t.Fatalf("no progress meter on the terminal: %q", out)
	}
	if !strings.HasSuffix(out, "\r\x1b[K") {
		t.Errorf("the meter's line was not cleared at the end: %q", out[max(0, len(out)-40):])
	}
}
