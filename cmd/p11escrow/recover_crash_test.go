package main

import (
	"bytes"
	"context"
	"crypto/rand"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p11escrow/p11escrow/authority"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
)

// TestKilledRecoverDecrypt kills `authority recover --decrypt` with SIGKILL while it writes the
// plaintext; before the kill, a second process trying the same request is refused. The audit log then shows the attempt as started and not delivered, no file has the
// final name, and the request is still open: the same command, with the same approvals,
// completes the recovery, and a third run is refused because the request was delivered.
func TestKilledRecoverDecrypt(t *testing.T) {
	softhsmtest.Require(t)
	env := softhsmtest.New(t)
	for _, label := range []string{"user", "authority", "officer1", "officer2"} {
		env.InitToken(t, label, "12345678", "1234")
	}
	dir := t.TempDir()
	environ := append(os.Environ(), env.Environ()...)
	db := crashDB(t, dir)
	environ = append(environ, "P11ESCROW_MODULE="+env.ModulePath, "P11ESCROW_PIN=1234", "P11ESCROW_DB="+db)
	command := func(args ...string) *exec.Cmd {
		cmd := exec.Command("p11escrow", args...)
		cmd.Dir, cmd.Env = dir, environ
		return cmd
	}
	run := func(args ...string) string {
		t.Helper()
		out, err := command(args...).CombinedOutput()
		if err != nil {
			t.Fatalf("p11escrow %s: %v\n%s", strings.Join(args[:min(len(args), 4)], " "), err, out)
		}
		return string(out)
	}
	plain := make([]byte, 64<<20)
	rand.Read(plain)
	if err := os.WriteFile(filepath.Join(dir, "big"), plain, 0o600); err != nil {
		t.Fatal(err)
	}
	run("authority", "init", "--token", "authority", "--label", "escrow", "--type", "rsa-2048", "--out", "auth.pub")
	for i, name := range []string{"olivia", "oscar"} {
		tok := []string{"officer1", "officer2"}[i]
		run("key", "generate", "--usage", "sign", "--token", tok, "--label", name)
		run("authority", "officer", "add", "--name", name, "--pub", name+".pub")
	}
	run("key", "generate", "--token", "user", "--label", "alice", "--type", "rsa-2048")
	run("encrypt", "--token", "user", "--key", "alice", "--authority", "auth.pub", "big")
	run("authority", "intake", "--token", "authority", "big.p11e.escrow.json")
	recs := heldIDs(t, db)
	if len(recs) != 1 {
		t.Fatalf("the store holds %d records", len(recs))
	}
	run("authority", "request", "--id", recs[0], "--to", "alice.pub", "--action", "decrypt", "--reason", "crash test", "-o", "req.json")
	run("authority", "approve", "--yes", "--token", "officer1", "--key", "olivia", "req.json")
	run("authority", "approve", "--yes", "--token", "officer2", "--key", "oscar", "req.json")

	recover := []string{"authority", "recover", "--token", "authority", "--decrypt", "big.p11e", "-o", "big.out", "req.json"}
	cmd := command(recover...)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	// Kill it once plaintext is being written to its (unnamed) output file.
	if !waitWriting(cmd.Process.Pid, dir) {
		cmd.Process.Kill()
		t.Fatal("recover --decrypt was not seen writing its output")
	}
	// Meanwhile, a second process tries the same request: it is refused (exit 6) and makes
	// nothing, because the first holds the request.
	second := command(append(recover[:len(recover)-2:len(recover)-2], "big.second", "req.json")...)
	out, err := second.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != exitRefused || !strings.Contains(string(out), "another recovery attempt") {
		cmd.Process.Kill()
		t.Fatalf("a second recovery while the first ran: %v\n%s", err, out)
	}
	if _, err := os.Lstat(filepath.Join(dir, "big.second")); err == nil {
		t.Error("the refused second recovery made an output")
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	if err := cmd.Wait(); err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("recover --decrypt was to be killed while writing, but it ended: %v", err)
	}
	if _, err := os.Lstat(filepath.Join(dir, "big.out")); err == nil {
		t.Fatal("the killed recovery left output under the final name")
	}
	if n := writing(t, dir, ".big.out"); n > 0 {
		t.Errorf("the killed recovery left a temporary file with %d bytes of plaintext", n)
	}
	if got := recoveryActions(t, db); got != "recover-start recover-refuse" {
		t.Fatalf("audit after the kill: %q, want the start, the second's refusal and no delivery", got)
	}

	run(recover...)
	got, err := os.ReadFile(filepath.Join(dir, "big.out"))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("the rerun's output differs from the plaintext (%v)", err)
	}
	if got := recoveryActions(t, db); got != "recover-start recover-refuse recover-start recover-deliver" {
		t.Errorf("audit after the rerun: %q", got)
	}
	out, err = command(append(recover[:len(recover)-2:len(recover)-2], "big.again", "req.json")...).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "already used") {
		t.Errorf("a third run after delivery: %v\n%s", err, out)
	}
	if got := recoveryActions(t, db); got != "recover-start recover-refuse recover-start recover-deliver recover-refuse" {
		t.Errorf("audit after the third run: %q", got)
	}
}

// writing returns the size of the file in dir whose name starts with prefix, or 0.
func writing(t *testing.T, dir, prefix string) int64 {
	t.Helper()
	ents, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range ents {
		if strings.HasPrefix(e.Name(), prefix) {
			if fi, err := e.Info(); err == nil {
				return fi.Size()
			}
		}
	}
	return 0
}

// heldIDs lists the file IDs in the store.
func heldIDs(t *testing.T, db string) []string {
	t.Helper()
	st, err := authority.OpenStore(context.Background(), db, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	recs, err := st.Records(context.Background(), authority.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	var ids []string
	for _, r := range recs {
		ids = append(ids, r.FileID)
	}
	return ids
}

// recoveryActions lists the audit log's recover-* actions in order, after checking the chain.
func recoveryActions(t *testing.T, db string) string {
	t.Helper()
	st, err := authority.OpenStore(context.Background(), db, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if _, _, err := authority.New(st, nil, "test").VerifyAudit(context.Background()); err != nil {
		t.Fatalf("audit chain: %v", err)
	}
	entries, err := st.Audit(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	var acts []string
	for _, e := range entries {
		if strings.HasPrefix(e.Action, "recover-") {
			acts = append(acts, e.Action)
		}
	}
	return strings.Join(acts, " ")
}
