// Package sqlite is the authority's Store on an embedded SQLite database file (modernc.org/sqlite,
// pure Go). It is the backend for a --db that is a path.
package sqlite

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	mrand "math/rand/v2"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/p11escrow/p11escrow/authority/store"
	"github.com/p11escrow/p11escrow/authority/store/internal/sqlstore"
	"github.com/p11escrow/p11escrow/escrow"
	"modernc.org/sqlite" // pure Go SQLite: no cgo beyond the PKCS#11 module's
	sqlite3 "modernc.org/sqlite/lib"
)

// sqliteStore is the Store on an embedded SQLite database.
type sqliteStore struct {
	db   *sql.DB
	path string // the database file's absolute path

	mu    sync.Mutex
	stmts map[string]*sql.Stmt // see cachedTx
}

// Open opens the store at path, creating it (mode 0600) if it does not exist, and applies
// pending migrations. path is a file path, never a URI: "ops?2026.db" and "a#b.db" name those
// files, and ":memory:" is refused, since an authority's store must persist.
//
// The database runs in WAL mode with synchronous=FULL, so a transaction acknowledged to the
// caller survives a crash or power loss; foreign keys are on; and every transaction begins
// IMMEDIATE, so two processes never interleave the read-then-append of the audit chain.
func Open(ctx context.Context, path string) (store.Store, error) { return open(ctx, path, true) }

// OpenExisting is Open for commands that only read: a missing file is an error wrapping
// store.ErrNoDatabase, so that a mistyped path is reported instead of answered from a new, empty
// store.
func OpenExisting(ctx context.Context, path string) (store.Store, error) {
	return open(ctx, path, false)
}

func open(ctx context.Context, path string, create bool) (store.Store, error) {
	if path == "" || path == ":memory:" || strings.HasPrefix(path, ":memory:") {
		return nil, fmt.Errorf("the authority database must be a file, not %q", path)
	}
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("the authority database %s: %w", path, err)
	}
	if create {
		// Made here, not by SQLite, so that it is 0600 whatever the umask; SQLite gives its
		// -wal and -shm files the database file's permissions. O_EXCL: of processes creating
		// it at once, one makes it and the others open it.
		f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
		if err == nil {
			f.Close()
		} else if !errors.Is(err, fs.ErrExist) {
			return nil, fmt.Errorf("creating the authority database %s: %w", path, unwrapPathErr(err))
		}
	} else if _, err := os.Stat(abs); err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			return nil, fmt.Errorf("the authority database %s %w", path, store.ErrNoDatabase)
		}
		return nil, fmt.Errorf("the authority database %s: %w", path, unwrapPathErr(err))
	}
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	q.Set("mode", "rw") // never let SQLite create the file: done above, or refused
	db, err := sql.Open("sqlite", "file:"+uriPath(abs)+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening the authority database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; the pragmas are per connection
	s := &sqliteStore{db: db, path: abs, stmts: map[string]*sql.Stmt{}}
	if err := s.migrateRetrying(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("the authority database %s: %w", path, err)
	}
	return s, nil
}

// uriPath writes an absolute file path for a SQLite URI: the characters that URIs give a meaning
// ('%', '?', '#') are percent-encoded, so that every path names its own file.
func uriPath(abs string) string {
	return strings.NewReplacer("%", "%25", "?", "%3f", "#", "%23").Replace(filepath.ToSlash(abs))
}

// unwrapPathErr drops the *fs.PathError wrapping, whose text repeats the path.
func unwrapPathErr(err error) error {
	var pe *fs.PathError
	if errors.As(err, &pe) {
		return pe.Err
	}
	return err
}

// migrations are applied in order, each in its own transaction, and recorded in the migrations
// table. Never edit one that has shipped: add the next.
var migrations = []func(tx *sql.Tx) error{
	migrate1,
	migrate2,
	migrate3,
	migrate4,
}

// migrate4 indexes the intake entries by file ID, key commitment and sequence, so that
// IntakeSeq (a receipt for a record submitted again) reads one index entry instead of scanning
// the audit log: without it, anyone holding one old record could make each submission of it
// cost a scan of the whole log.
func migrate4(tx *sql.Tx) error {
	_, err := tx.Exec(`CREATE INDEX audit_intake ON audit(json_extract(details, '$.file_id'),
		json_extract(details, '$.key_commitment'), seq) WHERE action IN ('intake', 'intake-collision')`)
	return err
}

