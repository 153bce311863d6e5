package authority

import (
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

	_ "modernc.org/sqlite" // pure Go SQLite: no cgo beyond the PKCS#11 module's
)

// sqliteStore is the Store on an embedded SQLite database.
type sqliteStore struct {
	db *sql.DB
}

// OpenSQLite opens (creating if needed) the store at path and applies pending migrations.
//
// The database runs in WAL mode with synchronous=FULL, so a transaction acknowledged to the
// caller survives a crash or power loss; foreign keys are on; and every transaction begins
// IMMEDIATE, so two processes never interleave the read-then-append of the audit chain.
func OpenSQLite(path string) (Store, error) {
	q := url.Values{}
	q.Add("_pragma", "busy_timeout(10000)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	q.Add("_pragma", "foreign_keys(1)")
	q.Set("_txlock", "immediate")
	db, err := sql.Open("sqlite", "file:"+path+"?"+q.Encode())
	if err != nil {
		return nil, fmt.Errorf("opening the authority database %s: %w", path, err)
	}
	db.SetMaxOpenConns(1) // one writer; the pragmas are per connection
	s := &sqliteStore{db: db}
	if err := s.migrate(); err != nil {
		db.Close()
		return nil, fmt.Errorf("the authority database %s: %w", path, err)
	}
	return s, nil
}

// migrations are applied in order, each in its own transaction, and recorded in the migrations
// table. Never edit one that has shipped: add the next.
var migrations = []func(tx *sql.Tx) error{
	migrate1,
	migrate2,
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

func (s *sqliteStore) migrate() error {
	if _, err := s.db.Exec(`CREATE TABLE IF NOT EXISTS migrations (version INTEGER PRIMARY KEY, applied TEXT NOT NULL)`); err != nil {
		return err
	}
	var have int
	if err := s.db.QueryRow(`SELECT COALESCE(MAX(version), 0) FROM migrations`).Scan(&have); err != nil {
		return err
	}
	if have > len(migrations) {
		return fmt.Errorf("it has schema version %d, newer than this p11escrow knows (%d); upgrade p11escrow", have, len(migrations))
	}
	for v := have + 1; v <= len(migrations); v++ {
		tx, err := s.db.Begin()
		if err != nil {
			return err
		}
		if err := migrations[v-1](tx); err != nil {
			tx.Rollback()
			return fmt.Errorf("schema migration %d: %w", v, err)
		}
		if _, err := tx.Exec(`INSERT INTO migrations(version, applied) VALUES (?, ?)`, v, now()); err != nil {
			tx.Rollback()
			return err
		}
		if err := tx.Commit(); err != nil {
			return err
		}
	}
	return nil
}

func now() string { return time.Now().UTC().Format(time.RFC3339) }

func (s *sqliteStore) Close() error { return s.db.Close() }

// update runs f and appends ev to the audit log in one transaction.
func (s *sqliteStore) update(ev Event, f func(tx *sql.Tx) error) error {
	tx, err := s.db.Begin()
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if f != nil {
		if err := f(tx); err != nil {
			return err
		}
	}
	if err := appendAudit(tx, ev); err != nil {
		return err
	}
	return tx.Commit()
}

// appendAudit chains ev to the head and moves the head, inside the caller's transaction.
func appendAudit(tx *sql.Tx, ev Event) error {
	count, head, err := readHead(tx)
	if err != nil {
		return err
	}
	e := &AuditEntry{Seq: count + 1, Time: ev.Time.UTC().Format(time.RFC3339Nano), Actor: ev.Actor,
		Action: ev.Action, Details: ev.Details, PrevHash: head}
	e.Hash = e.ComputeHash()
	if _, err := tx.Exec(`INSERT INTO audit(seq, time, actor, action, details, prev_hash, hash) VALUES (?, ?, ?, ?, ?, ?, ?)`,
		e.Seq, e.Time, e.Actor, e.Action, e.Details, e.PrevHash, e.Hash); err != nil {
		return err
	}
	_, err = tx.Exec(`UPDATE meta SET value = CASE key WHEN 'audit_count' THEN ? ELSE ? END WHERE key IN ('audit_count', 'audit_head')`,
		strconv.FormatInt(e.Seq, 10), hex.EncodeToString(e.Hash))
	return err
}

type querier interface {
	QueryRow(query string, args ...any) *sql.Row
}

func readHead(q querier) (int64, []byte, error) {
	var c, h string
	if err := q.QueryRow(`SELECT value FROM meta WHERE key = 'audit_count'`).Scan(&c); err != nil {
		return 0, nil, err
	}
	if err := q.QueryRow(`SELECT value FROM meta WHERE key = 'audit_head'`).Scan(&h); err != nil {
		return 0, nil, err
	}
	count, err := strconv.ParseInt(c, 10, 64)
	if err != nil {
		return 0, nil, fmt.Errorf("the audit head count %q is not a number", c)
	}
	head, err := hex.DecodeString(h)
	if err != nil {
		return 0, nil, fmt.Errorf("the audit head hash %q is not hex", h)
	}
	return count, head, nil
}

func (s *sqliteStore) InstanceID() (string, error) {
	var id string
	err := s.db.QueryRow(`SELECT value FROM meta WHERE key = 'instance_id'`).Scan(&id)
	return id, err
}

func (s *sqliteStore) Intake(r *HeldRecord, w *Wrap, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error {
		res, err := tx.Exec(`INSERT INTO records(file_id, owner_fingerprint, owner_token_label, owner_token_serial,
			description, created, intake_time, authority_key, status, record) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
			ON CONFLICT(file_id) DO NOTHING`,
			r.FileID, r.OwnerFingerprint, r.OwnerTokenLabel, r.OwnerTokenSerial, r.Description, r.Created,
			r.IntakeTime, r.AuthorityKey, r.Status, r.Record)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n == 0 {
			return ErrExists
		}
		return insertWrap(tx, w)
	})
}

func insertWrap(tx *sql.Tx, w *Wrap) error {
	_, err := tx.Exec(`INSERT INTO wraps(file_id, key_fingerprint, oaep_hash, wrapped, added) VALUES (?, ?, ?, ?, ?)`,
		w.FileID, w.KeyFingerprint, w.OAEPHash, w.Wrapped, w.Added)
	return err
}

const recordColumns = `file_id, owner_fingerprint, owner_token_label, owner_token_serial, description, created,
	intake_time, authority_key, status, record`

func scanRecord(row interface{ Scan(...any) error }) (*HeldRecord, error) {
	r := &HeldRecord{}
	err := row.Scan(&r.FileID, &r.OwnerFingerprint, &r.OwnerTokenLabel, &r.OwnerTokenSerial, &r.Description,
		&r.Created, &r.IntakeTime, &r.AuthorityKey, &r.Status, &r.Record)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

func (s *sqliteStore) Record(fileID string) (*HeldRecord, error) {
	return scanRecord(s.db.QueryRow(`SELECT `+recordColumns+` FROM records WHERE file_id = ?`, fileID))
}

func (s *sqliteStore) Records(f Filter) ([]*HeldRecord, error) {
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
	q := `SELECT ` + recordColumns + ` FROM records`
	if len(where) > 0 {
		q += " WHERE " + strings.Join(where, " AND ")
	}
	rows, err := s.db.Query(q+" ORDER BY intake_time, file_id", args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*HeldRecord
	for rows.Next() {
		r, err := scanRecord(rows)
		if err != nil {
			return nil, err
		}
		out = append(out, r)
	}
	return out, rows.Err()
}

func (s *sqliteStore) Wraps(fileID string) ([]*Wrap, error) {
	rows, err := s.db.Query(`SELECT file_id, key_fingerprint, oaep_hash, wrapped, added FROM wraps WHERE file_id = ? ORDER BY added`, fileID)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Wrap
	for rows.Next() {
		w := &Wrap{}
		if err := rows.Scan(&w.FileID, &w.KeyFingerprint, &w.OAEPHash, &w.Wrapped, &w.Added); err != nil {
			return nil, err
		}
		out = append(out, w)
	}
	return out, rows.Err()
}

func (s *sqliteStore) PendingRewrap(to string) ([]string, error) {
	rows, err := s.db.Query(`SELECT file_id FROM records WHERE file_id NOT IN
		(SELECT file_id FROM wraps WHERE key_fingerprint = ?) ORDER BY file_id`, to)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []string
	for rows.Next() {
		var id string
		if err := rows.Scan(&id); err != nil {
			return nil, err
		}
		out = append(out, id)
	}
	return out, rows.Err()
}

func (s *sqliteStore) AddWrap(w *Wrap, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error {
		if err := insertWrap(tx, w); err != nil {
			return err
		}
		_, err := tx.Exec(`UPDATE records SET authority_key = ? WHERE file_id = ?`, w.KeyFingerprint, w.FileID)
		return err
	})
}

func (s *sqliteStore) AuthorityKeys() ([]*AuthorityKey, error) {
	rows, err := s.db.Query(`SELECT fingerprint, label, tag, oaep_hash, public_key, created, state FROM authority_keys ORDER BY created, label`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*AuthorityKey
	for rows.Next() {
		k := &AuthorityKey{}
		if err := rows.Scan(&k.Fingerprint, &k.Label, &k.Tag, &k.OAEPHash, &k.PublicKey, &k.Created, &k.State); err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	return out, rows.Err()
}

func (s *sqliteStore) AddAuthorityKey(k *AuthorityKey, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error {
		var n int
		if err := tx.QueryRow(`SELECT COUNT(*) FROM authority_keys WHERE fingerprint = ? OR label = ?`, k.Fingerprint, k.Label).Scan(&n); err != nil {
			return err
		}
		if n > 0 {
			return ErrExists
		}
		if _, err := tx.Exec(`UPDATE authority_keys SET state = 'previous' WHERE state = 'current'`); err != nil {
			return err
		}
		_, err := tx.Exec(`INSERT INTO authority_keys(fingerprint, label, tag, oaep_hash, public_key, created, state)
			VALUES (?, ?, ?, ?, ?, ?, 'current')`, k.Fingerprint, k.Label, k.Tag, k.OAEPHash, k.PublicKey, k.Created)
		return err
	})
}

func (s *sqliteStore) RetireKey(fingerprint string, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error {
		var n int
		err := tx.QueryRow(`SELECT COUNT(*) FROM records r WHERE NOT EXISTS (
			SELECT 1 FROM wraps w JOIN authority_keys k ON k.fingerprint = w.key_fingerprint
			WHERE w.file_id = r.file_id AND k.state != 'retired' AND k.fingerprint != ?)`, fingerprint).Scan(&n)
		if err != nil {
			return err
		}
		if n > 0 {
			return fmt.Errorf("%w: %d record(s) are wrapped under no other key", ErrInUse, n)
		}
		_, err = tx.Exec(`UPDATE authority_keys SET state = 'retired' WHERE fingerprint = ?`, fingerprint)
		return err
	})
}

func (s *sqliteStore) AddOfficer(o *Officer, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error { return insertOfficer(tx, o) })
}

func insertOfficer(tx *sql.Tx, o *Officer) error {
	var n int
	if err := tx.QueryRow(`SELECT COUNT(*) FROM officers WHERE fingerprint = ? OR name = ?`, o.Fingerprint, o.Name).Scan(&n); err != nil {
		return err
	}
	if n > 0 {
		return ErrExists
	}
	_, err := tx.Exec(`INSERT INTO officers(fingerprint, name, algorithm, public_key, added) VALUES (?, ?, ?, ?, ?)`,
		o.Fingerprint, o.Name, o.Algorithm, o.PublicKey, o.Added)
	return err
}

func (s *sqliteStore) Officers() ([]*Officer, error) {
	rows, err := s.db.Query(`SELECT fingerprint, name, algorithm, public_key, added FROM officers ORDER BY name`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*Officer
	for rows.Next() {
		o := &Officer{}
		if err := rows.Scan(&o.Fingerprint, &o.Name, &o.Algorithm, &o.PublicKey, &o.Added); err != nil {
			return nil, err
		}
		out = append(out, o)
	}
	return out, rows.Err()
}

func (s *sqliteStore) Approvals() (int, error) {
	var v string
	if err := s.db.QueryRow(`SELECT value FROM meta WHERE key = 'approvals'`).Scan(&v); err != nil {
		return 0, err
	}
	return strconv.Atoi(v)
}

func (s *sqliteStore) SetApprovals(n int, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error { return setApprovals(tx, n) })
}

func setApprovals(tx *sql.Tx, n int) error {
	_, err := tx.Exec(`UPDATE meta SET value = ? WHERE key = 'approvals'`, strconv.Itoa(n))
	return err
}

func (s *sqliteStore) AddChangeRequest(r *StoredRequest, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO change_requests(id, state, created, canonical) VALUES (?, 'open', ?, ?)`,
			r.ID, r.Created, r.Canonical)
		return err
	})
}

func (s *sqliteStore) ChangeRequest(id string) (*StoredRequest, error) {
	r := &StoredRequest{}
	err := s.db.QueryRow(`SELECT id, state, created, canonical FROM change_requests WHERE id = ?`, id).
		Scan(&r.ID, &r.State, &r.Created, &r.Canonical)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

func (s *sqliteStore) ApplyChange(requestID string, g Governance, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error {
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

func (s *sqliteStore) AddRequest(r *StoredRequest, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error {
		_, err := tx.Exec(`INSERT INTO requests(id, file_id, state, created, canonical) VALUES (?, ?, 'open', ?, ?)`,
			r.ID, r.FileID, r.Created, r.Canonical)
		return err
	})
}

func (s *sqliteStore) Request(id string) (*StoredRequest, error) {
	r := &StoredRequest{}
	err := s.db.QueryRow(`SELECT id, file_id, state, created, canonical FROM requests WHERE id = ?`, id).
		Scan(&r.ID, &r.FileID, &r.State, &r.Created, &r.Canonical)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, ErrNotFound
	}
	return r, err
}

func (s *sqliteStore) Recovered(requestID string, ev Event) error {
	return s.update(ev, func(tx *sql.Tx) error {
		res, err := tx.Exec(`UPDATE requests SET state = 'used' WHERE id = ? AND state = 'open'`, requestID)
		if err != nil {
			return err
		}
		if n, _ := res.RowsAffected(); n != 1 {
			return fmt.Errorf("request %s was already used", requestID)
		}
		_, err = tx.Exec(`UPDATE records SET status = 'recovered' WHERE file_id = (SELECT file_id FROM requests WHERE id = ?)`, requestID)
		return err
	})
}

func (s *sqliteStore) Log(ev Event) error { return s.update(ev, nil) }

func (s *sqliteStore) Audit() ([]*AuditEntry, error) {
	rows, err := s.db.Query(`SELECT seq, time, actor, action, details, prev_hash, hash FROM audit ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	var out []*AuditEntry
	for rows.Next() {
		e := &AuditEntry{}
		if err := rows.Scan(&e.Seq, &e.Time, &e.Actor, &e.Action, &e.Details, &e.PrevHash, &e.Hash); err != nil {
			return nil, err
		}
		out = append(out, e)
	}
	return out, rows.Err()
}

func (s *sqliteStore) AuditHead() (int64, []byte, error) { return readHead(s.db) }

// IntegrityCheck runs PRAGMA integrity_check and returns its verdict ("ok" when sound).
func IntegrityCheck(st Store) (string, error) {
	s, ok := st.(*sqliteStore)
	if !ok {
		return "", errors.New("integrity_check is a SQLite check")
	}
	var v string
	err := s.db.QueryRow(`PRAGMA integrity_check`).Scan(&v)
	return v, err
}

// BackupSQLite writes a consistent copy of the store to path (VACUUM INTO), even while other
// processes use the database. path must not exist or be an empty file.
func BackupSQLite(st Store, path string) error {
	s, ok := st.(*sqliteStore)
	if !ok {
		return errors.New("this backup is for the SQLite store")
	}
	_, err := s.db.Exec(`VACUUM INTO ?`, path)
	return err
}
