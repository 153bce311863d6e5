package main

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/authority/store/postgres/pgtest"
	"github.com/p11escrow/p11escrow/authority/store/sqlite"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
)

// crashRecords is how many records the crash test takes in; the issue asks for at least 2000.
const crashRecords = 2000

// TestKilledIntakeAndRotation is the process-level crash test: 2000 records made by one
// `encrypt` call, an intake killed with SIGKILL midway and restarted, then a rotation killed
// midway and resumed. After each kill every acknowledged record is present, the database passes
// PRAGMA integrity_check, and the audit chain verifies.
func TestKilledIntakeAndRotation(t *testing.T) {
	softhsmtest.Require(t)
	env := softhsmtest.New(t)
	env.InitToken(t, "user", "12345678", "1234")
	env.InitToken(t, "authority", "12345678", "1234")
	dir := t.TempDir()
	environ := append(os.Environ(), env.Environ()...)
	db := crashDB(t, dir)
	environ = append(environ, "P11ESCROW_MODULE="+env.ModulePath, "P11ESCROW_PIN=1234", "P11ESCROW_DB="+db)
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command("p11escrow", args...)
		cmd.Dir, cmd.Env = dir, environ
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("p11escrow %s: %v\n%s", strings.Join(args[:min(len(args), 4)], " "), err, out)
		}
		return string(out)
	}
	run("key", "generate", "--token", "user", "--label", "alice", "--type", "rsa-2048")
	run("authority", "init", "--token", "authority", "--label", "escrow-1", "--type", "rsa-2048", "--out", "auth.pub")

	start := time.Now()
	records := encryptMany(t, dir, run)
	t.Logf("%d files encrypted in one call in %v", len(records), time.Since(start))

	intake := append([]string{"authority", "intake", "--token", "authority"}, records...)
	acked := killAfter(t, dir, environ, intake, "held", crashRecords/5)
	checkStore(t, db, acked, len(acked))
	out := run(intake...)
	var held, dup int
	if _, err := fmt.Sscanf(lastLine(out), "intake: %d held, 0 rejected, %d already held", &held, &dup); err != nil {
		t.Fatalf("restarted intake: %v\n%s", err, lastLine(out))
	}
	if held+dup != crashRecords || dup < len(acked) {
		t.Errorf("restarted intake: %d held, %d already held; %d were acknowledged before the kill", held, dup, len(acked))
	}
	all := checkStore(t, db, acked, crashRecords)

	rotate := []string{"authority", "rotate", "--token", "authority", "--new-label", "escrow-2", "--type", "rsa-2048"}
	rewrapped := killAfter(t, dir, environ, rotate, "re-wrapped", crashRecords/10)
	checkStore(t, db, all, crashRecords)
	out = run(rotate...)
	if !strings.Contains(out, "resuming the rotation") {
		t.Errorf("the second rotate did not resume:\n%s", out)
	}
	// Records committed after the last line read before the kill are skipped too.
	var resumed int
	if _, err := fmt.Sscanf(lastLine(out), "rotation done: %d record(s) re-wrapped", &resumed); err != nil {
		t.Fatalf("resumed rotation: %v\n%s", err, lastLine(out))
	}
	if resumed > crashRecords-len(rewrapped) || resumed < crashRecords/2 {
		t.Errorf("the resumed rotation re-wrapped %d records; %d were done before the kill", resumed, len(rewrapped))
	}
	run("authority", "retire-key", "--label", "escrow-1") // refused if any record lacks the new wrap
	checkStore(t, db, all, crashRecords)
}

// encryptMany makes crashRecords tiny files and encrypts them with one command.
func encryptMany(t *testing.T, dir string, run func(...string) string) []string {
	t.Helper()
	files := make([]string, crashRecords)
	for i := range files {
		files[i] = fmt.Sprintf("f%04d", i)
		if err := os.WriteFile(filepath.Join(dir, files[i]), []byte(files[i]), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	run(append([]string{"encrypt", "--token", "user", "--key", "alice", "--authority", "auth.pub"}, files...)...)
	records := make([]string, len(files))
	for i, f := range files {
		records[i] = f + ".p11e.escrow.json"
	}
	return records
}

// killAfter starts p11escrow with args, reads its progress lines, and kills it with SIGKILL
// once n lines report word. It returns the file IDs those lines acknowledged.
func killAfter(t *testing.T, dir string, environ, args []string, word string, n int) map[string]bool {
	t.Helper()
	cmd := exec.Command("p11escrow", args...)
	cmd.Dir, cmd.Env = dir, environ
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	acked := map[string]bool{}
	sc := bufio.NewScanner(stdout)
	for sc.Scan() && len(acked) < n {
		f := strings.Fields(sc.Text())
		if len(f) >= 3 && f[1] == word {
			acked[f[2]] = true
		}
	}
	if err := cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	err = cmd.Wait()
	if len(acked) < n || err == nil || !strings.Contains(err.Error(), "killed") {
		t.Fatalf("%s: wanted to kill it after %d records, but it ended after %d (%v)", args[1], n, len(acked), err)
	}
	t.Logf("%s killed after %d acknowledged records", args[1], len(acked))
	return acked
}

// checkStore opens the database as the next command would and checks it: integrity, every
// acknowledged record, the record count, and the audit chain. It returns every held file ID.
func checkStore(t testing.TB, db string, acked map[string]bool, want int) map[string]bool {
	t.Helper()
	st, err := authority.OpenStore(context.Background(), db, false)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if !authority.IsPostgres(db) {
		if v, err := sqlite.IntegrityCheck(context.Background(), st); err != nil || v != "ok" {
			t.Fatalf("PRAGMA integrity_check: %q %v", v, err)
		}
	}
	recs, err := st.Records(context.Background(), authority.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	held := map[string]bool{}
	for _, r := range recs {
		held[r.FileID] = true
	}
	for id := range acked {
		if !held[id] {
			t.Errorf("record %s was acknowledged but is not in the store", id)
		}
	}
	if len(held) < want {
		t.Errorf("the store holds %d records, want at least %d", len(held), want)
	}
	if n, _, err := authority.New(st, nil, "test").VerifyAudit(context.Background()); err != nil {
		t.Errorf("audit chain after the kill: %v", err)
	} else if n < int64(len(held)) {
		t.Errorf("the audit log has %d entries for %d records", n, len(held))
	}
	return held
}

// crashDB is the authority database for a crash test: a file in dir, or, in the run with
// P11ESCROW_TEST_STORE=postgres, a fresh database on the test's PostgreSQL server.
func crashDB(t *testing.T, dir string) string {
	if os.Getenv("P11ESCROW_TEST_STORE") == "postgres" {
		return pgtest.NewDB(t)
	}
	return filepath.Join(dir, "authority.db")
}

func lastLine(s string) string {
	lines := strings.Split(strings.TrimSpace(s), "\n")
	return lines[len(lines)-1]
}
