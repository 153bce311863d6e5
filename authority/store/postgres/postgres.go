// Package postgres is the authority's Store on a PostgreSQL database (through pgx), for an
// authority that outgrows one machine: several hosts, or several processes, share one database.
// It is the backend for a --db that is a postgres:// or postgresql:// URL.
//
// Every change runs in one transaction that first locks the audit head (SELECT ... FOR UPDATE
// on its rows in meta): writers in any number of processes and hosts take turns, each reads the
// head and appends after it, and checks made in the transaction (a record already held, a quorum
// registered) see every change committed before. The rows a change writes are recorded in its
// audit entry from the keys each statement returns.
package postgres

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib" // also the "pgx" database/sql driver
	"github.com/p11escrow/p11escrow/authority/store"
	"github.com/p11escrow/p11escrow/authority/store/internal/sqlstore"
)

type pgStore struct {
	db *sql.DB
}

// Open connects to the database at ref, a URL (postgres://… or postgresql://…, with libpq's
// parameters, such as host=/run/postgresql for a Unix socket) and creates or migrates the
// authority's schema in it. The role needs to create tables on first use; afterwards, to read
// and write them.
func Open(ctx context.Context, ref string) (store.Store, error) { return open(ctx, ref, true) }

// OpenExisting is Open for commands that only read: a database without the authority's tables
// is an error wrapping store.ErrNoDatabase, and nothing is created in it.
func OpenExisting(ctx context.Context, ref string) (store.Store, error) { return open(ctx, ref, false) }

func open(ctx context.Context, ref string, create bool) (store.Store, error) {
	db, err := sql.Open("pgx", ref)
	if err != nil {
		return nil, fmt.Errorf("the authority database: %w", err)
	}
	s := &pgStore{db: db}
	if !create {
		var made bool
		if err := db.QueryRowContext(ctx, `SELECT to_regclass('migrations') IS NOT NULL`).Scan(&made); err != nil {
			db.Close()
			return nil, fmt.Errorf("the authority database: %w", err)
		}
		if !made {
			db.Close()
			return nil, noStoreError{redacted(ref)}
		}
	}
	if err := s.migrate(ctx); err != nil {
		db.Close()
		return nil, fmt.Errorf("the authority database: %w", err)
	}
	return s, nil
}

// noStoreError is OpenExisting's error for a database that exists but holds no authority store:
// "does not exist", store.ErrNoDatabase's text, would be wrong about the database.
type noStoreError struct{ ref string }

func (e noStoreError) Error() string {
	return "the PostgreSQL database " + e.ref + " holds no authority store"
}

func (e noStoreError) Unwrap() error { return store.ErrNoDatabase }

// redacted is ref without its password, for messages.
func redacted(ref string) string {
	u, err := url.Parse(ref)
	if err != nil {
		return "(an unreadable URL)"
	}
	return u.Redacted()
}

// migrations are applied in order, each in its own transaction, and recorded in the migrations
// table. Never edit one that has shipped: add the next.
var migrations = []func(tx *sql.Tx) error{
	migrate1,
	migrate2,
}

// migrate2 indexes the intake entries by file ID, key commitment and sequence, as the SQLite
// store's migration 4 does: IntakeSeq then reads one index entry instead of scanning the log.
func migrate2(tx *sql.Tx) error {
	_, err := tx.Exec(`CREATE INDEX audit_intake ON audit (((details::jsonb)->>'file_id'),
		((details::jsonb)->>'key_commitment'), seq) WHERE action IN ('intake', 'intake-collision')`)
	return err
}

