// Package stream implements the chunked AES-256-GCM payload of FORMAT.md section 4.
//
// Chunk i is sealed under the file key with nonce uint88(i) || flag, where flag is 1 for the last
// chunk and 0 otherwise, and with the file's core bytes as additional data. A Reader releases a
// chunk only after its tag verifies, and it decides that a chunk is the last only when the input
// ends right after it, so truncation, reordering, duplication and trailing data all fail a tag.
//
// Chunks are independent under counter nonces, so both directions seal or open several chunks at
// once, one goroutine per chunk, across all cores (see pipeline.go). The pipeline keeps the order:
// sealed chunks are written, and opened chunks released, strictly by counter, and a chunk's
// plaintext is released only after its own tag and every earlier chunk's tag verified. Memory is
// bounded by a fixed number of chunk buffers, whatever the size of the payload.
package stream

import (
	"errors"
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

// ErrFault marks an Opener's own failure (a token that failed mid-stream): it is returned as it
// is, never as ErrTampered, because it says nothing about the data.
var ErrFault = errors.New("the key's token failed")

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
