package softhsmtest

import (
	"strings"
	"syscall"
	"testing"
)

// TestTPM starts a TPM, makes a token through the module, and checks that Stop
// ends swtpm.
func TestTPM(t *testing.T) {
	p := NewTPM(t)
	if err := p.InitToken("tpmtoken", "12345678", "1234"); err != nil {
		t.Fatal(err)
	}
	out, err := p.run("pkcs11-tool", "--module", p.ModulePath, "--list-token-slots")
	if err != nil || !strings.Contains(out, "tpmtoken") || !strings.Contains(out, "PIN initialized") {
		t.Fatalf("the token is not listed as initialised: %v\n%s", err, out)
	}
	if err := p.Flush(); err != nil {
		t.Fatal(err)
	}
	pid := p.cmd.Process.Pid
	p.Stop()
	p.Stop() // idempotent
	if err := syscall.Kill(pid, 0); err == nil {
		t.Fatalf("swtpm (pid %d) still runs after Stop", pid)
	}
}
