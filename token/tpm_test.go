package token

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"
	"strings"
	"testing"

	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
)

// newTPM starts a software TPM and makes a token "tpm" on it through the module. tpm2-pkcs11
// reads its variables at C_Initialize, so they are set for the test.
func newTPM(t testing.TB) *softhsmtest.TPM {
	p := softhsmtest.NewTPM(t)
	if err := p.InitToken("tpm", soPIN, userPIN); err != nil {
		t.Fatal(err)
	}
	for _, kv := range p.Environ() {
		k, v, _ := strings.Cut(kv, "=")
		t.Setenv(k, v)
	}
	return p
}

// withTPM runs f on the TPM token, logged in, in its own load of the module, as one p11escrow
// command would. tpm2-pkcs11 keeps every key it used loaded until C_Finalize, and a TPM without
// a resource manager holds three objects, so each step gets its own load and a Flush after.
func withTPM(t testing.TB, p *softhsmtest.TPM, f func(tok *Token)) {
	t.Helper()
	m, err := Load(p.ModulePath)
	if err != nil {
		t.Fatal(err)
	}
	defer func() {
		m.Close()
		if err := p.Flush(); err != nil {
			t.Fatal(err)
		}
	}()
	tok, err := m.Open(Selector{Label: "tpm"})
	if err != nil {
		t.Fatal(err)
	}
	if err := tok.Login(userPIN); err != nil {
		t.Fatal(err)
	}
	f(tok)
}

// TestTPMKeys: tpm2-pkcs11 refuses every single-use template. With AllowDualUse, exchange and
// signing keys are made anyway, say that they are dual-use, and work; without it (authority
// keys) generation fails with advice that does not suggest a retry.
func TestTPMKeys(t *testing.T) {
	p := newTPM(t)
	withTPM(t, p, func(tok *Token) { tpmExchangeKey(t, tok) })
	withTPM(t, p, func(tok *Token) { tpmSigningKey(t, tok) })
	withTPM(t, p, func(tok *Token) {
		_, err := tok.GenerateRSA("authority", 2048)
		if err == nil {
			t.Fatal("GenerateRSA without AllowDualUse succeeded on the TPM; want a refusal")
		}
		var e *Error
		if !errors.As(err, &e) || strings.Contains(err.Error(), "retry,") || !strings.Contains(err.Error(), "retrying will not help") {
			t.Errorf("refusal advice: %v", err)
		}
	})
}

func tpmExchangeKey(t *testing.T, tok *Token) {
	kp, err := tok.GenerateRSA("alice", 2048, AllowDualUse)
	if err != nil {
		t.Fatalf("GenerateRSA with AllowDualUse on the TPM: %v", err)
	}
	a, err := kp.PrivateAttributes()
	if err != nil {
		t.Fatal(err)
	}
	if !a.DualUse() || !a.Sensitive || a.Extractable || !a.Token {
		t.Errorf("TPM exchange key attributes %+v; want dual-use, sensitive, not extractable, token", a)
	}
	hash, err := kp.OAEPHash()
	if err != nil || hash != crypto.SHA256 {
		t.Errorf("OAEPHash on the TPM = %v, %v; want SHA-256", hash, err)
	}
	msg := []byte("a file key of thirty-two bytes!!")
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, kp.Public, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := kp.DecryptOAEP(crypto.SHA256, ct)
	if err != nil || !bytes.Equal(pt, msg) {
		t.Errorf("DecryptOAEP(SHA-256) on the TPM = %q, %v", pt, err)
	}
}

func tpmSigningKey(t *testing.T, tok *Token) {
	s, err := tok.GenerateSigner("officer", SignECDSAP256, AllowDualUse)
	if err != nil {
		t.Fatalf("GenerateSigner with AllowDualUse on the TPM: %v", err)
	}
	if a, err := s.PrivateAttributes(); err != nil || !a.DualUse() {
		t.Errorf("TPM signing key attributes %+v, %v; want dual-use", a, err)
	}
	digest := sha256.Sum256([]byte("approve"))
	sig, err := s.Sign(nil, digest[:], crypto.SHA256)
	if err != nil || !ecdsa.VerifyASN1(s.Public().(*ecdsa.PublicKey), digest[:], sig) {
		t.Errorf("Sign on the TPM: %v", err)
	}
	if found, err := tok.FindSigner("officer"); err != nil || !found.Public().(*ecdsa.PublicKey).Equal(s.Public()) {
		t.Errorf("FindSigner on the TPM: %v", err)
	}

}

// TestAllowDualUseKeepsSingleUse: on a token that honours usage attributes (SoftHSM2),
// AllowDualUse changes nothing: the exchange key cannot sign, the signing key cannot decrypt.
func TestAllowDualUseKeepsSingleUse(t *testing.T) {
	tok := mainToken(t)
	kp, err := tok.GenerateRSA("dualuse-exchange", 2048, AllowDualUse)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := kp.PrivateAttributes(); err != nil || a.DualUse() || a.Sign || !a.Decrypt {
		t.Errorf("SoftHSM2 exchange key with AllowDualUse: %+v, %v; want decrypt only", a, err)
	}
	s, err := tok.GenerateSigner("dualuse-sign", SignECDSAP256, AllowDualUse)
	if err != nil {
		t.Fatal(err)
	}
	if a, err := s.PrivateAttributes(); err != nil || a.DualUse() || !a.Sign || a.Decrypt {
		t.Errorf("SoftHSM2 signing key with AllowDualUse: %+v, %v; want sign only", a, err)
	}
}
