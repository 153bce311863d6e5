package stream

import (
	"bytes"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"errors"
	"io"
	"testing"
)

func testAEAD(t testing.TB) cipher.AEAD {
	key := make([]byte, 32)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	return aead
}

var aad = []byte("p11escrow/v1\ncore test\n")

func seal(t testing.TB, aead cipher.AEAD, plain []byte, writeSize int) []byte {
	var buf bytes.Buffer
	w := NewWriter(aead, aad, &buf)
	for p := plain; len(p) > 0; {
		n := min(writeSize, len(p))
		if _, err := w.Write(p[:n]); err != nil {
			t.Fatal(err)
		}
		p = p[n:]
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func open(aead cipher.AEAD, sealed []byte) ([]byte, error) {
	return io.ReadAll(NewReader(aead, aad, bytes.NewReader(sealed)))
}

func TestRoundTrip(t *testing.T) {
	aead := testAEAD(t)
	for _, size := range []int{0, 1, ChunkSize - 1, ChunkSize, ChunkSize + 1, 3 * ChunkSize, 5<<20 + 7} {
		for _, writeSize := range []int{1000, ChunkSize, 1 << 20} {
			plain := make([]byte, size)
			rand.Read(plain)
			sealed := seal(t, aead, plain, writeSize)
			chunks := max(1, (size+ChunkSize-1)/ChunkSize)
			if want := size + chunks*Overhead; len(sealed) != want {
				t.Fatalf("size %d: sealed %d bytes, want %d", size, len(sealed), want)
			}
			got, err := open(aead, sealed)
			if err != nil {
				t.Fatalf("size %d: %v", size, err)
			}
			if !bytes.Equal(got, plain) {
				t.Fatalf("size %d: plaintext differs", size)
			}
		}
	}
}

func TestNonceLayout(t *testing.T) {
	n := Nonce(0x0102030405060708, true)
	want := []byte{0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8, 1}
	if !bytes.Equal(n[:], want) {
		t.Fatalf("Nonce = %x, want %x", n, want)
	}
	if n := Nonce(0, false); n != [NonceSize]byte{} {
		t.Fatalf("Nonce(0, false) = %x, want all zeros", n)
	}
}

func TestTruncationAtEveryChunkBoundary(t *testing.T) {
	aead := testAEAD(t)
	plain := make([]byte, 4*ChunkSize+100)
	sealed := seal(t, aead, plain, ChunkSize)
	for cut := 0; cut < len(sealed); cut += ChunkSize + Overhead {
		got, err := open(aead, sealed[:cut])
		if !errors.Is(err, ErrTruncated) {
			t.Errorf("cut at %d: err = %v, want ErrTruncated", cut, err)
		}
		if len(got) > cut {
			t.Errorf("cut at %d: released %d bytes", cut, len(got))
		}
	}
}

func TestReorderDuplicateTrailing(t *testing.T) {
	aead := testAEAD(t)
	plain := make([]byte, 3*ChunkSize+5)
	rand.Read(plain)
	sealed := seal(t, aead, plain, ChunkSize)
	c := ChunkSize + Overhead
	chunk := func(i int) []byte { return sealed[i*c : min((i+1)*c, len(sealed))] }
	cases := map[string][]byte{
		"swap first two":      concat(chunk(1), chunk(0), chunk(2), chunk(3)),
		"duplicate a chunk":   concat(chunk(0), chunk(0), chunk(1), chunk(2), chunk(3)),
		"drop a middle chunk": concat(chunk(0), chunk(2), chunk(3)),
		"trailing byte":       concat(sealed, []byte{0}),
		"trailing chunk":      concat(sealed, chunk(3)),
		"empty last chunk":    concat(sealed[:3*c], seal(t, aead, nil, 1)),
	}
	for name, mangled := range cases {
		got, err := open(aead, mangled)
		if err == nil {
			t.Errorf("%s: accepted", name)
		}
		if len(got) > 3*ChunkSize {
			t.Errorf("%s: released unverified data", name)
		}
	}
}

// TestNothingBeforeVerification checks that a flipped byte in chunk 1 releases chunk 0 only.
func TestNothingBeforeVerification(t *testing.T) {
	aead := testAEAD(t)
	plain := make([]byte, 2*ChunkSize+1)
	sealed := seal(t, aead, plain, ChunkSize)
	sealed[ChunkSize+Overhead+10] ^= 1
	got, err := open(aead, sealed)
	if !errors.Is(err, ErrTampered) {
		t.Fatalf("err = %v, want ErrTampered", err)
	}
	if len(got) != ChunkSize {
		t.Fatalf("released %d bytes, want exactly the first verified chunk (%d)", len(got), ChunkSize)
	}
}

func TestWrongAAD(t *testing.T) {
	aead := testAEAD(t)
	sealed := seal(t, aead, []byte("hello"), 10)
	_, err := io.ReadAll(NewReader(aead, []byte("other core"), bytes.NewReader(sealed)))
	if !errors.Is(err, ErrTampered) {
		t.Fatalf("err = %v, want ErrTampered", err)
	}
}

func concat(parts ...[]byte) []byte { return bytes.Join(parts, nil) }

func BenchmarkSeal(b *testing.B) {
	aead := testAEAD(b)
	buf := make([]byte, ChunkSize)
	w := NewWriter(aead, aad, io.Discard)
	b.SetBytes(ChunkSize)
	for b.Loop() {
		w.Write(buf)
	}
}

func BenchmarkOpen(b *testing.B) {
	aead := testAEAD(b)
	sealed := seal(b, aead, make([]byte, 64*ChunkSize), ChunkSize)
	b.SetBytes(int64(len(sealed)))
	buf := make([]byte, ChunkSize)
	for b.Loop() {
		r := NewReader(aead, aad, bytes.NewReader(sealed))
		for {
			if _, err := r.Read(buf); err != nil {
				if err != io.EOF {
					b.Fatal(err)
				}
				break
			}
		}
	}
}
