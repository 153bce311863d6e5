package escrow

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"

	"github.com/p11escrow/p11escrow/escrow/internal/strictjson"
)

const receiptFormat = "p11escrow-receipt/v1"

// Receipt is the authority's signed statement that it verified and holds one record (FORMAT.md
// section 14). The struct tags are the document's field table, read by strictjson.
type Receipt struct {
	Format        string `json:"format"`
	Authority     string `json:"authority"`      // the store's instance ID, 32 hex digits
	FileID        string `json:"file_id"`        // 32 hex digits
	KeyCommitment string `json:"key_commitment"` // as the core line writes it
	RecordSHA256  string `json:"record_sha256"`  // SHA-256 of the record as held, 64 hex digits
	IntakeTime    string `json:"intake_time"`    // when the authority verified it
	AuditSeq      int    `json:"audit_seq"`      // the audit entry that stored it
	Key           string `json:"key"`            // SHA-256 of the receipt key's PKIX DER, 64 hex digits
	Algorithm     string `json:"algorithm"`      // always AlgECDSAP256
	Signature     []byte `json:"signature" max:"128"`
}

// ReceiptError reports a receipt that is malformed, does not verify, or is for another file.
type ReceiptError struct{ Reason string }

func (e *ReceiptError) Error() string { return "the receipt is not valid: " + e.Reason }

// NewReceipt returns an unsigned receipt; Sign signs it.
func NewReceipt(authority, fileID, commitment string, record []byte, intakeTime string, auditSeq int) *Receipt {
	sum := sha256.Sum256(record)
	return &Receipt{Format: receiptFormat, Authority: authority, FileID: fileID, KeyCommitment: commitment,
		RecordSHA256: hex.EncodeToString(sum[:]), IntakeTime: intakeTime, AuditSeq: auditSeq, Algorithm: AlgECDSAP256}
}

// CanonicalBytes are the receipt-bytes that the receipt key signs (section 14.1).
func (r *Receipt) CanonicalBytes() []byte {
	return canonical(receiptFormat, []byte(r.Authority), []byte(r.FileID), []byte(r.KeyCommitment),
		[]byte(r.RecordSHA256), []byte(r.IntakeTime), []byte(strconv.Itoa(r.AuditSeq)), []byte(r.Key))
}

// SameStatement reports whether two receipts say the same thing (every field but the
// signature, which ECDSA makes afresh each time).
func (r *Receipt) SameStatement(o *Receipt) bool {
	return subtle.ConstantTimeCompare(r.CanonicalBytes(), o.CanonicalBytes()) == 1
}

// Sign signs the receipt with the authority's receipt key, an ECDSA P-256 key on its HSM, and
// checks the signature, so that a token that signs wrongly is caught before a receipt leaves.
func (r *Receipt) Sign(signer crypto.Signer) error {
	fpr, err := receiptKeyFingerprint(signer.Public())
	if err != nil {
		return err
	}
	r.Key = fpr
	d := sha256.Sum256(r.CanonicalBytes())
	sig, err := signer.Sign(rand.Reader, d[:], crypto.SHA256)
	if err != nil {
		return err
	}
	r.Signature = sig
	if err := r.Verify(signer.Public()); err != nil {
		return fmt.Errorf("the HSM's receipt signature does not verify: %v", err)
	}
	return nil
}

// Verify checks that the receipt is signed by pub, the authority's published receipt key.
func (r *Receipt) Verify(pub crypto.PublicKey) error {
	fpr, err := receiptKeyFingerprint(pub)
	if err != nil {
		return &ReceiptError{Reason: err.Error()}
	}
	if subtle.ConstantTimeCompare([]byte(fpr), []byte(r.Key)) != 1 {
		return &ReceiptError{Reason: "it names another receipt key than the one given"}
	}
	d := sha256.Sum256(r.CanonicalBytes())
	if !ecdsa.VerifyASN1(pub.(*ecdsa.PublicKey), d[:], r.Signature) {
		return &ReceiptError{Reason: "its signature does not verify with the receipt key"}
	}
	return nil
}

// MatchesFile checks that the receipt is for the file whose header is h: the same file ID and
// key commitment.
func (r *Receipt) MatchesFile(h *Header) error {
	if r.FileID != h.ID.String() {
		return &ReceiptError{Reason: fmt.Sprintf("it is for file %s, not for this file (%s)", r.FileID, h.ID)}
	}
	if subtle.ConstantTimeCompare([]byte(r.KeyCommitment), []byte(CommitmentText(h.Commitment))) != 1 {
		return &ReceiptError{Reason: "its key commitment is not this file's: it is for another file with the same file ID"}
	}
	return nil
}

// receiptKeyFingerprint checks that pub is an ECDSA P-256 key and returns its fingerprint.
func receiptKeyFingerprint(pub crypto.PublicKey) (string, error) {
	k, ok := pub.(*ecdsa.PublicKey)
	if !ok || k.Curve != elliptic.P256() {
		return "", errors.New("a receipt key is an ECDSA P-256 key")
	}
	fpr, err := FingerprintOf(pub)
	return fpr.String(), err
}

// Marshal encodes the receipt as indented JSON.
func (r *Receipt) Marshal() []byte {
	b, _ := json.MarshalIndent(r, "", "  ")
	return append(b, '\n')
}

// ParseReceipt decodes a receipt by the rules of section 5.1 and checks its fields' syntax. It
// authenticates nothing; see Verify.
func ParseReceipt(data []byte) (*Receipt, error) {
	r := &Receipt{}
	if err := strictjson.Unmarshal(data, r); err != nil {
		return nil, &ReceiptError{Reason: err.Error()}
	}
	if err := r.check(); err != nil {
		return nil, &ReceiptError{Reason: err.Error()}
	}
	return r, nil
}

func (r *Receipt) check() error {
	switch {
	case r.Format != receiptFormat:
		return fmt.Errorf("unknown receipt format %q", r.Format)
	case len(r.Authority) != 32 || !isLowerHex(r.Authority):
		return errors.New("authority is 32 lower-case hex digits")
	case len(r.RecordSHA256) != 64 || !isLowerHex(r.RecordSHA256), len(r.Key) != 64 || !isLowerHex(r.Key):
		return errors.New("record_sha256 and key are 64 lower-case hex digits")
	case r.Algorithm != AlgECDSAP256:
		return fmt.Errorf("algorithm is %q", AlgECDSAP256)
	}
	if _, err := ParseFileID(r.FileID); err != nil {
		return fmt.Errorf("file_id: %v", err)
	}
	if c, err := ParseCommitment(r.KeyCommitment); err != nil || CommitmentText(c) != r.KeyCommitment {
		return errors.New("key_commitment is 43 characters of unpadded base64")
	}
	if _, err := parseTime(r.IntakeTime); err != nil {
		return fmt.Errorf("intake_time: %v", err)
	}
	return nil
}
