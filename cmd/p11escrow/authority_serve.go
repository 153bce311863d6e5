package main

import (
	"context"
	"log/slog"
	"net"
	"os"
	"os/signal"
	"syscall"

	"github.com/p11escrow/p11escrow/authority"
	"github.com/p11escrow/p11escrow/authority/serve"
	"github.com/urfave/cli/v2"
)

func serveCommand() *cli.Command {
	return &cli.Command{
		Name:  "serve",
		Usage: "take escrow records over HTTPS (POST /v1/records), verify them on the HSM and answer with signed receipts",
		Description: "Records are verified exactly as `authority intake` verifies them, stored and audited; a record\n" +
			"already held gets the same receipt again. GET /healthz checks the HSM session and the store,\n" +
			"GET /metrics is in Prometheus format. SIGTERM or SIGINT stops taking connections and lets the\n" +
			"records in flight finish. Logs are JSON lines on stderr.",
		Flags: hsmFlags(
			&cli.StringFlag{Name: "listen", Required: true, Usage: "`ADDR` to listen on, e.g. :8443 or 127.0.0.1:8443"},
			&cli.StringFlag{Name: "tls-cert", Required: true, Usage: "the server's certificate chain, PEM `FILE`"},
			&cli.StringFlag{Name: "tls-key", Required: true, Usage: "the server's private key, PEM `FILE`"},
			&cli.StringFlag{Name: "client-ca", Usage: "accept only clients with a certificate issued by this CA (PEM `FILE`)"},
			sessionsFlag(),
			&cli.IntFlag{Name: "queue", Value: 64, Usage: "records that may wait for a session; more get 429"},
		),
		Action: serveAction,
	}
}

func serveAction(c *cli.Context) error {
	if c.NArg() != 0 {
		return usagef("serve takes no arguments")
	}
	if c.Int("sessions") < 1 || c.Int("queue") < 0 {
		return usagef("--sessions is at least 1 and --queue at least 0")
	}
	// The certificates are checked before the HSM's PIN, as every command checks its files first.
	tlsCfg, err := serve.TLSConfig(c.String("tls-cert"), c.String("tls-key"), c.String("client-ca"))
	if err != nil {
		return err
	}
	log := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	return withAuthority(c, func(a *authority.Authority, s *session) error {
		a.Warn = func(w error) { log.Warn(advise(w).Error()) }
		in, err := a.NewIntaker(c.Context, c.Int("sessions"))
		if err != nil {
			return err
		}
		defer in.Close()
		ln, err := net.Listen("tcp", c.String("listen"))
		if err != nil {
			return err
		}
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
		defer stop()
		log.Info("serving", "addr", ln.Addr().String(), "sessions", in.Sessions(), "client_ca", c.String("client-ca") != "",
			"token", s.token.Info().Label, "db", c.String("db"))
		srv := serve.New(serve.Config{Intaker: in, MaxBody: maxRecordFile, Queue: c.Int("queue"), Log: log})
		err = serve.Serve(ctx, ln, srv.Handler(), tlsCfg, log)
		log.Info("stopped")
		return err
	})
}
