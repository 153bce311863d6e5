package main

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestMakeInstall runs `make install` into a staging directory and checks that it installs the
// binary and the man page made from the command definitions, under PREFIX.
func TestMakeInstall(t *testing.T) {
	dest := t.TempDir()
	cmd := exec.Command("make", "-s", "-C", "../..", "install", "DESTDIR="+dest, "PREFIX=/opt/p11")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make install: %v\n%s", err, out)
	}
	for name, mode := range map[string]os.FileMode{"opt/p11/bin/p11escrow": 0o755, "opt/p11/share/man/man1/p11escrow.1": 0o644} {
		fi, err := os.Stat(filepath.Join(dest, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != mode {
			t.Errorf("%s has mode %v, want %v", name, fi.Mode().Perm(), mode)
		}
	}
	man, err := os.ReadFile(filepath.Join(dest, "opt/p11/share/man/man1/p11escrow.1"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{".TH p11escrow 1", "encrypt", "authority"} {
		if !strings.Contains(string(man), want) {
			t.Errorf("the man page lacks %q", want)
		}
	}
}
