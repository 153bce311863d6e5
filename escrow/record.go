package escrow

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"time"
)

const recordFormat = "p11escrow-record/v1"

// Record is the escrow record sent to the backup authority (FORMAT.md section 5).
type Record struct {
	Format      string          `json:"format"`
	FileID      string          `json:"file_id"`
	Description string          `json:"description"`
	Created     string          `json:"created"`
	Owner       RecordOwner     `json:"owner"`
	Authority   RecordAuthority `json:"authority"`
	Header      []byte          `json:"header"` // encoding/json writes []byte as padded base64
	Binding     RecordBinding   `json:"binding"`
}

// RecordOwner says who claims the file. Proving it is the authority's policy.
type RecordOwner struct {
	Fingerprint string `json:"fingerprint"`
	TokenLabel  string `json:"token_label"`
	TokenSerial string `json:"token_serial"`
}

// RecordAuthority repeats the header's authority stanza.
type RecordAuthority struct {
	KeyTag     string `json:"key_tag"`
	Hash       string `json:"hash"`
	WrappedKey []byte `json:"wrapped_key"`
}

// RecordBinding is the GCM tag that ties the record's fields to the file key.
type RecordBinding struct {
	Nonce []byte `json:"nonce"`
	Tag   []byte `json:"tag"`
}

// NewRecord builds and binds the escrow record for a header written with key.
func NewRecord(h *Header, key FileKey, description string, owner RecordOwner, created time.Time) (*Record, error) {
	auth := h.stanza(RoleAuthority)
	if auth == nil {
		return nil, fmt.Errorf("the header has no authority stanza")
	}
	r := &Record{
		Format:      recordFormat,
		FileID:      h.ID.String(),
		Description: description,
		Created:     created.UTC().Format(time.RFC3339),
		Owner:       owner,
		Authority:   RecordAuthority{KeyTag: auth.Args[1], Hash: auth.Args[0], WrappedKey: auth.Body},
		Header:      h.Marshal(),
		Binding:     RecordBinding{Nonce: make([]byte, 11)},
	}
	rand.Read(r.Binding.Nonce)
	value, err := key.Value()
	if err != nil {
		return nil, err
	}
	defer clear(value)
	if len(value) != fileKeySize {
		return nil, fmt.Errorf("the file key is not 32 bytes")
	}
	r.Binding.Tag = r.bind(value)
	return r, nil
}

// stanza returns the header's stanza with role, or nil.
func (h *Header) stanza(role Role) *Stanza {
	for _, s := range h.Stanzas {
		if StanzaRole(s) == role {
			return s
		}
	}
	return nil
}

// BindingInput returns record-bytes, the additional data of the binding tag.
func (r *Record) BindingInput() []byte {
	var b bytes.Buffer
	b.WriteString(recordFormat + "\n")
	for _, f := range [][]byte{
		[]byte(r.FileID), []byte(r.Description), []byte(r.Created),
		[]byte(r.Owner.Fingerprint), []byte(r.Owner.TokenLabel), []byte(r.Owner.TokenSerial),
		[]byte(r.Authority.KeyTag), []byte(r.Authority.Hash), r.Authority.WrappedKey, r.Header,
	} {
		binary.Write(&b, binary.BigEndian, uint32(len(f)))
		b.Write(f)
	}
	return b.Bytes()
}

// BindingNonce returns the 12-byte GCM nonce of the binding tag.
func (r *Record) BindingNonce() []byte {
	return append(append([]byte(nil), r.Binding.Nonce...), nonceRecord)
}

func (r *Record) bind(key []byte) []byte {
	tag := gmac(newAEAD(key), r.BindingNonce(), r.BindingInput())
	return tag[:]
}

// Marshal encodes the record as indented JSON.
func (r *Record) Marshal() []byte {
	b, _ := json.MarshalIndent(r, "", "  ")
	return append(b, '\n')
}

// ParseRecord decodes a record strictly: unknown fields, trailing data and wrong sizes are errors.
// It does not authenticate anything; see Verify.
func ParseRecord(data []byte) (*Record, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	r := &Record{}
	if err := dec.Decode(r); err != nil {
		return nil, &RecordError{Reason: "it is not a valid escrow record: " + err.Error()}
	}
	if dec.More() {
		return nil, &RecordError{Reason: "trailing data after the record"}
	}
	if r.Format != recordFormat {
		return nil, &RecordError{Reason: fmt.Sprintf("unknown record format %q", r.Format)}
	}
	if len(r.Binding.Nonce) != 11 || len(r.Binding.Tag) != 16 {
		return nil, &RecordError{Reason: "the binding has the wrong size"}
	}
	return r, nil
}

// Verify unwraps the file key through the record's authority stanza with id, and checks that the
// record opens its own header and that every field is bound to that key. It returns the
// authenticated header.
func (r *Record) Verify(id Identity) (*Header, error) {
	h, auth, err := r.AuthorityStanza()
	if err != nil {
		return nil, err
	}
	key, err := id.Unwrap([]*Stanza{auth})
	if err != nil {
		return nil, err
	}
	defer clear(key)
	k, err := newMemKey(key)
	if err != nil {
		return nil, &RecordError{Reason: "the wrapped key is not 32 bytes"}
	}
	// The same checks, in the same order, as the authority's token makes.
	if err := r.VerifyOn(h, k); err != nil {
		return nil, err
	}
	return h, nil
}

// matchHeader checks the fields that the record repeats from its header.
func (r *Record) matchHeader(h *Header) error {
	if h.ID.String() != r.FileID {
		return &RecordError{Reason: "its file ID differs from its header's"}
	}
	auth := h.stanza(RoleAuthority)
	if auth == nil {
		return &RecordError{Reason: "its header has no authority stanza"}
	}
	if auth.Args[1] != r.Authority.KeyTag || auth.Args[0] != r.Authority.Hash ||
		!bytes.Equal(auth.Body, r.Authority.WrappedKey) {
		return &RecordError{Reason: "its wrapped key differs from its header's authority stanza"}
	}
	return nil
}

// MatchesFile reports whether the record is for the file whose header is h: same file ID and key
// commitment. It needs no key.
func (r *Record) MatchesFile(h *Header) error {
	rh, _, err := ParseHeader(bytes.NewReader(r.Header))
	if err != nil {
		return &RecordError{Reason: "its header: " + err.Error()}
	}
	if rh.ID != h.ID || rh.Commitment != h.Commitment {
		return &RecordError{Reason: fmt.Sprintf("it is for file %s, not %s", rh.ID, h.ID)}
	}
	return nil
}
