package main

import (
	"bytes"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
	"github.com/rogpeppe/go-internal/testscript"
)

func TestMain(m *testing.M) {
	testscript.Main(m, map[string]func(){
		"p11escrow": main,
		// p11escrow on the SoftHSM2 tokens ($HSM_MODULE: the authority, the officers, the spare
		// "user"), whichever implementation holds the user's token (see TestUserScripts).
		"p11escrow-hsm": func() {
			os.Setenv("P11ESCROW_MODULE", os.Getenv("HSM_MODULE"))
			os.Unsetenv("P11ESCROW_MODULE_INIT_ARGS")
			main()
		},
		// p11escrow as it runs where the file system has no unnamed files (O_TMPFILE).
		"p11escrow-named": func() { useUnnamed = false; main() },
		// p11escrow waiting one second, not ten, for the other end of a FIFO.
		"p11escrow-fifo1s": func() { fifoWait = time.Second; main() },
	})
}

// TestScripts runs testdata/*.txt. Each script gets its own SoftHSM2 token directory with four
// fresh tokens, "user", "authority", "officer1" and "officer2" (user PIN 1234 on all), and these
// variables: SOFTHSM2_CONF, NOAES_CONF (the same tokens with every AES mechanism disabled),
// P11ESCROW_MODULE, HSM_MODULE (the same), USER_TOKEN_ATTRS (the model and manufacturer of
// the user's token, as a PKCS#11 URI writes them), P11ESCROW_PIN, USER_SERIAL, AUTHORITY_SERIAL,
// OFFICER1_SERIAL, OFFICER2_SERIAL, and BYHAND, the path of the by-hand decryption script of
// FORMAT.md section 7. The condition [softhsm] holds, [tpm] and [nss] do not (see
// TestUserScripts, which runs the user-side scripts again on those).
func TestScripts(t *testing.T) {
	softhsmtest.Require(t)
	testscript.Run(t, testscript.Params{
		Dir:       "testdata",
		Setup:     setupTokens,
		Condition: implementation("softhsm"),
		Cmds:      scriptCmds(),
	})
}

// implementation answers the conditions [softhsm], [tpm] and [nss]: which PKCS#11
// implementation holds the user's token in this run. Other conditions are testscript's own.
func implementation(name string) func(cond string) (bool, error) {
	return func(cond string) (bool, error) {
		switch cond {
		case "softhsm", "tpm", "nss":
			return cond == name, nil
		}
		return false, fmt.Errorf("unknown condition %q", cond)
	}
}

// scriptCmds are the commands every testscript may use.
func scriptCmds() map[string]func(ts *testscript.TestScript, neg bool, args []string) {
	return map[string]func(ts *testscript.TestScript, neg bool, args []string){
		"mkfile":      mkfile,
		"flipbyte":    flipbyte,
		"truncate":    truncate,
		"splice":      splice,
		"replace":     replace,
		"appendbytes": appendBytes,
		// Authority tests (authority_test.go).
		"editrequest":  editRequest,
		"splicerecord": spliceRecord,
		"sqlexec":      sqlExec,
		"fileid":       fileID,
		"squat":        squat,
		// Authority service tests (serve_test.go).
		"mkcerts":   mkcerts,
		"freeport":  freeport,
		"waitserve": waitserve,
	}
}

func setupTokens(env *testscript.Env) error {
	e, err := softhsmtest.Setup(filepath.Join(env.WorkDir, ".softhsm"))
	if err != nil {
		return err
	}
	serials := map[string]string{"user": "USER_SERIAL", "authority": "AUTHORITY_SERIAL",
		"officer1": "OFFICER1_SERIAL", "officer2": "OFFICER2_SERIAL"}
	for _, label := range []string{"user", "authority", "officer1", "officer2"} {
		serial, err := e.Init(label, "12345678", "1234")
		if err != nil {
			return err
		}
		env.Setenv(serials[label], serial)
	}
	noAES, err := e.WriteConfNoAES()
	if err != nil {
		return err
	}
	env.Setenv("SOFTHSM2_CONF", e.ConfPath)
	env.Setenv("NOAES_CONF", noAES)
	env.Setenv("P11ESCROW_MODULE", e.ModulePath)
	env.Setenv("HSM_MODULE", e.ModulePath)
	env.Setenv("USER_TOKEN_ATTRS", "model=SoftHSM%20v2;manufacturer=SoftHSM%20project")
	env.Setenv("P11ESCROW_PIN", "1234")
	byHand, err := filepath.Abs("../../escrow/testdata/decrypt-by-hand.sh")
	if err != nil {
		return err
	}
	env.Setenv("BYHAND", byHand)
	return nil
}

