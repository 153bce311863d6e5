package token

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha1"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

func randBytes(t *testing.T, n int) []byte {
	t.Helper()
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		t.Fatal(err)
	}
	return b
}

// uniq makes labels unique, so the tests also pass with -count=N.
func uniq(t *testing.T, label string) string {
	return label + "-" + hex.EncodeToString(randBytes(t, 4))
}

func TestSlotsAndSelector(t *testing.T) {
	m := module(t)
	slots, err := m.Slots()
	if err != nil {
		t.Fatal(err)
	}
	var labels []string
	for _, s := range slots {
		if s.Label == mainLabel && s.Serial != fixture.mainSerial {
			t.Errorf("main token serial %q, softhsm2-util said %q", s.Serial, fixture.mainSerial)
		}
		if s.Initialized {
			labels = append(labels, s.Label)
		}
	}
	if len(labels) != 2 {
		t.Errorf("initialised tokens %q, want %s and %s", labels, mainLabel, pinLabel)
	}
	_, err = m.Open(Selector{})
	if !errors.Is(err, ErrAmbiguous) || !strings.Contains(err.Error(), mainLabel) || !strings.Contains(err.Error(), pinLabel) {
		t.Errorf("Open(any) = %v, want ambiguous error naming both tokens", err)
	}
	if _, err = m.Open(Selector{Label: "nope"}); !errors.Is(err, ErrNoToken) {
		t.Errorf("Open(nope) = %v, want ErrNoToken", err)
	}
	tk, err := m.Open(Selector{Serial: fixture.mainSerial})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	if tk.Info().Label != mainLabel || !tk.Info().LoginRequired {
		t.Errorf("Info() = %+v", tk.Info())
	}
}

func TestLoadErrors(t *testing.T) {
	if _, err := Load("/nonexistent/libnothing.so"); err == nil || !strings.Contains(err.Error(), "cannot be read") {
		t.Errorf("Load(missing) = %v", err)
	}
	notModule := t.TempDir() + "/fake.so"
	os.WriteFile(notModule, []byte("not an ELF file"), 0o600)
	if _, err := Load(notModule); err == nil || !strings.Contains(err.Error(), "could not be loaded as a PKCS#11 module") {
		t.Errorf("Load(not a module) = %v", err)
	}
	if p, err := DefaultModulePath(); err == nil {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("DefaultModulePath() = %q, which does not exist", p)
		}
	}
}

func TestCapabilitiesSoftHSM(t *testing.T) {
	c, err := mainToken(t).Capabilities()
	if err != nil {
		t.Fatal(err)
	}
	want := Capabilities{true, true, true, true, true, true, true, true, true, true, true}
	if c != want {
		t.Errorf("Capabilities() = %+v, want all true on SoftHSM2", c)
	}
	if p, why := c.Plan(); p != PathTokenWrap || !strings.Contains(why, "CKM_AES_KEY_GEN") {
		t.Errorf("Plan() = %v, %q", p, why)
	}
}

