package store

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"
)

// BoundTable is a table whose rows decide recoveries. Each row is named by its key columns
// joined by spaces (no key column holds a space), and rows for which Skip (an SQL condition,
// %[1]s standing for the row prefix, such as "NEW.") holds are not bound.
type BoundTable struct {
	Name string
	Key  []string
	Skip string
}

// BoundTables are the state bound to the audit chain, the same in every backend: policy and
// instance ID (meta, but not the audit head, which the chain itself checks), authority keys,
// records and their wraps, officers, and recovery and change requests. A new table that decides
// recoveries belongs here.
var BoundTables = []BoundTable{
	{"meta", []string{"key"}, "%[1]skey IN ('audit_count', 'audit_head')"},
	{"authority_keys", []string{"fingerprint"}, ""},
	{"records", []string{"file_id", "commitment"}, ""},
	{"wraps", []string{"file_id", "commitment", "key_fingerprint"}, ""},
	{"officers", []string{"fingerprint"}, ""},
	{"requests", []string{"id"}, ""},
	{"change_requests", []string{"id"}, ""},
}

// Table returns the bound table called name, and false if there is none.
func Table(name string) (BoundTable, bool) {
	for _, t := range BoundTables {
		if t.Name == name {
			return t, true
		}
	}
	return BoundTable{}, false
}

// KeyExpr is the SQL text of a row's key (its key columns joined by spaces), for the row
// prefix p ("NEW.", "OLD." or "").
func (t BoundTable) KeyExpr(p string) string {
	parts := make([]string, len(t.Key))
	for i, k := range t.Key {
		parts[i] = p + k
	}
	return strings.Join(parts, " || ' ' || ")
}

// SelectAll is the query of every bound row of the table.
func (t BoundTable) SelectAll() string {
	q := `SELECT * FROM ` + t.Name
	if t.Skip != "" {
		q += ` WHERE NOT (` + fmt.Sprintf(t.Skip, "") + `)`
	}
	return q
}

// RowKey returns a row's key from its column names and values.
func (t BoundTable) RowKey(cols []string, vals []any) string {
	var parts []string
	for _, k := range t.Key {
		for i, c := range cols {
			if c == k {
				parts = append(parts, fmt.Sprint(vals[i]))
			}
		}
	}
	return strings.Join(parts, " ")
}

// RowDigest is a bound row's digest: SHA-256 of a length-prefixed encoding of the table name
// and every non-NULL column's name, type and value, so a column added later as NULL leaves older
// rows' digests alone. Values are as a database driver scans them: []byte for blobs, string for
// text, int64 for integers. Every backend must hand it the same values for the same row.
func RowDigest(table string, cols []string, vals []any) []byte {
	h := sha256.New()
	field := func(tag byte, b []byte) {
		var n [5]byte
		n[0] = tag
		binary.BigEndian.PutUint32(n[1:], uint32(len(b)))
		h.Write(n[:])
		h.Write(b)
	}
	h.Write([]byte("p11escrow-row/v1\n"))
	field('n', []byte(table))
	for i, v := range vals {
		if v == nil {
			continue
		}
		field('c', []byte(cols[i]))
		switch v := v.(type) {
		case []byte:
			field('b', v)
		case string:
			field('t', []byte(v))
		case int64:
			field('i', []byte(strconv.FormatInt(v, 10)))
		default:
			field('o', []byte(fmt.Sprint(v)))
		}
	}
	return h.Sum(nil)
}

// StateLine is one line of an entry's State: the row "TABLE KEY" and its digest, or "-" for a
// row that no longer exists (digest nil).
func StateLine(table, key string, digest []byte) string {
	h := "-"
	if digest != nil {
		h = hex.EncodeToString(digest)
	}
	return table + " " + key + " " + h
}

// StateText joins state lines in the one order an entry records them.
func StateText(lines []string) string {
	sort.Strings(lines)
	return strings.Join(lines, "\n")
}

// AllState is the State text that records every row of state ("TABLE KEY" to digest, as
// AuditSnapshot.State holds it): the entry a migration writes after rewriting bound rows.
func AllState(state map[string][]byte) string {
	lines := make([]string, 0, len(state))
	for k, d := range state {
		lines = append(lines, k+" "+hex.EncodeToString(d))
	}
	return StateText(lines)
}

// NextEntry is the entry that appends ev, with the state lines of the rows its change wrote, to
// a log of count entries whose last hash is head.
func NextEntry(count int64, head []byte, ev Event, state string) *AuditEntry {
	e := &AuditEntry{Seq: count + 1, Time: ev.Time.UTC().Format(time.RFC3339Nano), Actor: ev.Actor,
		Action: ev.Action, Details: ev.Details, PrevHash: head, State: state}
	e.Hash = e.ComputeHash()
	return e
}
