package escrow

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"io"
	mrand "math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

// openAt opens file with DecryptReaderAt and reads it all through an io.SectionReader, the way a
// caller wanting the whole plaintext would.
func openAt(file []byte, ids ...Identity) ([]byte, error) {
	r, n, err := DecryptReaderAt(bytes.NewReader(file), int64(len(file)), ids...)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.NewSectionReader(r, 0, n))
}

// openAtWithKey is openAt from the file key alone, through the helper DecryptReaderAt uses.
func openAtWithKey(file, key []byte) ([]byte, error) {
	src := bytes.NewReader(file)
	h, start, err := parseHeaderAt(src, int64(len(file)))
	if err != nil {
		return nil, err
	}
	r, err := h.openReaderAt(key, src, start, int64(len(file)))
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.NewSectionReader(r, 0, r.size))
}

// checkReadAt reads [off, off+length) and checks the bytes and io.ReaderAt's error contract.
func checkReadAt(t *testing.T, r io.ReaderAt, plain []byte, off int64, length int) {
	t.Helper()
	p := make([]byte, length)
	n, err := r.ReadAt(p, off)
	want := max(0, min(length, len(plain)-int(off)))
	if n != want {
		t.Fatalf("ReadAt(%d bytes, %d) of %d: n = %d, want %d (err %v)", length, off, len(plain), n, want, err)
	}
	if n > 0 && !bytes.Equal(p[:n], plain[off:off+int64(n)]) {
		t.Fatalf("ReadAt(%d bytes, %d) of %d: wrong bytes", length, off, len(plain))
	}
	if n < length && err != io.EOF {
		t.Fatalf("ReadAt(%d bytes, %d) of %d: short read with err %v, want io.EOF", length, off, len(plain), err)
	}
	if off >= int64(len(plain)) && err != io.EOF { // even for an empty p, as bytes.Reader does
		t.Fatalf("ReadAt(%d bytes, %d) of %d: err %v at or past the end, want io.EOF", length, off, len(plain), err)
	}
	if n == length && off < int64(len(plain)) && err != nil {
		t.Fatalf("ReadAt(%d bytes, %d) of %d: full read with err %v", length, off, len(plain), err)
	}
}

func TestReaderAtRandomReads(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	for _, size := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3*chunkSize + 5} {
		plain := make([]byte, size)
		rand.Read(plain)
		file, _ := encrypt(t, newHostKey(), plain, recipient(owner, RoleOwner))
		r, n, err := DecryptReaderAt(bytes.NewReader(file), int64(len(file)), identity(owner))
		if err != nil {
			t.Fatalf("size %d: %v", size, err)
		}
		if n != int64(size) {
			t.Fatalf("size %d: DecryptReaderAt reports %d", size, n)
		}
		got, err := io.ReadAll(io.NewSectionReader(r, 0, n))
		if err != nil || !bytes.Equal(got, plain) {
			t.Fatalf("size %d: read all: err %v, equal %v", size, err, bytes.Equal(got, plain))
		}
		rng := mrand.New(mrand.NewPCG(uint64(size), 1))
		for range 200 {
			off := rng.Int64N(int64(size) + 10) // sometimes past the end
			checkReadAt(t, r, plain, off, rng.IntN(3*chunkSize))
		}
		checkReadAt(t, r, plain, 0, size)   // exactly everything: nil, not io.EOF
		checkReadAt(t, r, plain, 0, size+1) // one past: io.EOF
		checkReadAt(t, r, plain, int64(size), 0)
		checkReadAt(t, r, plain, int64(size), 1)
		if size > 0 {
			checkReadAt(t, r, plain, int64(size-1), 0)
		}
		if _, err := r.ReadAt(make([]byte, 1), -1); err == nil || err == io.EOF {
			t.Fatalf("size %d: negative offset: err = %v", size, err)
		}
	}
}

