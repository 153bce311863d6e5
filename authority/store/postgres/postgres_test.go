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
	if !errors.Is(err, store.ErrNoDatabase) || strings.Contains(err.Error(), "s3cret") {
		t.Fatalf("OpenExisting(empty) = %v; want ErrNoDatabase, without the password", err)
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
