package stream

import (
	"bytes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	mrand "math/rand/v2"
	"slices"
	"strings"
	"testing"
	"testing/iotest"
	"time"
)

// jitterAEAD delays some chunks by a random few hundred microseconds, so that parallel chunks
// finish out of order and the pipeline's ordering is really exercised.
type jitterAEAD struct{ cipher.AEAD }

func (j jitterAEAD) jitter() {
	if mrand.IntN(3) == 0 {
		time.Sleep(time.Duration(mrand.IntN(400)) * time.Microsecond)
	}
}

func (j jitterAEAD) Seal(dst, nonce, plain, aad []byte) []byte {
	j.jitter()
	return j.AEAD.Seal(dst, nonce, plain, aad)
}

func (j jitterAEAD) Open(dst, nonce, sealed, aad []byte) ([]byte, error) {
	j.jitter()
	return j.AEAD.Open(dst, nonce, sealed, aad)
}

var workerCounts = []int{1, 2, 3, 8}

// sealWith seals plain with the given number of workers, through Write in writeSize pieces, or
// through ReadFrom (io.Copy) when writeSize is 0.
func sealWith(t testing.TB, aead cipher.AEAD, plain []byte, workers, writeSize int) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := newWriter(aead, aad, &buf, workers)
	if writeSize == 0 {
		if _, err := io.Copy(w, iotest.HalfReader(bytes.NewReader(plain))); err != nil {
			t.Fatal(err)
		}
	}
	for p := plain; writeSize > 0 && len(p) > 0; {
		n := min(writeSize, len(p))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if n := w.p.made; n > w.p.maxSlots() {
		t.Fatalf("the writer allocated %d chunk buffers, more than its bound %d", n, w.p.maxSlots())
	}
	return buf.Bytes()
}

// openWith opens sealed with the given number of workers through Read or, with writeTo,
// through WriteTo (io.Copy), and returns what was released.
func openWith(aead cipher.AEAD, sealed []byte, workers int, writeTo bool) ([]byte, error) {
	r := newReader(aead, aad, iotest.HalfReader(bytes.NewReader(sealed)), workers)
	defer r.Close()
	var got bytes.Buffer
	var err error
	if writeTo {
		_, err = r.WriteTo(&got)
	} else {
		_, err = io.Copy(&got, iotest.OneByteReader(onlyReader{r}))
	}
	if n := r.p.made; n > r.p.maxSlots() {
		return nil, fmt.Errorf("the reader allocated %d chunk buffers, more than its bound %d", n, r.p.maxSlots())
	}
	return got.Bytes(), err
}

// onlyReader hides WriteTo, so that io.Copy goes through Read.
type onlyReader struct{ io.Reader }

// TestParallelSealIsSequentialSeal checks that chunks finishing out of order are still written
// in order: every worker count and input path gives the sequential stream's exact bytes.
func TestParallelSealIsSequentialSeal(t *testing.T) {
	aead := testAEAD(t)
	for _, size := range []int{0, 1, ChunkSize, ChunkSize + 1, 2 * ChunkSize, 7*ChunkSize + 3, 40 * ChunkSize} {
		plain := make([]byte, size)
		rand.Read(plain)
		want := sealWith(t, aead, plain, 1, ChunkSize)
		for _, workers := range workerCounts {
			for _, writeSize := range []int{0, 1000, ChunkSize + 7} {
				got := sealWith(t, jitterAEAD{aead}, plain, workers, writeSize)
				if !bytes.Equal(got, want) {
					t.Fatalf("size %d, %d workers, writes of %d: the parallel stream differs from the sequential one", size, workers, writeSize)
				}
			}
		}
	}
}

