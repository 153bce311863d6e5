package escrow

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateVectors = flag.Bool("update-vectors", false, "regenerate testdata/vectors")

// vector is one entry of testdata/vectors.json.
type vector struct {
	File      string `json:"file"`
	Expect    string `json:"expect"`                     // success, not-p11e, header, truncated, tampered, no-identity
	FileKey   string `json:"file_key,omitempty"`         // hex, where the file has one
	Plaintext string `json:"plaintext_sha256,omitempty"` // hex, on success
}

// outcome classifies an error into the vector outcome names of FORMAT.md section 8.
func outcome(err error) string {
	var (
		he *HeaderError
		te *TruncatedError
		ta *TamperedError
		ni *NoIdentityError
	)
	switch {
	case err == nil:
		return "success"
	case errors.Is(err, ErrNotP11e):
		return "not-p11e"
	case errors.As(err, &he):
		return "header"
	case errors.As(err, &te):
		return "truncated"
	case errors.As(err, &ta):
		return "tampered"
	case errors.As(err, &ni):
		return "no-identity"
	}
	return "unexpected: " + err.Error()
}

func loadVectors(t *testing.T) []vector {
	if *updateVectors {
		writeVectors(t)
	}
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vs []vector
	if err := json.Unmarshal(data, &vs); err != nil {
		t.Fatal(err)
	}
	if len(vs) < 20 {
		t.Fatalf("only %d vectors", len(vs))
	}
	return vs
}

func checkVector(t *testing.T, v vector, got []byte, err error) {
	t.Helper()
	if o := outcome(err); o != v.Expect {
		t.Errorf("%s: outcome %q (%v), want %q", v.File, o, err, v.Expect)
		return
	}
	if v.Expect == "success" {
		sum := sha256.Sum256(got)
		if hex.EncodeToString(sum[:]) != v.Plaintext {
			t.Errorf("%s: plaintext hash differs", v.File)
		}
	}
}

func TestVectors(t *testing.T) {
	owner := identity(loadKey(t, "owner.pem"))
	for _, v := range loadVectors(t) {
		file, err := os.ReadFile(filepath.Join("testdata/vectors", v.File))
		if err != nil {
			t.Fatal(err)
		}
		got, err := decrypt(file, owner)
		checkVector(t, v, got, err)
	}
}

func TestVectorsWithKey(t *testing.T) {
	for _, v := range loadVectors(t) {
		if v.FileKey == "" || v.Expect == "no-identity" {
			continue
		}
		key, _ := hex.DecodeString(v.FileKey)
		file, err := os.ReadFile(filepath.Join("testdata/vectors", v.File))
		if err != nil {
			t.Fatal(err)
		}
		got, err := decryptWithKey(file, key)
		checkVector(t, v, got, err)
	}
}

