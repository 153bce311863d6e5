package token

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"errors"
	"sync"
	"testing"
)

// TestNewSessionSharesLogin checks that sessions opened after the login are logged in, work
// from several goroutines at once, and are closed with the module's bookkeeping.
func TestNewSessionSharesLogin(t *testing.T) {
	tk := mainToken(t)
	kp := sharedKey(t)
	if _, err := tk.Capabilities(); err != nil {
		t.Fatal(err)
	}
	const n = 4
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := 0; i < n; i++ {
		s, err := tk.NewSession()
		if err != nil {
			t.Fatal(err)
		}
		if !s.LoggedIn() {
			t.Fatal("a new session on a logged-in token is not logged in")
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer s.Close()
			errs <- wrapAndUnwrap(s, kp)
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

// wrapAndUnwrap makes a file key on s, wraps it on s for kp and unwraps it with kp's private key
// (on kp's own session: object handles are valid in every session of the application).
func wrapAndUnwrap(s *Token, kp *KeyPair) error {
	for i := 0; i < 5; i++ {
		id := []byte{byte(i), 1, 2, 3}
		k, err := s.NewFileKey(id)
		if err != nil {
			return err
		}
		w, err := k.WrapOAEP(kp.Public, crypto.SHA1)
		if err != nil {
			return err
		}
		v, err := k.Value()
		if err != nil {
			return err
		}
		if err := k.Destroy(); err != nil {
			return err
		}
		if len(w) != kp.Public.Size() || len(v) != FileKeySize {
			return errors.New("wrong sizes")
		}
		clear(v)
	}
	return nil
}

func TestNewSessionAfterClose(t *testing.T) {
	tk := mainToken(t)
	s, err := tk.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	s.Close()
	if _, err := s.NewSession(); err == nil {
		t.Fatal("NewSession on a closed session succeeded")
	}
}

// TestOAEPHashProbe checks that SoftHSM2 gets SHA-1, and that the probe leaves no operation
// active on the session.
func TestOAEPHashProbe(t *testing.T) {
	kp := sharedKey(t)
	if h, err := kp.OAEPHash(); err != nil || h != crypto.SHA1 {
		t.Fatalf("OAEPHash() = %v, %v; SoftHSM2 2.6.1 decrypts OAEP with SHA-1 only", h, err)
	}
	msg := []byte("0123456789abcdef0123456789abcdef")
	ct, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, kp.Public, msg, nil)
	if err != nil {
		t.Fatal(err)
	}
	pt, err := kp.DecryptOAEP(crypto.SHA1, ct)
	if err != nil || string(pt) != string(msg) {
		t.Fatalf("decrypting after the probe: %v", err)
	}
}

// TestSessions checks the one helper that batch encrypt and the authority's intake pool open
// their sessions with: up to n sessions, each logged in, none once the token is closed.
func TestSessions(t *testing.T) {
	tk := mainToken(t)
	if got := tk.Sessions(0); len(got) != 0 {
		t.Fatalf("Sessions(0) opened %d", len(got))
	}
	ss := tk.Sessions(3)
	if len(ss) != 3 {
		t.Fatalf("Sessions(3) opened %d", len(ss))
	}
	for _, s := range ss {
		if s == tk || !s.LoggedIn() {
			t.Fatalf("session %p: not a new logged-in session", s)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
	closed, err := tk.NewSession()
	if err != nil {
		t.Fatal(err)
	}
	closed.Close()
	if got := closed.Sessions(2); len(got) != 0 {
		t.Fatalf("a closed token opened %d sessions", len(got))
	}
}
