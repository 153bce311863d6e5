package serve

import (
	"bytes"
	"context"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/escrow"
)

func receiptOf(t *testing.T, body []byte) *escrow.Receipt {
	t.Helper()
	r, err := escrow.ParseReceipt(body)
	if err != nil {
		t.Fatalf("%v: %s", err, body)
	}
	return r
}

func heldCount(t *testing.T, s *service) int {
	t.Helper()
	held, err := s.a.Records(context.Background(), authority.Filter{})
	if err != nil {
		t.Fatal(err)
	}
	return len(held)
}

// TestSubmit: over real TLS on loopback, a record is verified on the HSM, held and answered with
// a receipt that verifies with the receipt key and matches the file; the same record again gets
// the same statement; bad input gets a 4xx with a one-line reason and nothing of it is stored;
// /healthz and /metrics answer; nothing lists records.
func TestSubmit(t *testing.T) {
	s := newService(t, 2, 4, false)
	c := s.client(t, false)
	body, h := record(t, s.authKey)

	code, out := post(t, c, s.url, body)
	if code != http.StatusCreated {
		t.Fatalf("submit: %d %s", code, out)
	}
	r := receiptOf(t, out)
	if err := r.Verify(s.receipt); err != nil {
		t.Fatal(err)
	}
	if err := r.MatchesFile(h); err != nil {
		t.Fatal(err)
	}
	code, out = post(t, c, s.url, body)
	if code != http.StatusOK || !receiptOf(t, out).SameStatement(r) {
		t.Fatalf("submitted again: %d %s", code, out)
	}

	// Another file made with a copied file ID is held too (the store's rule), with its own
	// receipt, and audited as a collision.
	copied, hc := recordFor(t, h.ID, s.authKey)
	code, out = post(t, c, s.url, copied)
	if code != http.StatusCreated {
		t.Fatalf("copied file ID: %d %s", code, out)
	}
	if rc := receiptOf(t, out); rc.FileID != r.FileID || rc.MatchesFile(hc) != nil || rc.MatchesFile(h) == nil {
		t.Fatalf("copied file ID: receipt %+v", rc)
	}
	if n := heldCount(t, s); n != 2 {
		t.Fatalf("%d records held, want 2", n)
	}
	if seq, err := s.st.IntakeSeq(context.Background(), r.FileID, escrow.CommitmentText(hc.Commitment)); err != nil {
		t.Fatal(err)
	} else if entries, _ := s.a.Audit(context.Background()); entries[seq-1].Action != "intake-collision" {
		t.Fatalf("the copied ID's entry is %q", entries[seq-1].Action)
	}

	other, _ := rsa.GenerateKey(rand.Reader, 2048)
	foreign, _ := record(t, &other.PublicKey)
	edited := bytes.Replace(body, []byte(`"description": "served"`), []byte(`"description": "forged"`), 1)
	for _, tc := range []struct {
		name string
		body []byte
		code int
		says string
	}{
		{"not json", []byte("{"), http.StatusBadRequest, "not a valid escrow record"},
		{"empty", nil, http.StatusBadRequest, "not a valid escrow record"},
		{"foreign", foreign, http.StatusUnprocessableEntity, "not a key of this authority"},
		{"edited", edited, http.StatusUnprocessableEntity, "fields were changed"},
		{"oversize", bytes.Repeat([]byte("x"), 128<<10+1), http.StatusRequestEntityTooLarge, "larger than"},
	} {
		code, out := post(t, c, s.url, tc.body)
		if code != tc.code || !strings.Contains(string(out), tc.says) || bytes.Count(out, []byte("\n")) != 1 {
			t.Errorf("%s: %d %q, want %d and %q on one line", tc.name, code, out, tc.code, tc.says)
		}
	}
	if n := heldCount(t, s); n != 2 {
		t.Fatalf("%d records held after the refusals, want 2", n)
	}

	for _, want := range []struct{ path, says string }{
		{"/healthz", "ok"},
		{"/metrics", `p11escrow_records_rejected_total{reason="oversize"} 1`},
		{"/metrics", `p11escrow_records_rejected_total{reason="wrong_authority"} 1`},
		{"/metrics", `p11escrow_records_rejected_total{reason="malformed"} 2`},
		{"/metrics", `p11escrow_records_accepted_total{outcome="held"} 2`},
		{"/metrics", `p11escrow_records_accepted_total{outcome="already_held"} 1`},
		{"/metrics", `p11escrow_verification_seconds_count 3`},
		{"/metrics", "p11escrow_hsm_sessions 2"},
		{"/metrics", "p11escrow_hsm_sessions_busy 0"},
	} {
		resp, err := c.Get(s.url + want.path)
		if err != nil {
			t.Fatal(err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.Contains(string(b), want.says) {
			t.Errorf("%s: %d, want %q in:\n%s", want.path, resp.StatusCode, want.says, b)
		}
	}
	for _, get := range []string{"/v1/records", "/v1/records/" + r.FileID, "/"} {
		resp, err := c.Get(s.url + get)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode < 400 {
			t.Errorf("GET %s: %d; nothing over the network lists records", get, resp.StatusCode)
		}
	}
	if _, _, err := s.a.VerifyAudit(context.Background()); err != nil {
		t.Fatal(err)
	}
}

// TestClientCA: with --client-ca, a client without a certificate from that CA is refused in
// the TLS handshake, and one with it is served.
func TestClientCA(t *testing.T) {
	s := newService(t, 1, 1, true)
	body, _ := record(t, s.authKey)
	if _, err := s.client(t, false).Post(s.url+"/v1/records", "application/json", bytes.NewReader(body)); err == nil {
		t.Fatal("a client without a certificate was served")
	}
	if n := heldCount(t, s); n != 0 {
		t.Fatalf("%d records held after a refused client", n)
	}
	if code, out := post(t, s.client(t, true), s.url, body); code != http.StatusCreated {
		t.Fatalf("client with a certificate: %d %s", code, out)
	}
}

// TestTooManyRequests: records beyond the sessions and the queue get 429 at once, and every
// record answered 201 is held.
func TestTooManyRequests(t *testing.T) {
	s := newService(t, 1, 0, false)
	c := s.client(t, false)
	const n = 12
	bodies := make([][]byte, n)
	for i := range bodies {
		bodies[i], _ = record(t, s.authKey)
	}
	codes := make([]int, n)
	var wg sync.WaitGroup
	for i := range bodies {
		wg.Add(1)
		go func() {
			defer wg.Done()
			codes[i], _ = post(t, c, s.url, bodies[i])
		}()
	}
	wg.Wait()
	created, busy := 0, 0
	for _, code := range codes {
		switch code {
		case http.StatusCreated:
			created++
		case http.StatusTooManyRequests:
			busy++
		default:
			t.Errorf("status %d", code)
		}
	}
	if busy == 0 || created == 0 {
		t.Fatalf("%d created, %d refused as busy; want some of each", created, busy)
	}
	if got := heldCount(t, s); got != created {
		t.Fatalf("%d held, %d acknowledged", got, created)
	}
}

// TestGracefulShutdown: a record whose body is still arriving when shutdown begins is
// finished: verified, committed and answered; then the server stops.
func TestGracefulShutdown(t *testing.T) {
	s := newService(t, 1, 1, false)
	c := s.client(t, false)
	body, _ := record(t, s.authKey)
	pr, pw := io.Pipe()
	type answer struct {
		code int
		err  error
	}
	got := make(chan answer, 1)
	go func() {
		resp, err := c.Post(s.url+"/v1/records", "application/json", pr)
		if err != nil {
			got <- answer{err: err}
			return
		}
		resp.Body.Close()
		got <- answer{code: resp.StatusCode}
	}()
	pw.Write(body[:100]) // the request is in flight
	time.Sleep(200 * time.Millisecond)
	go s.stop()
	time.Sleep(200 * time.Millisecond)
	pw.Write(body[100:])
	pw.Close()
	a := <-got
	if a.err != nil || a.code != http.StatusCreated {
		t.Fatalf("in-flight record: %d %v", a.code, a.err)
	}
	s.shutdown(t)
	if n := heldCount(t, s); n != 1 {
		t.Fatalf("%d records held after shutdown, want 1", n)
	}
	if _, err := c.Post(s.url+"/v1/records", "application/json", bytes.NewReader(body)); err == nil {
		t.Fatal("served after shutdown")
	}
}

// FuzzRecordHandler: no body makes the record handler panic or answer 5xx, and a body that is
// not a record verified on the HSM gets a 4xx.
func FuzzRecordHandler(f *testing.F) {
	s := newService(f, 2, 64, false)
	good, _ := record(f, s.authKey)
	f.Add(good)
	f.Add([]byte("{}"))
	f.Add([]byte(`{"format":"p11escrow-record/v1"}`))
	f.Add(bytes.Replace(good, []byte(`"hash": "sha1"`), []byte(`"hash": "sha256"`), 1))
	f.Add(bytes.Replace(good, []byte(`"file_id": "`), []byte(`"file_id": "0`), 1))
	f.Add([]byte("\x00\xff"))
	srv := New(Config{Intaker: s.in, MaxBody: 128 << 10, Queue: 64, Log: slog.New(slog.NewTextHandler(io.Discard, nil))})
	h := srv.Handler()
	f.Fuzz(func(t *testing.T, body []byte) {
		req, _ := http.NewRequestWithContext(context.Background(), http.MethodPost, "/v1/records", bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, req)
		if w.Code >= 500 {
			t.Fatalf("%d for %q: %s", w.Code, body, w.Body.String())
		}
		if w.Code >= 300 && bytes.Count(w.Body.Bytes(), []byte("\n")) != 1 {
			t.Fatalf("reason is not one line: %q", w.Body.String())
		}
		if w.Code < 300 && !bytes.Equal(body, good) {
			t.Fatalf("%d for a body that is not the good record: %q", w.Code, body)
		}
	})
}

// TestHealthz: /healthz fails, with the reason, once the database cannot be reached.
func TestHealthz(t *testing.T) {
	s := newService(t, 1, 1, false)
	c := s.client(t, false)
	get := func() (int, string) {
		resp, err := c.Get(s.url + "/healthz")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, body := get(); code != http.StatusOK {
		t.Fatalf("healthy service: %d %s", code, body)
	}
	s.st.Close()
	if code, body := get(); code != http.StatusServiceUnavailable || !strings.Contains(body, "the store does not answer") {
		t.Fatalf("closed store: %d %s", code, body)
	}
}
