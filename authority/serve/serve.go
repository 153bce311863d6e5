// Package serve is the backup authority as an HTTPS service: owners' tools submit escrow
// records as they make them (POST /v1/records), the authority verifies each on its HSM exactly
// as `authority intake` does, stores and audits it, and answers with a receipt signed on the HSM
// (FORMAT.md section 14).
//
// Nothing over the network reveals more than the caller already knows: a caller learns only
// the fate of the record it sent. There is no listing and no search; operators use the CLI on
// the authority's host, against the same store.
package serve

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Timeouts of the HTTP server. A record is small and its verification takes milliseconds, so
// a client that is slower than these is gone or hostile.
const (
	ReadHeaderTimeout = 10 * time.Second
	ReadTimeout       = 30 * time.Second
	WriteTimeout      = 60 * time.Second
	IdleTimeout       = 120 * time.Second
	// ShutdownGrace is how long a shutdown waits for records in flight.
	ShutdownGrace = 30 * time.Second
)

// Config is what a Server needs.
type Config struct {
	Intaker *authority.Intaker
	// MaxBody is the largest request body taken, in bytes; a larger one gets 413.
	MaxBody int64
	// Queue is how many records may wait for a free HSM session beyond those being verified;
	// a record beyond that gets 429, so that a flood cannot queue without bound.
	Queue int
	// Log receives one structured line per request; nil logs to stderr as JSON.
	Log *slog.Logger
}

// Server answers the service's HTTP requests.
type Server struct {
	cfg   Config
	slots chan struct{} // one per record admitted: verifying or waiting for a session
	log   *slog.Logger
	reg   *prometheus.Registry

	accepted *prometheus.CounterVec
	rejected *prometheus.CounterVec
	latency  prometheus.Histogram
}

// New returns a Server for cfg.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, log: cfg.Log, reg: prometheus.NewRegistry(),
		slots: make(chan struct{}, cfg.Intaker.Sessions()+max(0, cfg.Queue))}
	if s.log == nil {
		s.log = slog.New(slog.NewJSONHandler(os.Stderr, nil))
	}
	s.accepted = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p11escrow_records_accepted_total",
		Help: "Records answered with a receipt, by outcome (held, already_held)."}, []string{"outcome"})
	s.rejected = prometheus.NewCounterVec(prometheus.CounterOpts{Name: "p11escrow_records_rejected_total",
		Help: "Records refused, by reason."}, []string{"reason"})
	s.latency = prometheus.NewHistogram(prometheus.HistogramOpts{Name: "p11escrow_verification_seconds",
		Help:    "Time to verify, store and sign a receipt for one record, waiting for a session included.",
		Buckets: prometheus.ExponentialBuckets(0.001, 2, 14)})
	s.reg.MustRegister(s.accepted, s.rejected, s.latency,
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "p11escrow_hsm_sessions_busy",
			Help: "HSM sessions verifying a record now."}, func() float64 { return float64(cfg.Intaker.Busy()) }),
		prometheus.NewGaugeFunc(prometheus.GaugeOpts{Name: "p11escrow_hsm_sessions",
			Help: "HSM sessions records are verified on."}, func() float64 { return float64(cfg.Intaker.Sessions()) }))
	return s
}

// Handler routes /v1/records, /healthz and /metrics; everything else is 404.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/v1/records", s.records)
	mux.HandleFunc("/healthz", s.healthz)
	mux.Handle("/metrics", promhttp.HandlerFor(s.reg, promhttp.HandlerOpts{}))
	return mux
}

// Rejection reasons, the values of the rejected counter's label.
const (
	reasonMalformed      = "malformed"
	reasonWrongAuthority = "wrong_authority"
	reasonInvalid        = "invalid"
	reasonOversize       = "oversize"
	reasonBusy           = "busy"
	reasonMethod         = "method"
	reasonUnavailable    = "unavailable"
)

