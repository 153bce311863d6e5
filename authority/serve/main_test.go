package serve

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/pem"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/authority/store"
	"github.com/p11escrow/p11escrow/escrow"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
	"github.com/p11escrow/p11escrow/token"
)

// The tests share one SoftHSM2 token, made in TestMain before the module is loaded, because
// SoftHSM2 reads SOFTHSM2_CONF once per process (as in package authority).
var fixture struct {
	env      *softhsmtest.Env
	setupErr error
	once     sync.Once
	mod      *token.Module
	tok      *token.Token
	loadErr  error
}

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "p11escrow-serve-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	if softhsmtest.Available() == nil {
		fixture.setupErr = setup(dir)
	}
	code := m.Run()
	if fixture.mod != nil {
		fixture.mod.Close()
	}
	os.RemoveAll(dir)
	os.Exit(code)
}

func setup(dir string) error {
	env, err := softhsmtest.Setup(dir)
	if err != nil {
		return err
	}
	if err := os.Setenv("SOFTHSM2_CONF", env.ConfPath); err != nil {
		return err
	}
	fixture.env = env
	_, err = env.Init("authority", "12345678", "1234")
	return err
}

// testToken returns the shared, logged-in token.
func testToken(t testing.TB) *token.Token {
	t.Helper()
	softhsmtest.Require(t)
	if fixture.setupErr != nil {
		t.Fatalf("SoftHSM2 setup: %v", fixture.setupErr)
	}
	fixture.once.Do(func() {
		fixture.mod, fixture.loadErr = token.Load(fixture.env.ModulePath)
		if fixture.loadErr != nil {
			return
		}
		fixture.tok, fixture.loadErr = fixture.mod.Open(token.Selector{Label: "authority"})
		if fixture.loadErr == nil {
			fixture.loadErr = fixture.tok.Login("1234")
		}
	})
	if fixture.loadErr != nil {
		t.Fatal(fixture.loadErr)
	}
	return fixture.tok
}

func uniq(label string) string {
	b := make([]byte, 4)
	rand.Read(b)
	return label + "-" + hex.EncodeToString(b)
}

// service is an authority behind a running TLS server on loopback.
type service struct {
	a       *authority.Authority
	st      store.Store
	authKey *rsa.PublicKey
	receipt crypto.PublicKey
	in      *authority.Intaker
	url     string
	ca      *testCA
	stop    context.CancelFunc
	done    chan error
	once    sync.Once
}