func TestGenerateRSA(t *testing.T) {
	tk := mainToken(t)
	label := uniq(t, "gen-test")
	kp, err := tk.GenerateRSA(label, 2048)
	if err != nil {
		t.Fatal(err)
	}
	a, err := kp.PrivateAttributes()
	if err != nil {
		t.Fatal(err)
	}
	if a != (KeyAttributes{Sensitive: true, Extractable: false, AlwaysSensitive: true, NeverExtractable: true, Token: true, Local: true, Decrypt: true, Unwrap: true}) {
		t.Errorf("PrivateAttributes() = %+v", a)
	}
	der, _ := x509.MarshalPKIXPublicKey(kp.Public)
	sum := sha256.Sum256(der)
	if !bytes.Equal(kp.ID, sum[:16]) {
		t.Errorf("ID = %x, want SHA-256(SPKI)[:16] = %x", kp.ID, sum[:16])
	}
	for _, class := range []uint{pkcs11.CKO_PUBLIC_KEY, pkcs11.CKO_PRIVATE_KEY} {
		hs, err := tk.findObjects(append(rsaClass(class), pkcs11.NewAttribute(pkcs11.CKA_ID, sum[:16])))
		if err != nil || len(hs) != 1 {
			t.Errorf("class %d objects with the SPKI ID: %d, %v", class, len(hs), err)
		}
	}
	if kp.Public.N.BitLen() != 2048 || kp.Public.E != 65537 {
		t.Errorf("public key %d bits, e=%d", kp.Public.N.BitLen(), kp.Public.E)
	}
	if _, err := tk.GenerateRSA(label, 2048); !errors.Is(err, ErrExists) || !strings.Contains(err.Error(), "already has") {
		t.Errorf("second GenerateRSA with the same label = %v", err)
	}
	if _, err := tk.GenerateRSA("gen-odd", 1024); err == nil {
		t.Error("GenerateRSA(1024) succeeded")
	}
	roundTrip(t, tk, kp)
}

// roundTrip wraps a fresh file key for kp on the token and decrypts it there.
func roundTrip(t *testing.T, tk *Token, kp *KeyPair) {
	t.Helper()
	fk, err := tk.NewFileKey(randBytes(t, 8))
	if err != nil {
		t.Fatal(err)
	}
	defer fk.Destroy()
	v, err := fk.Value()
	if err != nil {
		t.Fatal(err)
	}
	w, err := fk.WrapOAEP(kp.Public, crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	got, err := kp.DecryptOAEP(crypto.SHA1, w)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, v) {
		t.Errorf("DecryptOAEP(WrapOAEP(k)) = %x, want %x", got, v)
	}
}

func TestFileKeyLifecycle(t *testing.T) {
	tk, kp := mainToken(t), sharedKey(t)
	id := randBytes(t, 8)
	fk, err := tk.NewFileKey(id)
	if err != nil {
		t.Fatal(err)
	}
	if fk.Path() != PathTokenWrap || fk.Secret() == nil {
		t.Fatalf("Path() = %v, Secret() = %v", fk.Path(), fk.Secret())
	}
	byID := func(token bool) int {
		hs, err := tk.findObjects([]*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_ID, id), pkcs11.NewAttribute(pkcs11.CKA_TOKEN, token)})
		if err != nil {
			t.Fatal(err)
		}
		return len(hs)
	}
	if byID(true) != 0 || byID(false) != 1 {
		t.Errorf("objects with the key's ID: token %d, session %d; want 0, 1", byID(true), byID(false))
	}
	a, err := tk.attrs(fk.secret.h, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE, pkcs11.CKA_PRIVATE, pkcs11.CKA_LABEL)
	if err != nil {
		t.Fatal(err)
	}
	if boolAttr(a[pkcs11.CKA_SENSITIVE]) || !boolAttr(a[pkcs11.CKA_EXTRACTABLE]) || !boolAttr(a[pkcs11.CKA_PRIVATE]) ||
		!strings.HasPrefix(string(a[pkcs11.CKA_LABEL]), "p11escrow file ") {
		t.Errorf("file key attributes %v", a)
	}
	v, _ := fk.Value()
	w, err := fk.WrapOAEP(kp.Public, crypto.SHA1)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := kp.DecryptOAEP(crypto.SHA1, w); err != nil || !bytes.Equal(got, v) || len(v) != 32 {
		t.Errorf("DecryptOAEP = %x, %v; Value = %x", got, err, v)
	}
	if err := fk.Destroy(); err != nil {
		t.Fatal(err)
	}
	if n := byID(false); n != 0 {
		t.Errorf("%d objects left after Destroy", n)
	}
	if err := fk.Destroy(); err != nil {
		t.Errorf("second Destroy = %v", err)
	}
	if _, err := fk.Value(); err == nil {
		t.Error("Value() after Destroy succeeded")
	}
}