// migrate1 creates the schema as the SQLite store has it at its migration 3: records held by
// file ID and key commitment, and audit entries that record the rows they wrote.
func migrate1(tx *sql.Tx) error {
	stmts := []string{
		`CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL)`,
		`CREATE TABLE authority_keys (
			fingerprint TEXT PRIMARY KEY, label TEXT NOT NULL, tag TEXT NOT NULL,
			oaep_hash TEXT NOT NULL, public_key BYTEA NOT NULL, created TEXT NOT NULL,
			state TEXT NOT NULL CHECK (state IN ('current', 'previous', 'retired')))`,
		`CREATE UNIQUE INDEX one_current_key ON authority_keys(state) WHERE state = 'current'`,
		`CREATE TABLE records (
			file_id TEXT NOT NULL, commitment TEXT NOT NULL, owner_fingerprint TEXT NOT NULL,
			owner_token_label TEXT NOT NULL, owner_token_serial TEXT NOT NULL, description TEXT NOT NULL,
			created TEXT NOT NULL, intake_time TEXT NOT NULL,
			authority_key TEXT NOT NULL REFERENCES authority_keys(fingerprint),
			status TEXT NOT NULL CHECK (status IN ('held', 'recovered')), record BYTEA NOT NULL,
			PRIMARY KEY (file_id, commitment))`,
		`CREATE INDEX records_owner ON records(owner_fingerprint)`,
		`CREATE INDEX records_serial ON records(owner_token_serial)`,
		`CREATE TABLE wraps (
			file_id TEXT NOT NULL, commitment TEXT NOT NULL,
			key_fingerprint TEXT NOT NULL REFERENCES authority_keys(fingerprint),
			oaep_hash TEXT NOT NULL, wrapped BYTEA NOT NULL, added TEXT NOT NULL,
			PRIMARY KEY (file_id, commitment, key_fingerprint),
			FOREIGN KEY (file_id, commitment) REFERENCES records(file_id, commitment))`,
		`CREATE INDEX wraps_key ON wraps(key_fingerprint)`,
		`CREATE TABLE officers (
			fingerprint TEXT PRIMARY KEY, name TEXT NOT NULL UNIQUE, algorithm TEXT NOT NULL,
			public_key BYTEA NOT NULL, added TEXT NOT NULL)`,
		`CREATE TABLE requests (
			id TEXT PRIMARY KEY, file_id TEXT NOT NULL, commitment TEXT NOT NULL,
			state TEXT NOT NULL CHECK (state IN ('open', 'used')), created TEXT NOT NULL, canonical BYTEA NOT NULL,
			FOREIGN KEY (file_id, commitment) REFERENCES records(file_id, commitment))`,
		`CREATE INDEX requests_record ON requests(file_id, commitment)`,
		`CREATE TABLE change_requests (
			id TEXT PRIMARY KEY, state TEXT NOT NULL CHECK (state IN ('open', 'used')),
			created TEXT NOT NULL, canonical BYTEA NOT NULL)`,
		`CREATE TABLE audit (
			seq BIGINT PRIMARY KEY, time TEXT NOT NULL, actor TEXT NOT NULL, action TEXT NOT NULL,
			details TEXT NOT NULL, prev_hash BYTEA NOT NULL, hash BYTEA NOT NULL, state TEXT NOT NULL DEFAULT '')`,
	}
	for _, q := range stmts {
		if _, err := tx.Exec(q); err != nil {
			return err
		}
	}
	var id [16]byte
	if _, err := rand.Read(id[:]); err != nil {
		return err
	}
	if _, err := tx.Exec(`INSERT INTO meta(key, value) VALUES ('instance_id', $1), ('approvals', '2'),
		('audit_count', '0'), ('audit_head', $2)`, hex.EncodeToString(id[:]), hex.EncodeToString(make([]byte, sha256.Size))); err != nil {
		return err
	}
	// The first entry records the new database's bound rows: its instance ID and policy.
	return bindAll(tx, store.Event{Time: time.Now(), Actor: "p11escrow", Action: "create", Details: `{"schema":1}`})
}

// migrate applies the pending migrations. Openers of a new database take turns on an advisory
// lock, so that one creates the schema and the others find it made.
func (s *pgStore) migrate(ctx context.Context) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if _, err := tx.Exec(`SELECT pg_advisory_xact_lock(7011001)`); err != nil {
		return err
	}
	if _, err := tx.Exec(`CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)`); err != nil {
		return err
	}
	var have int
	if err := tx.QueryRow(`SELECT COALESCE(MAX(version), 0) FROM migrations`).Scan(&have); err != nil {
		return err
	}
	if have > len(migrations) {
		return fmt.Errorf("it has schema version %d, newer than this p11escrow knows (%d); upgrade p11escrow", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		if err := migrations[v-1](tx); err != nil {
			return fmt.Errorf("schema migration %d: %w", v, err)
		}
		if _, err := tx.Exec(`INSERT INTO migrations(version, applied) VALUES ($1, $2)`, v, time.Now().UTC().Format(time.RFC3339)); err != nil {
			return err
		}
	}
	return tx.Commit()
}