// migrate3 identifies a held record by its file ID and key commitment together (issue 7): a
// file ID is in the clear header, so anyone can copy it into a file of their own, and a store
// keyed by the ID alone let such a copy squat the genuine record. Records, their wraps and
// recovery requests are rebuilt with the commitment, which is filled from each stored record's
// header (the ID was unique until now, so every wrap and request names exactly one record).
func migrate3(tx *sql.Tx) error {
	stmts := []string{
		`ALTER TABLE records RENAME TO records_v2`,
		`ALTER TABLE wraps RENAME TO wraps_v2`,
		`ALTER TABLE requests RENAME TO requests_v2`,
		`DROP INDEX records_owner`,
		`DROP INDEX records_serial`,
		`DROP INDEX wraps_key`,
		`CREATE TABLE records (
			file_id TEXT NOT NULL, commitment TEXT NOT NULL, owner_fingerprint TEXT NOT NULL,
			owner_token_label TEXT NOT NULL, owner_token_serial TEXT NOT NULL, description TEXT NOT NULL,
			created TEXT NOT NULL, intake_time TEXT NOT NULL,
			authority_key TEXT NOT NULL REFERENCES authority_keys(fingerprint),
			status TEXT NOT NULL CHECK (status IN ('held', 'recovered')), record BLOB NOT NULL,
			PRIMARY KEY (file_id, commitment))`,
		`CREATE TABLE wraps (
			file_id TEXT NOT NULL, commitment TEXT NOT NULL,
			key_fingerprint TEXT NOT NULL REFERENCES authority_keys(fingerprint),
			oaep_hash TEXT NOT NULL, wrapped BLOB NOT NULL, added TEXT NOT NULL,
			PRIMARY KEY (file_id, commitment, key_fingerprint),
			FOREIGN KEY (file_id, commitment) REFERENCES records(file_id, commitment))`,
		`CREATE TABLE requests (
			id TEXT PRIMARY KEY, file_id TEXT NOT NULL, commitment TEXT NOT NULL,
			state TEXT NOT NULL CHECK (state IN ('open', 'used')), created TEXT NOT NULL, canonical BLOB NOT NULL,
			FOREIGN KEY (file_id, commitment) REFERENCES records(file_id, commitment))`,
	}
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			return err
		}
	}
	rows, err := tx.Query(`SELECT file_id, record FROM records_v2`)
	if err != nil {
		return err
	}
	commitments := map[string]string{}
	for rows.Next() {
		var id string
		var data []byte
		if err := rows.Scan(&id, &data); err != nil {
			rows.Close()
			return err
		}
		c, err := recordCommitment(data)
		if err != nil {
			rows.Close()
			return fmt.Errorf("the held record of file %s: %w", id, err)
		}
		commitments[id] = c
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return err
	}
	for id, c := range commitments {
		if _, err := tx.Exec(`INSERT INTO records SELECT file_id, ?, owner_fingerprint, owner_token_label,
			owner_token_serial, description, created, intake_time, authority_key, status, record
			FROM records_v2 WHERE file_id = ?`, c, id); err != nil {
			return err
		}
	}
	stmts = []string{
		`INSERT INTO wraps SELECT w.file_id, r.commitment, w.key_fingerprint, w.oaep_hash, w.wrapped, w.added
			FROM wraps_v2 w JOIN records r ON r.file_id = w.file_id`,
		`INSERT INTO requests SELECT q.id, q.file_id, r.commitment, q.state, q.created, q.canonical
			FROM requests_v2 q JOIN records r ON r.file_id = q.file_id`,
		`DROP TABLE requests_v2`,
		`DROP TABLE wraps_v2`,
		`DROP TABLE records_v2`,
		`CREATE INDEX records_owner ON records(owner_fingerprint)`,
		`CREATE INDEX records_serial ON records(owner_token_serial)`,
		`CREATE INDEX wraps_key ON wraps(key_fingerprint)`,
		`CREATE INDEX requests_record ON requests(file_id, commitment)`,
		`ALTER TABLE audit ADD COLUMN state TEXT NOT NULL DEFAULT ''`,
	}
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			return err
		}
	}
	// From here on every change records the rows it wrote in its audit entry; this entry
	// records the rows as they are, so that --verify can check every row. In a new database it
	// is the first entry, and records the instance ID and the default policy.
	action := "bind-state"
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM audit`).Scan(&n); err != nil {
		return err
	}
	if n == 0 {
		action = "create"
	}
	return bindAll(tx, store.Event{Time: time.Now(), Actor: "p11escrow", Action: action, Details: `{"schema":3}`})
}

// recordCommitment reads the key commitment from a stored record's header.
func recordCommitment(data []byte) (string, error) {
	rec, err := escrow.ParseRecord(data)
	if err != nil {
		return "", err
	}
	h, _, err := rec.AuthorityStanza()
	if err != nil {
		return "", err
	}
	return escrow.CommitmentText(h.Commitment), nil
}

// migrate2 adds governance change requests (FORMAT.md section 13), kept apart from recovery
// requests, which always name a held record.
func migrate2(tx *sql.Tx) error {
	_, err := tx.Exec(`CREATE TABLE change_requests (
		id TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN ('open', 'used')),
		created TEXT NOT NULL, canonical BLOB NOT NULL)`)
	return err
}

func migrate1(tx *sql.Tx) error {
	stmts := []string{
		`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
		`CREATE TABLE authority_keys (
			fingerprint TEXT PRIMARY KEY, label TEXT NOT NULL, tag TEXT NOT NULL,
			oaep_hash TEXT NOT NULL, public_key BLOB NOT NULL, created TEXT NOT NULL,
			state TEXT NOT NULL CHECK (state IN ('current', 'previous', 'retired')))`,
		`CREATE UNIQUE INDEX one_current_key ON authority_keys(state) WHERE state = 'current'`,
		`CREATE TABLE records (
			file_id TEXT PRIMARY KEY, owner_fingerprint TEXT NOT NULL, owner_token_label TEXT NOT NULL,
			owner_token_serial TEXT NOT NULL, description TEXT NOT NULL, created TEXT NOT NULL,
			intake_time TEXT NOT NULL, authority_key TEXT NOT NULL REFERENCES authority_keys(fingerprint),
			status TEXT NOT NULL CHECK (status IN ('held', 'recovered')), record BLOB NOT NULL)`,
		`CREATE INDEX records_owner ON records(owner_fingerprint)`,
		`CREATE INDEX records_serial ON records(owner_token_serial)`,
		`CREATE TABLE wraps (
			file_id TEXT NOT NULL REFERENCES records(file_id), key_fingerprint TEXT NOT NULL REFERENCES authority_keys(fingerprint),
			oaep_hash TEXT NOT NULL, wrapped BLOB NOT NULL, added TEXT NOT NULL,
			PRIMARY KEY (file_id, key_fingerprint))`,
		`CREATE INDEX wraps_key ON wraps(key_fingerprint)`,
		`CREATE TABLE officers (
			fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, algorithm TEXT NOT NULL,
			public_key BLOB NOT NULL, added TEXT NOT NULL)`,
		`CREATE TABLE requests (
			id TEXT PRIMARY KEY, file_id TEXT NOT NULL REFERENCES records(file_id),
			state TEXT NOT NULL CHECK (state IN ('open', 'used')), created TEXT NOT NULL, canonical BLOB NOT NULL)`,
		`CREATE TABLE audit (
			seq INTEGER PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
			details TEXT NOT NULL, prev_hash BLOB NOT NULL, hash BLOB NOT NULL)`,
	}
	for _, s := range stmts {
		if _, err := tx.Exec(s); err != nil {
			return err
		}
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	_, err := tx.Exec(`INSERT INTO meta(key, value) VALUES ('instance_id', ?), ('approvals', '2'),
		('audit_count', '0'), ('audit_head', ?)`, hex.EncodeToString(id[:]), hex.EncodeToString(make([]byte, sha256.Size)))
	return err
}

