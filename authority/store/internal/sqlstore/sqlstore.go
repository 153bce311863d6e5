// Package sqlstore holds what the database/sql backends of the store share: the queries that
// need no parameters (whose placeholders differ between SQLite and PostgreSQL), the scanning of
// rows into the store's types, and the hashing of bound rows.
package sqlstore

import (
	"context"
	"database/sql"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/p11escrow/p11escrow/authority/store"
)

// Querier is a database or a transaction.
type Querier interface {
	QueryRow(query string, args ...any) *sql.Row
	Query(query string, args ...any) (*sql.Rows, error)
}

// At is db with ctx bounding each query, for the helpers that also run in a transaction (which
// is bound to its own ctx when it begins).
func At(ctx context.Context, db *sql.DB) Querier { return ctxDB{ctx, db} }

type ctxDB struct {
	ctx context.Context
	db  *sql.DB
}

func (c ctxDB) QueryRow(q string, args ...any) *sql.Row {
	return c.db.QueryRowContext(c.ctx, q, args...)
}

func (c ctxDB) Query(q string, args ...any) (*sql.Rows, error) {
	return c.db.QueryContext(c.ctx, q, args...)
}

// HashRows runs q on table t and returns each row's store.RowDigest by key.
func HashRows(db Querier, t store.BoundTable, q string, args ...any) (map[string][]byte, error) {
	rows, err := db.Query(q, args...)
	if err != nil {
		return nil, err
	}
	defer rows.Close()
	cols, err := rows.Columns()
	if err != nil {
		return nil, err
	}
	out := map[string][]byte{}
	vals := make([]any, len(cols))
	ptrs := make([]any, len(cols))
	for i := range vals {
		ptrs[i] = &vals[i]
	}
	for rows.Next() {
		if err := rows.Scan(ptrs...); err != nil {
			return nil, err
		}
		out[t.RowKey(cols, vals)] = store.RowDigest(t.Name, cols, vals)
	}
	return out, rows.Err()
}

// CurrentState hashes every row of every bound table, keyed "TABLE KEY".
func CurrentState(db Querier) (map[string][]byte, error) {
	all := map[string][]byte{}
	for _, t := range store.BoundTables {
		rows, err := HashRows(db, t, t.SelectAll())
		if err != nil {
			return nil, err
		}
		for k, d := range rows {
			all[t.Name+" "+k] = d
		}
	}
	return all, nil
}

// ReadHead reads the audit head kept in meta: the number of entries and the last hash.
func ReadHead(q Querier) (int64, []byte, error) {
	var c, h string
	if err := q.QueryRow(`SELECT value FROM meta WHERE key = 'audit_count'`).Scan(&c); err != nil {
		return 0, nil, err
	}
	if err := q.QueryRow(`SELECT value FROM meta WHERE key = 'audit_head'`).Scan(&h); err != nil {
		return 0, nil, err
	}
	return ParseHead(c, h)
}

// ParseHead reads the audit head from the values of its rows in meta.
func ParseHead(c, h string) (int64, []byte, error) {
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

// ReadAudit reads the whole audit log in order.
func ReadAudit(db Querier) ([]*store.AuditEntry, error) {
	rows, err := db.Query(`SELECT seq, time, actor, action, details, prev_hash, hash, state FROM audit ORDER BY seq`)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, func(e *store.AuditEntry) []any {
		return []any{&e.Seq, &e.Time, &e.Actor, &e.Action, &e.Details, &e.PrevHash, &e.Hash, &e.State}
	})
}

// Snapshot reads the log, its head and the bound state in tx, a read transaction that sees one
// instant.
func Snapshot(tx *sql.Tx) (*store.AuditSnapshot, error) {
	var err error
	snap := &store.AuditSnapshot{}
	if snap.Entries, err = ReadAudit(tx); err != nil {
		return nil, err
	}
	if snap.Count, snap.Head, err = ReadHead(tx); err != nil {
		return nil, err
	}
	if snap.State, err = CurrentState(tx); err != nil {
		return nil, err
	}
	return snap, nil
}

// InstanceID reads the store's instance ID.
func InstanceID(q Querier) (string, error) {
	var id string
	err := q.QueryRow(`SELECT value FROM meta WHERE key = 'instance_id'`).Scan(&id)
	return id, err
}