func (s *pgStore) Close() error { return s.db.Close() }

// touched collects the bound rows a change writes, as "TABLE KEY", for its audit entry.
type touched map[string]bool

func (t touched) add(table string, key ...string) { t[table+" "+strings.Join(key, " ")] = true }

// update runs f and appends ev to the audit log in one transaction. The rows f reports in
// touched are recorded in the entry's State. This, and Intake's batch, are the only paths by
// which the store changes anything; both go through change.
func (s *pgStore) update(ctx context.Context, ev store.Event, f func(tx *sql.Tx, t touched) error) error {
	return s.change(ctx, func(tx *sql.Tx, log *auditLog) error {
		t := touched{}
		if f != nil {
			if err := f(tx, t); err != nil {
				return err
			}
		}
		_, err := log.append(ev, t)
		return err
	})
}

// change runs f in one transaction, which begins by locking the audit head: appends are
// serialised across every process and host, and f's reads see every change committed before.
// f fills the transaction with changes, each followed by log.append of the event that describes
// it. The head moves once, when f is done, and the transaction commits only if f appended
// something.
func (s *pgStore) change(ctx context.Context, f func(tx *sql.Tx, log *auditLog) error) error {
	tx, err := s.db.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	defer tx.Rollback()
	log, err := lockLog(tx)
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
	return tx.Commit()
}

// auditLog is sqlstore.AuditLog on a transaction that holds the head's lock, with the rows a
// change wrote named by the change itself (touched).
type auditLog struct {
	*sqlstore.AuditLog
	tx *sql.Tx
}

// newLog is an auditLog from the head's values; exec runs or queues one statement.
func newLog(tx *sql.Tx, exec func(string, ...any) error, count int64, head []byte) *auditLog {
	return &auditLog{&sqlstore.AuditLog{Exec: exec, Rebind: sqlstore.Dollar, Count: count, Head: head}, tx}
}

func txExec(tx *sql.Tx) func(string, ...any) error {
	return func(q string, args ...any) error { _, err := tx.Exec(q, args...); return err }
}

// lockHeadSQL locks both head rows, always in the same order so that two writers never deadlock
// on them, and reads them.
const lockHeadSQL = `SELECT key, value FROM meta WHERE key IN ('audit_count', 'audit_head') ORDER BY key FOR UPDATE`

// lockLog locks both head rows and reads them in the same statement.
func lockLog(tx *sql.Tx) (*auditLog, error) {
	rows, err := tx.Query(lockHeadSQL)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	count, head, err := headFromRows(rows)
	if err != nil {
		return nil, err
	}
	return newLog(tx, txExec(tx), count, head), nil
}

// headFromRows reads the audit head from lockHeadSQL's rows (database/sql's or pgx's).
func headFromRows(rows interface {
	Next() bool
	Scan(...any) error
	Err() error
}) (int64, []byte, error) {
	v := map[string]string{}
	for rows.Next() {
		var k, val string
		if err := rows.Scan(&k, &val); err != nil {
			return 0, nil, err
		}
		v[k] = val
	}
	if err := rows.Err(); err != nil {
		return 0, nil, err
	}
	return sqlstore.ParseHead(v["audit_count"], v["audit_head"])
}

// append chains ev, with the state lines of the rows in t, to the head, and returns its
// sequence number.
func (l *auditLog) append(ev store.Event, t touched) (int64, error) {
	state, err := stateLines(l.tx, t)
	if err != nil {
		return 0, err
	}
	return l.AppendState(ev, state)
}