// migrate applies the pending migrations. Each runs in its own IMMEDIATE transaction that first
// reads the schema version again: of processes that open a new database at once, one applies a
// migration and the others find it applied.
func (s *sqliteStore) migrate(ctx context.Context) error {
	if _, err := s.db.ExecContext(ctx, `CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)`); err != nil {
		return err
	}
	for v := 1; v <= len(migrations); v++ {
		if err := s.migrateTo(ctx, v); err != nil {
			return err
		}
	}
	return nil
}

// migrateRetrying is migrate, retried while the database is busy. The busy timeout covers
// ordinary locks, but while another process turns a new database to WAL mode SQLite answers
// SQLITE_BUSY at once, without waiting.
func (s *sqliteStore) migrateRetrying(ctx context.Context) error {
	for try := 0; ; try++ {
		err := s.migrate(ctx)
		var se *sqlite.Error
		if try < 100 && errors.As(err, &se) && se.Code()&0xff == sqlite3.SQLITE_BUSY {
			time.Sleep(time.Duration(5+mrand.IntN(20)) * time.Millisecond)
			continue
		}
		return err
	}
}

func (s *sqliteStore) migrateTo(ctx context.Context, v int) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	var have int
	if err := tx.QueryRow(`SELECT COALESCE(MAX(version), 0) FROM migrations`).Scan(&have); err != nil {
		return err
	}
	if have > len(migrations) {
		return fmt.Errorf("it has schema version %d, newer than this p11escrow knows (%d); upgrade p11escrow", have, len(migrations))
	}
	if have >= v {
		return nil
	}
	if err := migrations[v-1](tx); err != nil {
		return fmt.Errorf("schema migration %d: %w", v, err)
	}
	if _, err := tx.Exec(`INSERT INTO migrations(version, applied) VALUES (?, ?)`, v, now()); err != nil {
		return err
	}
	return tx.Commit()
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }

