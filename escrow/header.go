package escrow

import (
	"bufio"
	"bytes"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io"
	"strconv"
	"strings"

	"github.com/p11escrow/p11escrow/escrow/internal/stream"
)

// Format limits, from FORMAT.md section 2.
const (
	versionLine   = "p11escrow/v1"
	magicPrefix   = "p11escrow/" // what every version's first line starts with
	chunkSize     = stream.ChunkSize
	maxHeaderSize = 65536
	maxStanzas    = 32
	bodyColumns   = 64
	macPrefix     = "---"
	stanzaPrefix  = "->"
)

// b64 is the only base64 flavour in the format: standard alphabet, no padding, strict.
var b64 = base64.RawStdEncoding.Strict()

// FileID is the random 16-byte identifier of a file, and the serial number of its file key.
type FileID [16]byte

// String returns the file ID as 32 lower-case hex digits.
func (id FileID) String() string { return hex.EncodeToString(id[:]) }

// ParseFileID parses 32 lower-case hex digits.
func ParseFileID(s string) (FileID, error) {
	var id FileID
	if len(s) != 2*len(id) || strings.ToLower(s) != s {
		return id, fmt.Errorf("a file ID is 32 lower-case hex digits, not %q", s)
	}
	if _, err := hex.Decode(id[:], []byte(s)); err != nil {
		return id, fmt.Errorf("a file ID is 32 lower-case hex digits, not %q", s)
	}
	return id, nil
}

// Stanza is one recipient's wrapped copy of the file key, as in age.
type Stanza struct {
	Type string
	Args []string
	Body []byte
}

// Header is a parsed file header. Core fields never change for the life of the payload;
// Stanzas and the MAC can be re-issued.
type Header struct {
	ID         FileID
	Commitment [32]byte
	Stanzas    []*Stanza
	Nonce      [11]byte // header-nonce
	MAC        [16]byte // header-mac
}

// Core returns the core bytes: the version and core lines, which the payload binds.
func (h *Header) Core() []byte {
	return fmt.Appendf(nil, "%s\ncore %s %d %s\n", versionLine, h.ID, chunkSize, b64.EncodeToString(h.Commitment[:]))
}

// macInput returns the header bytes the MAC covers: everything through "---".
func (h *Header) macInput() []byte {
	var b bytes.Buffer
	b.Write(h.Core())
	for _, s := range h.Stanzas {
		writeStanza(&b, s)
	}
	b.WriteString(macPrefix)
	return b.Bytes()
}

// Marshal returns the encoded header, through the mac-line.
func (h *Header) Marshal() []byte {
	b := h.macInput()
	return fmt.Appendf(b, " %s %s\n", b64.EncodeToString(h.Nonce[:]), b64.EncodeToString(h.MAC[:]))
}

func writeStanza(b *bytes.Buffer, s *Stanza) {
	b.WriteString(stanzaPrefix + " " + s.Type)
	for _, a := range s.Args {
		b.WriteString(" " + a)
	}
	b.WriteByte('\n')
	body := b64.EncodeToString(s.Body)
	for len(body) >= bodyColumns {
		b.WriteString(body[:bodyColumns] + "\n")
		body = body[bodyColumns:]
	}
	b.WriteString(body + "\n")
}

// ParseHeader reads a header from r and returns it with a reader positioned at the payload.
// It checks syntax and limits only; the MAC needs the file key (see Decrypt).
func ParseHeader(r io.Reader) (*Header, io.Reader, error) {
	br := bufio.NewReaderSize(r, 4096)
	p := &headerParser{r: br}
	h, err := p.parse()
	if err != nil {
		return nil, nil, err
	}
	return h, br, nil
}

type headerParser struct {
	stanzas []*Stanza // parsed so far
	r       *bufio.Reader
	read    int
	line    int
}

// next returns the next line without its LF, enforcing the size limit and ASCII.
func (p *headerParser) next() (string, error) {
	p.line++
	var line []byte
	for {
		chunk, err := p.r.ReadSlice('\n')
		line = append(line, chunk...)
		p.read += len(chunk)
		if p.read > maxHeaderSize {
			return "", headerErr(p.line, "the header is longer than %d bytes", maxHeaderSize)
		}
		if err == bufio.ErrBufferFull {
			continue
		}
		if err == io.EOF {
			return "", &TruncatedError{What: "header"}
		}
		if err != nil {
			return "", err
		}
		break
	}
	line = line[:len(line)-1]
	for _, c := range line {
		if c < 0x20 || c > 0x7e {
			return "", headerErr(p.line, "the header contains a byte that is not printable ASCII")
		}
	}
	return string(line), nil
}