// stateLines returns the State text for the rows in t, each with its current digest ("-" once
// deleted).
func stateLines(tx *sql.Tx, t touched) (string, error) {
	var lines []string
	for tk := range t {
		name, key, _ := strings.Cut(tk, " ")
		bt, ok := store.Table(name)
		if !ok {
			return "", fmt.Errorf("no bound table %q", name)
		}
		cond := make([]string, len(bt.Key))
		args := []any{}
		for i, k := range bt.Key {
			cond[i] = fmt.Sprintf("%s = $%d", k, i+1)
		}
		for _, v := range strings.Split(key, " ") {
			args = append(args, v)
		}
		got, err := sqlstore.HashRows(tx, bt, `SELECT * FROM `+bt.Name+` WHERE `+strings.Join(cond, " AND "), args...)
		if err != nil {
			return "", err
		}
		lines = append(lines, store.StateLine(bt.Name, key, got[key]))
	}
	return store.StateText(lines), nil
}

// bindAll appends an entry that records every bound row as it is.
func bindAll(tx *sql.Tx, ev store.Event) error {
	state, err := sqlstore.CurrentState(tx)
	if err != nil {
		return err
	}
	count, head, err := sqlstore.ReadHead(tx)
	if err != nil {
		return err
	}
	log := newLog(tx, txExec(tx), count, head)
	if _, err := log.AppendState(ev, store.AllState(state)); err != nil {
		return err
	}
	return log.MoveHead()
}

func (s *pgStore) InstanceID(ctx context.Context) (string, error) {
	return sqlstore.InstanceID(sqlstore.At(ctx, s.db))
}

