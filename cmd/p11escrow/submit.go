package main

import (
	"bytes"
	"context"
	"crypto"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/urfave/cli/v2"
)

// Submitting records to `authority serve`. A record goes to the authority as soon as its file is
// written; the authority's receipt is kept beside the file as FILE.p11e.receipt.json. If the
// authority cannot be reached, the record waits in the spool ($XDG_DATA_HOME/p11escrow/spool)
// until `p11escrow escrow sync` submits it.

// submitFlags are encrypt's and escrow sync's flags for the authority's service.
func submitFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "authority-url", EnvVars: []string{"P11ESCROW_AUTHORITY_URL"},
			Usage: "submit escrow records to the authority's service at this https `URL`"},
		&cli.StringFlag{Name: "authority-ca", Usage: "trust the service's certificate if this CA (PEM `FILE`) issued it, besides the system's CAs"},
		&cli.StringFlag{Name: "receipt-key", EnvVars: []string{"P11ESCROW_RECEIPT_KEY"},
			Usage: "check every receipt against the authority's published receipt key `FILE`"},
	}
}

// maxErrorBody bounds the one-line reason read from a refusal.
const maxErrorBody = 1 << 10

// submitter posts records to the service over one client: Go's transport speaks HTTP/2 to it,
// so a batch's records share one connection, several in flight.
type submitter struct {
	url        string
	client     *http.Client
	receiptKey crypto.PublicKey // nil: receipts are checked against their file only
}

// errUnreachable wraps a failure to get an answer from the service (no connection, a timeout, a
// 5xx or a 429): the record is spooled for later, unless a receipt is required.
type errUnreachable struct{ err error }

func (e errUnreachable) Error() string {
	return "the authority's service cannot be reached: " + e.err.Error()
}
func (e errUnreachable) Unwrap() error { return e.err }

// newSubmitter checks the flags and reads the files they name; nil without --authority-url.
func newSubmitter(c *cli.Context) (*submitter, error) {
	raw := c.String("authority-url")
	if raw == "" {
		if c.String("authority-ca") != "" {
			return nil, usagef("--authority-ca needs --authority-url")
		}
		return nil, nil
	}
	u, err := url.Parse(raw)
	if err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return nil, usagef("--authority-url is an https URL such as https://escrow.example.org:8443, not %s", safetext.Quote(raw))
	}
	tlsCfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if name := c.String("authority-ca"); name != "" {
		data, err := readFileLimited(name, "a CA certificate file", maxPublicKeyFile)
		if err != nil {
			return nil, err
		}
		pool, err := x509.SystemCertPool()
		if err != nil {
			pool = x509.NewCertPool()
		}
		if !pool.AppendCertsFromPEM(data) {
			return nil, fmt.Errorf("%s: no PEM certificate in it", name)
		}
		tlsCfg.RootCAs = pool
	}
	s := &submitter{url: strings.TrimSuffix(u.String(), "/") + "/v1/records", client: &http.Client{
		Timeout: 60 * time.Second,
		Transport: &http.Transport{TLSClientConfig: tlsCfg, ForceAttemptHTTP2: true, MaxConnsPerHost: 1,
			TLSHandshakeTimeout: 15 * time.Second, ResponseHeaderTimeout: 60 * time.Second, Proxy: http.ProxyFromEnvironment},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}}
	if name := c.String("receipt-key"); name != "" {
		if s.receiptKey, _, err = readPKIXFile(name); err != nil {
			return nil, err
		}
	}
	return s, nil
}

// submit posts one record and returns the authority's receipt, checked against the file's
// header h and, if given, the receipt key. A refusal (4xx) is the authority's verdict on the
// record and is returned as an error; anything that leaves the record's fate unknown is
// errUnreachable.
func (s *submitter) submit(ctx context.Context, record []byte, h *escrow.Header) (*escrow.Receipt, []byte, error) {
	var resp *http.Response
	var err error
	for try := 0; ; try++ {
		req, rerr := http.NewRequestWithContext(ctx, http.MethodPost, s.url, bytes.NewReader(record))
		if rerr != nil {
			return nil, nil, rerr
		}
		req.Header.Set("Content-Type", "application/json")
		resp, err = s.client.Do(req)
		if err != nil {
			return nil, nil, errUnreachable{err}
		}
		// The service is busy: wait as it asks, a few times, before giving up on it.
		if resp.StatusCode == http.StatusTooManyRequests && try < 5 {
			resp.Body.Close()
			time.Sleep(time.Duration(try+1) * 200 * time.Millisecond)
			continue
		}
		break
	}
	defer resp.Body.Close()
	switch {
	case resp.StatusCode == http.StatusCreated || resp.StatusCode == http.StatusOK:
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return nil, nil, errUnreachable{fmt.Errorf("it answered %s", resp.Status)}
	default:
		msg, _ := readLimited(resp.Body, "the answer", "a refusal", maxErrorBody)
		return nil, nil, fmt.Errorf("the authority refused the record (%s): %s", resp.Status,
			safetext.Clean(strings.TrimSpace(string(msg))))
	}
	data, err := readLimited(resp.Body, "the authority's answer", "a receipt", maxReceiptFile)
	if err != nil {
		return nil, nil, errUnreachable{err}
	}
	r, err := escrow.ParseReceipt(data)
	if err != nil {
		return nil, nil, err
	}
	if err := r.MatchesFile(h); err != nil {
		return nil, nil, err
	}
	if s.receiptKey != nil {
		if err := r.Verify(s.receiptKey); err != nil {
			return nil, nil, err
		}
	}
	return r, data, nil
}