// mkfile NAME SIZE writes SIZE pseudo-random bytes (SIZE may use a K or M suffix).
func mkfile(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: mkfile NAME SIZE")
	}
	size := parseSize(ts, args[1])
	data := make([]byte, size)
	r := rand.NewChaCha8([32]byte{byte(size), byte(size >> 8), byte(size >> 16)})
	r.Read(data)
	ts.Check(os.WriteFile(ts.MkAbs(args[0]), data, 0o644))
}

func parseSize(ts *testscript.TestScript, s string) int {
	mult := 1
	switch s[len(s)-1] {
	case 'K':
		mult, s = 1024, s[:len(s)-1]
	case 'M':
		mult, s = 1<<20, s[:len(s)-1]
	}
	n, err := strconv.Atoi(s)
	ts.Check(err)
	return n * mult
}

// flipbyte IN OFFSET OUT flips the low bit of byte OFFSET (see offset).
func flipbyte(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: flipbyte IN OFFSET OUT")
	}
	data, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	data[offset(ts, data, args[1])] ^= 0x01
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), data, 0o644))
}

// truncate IN SIZE OUT keeps the first SIZE bytes (see offset).
func truncate(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: truncate IN SIZE OUT")
	}
	data, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), data[:offset(ts, data, args[1])], 0o644))
}

// offset parses a position in a p11escrow file: N, -N (from the end), or header+N and
// header-N (from the end of the header).
func offset(ts *testscript.TestScript, data []byte, s string) int {
	base := 0
	if rest, ok := strings.CutPrefix(s, "header"); ok {
		h, _, err := escrow.ParseHeader(bytes.NewReader(data))
		ts.Check(err)
		base, s = len(h.Marshal()), rest
	}
	sign := 1
	switch {
	case strings.HasPrefix(s, "+"):
		s = s[1:]
	case strings.HasPrefix(s, "-"):
		sign, s = -1, s[1:]
		if base == 0 {
			base = len(data)
		}
	}
	return base + sign*parseSize(ts, s)
}

// splice A B OUT writes A with its authority stanza replaced by B's: the two stanzas then wrap
// different keys.
func splice(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: splice A B OUT")
	}
	a, err := os.ReadFile(ts.MkAbs(args[0]))
	ts.Check(err)
	b, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	ha, _, err := escrow.ParseHeader(bytes.NewReader(a))
	ts.Check(err)
	hb, _, err := escrow.ParseHeader(bytes.NewReader(b))
	ts.Check(err)
	spliced := *ha
	spliced.Stanzas = nil
	for i, s := range ha.Stanzas {
		if escrow.StanzaRole(s) == escrow.RoleAuthority {
			s = hb.Stanzas[i]
		}
		spliced.Stanzas = append(spliced.Stanzas, s)
	}
	out := append(spliced.Marshal(), a[len(ha.Marshal()):]...)
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), out, 0o644))
}

// replace FILE OLD NEW replaces the first OLD in FILE, which must contain it.
func replace(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: replace FILE OLD NEW")
	}
	name := ts.MkAbs(args[0])
	data, err := os.ReadFile(name)
	ts.Check(err)
	if !bytes.Contains(data, []byte(args[1])) {
		ts.Fatalf("%s does not contain %q", args[0], args[1])
	}
	data = bytes.Replace(data, []byte(args[1]), []byte(args[2]), 1)
	ts.Check(os.WriteFile(name, data, 0o644))
}

// appendbytes FILE N appends N zero bytes to FILE.
func appendBytes(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: appendbytes FILE N")
	}
	f, err := os.OpenFile(ts.MkAbs(args[0]), os.O_APPEND|os.O_WRONLY, 0)
	ts.Check(err)
	defer f.Close()
	_, err = f.Write(make([]byte, parseSize(ts, args[1])))
	ts.Check(err)
}
