package authority

import (
	"fmt"
	"os"
	"path/filepath"
	"sync"
	"testing"

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

// testStore opens a fresh SQLite store in the test's temporary directory.
func testStore(t *testing.T) Store {
	t.Helper()
	st, err := OpenSQLite(filepath.Join(t.TempDir(), "authority.db"))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}
