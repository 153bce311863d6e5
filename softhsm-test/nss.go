package softhsmtest

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
)

// NSSInstallHint says how to get what the NSS tests need.
const NSSInstallHint = "install NSS's softoken and tools (Debian/Ubuntu: apt-get install libnss3 libnss3-tools, or run softhsm-test/deps.sh as root)"

var nssModulePaths = []string{
	"/usr/lib/x86_64-linux-gnu/libsoftokn3.so",
	"/usr/lib/aarch64-linux-gnu/libsoftokn3.so",
	"/usr/lib64/libsoftokn3.so",
	"/usr/lib/libsoftokn3.so",
}

// NSSModulePath locates NSS's softoken, libsoftokn3.so.
func NSSModulePath() (string, error) {
	for _, p := range nssModulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("libsoftokn3.so not found; %s", NSSInstallHint)
}

// RequireNSS skips the test if NSS's softoken or certutil is missing, or fails it when the CI
// environment variable is set: CI installs them (deps.sh) and must never skip silently.
func RequireNSS(tb testing.TB) {
	tb.Helper()
	_, err := NSSModulePath()
	if err == nil {
		if _, lerr := exec.LookPath("certutil"); lerr != nil {
			err = fmt.Errorf("certutil not found; %s", NSSInstallHint)
		}
	}
	switch {
	case err == nil:
	case os.Getenv("CI") != "":
		tb.Fatalf("NSS's softoken is required in CI: %v", err)
	default:
		tb.Skipf("skipping: %v", err)
	}
}

// NSSToken creates an NSS database in dir (certutil -N) whose key database is protected by pin,
// and returns the module path and the C_Initialize arguments that open it with its token
// labelled label. The database token's label is NSS's dbTokenDescription: without it, it is
// "NSS Certificate DB". (A database made with --empty-password needs no login at all; a PIN makes
// it behave as the other implementations do, so the same scripts run on it.)
func NSSToken(dir, label, pin string) (module, initArgs string, err error) {
	module, err = NSSModulePath()
	if err != nil {
		return "", "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", "", err
	}
	pw := filepath.Join(dir, "pw.txt")
	if err := os.WriteFile(pw, []byte(pin+"\n"), 0o600); err != nil {
		return "", "", err
	}
	defer os.Remove(pw)
	if out, err := exec.Command("certutil", "-N", "-d", "sql:"+dir, "-f", pw).CombinedOutput(); err != nil {
		return "", "", fmt.Errorf("certutil -N: %v\n%s", err, out)
	}
	return module, fmt.Sprintf("configdir='sql:%s' dbTokenDescription='%s'", dir, label), nil
}
