package softhsmtest

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

func TestInitToken(t *testing.T) {
	e := New(t)
	conf, err := os.ReadFile(e.ConfPath)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"directories.tokendir = " + e.Dir, "objectstore.backend = file", "log.level = ERROR", "slots.removable = false"} {
		if !strings.Contains(string(conf), want) {
			t.Errorf("conf lacks %q:\n%s", want, conf)
		}
	}
	a := e.InitToken(t, "alpha", "12345678", "1234")
	b := e.InitToken(t, "beta", "12345678", "1234")
	if a == "" || b == "" || a == b {
		t.Fatalf("serials %q, %q", a, b)
	}
	out, err := e.run("--show-slots")
	if err != nil || !strings.Contains(out, a) || !strings.Contains(out, b) {
		t.Errorf("--show-slots with Environ() does not list both tokens: %v\n%s", err, out)
	}
	p, err := e.WriteConfNoAES()
	if err != nil {
		t.Fatal(err)
	}
	noAES, err := os.ReadFile(p)
	if err != nil || !strings.Contains(string(noAES), "slots.mechanisms = -CKM_AES_KEY_GEN,CKM_AES_KEY_GEN,") ||
		!strings.Contains(string(noAES), "directories.tokendir = "+e.Dir) {
		t.Errorf("no-AES conf: %v\n%s", err, noAES)
	}
}

func TestMktokenScript(t *testing.T) {
	Require(t)
	dir := filepath.Join(t.TempDir(), "demo")
	out, err := exec.Command("sh", "mktoken.sh", dir, "demo", "12345678", "1234").Output()
	if err != nil {
		t.Fatalf("mktoken.sh: %v", err)
	}
	line := strings.TrimSpace(string(out))
	conf, ok := strings.CutPrefix(line, "export SOFTHSM2_CONF=")
	if !ok || conf != filepath.Join(dir, "softhsm2.conf") {
		t.Fatalf("mktoken.sh printed %q", line)
	}
	e := &Env{Dir: dir, ConfPath: conf}
	if s, err := e.run("--show-slots"); err != nil || !strings.Contains(s, "demo") {
		t.Errorf("token not found: %v\n%s", err, s)
	}
}