func TestWrapForeignPublicKey(t *testing.T) {
	tk, err := module(t).Open(Selector{Label: mainLabel})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	if !tk.LoggedIn() { // login state is per process and token
		t.Error("second session is not logged in")
	}
	host, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	fk, err := tk.NewFileKey([]byte("foreign"))
	if err != nil {
		t.Fatal(err)
	}
	defer fk.Destroy()
	v, _ := fk.Value()
	for i := 0; i < 2; i++ {
		w, err := fk.WrapOAEP(&host.PublicKey, crypto.SHA1)
		if err != nil {
			t.Fatal(err)
		}
		got, err := rsa.DecryptOAEP(sha1.New(), nil, host, w, nil)
		if err != nil || !bytes.Equal(got, v) {
			t.Errorf("host DecryptOAEP = %x, %v; want %x", got, err, v)
		}
	}
	if len(tk.pubs) != 1 {
		t.Errorf("%d imported public keys cached, want 1", len(tk.pubs))
	}
	// WrapOAEP with SHA-256, which SoftHSM2 refuses, goes to the host: TestWrapOAEPSHA256OnSHA1Token.
	tk.Close()
	if len(tk.pubs) != 0 {
		t.Errorf("Close left %d cached public keys", len(tk.pubs))
	}
}

func hostGCM(t *testing.T, key []byte) cipher.AEAD {
	b, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	g, err := cipher.NewGCM(b)
	if err != nil {
		t.Fatal(err)
	}
	return g
}

func TestTokenSideOperations(t *testing.T) {
	tk, kp := mainToken(t), sharedKey(t)
	fk, err := tk.NewFileKey([]byte("token-side"))
	if err != nil {
		t.Fatal(err)
	}
	defer fk.Destroy()
	v, _ := fk.Value()
	w, _ := fk.WrapOAEP(kp.Public, crypto.SHA1)
	sk, err := kp.UnwrapOAEP(crypto.SHA1, w)
	if err != nil {
		t.Fatal(err)
	}
	defer sk.Destroy()
	if s, err := sk.Sensitive(); err != nil || !s {
		t.Errorf("Sensitive() = %v, %v", s, err)
	}
	// SoftHSM2 refuses CKA_VALUE_LEN in unwrap templates; the module must remember it, so that
	// later unwraps cost one RSA operation and not two.
	if !tk.m.noUnwrapValueLen.Load() {
		t.Error("after an unwrap on SoftHSM2, the module does not remember that CKA_VALUE_LEN is refused")
	}
	prefix, suffix := []byte("p11escrow commit"), []byte("header-hash")
	want := sha256.Sum256(append(append(append([]byte{}, prefix...), v...), suffix...))
	for name, k := range map[string]*SecretKey{"unwrapped": sk, "file key": fk.Secret()} {
		if got, err := k.DigestSHA256(prefix, suffix); err != nil || !bytes.Equal(got, want[:]) {
			t.Errorf("%s: DigestSHA256 = %x, %v; want %x", name, got, err, want)
		}
	}
	plain := sha256.Sum256(v)
	if got, err := sk.DigestSHA256(nil, nil); err != nil || !bytes.Equal(got, plain[:]) {
		t.Errorf("DigestSHA256(nil, nil) = %x, %v", got, err)
	}
	g, nonce, aad := hostGCM(t, v), randBytes(t, 12), []byte("header")
	if got, err := sk.SealGCM(nonce, aad, nil); err != nil || !bytes.Equal(got, g.Seal(nil, nonce, nil, aad)) || len(got) != 16 {
		t.Errorf("SealGCM(empty) = %x, %v; want host tag", got, err)
	}
	data := randBytes(t, 1000)
	ct, err := sk.SealGCM(nonce, aad, data)
	if err != nil || !bytes.Equal(ct, g.Seal(nil, nonce, data, aad)) {
		t.Fatalf("SealGCM(data) differs from host: %v", err)
	}
	if pt, err := sk.OpenGCM(nonce, aad, ct); err != nil || !bytes.Equal(pt, data) {
		t.Errorf("OpenGCM = %v", err)
	}
	ct[len(ct)-1] ^= 1
	if _, err := sk.OpenGCM(nonce, aad, ct); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("OpenGCM(tampered) = %v, want ErrAuthFailed", err)
	}
	if _, err := sk.OpenGCM(nonce, aad, ct[:10]); !errors.Is(err, ErrAuthFailed) {
		t.Errorf("OpenGCM(short) = %v, want ErrAuthFailed", err)
	}
}

