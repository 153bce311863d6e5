package authority

import (
	"crypto"
	"database/sql"
	"path/filepath"
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
	req, err := m.NewRequest(rec.FileID, "", owner.Public, crypto.SHA1, "after migration", time.Hour)
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
}
