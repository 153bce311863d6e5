package token

import (
	"bytes"
	"crypto"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/p11escrow/p11escrow/escrow"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
)

// noAESKeyEnv passes the label of the parent's key to the child.
const noAESKeyEnv = "P11ESCROW_TOKEN_TEST_KEY"

// TestNoAESPlansHostWrap re-runs this test binary with SOFTHSM2_CONF set to
// a configuration that hides every AES mechanism of the same tokens:
// SoftHSM2 reads the configuration only at C_Initialize, so this needs a
// fresh process. The child is TestNoAESChild.
func TestNoAESPlansHostWrap(t *testing.T) {
	tk := mainToken(t)
	label := uniq(t, "noaes-key")
	if _, err := tk.GenerateRSA(label, 2048); err != nil {
		t.Fatal(err)
	}
	conf, err := fixture.env.WriteConfNoAES()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(os.Args[0], "-test.run=^TestNoAESChild$", "-test.v", "-test.count=1")
	cmd.Env = append(os.Environ(), "SOFTHSM2_CONF="+conf, childEnv+"=1", noAESKeyEnv+"="+label)
	out, err := cmd.CombinedOutput()
	if err != nil || !strings.Contains(string(out), "--- PASS: TestNoAESChild") {
		t.Fatalf("child: %v\n%s", err, out)
	}
}

func TestNoAESChild(t *testing.T) {
	if os.Getenv(childEnv) == "" {
		t.Skip("run by TestNoAESPlansHostWrap in a child process")
	}
	path, err := softhsmtest.ModulePath()
	if err != nil {
		t.Fatal(err)
	}
	m, err := Load(path)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	tk, err := m.Open(Selector{Label: mainLabel})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	if err := tk.Login(userPIN); err != nil {
		t.Fatal(err)
	}
	c, err := tk.Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	if c.AESKeyGen || c.AESGCM || !c.RSAOAEP || !c.GenerateRandom {
		t.Errorf("Capabilities() = %+v, want no AES but OAEP and RNG", c)
	}
	p, why := c.Plan()
	if p != PathHostWrap || !strings.Contains(why, "no AES key generation") {
		t.Errorf("Plan() = %v, %q", p, why)
	}
	kp, err := tk.FindKeyPair(os.Getenv(noAESKeyEnv), nil)
	if err != nil {
		t.Fatal(err)
	}
	fk, err := tk.NewFileKey([]byte("host"))
	if err != nil {
		t.Fatal(err)
	}
	if fk.Path() != PathHostWrap || fk.Secret() != nil {
		t.Errorf("file key path %v, secret %v", fk.Path(), fk.Secret())
	}
	v, _ := fk.Value()
	// A key drawn on the host is not wrapped by the token: the caller wraps it on the host.
	if _, err := fk.WrapOAEP(kp.Public, crypto.SHA1); !errors.Is(err, ErrHostWrap) || !errors.Is(err, errors.ErrUnsupported) {
		t.Fatalf("WrapOAEP on PathHostWrap = %v, want ErrHostWrap", err)
	}
	s, err := (&escrow.RSARecipient{Public: kp.Public, Hash: crypto.SHA1, Role: escrow.RoleOwner}).Wrap(fk)
	if err != nil {
		t.Fatal(err)
	}
	w := s.Body
	if got, err := kp.DecryptOAEP(crypto.SHA1, w); err != nil || !bytes.Equal(got, v) || len(v) != 32 {
		t.Errorf("token DecryptOAEP of host-wrapped key = %x, %v; want %x", got, err, v)
	}
	fk.Destroy()
	if _, err := fk.Value(); err == nil {
		t.Error("Value() after Destroy succeeded")
	}
}