// Intake runs each group in two round trips to the server, whatever its size: one pipelined
// batch locks the audit head and inserts every record with its wrap (one statement each, which
// returns the rows as stored, so that their digests need no second read), and a second appends
// the records' audit entries, computed here from the head, and moves the head. Through
// database/sql every statement was a round trip of its own, and those round trips, not the
// server's work, were most of a commit's cost.
func (s *pgStore) Intake(ctx context.Context, recs []store.NewRecord) ([]store.Stored, error) {
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	defer conn.Close()
	var out []store.Stored
	err = conn.Raw(func(dc any) error {
		c, ok := dc.(*stdlib.Conn)
		if !ok {
			return fmt.Errorf("the database connection is a %T, not pgx's", dc)
		}
		out, err = intakeBatch(ctx, c.Conn(), recs)
		return err
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}

// intakeSQL inserts one record and its first wrap if its authority key is not retired, the number
// of other records held under its file ID is what the caller saw ($12), and the pair is not held.
// It returns that number, whether the key is retired, whether it inserted, and both rows as
// stored, each after a marker column that names its table. (A key that is not registered at all
// fails the insert, and with it the transaction.)
const intakeSQL = `WITH others AS (
	SELECT COUNT(*) AS n, (SELECT state FROM authority_keys WHERE fingerprint = $9::text) = 'retired' AS retired
	FROM records WHERE file_id = $1::text AND commitment != $2::text
), r AS (
	INSERT INTO records(file_id, commitment, owner_fingerprint, owner_token_label, owner_token_serial,
		description, created, intake_time, authority_key, status, record)
	SELECT $1::text, $2::text, $3::text, $4::text, $5::text, $6::text, $7::text, $8::text, $9::text, $10::text, $11::bytea
	FROM others WHERE n = $12::bigint AND retired IS NOT TRUE
	ON CONFLICT (file_id, commitment) DO NOTHING
	RETURNING *
), w AS (
	INSERT INTO wraps(file_id, commitment, key_fingerprint, oaep_hash, wrapped, added)
	SELECT file_id, commitment, $13::text, $14::text, $15::bytea, $16::text FROM r
	RETURNING *
)
SELECT others.n, others.retired IS TRUE AS retired, r.file_id IS NOT NULL AS inserted, 'records' AS p11escrow_table, r.*, 'wraps' AS p11escrow_table, w.*
FROM others LEFT JOIN (r CROSS JOIN w) ON true`

func intakeBatch(ctx context.Context, c *pgx.Conn, recs []store.NewRecord) ([]store.Stored, error) {
	tx, err := c.Begin(ctx)
	if err != nil {
		return nil, err
	}
	defer tx.Rollback(context.WithoutCancel(ctx))
	b := &pgx.Batch{}
	b.Queue(lockHeadSQL)
	for _, nr := range recs {
		r, w := nr.Record, nr.Wrap
		b.Queue(intakeSQL, r.FileID, r.Commitment, r.OwnerFingerprint, r.OwnerTokenLabel, r.OwnerTokenSerial,
			r.Description, r.Created, r.IntakeTime, r.AuthorityKey, r.Status, r.Record, int64(r.SameID),
			w.KeyFingerprint, w.OAEPHash, w.Wrapped, w.Added)
	}
	br := tx.SendBatch(ctx, b)
	rows, err := br.Query()
	if err != nil {
		br.Close()
		return nil, err
	}
	count, head, err := headFromRows(rows)
	rows.Close()
	if err != nil {
		br.Close()
		return nil, err
	}
	out := make([]store.Stored, len(recs))
	states := make([]string, len(recs))
	for i, nr := range recs {
		others, retired, state, err := readIntake(br)
		if err != nil {
			br.Close()
			return nil, err
		}
		switch {
		case state != "":
			states[i] = state
		case retired:
			out[i].Err = store.ErrRetired
		case others != int64(nr.Record.SameID):
			out[i].Err = store.ErrChanged
		default:
			out[i].Err = store.ErrExists
		}
	}
	if err := br.Close(); err != nil {
		return nil, err
	}
	// The entries are appended as every change's are (sqlstore.AuditLog), into a second batch.
	b = &pgx.Batch{}
	queue := func(q string, args ...any) error { b.Queue(q, args...); return nil }
	log := newLog(nil, queue, count, head)
	for i, nr := range recs {
		if out[i].Err != nil {
			continue
		}
		if out[i].Seq, err = log.AppendState(nr.Event, states[i]); err != nil {
			return nil, err
		}
	}
	if log.Appended == 0 {
		return out, nil // every record was refused: nothing to commit
	}
	if err := log.MoveHead(); err != nil {
		return nil, err
	}
	if err := tx.SendBatch(ctx, b).Close(); err != nil {
		return nil, err
	}
	return out, tx.Commit(ctx)
}

// readIntake reads one intakeSQL result: the number of other records under the file ID, whether
// the record's key is retired, and the State lines of the two rows inserted ("" if none was).
func readIntake(br pgx.BatchResults) (others int64, retired bool, state string, err error) {
	rows, err := br.Query()
	if err != nil {
		return 0, false, "", err
	}
	defer rows.Close()
	if !rows.Next() {
		if err := rows.Err(); err != nil {
			return 0, false, "", err
		}
		return 0, false, "", errors.New("the intake statement returned no row")
	}
	vals, err := rows.Values()
	if err != nil {
		return 0, false, "", err
	}
	fields := rows.FieldDescriptions()
	others, ok1 := vals[0].(int64)
	retired, ok2 := vals[1].(bool)
	inserted, ok3 := vals[2].(bool)
	if !ok1 || !ok2 || !ok3 {
		return 0, false, "", fmt.Errorf("the intake statement returned a %T, a %T and a %T", vals[0], vals[1], vals[2])
	}
	if !inserted {
		return others, retired, "", rows.Err()
	}
	var lines []string
	// The rows follow their marker columns: 'records', its columns, 'wraps', its columns.
	for i := 3; i < len(vals); {
		name, _ := vals[i].(string)
		if fields[i].Name != "p11escrow_table" {
			return 0, false, "", fmt.Errorf("the intake statement's column %d is %q", i, fields[i].Name)
		}
		j := i + 1
		for j < len(vals) && fields[j].Name != "p11escrow_table" {
			j++
		}
		bt, ok := store.Table(name)
		if !ok {
			return 0, false, "", fmt.Errorf("no bound table %q", name)
		}
		cols := make([]string, j-i-1)
		for k := range cols {
			cols[k] = fields[i+1+k].Name
		}
		rv := vals[i+1 : j]
		lines = append(lines, store.StateLine(bt.Name, bt.RowKey(cols, rv), store.RowDigest(bt.Name, cols, rv)))
		i = j
	}
	return others, false, store.StateText(lines), rows.Err()
}

func insertWrap(tx *sql.Tx, t touched, w *store.Wrap) error {
	_, err := tx.Exec(`INSERT INTO wraps(file_id, commitment, key_fingerprint, oaep_hash, wrapped, added) VALUES ($1, $2, $3, $4, $5, $6)`,
		w.FileID, w.Commitment, w.KeyFingerprint, w.OAEPHash, w.Wrapped, w.Added)
	t.add("wraps", w.FileID, w.Commitment, w.KeyFingerprint)
	return err
}

func (s *pgStore) Record(ctx context.Context, fileID, commitment string) (*store.HeldRecord, error) {
	return sqlstore.ScanRecord(s.db.QueryRowContext(ctx, `SELECT `+sqlstore.ListColumns+`, record FROM records WHERE file_id = $1 AND commitment = $2`,
		fileID, commitment), true)
}

func (s *pgStore) RecordsByID(ctx context.Context, fileID string) ([]*store.HeldRecord, error) {
	return s.queryRecords(ctx, `SELECT `+sqlstore.ListColumns+`, record FROM records WHERE file_id = $1 ORDER BY intake_time, commitment`,
		true, fileID)
}

func (s *pgStore) Records(ctx context.Context, f store.Filter) ([]*store.HeldRecord, error) {
	var where []string
	var args []any
	arg := func(cond string, v any) {
		args = append(args, v)
		where = append(where, fmt.Sprintf(cond, len(args)))
	}
	if f.Owner != "" {
		arg("owner_fingerprint = $%d", f.Owner)
	}
	if f.TokenSerial != "" {
		arg("owner_token_serial = $%d", f.TokenSerial)
	}
	if !f.Since.IsZero() {
		// RFC 3339 UTC to the second sorts as text.
		arg("intake_time >= $%d", f.Since.UTC().Format(time.RFC3339))
	}
	q := `SELECT ` + sqlstore.ListColumns + ` FROM records`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	return s.queryRecords(ctx, q+" ORDER BY intake_time, file_id, commitment", false, args...)
}

func (s *pgStore) queryRecords(ctx context.Context, q string, withBytes bool, args ...any) ([]*store.HeldRecord, error) {
	rows, err := s.db.QueryContext(ctx, q, args...)
	return sqlstore.ScanRecords(rows, err, withBytes)
}

func (s *pgStore) Wraps(ctx context.Context, fileID, commitment string) ([]*store.Wrap, error) {
	return sqlstore.ScanWraps(s.db.QueryContext(ctx, `SELECT `+sqlstore.WrapColumns+` FROM wraps
		WHERE file_id = $1 AND commitment = $2 ORDER BY added, key_fingerprint`, fileID, commitment))
}

func (s *pgStore) PendingRewrap(ctx context.Context, to string) ([]store.RecordRef, error) {
	return sqlstore.ScanRefs(s.db.QueryContext(ctx, `SELECT file_id, commitment FROM records r WHERE NOT EXISTS
		(SELECT 1 FROM wraps w WHERE w.file_id = r.file_id AND w.commitment = r.commitment AND w.key_fingerprint = $1)
		ORDER BY file_id, commitment`, to))
}

func (s *pgStore) AddWrap(ctx context.Context, w *store.Wrap, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		if err := insertWrap(tx, t, w); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE records SET authority_key = $1 WHERE file_id = $2 AND commitment = $3`,
			w.KeyFingerprint, w.FileID, w.Commitment)
		t.add("records", w.FileID, w.Commitment)
		return err
	})
}

func (s *pgStore) AuthorityKeys(ctx context.Context) ([]*store.AuthorityKey, error) {
	return sqlstore.AuthorityKeys(sqlstore.At(ctx, s.db))
}

// returning runs an UPDATE ... RETURNING of one key column and notes every row it wrote.
func returning(tx *sql.Tx, t touched, table, q string, args ...any) (int, error) {
	rows, err := tx.Query(q, args...)
	if err != nil {
		return 0, err
	}
	defer rows.Close()
	n := 0
	for rows.Next() {
		var k string
		if err := rows.Scan(&k); err != nil {
			return 0, err
		}
		t.add(table, k)
		n++
	}
	return n, rows.Err()
}

func (s *pgStore) AddAuthorityKey(ctx context.Context, k *store.AuthorityKey, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		var n int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM authority_keys WHERE fingerprint = $1 OR label = $2`, k.Fingerprint, k.Label).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return store.ErrExists
		}
		if _, err := returning(tx, t, "authority_keys", `UPDATE authority_keys SET state = 'previous' WHERE state = 'current' RETURNING fingerprint`); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO authority_keys(fingerprint, label, tag, oaep_hash, public_key, created, state)
			VALUES ($1, $2, $3, $4, $5, $6, 'current')`, k.Fingerprint, k.Label, k.Tag, k.OAEPHash, k.PublicKey, k.Created)
		t.add("authority_keys", k.Fingerprint)
		return err
	})
}

func (s *pgStore) RetireKey(ctx context.Context, fingerprint string, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		var n int
		err := tx.QueryRow(`SELECT COUNT(*) FROM records r WHERE NOT EXISTS (
			SELECT 1 FROM wraps w JOIN authority_keys k ON k.fingerprint = w.key_fingerprint
			WHERE w.file_id = r.file_id AND w.commitment = r.commitment AND k.state != 'retired' AND k.fingerprint != $1)`, fingerprint).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: %d record(s) are wrapped under no other key", store.ErrInUse, n)
		}
		_, err = returning(tx, t, "authority_keys", `UPDATE authority_keys SET state = 'retired' WHERE fingerprint = $1 RETURNING fingerprint`, fingerprint)
		return err
	})
}

func (s *pgStore) AddOfficer(ctx context.Context, o *store.Officer, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		if err := sqlstore.RefuseGoverned(tx); err != nil {
			return err
		}
		return insertOfficer(tx, t, o)
	})
}

func (s *pgStore) Governed(ctx context.Context) (bool, error) {
	return sqlstore.Governed(sqlstore.At(ctx, s.db))
}

func insertOfficer(tx *sql.Tx, t touched, o *store.Officer) error {
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM officers WHERE fingerprint = $1 OR name = $2`, o.Fingerprint, o.Name).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return store.ErrExists
	}
	_, err := tx.Exec(`INSERT INTO officers(fingerprint, name, algorithm, public_key, added) VALUES ($1, $2, $3, $4, $5)`,
		o.Fingerprint, o.Name, o.Algorithm, o.PublicKey, o.Added)
	t.add("officers", o.Fingerprint)
	return err
}