func (s *sqliteStore) Close() error {
	s.mu.Lock()
	for _, st := range s.stmts {
		st.Close()
	}
	s.stmts = map[string]*sql.Stmt{}
	s.mu.Unlock()
	return s.db.Close()
}

// update runs f and appends ev to the audit log in one transaction. Every row of a bound table
// that f inserts, updates or deletes is recorded in the entry's State (see bindTouched), so that
// the state that decides recoveries is bound to the chain and `audit --verify` catches a row
// changed without p11escrow. This, and Intake's batch, are the only paths by which the store
// changes anything; both go through change.
func (s *sqliteStore) update(ctx context.Context, ev store.Event, f func(tx txn) error) error {
	return s.change(ctx, func(tx txn, log *auditLog) error {
		if f != nil {
			if err := f(tx); err != nil {
				return err
			}
		}
		_, err := log.append(ev)
		return err
	})
}

// change runs f in one transaction, which f fills with changes, each followed by log.append of
// the event that describes it. The head moves once, when f is done, and the transaction commits
// only if f appended something.
func (s *sqliteStore) change(ctx context.Context, f func(tx txn, log *auditLog) error) error {
	sqlTx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	tx := &cachedTx{Tx: sqlTx, ctx: ctx, s: s}
	defer func() {
		sqlTx.Rollback()
		s.prepare(ctx, tx.missed)
	}()
	if err := watchBound(tx); err != nil {
		return err
	}
	log, err := readLog(tx)
	if err != nil {
		return err
	}
	if err := f(tx, log); err != nil {
		return err
	}
	if log.Appended == 0 {
		return nil
	}
	if err := log.MoveHead(); err != nil {
		return err
	}
	return sqlTx.Commit()
}

// txn is a transaction: a *sql.Tx, or a cachedTx.
type txn interface {
	Exec(query string, args ...any) (sql.Result, error)
	Query(query string, args ...any) (*sql.Rows, error)
	QueryRow(query string, args ...any) *sql.Row
}

// cachedTx is a transaction whose statements are prepared once, on the store's one connection,
// and reused: SQLite parses a statement anew on every call otherwise, which cost as much as
// running it. Only the store's own constant queries go through it, so the cache stays small.
type cachedTx struct {
	*sql.Tx
	ctx    context.Context
	s      *sqliteStore
	missed []string // queries run unprepared
}

// stmt returns q prepared for this transaction, or nil if it is not prepared yet: the caller
// then runs q directly, and the store prepares it once the transaction has ended (the store's
// one connection is the transaction's until then).
func (t *cachedTx) stmt(q string) *sql.Stmt {
	t.s.mu.Lock()
	st, ok := t.s.stmts[q]
	t.s.mu.Unlock()
	if !ok {
		t.missed = append(t.missed, q)
		return nil
	}
	return t.Tx.StmtContext(t.ctx, st)
}

// prepare prepares the queries a transaction ran unprepared, for the next ones. A query that
// cannot be prepared is left to run directly.
func (s *sqliteStore) prepare(ctx context.Context, queries []string) {
	for _, q := range queries {
		s.mu.Lock()
		_, ok := s.stmts[q]
		s.mu.Unlock()
		if ok {
			continue
		}
		st, err := s.db.PrepareContext(ctx, q)
		if err != nil {
			continue
		}
		s.mu.Lock()
		if _, ok := s.stmts[q]; ok {
			st.Close()
		} else {
			s.stmts[q] = st
		}
		s.mu.Unlock()
	}
}

func (t *cachedTx) Exec(q string, args ...any) (sql.Result, error) {
	if st := t.stmt(q); st != nil {
		return st.ExecContext(t.ctx, args...)
	}
	return t.Tx.ExecContext(t.ctx, q, args...)
}

func (t *cachedTx) Query(q string, args ...any) (*sql.Rows, error) {
	if st := t.stmt(q); st != nil {
		return st.QueryContext(t.ctx, args...)
	}
	return t.Tx.QueryContext(t.ctx, q, args...)
}

func (t *cachedTx) QueryRow(q string, args ...any) *sql.Row {
	if st := t.stmt(q); st != nil {
		return st.QueryRowContext(t.ctx, args...)
	}
	return t.Tx.QueryRowContext(t.ctx, q, args...)
}