func TestUnwrapErrors(t *testing.T) {
	kp := sharedKey(t)
	bad := randBytes(t, 256)
	if _, err := kp.UnwrapOAEP(crypto.SHA1, bad); !errors.Is(err, ErrDecrypt) || !strings.Contains(err.Error(), "not addressed to this key") {
		t.Errorf("UnwrapOAEP(garbage) = %v", err)
	}
	if _, err := kp.DecryptOAEP(crypto.SHA1, bad); !errors.Is(err, ErrDecrypt) {
		t.Errorf("DecryptOAEP(garbage) = %v", err)
	}
	if _, err := kp.UnwrapOAEP(crypto.SHA1, nil); !errors.Is(err, ErrDecrypt) {
		t.Errorf("UnwrapOAEP(nil) = %v", err)
	}
	if _, err := kp.UnwrapOAEP(crypto.SHA256, bad); !errors.Is(err, ErrMechanism) {
		t.Errorf("UnwrapOAEP(SHA-256) on SoftHSM2 = %v, want ErrMechanism", err)
	}
}

func TestSupportsOAEPSHA256(t *testing.T) {
	ok, err := sharedKey(t).SupportsOAEPSHA256()
	if err != nil || ok {
		t.Errorf("SupportsOAEPSHA256() = %v, %v; SoftHSM2 2.6.1 should say false, nil", ok, err)
	}
}

func TestFindKeyPair(t *testing.T) {
	tk, kp := mainToken(t), sharedKey(t)
	for _, q := range []struct {
		label string
		id    []byte
	}{{"shared", nil}, {"", kp.ID}, {"shared", kp.ID}} {
		got, err := tk.FindKeyPair(q.label, q.id)
		if err != nil || !got.Public.Equal(kp.Public) || !bytes.Equal(got.ID, kp.ID) {
			t.Errorf("FindKeyPair(%q, %x) = %v, %v", q.label, q.id, got, err)
		}
	}
	_, err := tk.FindKeyPair("no-such-key", nil)
	if !errors.Is(err, ErrKeyNotFound) || !strings.Contains(err.Error(), "no-such-key") {
		t.Errorf("FindKeyPair(missing) = %v", err)
	}
	all, err := tk.KeyPairs()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, k := range all {
		found = found || k.Label == "shared"
	}
	if !found {
		t.Errorf("KeyPairs() lacks the shared key: %v", all)
	}
}

func TestPkcs11ToolKeys(t *testing.T) {
	tk := mainToken(t)
	tool, err := exec.LookPath("pkcs11-tool")
	if err != nil {
		if os.Getenv("CI") != "" {
			t.Fatal("pkcs11-tool is required in CI: apt-get install opensc")
		}
		t.Skip("pkcs11-tool not found; apt-get install opensc")
	}
	label, id := uniq(t, "tool-key"), randBytes(t, 4)
	cmd := exec.Command(tool, "--module", fixture.env.ModulePath, "--token-label", mainLabel,
		"--login", "--pin", userPIN, "--keypairgen", "--key-type", "rsa:2048", "--label", label, "--id", hex.EncodeToString(id))
	cmd.Env = append(os.Environ(), fixture.env.Environ()...)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("pkcs11-tool: %v\n%s", err, out)
	}
	byLabel, err := tk.FindKeyPair(label, nil)
	if err != nil {
		t.Fatal(err)
	}
	byID, err := tk.FindKeyPair("", id)
	if err != nil {
		t.Fatal(err)
	}
	if !byID.Public.Equal(byLabel.Public) || !bytes.Equal(byLabel.ID, id) || byID.Label != label {
		t.Errorf("by label %+v, by ID %+v", byLabel, byID)
	}
	roundTrip(t, tk, byLabel)
}