func (s *pgStore) Officers(ctx context.Context) ([]*store.Officer, error) {
	return sqlstore.Officers(sqlstore.At(ctx, s.db))
}

func (s *pgStore) Approvals(ctx context.Context) (int, error) {
	return sqlstore.Approvals(sqlstore.At(ctx, s.db))
}

func (s *pgStore) SetApprovals(ctx context.Context, n int, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		if err := sqlstore.RefuseGoverned(tx); err != nil {
			return err
		}
		return setApprovals(tx, t, n)
	})
}

func setApprovals(tx *sql.Tx, t touched, n int) error {
	_, err := tx.Exec(`UPDATE meta SET value = $1 WHERE key = 'approvals'`, strconv.Itoa(n))
	t.add("meta", "approvals")
	return err
}

func (s *pgStore) AddChangeRequest(ctx context.Context, r *store.StoredRequest, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		_, err := tx.Exec(`INSERT INTO change_requests(id, state, created, canonical) VALUES ($1, 'open', $2, $3)`,
			r.ID, r.Created, r.Canonical)
		t.add("change_requests", r.ID)
		return err
	})
}

func (s *pgStore) ChangeRequest(ctx context.Context, id string) (*store.StoredRequest, error) {
	return sqlstore.ScanRequest(s.db.QueryRowContext(ctx, `SELECT id, state, created, canonical FROM change_requests WHERE id = $1`, id), true)
}

