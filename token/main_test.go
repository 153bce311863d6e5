package token

import (
	"fmt"
	"os"
	"sync"
	"testing"

	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
)

// Test tokens, made once per test process in TestMain.
const (
	mainLabel = "p11e-main" // most tests; logged in
	pinLabel  = "p11e-pin"  // wrong-PIN test only, so nothing else logs it in
	soPIN     = "12345678"
	userPIN   = "1234"
	// childEnv marks a re-executed test binary (see noaes_test.go).
	childEnv = "P11ESCROW_TOKEN_TEST_CHILD"
)

// fixture is shared by all tests: SoftHSM2 reads SOFTHSM2_CONF once per
// process, so the module is loaded once and every test uses it.
var fixture struct {
	env        *softhsmtest.Env
	mainSerial string
	setupErr   error

	once    sync.Once
	mod     *Module
	main    *Token
	loadErr error

	keyOnce sync.Once
	key     *KeyPair
	keyErr  error
}

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) != "" {
		os.Exit(m.Run()) // SOFTHSM2_CONF comes from the parent
	}
	dir, err := os.MkdirTemp("", "p11escrow-token-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	code := setupAndRun(m, dir)
	os.RemoveAll(dir)
	os.Exit(code)
}

func setupAndRun(m *testing.M, dir string) int {
	if softhsmtest.Available() == nil {
		fixture.setupErr = setup(dir)
	}
	code := m.Run()
	if fixture.main != nil {
		fixture.main.Close()
	}
	if fixture.mod != nil {
		fixture.mod.Close()
	}
	return code
}

// setup must run before any token.Load in this process.
func setup(dir string) error {
	env, err := softhsmtest.Setup(dir)
	if err != nil {
		return err
	}
	if err := os.Setenv("SOFTHSM2_CONF", env.ConfPath); err != nil {
		return err
	}
	fixture.env = env
	if fixture.mainSerial, err = env.Init(mainLabel, soPIN, userPIN); err != nil {
		return err
	}
	_, err = env.Init(pinLabel, soPIN, userPIN)
	return err
}

// module returns the shared module, skipping the test if SoftHSM2 is absent.
func module(t *testing.T) *Module {
	t.Helper()
	loadFixture(t)
	return fixture.mod
}

// loadFixture loads the module and logs in to the main token, once per test process, for tests
// and benchmarks alike.
func loadFixture(tb testing.TB) {
	tb.Helper()
	softhsmtest.Require(tb)
	if fixture.setupErr != nil {
		tb.Fatalf("SoftHSM2 setup: %v", fixture.setupErr)
	}
	fixture.once.Do(func() {
		fixture.mod, fixture.loadErr = Load(fixture.env.ModulePath)
		if fixture.loadErr != nil {
			return
		}
		fixture.main, fixture.loadErr = fixture.mod.Open(Selector{Label: mainLabel})
		if fixture.loadErr == nil {
			fixture.loadErr = fixture.main.Login(userPIN)
		}
	})
	if fixture.loadErr != nil {
		tb.Fatal(fixture.loadErr)
	}
}

// mainToken is the shared, logged-in session on the main token.
func mainToken(t *testing.T) *Token {
	t.Helper()
	module(t)
	return fixture.main
}

// sharedKey is one RSA-2048 pair generated once for the tests that only
// need some key pair.
func sharedKey(t *testing.T) *KeyPair {
	t.Helper()
	tk := mainToken(t)
	fixture.keyOnce.Do(func() { fixture.key, fixture.keyErr = tk.GenerateRSA("shared", 2048) })
	if fixture.keyErr != nil {
		t.Fatal(fixture.keyErr)
	}
	return fixture.key
}
