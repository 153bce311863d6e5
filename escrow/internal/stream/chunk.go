package stream

import (
	"errors"
	"fmt"
	"io"
)

// SealedChunkSize is the length of every sealed chunk but the last: a full chunk and its tag.
const SealedChunkSize = ChunkSize + Overhead

// Opener opens one sealed chunk with AES-256-GCM under the file key. cipher.AEAD implements it,
// for a key in host memory; a key held by a token implements it with one single-part
// C_Decrypt(CKM_AES_GCM) per chunk.
//
// Open appends the plaintext of sealed (ciphertext || 16-byte tag) to dst and returns it, only if
// the tag verifies under nonce and aad. An error wrapping ErrFault is a failure of the opener
// itself (a token that failed), which says nothing about the data; any other error means that
// the chunk does not authenticate. Either way the bytes of dst's spare capacity may have been
// overwritten. dst and sealed may be the same storage, as in crypto/cipher.
type Opener interface {
	Open(dst, nonce, sealed, aad []byte) ([]byte, error)
}

// ChunkCount returns how many chunks a sealed payload of n bytes holds, or ErrTruncated if no
// valid payload is n bytes long: an empty payload (even an empty plaintext has a 16-byte last
// chunk), or one whose last chunk is shorter than a tag. It needs no key.
func ChunkCount(n int64) (int64, error) {
	full, rest := n/SealedChunkSize, n%SealedChunkSize
	switch {
	case n <= 0:
		return 0, ErrTruncated
	case rest == 0:
		return full, nil
	case rest < Overhead:
		return 0, ErrTruncated
	}
	return full + 1, nil
}

// OpenChunk opens chunk i of a payload. It is the one place where the chunk rules of FORMAT.md
// section 4 are applied; Reader, ChunksAt and the token-side decryption all open through it.
//
// sealed is the chunk as read, at most SealedChunkSize bytes; last says that the input ends
// right after it. The rules, in order:
//   - a chunk shorter than a tag is ErrTruncated: the input ended inside the last chunk's tag;
//   - an empty last chunk (just a tag) after other chunks is ErrTampered: a writer makes an empty
//     last chunk only for an empty plaintext;
//   - a chunk that does not open under its counter and flag is ErrTampered, except a full last
//     chunk that opens as a middle chunk (flag 0x00): then the input was cut at a chunk boundary
//     and the real last chunk is missing, which is ErrTruncated.
//
// The plaintext is written over sealed, except for a full last chunk, which is opened into spare
// (capacity at least ChunkSize) so that sealed stays intact for the boundary check. On failure
// sealed and spare are wiped: a failed Open may leave unverified bytes in them.
func OpenChunk(o Opener, aad []byte, i uint64, last bool, sealed, spare []byte) ([]byte, error) {
	switch {
	case len(sealed) < Overhead:
		return nil, ErrTruncated
	case len(sealed) > SealedChunkSize || !last && len(sealed) != SealedChunkSize:
		return nil, errors.New("stream: a middle chunk must be exactly one full chunk; this is a bug")
	case last && len(sealed) == Overhead && i > 0:
		return nil, fmt.Errorf("%w (chunk %d is an empty last chunk after full chunks)", ErrTampered, i)
	case i == maxChunks:
		return nil, fmt.Errorf("%w (chunk %d: too many chunks)", ErrTampered, i)
	}
	full := len(sealed) == SealedChunkSize
	dst := sealed[:0]
	if last && full {
		dst = spare[:0]
	}
	nonce := Nonce(i, last)
	plain, err := o.Open(dst, nonce[:], sealed, aad)
	if err == nil {
		return plain, nil
	}
	if errors.Is(err, ErrFault) {
		if last && full {
			clear(spare[:cap(spare)])
		}
		clear(sealed)
		return nil, err
	}
	truncated := false
	if last && full {
		middle := Nonce(i, false)
		_, err := o.Open(spare[:0], middle[:], sealed, aad)
		truncated = err == nil
		clear(spare[:cap(spare)])
	}
	clear(sealed)
	if truncated {
		return nil, ErrTruncated
	}
	return nil, fmt.Errorf("%w (chunk %d)", ErrTampered, i)
}

// ChunksAt opens the chunks of a payload held in an io.ReaderAt, in any order, for random
// access. Its methods are safe for concurrent use if src and the Opener are.
type ChunksAt struct {
	o          Opener
	aad        []byte
	src        io.ReaderAt
	start, end int64 // the payload is src[start:end]
	n          int64 // chunks
}

// NewChunksAt checks the length of the payload src[start:end] and returns its chunks. A length
// no valid payload has fails as Reader would fail on the same bytes: Reader meets the full chunk
// before a too-short tail first, as a middle chunk, so if that chunk does not open the payload is
// ErrTampered (bytes were appended after a full last chunk, say), and only otherwise is it
// ErrTruncated.
func NewChunksAt(o Opener, aad []byte, src io.ReaderAt, start, end int64) (*ChunksAt, error) {
	c := &ChunksAt{o: o, aad: append([]byte(nil), aad...), src: src, start: start, end: end}
	n, err := ChunkCount(end - start)
	if err == nil {
		c.n = n
		return c, nil
	}
	full := (end - start) / SealedChunkSize
	if full == 0 {
		return nil, err
	}
	c.n = full + 1 // the short tail would be the last chunk, so chunk full-1 is a middle one
	buf := make([]byte, SealedChunkSize)
	if _, cerr := c.Open(full-1, buf); cerr != nil {
		return nil, cerr
	}
	clear(buf)
	return nil, err
}

// Count returns the number of chunks.
func (c *ChunksAt) Count() int64 { return c.n }

// PlainSize returns the plaintext size the payload's length implies. It is authenticated only
// once the last chunk opened.
func (c *ChunksAt) PlainSize() int64 {
	return (c.end - c.start) - c.n*Overhead
}

// Open reads chunk i into buf (at least SealedChunkSize bytes) and opens it with OpenChunk. The
// plaintext aliases buf, or, for a full last chunk, fresh memory.
func (c *ChunksAt) Open(i int64, buf []byte) ([]byte, error) {
	if i < 0 || i >= c.n {
		return nil, fmt.Errorf("stream: chunk %d out of range", i)
	}
	off := c.start + i*SealedChunkSize
	sealed := buf[:min(SealedChunkSize, c.end-off)]
	n, err := c.src.ReadAt(sealed, off)
	if n < len(sealed) {
		clear(sealed)
		if err == nil || errors.Is(err, io.EOF) {
			return nil, ErrTruncated // the source is shorter than it was said to be
		}
		return nil, err
	}
	last := i == c.n-1
	var spare []byte
	if last && len(sealed) == SealedChunkSize {
		spare = make([]byte, ChunkSize)
	}
	// i < c.n <= MaxInt64/SealedChunkSize, far below the 2^64-1 counter limit.
	return OpenChunk(c.o, c.aad, uint64(i), last, sealed, spare)
}
