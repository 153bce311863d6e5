package stream

import (
	"bytes"
	"io"
	"testing"
)

// The benchmarks below put each stream figure beside its limit. The limit of the parallel
// pipeline is Workers() times the single-core crypto/cipher AES-256-GCM rate of
// BenchmarkGCMSealBaseline and BenchmarkGCMOpenBaseline; bench/report.sh computes the ratio.

// BenchmarkGCMSealBaseline is bare crypto/cipher AES-256-GCM on one core, 64 KiB per call.
func BenchmarkGCMSealBaseline(b *testing.B) {
	aead := testAEAD(b)
	buf := make([]byte, ChunkSize, ChunkSize+Overhead)
	nonce := make([]byte, NonceSize)
	b.SetBytes(ChunkSize)
	for b.Loop() {
		aead.Seal(buf[:0], nonce, buf, aad)
	}
}

// BenchmarkGCMOpenBaseline is bare crypto/cipher AES-256-GCM decryption on one core.
func BenchmarkGCMOpenBaseline(b *testing.B) {
	aead := testAEAD(b)
	nonce := make([]byte, NonceSize)
	sealed := aead.Seal(nil, nonce, make([]byte, ChunkSize), aad)
	out := make([]byte, 0, ChunkSize)
	b.SetBytes(ChunkSize)
	for b.Loop() {
		if _, err := aead.Open(out, nonce, sealed, aad); err != nil {
			b.Fatal(err)
		}
	}
}

// benchSize is the payload of the whole-stream benchmarks: large enough to fill the pipeline
// many times over.
const benchSize = 64 << 20

// BenchmarkSealStream seals 64 MiB through io.Copy (ReadFrom) on Workers() cores, as the CLI does.
func BenchmarkSealStream(b *testing.B) { benchSealStream(b, Workers()) }

// BenchmarkSealStreamSequential is the same on one core, the pre-pipeline design.
func BenchmarkSealStreamSequential(b *testing.B) { benchSealStream(b, 1) }

func benchSealStream(b *testing.B, workers int) {
	aead := testAEAD(b)
	b.SetBytes(benchSize)
	for b.Loop() {
		w := newWriter(aead, aad, io.Discard, workers)
		if _, err := io.Copy(w, io.LimitReader(zeros{}, benchSize)); err != nil {
			b.Fatal(err)
		}
		if err := w.Close(); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkOpenStream opens 64 MiB through io.Copy (WriteTo) on Workers() cores.
func BenchmarkOpenStream(b *testing.B) { benchOpenStream(b, Workers()) }

// BenchmarkOpenStreamSequential is the same on one core.
func BenchmarkOpenStreamSequential(b *testing.B) { benchOpenStream(b, 1) }

func benchOpenStream(b *testing.B, workers int) {
	aead := testAEAD(b)
	sealed := seal(b, aead, make([]byte, benchSize), ChunkSize)
	b.SetBytes(benchSize)
	for b.Loop() {
		r := newReader(aead, aad, bytes.NewReader(sealed), workers)
		if _, err := io.Copy(io.Discard, r); err != nil {
			b.Fatal(err)
		}
		r.Close()
	}
}