func TestParallelOpenRoundTrip(t *testing.T) {
	aead := testAEAD(t)
	for _, size := range []int{0, 1, ChunkSize, ChunkSize + 1, 9*ChunkSize - 1, 40 * ChunkSize} {
		plain := make([]byte, size)
		rand.Read(plain)
		sealed := seal(t, aead, plain, ChunkSize)
		for _, workers := range workerCounts {
			for _, writeTo := range []bool{false, true} {
				got, err := openWith(jitterAEAD{aead}, sealed, workers, writeTo)
				if err != nil {
					t.Fatalf("size %d, %d workers, WriteTo %v: %v", size, workers, writeTo, err)
				}
				if !bytes.Equal(got, plain) {
					t.Fatalf("size %d, %d workers, WriteTo %v: plaintext differs", size, workers, writeTo)
				}
			}
		}
	}
}

// TestParallelFlipReleasesOnlyTheVerifiedPrefix flips a byte in each chunk in turn. Later chunks
// may verify before the flipped one does; none of them may be released.
func TestParallelFlipReleasesOnlyTheVerifiedPrefix(t *testing.T) {
	aead := testAEAD(t)
	const chunks = 12
	plain := make([]byte, chunks*ChunkSize-100)
	rand.Read(plain)
	sealed := seal(t, aead, plain, ChunkSize)
	for i := 0; i < chunks; i++ {
		mangled := bytes.Clone(sealed)
		mangled[i*(ChunkSize+Overhead)+mrand.IntN(ChunkSize/2)] ^= 0x40
		for _, workers := range workerCounts {
			for _, writeTo := range []bool{false, true} {
				got, err := openWith(jitterAEAD{aead}, mangled, workers, writeTo)
				if !errors.Is(err, ErrTampered) {
					t.Fatalf("flip in chunk %d, %d workers: err = %v, want ErrTampered", i, workers, err)
				}
				if !bytes.Equal(got, plain[:i*ChunkSize]) {
					t.Fatalf("flip in chunk %d, %d workers: released %d bytes, want exactly the %d verified before it",
						i, workers, len(got), i*ChunkSize)
				}
			}
		}
	}
}

// TestParallelTruncationReorderTrailing runs every mangling class of the sequential tests
// through each worker count.
func TestParallelTruncationReorderTrailing(t *testing.T) {
	aead := testAEAD(t)
	plain := make([]byte, 6*ChunkSize+5)
	rand.Read(plain)
	sealed := seal(t, aead, plain, ChunkSize)
	c := ChunkSize + Overhead
	chunk := func(i int) []byte { return sealed[i*c : min((i+1)*c, len(sealed))] }
	cases := map[string][]byte{
		"swap two":         concat(chunk(0), chunk(2), chunk(1), chunk(3), chunk(4), chunk(5), chunk(6)),
		"duplicate":        concat(chunk(0), chunk(1), chunk(1), chunk(2), chunk(3), chunk(4), chunk(5), chunk(6)),
		"drop one":         concat(chunk(0), chunk(1), chunk(3), chunk(4), chunk(5), chunk(6)),
		"trailing byte":    concat(sealed, []byte{0}),
		"trailing chunk":   concat(sealed, chunk(6)),
		"empty last chunk": concat(sealed[:6*c], seal(t, aead, nil, 1)),
		"tag cut short":    sealed[:len(sealed)-3],
		"short tail":       sealed[:6*c+7],
	}
	for cut := 0; cut < len(sealed); cut += c {
		cases[fmt.Sprintf("cut at chunk %d", cut/c)] = sealed[:cut]
	}
	for name, mangled := range cases {
		for _, workers := range workerCounts {
			got, err := openWith(jitterAEAD{aead}, mangled, workers, true)
			if err == nil {
				t.Fatalf("%s, %d workers: accepted", name, workers)
			}
			if !bytes.HasPrefix(plain, got) || len(got)%ChunkSize != 0 {
				t.Fatalf("%s, %d workers: released %d bytes that are not a verified prefix", name, workers, len(got))
			}
			if strings.HasPrefix(name, "cut at") && !errors.Is(err, ErrTruncated) {
				t.Fatalf("%s, %d workers: err = %v, want ErrTruncated", name, workers, err)
			}
		}
	}
}