// ReceiptKey reads the registered receipt-signing key from meta (store.Store.ReceiptKey).
func ReceiptKey(q Querier) (string, []byte, error) {
	var label, pub sql.NullString
	err := q.QueryRow(`SELECT (SELECT value FROM meta WHERE key = 'receipt_key_label'),
		(SELECT value FROM meta WHERE key = 'receipt_key')`).Scan(&label, &pub)
	if err != nil {
		return "", nil, err
	}
	if !label.Valid || !pub.Valid {
		return "", nil, store.ErrNotFound
	}
	der, err := hex.DecodeString(pub.String)
	if err != nil {
		return "", nil, errors.New("the registered receipt key is not hex")
	}
	return label.String, der, nil
}

// Approvals reads the policy.
func Approvals(q Querier) (int, error) {
	var v string
	if err := q.QueryRow(`SELECT value FROM meta WHERE key = 'approvals'`).Scan(&v); err != nil {
		return 0, err
	}
	return strconv.Atoi(v)
}

// Governed is the one statement of the rule "a quorum is registered" (see Authority.Governed).
func Governed(q Querier) (bool, error) {
	var g bool
	err := q.QueryRow(`SELECT (SELECT COUNT(*) FROM officers) >=
		(SELECT CAST(value AS INTEGER) FROM meta WHERE key = 'approvals')`).Scan(&g)
	return g, err
}

// RefuseGoverned returns store.ErrGoverned once a quorum is registered. Inside the transaction
// that makes a direct change, which the backend serialises with every other change, it keeps
// concurrent direct changes from passing the check together.
func RefuseGoverned(tx Querier) error {
	g, err := Governed(tx)
	if err == nil && g {
		err = store.ErrGoverned
	}
	return err
}

// Officers lists the officers by name.
func Officers(q Querier) ([]*store.Officer, error) {
	rows, err := q.Query(`SELECT fingerprint, name, algorithm, public_key, added FROM officers ORDER BY name`)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, func(o *store.Officer) []any {
		return []any{&o.Fingerprint, &o.Name, &o.Algorithm, &o.PublicKey, &o.Added}
	})
}

// AuthorityKeys lists the authority keys, oldest first.
func AuthorityKeys(q Querier) ([]*store.AuthorityKey, error) {
	rows, err := q.Query(`SELECT fingerprint, label, tag, oaep_hash, public_key, created, state FROM authority_keys ORDER BY created, label`)
	if err != nil {
		return nil, err
	}
	return scanAll(rows, func(k *store.AuthorityKey) []any {
		return []any{&k.Fingerprint, &k.Label, &k.Tag, &k.OAEPHash, &k.PublicKey, &k.Created, &k.State}
	})
}

// WrapColumns are the columns ScanWraps reads.
const WrapColumns = `file_id, commitment, key_fingerprint, oaep_hash, wrapped, added`

// ScanWraps reads rows of WrapColumns.
func ScanWraps(rows *sql.Rows, err error) ([]*store.Wrap, error) {
	if err != nil {
		return nil, err
	}
	return scanAll(rows, func(w *store.Wrap) []any {
		return []any{&w.FileID, &w.Commitment, &w.KeyFingerprint, &w.OAEPHash, &w.Wrapped, &w.Added}
	})
}

// ScanRefs reads rows of file_id, commitment.
func ScanRefs(rows *sql.Rows, err error) ([]store.RecordRef, error) {
	if err != nil {
		return nil, err
	}
	refs, err := scanAll(rows, func(r *store.RecordRef) []any { return []any{&r.FileID, &r.Commitment} })
	out := make([]store.RecordRef, len(refs))
	for i, r := range refs {
		out[i] = *r
	}
	return out, err
}

// ListColumns are what listing records needs: everything but the record bytes, which can be
// large and are read only for the one record an operation uses. The last counts the other
// records held under the same file ID.
const ListColumns = `file_id, commitment, owner_fingerprint, owner_token_label, owner_token_serial,
	description, created, intake_time, authority_key, status,
	(SELECT COUNT(*) - 1 FROM records o WHERE o.file_id = records.file_id)`