// newService makes a store, an authority key and a receipt key on the shared token, and serves
// them over TLS on 127.0.0.1:0; with clientCA, clients must show a certificate from the test CA.
func newService(t testing.TB, sessions, queue int, clientCA bool) *service {
	t.Helper()
	tok := testToken(t)
	ctx := context.Background()
	st, err := authority.OpenStore(ctx, filepath.Join(t.TempDir(), "authority.db"), true)
	if err != nil {
		t.Fatal(err)
	}
	a := authority.New(st, tok, "user=test")
	kp, err := tok.GenerateUnwrapRSA(uniq("auth"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := a.RegisterKey(ctx, kp, crypto.SHA1, "init"); err != nil {
		t.Fatal(err)
	}
	signer, err := a.CreateReceiptKey(ctx, uniq("receipt"))
	if err != nil {
		t.Fatal(err)
	}
	in, err := a.NewIntaker(ctx, sessions)
	if err != nil {
		t.Fatal(err)
	}
	ca := newCA(t)
	dir := t.TempDir()
	certFile, keyFile := ca.issue(t, dir, "server", true)
	caFile := ""
	if clientCA {
		caFile = ca.file
	}
	tlsCfg, err := TLSConfig(certFile, keyFile, caFile)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	srv := New(Config{Intaker: in, MaxBody: 128 << 10, Queue: queue, Log: log})
	ctx, cancel := context.WithCancel(ctx)
	s := &service{a: a, st: st, authKey: kp.Public, receipt: signer.Public(), in: in, url: "https://" + ln.Addr().String(),
		ca: ca, stop: cancel, done: make(chan error, 1)}
	go func() { s.done <- Serve(ctx, ln, srv.Handler(), tlsCfg, log) }()
	t.Cleanup(func() {
		s.shutdown(t)
		in.Close()
		st.Close()
	})
	return s
}

// shutdown stops the server and waits for it; it is safe to call twice.
func (s *service) shutdown(t testing.TB) {
	s.once.Do(func() {
		s.stop()
		select {
		case err := <-s.done:
			if err != nil {
				t.Errorf("Serve: %v", err)
			}
		case <-time.After(ShutdownGrace + 5*time.Second):
			t.Error("the server did not stop")
		}
	})
}

// client returns an HTTPS client that trusts the test CA, showing a client certificate if cert.
func (s *service) client(t testing.TB, cert bool) *http.Client {
	cfg := &tls.Config{RootCAs: s.ca.pool}
	if cert {
		c, k := s.ca.issue(t, t.TempDir(), "alice", false)
		pair, err := tls.LoadX509KeyPair(c, k)
		if err != nil {
			t.Fatal(err)
		}
		cfg.Certificates = []tls.Certificate{pair}
	}
	return &http.Client{Transport: &http.Transport{TLSClientConfig: cfg}, Timeout: 30 * time.Second}
}

// post submits body and returns the status and the answer.
func post(t testing.TB, c *http.Client, url string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := c.Post(url+"/v1/records", "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	out, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, out
}

// hostKey is a file key made in Go memory, as a user's own tooling could make one.
type hostKey []byte

func (k hostKey) Value() ([]byte, error) { return bytes.Clone(k), nil }

func (k hostKey) WrapOAEP(pub *rsa.PublicKey, hash crypto.Hash) ([]byte, error) {
	return rsa.EncryptOAEP(hash.New(), rand.Reader, pub, k, nil)
}

var ownerKey = sync.OnceValue(func() *rsa.PrivateKey {
	k, _ := rsa.GenerateKey(rand.Reader, 2048)
	return k
})

// record makes a correctly bound record (and the file's header) for authority key auth.
func record(t testing.TB, auth *rsa.PublicKey) ([]byte, *escrow.Header) {
	t.Helper()
	return recordFor(t, escrow.NewFileID(), auth)
}

// recordFor is record for a file with the given ID.
func recordFor(t testing.TB, id escrow.FileID, auth *rsa.PublicKey) ([]byte, *escrow.Header) {
	t.Helper()
	owner := &ownerKey().PublicKey
	fpr, _ := escrow.FingerprintOf(owner)
	key := make(hostKey, 32)
	rand.Read(key)
	w, err := escrow.Encrypt(io.Discard, id, key,
		&escrow.RSARecipient{Public: owner, Hash: crypto.SHA1, Role: escrow.RoleOwner},
		&escrow.RSARecipient{Public: auth, Hash: crypto.SHA1, Role: escrow.RoleAuthority})
	if err != nil {
		t.Fatal(err)
	}
	w.Close()
	rec, err := escrow.NewRecord(w.Header(), key, "served", escrow.RecordOwner{Fingerprint: fpr.String(),
		TokenLabel: "alice", TokenSerial: "0001"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	return rec.Marshal(), w.Header()
}

// testCA is a certificate authority made for one test.
type testCA struct {
	cert *x509.Certificate
	key  *ecdsa.PrivateKey
	pool *x509.CertPool
	file string
}

func newCA(t testing.TB) *testCA {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	cert, _ := x509.ParseCertificate(der)
	pool := x509.NewCertPool()
	pool.AddCert(cert)
	file := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(file, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	return &testCA{cert: cert, key: key, pool: pool, file: file}
}

// issue makes a server certificate for 127.0.0.1, or a client certificate, and writes it and
// its key as PEM files.
func (ca *testCA) issue(t testing.TB, dir, name string, server bool) (certFile, keyFile string) {
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	serial, _ := rand.Int(rand.Reader, big.NewInt(1<<62))
	tmpl := &x509.Certificate{SerialNumber: serial, Subject: pkix.Name{CommonName: name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	if server {
		tmpl.ExtKeyUsage, tmpl.IPAddresses = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, &key.PublicKey, ca.key)
	if err != nil {
		t.Fatal(err)
	}
	kder, _ := x509.MarshalPKCS8PrivateKey(key)
	certFile, keyFile = filepath.Join(dir, name+".pem"), filepath.Join(dir, name+".key")
	os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644)
	os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: kder}), 0o600)
	return certFile, keyFile
}
