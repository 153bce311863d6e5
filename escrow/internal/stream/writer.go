package stream

import (
	"crypto/cipher"
	"errors"
	"io"
)

// Writer seals plaintext into chunks. Close seals the last chunk and must be called.
//
// Full chunks are sealed in parallel (see pipeline) and written to dst in counter order. A
// chunk is sealed only once more input arrives, because a full chunk at the very end of the
// input is the last chunk and carries the last-chunk flag.
type Writer struct {
	aead    cipher.AEAD // used by several goroutines at once: crypto/cipher's GCM keeps no state per call
	aad     []byte
	dst     io.Writer
	p       pipeline
	cur     *slot // plaintext not yet sealed, at most ChunkSize
	counter uint64
	err     error
}

// NewWriter returns a Writer sealing under aead (AES-256-GCM) with the file's core bytes as aad,
// on Workers() cores.
func NewWriter(aead cipher.AEAD, aad []byte, dst io.Writer) *Writer {
	return newWriter(aead, aad, dst, Workers())
}

func newWriter(aead cipher.AEAD, aad []byte, dst io.Writer, workers int) *Writer {
	w := &Writer{aead: aead, aad: append([]byte(nil), aad...), dst: dst}
	w.p = newPipeline(workers, w.seal)
	w.cur = w.p.take()
	return w
}

// Write buffers p and seals every chunk that is known not to be the last.
func (w *Writer) Write(p []byte) (int, error) {
	if w.err != nil {
		return 0, w.err
	}
	n := 0
	for len(p) > 0 {
		if len(w.cur.buf) == ChunkSize {
			if err := w.sealCurrent(); err != nil {
				return n, err
			}
		}
		k := copy(w.cur.buf[len(w.cur.buf):ChunkSize], p)
		w.cur.buf = w.cur.buf[:len(w.cur.buf)+k]
		p = p[k:]
		n += k
	}
	return n, nil
}

// ReadFrom reads src to its end straight into chunk buffers, saving Write's copy. io.Copy uses
// it. Errors reading src are returned without poisoning the Writer; the caller then abandons it.
func (w *Writer) ReadFrom(src io.Reader) (int64, error) {
	var total int64
	for w.err == nil {
		buf := w.cur.buf
		if len(buf) < ChunkSize {
			n, err := src.Read(buf[len(buf):ChunkSize])
			w.cur.buf = buf[:len(buf)+n]
			total += int64(n)
			if err != nil {
				return total, eofIsNil(err)
			}
			continue
		}
		n, err := w.readAhead(src)
		total += int64(n)
		if err != nil {
			return total, eofIsNil(err)
		}
	}
	return total, w.err
}

// readAhead reads past a full current chunk into a fresh slot. Only if that finds more input is
// the current chunk sealed as a middle chunk; otherwise it stays for Close to seal as the last.
func (w *Writer) readAhead(src io.Reader) (int, error) {
	next, err := w.slot()
	if err != nil {
		return 0, err
	}
	n, rerr := src.Read(next.buf[:ChunkSize])
	if n == 0 {
		w.p.release(next)
		return 0, rerr
	}
	next.buf = next.buf[:n]
	if err := w.submit(w.cur, false); err != nil {
		return n, err
	}
	w.cur = next
	return n, rerr
}

func eofIsNil(err error) error {
	if err == io.EOF {
		return nil
	}
	return err
}

// Close seals the last chunk, writes every chunk still in flight, and zeroes the buffers. It
// does not close the underlying writer.
func (w *Writer) Close() error {
	if w.err != nil {
		w.p.wipe()
		return w.err
	}
	err := w.submit(w.cur, true)
	w.cur = nil
	for err == nil && w.p.pending() {
		err = w.writeOldest()
	}
	w.p.wipe()
	if err == nil {
		w.err = errors.New("stream: write after Close")
	}
	return err
}

// sealCurrent submits the full current chunk as a middle chunk and starts a new one.
func (w *Writer) sealCurrent() error {
	if err := w.submit(w.cur, false); err != nil {
		return err
	}
	s, err := w.slot()
	if err != nil {
		return err
	}
	w.cur = s
	return nil
}

// submit numbers s and hands it to the pipeline.
func (w *Writer) submit(s *slot, last bool) error {
	if w.counter == maxChunks {
		w.err = errors.New("stream: too many chunks")
		return w.err
	}
	s.counter, s.last = w.counter, last
	w.counter++
	w.p.submit(s)
	return nil
}

// seal runs in a pipeline goroutine. It seals in place: crypto/cipher allows dst to be the
// plaintext's own storage, and buf has room for the tag.
func (w *Writer) seal(s *slot) {
	nonce := Nonce(s.counter, s.last)
	s.buf = w.aead.Seal(s.buf[:0], nonce[:], s.buf, w.aad)
}

// slot returns an empty slot, writing out the oldest sealed chunk first if the pipeline is full.
func (w *Writer) slot() (*slot, error) {
	for w.p.full() {
		if err := w.writeOldest(); err != nil {
			return nil, err
		}
	}
	return w.p.take(), nil
}

// writeOldest writes the oldest sealed chunk to dst: chunks leave in counter order.
func (w *Writer) writeOldest() error {
	s := w.p.oldest()
	_, err := w.dst.Write(s.buf)
	s.buf = s.buf[:0]
	w.p.release(s)
	if err != nil {
		w.err = err
	}
	return err
}
