package authority

import (
	"context"
	"database/sql"
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/p11escrow/p11escrow/authority/store/postgres/pgtest"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
	"github.com/p11escrow/p11escrow/token"
)

// The tests share one SoftHSM2 token ("authority"), made in TestMain before the module is
// loaded, because SoftHSM2 reads SOFTHSM2_CONF once per process.
const (
	tokenLabel = "authority"
	userPIN    = "1234"
)

var fixture struct {
	env      *softhsmtest.Env
	setupErr error
	once     sync.Once
	mod      *token.Module
	tok      *token.Token
	loadErr  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "p11escrow-authority-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if softhsmtest.Available() == nil {
		fixture.setupErr = setup(dir)
	}
	code := m.Run()
	if fixture.tok != nil {
		fixture.tok.Close()
	}
	if fixture.mod != nil {
		fixture.mod.Close()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func setup(dir string) error {
	env, err := softhsmtest.Setup(dir)
	if err != nil {
		return err
	}
	if err := os.Setenv("SOFTHSM2_CONF", env.ConfPath); err != nil {
		return err
	}
	fixture.env = env
	_, err = env.Init(tokenLabel, "12345678", userPIN)
	return err
}

// testToken returns the shared, logged-in token, failing (or, outside CI without SoftHSM2,
// skipping) the test.
func testToken(t *testing.T) *token.Token {
	t.Helper()
	softhsmtest.Require(t)
	if fixture.setupErr != nil {
		t.Fatalf("SoftHSM2 setup: %v", fixture.setupErr)
	}
	fixture.once.Do(func() {
		fixture.mod, fixture.loadErr = token.Load(fixture.env.ModulePath)
		if fixture.loadErr != nil {
			return
		}
		fixture.tok, fixture.loadErr = fixture.mod.Open(token.Selector{Label: tokenLabel})
		if fixture.loadErr == nil {
			fixture.loadErr = fixture.tok.Login(userPIN)
		}
	})
	if fixture.loadErr != nil {
		t.Fatal(fixture.loadErr)
	}
	return fixture.tok
}

// onPostgres is whether this run's stores are PostgreSQL: `make test` runs the package twice,
// the second time with P11ESCROW_TEST_STORE=postgres.
var onPostgres = os.Getenv("P11ESCROW_TEST_STORE") == "postgres"

// testDB makes a new, empty database for a test and returns its reference (for --db).
func testDB(t *testing.T) string {
	if onPostgres {
		return pgtest.NewDB(t)
	}
	return filepath.Join(t.TempDir(), "authority.db")
}

// sqliteOnly skips a test of the SQLite backend's own behaviour in the PostgreSQL run.
func sqliteOnly(t *testing.T) {
	if onPostgres {
		t.Skip("a test of the SQLite backend; this run's stores are PostgreSQL")
	}
}

// refs maps each store the tests opened to its reference, for rawDB.
var refs sync.Map

// openTestStore opens the store at ref, closed when the test ends.
func openTestStore(t *testing.T, ref string) Store {
	t.Helper()
	st, err := OpenStore(context.Background(), ref, true)
	if err != nil {
		t.Fatal(err)
	}
	refs.Store(st, ref)
	t.Cleanup(func() { st.Close() })
	return st
}

// testStore opens a fresh store for a test.
func testStore(t *testing.T) Store { return openTestStore(t, testDB(t)) }

// rawDB opens a connection to a's database that bypasses p11escrow, as an intruder's client
// would.
func rawDB(t *testing.T, a *Authority) *sql.DB {
	t.Helper()
	ref, ok := refs.Load(a.st)
	if !ok {
		t.Fatal("the authority's store was not opened by openTestStore")
	}
	if IsPostgres(ref.(string)) {
		return pgtest.Raw(t, ref.(string))
	}
	db, err := sql.Open("sqlite", "file:"+ref.(string)+"?_pragma=busy_timeout(10000)")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}
