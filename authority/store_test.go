package authority

import (
	"context"
	"crypto"
	"database/sql"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/authority/store/sqlite"
	"github.com/p11escrow/p11escrow/escrow"
)

// v2Schema is the schema that migrations 1 and 2 of the SQLite store made, frozen here as the
// previous release left it.
var v2Schema = []string{
	`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
	`CREATE TABLE authority_keys (
			fingerprint TEXT PRIMARY KEY, label TEXT NOT NULL, tag TEXT NOT NULL,
			oaep_hash TEXT NOT NULL, public_key BLOB NOT NULL, created TEXT NOT NULL,
			state TEXT NOT NULL CHECK (state IN ('current', 'previous', 'retired')))`,
	`CREATE UNIQUE INDEX one_current_key ON authority_keys(state) WHERE state = 'current'`,
	`CREATE TABLE records (
			file_id TEXT PRIMARY KEY, owner_fingerprint TEXT NOT NULL, owner_token_label TEXT NOT NULL,
			owner_token_serial TEXT NOT NULL, description TEXT NOT NULL, created TEXT NOT NULL,
			intake_time TEXT NOT NULL, authority_key TEXT NOT NULL REFERENCES authority_keys(fingerprint),
			status TEXT NOT NULL CHECK (status IN ('held', 'recovered')), record BLOB NOT NULL)`,
	`CREATE INDEX records_owner ON records(owner_fingerprint)`,
	`CREATE INDEX records_serial ON records(owner_token_serial)`,
	`CREATE TABLE wraps (
			file_id TEXT NOT NULL REFERENCES records(file_id), key_fingerprint TEXT NOT NULL REFERENCES authority_keys(fingerprint),
			oaep_hash TEXT NOT NULL, wrapped BLOB NOT NULL, added TEXT NOT NULL,
			PRIMARY KEY (file_id, key_fingerprint))`,
	`CREATE INDEX wraps_key ON wraps(key_fingerprint)`,
	`CREATE TABLE officers (
			fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, algorithm TEXT NOT NULL,
			public_key BLOB NOT NULL, added TEXT NOT NULL)`,
	`CREATE TABLE requests (
			id TEXT PRIMARY KEY, file_id TEXT NOT NULL REFERENCES records(file_id),
			state TEXT NOT NULL CHECK (state IN ('open', 'used')), created TEXT NOT NULL, canonical BLOB NOT NULL)`,
	`CREATE TABLE audit (
			seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
			details TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL)`,
	`CREATE TABLE change_requests (
		id TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN ('open', 'used')),
		created TEXT NOT NULL, canonical BLOB NOT NULL)`,
}

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
	for _, f := range []func(*sql.Tx) error{func(tx *sql.Tx) error {
		for _, q := range v2Schema {
			if _, err := tx.Exec(q); err != nil {
				return err
			}
		}
		return nil
	}, func(tx *sql.Tx) error {
		stmts := []struct {
			q    string
			args []any
		}{
			{`INSERT INTO meta(key, value) VALUES ('instance_id', '00112233445566778899aabbccddeeff'), ('approvals', '2'),
				('audit_count', '0'), ('audit_head', '0000000000000000000000000000000000000000000000000000000000000000')`, nil},
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
	sqliteOnly(t)
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

	st := openTestStore(t, path)
	got, err := st.Record(t.Context(), rec.FileID, want)
	if err != nil || got.Commitment != want || got.Description != "old file" {
		t.Fatalf("Record after migration = %+v, %v; want commitment %s", got, err, want)
	}
	if w, err := st.Wraps(t.Context(), rec.FileID, want); err != nil || len(w) != 1 || w[0].Commitment != want {
		t.Errorf("Wraps after migration = %v, %v", w, err)
	}
	if r, err := st.Request(t.Context(), "00112233445566778899aabbccddeeff"); err != nil || r.Commitment != want {
		t.Errorf("Request after migration = %+v, %v", r, err)
	}
	m := New(st, a.Token, "test")
	m.keys = a.keys
	req, err := m.NewRequest(t.Context(), rec.FileID, "", escrow.ActionReheader, owner.Public, crypto.SHA1, "after migration", time.Hour)
	if err != nil || req.KeyCommitment != want {
		t.Fatalf("NewRequest after migration = %v, %v", req, err)
	}
	sk, _, _, err := m.unwrapHeld(t.Context(), got.Ref(), false)
	if err != nil {
		t.Fatal(err)
	}
	sk.Destroy()
	if v, err := sqlite.IntegrityCheck(context.Background(), st); err != nil || v != "ok" {
		t.Errorf("integrity_check: %q %v", v, err)
	}
	rows, err := rawDB(t, m).Query(`PRAGMA foreign_key_check`)
	if err != nil {
		t.Fatal(err)
	}
	if rows.Next() {
		t.Error("foreign_key_check reports rows after the migration")
	}
	rows.Close()
	if _, _, err := New(st, nil, "test").VerifyAudit(t.Context()); err != nil {
		t.Errorf("the migrated store does not verify: %v", err)
	}
}

// TestListReadsNoBlobs: listing records does not load their record bytes.
func TestListReadsNoBlobs(t *testing.T) {
	a, kp := newAuthority(t)
	owner, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	if res, err := a.Intake(t.Context(), "f", encryptFor(t, owner, kp.Public, 10).record); err != nil || res.Outcome != Held {
		t.Fatal(res, err)
	}
	recs, err := a.st.Records(t.Context(), Filter{})
	if err != nil || len(recs) != 1 || recs[0].Record != nil || recs[0].Commitment == "" {
		t.Errorf("Records = %+v, %v; want one record without its bytes", recs, err)
	}
}

// TestBackup: a SQLite store copies itself; a PostgreSQL store says that its backups are made
// with PostgreSQL's tools, and writes nothing.
func TestBackup(t *testing.T) {
	a := New(testStore(t), nil, "test")
	out := filepath.Join(t.TempDir(), "copy.db")
	err := a.Backup(t.Context(), out)
	if onPostgres {
		if !errors.Is(err, ErrNoBackup) {
			t.Fatalf("Backup on PostgreSQL = %v, want ErrNoBackup", err)
		}
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("a refused backup wrote %s", out)
		}
		return
	}
	if err != nil {
		t.Fatal(err)
	}
	c := New(openTestStore(t, out), nil, "test")
	if _, _, err := c.VerifyAudit(t.Context()); err != nil {
		t.Errorf("the copy does not verify: %v", err)
	}
}