// auditLog is sqlstore.AuditLog on a SQLite transaction (which, begun IMMEDIATE, holds the
// database's write lock), with the rows a change wrote found by the TEMP triggers.
type auditLog struct {
	*sqlstore.AuditLog
	tx txn
}

func readLog(tx txn) (*auditLog, error) {
	count, head, err := sqlstore.ReadHead(tx)
	if err != nil {
		return nil, err
	}
	exec := func(q string, args ...any) error { _, err := tx.Exec(q, args...); return err }
	return &auditLog{&sqlstore.AuditLog{Exec: exec, Rebind: sqlstore.Question, Count: count, Head: head}, tx}, nil
}

// append chains ev, with the state lines of the rows written since the last append, to the
// head, and returns its sequence number.
func (l *auditLog) append(ev store.Event) (int64, error) {
	state, err := bindTouched(l.tx)
	if err != nil {
		return 0, err
	}
	return l.AppendState(ev, state)
}

// watchBound makes sure this connection has the TEMP triggers that note every row written to a
// bound table in temp.touched. They are TEMP, so they exist only in p11escrow's own connections:
// a change made with another SQLite client is noted nowhere, and --verify reports it.
func watchBound(tx txn) error {
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM temp.sqlite_master WHERE type = 'trigger' AND name LIKE 'bind\_%' ESCAPE '\'`).Scan(&n); err != nil {
		return err
	}
	if n == 3*len(store.BoundTables) {
		return nil
	}
	stmts := []string{`CREATE TEMP TABLE IF NOT EXISTS touched (tbl TEXT NOT NULL, key TEXT NOT NULL, PRIMARY KEY (tbl, key))`}
	for _, t := range store.BoundTables {
		when := func(p string) string {
			if t.Skip == "" {
				return ""
			}
			return " WHEN NOT (" + fmt.Sprintf(t.Skip, p) + ")"
		}
		note := func(p string) string {
			return fmt.Sprintf(`INSERT OR IGNORE INTO temp.touched VALUES ('%s', %s);`, t.Name, t.KeyExpr(p))
		}
		stmts = append(stmts,
			fmt.Sprintf(`CREATE TEMP TRIGGER IF NOT EXISTS bind_%s_i AFTER INSERT ON main.%s%s BEGIN %s END`, t.Name, t.Name, when("NEW."), note("NEW.")),
			fmt.Sprintf(`CREATE TEMP TRIGGER IF NOT EXISTS bind_%s_u AFTER UPDATE ON main.%s%s BEGIN %s %s END`, t.Name, t.Name, when("NEW."), note("OLD."), note("NEW.")),
			fmt.Sprintf(`CREATE TEMP TRIGGER IF NOT EXISTS bind_%s_d AFTER DELETE ON main.%s%s BEGIN %s END`, t.Name, t.Name, when("OLD."), note("OLD.")))
	}
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			return err
		}
	}
	return nil
}

// bindTouched returns the State lines for the rows noted in temp.touched, and empties it.
func bindTouched(tx txn) (string, error) {
	rows, err := tx.Query(`SELECT tbl, key FROM temp.touched ORDER BY tbl, key`)
	if err != nil {
		return "", err
	}
	var touched [][2]string
	for rows.Next() {
		var t, k string
		if err := rows.Scan(&t, &k); err != nil {
			rows.Close()
			return "", err
		}
		touched = append(touched, [2]string{t, k})
	}
	rows.Close()
	if err := rows.Err(); err != nil {
		return "", err
	}
	var lines []string
	for _, tk := range touched {
		t, ok := store.Table(tk[0])
		if !ok {
			return "", fmt.Errorf("no bound table %q", tk[0])
		}
		cond := make([]string, len(t.Key))
		for i, k := range t.Key {
			cond[i] = k + " = ?"
		}
		args := []any{}
		for _, v := range strings.Split(tk[1], " ") {
			args = append(args, v)
		}
		got, err := sqlstore.HashRows(tx, t, `SELECT * FROM `+t.Name+` WHERE `+strings.Join(cond, " AND "), args...)
		if err != nil {
			return "", err
		}
		lines = append(lines, store.StateLine(t.Name, tk[1], got[tk[1]]))
	}
	if _, err := tx.Exec(`DELETE FROM temp.touched`); err != nil {
		return "", err
	}
	return store.StateText(lines), nil
}

