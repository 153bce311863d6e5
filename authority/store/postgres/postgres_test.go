package postgres_test

import (
	"database/sql"
	"testing"

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
