package authority

import (
	"context"
	"strings"

	"github.com/p11escrow/p11escrow/authority/store"
	"github.com/p11escrow/p11escrow/authority/store/postgres"
	"github.com/p11escrow/p11escrow/authority/store/sqlite"
)

// OpenStore opens the store that ref names, picking the backend by ref's form: a URL with the
// scheme postgres or postgresql names a PostgreSQL database; anything else is the path of a
// SQLite database file. With create false, a SQLite file that does not exist is an error
// wrapping ErrNoDatabase instead of a new, empty store, and so is a PostgreSQL database without
// the authority's tables. A PostgreSQL database itself must exist: the authority makes its
// tables in it on first use.
func OpenStore(ctx context.Context, ref string, create bool) (store.Store, error) {
	if IsPostgres(ref) {
		if create {
			return postgres.Open(ctx, ref)
		}
		return postgres.OpenExisting(ctx, ref)
	}
	if create {
		return sqlite.Open(ctx, ref)
	}
	return sqlite.OpenExisting(ctx, ref)
}

// IsPostgres reports whether ref is a PostgreSQL URL rather than a file path.
func IsPostgres(ref string) bool {
	return strings.HasPrefix(ref, "postgres://") || strings.HasPrefix(ref, "postgresql://")
}
