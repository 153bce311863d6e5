package postgres_test

import (
	"context"
	"database/sql"
	"errors"
	"net/url"
	"strings"
	"testing"

	"github.com/p11escrow/p11escrow/authority/store"
	"github.com/p11escrow/p11escrow/authority/store/postgres"
	"github.com/p11escrow/p11escrow/authority/store/postgres/pgtest"
	"github.com/p11escrow/p11escrow/authority/store/storetest"
)

func TestConformance(t *testing.T) {
	storetest.Run(t, storetest.Backend{
		New:  func(t *testing.T) string { return pgtest.NewDB(t) },
		Open: postgres.Open,
		Raw:  func(t *testing.T, ref string) *sql.DB { return pgtest.Raw(t, ref) },
	})
}

// TestOpenExisting: a command that only reads creates nothing in a database without the
// authority's tables, and its error names the database without its password.
func TestOpenExisting(t *testing.T) {
	ctx := context.Background()
	ref := pgtest.NewDB(t)
	u, err := url.Parse(ref)
	if err != nil {
		t.Fatal(err)
	}
	u.User = url.UserPassword(u.User.Username(), "s3cret")
	st, err := postgres.OpenExisting(ctx, u.String())
	if !errors.Is(err, store.ErrNoDatabase) || strings.Contains(err.Error(), "s3cret") ||
		!strings.Contains(err.Error(), "holds no authority store") {
		t.Fatalf("OpenExisting(empty) = %v; want ErrNoDatabase, saying the database holds no store, without the password", err)
	}
	if st != nil {
		st.Close()
	}
	var tables int
	if err := pgtest.Raw(t, ref).QueryRow(`SELECT COUNT(*) FROM information_schema.tables WHERE table_schema = current_schema()`).Scan(&tables); err != nil || tables != 0 {
		t.Fatalf("a read-only open made %d tables (%v)", tables, err)
	}
	st, err = postgres.Open(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	if st, err = postgres.OpenExisting(ctx, ref); err != nil {
		t.Fatalf("OpenExisting after Open: %v", err)
	}
	st.Close()
}

// TestIntakeSeqUsesIndex: as in the SQLite store, IntakeSeq's query can use the audit_intake
// index (PostgreSQL prefers a scan of a small table, so scans are turned off for the plan).
func TestIntakeSeqUsesIndex(t *testing.T) {
	ctx := context.Background()
	ref := pgtest.NewDB(t)
	st, err := postgres.Open(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	st.Close()
	conn, err := pgtest.Raw(t, ref).Conn(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, `SET enable_seqscan = off`); err != nil {
		t.Fatal(err)
	}
	// The values are spelled out: EXPLAIN with bound parameters answers nothing through pgx.
	q := strings.NewReplacer("$1", "'f'", "$2", "'c'").Replace(postgres.IntakeSeqSQL)
	rows, err := conn.QueryContext(ctx, `EXPLAIN `+q)
	if err != nil {
		t.Fatal(err)
	}
	defer rows.Close()
	var plan []string
	for rows.Next() {
		var line string
		if err := rows.Scan(&line); err != nil {
			t.Fatal(err)
		}
		plan = append(plan, line)
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	if p := strings.Join(plan, "\n"); !strings.Contains(p, "audit_intake") {
		t.Fatalf("IntakeSeq's plan does not use the audit_intake index:\n%s", p)
	}
}
