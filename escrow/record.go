package escrow

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/p11escrow/p11escrow/escrow/internal/strictjson"
	"github.com/p11escrow/p11escrow/internal/safetext"
)

const recordFormat = "p11escrow-record/v1"

// Record is the escrow record sent to the backup authority (FORMAT.md section 5).
//
// The struct tags are the document's field table: strictjson reads them (FORMAT.md section 5.1).
// A field tagged `json:"name"` is required; `max` bounds its length in bytes.
type Record struct {
	Format      string          `json:"format"`
	FileID      string          `json:"file_id"`
	Description string          `json:"description" max:"1024"`
	Created     string          `json:"created"`
	Owner       RecordOwner     `json:"owner"`
	Authority   RecordAuthority `json:"authority"`
	Header      []byte          `json:"header" max:"65536"` // encoding/json writes []byte as padded base64
	Binding     RecordBinding   `json:"binding"`
}

// RecordOwner says who claims the file. Proving it is the authority's policy.
type RecordOwner struct {
	Fingerprint string `json:"fingerprint"`
	TokenLabel  string `json:"token_label" max:"128"`
	TokenSerial string `json:"token_serial" max:"128"`
}

// RecordAuthority repeats the header's authority stanza (FORMAT.md section 5). Its members
// depend on the stanza's type: an rsa-oaep stanza has no Type and a Hash; an ecdh stanza has
// Type "ecdh", a Curve and an Ephemeral point, and no Hash.
type RecordAuthority struct {
	Type       string `json:"type,omitempty"`
	KeyTag     string `json:"key_tag"`
	Hash       string `json:"hash,omitempty"`
	Curve      string `json:"curve,omitempty"`
	Ephemeral  []byte `json:"ephemeral,omitempty" max:"97"`
	WrappedKey []byte `json:"wrapped_key" max:"512"`
}

// recordAuthority is what a record says of an authority stanza: the one place that maps each
// stanza type to the record's members.
func recordAuthority(s *Stanza) (RecordAuthority, error) {
	t, err := ParseStanza(s)
	if err == nil && t == nil {
		err = fmt.Errorf("a %s stanza cannot be escrowed", safetext.Quote(s.Type))
	}
	if err != nil {
		return RecordAuthority{}, err
	}
	switch t := t.(type) {
	case *RSAStanza:
		return RecordAuthority{KeyTag: t.Tag(), Hash: t.HashName(), WrappedKey: t.Wrapped}, nil
	case *ECStanza:
		return RecordAuthority{Type: typeECDH, KeyTag: t.Tag(), Curve: t.Curve, Ephemeral: t.Ephemeral, WrappedKey: t.Wrapped}, nil
	}
	return RecordAuthority{}, fmt.Errorf("a %s stanza cannot be escrowed", safetext.Quote(s.Type))
}

// equal compares every member.
func (a RecordAuthority) equal(b RecordAuthority) bool {
	return a.Type == b.Type && a.KeyTag == b.KeyTag && a.Hash == b.Hash && a.Curve == b.Curve &&
		bytes.Equal(a.Ephemeral, b.Ephemeral) && bytes.Equal(a.WrappedKey, b.WrappedKey)
}

// check applies the member rules of each type: the members of the other type are absent.
func (a RecordAuthority) check() error {
	switch a.Type {
	case "":
		if a.Hash == "" || a.Curve != "" || a.Ephemeral != nil {
			return errors.New("an rsa-oaep authority has a hash, and no curve or ephemeral point")
		}
	case typeECDH:
		if a.Hash != "" || a.Curve == "" || a.Ephemeral == nil {
			return errors.New("an ecdh authority has a curve and an ephemeral point, and no hash")
		}
	default:
		return fmt.Errorf("unknown authority type %s", safetext.Quote(a.Type))
	}
	return nil
}

// RecordBinding is the GCM tag that ties the record's fields to the file key.
type RecordBinding struct {
	Nonce []byte `json:"nonce"`
	Tag   []byte `json:"tag"`
}