// spoolDir is $XDG_DATA_HOME/p11escrow/spool, or ~/.local/share/p11escrow/spool.
func spoolDir() (string, error) {
	base := os.Getenv("XDG_DATA_HOME")
	if !filepath.IsAbs(base) {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", errors.New("no spool directory: neither $XDG_DATA_HOME nor $HOME is set")
		}
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, "p11escrow", "spool"), nil
}

// spoolEntry is one record waiting for the authority, and where its receipt goes. The receipt
// is checked against the header inside the record, which is the file's: the file itself may
// have been moved, or have gone to a pipe.
type spoolEntry struct {
	Receipt string          `json:"receipt"` // absolute path of FILE.p11e.receipt.json
	Record  json.RawMessage `json:"record"`
}

// maxSpoolEntry bounds a spool entry: a record and two paths.
const maxSpoolEntry = maxRecordFile + 16<<10

// spool keeps a record for `escrow sync` in a file of its own.
func spool(record []byte, receipt string) (string, error) {
	dir, err := spoolDir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	absReceipt, err := filepath.Abs(receipt)
	if err != nil {
		return "", err
	}
	data, err := json.Marshal(spoolEntry{Receipt: absReceipt, Record: record})
	if err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, "record-*.json")
	if err != nil {
		return "", err
	}
	_, err = f.Write(append(data, '\n'))
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(f.Name())
		return "", err
	}
	return f.Name(), nil
}

// writeReceipt puts a receipt beside its file, replacing an older one (a receipt names the same
// record whenever it is fetched).
func writeReceipt(name string, data []byte) error {
	o, err := createOutput(name, true)
	if err != nil {
		return err
	}
	defer o.abort()
	if _, err := o.Write(data); err != nil {
		return err
	}
	if err := publish(o); err != nil {
		return err
	}
	return o.commit()
}

func escrowCommand() *cli.Command {
	return &cli.Command{
		Name:  "escrow",
		Usage: "records waiting for the backup authority's service",
		Subcommands: []*cli.Command{{
			Name:   "sync",
			Usage:  "submit the records spooled while the authority could not be reached, and store their receipts",
			Flags:  submitFlags(),
			Action: syncAction,
		}},
	}
}

// syncAction submits every spooled record, several at once over one connection. A record that
// got its receipt leaves the spool; one refused by the authority stays, and is reported.
func syncAction(c *cli.Context) error {
	if c.NArg() != 0 {
		return usagef("escrow sync takes no arguments")
	}
	s, err := newSubmitter(c)
	if err != nil {
		return err
	}
	if s == nil {
		return usagef("no --authority-url (or $P11ESCROW_AUTHORITY_URL): name the authority's service")
	}
	dir, err := spoolDir()
	if err != nil {
		return err
	}
	names, err := filepath.Glob(filepath.Join(dir, "record-*.json"))
	if err != nil || len(names) == 0 {
		fmt.Println("escrow sync: the spool is empty")
		return err
	}
	errs := make([]error, len(names))
	sem := make(chan struct{}, 8)
	var wg sync.WaitGroup
	for i, name := range names {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer func() { <-sem; wg.Done() }()
			errs[i] = syncOne(c.Context, s, name)
		}()
	}
	wg.Wait()
	left := 0
	for i, err := range errs {
		if err != nil {
			left++
			warn("%s: %v", names[i], err)
		}
	}
	fmt.Printf("escrow sync: %d record(s) acknowledged, %d left in %s\n", len(names)-left, left, dir)
	if left > 0 {
		return fmt.Errorf("%d record(s) are still not escrowed; they stay in the spool", left)
	}
	return nil
}

func syncOne(ctx context.Context, s *submitter, name string) error {
	data, err := readFileLimited(name, "a spool entry", maxSpoolEntry)
	if err != nil {
		return err
	}
	var e spoolEntry
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&e); err != nil || e.Receipt == "" {
		return errors.New("not a p11escrow spool entry; remove it")
	}
	rec, err := escrow.ParseRecord(e.Record)
	if err != nil {
		return err
	}
	h, _, err := rec.AuthorityStanza()
	if err != nil {
		return err
	}
	r, raw, err := s.submit(ctx, e.Record, h)
	if err != nil {
		return err
	}
	if err := writeReceipt(e.Receipt, raw); err != nil {
		return err
	}
	fmt.Println(safetext.Clean(fmt.Sprintf("file %s: escrowed, receipt %s (audit entry %d)", r.FileID, e.Receipt, r.AuditSeq)))
	return os.Remove(name)
}