// bindAll appends an entry that records every bound row as it is: used once by the migration
// that introduced state binding, for the rows made before it. A later migration that rewrites
// bound rows must call it too.
func bindAll(tx txn, ev store.Event) error {
	state, err := sqlstore.CurrentState(tx)
	if err != nil {
		return err
	}
	log, err := readLog(tx)
	if err != nil {
		return err
	}
	if _, err := log.AppendState(ev, store.AllState(state)); err != nil {
		return err
	}
	return log.MoveHead()
}

func (s *sqliteStore) InstanceID(ctx context.Context) (string, error) {
	return sqlstore.InstanceID(sqlstore.At(ctx, s.db))
}

func (s *sqliteStore) Intake(ctx context.Context, recs []store.NewRecord) ([]store.Stored, error) {
	out := make([]store.Stored, len(recs))
	err := s.change(ctx, func(tx txn, log *auditLog) error {
		for i, nr := range recs {
			r := nr.Record
			var state string
			err := tx.QueryRow(`SELECT state FROM authority_keys WHERE fingerprint = ?`, r.AuthorityKey).Scan(&state)
			switch {
			case err == nil && state == store.KeyRetired:
				out[i].Err = store.ErrRetired
				continue
			case err != nil && !errors.Is(err, sql.ErrNoRows): // an unknown key fails the insert below
				return err
			}
			var others int
			if err := tx.QueryRow(`SELECT COUNT(*) FROM records WHERE file_id = ? AND commitment != ?`,
				r.FileID, r.Commitment).Scan(&others); err != nil {
				return err
			}
			if others != r.SameID {
				out[i].Err = store.ErrChanged
				continue
			}
			res, err := tx.Exec(`INSERT INTO records(file_id, commitment, owner_fingerprint, owner_token_label,
				owner_token_serial, description, created, intake_time, authority_key, status, record)
				VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?) ON CONFLICT(file_id, commitment) DO NOTHING`,
				r.FileID, r.Commitment, r.OwnerFingerprint, r.OwnerTokenLabel, r.OwnerTokenSerial, r.Description,
				r.Created, r.IntakeTime, r.AuthorityKey, r.Status, r.Record)
			if err != nil {
				return err
			}
			if n, _ := res.RowsAffected(); n == 0 {
				out[i].Err = store.ErrExists
				continue
			}
			if err := insertWrap(tx, nr.Wrap); err != nil {
				return err
			}
			if out[i].Seq, err = log.append(nr.Event); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

func insertWrap(tx txn, w *store.Wrap) error {
	_, err := tx.Exec(`INSERT INTO wraps(file_id, commitment, key_fingerprint, oaep_hash, wrapped, added) VALUES (?, ?, ?, ?, ?, ?)`,
		w.FileID, w.Commitment, w.KeyFingerprint, w.OAEPHash, w.Wrapped, w.Added)
	return err
}

func (s *sqliteStore) Record(ctx context.Context, fileID, commitment string) (*store.HeldRecord, error) {
	return sqlstore.ScanRecord(s.db.QueryRowContext(ctx, `SELECT `+sqlstore.ListColumns+`, record FROM records WHERE file_id = ? AND commitment = ?`,
		fileID, commitment), true)
}

func (s *sqliteStore) RecordsByID(ctx context.Context, fileID string) ([]*store.HeldRecord, error) {
	return s.queryRecords(ctx, `SELECT `+sqlstore.ListColumns+`, record FROM records WHERE file_id = ? ORDER BY intake_time, commitment`,
		true, fileID)
}

func (s *sqliteStore) Records(ctx context.Context, f store.Filter) ([]*store.HeldRecord, error) {
	var where []string
	var args []any
	if f.Owner != "" {
		where, args = append(where, "owner_fingerprint = ?"), append(args, f.Owner)
	}
	if f.TokenSerial != "" {
		where, args = append(where, "owner_token_serial = ?"), append(args, f.TokenSerial)
	}
	if !f.Since.IsZero() {
		// RFC 3339 UTC to the second sorts as text.
		where, args = append(where, "intake_time >= ?"), append(args, f.Since.UTC().Format(time.RFC3339))
	}
	q := `SELECT ` + sqlstore.ListColumns + ` FROM records`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return s.queryRecords(ctx, q+" ORDER BY intake_time, file_id, commitment", false, args...)
}

func (s *sqliteStore) queryRecords(ctx context.Context, q string, withBytes bool, args ...any) ([]*store.HeldRecord, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	return sqlstore.ScanRecords(rows, err, withBytes)
}

func (s *sqliteStore) Wraps(ctx context.Context, fileID, commitment string) ([]*store.Wrap, error) {
	return sqlstore.ScanWraps(s.db.QueryContext(ctx, `SELECT `+sqlstore.WrapColumns+` FROM wraps
		WHERE file_id = ? AND commitment = ? ORDER BY added, key_fingerprint`, fileID, commitment))
}

func (s *sqliteStore) PendingRewrap(ctx context.Context, to string) ([]store.RecordRef, error) {
	return sqlstore.ScanRefs(s.db.QueryContext(ctx, `SELECT file_id, commitment FROM records r WHERE NOT EXISTS
		(SELECT 1 FROM wraps w WHERE w.file_id = r.file_id AND w.commitment = r.commitment AND w.key_fingerprint = ?)
		ORDER BY file_id, commitment`, to))
}

func (s *sqliteStore) AddWrap(ctx context.Context, w *store.Wrap, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		if err := insertWrap(tx, w); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE records SET authority_key = ? WHERE file_id = ? AND commitment = ?`,
			w.KeyFingerprint, w.FileID, w.Commitment)
		return err
	})
}

func (s *sqliteStore) AuthorityKeys(ctx context.Context) ([]*store.AuthorityKey, error) {
	return sqlstore.AuthorityKeys(sqlstore.At(ctx, s.db))
}

func (s *sqliteStore) AddAuthorityKey(ctx context.Context, k *store.AuthorityKey, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		var n int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM authority_keys WHERE fingerprint = ? OR label = ?`, k.Fingerprint, k.Label).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return store.ErrExists
		}
		if _, err := tx.Exec(`UPDATE authority_keys SET state = 'previous' WHERE state = 'current'`); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO authority_keys(fingerprint, label, tag, oaep_hash, public_key, created, state)
			VALUES (?, ?, ?, ?, ?, ?, 'current')`, k.Fingerprint, k.Label, k.Tag, k.OAEPHash, k.PublicKey, k.Created)
		return err
	})
}

func (s *sqliteStore) RetireKey(ctx context.Context, fingerprint string, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		var n int
		err := tx.QueryRow(`SELECT COUNT(*) FROM records r WHERE NOT EXISTS (
			SELECT 1 FROM wraps w JOIN authority_keys k ON k.fingerprint = w.key_fingerprint
			WHERE w.file_id = r.file_id AND w.commitment = r.commitment AND k.state != 'retired' AND k.fingerprint != ?)`, fingerprint).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: %d record(s) are wrapped under no other key", store.ErrInUse, n)
		}
		_, err = tx.Exec(`UPDATE authority_keys SET state = 'retired' WHERE fingerprint = ?`, fingerprint)
		return err
	})
}

func (s *sqliteStore) AddOfficer(ctx context.Context, o *store.Officer, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		if err := sqlstore.RefuseGoverned(tx); err != nil {
			return err
		}
		return insertOfficer(tx, o)
	})
}

func (s *sqliteStore) Governed(ctx context.Context) (bool, error) {
	return sqlstore.Governed(sqlstore.At(ctx, s.db))
}

func insertOfficer(tx txn, o *store.Officer) error {
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM officers WHERE fingerprint = ? OR name = ?`, o.Fingerprint, o.Name).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return store.ErrExists
	}
	_, err := tx.Exec(`INSERT INTO officers(fingerprint, name, algorithm, public_key, added) VALUES (?, ?, ?, ?, ?)`,
		o.Fingerprint, o.Name, o.Algorithm, o.PublicKey, o.Added)
	return err
}