// NewRecord builds and binds the escrow record for a header written with key. The description
// and the owner's token label and serial are made valid text with safetext.Clean first
// (FORMAT.md section 5.1), so that the bytes bound are exactly the bytes written, and the record
// is checked with ParseRecord, so that every record it returns is one that readers accept.
func NewRecord(h *Header, key FileKey, description string, owner RecordOwner, created time.Time) (*Record, error) {
	auth, err := h.authority()
	if err != nil {
		return nil, err
	}
	r := &Record{
		Format:      recordFormat,
		FileID:      h.ID.String(),
		Description: safetext.Clean(description),
		Created:     formatTime(created),
		Owner: RecordOwner{Fingerprint: owner.Fingerprint,
			TokenLabel: safetext.Clean(owner.TokenLabel), TokenSerial: safetext.Clean(owner.TokenSerial)},
		Authority: auth,
		Header:    h.Marshal(),
		Binding:   RecordBinding{Nonce: make([]byte, 11)},
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
	if _, err := parseRecord(r.Marshal()); err != nil {
		return nil, fmt.Errorf("cannot make the escrow record: %v", err)
	}
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

// authority returns what a record says of the header's authority stanza (FORMAT.md section 5).
func (h *Header) authority() (RecordAuthority, error) {
	auth := h.stanza(RoleAuthority)
	if auth == nil {
		return RecordAuthority{}, errors.New("the header has no authority stanza")
	}
	return recordAuthority(auth)
}

// BindingInput returns record-bytes, the additional data of the binding tag.
func (r *Record) BindingInput() []byte {
	var b bytes.Buffer
	b.WriteString(recordFormat + "\n")
	a := r.Authority
	// The rsa-oaep fields are those of every record before EC keys; the ecdh ones start with the
	// type, which no OAEP hash name equals (FORMAT.md section 5).
	authority := [][]byte{[]byte(a.Hash), a.WrappedKey}
	if a.Type == typeECDH {
		authority = [][]byte{[]byte(typeECDH), []byte(a.Curve), a.Ephemeral, a.WrappedKey}
	}
	fields := [][]byte{
		[]byte(r.FileID), []byte(r.Description), []byte(r.Created),
		[]byte(r.Owner.Fingerprint), []byte(r.Owner.TokenLabel), []byte(r.Owner.TokenSerial),
		[]byte(a.KeyTag),
	}
	fields = append(append(fields, authority...), r.Header)
	for _, f := range fields {
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

// ParseRecord decodes a record by the rules of FORMAT.md section 5.1: exact member names, no
// unknown, duplicate or missing member, valid text, canonical base64 and times, and a header
// with nothing after it. It does not authenticate anything; see Verify.
func ParseRecord(data []byte) (*Record, error) {
	r, err := parseRecord(data)
	if err != nil {
		return nil, &RecordError{Reason: "it is not a valid escrow record: " + err.Error()}
	}
	return r, nil
}

func parseRecord(data []byte) (*Record, error) {
	r := &Record{}
	if err := strictjson.Unmarshal(data, r); err != nil {
		return nil, err
	}
	if err := r.check(); err != nil {
		return nil, err
	}
	return r, nil
}

// check checks the syntax of the fields that strictjson leaves to the document.
func (r *Record) check() error {
	if r.Format != recordFormat {
		return fmt.Errorf("unknown record format %s", safetext.Quote(r.Format))
	}
	if _, err := ParseFileID(r.FileID); err != nil {
		return fmt.Errorf("file_id: %v", err)
	}
	if _, err := parseTime(r.Created); err != nil {
		return fmt.Errorf("created: %v", err)
	}
	if len(r.Owner.Fingerprint) != 64 || !isLowerHex(r.Owner.Fingerprint) {
		return errors.New("owner.fingerprint is not 64 lower-case hex digits")
	}
	if err := r.Authority.check(); err != nil {
		return err
	}
	if len(r.Binding.Nonce) != 11 || len(r.Binding.Tag) != 16 {
		return errors.New("the binding has the wrong size")
	}
	br := bytes.NewReader(r.Header)
	_, rest, err := ParseHeader(br)
	if err != nil {
		return fmt.Errorf("header: %v", err)
	}
	if n, _ := rest.Read(make([]byte, 1)); n != 0 {
		return errors.New("header: bytes after the mac-line")
	}
	return nil
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
	auth, err := h.authority()
	if err != nil {
		return &RecordError{Reason: "its header: " + err.Error()}
	}
	if !auth.equal(r.Authority) {
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