func (s *Server) records(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	log := s.log.With("remote", r.RemoteAddr, "client", clientName(r))
	refuse := func(code int, reason, msg string) {
		s.rejected.WithLabelValues(reason).Inc()
		log.Info("record refused", "status", code, "reason", reason, "detail", msg)
		plain(w, code, msg)
	}
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", http.MethodPost)
		refuse(http.StatusMethodNotAllowed, reasonMethod, "only POST is allowed here")
		return
	}
	select {
	case s.slots <- struct{}{}:
		defer func() { <-s.slots }()
	default:
		w.Header().Set("Retry-After", "1")
		refuse(http.StatusTooManyRequests, reasonBusy, "too many records in flight; retry shortly")
		return
	}
	data, err := io.ReadAll(http.MaxBytesReader(w, r.Body, s.cfg.MaxBody))
	var tooBig *http.MaxBytesError
	switch {
	case errors.As(err, &tooBig):
		refuse(http.StatusRequestEntityTooLarge, reasonOversize, fmt.Sprintf("the body is larger than %d bytes, the limit for an escrow record", s.cfg.MaxBody))
		return
	case err != nil:
		refuse(http.StatusBadRequest, reasonMalformed, "the body could not be read")
		return
	}
	sub, err := s.cfg.Intaker.Submit(r.Context(), "https "+clientName(r), data)
	if err != nil {
		if r.Context().Err() != nil {
			log.Info("client gone before its record was verified")
			return
		}
		log.Error("record not taken: the HSM or the store failed", "error", err)
		s.rejected.WithLabelValues(reasonUnavailable).Inc()
		plain(w, http.StatusServiceUnavailable, "the authority cannot take records now; retry later")
		return
	}
	res := sub.Result
	switch {
	case sub.Malformed:
		refuse(http.StatusBadRequest, reasonMalformed, res.Reason.Error())
	case sub.WrongAuthority:
		refuse(http.StatusUnprocessableEntity, reasonWrongAuthority, res.Reason.Error())
	case res.Outcome == authority.Rejected:
		refuse(http.StatusUnprocessableEntity, reasonInvalid, res.Reason.Error())
	default:
		s.latency.Observe(time.Since(start).Seconds())
		code, outcome := http.StatusCreated, "held"
		if res.Outcome == authority.Duplicate {
			code, outcome = http.StatusOK, "already_held"
		}
		s.accepted.WithLabelValues(outcome).Inc()
		log.Info("record acknowledged", "status", code, "outcome", outcome, "file_id", res.FileID,
			"key_commitment", sub.Receipt.KeyCommitment, "audit_seq", sub.Receipt.AuditSeq,
			"same_file_id", res.SameID, "seconds", time.Since(start).Seconds())
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(code)
		w.Write(sub.Receipt.Marshal())
	}
}

func (s *Server) healthz(w http.ResponseWriter, r *http.Request) {
	if err := s.cfg.Intaker.Ping(r.Context()); err != nil {
		s.log.Error("health check failed", "error", err)
		plain(w, http.StatusServiceUnavailable, err.Error())
		return
	}
	plain(w, http.StatusOK, "ok")
}

// plain writes a one-line text answer.
func plain(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	io.WriteString(w, strings.ReplaceAll(msg, "\n", " ")+"\n")
}

// clientName names the caller for the log and the audit entry's source: its certificate's
// subject when it showed one, else its address.
func clientName(r *http.Request) string {
	if r.TLS != nil && len(r.TLS.PeerCertificates) > 0 {
		return "cn=" + r.TLS.PeerCertificates[0].Subject.CommonName + " from " + r.RemoteAddr
	}
	return r.RemoteAddr
}

// TLSConfig loads the server's certificate and key and, if clientCA is not empty, requires
// every client to show a certificate issued by it. TLS 1.2 is the least version accepted.
func TLSConfig(certFile, keyFile, clientCA string) (*tls.Config, error) {
	cert, err := tls.LoadX509KeyPair(certFile, keyFile)
	if err != nil {
		return nil, fmt.Errorf("the TLS certificate and key: %v", err)
	}
	cfg := &tls.Config{MinVersion: tls.VersionTLS12, Certificates: []tls.Certificate{cert}}
	if clientCA != "" {
		pem, err := os.ReadFile(clientCA)
		if err != nil {
			return nil, err
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", clientCA)
		}
		cfg.ClientCAs, cfg.ClientAuth = pool, tls.RequireAndVerifyClientCert
	}
	return cfg, nil
}

// Serve serves h over TLS on ln until ctx ends, then shuts down gracefully: it stops taking
// connections and waits, up to ShutdownGrace, for the records in flight, each of which is
// committed before its receipt is sent.
func Serve(ctx context.Context, ln net.Listener, h http.Handler, tlsCfg *tls.Config, log *slog.Logger) error {
	srv := &http.Server{Handler: h, TLSConfig: tlsCfg, ReadHeaderTimeout: ReadHeaderTimeout,
		ReadTimeout: ReadTimeout, WriteTimeout: WriteTimeout, IdleTimeout: IdleTimeout, MaxHeaderBytes: 16 << 10,
		ErrorLog: slog.NewLogLogger(log.Handler(), slog.LevelWarn)}
	done := make(chan error, 1)
	// ServeTLS offers HTTP/2, so that a client submits a batch over one connection with
	// several records in flight.
	go func() { done <- srv.ServeTLS(ln, "", "") }()
	select {
	case err := <-done:
		return err
	case <-ctx.Done():
	}
	log.Info("shutting down: finishing the records in flight")
	sctx, cancel := context.WithTimeout(context.Background(), ShutdownGrace)
	defer cancel()
	err := srv.Shutdown(sctx)
	if e := <-done; !errors.Is(e, http.ErrServerClosed) && err == nil {
		err = e
	}
	return err
}
