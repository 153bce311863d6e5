package authority

import (
	"crypto"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
)

// v2Store builds a database as p11escrow made it before migration 3 (schema version 2), holding
// one record, its wrap and a recovery request for it.
func v2Store(t *testing.T, path string, k *AuthorityKey, e *encrypted) *escrow.Record {
	t.Helper()
	db, err := sql.Open("sqlite", "file:"+path+"?_pragma=foreign_keys(1)")
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	rec, err := escrow.ParseRecord(e.record)
	if err != nil {
		t.Fatal(err)
	}
	_, st, err := rec.AuthorityStanza()
	if err != nil {
		t.Fatal(err)
	}
	tx, err := db.Begin()
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now().UTC().Format(time.RFC3339)
	for _, f := range []func(*sql.Tx) error{migrate1, migrate2, func(tx *sql.Tx) error {
		stmts := []struct {
			q    string
			args []any
		}{
			{`CREATE TABLE migrations (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)`, nil},
			{`INSERT INTO migrations VALUES (1, ?), (2, ?)`, []any{now, now}},
			{`INSERT INTO authority_keys VALUES (?, ?, ?, ?, ?, ?, 'current')`,
				[]any{k.Fingerprint, k.Label, k.Tag, k.OAEPHash, k.PublicKey, now}},
			{`INSERT INTO records VALUES (?, ?, 'alice', '0001', 'old file', ?, ?, ?, 'held', ?)`,
				[]any{rec.FileID, rec.Owner.Fingerprint, now, now, k.Fingerprint, e.record}},
			{`INSERT INTO wraps VALUES (?, ?, ?, ?, ?)`, []any{rec.FileID, k.Fingerprint, st.Args[0], st.Body, now}},
			{`INSERT INTO requests VALUES ('00112233445566778899aabbccddeeff', ?, 'open', ?, x'00')`, []any{rec.FileID, now}},
		}
		for _, s := range stmts {
			if _, err := tx.Exec(s.q, s.args...); err != nil {
				return err
			}
		}
		return nil
	}} {
		if err := f(tx); err != nil {
			t.Fatal(err)
		}
	}
	if err := tx.Commit(); err != nil {
		t.Fatal(err)
	}
	return rec
}

// TestMigrateV2 opens a database made by the previous release: every record gets its key
// commitment from its own header, and its wraps and requests follow it, so the record can still
// be found, unwrapped and recovered.
func TestMigrateV2(t *testing.T) {
	a, kp := newAuthority(t)
	k := mustCurrent(t, a)
	owner, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	e := encryptFor(t, owner, kp.Public, 1000)
	path := filepath.Join(t.TempDir(), "v2.db")
	rec := v2Store(t, path, k, e)
	h, _, _ := rec.AuthorityStanza()
	want := escrow.CommitmentText(h.Commitment)

	st, err := OpenSQLite(path)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	got, err := st.Record(rec.FileID, want)
	if err != nil || got.Commitment != want || got.Description != "old file" {
		t.Fatalf("Record after migration = %+v, %v; want commitment %s", got, err, want)
	}
	if w, err := st.Wraps(rec.FileID, want); err != nil || len(w) != 1 || w[0].Commitment != want {
		t.Errorf("Wraps after migration = %v, %v", w, err)
	}
	if r, err := st.Request("00112233445566778899aabbccddeeff"); err != nil || r.Commitment != want {
		t.Errorf("Request after migration = %+v, %v", r, err)
	}
	m := New(st, a.Token, "test")
	m.keys = a.keys
	req, err := m.NewRequest(rec.FileID, "", escrow.ActionReheader, owner.Public, crypto.SHA1, "after migration", time.Hour)
	if err != nil || req.KeyCommitment != want {
		t.Fatalf("NewRequest after migration = %v, %v", req, err)
	}
	sk, _, _, err := m.unwrapHeld(got.Ref(), false)
	if err != nil {
		t.Fatal(err)
	}
	sk.Destroy()
	if v, err := IntegrityCheck(st); err != nil || v != "ok" {
		t.Errorf("integrity_check: %q %v", v, err)
	}
	rows, err := st.(*sqliteStore).db.Query(`PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Error("foreign_key_check reports rows after the migration")
	}
	rows.Close()
	if _, _, err := New(st, nil, "test").VerifyAudit(); err != nil {
		t.Errorf("the migrated store does not verify: %v", err)
	}
}

// TestOpenPath: --db is a path, never a URI; a new database is 0600; a read-only open never
// creates one.
func TestOpenPath(t *testing.T) {
	dir := t.TempDir()
	for _, name := range []string{"ops?2026.db", "a#b.db", "100%.db", "file:x.db"} {
		st, err := OpenSQLite(filepath.Join(dir, name))
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if err := st.Log(Event{Time: time.Now(), Action: "note"}); err != nil {
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
		if st, err := OpenSQLite(bad); err == nil {
			st.Close()
			t.Errorf("OpenSQLite(%q) succeeded", bad)
		}
	}
	missing := filepath.Join(dir, "typo.db")
	if st, err := OpenSQLiteExisting(missing); err == nil || !strings.Contains(err.Error(), "does not exist") {
		t.Errorf("OpenSQLiteExisting(missing) = %v", err)
		if st != nil {
			st.Close()
		}
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
				st, err := OpenSQLite(path)
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

// TestListReadsNoBlobs: listing records does not load their record bytes.
func TestListReadsNoBlobs(t *testing.T) {
	a, kp := newAuthority(t)
	owner, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := a.Intake("f", encryptFor(t, owner, kp.Public, 10).record); err != nil || res.Outcome != Held {
		t.Fatal(res, err)
	}
	recs, err := a.Store.Records(Filter{})
	if err != nil || len(recs) != 1 || recs[0].Record != nil || recs[0].Commitment == "" {
		t.Errorf("Records = %+v, %v; want one record without its bytes", recs, err)
	}
}