// ScanRecord reads one row of ListColumns, and of record too if withBytes. No row is
// store.ErrNotFound.
func ScanRecord(row interface{ Scan(...any) error }, withBytes bool) (*store.HeldRecord, error) {
	r := &store.HeldRecord{}
	err := row.Scan(recordDest(r, withBytes)...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return r, err
}

// ScanRecords reads rows as ScanRecord does.
func ScanRecords(rows *sql.Rows, err error, withBytes bool) ([]*store.HeldRecord, error) {
	if err != nil {
		return nil, err
	}
	return scanAll(rows, func(r *store.HeldRecord) []any { return recordDest(r, withBytes) })
}

func recordDest(r *store.HeldRecord, withBytes bool) []any {
	dest := []any{&r.FileID, &r.Commitment, &r.OwnerFingerprint, &r.OwnerTokenLabel, &r.OwnerTokenSerial,
		&r.Description, &r.Created, &r.IntakeTime, &r.AuthorityKey, &r.Status, &r.SameID}
	if withBytes {
		dest = append(dest, &r.Record)
	}
	return dest
}

// ScanRequest reads one row of id, file_id, commitment, state, created, canonical (or, for a
// change request, id, state, created, canonical: change true). No row is store.ErrNotFound.
func ScanRequest(row *sql.Row, change bool) (*store.StoredRequest, error) {
	r := &store.StoredRequest{}
	dest := []any{&r.ID, &r.FileID, &r.Commitment, &r.State, &r.Created, &r.Canonical}
	if change {
		dest = []any{&r.ID, &r.State, &r.Created, &r.Canonical}
	}
	err := row.Scan(dest...)
	if errors.Is(err, sql.ErrNoRows) {
		return nil, store.ErrNotFound
	}
	return r, err
}

// scanAll reads every row into a new T, through the destinations dest gives.
func scanAll[T any](rows *sql.Rows, dest func(*T) []any) ([]*T, error) {
	defer rows.Close()
	var out []*T
	for rows.Next() {
		v := new(T)
		if err := rows.Scan(dest(v)...); err != nil {
			return nil, err
		}
		out = append(out, v)
	}
	return out, rows.Err()
}

// AuditLog appends entries to the audit log inside a transaction that holds the audit head (a
// SQLite IMMEDIATE transaction, or PostgreSQL's row lock): the head is read once, by the caller,
// and moved once, by MoveHead after the last append. Both backends append through it; Exec runs
// (or, in a pipelined batch, queues) one statement written with "?" placeholders, which Rebind
// turns into the backend's own.
type AuditLog struct {
	Exec     func(query string, args ...any) error
	Rebind   func(query string) string
	Count    int64  // entries, the last appended included
	Head     []byte // the last entry's hash
	Appended int    // entries appended in this transaction
}

// AppendState chains ev, with the state lines of the rows its change wrote, to the head, and
// returns its sequence number.
func (l *AuditLog) AppendState(ev store.Event, state string) (int64, error) {
	e := store.NextEntry(l.Count, l.Head, ev, state)
	if err := l.Exec(l.Rebind(`INSERT INTO audit(seq, time, actor, action, details, prev_hash, hash, state) VALUES (?, ?, ?, ?, ?, ?, ?, ?)`),
		e.Seq, e.Time, e.Actor, e.Action, e.Details, e.PrevHash, e.Hash, e.State); err != nil {
		return 0, err
	}
	l.Count, l.Head = e.Seq, e.Hash
	l.Appended++
	return e.Seq, nil
}

// MoveHead writes the head after the last append.
func (l *AuditLog) MoveHead() error {
	return l.Exec(l.Rebind(`UPDATE meta SET value = CASE key WHEN 'audit_count' THEN ? ELSE ? END WHERE key IN ('audit_count', 'audit_head')`),
		strconv.FormatInt(l.Count, 10), hex.EncodeToString(l.Head))
}

// Question leaves SQLite's "?" placeholders as they are.
func Question(q string) string { return q }

// Dollar numbers the "?" placeholders of q as PostgreSQL's $1, $2, ...; q must hold no "?"
// other than placeholders (the store's own statements hold none).
func Dollar(q string) string {
	var b strings.Builder
	n := 0
	for _, r := range q {
		if r == '?' {
			n++
			fmt.Fprintf(&b, "$%d", n)
			continue
		}
		b.WriteRune(r)
	}
	return b.String()
}
