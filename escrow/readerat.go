package escrow

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"sync/atomic"

	"github.com/p11escrow/p11escrow/escrow/internal/stream"
)

// DecryptReaderAt opens a file for random access. src holds the whole file, size is its length.
//
// It parses and authenticates the header with the identities (same rules and errors as Decrypt:
// key commitment and header MAC), then authenticates the last chunk before returning, so that
// the plaintext size it reports is authenticated: a truncated or extended file fails here, with
// the same error classes as Decrypt (*TruncatedError, *TamperedError). It returns an io.ReaderAt
// over the plaintext and the plaintext size.
//
// Every other chunk is authenticated when a ReadAt touches it. ReadAt releases nothing unless
// every chunk the read overlaps verifies: on a failed tag it returns 0 and a *TamperedError.
// Unlike Decrypt, which reports the first bad chunk in file order, a file with several faults may
// fail here on its last chunk first. The returned io.ReaderAt is safe for concurrent use if src
// is, as io.ReaderAt requires of both.
//
// This is filippo.io/age's DecryptReaderAt for the p11escrow format; the format is unchanged.
func DecryptReaderAt(src io.ReaderAt, size int64, identities ...Identity) (io.ReaderAt, int64, error) {
	h, start, err := parseHeaderAt(src, size)
	if err != nil {
		return nil, 0, err
	}
	key, err := h.unwrap(identities)
	if err != nil {
		return nil, 0, err
	}
	// The key lives on only inside the AEAD built by openReaderAt, as in Header.Decrypt.
	defer clear(key)
	r, err := h.openReaderAt(key, src, start, size)
	if err != nil {
		return nil, 0, err // not r: a nil *readerAt in an io.ReaderAt is not a nil interface
	}
	return r, r.size, nil
}

// parseHeaderAt parses the header at the start of src and returns it with the payload's offset.
//
// The offset is len(h.Marshal()). That is exactly the number of header bytes in the file because
// the parser is strict and canonical (FORMAT.md section 2): every field has one accepted
// spelling (single spaces, lower-case hex, canonical unpadded base64, 64-column body lines
// ending in a short line), so re-marshalling reproduces the input. Header.VerifyOn relies on the
// same property, since the MAC is checked over macInput(), which is re-marshalled too. The
// comparison below keeps a future parser relaxation from silently shifting every chunk offset;
// it costs one read of at most 64 KiB per open.
func parseHeaderAt(src io.ReaderAt, size int64) (*Header, int64, error) {
	if size < 0 {
		return nil, 0, fmt.Errorf("escrow: negative file size %d", size)
	}
	file := io.NewSectionReader(src, 0, size)
	h, _, err := ParseHeader(file)
	if err != nil {
		return nil, 0, err
	}
	canonical := h.Marshal()
	raw := make([]byte, len(canonical))
	if err := readFullAt(file, raw, 0); err != nil {
		return nil, 0, err
	}
	if !bytes.Equal(raw, canonical) {
		return nil, 0, &HeaderError{Reason: "the header is not in canonical form"}
	}
	return h, int64(len(canonical)), nil
}

// openReaderAt checks key against h (through VerifyOn, as Header.open does) and opens the
// payload that runs from start to end in src, verifying its last chunk. It does not keep or
// clear key: the caller owns it.
func (h *Header) openReaderAt(key []byte, src io.ReaderAt, start, end int64) (*readerAt, error) {
	k, err := newMemKey(key)
	if err != nil {
		return nil, err
	}
	if err := h.VerifyOn(k); err != nil {
		return nil, err
	}
	chunks, err := stream.NewChunksAt(k.aead, h.Core(), src, start, end)
	if err != nil {
		return nil, payloadErr(err)
	}
	r := &readerAt{chunks: chunks, size: chunks.PlainSize()}
	// Verifying the last chunk now authenticates r.size: its nonce carries the last-chunk flag,
	// and it verifies only if the file ends exactly where the writer ended it.
	last := chunks.Count() - 1
	plain, err := chunks.Open(last, make([]byte, stream.SealedChunkSize))
	if err != nil {
		return nil, payloadErr(err)
	}
	r.cache.Store(&plainChunk{index: last, data: plain})
	return r, nil
}

// readerAt is the io.ReaderAt that DecryptReaderAt returns. Its fields are written only before
// it is returned; afterwards the only shared mutable state is the cache pointer, which is
// atomic and points to a chunk that is never written again. That, and crypto/cipher's GCM keeping
// no state per call, is what makes concurrent ReadAt calls safe.
type readerAt struct {
	chunks *stream.ChunksAt // the payload, under an AEAD that is the only copy of the file key
	size   int64            // plaintext size, authenticated by the last chunk
	cache  atomic.Pointer[plainChunk]
}

// plainChunk is the verified plaintext of one chunk. Sequential small reads (io.SectionReader,
// bufio) hit the same chunk many times; caching the last one saves decrypting 64 KiB per call.
// It is immutable once published, so readers need no lock, and it is never wiped, because
// another ReadAt may still be copying from it; only the garbage collector reclaims it.
type plainChunk struct {
	index int64
	data  []byte
}

// ReadAt reads len(p) bytes of plaintext at off. It verifies the tag of every chunk it copies
// from; if one fails it returns 0 and a *TamperedError, and p holds no plaintext. It returns
// io.EOF when fewer than len(p) bytes remain after off, and an error for a negative off.
func (r *readerAt) ReadAt(p []byte, off int64) (int, error) {
	if off < 0 {
		return 0, fmt.Errorf("escrow: ReadAt at negative offset %d", off)
	}
	if off >= r.size {
		return 0, io.EOF
	}
	want := int(min(int64(len(p)), r.size-off))
	var (
		scratch []byte      // one sealed chunk, allocated on the first cache miss: per call, never shared
		fresh   *plainChunk // the chunk just opened, to publish if it was the last one read
	)
	n := 0
	for n < want {
		pos := off + int64(n)
		i := pos / stream.ChunkSize
		var plain []byte
		if c := r.cache.Load(); c != nil && c.index == i {
			plain, fresh = c.data, nil
		} else {
			if scratch == nil {
				scratch = make([]byte, stream.SealedChunkSize)
			}
			var err error
			plain, err = r.chunks.Open(i, scratch)
			if err != nil {
				err = payloadErr(err)
				// Earlier chunks of this read verified, but a short count with data the caller
				// may not look at is a trap: report nothing, and wipe what was copied.
				clear(p[:n])
				return 0, err
			}
			fresh = &plainChunk{index: i, data: plain}
		}
		n += copy(p[n:want], plain[pos-i*stream.ChunkSize:])
	}
	if fresh != nil {
		r.cache.Store(fresh) // scratch is not touched again: the published chunk stays immutable
	} else if scratch != nil {
		clear(scratch) // it holds a chunk that is neither cached nor needed
	}
	if n < len(p) {
		return n, io.EOF
	}
	return n, nil
}

// readFullAt fills b from src at off. A source shorter than the size it was said to have is a
// truncated file; other errors from src pass through, as they do in Decrypt.
func readFullAt(src io.ReaderAt, b []byte, off int64) error {
	n, err := src.ReadAt(b, off)
	if n == len(b) {
		return nil // io.ReaderAt may return io.EOF with a full read at the very end
	}
	if err == nil || errors.Is(err, io.EOF) {
		return &TruncatedError{What: "payload"}
	}
	return err
}
