// Package stream implements the chunked AES-256-GCM payload of FORMAT.md section 4.
//
// Chunk i is sealed under the file key with nonce uint88(i) || flag, where flag is 1 for the last
// chunk and 0 otherwise, and with the file's core bytes as additional data. A Reader releases a
// chunk only after its tag verifies, and it decides that a chunk is the last only when the input
// ends right after it, so truncation, reordering, duplication and trailing data all fail a tag.
package stream

import (
	"crypto/cipher"
	"errors"
	"fmt"
	"io"
)

// ChunkSize is the plaintext size of every chunk but the last.
const ChunkSize = 64 * 1024

// Overhead is the GCM tag appended to each chunk.
const Overhead = 16

// NonceSize is the GCM nonce length: an 11-byte counter and a 1-byte flag.
const NonceSize = 12

const (
	flagMiddle = 0x00
	flagLast   = 0x01
)

// maxChunks keeps the 88-bit counter from wrapping. It is far beyond any real file.
const maxChunks = 1<<64 - 1

// ErrTruncated reports input that ended before a last chunk verified.
var ErrTruncated = errors.New("the payload is truncated")

// ErrTampered reports a chunk whose tag did not verify.
var ErrTampered = errors.New("the payload failed authentication")

// Nonce returns the nonce for chunk counter with the given last-chunk flag.
func Nonce(counter uint64, last bool) [NonceSize]byte {
	var n [NonceSize]byte
	// The top three counter bytes stay zero: maxChunks fits in eight.
	for i := 0; i < 8; i++ {
		n[10-i] = byte(counter >> (8 * i))
	}
	if last {
		n[11] = flagLast
	} else {
		n[11] = flagMiddle
	}
	return n
}

// Writer seals plaintext into chunks. Close seals the last chunk and must be called.
type Writer struct {
	aead    cipher.AEAD
	aad     []byte
	dst     io.Writer
	buf     []byte // plaintext not yet sealed, at most ChunkSize
	out     []byte
	counter uint64
	err     error
}

// NewWriter returns a Writer sealing under aead (AES-256-GCM) with the file's core bytes as aad.
func NewWriter(aead cipher.AEAD, aad []byte, dst io.Writer) *Writer {
	return &Writer{
		aead: aead,
		aad:  append([]byte(nil), aad...),
		dst:  dst,
		buf:  make([]byte, 0, ChunkSize),
		out:  make([]byte, 0, ChunkSize+Overhead),
	}
}

// Write buffers p and seals every chunk that is known not to be the last.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		// A full buffer is sealed only once more data arrives, because a full
		// chunk at the end of the input is the last chunk.
		if len(w.buf) == ChunkSize {
			if err := w.seal(false); err != nil {
				return n, err
			}
		}
		k := copy(w.buf[len(w.buf):ChunkSize], p)
		w.buf = w.buf[:len(w.buf)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

// Close seals the last chunk. It does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		return w.err
	}
	err := w.seal(true)
	clear(w.buf[:cap(w.buf)])
	if err == nil {
		w.err = errors.New("stream: write after Close")
	}
	return err
}

func (w *Writer) seal(last bool) error {
	if w.counter == maxChunks {
		w.err = errors.New("stream: too many chunks")
		return w.err
	}
	nonce := Nonce(w.counter, last)
	w.out = w.aead.Seal(w.out[:0], nonce[:], w.buf, w.aad)
	if _, err := w.dst.Write(w.out); err != nil {
		w.err = err
		return err
	}
	w.counter++
	w.buf = w.buf[:0]
	return nil
}

// Reader opens chunks and returns only verified plaintext.
type Reader struct {
	aead    cipher.AEAD
	aad     []byte
	src     io.Reader
	in      []byte // one sealed chunk plus one look-ahead byte
	opened  []byte // backing store for plain, so that a failed Open never touches in
	plain   []byte // verified plaintext not yet returned
	counter uint64
	done    bool
	err     error
}

// NewReader returns a Reader opening the payload in src.
func NewReader(aead cipher.AEAD, aad []byte, src io.Reader) *Reader {
	return &Reader{
		aead:   aead,
		aad:    append([]byte(nil), aad...),
		src:    src,
		in:     make([]byte, 0, ChunkSize+Overhead+1),
		opened: make([]byte, 0, ChunkSize),
	}
}

// Read returns verified plaintext. It returns io.EOF only after the last chunk verified.
func (r *Reader) Read(p []byte) (int, error) {
	for len(r.plain) == 0 {
		if r.err != nil {
			return 0, r.err
		}
		if r.done {
			return 0, io.EOF
		}
		r.err = r.next()
	}
	n := copy(p, r.plain)
	r.plain = r.plain[n:]
	return n, nil
}

// Chunks returns how many chunks have been verified so far.
func (r *Reader) Chunks() uint64 { return r.counter }

// Close zeroes the plaintext buffer. It does not close the source.
func (r *Reader) Close() error {
	clear(r.opened[:cap(r.opened)])
	r.plain = nil
	if r.err == nil && !r.done {
		r.err = errors.New("stream: read after Close")
	}
	return nil
}

// next reads and opens one chunk.
func (r *Reader) next() error {
	// Fill up to one full chunk plus one byte: the extra byte tells whether
	// more input follows, and so whether this chunk must be the last.
	have := len(r.in)
	r.in = r.in[:cap(r.in)]
	n, err := io.ReadFull(r.src, r.in[have:])
	r.in = r.in[:have+n]
	if err != nil && err != io.EOF && err != io.ErrUnexpectedEOF {
		return err
	}
	last := len(r.in) <= ChunkSize+Overhead
	sealed := r.in
	if !last {
		sealed = r.in[:ChunkSize+Overhead]
	}
	if len(sealed) < Overhead {
		return ErrTruncated
	}
	if last && len(sealed) == Overhead && r.counter > 0 {
		// An empty last chunk only ever follows nothing (FORMAT.md section 4).
		return ErrTampered
	}
	if r.counter == maxChunks {
		return ErrTampered
	}
	nonce := Nonce(r.counter, last)
	plain, err := r.aead.Open(r.opened[:0], nonce[:], sealed, r.aad)
	if err != nil {
		return r.openFailed(last, sealed)
	}
	r.plain = plain
	r.counter++
	if last {
		r.done = true
		r.in = r.in[:0]
		return nil
	}
	// Keep the look-ahead byte for the next chunk.
	r.in = append(r.in[:0], r.in[ChunkSize+Overhead])
	return nil
}

// openFailed tells a truncated payload from a tampered one. If the input ended on a chunk that
// verifies as a middle chunk, the real last chunk is missing: the file was cut at a boundary.
func (r *Reader) openFailed(last bool, sealed []byte) error {
	if last && len(sealed) == ChunkSize+Overhead {
		nonce := Nonce(r.counter, false)
		if _, err := r.aead.Open(r.opened[:0], nonce[:], sealed, r.aad); err == nil {
			clear(r.opened[:cap(r.opened)])
			return ErrTruncated
		}
	}
	return fmt.Errorf("%w (chunk %d)", ErrTampered, r.counter)
}
