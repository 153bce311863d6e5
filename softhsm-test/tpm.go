package softhsmtest

import (
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
	"time"
)

// TPMInstallHint says how to get what the TPM tests need.
const TPMInstallHint = "install swtpm, tpm2-pkcs11 and tpm2-tools (Debian/Ubuntu: apt-get install swtpm libtpm2-pkcs11-1 tpm2-tools, or run softhsm-test/deps.sh as root)"

var tpmModulePaths = []string{
	"/usr/lib/x86_64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
	"/usr/lib/aarch64-linux-gnu/pkcs11/libtpm2_pkcs11.so",
	"/usr/lib/pkcs11/libtpm2_pkcs11.so",
	"/usr/local/lib/pkcs11/libtpm2_pkcs11.so",
}

// TPMModulePath locates libtpm2_pkcs11.so.
func TPMModulePath() (string, error) {
	for _, p := range tpmModulePaths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", fmt.Errorf("libtpm2_pkcs11.so not found; %s", TPMInstallHint)
}

// TPMAvailable reports why the software TPM cannot be used, or nil if it can.
func TPMAvailable() error {
	for _, tool := range []string{"swtpm", "tpm2_flushcontext", "pkcs11-tool"} {
		if _, err := exec.LookPath(tool); err != nil {
			return fmt.Errorf("%s not found; %s", tool, TPMInstallHint)
		}
	}
	_, err := TPMModulePath()
	return err
}

// RequireTPM skips the test if the software TPM is missing, or fails it when
// the CI environment variable is set: CI installs it (deps.sh) and must never
// skip these tests silently.
func RequireTPM(tb testing.TB) {
	tb.Helper()
	err := TPMAvailable()
	switch {
	case err == nil:
	case os.Getenv("CI") != "":
		tb.Fatalf("the software TPM is required in CI: %v", err)
	default:
		tb.Skipf("skipping: %v", err)
	}
}

// TPM is a private swtpm (a TPM 2.0 simulator) on a loopback port, with a
// tpm2-pkcs11 store beside it. tpm2-pkcs11 talks to it directly, with no
// resource manager: like a bare /dev/tpm0, it has three transient object
// slots, which a failed call can leave full (see Flush).
type TPM struct {
	Dir        string // holds state/ (the TPM's NVRAM) and store/ (tpm2-pkcs11's database)
	ModulePath string
	TCTI       string // "swtpm:host=127.0.0.1,port=N"
	cmd        *exec.Cmd
	done       chan struct{}
}

// NewTPM starts a TPM in tb.TempDir() and stops it when the test ends, also
// when it fails or panics. It calls RequireTPM first.
func NewTPM(tb testing.TB) *TPM {
	tb.Helper()
	RequireTPM(tb)
	p, err := StartTPM(tb.TempDir())
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() { p.Stop() })
	return p
}

// StartTPM is NewTPM without testing.TB, for TestMain and testscript's
// Setup: the caller must Stop it. swtpm is started on a free loopback port
// pair (server P, control P+1) and killed with the test process should that
// die first (Linux: Pdeathsig).
func StartTPM(dir string) (*TPM, error) {
	mod, err := TPMModulePath()
	if err != nil {
		return nil, err
	}
	p := &TPM{Dir: dir, ModulePath: mod}
	for _, d := range []string{p.stateDir(), p.storeDir()} {
		if err := os.MkdirAll(d, 0o700); err != nil {
			return nil, err
		}
	}
	// Another process can take the port between our probe and swtpm's bind;
	// then swtpm exits, and we try another port.
	var lastErr error
	for range 5 {
		port, err := freePortPair()
		if err != nil {
			return nil, err
		}
		if lastErr = p.start(port); lastErr == nil {
			return p, nil
		}
	}
	return nil, lastErr
}

func (p *TPM) stateDir() string { return filepath.Join(p.Dir, "state") }
func (p *TPM) storeDir() string { return filepath.Join(p.Dir, "store") }

