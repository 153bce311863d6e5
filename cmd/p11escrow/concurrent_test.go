package main

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/p11escrow/p11escrow/authority"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
)

// TestConcurrentIntakeProcesses runs four `authority intake` processes at once on one
// database (SQLite, or PostgreSQL in the run with P11ESCROW_TEST_STORE=postgres), with
// overlapping inputs so that they also race to take the same records. Every record is held
// once, every intake succeeds, and the audit chain they all appended to verifies: no fork, no
// gap. Each process has its own copy of the authority's token, as hosts with replicated HSMs
// would (SoftHSM2 fails unwraps when processes share a token directory).
func TestConcurrentIntakeProcesses(t *testing.T) {
	softhsmtest.Require(t)
	env := softhsmtest.New(t)
	env.InitToken(t, "user", "12345678", "1234")
	env.InitToken(t, "authority", "12345678", "1234")
	dir := t.TempDir()
	db := crashDB(t, dir)
	environ := append(os.Environ(), env.Environ()...)
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
	run("key", "generate", "--token", "user", "--label", "alice", "--type", "rsa-2048")
	run("authority", "init", "--token", "authority", "--label", "escrow-1", "--type", "rsa-2048", "--out", "auth.pub")

	const n, procs = 120, 4
	files := make([]string, n)
	for i := range files {
		files[i] = fmt.Sprintf("c%03d", i)
		if err := os.WriteFile(filepath.Join(dir, files[i]), []byte(files[i]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(append([]string{"encrypt", "--token", "user", "--key", "alice", "--authority", "auth.pub"}, files...)...)

	// Each process takes its quarter and the first ten of the next one, on its own HSM.
	conf, err := os.ReadFile(env.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	hsm := func(p int) []string {
		d := filepath.Join(dir, fmt.Sprintf("hsm%d", p))
		if out, err := exec.Command("cp", "-a", filepath.Join(env.Dir, "tokens"), d).CombinedOutput(); err != nil {
			t.Fatalf("copying the token: %v\n%s", err, out)
		}
		c := filepath.Join(dir, fmt.Sprintf("hsm%d.conf", p))
		text := strings.Replace(string(conf), filepath.Join(env.Dir, "tokens"), d, 1)
		if err := os.WriteFile(c, []byte(text), 0o600); err != nil {
			t.Fatal(err)
		}
		return append(append([]string{}, environ...), "SOFTHSM2_CONF="+c)
	}
	var wg sync.WaitGroup
	outs := make([]string, procs)
	errs := make([]error, procs)
	for p := range procs {
		var recs []string
		for i := p * n / procs; i < (p+1)*n/procs+10; i++ {
			recs = append(recs, files[i%n]+".p11e.escrow.json")
		}
		cmd := command(append([]string{"authority", "intake", "--token", "authority"}, recs...)...)
		cmd.Env = hsm(p)
		wg.Add(1)
		go func() {
			defer wg.Done()
			out, err := cmd.CombinedOutput()
			outs[p], errs[p] = string(out), err
		}()
	}
	wg.Wait()
	held, dup := 0, 0
	for p := range procs {
		if errs[p] != nil {
			t.Fatalf("intake %d: %v\n%s", p, errs[p], outs[p])
		}
		var h, d int
		if _, err := fmt.Sscanf(lastLine(outs[p]), "intake: %d held, 0 rejected, %d already held", &h, &d); err != nil {
			t.Fatalf("intake %d: %v\n%s", p, err, lastLine(outs[p]))
		}
		held, dup = held+h, dup+d
	}
	if held != n || dup != procs*10 {
		t.Errorf("%d held and %d already held; want %d and %d", held, dup, n, procs*10)
	}
	checkStore(t, db, nil, n)

	// backup copies a SQLite store; on PostgreSQL it refuses, names pg_dump, and leaves nothing.
	out, err := command("authority", "backup", "--out", "copy.db").CombinedOutput()
	_, statErr := os.Stat(filepath.Join(dir, "copy.db"))
	if authority.IsPostgres(db) {
		if err == nil || !strings.Contains(string(out), "pg_dump") || !errors.Is(statErr, fs.ErrNotExist) {
			t.Errorf("backup on PostgreSQL: %v, %v\n%s", err, statErr, out)
		}
		// A command that only reads makes nothing in a database without the authority's tables.
		empty := crashDB(t, dir)
		cmd := command("authority", "list")
		cmd.Env = append(cmd.Env, "P11ESCROW_DB="+empty)
		out, err := cmd.CombinedOutput()
		if err == nil || !strings.Contains(string(out), "holds no authority store; check --db") {
			t.Errorf("list on an empty PostgreSQL database: %v\n%s", err, out)
		}
	} else if err != nil || statErr != nil {
		t.Errorf("backup: %v, %v\n%s", err, statErr, out)
	}
}