func (p *headerParser) parse() (*Header, error) {
	// The error classes of FORMAT.md section 8: input that does not start with "p11escrow/" is
	// not a p11escrow file; input that ends inside "p11escrow/v1" LF is truncated; any other
	// first line is a version this reader does not know.
	first, err := p.r.Peek(len(versionLine) + 1)
	switch {
	case err != nil && err != io.EOF:
		return nil, err
	case !bytes.HasPrefix(first, []byte(magicPrefix)):
		return nil, ErrNotP11e
	case err == nil && string(first) == versionLine+"\n":
	case len(first) < len(versionLine)+1 && strings.HasPrefix(versionLine+"\n", string(first)):
		return nil, &TruncatedError{What: "header"}
	default:
		return nil, &HeaderError{Line: 1, Reason: "unsupported format version; this tool reads " + versionLine}
	}
	p.next()
	h := &Header{}
	line, err := p.next()
	if err != nil {
		return nil, err
	}
	if err := p.parseCore(h, line); err != nil {
		return nil, err
	}
	line, err = p.next()
	if err != nil {
		return nil, err
	}
	for strings.HasPrefix(line, stanzaPrefix+" ") {
		if len(h.Stanzas) == maxStanzas {
			return nil, headerErr(p.line, "more than %d stanzas", maxStanzas)
		}
		s, after, err := p.parseStanza(line)
		if err != nil {
			return nil, err
		}
		h.Stanzas = append(h.Stanzas, s)
		p.stanzas = h.Stanzas
		line = after
	}
	if len(h.Stanzas) == 0 {
		return nil, headerErr(p.line, "the header has no stanzas")
	}
	if err := p.parseMAC(h, line); err != nil {
		return nil, err
	}
	return h, nil
}

func (p *headerParser) parseCore(h *Header, line string) error {
	f := strings.Split(line, " ")
	if len(f) != 4 || f[0] != "core" {
		return headerErr(p.line, "malformed core line")
	}
	id, err := ParseFileID(f[1])
	if err != nil {
		return headerErr(p.line, "%v", err)
	}
	h.ID = id
	if f[2] != strconv.Itoa(chunkSize) {
		return headerErr(p.line, "chunk size %q is not %d", f[2], chunkSize)
	}
	return decodeFixed(h.Commitment[:], f[3], p.line, "commitment")
}

// parseStanza parses a stanza whose first line is line and returns the line after its body.
func (p *headerParser) parseStanza(line string) (*Stanza, string, error) {
	f := strings.Split(line, " ")
	for _, a := range f {
		if a == "" {
			return nil, "", headerErr(p.line, "empty stanza argument")
		}
	}
	if len(f) < 2 {
		return nil, "", headerErr(p.line, "stanza without a type")
	}
	s := &Stanza{Type: f[1], Args: f[2:]}
	start := p.line // errors about the whole stanza name its first line
	// The stanza line is checked before its body is read (FORMAT.md section 8.1): a bad
	// argument or a second owner is a malformed header even if the input ends in the body.
	// The header grammar knows no stanza types: each known type checks its own arguments
	// (stanza.go), and a stanza of another type is kept as it is.
	if _, err := parseArgs(s); err != nil {
		return nil, "", headerErr(start, "%v", err)
	}
	if err := checkRoles(append(p.stanzas, s)); err != nil {
		return nil, "", err
	}
	var body strings.Builder
	for {
		l, err := p.next()
		if err != nil {
			return nil, "", err
		}
		if len(l) > bodyColumns {
			return nil, "", headerErr(p.line, "stanza body line longer than %d characters", bodyColumns)
		}
		body.WriteString(l)
		if len(l) < bodyColumns {
			break
		}
	}
	raw, err := b64.DecodeString(body.String())
	if err != nil {
		return nil, "", headerErr(start, "stanza body is not canonical base64")
	}
	s.Body = raw
	if _, err := ParseStanza(s); err != nil {
		return nil, "", headerErr(start, "%v", err)
	}
	next, err := p.next()
	return s, next, err
}

func (p *headerParser) parseMAC(h *Header, line string) error {
	f := strings.Split(line, " ")
	if len(f) != 3 || f[0] != macPrefix {
		return headerErr(p.line, "expected a stanza or the MAC line")
	}
	if err := decodeFixed(h.Nonce[:], f[1], p.line, "header nonce"); err != nil {
		return err
	}
	return decodeFixed(h.MAC[:], f[2], p.line, "header MAC")
}

// decodeFixed decodes exactly len(dst) bytes of strict base64.
func decodeFixed(dst []byte, s string, line int, what string) error {
	raw, err := b64.DecodeString(s)
	if err != nil || len(raw) != len(dst) {
		return headerErr(line, "the %s is not %d bytes of canonical base64", what, len(dst))
	}
	copy(dst, raw)
	return nil
}

func headerErr(line int, format string, args ...any) error {
	return &HeaderError{Line: line, Reason: fmt.Sprintf(format, args...)}
}

// ChunkSize is the plaintext size of every payload chunk but the last.
const ChunkSize = stream.ChunkSize

// ChunkCount returns how many chunks a payload of n bytes holds, or a *TruncatedError if no valid
// payload has that length. It needs no key. The rule lives in internal/stream.
func ChunkCount(n int64) (int64, error) {
	c, err := stream.ChunkCount(n)
	return c, payloadErr(err)
}
