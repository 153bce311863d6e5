// Package softhsmtest makes throwaway SoftHSM2 tokens for tests and demos.
//
// SoftHSM2 reads SOFTHSM2_CONF once, at C_Initialize. This package never
// sets process environment itself: a test process that loads the module
// in-process must os.Setenv("SOFTHSM2_CONF", env.ConfPath) before the first
// token.Load (typically in TestMain, using Setup and Init, which need no
// testing.TB), and subprocesses get Environ().
package softhsmtest

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// InstallHint says how to get what the tests need.
const InstallHint = "install SoftHSM2 and OpenSC (Debian/Ubuntu: apt-get install softhsm2 opensc)"

var modulePaths = []string{
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/local/lib/softhsm/libsofthsm2.so",
	"/opt/homebrew/lib/softhsm/libsofthsm2.so",
}

// ModulePath locates libsofthsm2.so.
func ModulePath() (string, error) {
	for _, p := range modulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("libsofthsm2.so not found in %s; %s", strings.Join(modulePaths, ", "), InstallHint)
}

// Available reports why SoftHSM2 cannot be used, or nil if it can.
func Available() error {
	if _, err := exec.LookPath("softhsm2-util"); err != nil {
		return fmt.Errorf("softhsm2-util not found; %s", InstallHint)
	}
	_, err := ModulePath()
	return err
}

// Require skips the test if SoftHSM2 is missing, or fails it when the CI
// environment variable is set, because CI must never skip these silently.
func Require(tb testing.TB) {
	tb.Helper()
	err := Available()
	switch {
	case err == nil:
	case os.Getenv("CI") != "":
		tb.Fatalf("SoftHSM2 is required in CI: %v", err)
	default:
		tb.Skipf("skipping: %v", err)
	}
}

// Env is one private SoftHSM2 configuration and token directory.
type Env struct {
	Dir        string // holds softhsm2.conf and tokens/
	ConfPath   string
	ModulePath string
}

// New makes an Env in tb.TempDir(); it calls Require first.
func New(tb testing.TB) *Env {
	tb.Helper()
	Require(tb)
	e, err := Setup(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	return e
}

// Setup is New without testing.TB, for TestMain: it writes dir/softhsm2.conf
// pointing at dir/tokens.
func Setup(dir string) (*Env, error) {
	mod, err := ModulePath()
	if err != nil {
		return nil, err
	}
	e := &Env{Dir: dir, ConfPath: filepath.Join(dir, "softhsm2.conf"), ModulePath: mod}
	if err := os.MkdirAll(e.tokenDir(), 0o700); err != nil {
		return nil, err
	}
	return e, os.WriteFile(e.ConfPath, []byte(e.conf("")), 0o600)
}

func (e *Env) tokenDir() string { return filepath.Join(e.Dir, "tokens") }

func (e *Env) conf(extra string) string {
	return "directories.tokendir = " + e.tokenDir() + "\n" +
		"objectstore.backend = file\nlog.level = ERROR\nslots.removable = false\n" + extra
}

// Environ returns the variable a subprocess needs to see this Env's tokens.
func (e *Env) Environ() []string { return []string{"SOFTHSM2_CONF=" + e.ConfPath} }

// InitToken creates a token in the first free slot and returns its serial.
func (e *Env) InitToken(tb testing.TB, label, soPIN, userPIN string) (serial string) {
	tb.Helper()
	s, err := e.Init(label, soPIN, userPIN)
	if err != nil {
		tb.Fatal(err)
	}
	return s
}

var (
	serialRe = regexp.MustCompile(`(?m)^[ \t]*Serial number:[ \t]*(\S*)[ \t]*$`)
	labelRe  = regexp.MustCompile(`(?m)^[ \t]*Label:[ \t]*(.*?)[ \t]*$`)
)

// Init is InitToken without testing.TB, for TestMain.
func (e *Env) Init(label, soPIN, userPIN string) (serial string, err error) {
	if _, err := e.run("--init-token", "--free", "--label", label, "--so-pin", soPIN, "--pin", userPIN); err != nil {
		return "", err
	}
	out, err := e.run("--show-slots")
	if err != nil {
		return "", err
	}
	for _, block := range strings.Split(out, "\nSlot ") {
		l, s := labelRe.FindStringSubmatch(block), serialRe.FindStringSubmatch(block)
		if l != nil && s != nil && l[1] == label && s[1] != "" {
			return s[1], nil
		}
	}
	return "", errors.New("softhsm2-util --show-slots does not list token " + label)
}

func (e *Env) run(args ...string) (string, error) {
	cmd := exec.Command("softhsm2-util", args...)
	cmd.Env = append(os.Environ(), e.Environ()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("softhsm2-util %s: %v\n%s", args[0], err, out)
	}
	return string(out), nil
}

// noAES lists every AES mechanism SoftHSM2 2.6.1 offers. The first entry is
// deliberately repeated: SoftHSM2 2.6.1 does not apply the first name of a
// "-" list (checked: "-CKM_AES_KEY_GEN" alone leaves AES-KEY-GEN enabled).
var noAES = []string{
	"CKM_AES_KEY_GEN", "CKM_AES_KEY_GEN", "CKM_AES_ECB", "CKM_AES_CBC", "CKM_AES_CBC_PAD",
	"CKM_AES_CTR", "CKM_AES_GCM", "CKM_AES_CMAC", "CKM_AES_KEY_WRAP", "CKM_AES_KEY_WRAP_PAD",
	"CKM_AES_ECB_ENCRYPT_DATA", "CKM_AES_CBC_ENCRYPT_DATA",
}

// WriteConfNoAES writes dir/softhsm2-noaes.conf for the same token directory
// with every AES mechanism disabled, so the same tokens look like a smart
// card without AES. It returns the path; use it as SOFTHSM2_CONF of a new
// process. It takes no testing.TB so testscript's Setup can call it.
func (e *Env) WriteConfNoAES() (string, error) {
	p := filepath.Join(e.Dir, "softhsm2-noaes.conf")
	extra := "slots.mechanisms = -" + strings.Join(noAES, ",") + "\n"
	return p, os.WriteFile(p, []byte(e.conf(extra)), 0o600)
}