// TestMemoryIsBounded streams 64 MiB each way and checks that the chunk buffers stay within the
// fixed bound, whatever the input size.
func TestMemoryIsBounded(t *testing.T) {
	aead := testAEAD(t)
	const size = 64 << 20
	pr, pw := io.Pipe()
	go func() {
		w := newWriter(aead, aad, pw, 4)
		_, err := io.Copy(w, io.LimitReader(zeros{}, size))
		if err == nil {
			err = w.Close()
		}
		if n := w.p.made; err == nil && n > w.p.maxSlots() {
			err = fmt.Errorf("the writer allocated %d chunk buffers, more than its bound %d", n, w.p.maxSlots())
		}
		pw.CloseWithError(err)
	}()
	r := newReader(aead, aad, pr, 4)
	n, err := io.Copy(io.Discard, r)
	if err != nil || n != size {
		t.Fatalf("copied %d bytes, err %v", n, err)
	}
	if got := r.p.made; got > r.p.maxSlots() {
		t.Fatalf("the reader allocated %d chunk buffers, more than its bound %d", got, r.p.maxSlots())
	}
}

type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestCloseZeroesPlaintext checks that no plaintext stays in any chunk buffer after Close, even
// when the stream stopped at a failed chunk with later chunks still in flight.
func TestCloseZeroesPlaintext(t *testing.T) {
	aead := testAEAD(t)
	plain := bytes.Repeat([]byte{0xa5}, 10*ChunkSize)
	sealed := seal(t, aead, plain, ChunkSize)
	sealed[2*(ChunkSize+Overhead)] ^= 1
	r := newReader(jitterAEAD{aead}, aad, bytes.NewReader(sealed), 4)
	if _, err := io.Copy(io.Discard, r); !errors.Is(err, ErrTampered) {
		t.Fatalf("err = %v, want ErrTampered", err)
	}
	used := slices.Clone(r.p.all)
	r.Close()
	for _, s := range used {
		if bytes.IndexByte(s.apart, 0xa5) >= 0 || bytes.IndexByte(s.buf[:cap(s.buf)], 0xa5) >= 0 {
			t.Fatal("a plaintext buffer was not zeroed by Close")
		}
	}
	w := newWriter(aead, aad, io.Discard, 4)
	w.Write(plain[:ChunkSize/2])
	used = slices.Clone(w.p.all)
	w.Close()
	for _, s := range used {
		if bytes.IndexByte(s.buf[:cap(s.buf)], 0xa5) >= 0 {
			t.Fatal("a plaintext buffer was not zeroed by Close")
		}
	}
}

// TestWriteErrorStops checks that a failing destination stops the Writer with its error.
func TestWriteErrorStops(t *testing.T) {
	aead := testAEAD(t)
	boom := errors.New("disk full")
	w := newWriter(aead, aad, failAfter{n: 3, err: boom, count: new(int)}, 2)
	var err error
	for i := 0; i < 20 && err == nil; i++ {
		_, err = w.Write(make([]byte, ChunkSize))
	}
	if cerr := w.Close(); !errors.Is(err, boom) && !errors.Is(cerr, boom) {
		t.Fatalf("Write err %v, Close err %v; want %v", err, cerr, boom)
	}
}

type failAfter struct {
	n     int
	err   error
	count *int
}

func (f failAfter) Write(p []byte) (int, error) {
	if *f.count++; *f.count > f.n {
		return 0, f.err
	}
	return len(p), nil
}

// TestCloseTwiceGivesSlotsBackOnce checks that closing twice does not hand the same buffers to
// two later streams.
func TestCloseTwiceGivesSlotsBackOnce(t *testing.T) {
	aead := testAEAD(t)
	w := newWriter(aead, aad, io.Discard, 2)
	w.Write(make([]byte, 3*ChunkSize))
	w.Close()
	w.Close()
	r := newReader(aead, aad, bytes.NewReader(seal(t, aead, make([]byte, 3*ChunkSize), ChunkSize)), 2)
	io.Copy(io.Discard, r)
	r.Close()
	r.Close()
	a, b := newWriter(aead, aad, io.Discard, 1), newWriter(aead, aad, io.Discard, 1)
	if a.cur == b.cur {
		t.Fatal("two streams share a chunk buffer")
	}
}