func (s *sqliteStore) Officers(ctx context.Context) ([]*store.Officer, error) {
	return sqlstore.Officers(sqlstore.At(ctx, s.db))
}

func (s *sqliteStore) Approvals(ctx context.Context) (int, error) {
	return sqlstore.Approvals(sqlstore.At(ctx, s.db))
}

func (s *sqliteStore) SetApprovals(ctx context.Context, n int, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		if err := sqlstore.RefuseGoverned(tx); err != nil {
			return err
		}
		return setApprovals(tx, n)
	})
}

func setApprovals(tx txn, n int) error {
	_, err := tx.Exec(`UPDATE meta SET value = ? WHERE key = 'approvals'`, strconv.Itoa(n))
	return err
}

func (s *sqliteStore) AddChangeRequest(ctx context.Context, r *store.StoredRequest, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		_, err := tx.Exec(`INSERT INTO change_requests(id, state, created, canonical) VALUES (?, 'open', ?, ?)`,
			r.ID, r.Created, r.Canonical)
		return err
	})
}

func (s *sqliteStore) ChangeRequest(ctx context.Context, id string) (*store.StoredRequest, error) {
	return sqlstore.ScanRequest(s.db.QueryRowContext(ctx, `SELECT id, state, created, canonical FROM change_requests WHERE id = ?`, id), true)
}

