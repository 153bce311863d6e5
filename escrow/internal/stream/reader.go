package stream

import (
	"errors"
	"io"
)

// Reader opens chunks and returns only verified plaintext.
//
// It reads sealed chunks ahead and opens several at once (see pipeline), but releases them
// strictly in counter order, each only after its tag verified: if chunk i fails, nothing from
// chunk i or later is ever returned, even if later chunks verified first. A chunk is the last
// only when the input ends right after it, so a full chunk is held back until the next read
// shows whether more input follows.
type Reader struct {
	o        Opener // used by several goroutines at once unless workers is 1
	aad      []byte
	src      io.Reader
	p        pipeline
	held     *slot // a full sealed chunk whose successor is not yet known to exist
	head     *slot // the slot whose verified plaintext is being returned
	plain    []byte
	counter  uint64 // the counter of the next chunk read
	verified uint64
	eof      bool // src has ended
	done     bool // the last chunk verified
	err      error
}

// NewReader returns a Reader opening the payload in src, on Workers() cores. o must be safe for
// concurrent use, as crypto/cipher's GCM is: it keeps no state per call.
func NewReader(o Opener, aad []byte, src io.Reader) *Reader {
	return newReader(o, aad, src, Workers())
}

// NewSerialReader returns a Reader that opens one chunk at a time on the caller's goroutine, for
// an Opener that is not safe for concurrent use, such as a key on a token session.
func NewSerialReader(o Opener, aad []byte, src io.Reader) *Reader {
	return newReader(o, aad, src, 1)
}

func newReader(o Opener, aad []byte, src io.Reader, workers int) *Reader {
	r := &Reader{o: o, aad: append([]byte(nil), aad...), src: src}
	r.p = newPipeline(workers, r.open)
	return r
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

// WriteTo writes every verified chunk to w as it is released, without Read's copy. io.Copy uses
// it. It returns nil once the last chunk verified and was written.
func (r *Reader) WriteTo(w io.Writer) (int64, error) {
	var total int64
	for {
		if len(r.plain) > 0 {
			n, err := w.Write(r.plain)
			total += int64(n)
			r.plain = r.plain[n:]
			if err != nil {
				return total, err
			}
			continue
		}
		if r.err != nil {
			return total, r.err
		}
		if r.done {
			return total, nil
		}
		r.err = r.next()
	}
}

// Chunks returns how many chunks have been verified so far.
func (r *Reader) Chunks() uint64 { return r.verified }

// Close waits for chunks in flight and zeroes every plaintext buffer. It does not close the
// source.
func (r *Reader) Close() error {
	r.p.wipe()
	r.plain = nil
	if r.err == nil && !r.done {
		r.err = errors.New("stream: read after Close")
	}
	return nil
}

// next makes the oldest chunk's plaintext current, once it verified, after topping up the
// pipeline with chunks read ahead.
func (r *Reader) next() error {
	if r.head != nil {
		r.p.release(r.head)
		r.head = nil
	}
	if err := r.fill(); err != nil {
		return err
	}
	if !r.p.pending() {
		return ErrTruncated // unreachable: fill always leaves the last chunk or an error
	}
	s := r.p.oldest()
	r.head = s
	if s.err != nil {
		return s.err
	}
	r.plain = s.out
	r.verified++
	r.done = s.last
	return nil
}

// fill reads and submits chunks until the pipeline is full or the input has ended.
func (r *Reader) fill() error {
	for !r.eof && !r.p.full() {
		if err := r.readChunk(); err != nil {
			return err
		}
	}
	return nil
}

// readChunk reads one sealed chunk. A full one is held back: the held chunk before it, if any,
// is now known not to be the last. At the end of the input the held or short chunk is the last.
func (r *Reader) readChunk() error {
	s := r.p.take()
	n, err := io.ReadFull(r.src, s.buf[:cap(s.buf)])
	s.buf = s.buf[:n]
	switch {
	case err == nil:
		r.submitHeld(false)
		r.held = s
		return nil
	case err != io.EOF && err != io.ErrUnexpectedEOF:
		r.p.release(s)
		return err
	}
	r.eof = true
	if n > 0 {
		r.submitHeld(false)
		r.submit(s, true)
		return nil
	}
	r.p.release(s)
	if r.held == nil {
		return ErrTruncated // an empty payload: even an empty plaintext has a 16-byte chunk
	}
	r.submitHeld(true)
	return nil
}

func (r *Reader) submitHeld(last bool) {
	if r.held != nil {
		r.submit(r.held, last)
		r.held = nil
	}
}

func (r *Reader) submit(s *slot, last bool) {
	s.counter, s.last, s.err = r.counter, last, nil
	r.counter++
	r.p.submit(s)
}

// open runs in a pipeline goroutine and records whether s verified. A full last chunk opens
// into s.apart, which OpenChunk needs to tell a cut at a chunk boundary from tampering.
func (r *Reader) open(s *slot) {
	if s.last && len(s.buf) == SealedChunkSize && s.apart == nil {
		s.apart = make([]byte, ChunkSize)
	}
	s.out, s.err = OpenChunk(r.o, r.aad, s.counter, s.last, s.buf, s.apart)
}
