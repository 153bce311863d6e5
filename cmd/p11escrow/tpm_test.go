package main

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
	"github.com/rogpeppe/go-internal/testscript"
)

// TestScriptsTPM runs testdata/tpm/*.txt: the user's side of the story with the user's token on
// a TPM 2.0 (swtpm through tpm2-pkcs11), beside the SoftHSM2 tokens of TestScripts for the
// authority and the officers. Each script gets its own swtpm, stopped when the script ends, and
// a token "tpm" (user PIN 1234) made through the module. Besides TestScripts' variables:
// TPM_MODULE (the tpm2-pkcs11 module), SOFTHSM_MODULE (a copy of P11ESCROW_MODULE), SPY_MODULE (OpenSC's pkcs11-spy), and the TPM2_PKCS11_TCTI, TPM2_PKCS11_STORE and
// TPM2TOOLS_TCTI that point the module and tpm2-tools at this script's swtpm. A bare TPM
// holds three objects, and a failed call can leave them loaded: scripts run
// `exec tpm2_flushcontext -t` after one, as a resource manager would.
func TestScriptsTPM(t *testing.T) {
	softhsmtest.Require(t)
	softhsmtest.RequireTPM(t)
	testscript.Run(t, testscript.Params{
		Dir:   filepath.Join("testdata", "tpm"),
		Setup: setupTPM,
		Cmds: map[string]func(ts *testscript.TestScript, neg bool, args []string){
			"mkfile":  mkfile,
			"replace": replace,
			"fileid":  fileID,
		},
	})
}

// spyModule is OpenSC's pkcs11-spy, which logs every call to the module named by $PKCS11SPY.
const spyModule = "/usr/lib/x86_64-linux-gnu/pkcs11/pkcs11-spy.so"

func setupTPM(env *testscript.Env) error {
	if _, err := os.Stat(spyModule); err != nil {
		return fmt.Errorf("OpenSC's pkcs11-spy is missing (%v); install opensc-pkcs11, or run softhsm-test/deps.sh as root", err)
	}
	if err := setupTokens(env); err != nil {
		return err
	}
	p, err := startTPM(env)
	if err != nil {
		return err
	}
	if err := p.InitToken("tpm", "12345678", "1234"); err != nil {
		return err
	}
	env.Setenv("SOFTHSM_MODULE", env.Getenv("P11ESCROW_MODULE"))
	env.Setenv("SPY_MODULE", spyModule)
	return nil
}

// startTPM starts a swtpm for this script, stopped when the script ends, and sets TPM_MODULE
// and the variables that point tpm2-pkcs11 and tpm2-tools at it.
func startTPM(env *testscript.Env) (*softhsmtest.TPM, error) {
	p, err := softhsmtest.StartTPM(filepath.Join(env.WorkDir, ".tpm"))
	if err != nil {
		return nil, err
	}
	env.Defer(p.Stop)
	for _, kv := range p.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		env.Setenv(k, v)
	}
	env.Setenv("TPM_MODULE", p.ModulePath)
	return p, nil
}