func (s *sqliteStore) ApplyChange(ctx context.Context, requestID string, g store.Governance, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		res, err := tx.Exec(`UPDATE change_requests SET state = 'used' WHERE id = ? AND state = 'open'`, requestID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("change request %s was already applied", requestID)
		}
		if g.Officer != nil {
			return insertOfficer(tx, g.Officer)
		}
		return setApprovals(tx, g.Approvals)
	})
}

func (s *sqliteStore) AddRequest(ctx context.Context, r *store.StoredRequest, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		_, err := tx.Exec(`INSERT INTO requests(id, file_id, commitment, state, created, canonical) VALUES (?, ?, ?, 'open', ?, ?)`,
			r.ID, r.FileID, r.Commitment, r.Created, r.Canonical)
		return err
	})
}

func (s *sqliteStore) Request(ctx context.Context, id string) (*store.StoredRequest, error) {
	return sqlstore.ScanRequest(s.db.QueryRowContext(ctx, `SELECT id, file_id, commitment, state, created, canonical FROM requests WHERE id = ?`, id), false)
}

func (s *sqliteStore) Recovered(ctx context.Context, requestID string, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		res, err := tx.Exec(`UPDATE requests SET state = 'used' WHERE id = ? AND state = 'open'`, requestID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("request %s was already used", requestID)
		}
		_, err = tx.Exec(`UPDATE records SET status = 'recovered'
			WHERE (file_id, commitment) = (SELECT file_id, commitment FROM requests WHERE id = ?)`, requestID)
		return err
	})
}

func (s *sqliteStore) Log(ctx context.Context, ev store.Event) error { return s.update(ctx, ev, nil) }

func (s *sqliteStore) Audit(ctx context.Context) ([]*store.AuditEntry, error) {
	return sqlstore.ReadAudit(sqlstore.At(ctx, s.db))
}

// AuditSnapshot reads the log, its head and the bound state in one read transaction: a writer
// that commits between the reads could otherwise make a sound log look broken.
func (s *sqliteStore) AuditSnapshot(ctx context.Context) (*store.AuditSnapshot, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return sqlstore.Snapshot(tx)
}

func (s *sqliteStore) AuditHead(ctx context.Context) (int64, []byte, error) {
	return sqlstore.ReadHead(sqlstore.At(ctx, s.db))
}

// IntegrityCheck runs PRAGMA integrity_check on a SQLite store and returns its verdict ("ok"
// when sound).
func IntegrityCheck(ctx context.Context, st store.Store) (string, error) {
	s, ok := st.(*sqliteStore)
	if !ok {
		return "", errors.New("integrity_check is a SQLite check")
	}
	var v string
	err := s.db.QueryRowContext(ctx, `PRAGMA integrity_check`).Scan(&v)
	return v, err
}

// Backup writes a consistent copy of the store to path (VACUUM INTO), even while other
// processes use the database. path must not exist or be an empty file.
func (s *sqliteStore) Backup(ctx context.Context, path string) error {
	_, err := s.db.ExecContext(ctx, `VACUUM INTO ?`, path)
	return err
}

// The receipt key is kept in meta, a bound table, so its registration is in the audit chain.
func (s *sqliteStore) ReceiptKey(ctx context.Context) (string, []byte, error) {
	return sqlstore.ReceiptKey(sqlstore.At(ctx, s.db))
}

func (s *sqliteStore) SetReceiptKey(ctx context.Context, label string, pub []byte, ev store.Event) error {
	return s.update(ctx, ev, func(tx txn) error {
		res, err := tx.Exec(`INSERT INTO meta(key, value) VALUES ('receipt_key_label', ?), ('receipt_key', ?)
			ON CONFLICT(key) DO NOTHING`, label, hex.EncodeToString(pub))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 2 {
			return store.ErrExists
		}
		return nil
	})
}

// IntakeSeq reads the log from its end: a record is held once, so it has one intake entry, and
// the receipt of a record just held finds it among the last entries instead of scanning them all.
// intakeSeqSQL finds the entry that stored a record through the audit_intake index (migration
// 4): its expressions and condition are the index's.
const intakeSeqSQL = `SELECT seq FROM audit WHERE action IN ('intake', 'intake-collision')
	AND json_extract(details, '$.file_id') = ? AND json_extract(details, '$.key_commitment') = ?
	ORDER BY seq DESC LIMIT 1`

func (s *sqliteStore) IntakeSeq(ctx context.Context, fileID, commitment string) (int, error) {
	var seq int
	err := s.db.QueryRowContext(ctx, intakeSeqSQL, fileID, commitment).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, store.ErrNotFound
	}
	return seq, err
}