func TestWrongPIN(t *testing.T) {
	tk, err := module(t).Open(Selector{Label: pinLabel})
	if err != nil {
		t.Fatal(err)
	}
	defer tk.Close()
	if f, _ := tk.tokenFlags(); f&pkcs11.CKF_USER_PIN_COUNT_LOW != 0 {
		t.Fatalf("fresh token already has CKF_USER_PIN_COUNT_LOW (flags %#x)", f)
	}
	if err := tk.Login(""); !errors.Is(err, ErrWrongPIN) || strings.Contains(err.Error(), "CKR_") {
		t.Errorf("Login(\"\") = %v, want a refusal without calling C_Login", err)
	}
	if f, _ := tk.tokenFlags(); f&pkcs11.CKF_USER_PIN_COUNT_LOW != 0 {
		t.Error("Login(\"\") reached the token")
	}
	err = tk.Login("9999")
	if !errors.Is(err, ErrWrongPIN) || !strings.Contains(err.Error(), "the PIN is wrong; it was not retried") ||
		!strings.HasSuffix(err.Error(), "(CKR_PIN_INCORRECT)") {
		t.Errorf("Login(wrong) = %v", err)
	}
	// SoftHSM2 sets COUNT_LOW on the first failure and never locks, so the
	// flags can show that a failure happened, but not how many.
	if !strings.Contains(err.Error(), "tries are running low") {
		t.Errorf("Login(wrong) does not relay CKF_USER_PIN_COUNT_LOW: %v", err)
	}
	if tk.LoggedIn() {
		t.Error("LoggedIn() after a wrong PIN")
	}
	if err := tk.Login(userPIN); err != nil || !tk.LoggedIn() {
		t.Errorf("Login(right) = %v, LoggedIn %v", err, tk.LoggedIn())
	}
	if err := tk.Login("not even asked"); err != nil {
		t.Errorf("Login when logged in = %v, want nil without C_Login", err)
	}
}

func TestRandom(t *testing.T) {
	tk := mainToken(t)
	a, err := tk.Random(32)
	if err != nil || len(a) != 32 {
		t.Fatalf("Random(32) = %x, %v", a, err)
	}
	b, _ := tk.Random(32)
	if bytes.Equal(a, b) {
		t.Error("two Random(32) calls returned the same bytes")
	}
	if _, err := tk.Random(0); err == nil {
		t.Error("Random(0) succeeded")
	}
}

// A private key whose public object is gone (some tools never create one)
// still yields its public half from CKA_MODULUS/CKA_PUBLIC_EXPONENT.
func TestFindKeyPairWithoutPublicObject(t *testing.T) {
	tk := mainToken(t)
	label := uniq(t, "orphan")
	kp, err := tk.GenerateRSA(label, 2048)
	if err != nil {
		t.Fatal(err)
	}
	hs, err := tk.findObjects(append(rsaClass(pkcs11.CKO_PUBLIC_KEY), pkcs11.NewAttribute(pkcs11.CKA_ID, kp.ID)))
	if err != nil || len(hs) != 1 {
		t.Fatalf("public objects: %d, %v", len(hs), err)
	}
	if err := tk.ctx.DestroyObject(tk.sh, hs[0]); err != nil {
		t.Fatal(err)
	}
	got, err := tk.FindKeyPair(label, nil)
	if err != nil || !got.Public.Equal(kp.Public) {
		t.Fatalf("FindKeyPair(orphan) = %v, %v", got, err)
	}
	roundTrip(t, tk, got)
}
