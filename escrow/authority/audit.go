package authority

import (
	"bytes"
	"crypto/sha256"
	"encoding/binary"
	"fmt"
	"strconv"
)

const auditFormat = "p11escrow-audit/v1"

// AuditEntry is one line of the hash-chained audit log (README, "Audit"). Hash is
// SHA-256(PrevHash || canonical(Seq, Time, Actor, Action, Details)); PrevHash is the previous
// entry's Hash, 32 zero bytes for the first. Changing, removing, inserting or reordering any
// entry breaks the chain at that entry or at the head kept beside the log.
type AuditEntry struct {
	Seq      int64  `json:"seq"`
	Time     string `json:"time"`
	Actor    string `json:"actor"`
	Action   string `json:"action"`
	Details  string `json:"details"`
	PrevHash []byte `json:"prev_hash"`
	Hash     []byte `json:"hash"`
}

// ComputeHash returns the hash the entry must have. The encoding is length-prefixed like the
// record binding, so no two different entries share it.
func (e *AuditEntry) ComputeHash() []byte {
	var b bytes.Buffer
	b.Write(e.PrevHash)
	b.WriteString(auditFormat + "\n")
	for _, f := range []string{strconv.FormatInt(e.Seq, 10), e.Time, e.Actor, e.Action, e.Details} {
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
