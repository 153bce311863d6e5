package main

import (
	"context"
	"errors"
	"flag"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"encoding/pem"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/urfave/cli/v2"
)

// TestSubmitOneConnection: a batch's records go over one connection, several in flight
// (HTTP/2), and a service answering 503 is "unreachable", so the records are spooled.
func TestSubmitOneConnection(t *testing.T) {
	var conns, inFlight, most atomic.Int64
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n := inFlight.Add(1)
		defer inFlight.Add(-1)
		for m := most.Load(); n > m && !most.CompareAndSwap(m, n); m = most.Load() {
		}
		time.Sleep(100 * time.Millisecond)
		http.Error(w, "down for maintenance", http.StatusServiceUnavailable)
	}))
	srv.EnableHTTP2 = true
	srv.Config.ConnState = func(_ net.Conn, s http.ConnState) {
		if s == http.StateNew {
			conns.Add(1)
		}
	}
	srv.StartTLS()
	defer srv.Close()
	ca := filepath.Join(t.TempDir(), "ca.pem")
	os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw}), 0o644)

	set := flag.NewFlagSet("encrypt", flag.ContinueOnError)
	for _, f := range submitFlags() {
		f.Apply(set)
	}
	set.Parse([]string{"--authority-url", srv.URL, "--authority-ca", ca})
	s, err := newSubmitter(cli.NewContext(cli.NewApp(), set, nil))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 6)
	for i := range errs {
		wg.Add(1)
		go func() {
			defer wg.Done()
			_, _, errs[i] = s.submit(context.Background(), []byte("{}"), &escrow.Header{})
		}()
	}
	wg.Wait()
	for _, err := range errs {
		var down errUnreachable
		if !errors.As(err, &down) {
			t.Fatalf("a 503 gave %v, want errUnreachable", err)
		}
	}
	if conns.Load() != 1 || most.Load() < 2 {
		t.Fatalf("%d connections, at most %d records in flight; want 1 connection, several in flight", conns.Load(), most.Load())
	}
}