func (s *pgStore) ApplyChange(ctx context.Context, requestID string, g store.Governance, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		n, err := returning(tx, t, "change_requests", `UPDATE change_requests SET state = 'used' WHERE id = $1 AND state = 'open' RETURNING id`, requestID)
		if err != nil {
			return err
		}
		if n != 1 {
			return fmt.Errorf("change request %s was already applied", requestID)
		}
		if g.Officer != nil {
			return insertOfficer(tx, t, g.Officer)
		}
		return setApprovals(tx, t, g.Approvals)
	})
}

func (s *pgStore) AddRequest(ctx context.Context, r *store.StoredRequest, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		_, err := tx.Exec(`INSERT INTO requests(id, file_id, commitment, state, created, canonical) VALUES ($1, $2, $3, 'open', $4, $5)`,
			r.ID, r.FileID, r.Commitment, r.Created, r.Canonical)
		t.add("requests", r.ID)
		return err
	})
}

func (s *pgStore) Request(ctx context.Context, id string) (*store.StoredRequest, error) {
	return sqlstore.ScanRequest(s.db.QueryRowContext(ctx, `SELECT id, file_id, commitment, state, created, canonical FROM requests WHERE id = $1`, id), false)
}

func (s *pgStore) Recovered(ctx context.Context, requestID string, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		var fileID, commitment string
		err := tx.QueryRow(`UPDATE requests SET state = 'used' WHERE id = $1 AND state = 'open' RETURNING file_id, commitment`,
			requestID).Scan(&fileID, &commitment)
		if errors.Is(err, sql.ErrNoRows) {
			return fmt.Errorf("request %s was already used", requestID)
		}
		if err != nil {
			return err
		}
		t.add("requests", requestID)
		_, err = tx.Exec(`UPDATE records SET status = 'recovered' WHERE file_id = $1 AND commitment = $2`, fileID, commitment)
		t.add("records", fileID, commitment)
		return err
	})
}