func (p *TPM) start(port int) error {
	addr := "127.0.0.1:" + strconv.Itoa(port)
	cmd := exec.Command("swtpm", "socket", "--tpm2",
		"--tpmstate", "dir="+p.stateDir(),
		"--flags", "not-need-init,startup-clear",
		"--server", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port),
		"--ctrl", fmt.Sprintf("type=tcp,port=%d,bindaddr=127.0.0.1", port+1))
	cmd.Stdout, cmd.Stderr = nil, nil
	cmd.SysProcAttr = procAttr()
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("start swtpm: %v", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	deadline := time.Now().Add(10 * time.Second)
	for {
		select {
		case <-done:
			return fmt.Errorf("swtpm exited at start (port %d taken?)", port)
		default:
		}
		if c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond); err == nil {
			c.Close()
			break
		}
		if time.Now().After(deadline) {
			cmd.Process.Kill()
			<-done
			return errors.New("swtpm did not listen within 10 s")
		}
		time.Sleep(20 * time.Millisecond)
	}
	p.cmd, p.done = cmd, done
	p.TCTI = fmt.Sprintf("swtpm:host=127.0.0.1,port=%d", port)
	return nil
}

// freePortPair finds a loopback port P such that P and P+1 are both free.
func freePortPair() (int, error) {
	for range 20 {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return 0, err
		}
		port := l.Addr().(*net.TCPAddr).Port
		l.Close()
		if port >= 65535 {
			continue
		}
		l2, err := net.Listen("tcp", "127.0.0.1:"+strconv.Itoa(port+1))
		if err != nil {
			continue
		}
		l2.Close()
		return port, nil
	}
	return 0, errors.New("no free pair of loopback ports for swtpm")
}

// Stop kills this swtpm by its PID and waits for it. It is idempotent.
func (p *TPM) Stop() {
	if p == nil || p.cmd == nil {
		return
	}
	p.cmd.Process.Kill()
	<-p.done
	p.cmd = nil
}

// Environ returns the variables a process needs to use this TPM through
// tpm2-pkcs11 (and tpm2-tools), with the module's logging at errors only and
// the TSS's off, so that few of their stderr lines mix with p11escrow's.
func (p *TPM) Environ() []string {
	return []string{
		"TPM2_PKCS11_TCTI=" + p.TCTI,
		"TPM2_PKCS11_STORE=" + p.storeDir(),
		"TPM2TOOLS_TCTI=" + p.TCTI,
		"TPM2_PKCS11_LOG_LEVEL=0",
		"TSS2_LOG=all+NONE",
	}
}

// InitToken creates a token through the module itself (pkcs11-tool
// --init-token, then --init-pin as the security officer), as a user would.
// tpm2-pkcs11 tokens all have serial 0000000000000000: select them by label.
func (p *TPM) InitToken(label, soPIN, userPIN string) error {
	if _, err := p.run("pkcs11-tool", "--module", p.ModulePath, "--init-token", "--label", label, "--so-pin", soPIN); err != nil {
		return err
	}
	_, err := p.run("pkcs11-tool", "--module", p.ModulePath, "--token-label", label,
		"--login", "--login-type", "so", "--so-pin", soPIN, "--init-pin", "--pin", userPIN)
	return err
}

// Flush unloads every transient object from the TPM (tpm2_flushcontext -t).
// A failed tpm2-pkcs11 call can leave the TPM's three object slots full, and
// then every later call of every process fails, so tests flush between steps,
// as a resource manager (/dev/tpmrm0) does on a real machine.
func (p *TPM) Flush() error {
	_, err := p.run("tpm2_flushcontext", "-t")
	return err
}

func (p *TPM) run(name string, args ...string) (string, error) {
	cmd := exec.Command(name, args...)
	cmd.Env = append(os.Environ(), p.Environ()...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		return "", fmt.Errorf("%s %s: %v\n%s", name, args[0], err, out)
	}
	return string(out), nil
}
