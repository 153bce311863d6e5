package store

import (
	"bytes"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"sort"
	"strconv"
	"strings"
)

const auditFormat = "p11escrow-audit/v1"

// AuditEntry is one line of the hash-chained audit log (README, "Audit"; FORMAT.md section 12).
// Hash is SHA-256(PrevHash || canonical(Seq, Time, Actor, Action, Details[, State])); PrevHash is
// the previous entry's Hash, 32 zero bytes for the first. Changing, removing, inserting or
// reordering any entry breaks the chain at that entry or at the head kept beside the log.
type AuditEntry struct {
	Seq      int64  `json:"seq"`
	Time     string `json:"time"`
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	Details  string `json:"details"`
	PrevHash []byte `json:"prev_hash"`
	Hash     []byte `json:"hash"`
	// State binds the rows the entry's change wrote to the chain: one line per row,
	// "TABLE KEY ROWHASH" (ROWHASH in hex, or "-" for a deleted row), sorted. Empty for entries
	// that change no bound row, and for entries written before it existed.
	State string `json:"state,omitempty"`
}

// ComputeHash returns the hash the entry must have. The encoding is length-prefixed like the
// record binding, so no two different entries share it. State is a last field when present, so
// entries written before it existed keep their hashes.
func (e *AuditEntry) ComputeHash() []byte {
	var b bytes.Buffer
	b.Write(e.PrevHash)
	b.WriteString(auditFormat + "\n")
	fields := []string{strconv.FormatInt(e.Seq, 10), e.Time, e.Actor, e.Action, e.Details}
	if e.State != "" {
		fields = append(fields, e.State)
	}
	for _, f := range fields {
		binary.Write(&b, binary.BigEndian, uint32(len(f)))
		b.WriteString(f)
	}
	sum := sha256.Sum256(b.Bytes())
	return sum[:]
}

// AuditError names the first entry where the log stops being trustworthy.
type AuditError struct {
	Seq    int64
	Reason string
}

func (e *AuditError) Error() string {
	return fmt.Sprintf("the audit log is broken at entry %d: %s", e.Seq, e.Reason)
}

// VerifyChain checks entries (in the store's order) against each other and against the head.
// It returns the number of entries verified, or an *AuditError for the first bad one.
func VerifyChain(entries []*AuditEntry, count int64, head []byte) (int64, error) {
	prev := make([]byte, sha256.Size)
	for i, e := range entries {
		want := int64(i + 1)
		switch {
		case e.Seq != want:
			return 0, &AuditError{Seq: want, Reason: fmt.Sprintf("the next entry is numbered %d (entries were deleted, inserted or reordered)", e.Seq)}
		case !bytes.Equal(e.PrevHash, prev):
			return 0, &AuditError{Seq: want, Reason: "it does not follow the previous entry's hash (an entry before it was deleted, inserted or reordered)"}
		case !bytes.Equal(e.ComputeHash(), e.Hash):
			return 0, &AuditError{Seq: want, Reason: "its contents do not match its hash (it was edited)"}
		}
		prev = e.Hash
	}
	n := int64(len(entries))
	if n != count {
		return 0, &AuditError{Seq: min(n, count) + 1, Reason: fmt.Sprintf("the log has %d entries but its head says %d (entries at the end were deleted or added)", n, count)}
	}
	if n > 0 && !bytes.Equal(prev, head) {
		return 0, &AuditError{Seq: n, Reason: "the last entry's hash differs from the head (the end of the log was replaced)"}
	}
	return n, nil
}

// StateError says that a row that decides recoveries differs from what the audit log last
// recorded for it: someone changed the database without p11escrow.
type StateError struct {
	Table, Key string
	Seq        int64 // the entry that last recorded the row; 0 if none did
	Reason     string
}

func (e *StateError) Error() string {
	if e.Seq == 0 {
		return fmt.Sprintf("the database was changed outside p11escrow: %s row %s %s", e.Table, e.Key, e.Reason)
	}
	return fmt.Sprintf("the database was changed outside p11escrow: %s row %s %s (last recorded by audit entry %d)", e.Table, e.Key, e.Reason, e.Seq)
}

// VerifyState checks the current rows of the bound tables (current: "TABLE KEY" to the row's
// digest, as AuditSnapshot.State holds it) against the last state each audit entry recorded for them. A
// row changed, inserted or deleted without an audit entry is reported as a *StateError. Call it
// only on entries that VerifyChain accepted.
func VerifyState(entries []*AuditEntry, current map[string][]byte) error {
	type last struct {
		hash string
		seq  int64
	}
	recorded := map[string]last{}
	for _, e := range entries {
		for _, line := range strings.Split(e.State, "\n") {
			if line == "" {
				continue
			}
			i := strings.LastIndexByte(line, ' ')
			if i < 0 {
				return &AuditError{Seq: e.Seq, Reason: "its state line is malformed"}
			}
			recorded[line[:i]] = last{line[i+1:], e.Seq}
		}
	}
	keys := make([]string, 0, len(current))
	for k := range current {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		table, key, _ := strings.Cut(k, " ")
		r, ok := recorded[k]
		switch {
		case !ok || r.hash == "-":
			return &StateError{Table: table, Key: key, Reason: "has no audit entry (it was inserted outside p11escrow)"}
		case subtle.ConstantTimeCompare([]byte(r.hash), []byte(hex.EncodeToString(current[k]))) != 1:
			return &StateError{Table: table, Key: key, Seq: r.seq, Reason: "differs from what the audit log recorded (it was edited)"}
		}
	}
	for k, r := range recorded {
		if _, ok := current[k]; !ok && r.hash != "-" {
			table, key, _ := strings.Cut(k, " ")
			return &StateError{Table: table, Key: key, Seq: r.seq, Reason: "is missing (it was deleted)"}
		}
	}
	return nil
}