func (s *pgStore) Log(ctx context.Context, ev store.Event) error { return s.update(ctx, ev, nil) }

func (s *pgStore) Audit(ctx context.Context) ([]*store.AuditEntry, error) {
	return sqlstore.ReadAudit(sqlstore.At(ctx, s.db))
}

// AuditSnapshot reads the log, its head and the bound state in one REPEATABLE READ transaction:
// a writer that commits between the reads could otherwise make a sound log look broken.
func (s *pgStore) AuditSnapshot(ctx context.Context) (*store.AuditSnapshot, error) {
	tx, err := s.db.BeginTx(ctx, &sql.TxOptions{ReadOnly: true, Isolation: sql.LevelRepeatableRead})
	if err != nil {
		return nil, err
	}
	defer tx.Rollback()
	return sqlstore.Snapshot(tx)
}

func (s *pgStore) AuditHead(ctx context.Context) (int64, []byte, error) {
	return sqlstore.ReadHead(sqlstore.At(ctx, s.db))
}

// The receipt key is kept in meta, a bound table, so its registration is in the audit chain.
func (s *pgStore) ReceiptKey(ctx context.Context) (string, []byte, error) {
	return sqlstore.ReceiptKey(sqlstore.At(ctx, s.db))
}

func (s *pgStore) SetReceiptKey(ctx context.Context, label string, pub []byte, ev store.Event) error {
	return s.update(ctx, ev, func(tx *sql.Tx, t touched) error {
		res, err := tx.Exec(`INSERT INTO meta(key, value) VALUES ('receipt_key_label', $1), ('receipt_key', $2)
			ON CONFLICT(key) DO NOTHING`, label, hex.EncodeToString(pub))
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 2 {
			return store.ErrExists
		}
		t.add("meta", "receipt_key_label")
		t.add("meta", "receipt_key")
		return nil
	})
}

// intakeSeqSQL finds the entry that stored a record through the audit_intake index (migration
// 2): its expressions and condition are the index's.
const intakeSeqSQL = `SELECT seq FROM audit WHERE action IN ('intake', 'intake-collision')
	AND (details::jsonb)->>'file_id' = $1 AND (details::jsonb)->>'key_commitment' = $2
	ORDER BY seq DESC LIMIT 1`

func (s *pgStore) IntakeSeq(ctx context.Context, fileID, commitment string) (int, error) {
	var seq int
	err := s.db.QueryRowContext(ctx, intakeSeqSQL, fileID, commitment).Scan(&seq)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, store.ErrNotFound
	}
	return seq, err
}