func TestReaderAtChunkBoundaries(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	plain := make([]byte, 3*chunkSize+5)
	rand.Read(plain)
	file, _ := encrypt(t, newHostKey(), plain, recipient(owner, RoleOwner))
	r, _, err := DecryptReaderAt(bytes.NewReader(file), int64(len(file)), identity(owner))
	if err != nil {
		t.Fatal(err)
	}
	for k := int64(1); k <= 3; k++ {
		b := k * chunkSize
		checkReadAt(t, r, plain, b-1, 2)  // last byte of one chunk, first of the next
		checkReadAt(t, r, plain, b-7, 14) // a few bytes either side
		checkReadAt(t, r, plain, b, chunkSize)
		checkReadAt(t, r, plain, b-chunkSize, chunkSize) // exactly one chunk
	}
	checkReadAt(t, r, plain, 10, 3*chunkSize)          // chunks 0 to 3
	checkReadAt(t, r, plain, chunkSize-1, chunkSize+2) // first byte of 0, all of 1, first of 2
	// Reading backwards defeats the last-chunk cache on every call.
	for off := int64(len(plain)) - 100; off >= 0; off -= chunkSize / 3 {
		checkReadAt(t, r, plain, off, 100)
	}
}

func TestReaderAtConcurrent(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	plain := make([]byte, 3*chunkSize+5)
	rand.Read(plain)
	file, _ := encrypt(t, newHostKey(), plain, recipient(owner, RoleOwner))
	r, _, err := DecryptReaderAt(bytes.NewReader(file), int64(len(file)), identity(owner))
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make(chan error, 8)
	for g := range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			rng := mrand.New(mrand.NewPCG(uint64(g), 2))
			for range 100 {
				off := rng.Int64N(int64(len(plain)))
				p := make([]byte, rng.IntN(chunkSize+100)+1)
				n, err := r.ReadAt(p, off)
				if (err != nil && err != io.EOF) || !bytes.Equal(p[:n], plain[off:off+int64(n)]) ||
					(n < len(p) && off+int64(n) != int64(len(plain))) {
					errs <- errors.New("concurrent read returned wrong data or error")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
}

// TestReaderAtVectors checks that every vector has the same outcome, and on success the same
// plaintext, through DecryptReaderAt as through Decrypt, from the RSA key and from the file key.
func TestReaderAtVectors(t *testing.T) {
	owner := identity(loadKey(t, "owner.pem"))
	for _, v := range loadVectors(t) {
		file, err := os.ReadFile(filepath.Join("testdata/vectors", v.File))
		if err != nil {
			t.Fatal(err)
		}
		_, want := decrypt(file, owner)
		got, err := openAt(file, owner)
		if outcome(err) != outcome(want) {
			t.Errorf("%s: DecryptReaderAt outcome %q (%v), Decrypt %q (%v)", v.File, outcome(err), err, outcome(want), want)
		}
		checkVector(t, v, got, err)
		if v.FileKey == "" || v.Expect == "no-identity" {
			continue
		}
		key, _ := hex.DecodeString(v.FileKey)
		_, want = decryptWithKey(file, key)
		got, err = openAtWithKey(file, key)
		if outcome(err) != outcome(want) {
			t.Errorf("%s with key: outcome %q (%v), Decrypt %q (%v)", v.File, outcome(err), err, outcome(want), want)
		}
		checkVector(t, v, got, err)
	}
}

// TestReaderAtHeaderLength checks the premise of parseHeaderAt: for every file that parses, the
// re-marshalled header is exactly the bytes the file starts with.
func TestReaderAtHeaderLength(t *testing.T) {
	for _, v := range loadVectors(t) {
		file, err := os.ReadFile(filepath.Join("testdata/vectors", v.File))
		if err != nil {
			t.Fatal(err)
		}
		h, _, err := ParseHeader(bytes.NewReader(file))
		if err != nil {
			continue
		}
		if !bytes.HasPrefix(file, h.Marshal()) {
			t.Errorf("%s: the re-marshalled header is not a prefix of the file", v.File)
		}
	}
}

// TestReaderAtTamperedMiddleChunk flips a byte in chunk 1 of 4. Opening succeeds (the last chunk
// is intact); reads of the other chunks succeed; any read touching chunk 1 returns 0 and a
// TamperedError and leaves no plaintext in p.
func TestReaderAtTamperedMiddleChunk(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	// Letters only, so that neither 0 (wiped) nor 0xAA (untouched) can be mistaken for plaintext.
	plain := make([]byte, 3*chunkSize+5)
	for i := range plain {
		plain[i] = 'a' + byte(i%26)
	}
	file, h := encrypt(t, newHostKey(), plain, recipient(owner, RoleOwner))
	hl := len(h.Marshal())
	file[hl+(chunkSize+16)+100] ^= 0x01
	r, n, err := DecryptReaderAt(bytes.NewReader(file), int64(len(file)), identity(owner))
	if err != nil {
		t.Fatalf("open: %v (the flip is in a middle chunk, checked only when read)", err)
	}
	checkReadAt(t, r, plain, 0, chunkSize)
	checkReadAt(t, r, plain, 2*chunkSize, chunkSize)
	checkReadAt(t, r, plain, 2*chunkSize+100, int(n))
	for _, rd := range []struct{ off, len int64 }{
		{chunkSize, chunkSize},          // exactly chunk 1
		{chunkSize + 500, 10},           // inside it
		{chunkSize - 10, 20},            // chunk 0 (verifies) then chunk 1
		{0, n},                          // everything
		{2*chunkSize - 1, chunkSize},    // last byte of 1, then 2
		{chunkSize + 500, 10},           // again: the failure is not cached away
		{chunkSize / 2, 3 * chunkSize},  // from a verified chunk through the bad one to the end
		{chunkSize - 1, chunkSize + 10}, // 0, 1, 2
	} {
		p := bytes.Repeat([]byte{0xaa}, int(rd.len))
		got, err := r.ReadAt(p, rd.off)
		var te *TamperedError
		if got != 0 || !errors.As(err, &te) {
			t.Errorf("ReadAt(%d, %d) = %d, %v; want 0, TamperedError", rd.len, rd.off, got, err)
		}
		for i, c := range p {
			if c != 0xaa && c != 0 {
				t.Errorf("ReadAt(%d, %d) left plaintext in p at %d", rd.len, rd.off, i)
				break
			}
		}
	}
	// The bad chunk did not poison later reads of good ones.
	checkReadAt(t, r, plain, 0, 10)
	checkReadAt(t, r, plain, 3*chunkSize, 5)
}

// TestReaderAtOpenChecksLastChunk checks that damage to the end of the payload is caught by
// DecryptReaderAt itself, before any ReadAt, with Decrypt's error class.
func TestReaderAtOpenChecksLastChunk(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	key := newHostKey()
	plain := make([]byte, 2*chunkSize)
	rand.Read(plain)
	file, h := encrypt(t, key, plain, recipient(owner, RoleOwner))
	hl := len(h.Marshal())
	c := chunkSize + 16
	empty, _ := encrypt(t, key, nil, recipient(owner, RoleOwner)) // chunk 0, empty and last
	flipLast := bytes.Clone(file)
	flipLast[len(file)-20] ^= 1
	cases := []struct {
		name string
		file []byte
	}{
		{"cut at a chunk boundary", file[:hl+c]},
		{"cut inside the last tag", file[:len(file)-3]},
		{"cut inside the last chunk", file[:len(file)-100]},
		{"cut 5 bytes into the last chunk", file[:hl+c+5]},                 // truncated: chunk 0 verifies
		{"trailing byte", append(bytes.Clone(file), 0)},                    // tampered: chunk 1 is no longer last
		{"trailing bytes", append(bytes.Clone(file), make([]byte, 15)...)}, // the same, with a longer tail
		{"flipped byte in the last chunk", flipLast},
		{"empty chunk after the last", append(bytes.Clone(file), empty[len(empty)-16:]...)},
		{"no payload", file[:hl]},
	}
	for _, tc := range cases {
		_, _, err := DecryptReaderAt(bytes.NewReader(tc.file), int64(len(tc.file)), identity(owner))
		if err == nil {
			t.Errorf("%s: DecryptReaderAt accepted it", tc.name)
			continue
		}
		_, want := decrypt(tc.file, identity(owner))
		if outcome(err) != outcome(want) {
			t.Errorf("%s: outcome %q (%v), Decrypt %q (%v)", tc.name, outcome(err), err, outcome(want), want)
		}
	}
	// A size larger than the source is a truncated file, not a panic or a short plaintext.
	if _, _, err := DecryptReaderAt(bytes.NewReader(file), int64(len(file)+c), identity(owner)); outcome(err) != "truncated" {
		t.Errorf("size beyond the source: err = %v, want TruncatedError", err)
	}
	if _, _, err := DecryptReaderAt(bytes.NewReader(file), -1, identity(owner)); err == nil {
		t.Error("negative size accepted")
	}
}
