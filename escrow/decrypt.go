package escrow

import (
	"errors"
	"io"

	"github.com/p11escrow/p11escrow/escrow/internal/stream"
)

// Reader decrypts a payload. It returns only verified plaintext, and io.EOF only after the last
// chunk verified. Chunks are opened on all cores ahead of the reader, but released in order.
type Reader struct {
	header *Header
	stream *stream.Reader
}

// Header returns the file's authenticated header.
func (r *Reader) Header() *Header { return r.header }

// Read returns verified plaintext.
func (r *Reader) Read(p []byte) (int, error) {
	n, err := r.stream.Read(p)
	return n, payloadErr(err)
}

// WriteTo writes the verified plaintext to w, chunk by chunk, each only after its tag and every
// earlier chunk's verified; io.Copy uses it. It returns nil after the last chunk.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	n, err := r.stream.WriteTo(w)
	return n, payloadErr(err)
}

// payloadErr turns the stream's sentinels into the package's error types. Errors from the
// source or the destination pass through.
func payloadErr(err error) error {
	switch {
	case errors.Is(err, stream.ErrTruncated):
		return &TruncatedError{What: "payload"}
	case errors.Is(err, stream.ErrTampered):
		return &TamperedError{Reason: err.Error()}
	}
	return err
}

// Chunks returns how many payload chunks have been verified so far.
func (r *Reader) Chunks() uint64 { return r.stream.Chunks() }

// Close zeroes the plaintext buffer. It does not close the source.
func (r *Reader) Close() error { return r.stream.Close() }

// Decrypt reads the header from src, opens it with the first identity that has a stanza, checks
// the key commitment and the header MAC, and returns a Reader for the payload.
func Decrypt(src io.Reader, identities ...Identity) (*Reader, error) {
	h, payload, err := ParseHeader(src)
	if err != nil {
		return nil, err
	}
	return h.Decrypt(payload, identities...)
}

// Decrypt opens the payload that follows h, for callers that parsed the header first (to fail
// early, or to see which keys it is addressed to, before asking a token for a PIN).
func (h *Header) Decrypt(payload io.Reader, identities ...Identity) (*Reader, error) {
	key, err := h.unwrap(identities)
	if err != nil {
		return nil, err
	}
	defer clear(key)
	return h.open(key, payload)
}

// unwrap asks each identity in turn for the file key.
func (h *Header) unwrap(identities []Identity) ([]byte, error) {
	nerr := &NoIdentityError{Tags: StanzaTags(h.Stanzas)}
	for _, id := range identities {
		key, err := id.Unwrap(h.Stanzas)
		if err == nil {
			return key, nil
		}
		var tampered *TamperedError
		if errors.As(err, &tampered) {
			return nil, err
		}
		nerr.Errs = append(nerr.Errs, err)
	}
	return nil, nerr
}

// open checks key against the header, through the same VerifyOn as a key on a token, and starts
// the payload stream.
func (h *Header) open(key []byte, payload io.Reader) (*Reader, error) {
	k, err := newMemKey(key)
	if err != nil {
		return nil, err
	}
	if err := h.VerifyOn(k); err != nil {
		return nil, err
	}
	return &Reader{header: h, stream: stream.NewReader(k.aead, h.Core(), payload)}, nil
}

// DecryptWithKey opens src with a file key already known, for example one the authority
// unwrapped. It checks the commitment and MAC exactly as Decrypt does.
func DecryptWithKey(src io.Reader, key []byte) (*Reader, error) {
	h, payload, err := ParseHeader(src)
	if err != nil {
		return nil, err
	}
	return h.open(key, payload)
}
