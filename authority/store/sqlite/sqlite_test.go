package sqlite_test

import (
	"context"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/authority/store"
	"github.com/p11escrow/p11escrow/authority/store/sqlite"
	"github.com/p11escrow/p11escrow/authority/store/storetest"
)

// Backend is the SQLite backend for the conformance suite.
var backend = storetest.Backend{
	New:  func(t *testing.T) string { return filepath.Join(t.TempDir(), "authority.db") },
	Open: sqlite.Open,
	Raw: func(t *testing.T, ref string) *sql.DB {
		db, err := sql.Open("sqlite", "file:"+ref+"?_pragma=busy_timeout(10000)")
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { db.Close() })
		return db
	},
}

func TestConformance(t *testing.T) { storetest.Run(t, backend) }

// TestOpenPath: the database is a path, never a URI; a new database is 0600; a read-only open
// never creates one.
func TestOpenPath(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	for _, name := range []string{"ops?2026.db", "a#b.db", "100%.db", "file:x.db"} {
		st, err := sqlite.Open(ctx, filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := st.Log(ctx, store.Event{Time: time.Now(), Action: "note"}); err != nil {
			t.Fatal(err)
		}
		st.Close()
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Errorf("%s: the database is not at that path: %v", name, err)
			continue
		}
		if fi.Mode().Perm() != 0o600 {
			t.Errorf("%s: mode %v, want 0600", name, fi.Mode().Perm())
		}
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if n := e.Name(); n == "ops" || n == "a" || n == "100" || n == "x.db" {
			t.Errorf("a database was made at %q, not at the path given", n)
		}
		if fi, _ := e.Info(); fi != nil && fi.Mode().Perm()&0o077 != 0 {
			t.Errorf("%s has mode %v", e.Name(), fi.Mode().Perm())
		}
	}
	for _, bad := range []string{":memory:", ""} {
		if st, err := sqlite.Open(ctx, bad); err == nil {
			st.Close()
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
	missing := filepath.Join(dir, "typo.db")
	st, err := sqlite.OpenExisting(ctx, missing)
	if !errors.Is(err, store.ErrNoDatabase) || !strings.Contains(err.Error(), "typo.db does not exist") {
		t.Errorf("OpenExisting(missing) = %v", err)
	}
	if st != nil {
		st.Close()
	}
	if _, err := os.Stat(missing); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a read-only open created %s", missing)
	}
}

// TestConcurrentCreate: processes that open a new database at once all succeed (each migration
// re-reads the schema version in its own transaction).
func TestConcurrentCreate(t *testing.T) {
	for round := 0; round < 8; round++ {
		path := filepath.Join(t.TempDir(), "new.db")
		var wg sync.WaitGroup
		errs := make([]error, 3)
		for i := range errs {
			wg.Add(1)
			go func() {
				defer wg.Done()
				st, err := sqlite.Open(context.Background(), path)
				if err == nil {
					st.Close()
				}
				errs[i] = err
			}()
		}
		wg.Wait()
		for i, err := range errs {
			if err != nil {
				t.Fatalf("round %d, opener %d: %v", round, i, err)
			}
		}
	}
}

func TestIntegrityAndBackup(t *testing.T) {
	ctx := context.Background()
	dir := t.TempDir()
	st, err := sqlite.Open(ctx, filepath.Join(dir, "a.db"))
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	if v, err := sqlite.IntegrityCheck(ctx, st); err != nil || v != "ok" {
		t.Errorf("integrity_check: %q %v", v, err)
	}
	id, _ := st.InstanceID(ctx)
	copyPath := filepath.Join(dir, "copy.db")
	if err := st.(store.Backuper).Backup(ctx, copyPath); err != nil {
		t.Fatal(err)
	}
	c, err := sqlite.OpenExisting(ctx, copyPath)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if id2, _ := c.InstanceID(ctx); id2 != id {
		t.Errorf("the copy's instance ID is %q, want %q", id2, id)
	}
}

// TestIntakeSeqUsesIndex: finding the entry that stored a record (for the receipt of a record
// submitted again) reads the audit_intake index, not the whole log, so that submitting one old
// record over and over cannot make the service scan the log each time.
func TestIntakeSeqUsesIndex(t *testing.T) {
	ctx := context.Background()
	ref := backend.New(t)
	st, err := sqlite.Open(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	rows, err := backend.Raw(t, ref).Query(`EXPLAIN QUERY PLAN `+sqlite.IntakeSeqSQL, "f", "c")
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var id, parent, unused int
		var detail string
		if err := rows.Scan(&id, &parent, &unused, &detail); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, detail)
	}
	if p := strings.Join(plan, "; "); !strings.Contains(p, "USING INDEX audit_intake") {
		t.Fatalf("IntakeSeq's plan does not use the audit_intake index: %s", p)
	}
}
