package escrow

import (
	"errors"
	"io"

	"github.com/p11escrow/p11escrow/escrow/internal/stream"
)

// Writer encrypts a payload. Close must be called to seal the last chunk. Chunks are sealed on
// all cores and written in order.
type Writer struct {
	header *Header
	stream *stream.Writer
}

// Header returns the header written at the start of the file.
func (w *Writer) Header() *Header { return w.header }

// Write encrypts p.
func (w *Writer) Write(p []byte) (int, error) { return w.stream.Write(p) }

// ReadFrom encrypts src to its end, reading straight into the chunk buffers; io.Copy uses it.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) { return w.stream.ReadFrom(src) }

// Close seals the last chunk. It does not close dst.
func (w *Writer) Close() error { return w.stream.Close() }

// Encrypt writes the header for id, key and recipients to dst and returns a Writer for the
// plaintext. The caller keeps ownership of key and may destroy it as soon as Encrypt returns: the
// Writer holds only the AES-GCM state expanded from the key, and the key bytes read from the
// token are zeroed before Encrypt returns. (Go cannot zero an expanded AES key schedule.)
func Encrypt(dst io.Writer, id FileID, key FileKey, recipients ...Recipient) (*Writer, error) {
	if len(recipients) == 0 {
		return nil, errors.New("no recipients")
	}
	if len(recipients) > maxStanzas {
		return nil, errors.New("too many recipients; a file has at most 32")
	}
	h := &Header{ID: id}
	for _, r := range recipients {
		s, err := r.Wrap(key)
		if err != nil {
			return nil, err
		}
		h.Stanzas = append(h.Stanzas, s)
	}
	if err := checkRoles(h.Stanzas); err != nil {
		return nil, err
	}
	value, err := key.Value()
	if err != nil {
		return nil, err
	}
	defer clear(value)
	if len(value) != fileKeySize {
		return nil, errors.New("the file key is not 32 bytes")
	}
	aead := newAEAD(value)
	h.seal(aead, value)
	if _, err := dst.Write(h.Marshal()); err != nil {
		return nil, err
	}
	return &Writer{header: h, stream: stream.NewWriter(aead, h.Core(), dst)}, nil
}
