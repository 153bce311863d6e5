package main

import (
	"path/filepath"
	"testing"

	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
	"github.com/rogpeppe/go-internal/testscript"
)

// userScripts are the scripts of testdata/ that use only the user's token, besides the
// authority's HSM (which they reach with p11escrow-hsm). TestUserScripts runs them again with the
// user's token on each other PKCS#11 implementation; TestScripts runs them on SoftHSM2.
var userScripts = []string{
	"roundtrip", "stdio", "tamper", "inspect", "outputs", "nonregular",
	"args", "errors", "limits", "pins", "keyformats", "json_latin1", "exitcodes", "defaults",
	"record", "prompt", "pkcs11tool", "byhand", "furniture", "uris",
}

// TestUserScripts runs userScripts with the user's token "user" (user PIN 1234) on a TPM 2.0
// (swtpm through tpm2-pkcs11, one swtpm per script) and on NSS's softoken (one database per
// script), with the SoftHSM2 tokens of TestScripts beside it for the authority and the
// officers. P11ESCROW_MODULE (and for NSS P11ESCROW_MODULE_INIT_ARGS) then name the user's
// implementation, HSM_MODULE the SoftHSM2 module, and the condition [tpm] or [nss] holds.
func TestUserScripts(t *testing.T) {
	softhsmtest.Require(t)
	files := make([]string, len(userScripts))
	for i, name := range userScripts {
		files[i] = filepath.Join("testdata", name+".txt")
	}
	t.Run("tpm", func(t *testing.T) {
		t.Parallel()
		softhsmtest.RequireTPM(t)
		testscript.Run(t, testscript.Params{
			Files:     files,
			Setup:     setupUserTPM,
			Condition: implementation("tpm"),
			Cmds:      scriptCmds(),
		})
	})
	t.Run("nss", func(t *testing.T) {
		t.Parallel()
		softhsmtest.RequireNSS(t)
		testscript.Run(t, testscript.Params{
			Files:     files,
			Setup:     setupUserNSS,
			Condition: implementation("nss"),
			Cmds:      scriptCmds(),
		})
	})
}

// sameSerial is the serial number tpm2-pkcs11 and NSS's softoken give every token they make.
const sameSerial = "0000000000000000"

func setupUserTPM(env *testscript.Env) error {
	if err := setupTokens(env); err != nil {
		return err
	}
	p, err := startTPM(env)
	if err != nil {
		return err
	}
	if err := p.InitToken("user", "12345678", "1234"); err != nil {
		return err
	}
	env.Setenv("P11ESCROW_MODULE", p.ModulePath)
	env.Setenv("USER_SERIAL", sameSerial)
	env.Setenv("USER_TOKEN_ATTRS", "model=SW%20%20%20TPM;manufacturer=IBM")
	return nil
}

func setupUserNSS(env *testscript.Env) error {
	if err := setupTokens(env); err != nil {
		return err
	}
	module, args, err := softhsmtest.NSSToken(filepath.Join(env.WorkDir, ".nss"), "user", "1234")
	if err != nil {
		return err
	}
	env.Setenv("P11ESCROW_MODULE", module)
	env.Setenv("P11ESCROW_MODULE_INIT_ARGS", args)
	env.Setenv("USER_SERIAL", sameSerial)
	env.Setenv("USER_TOKEN_ATTRS", "model=NSS%203;manufacturer=Mozilla%20Foundation")
	return nil
}
