package main

import (
	"bytes"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
)

// killEnv makes a token with a key, and a directory holding only big.p11e: the encryption of
// plaintext, which is returned. run runs p11escrow in that directory and fails the test on error.
func killEnv(t *testing.T, size int) (dir string, environ []string, plaintext []byte, run func(...string) string) {
	t.Helper()
	softhsmtest.Require(t)
	env := softhsmtest.New(t)
	env.InitToken(t, "user", "12345678", "1234")
	dir = t.TempDir()
	environ = append(os.Environ(), env.Environ()...)
	environ = append(environ, "P11ESCROW_MODULE="+env.ModulePath, "P11ESCROW_PIN=1234")
	run = func(args ...string) string {
		t.Helper()
		cmd := exec.Command("p11escrow", args...)
		cmd.Dir, cmd.Env = dir, environ
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("p11escrow %s: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	plaintext = make([]byte, size)
	rand.NewChaCha8([32]byte{1}).Read(plaintext)
	src := filepath.Join(t.TempDir(), "big")
	if err := os.WriteFile(src, plaintext, 0o600); err != nil {
		t.Fatal(err)
	}
	run("key", "generate", "--token", "user", "--label", "alice", "--type", "rsa-2048", "--out", filepath.Join(t.TempDir(), "alice.pub"))
	run("encrypt", "--token", "user", "--key", "alice", "--no-escrow", "-o", "big.p11e", "--", src)
	return dir, environ, plaintext, run
}

// checkNoPlaintext fails if any file in dir other than want holds a piece of plaintext, or if
// want exists and is not exactly the plaintext. It removes want, for the next trial.
func checkNoPlaintext(t *testing.T, dir, want string, plaintext []byte) {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		name := e.Name()
		data, err := os.ReadFile(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case name == "big.p11e":
		case name == want:
			if !bytes.Equal(data, plaintext) {
				t.Errorf("%s exists but is not the whole plaintext (%d of %d bytes)", name, len(data), len(plaintext))
			}
			os.Remove(filepath.Join(dir, name))
		default:
			t.Errorf("%s (%d bytes, plaintext: %v) was left behind", name, len(data), bytes.Contains(data, plaintext[:64]))
		}
	}
}

// TestKilledDecryptLeavesNoPlaintext kills decrypt with SIGKILL at random moments: an output is
// either whole under its final name or nowhere, and no other file in the directory holds any of
// the plaintext.
func TestKilledDecryptLeavesNoPlaintext(t *testing.T) {
	dir, environ, plaintext, run := killEnv(t, 64<<20)
	start := time.Now()
	run("decrypt", "--token", "user", "-o", "big", "big.p11e")
	took := time.Since(start)
	checkNoPlaintext(t, dir, "big", plaintext)
	r := rand.New(rand.NewPCG(uint64(time.Now().UnixNano()), 0))
	for trial := range 12 {
		cmd := exec.Command("p11escrow", "decrypt", "--token", "user", "-o", "big", "big.p11e")
		cmd.Dir, cmd.Env = dir, environ
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		// Every other kill lands at a random moment, the rest while plaintext is being written.
		wait := time.Duration(r.Int64N(int64(took) * 11 / 10))
		if trial%2 == 1 {
			wait = 0
			if !waitWriting(cmd.Process.Pid, dir) {
				t.Logf("trial %d: decrypt ended before it was seen writing", trial)
			}
		}
		time.Sleep(wait)
		cmd.Process.Kill()
		err := cmd.Wait()
		t.Logf("trial %d: killed after %v of %v: %v", trial, wait, took, err)
		checkNoPlaintext(t, dir, "big", plaintext)
	}
}

// TestSignaledDecryptLeavesNoPlaintext ends decrypt with SIGINT, SIGTERM and SIGHUP midway,
// both with unnamed temporary files and with the named ones used where the file system has
// none, which a signal handler removes.
func TestSignaledDecryptLeavesNoPlaintext(t *testing.T) {
	dir, environ, plaintext, _ := killEnv(t, 64<<20)
	for _, bin := range []string{"p11escrow", "p11escrow-named"} {
		for _, sig := range []syscall.Signal{syscall.SIGINT, syscall.SIGTERM, syscall.SIGHUP} {
			cmd := exec.Command(bin, "decrypt", "--token", "user", "-o", "big", "big.p11e")
			cmd.Dir, cmd.Env = dir, environ
			if err := cmd.Start(); err != nil {
				t.Fatal(err)
			}
			// Signal once the output holds plaintext: a named temporary file has grown, or, for an
			// unnamed one, the process has written to a file it holds open.
			if !waitWriting(cmd.Process.Pid, dir) {
				t.Logf("%s %v: decrypt ended before it could be signalled", bin, sig)
			}
			cmd.Process.Signal(sig)
			err := cmd.Wait()
			if ws, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok && ws.Signaled() && ws.Signal() != sig {
				t.Errorf("%s ended by %v, not by %v", bin, ws.Signal(), sig)
			}
			t.Logf("%s %v: %v", bin, sig, err)
			checkNoPlaintext(t, dir, "big", plaintext)
		}
	}
}

// waitWriting waits until process pid holds open a file of dir's with data in it, and reports
// whether it saw one before the process ended.
func waitWriting(pid int, dir string) bool {
	fds := filepath.Join("/proc", strconv.Itoa(pid), "fd")
	for range 2000 {
		ents, err := os.ReadDir(fds)
		if err != nil {
			return false
		}
		for _, e := range ents {
			target, err := os.Readlink(filepath.Join(fds, e.Name()))
			if err != nil || !strings.HasPrefix(target, dir+"/") || strings.HasSuffix(target, "big.p11e") {
				continue
			}
			if fi, err := os.Stat(filepath.Join(fds, e.Name())); err == nil && fi.Size() > 1<<20 {
				return true
			}
		}
		time.Sleep(time.Millisecond)
	}
	return false
}
