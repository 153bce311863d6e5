// Package pgtest gives tests throwaway PostgreSQL databases on the server that `make test`
// starts (softhsm-test/with-postgres.sh), named by $P11ESCROW_TEST_PG.
package pgtest

import (
	"context"
	"crypto/rand"
	"database/sql"
	"encoding/hex"
	"net/url"
	"os"
	"testing"

	_ "github.com/jackc/pgx/v5/stdlib" // the "pgx" database/sql driver
)

// Env is the variable that names the test server's base URL.
const Env = "P11ESCROW_TEST_PG"

// Base returns the test server's URL, skipping the test without one; in CI ($CI set) a missing
// server fails the test instead, so that the PostgreSQL tests cannot silently not run.
func Base(t testing.TB) string {
	t.Helper()
	base := os.Getenv(Env)
	if base == "" {
		if os.Getenv("CI") != "" {
			t.Fatalf("$%s is not set: run the tests with `make test`, which starts a PostgreSQL server", Env)
		}
		t.Skipf("no PostgreSQL server: $%s is not set (`make test` starts one)", Env)
	}
	return base
}

// NewDB makes an empty schema on the test server, dropped when the test ends, and returns the
// URL of a database whose tables go into it (search_path).
func NewDB(t testing.TB) string {
	t.Helper()
	base := Base(t)
	var b [8]byte
	rand.Read(b[:])
	schema := "t_" + hex.EncodeToString(b[:])
	admin, err := sql.Open("pgx", base)
	if err != nil {
		t.Fatal(err)
	}
	defer admin.Close()
	if _, err := admin.Exec(`CREATE SCHEMA ` + schema); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		admin, err := sql.Open("pgx", base)
		if err != nil {
			return
		}
		defer admin.Close()
		admin.ExecContext(context.Background(), `DROP SCHEMA `+schema+` CASCADE`)
	})
	u, err := url.Parse(base)
	if err != nil {
		t.Fatal(err)
	}
	q := u.Query()
	q.Set("search_path", schema)
	u.RawQuery = q.Encode()
	return u.String()
}

// Raw opens a connection to ref that bypasses p11escrow, as an intruder's client would.
func Raw(t testing.TB, ref string) *sql.DB {
	t.Helper()
	db, err := sql.Open("pgx", ref)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