// writeVectors regenerates the vectors. Run: go test ./escrow -run TestVectors -update-vectors
func writeVectors(t *testing.T) {
	owner, other := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	var vs []vector
	dir := "testdata/vectors"
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	add := func(name, expect string, key hostKey, file, plain []byte) {
		v := vector{File: name, Expect: expect}
		if key != nil {
			v.FileKey = hex.EncodeToString(key)
		}
		if expect == "success" {
			sum := sha256.Sum256(plain)
			v.Plaintext = hex.EncodeToString(sum[:])
		}
		if err := os.WriteFile(filepath.Join(dir, name), file, 0o644); err != nil {
			t.Fatal(err)
		}
		vs = append(vs, v)
	}
	make1 := func(size int) (hostKey, []byte, []byte, *Header) {
		key := newHostKey()
		plain := bytes.Repeat([]byte("p11escrow vector "), size/17+1)[:size]
		file, h := encrypt(t, key, plain, recipient(owner, RoleOwner), recipient(other, RoleAuthority))
		return key, file, plain, h
	}
	for _, size := range []int{0, 1, chunkSize, 2*chunkSize + 1} {
		key, file, plain, _ := make1(size)
		add("ok-"+strings.ReplaceAll(itoaSize(size), " ", "")+".p11e", "success", key, file, plain)
	}
	key, file, plain, h := make1(2*chunkSize + 1)
	hl := len(h.Marshal())
	hdr := string(file[:hl])
	payload := file[hl:]
	sub := func(old, new string) []byte {
		return append([]byte(strings.Replace(hdr, old, new, 1)), payload...)
	}
	flip := func(i int) []byte { f := bytes.Clone(file); f[i] ^= 1; return f }
	lines := strings.Split(hdr, "\n")
	add("not-p11e-text.p11e", "not-p11e", nil, []byte("hello, world\n"), nil)
	add("not-p11e-age.p11e", "not-p11e", nil, []byte("age-encryption.org/v1\n-> X25519 abc\n"), nil)
	add("not-p11e-empty.p11e", "not-p11e", nil, nil, nil)
	add("header-version-2.p11e", "header", key, sub("p11escrow/v1", "p11escrow/v2"), nil)
	add("header-chunk-size.p11e", "header", key, sub(" 65536 ", " 65537 "), nil)
	add("header-upper-hex-id.p11e", "header", key, sub(h.ID.String(), strings.ToUpper(h.ID.String())), nil)
	add("header-crlf.p11e", "header", key, sub("core", "core\r"), nil)
	add("header-double-space.p11e", "header", key, sub("-> rsa-oaep sha1", "-> rsa-oaep  sha1"), nil)
	add("header-unknown-hash.p11e", "header", key, sub("-> rsa-oaep sha1", "-> rsa-oaep md5"), nil)
	add("header-unknown-role.p11e", "header", key, sub(" owner\n", " boss\n"), nil)
	add("header-two-owners.p11e", "header", key, sub(" authority\n", " owner\n"), nil)
	add("header-padded-base64.p11e", "header", key, sub(lines[len(lines)-2], lines[len(lines)-2]+"="), nil)
	add("header-long-body-line.p11e", "header", key, sub(lines[3]+"\n", lines[3]), nil)
	add("header-no-stanzas.p11e", "header", key, append([]byte(lines[0]+"\n"+lines[1]+"\n"+lines[len(lines)-2]+"\n"), payload...), nil)
	add("header-too-many-stanzas.p11e", "header", key, tooManyStanzas(h, payload), nil)
	add("truncated-header.p11e", "truncated", key, file[:hl/2], nil)
	add("truncated-no-payload.p11e", "truncated", key, file[:hl], nil)
	add("truncated-chunk-boundary.p11e", "truncated", key, file[:hl+chunkSize+16], nil)
	add("tampered-payload-byte.p11e", "tampered", key, flip(hl+chunkSize+16+7), nil)
	add("tampered-last-tag.p11e", "tampered", key, flip(len(file)-1), nil)
	add("tampered-header-mac.p11e", "tampered", key, flip(hl-3), nil)
	add("tampered-stanza-body.p11e", "tampered", key, flip(len(lines[0])+len(lines[1])+len(lines[2])+5), nil)
	add("tampered-commitment.p11e", "tampered", key, sub(b64.EncodeToString(h.Commitment[:]), b64.EncodeToString(make([]byte, 32))), nil)
	add("tampered-trailing-data.p11e", "tampered", key, append(bytes.Clone(file), 0), nil)
	add("truncated-inside-last-tag.p11e", "truncated", key, file[:len(file)-5], nil)
	add("tampered-mid-chunk-cut.p11e", "tampered", key, file[:hl+chunkSize+16+100], nil)
	c := chunkSize + 16
	swapped := append(append(append([]byte(hdr), payload[c:2*c]...), payload[:c]...), payload[2*c:]...)
	add("tampered-swapped-chunks.p11e", "tampered", key, swapped, nil)
	_ = plain
	otherFile, _ := encrypt(t, newHostKey(), []byte("not for you"), recipient(other, RoleOwner))
	add("no-identity.p11e", "no-identity", nil, otherFile, nil)
	data, _ := json.MarshalIndent(vs, "", "  ")
	if err := os.WriteFile("testdata/vectors.json", append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func itoaSize(n int) string {
	switch n {
	case 0:
		return "empty"
	case 1:
		return "1-byte"
	case chunkSize:
		return "one-full-chunk"
	}
	return "three-chunks"
}

func tooManyStanzas(h *Header, payload []byte) []byte {
	many := *h
	for len(many.Stanzas) <= maxStanzas {
		s := *h.Stanzas[0]
		s.Args = []string{s.Args[0], s.Args[1], string(RoleRecipient)}
		many.Stanzas = append(many.Stanzas, &s)
	}
	return append(many.Marshal(), payload...)
}
