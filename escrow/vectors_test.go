package escrow

import (
	"bytes"
	"crypto"
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/p11escrow/p11escrow/escrow/internal/stream"
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

// vectorFile is testdata/vectors.json: the file vectors of FORMAT.md section 8. Record and
// request vectors are JSON documents, listed in testdata/documents.json.
type vectorFile struct {
	Comment string   `json:"comment"`
	Files   []vector `json:"files"`
}

func loadVectors(t *testing.T) []vector {
	if *updateVectors {
		writeVectors(t)
	}
	data, err := os.ReadFile("testdata/vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Files) < 40 {
		t.Fatalf("only %d vectors", len(vf.Files))
	}
	return vf.Files
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
//
// Every vector that has a header gets its file key. Every header-class vector carries a MAC that
// is valid under that key over its raw bytes through the "---" of its last line (see remac), so
// that it fails only for the syntax rule it was made to break: a lax parser that checks the MAC
// cannot call it tampered, nor accept it.
func writeVectors(t *testing.T) {
	owner, other := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	shortKey := newHostKey()[:16]
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
	make1 := func(size int, rs ...Recipient) (hostKey, []byte, []byte, *Header) {
		key := newHostKey()
		plain := bytes.Repeat([]byte("p11escrow vector "), size/17+1)[:size]
		if len(rs) == 0 {
			rs = []Recipient{recipient(owner, RoleOwner), recipient(other, RoleAuthority)}
		}
		file, h := encrypt(t, key, plain, rs...)
		return key, file, plain, h
	}
	for _, size := range []int{0, 1, chunkSize, 2*chunkSize + 1} {
		key, file, plain, _ := make1(size)
		add("ok-"+strings.ReplaceAll(itoaSize(size), " ", "")+".p11e", "success", key, file, plain)
	}
	{
		sha256Owner := &RSARecipient{Public: &owner.PublicKey, Hash: crypto.SHA256, Role: RoleOwner}
		key, file, plain, _ := make1(100, sha256Owner, recipient(other, RoleAuthority))
		add("ok-sha256-owner.p11e", "success", key, file, plain)
		key, file, plain, _ = make1(100, &RSARecipient{Public: &owner.PublicKey, Hash: crypto.SHA1, Role: RoleRecipient})
		add("ok-recipient-only.p11e", "success", key, file, plain)
		key, file, plain, h := make1(100)
		// A stanza of a type this version does not know is parsed and stepped over.
		u := &Stanza{Type: "x25519-future", Args: []string{"abc", "+/=?"}, Body: bytes.Repeat([]byte{7}, 48)}
		withUnknown := *h
		withUnknown.Stanzas = []*Stanza{h.Stanzas[0], u, h.Stanzas[1]}
		add("ok-unknown-stanza.p11e", "success", key, append(remac(t, key, string(withUnknown.Marshal()), false), file[len(h.Marshal()):]...), plain)
		key, file, _, h = make1(100, sha256Owner, recipient(other, RoleAuthority))
		ls := strings.Split(string(h.Marshal()), "\n")
		if !strings.HasPrefix(ls[2], "-> rsa-oaep sha256 ") {
			t.Fatalf("vector generator: line 3 is %q", ls[2])
		}
		f := bytes.Clone(file)
		i := len(ls[0]) + len(ls[1]) + len(ls[2]) + 3 + 5 // in the sha256 stanza's first body line
		f[i] = otherBase64(f[i])
		add("tampered-sha256-stanza-body.p11e", "tampered", key, f, nil)
	}
	key, file, plain, h := make1(2*chunkSize + 1)
	hl := len(h.Marshal())
	hdr := string(file[:hl])
	payload := file[hl:]
	// sub replaces old by new in the header and keeps the header's MAC valid under key.
	sub := func(old, new string) []byte {
		if !strings.Contains(hdr, old) {
			t.Fatalf("vector generator: %q is not in the header", old)
		}
		return append(remac(t, key, strings.Replace(hdr, old, new, 1), false), payload...)
	}
	flip := func(i int) []byte { f := bytes.Clone(file); f[i] ^= 1; return f }
	// flip64 changes the base64 character at i to another one, which stays canonical base64
	// anywhere but in a value's last character.
	flip64 := func(i int) []byte { f := bytes.Clone(file); f[i] = otherBase64(f[i]); return f }
	lines := strings.Split(hdr, "\n")
	macLine := lines[len(lines)-2]
	ownerLine := lines[2]
	bodyEnd := lines[2+6] // the short last line of the owner's 342-character body
	add("not-p11e-text.p11e", "not-p11e", nil, []byte("hello, world\n"), nil)
	add("not-p11e-age.p11e", "not-p11e", nil, []byte("age-encryption.org/v1\n-> X25519 abc\n"), nil)
	add("not-p11e-empty.p11e", "not-p11e", nil, nil, nil)
	add("not-p11e-short-prefix.p11e", "not-p11e", nil, []byte("p11escrow"), nil)
	add("not-p11e-upper-case.p11e", "not-p11e", nil, append([]byte("P11ESCROW/V1\n"), file[len("p11escrow/v1\n"):]...), nil)
	add("header-version-2.p11e", "header", key, sub("p11escrow/v1", "p11escrow/v2"), nil)
	add("header-version-suffix.p11e", "header", key, sub("p11escrow/v1\n", "p11escrow/v1.0\n"), nil)
	add("header-chunk-size.p11e", "header", key, sub(" 65536 ", " 65537 "), nil)
	add("header-upper-hex-id.p11e", "header", key, sub(h.ID.String(), strings.ToUpper(h.ID.String())), nil)
	add("header-crlf.p11e", "header", key, sub("core", "core\r"), nil)
	add("header-trailing-space.p11e", "header", key, sub(lines[1]+"\n", lines[1]+" \n"), nil)
	add("header-double-space.p11e", "header", key, sub("-> rsa-oaep sha1", "-> rsa-oaep  sha1"), nil)
	add("header-empty-last-arg.p11e", "header", key, sub(ownerLine+"\n", ownerLine+" \n"), nil)
	add("header-tab-in-arg.p11e", "header", key, sub(" owner\n", " own\ter\n"), nil)
	add("header-non-ascii-type.p11e", "header", key, sub("-> rsa-oaep sha1", "-> rsa-oa\xc3\xa9p sha1"), nil)
	add("header-del-in-arg.p11e", "header", key, sub(" owner\n", " own\x7fer\n"), nil)
	add("header-stanza-no-type.p11e", "header", key, sub(ownerLine+"\n", "->\n"), nil)
	add("header-unknown-hash.p11e", "header", key, sub("-> rsa-oaep sha1", "-> rsa-oaep md5"), nil)
	add("header-upper-case-hash.p11e", "header", key, sub("-> rsa-oaep sha1", "-> rsa-oaep SHA1"), nil)
	tag := h.Stanzas[0].Args[1]
	upTag := strings.ToUpper(tag)
	if upTag == tag {
		upTag = "A" + tag[1:] // all digits: make one upper-case letter
	}
	add("header-upper-hex-tag.p11e", "header", key, sub(" "+tag+" ", " "+upTag+" "), nil)
	add("header-rsa-oaep-two-args.p11e", "header", key, sub(" "+h.Stanzas[0].Args[1]+" owner\n", " "+h.Stanzas[0].Args[1]+"\n"), nil)
	add("header-unknown-role.p11e", "header", key, sub(" owner\n", " boss\n"), nil)
	add("header-two-owners.p11e", "header", key, sub(" authority\n", " owner\n"), nil)
	add("header-two-authorities.p11e", "header", key, sub(" owner\n", " authority\n"), nil)
	add("header-padded-body.p11e", "header", key, sub("\n"+bodyEnd+"\n", "\n"+bodyEnd+"==\n"), nil)
	add("header-padded-mac.p11e", "header", key, append(remac(t, key, hdr, true), payload...), nil)
	add("header-non-canonical-body.p11e", "header", key, sub("\n"+bodyEnd+"\n", "\n"+nonCanonical(bodyEnd)+"\n"), nil)
	add("header-long-body-line.p11e", "header", key, sub(lines[3]+"\n", lines[3]), nil)
	add("header-short-body-255.p11e", "header", key, shortBody(t, key, h, payload), nil)
	add("header-full-last-body-line.p11e", "header", key, fullLastLine(t, key, h, payload), nil)
	add("header-no-stanzas.p11e", "header", key, append(remac(t, key, lines[0]+"\n"+lines[1]+"\n"+macLine+"\n", false), payload...), nil)
	add("header-too-many-stanzas.p11e", "header", key, tooManyStanzas(t, key, h, payload), nil)
	add("header-too-long.p11e", "header", key, tooLong(t, key, h, payload), nil)
	add("header-mac-line-extra-field.p11e", "header", key, sub(macLine+"\n", macLine+" x\n"), nil)
	add("truncated-header.p11e", "truncated", key, file[:hl/2], nil)
	add("truncated-version-line.p11e", "truncated", key, file[:len("p11escrow/v1")], nil)
	add("truncated-magic.p11e", "truncated", key, file[:len("p11escrow/")], nil)
	add("truncated-inside-mac-line.p11e", "truncated", key, file[:hl-1], nil)
	add("truncated-no-payload.p11e", "truncated", key, file[:hl], nil)
	add("truncated-chunk-boundary.p11e", "truncated", key, file[:hl+chunkSize+16], nil)
	add("truncated-inside-last-tag.p11e", "truncated", key, file[:len(file)-5], nil)
	add("truncated-short-tail-after-full-chunk.p11e", "truncated", key, file[:hl+chunkSize+16+15], nil)
	add("tampered-payload-byte.p11e", "tampered", key, flip(hl+chunkSize+16+7), nil)
	add("tampered-last-tag.p11e", "tampered", key, flip(len(file)-1), nil)
	add("tampered-header-mac.p11e", "tampered", key, flip64(hl-10), nil)
	add("tampered-stanza-body.p11e", "tampered", key, flip64(len(lines[0])+len(lines[1])+len(lines[2])+3+5), nil)
	add("tampered-commitment.p11e", "tampered", key, sub(b64.EncodeToString(h.Commitment[:]), b64.EncodeToString(make([]byte, 32))), nil)
	add("tampered-trailing-data.p11e", "tampered", key, append(bytes.Clone(file), 0), nil)
	add("tampered-mid-chunk-cut.p11e", "tampered", key, file[:hl+chunkSize+16+100], nil)
	c := chunkSize + 16
	swapped := append(append(append([]byte(hdr), payload[c:2*c]...), payload[:c]...), payload[2*c:]...)
	add("tampered-swapped-chunks.p11e", "tampered", key, swapped, nil)
	{
		// A full last chunk, then an empty last chunk sealed correctly: only an empty plaintext
		// has an empty last chunk (FORMAT.md section 4).
		key, file, _, h := make1(chunkSize)
		hl := len(h.Marshal())
		aead := newAEAD(key)
		mid := stream.Nonce(0, false)
		last := stream.Nonce(1, true)
		one := stream.Nonce(0, true)
		plain, err := aead.Open(nil, one[:], file[hl:], h.Core())
		if err != nil {
			t.Fatal(err)
		}
		f := append(bytes.Clone(file[:hl]), aead.Seal(nil, mid[:], plain, h.Core())...)
		f = append(f, aead.Seal(nil, last[:], nil, h.Core())...)
		add("tampered-empty-last-chunk-after-full.p11e", "tampered", key, f, nil)
	}
	add("tampered-16-byte-key.p11e", "tampered", shortKey, shortKeyFile(t, shortKey, owner, other), nil)
	_ = plain
	otherKey, otherFile, _, _ := make1(11, recipient(other, RoleOwner))
	add("no-identity.p11e", "no-identity", otherKey, otherFile, nil)
	data, _ := json.MarshalIndent(vectorFile{
		Comment: "FORMAT.md section 8. files: escrow/testdata/vectors/FILE, the owner key testdata/owner.pem. Record and request vectors: testdata/documents.json.",
		Files:   vs,
	}, "", "  ")
	if err := os.WriteFile("testdata/vectors.json", append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

// remac gives the header text hdr (which may be malformed) a MAC that is valid under key over its
// raw bytes through the "---" of its last line, with that line's nonce. With pad, the MAC is
// written as padded base64.
func remac(t *testing.T, key []byte, hdr string, pad bool) []byte {
	t.Helper()
	i := strings.LastIndex(hdr[:len(hdr)-1], "\n") + 1
	f := strings.Split(hdr[i:len(hdr)-1], " ")
	if len(f) < 3 || f[0] != macPrefix {
		t.Fatalf("vector generator: last header line %q is not a mac-line", hdr[i:])
	}
	var nonce [11]byte
	if n, err := b64.Decode(nonce[:], []byte(f[1])); err != nil || n != 11 {
		t.Fatalf("vector generator: bad nonce %q", f[1])
	}
	tag := gmac(newAEAD(key), MACNonce(nonce), []byte(hdr[:i+len(macPrefix)]))
	f[2] = b64.EncodeToString(tag[:])
	if pad {
		f[2] = base64.StdEncoding.EncodeToString(tag[:])
	}
	return []byte(hdr[:i] + strings.Join(f, " ") + "\n")
}

// validMAC reports whether the header at the start of file has a MAC that verifies under key, as
// a lax reader would check it: over the raw bytes through the "---" of the first line that starts
// with "--- ", with padded or unpadded base64.
func validMAC(file, key []byte) bool {
	at := 0
	for at < len(file) {
		end := bytes.IndexByte(file[at:], '\n')
		if end < 0 {
			return false
		}
		line := string(file[at : at+end])
		if strings.HasPrefix(line, macPrefix+" ") {
			f := strings.Split(line, " ")
			if len(f) < 3 {
				return false
			}
			nonce, err1 := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[1], "="))
			tag, err2 := base64.RawStdEncoding.DecodeString(strings.TrimRight(f[2], "="))
			if err1 != nil || err2 != nil || len(nonce) != 11 || len(tag) != 16 {
				return false
			}
			var n [11]byte
			copy(n[:], nonce)
			want := gmac(newAEAD(key), MACNonce(n), file[:at+len(macPrefix)])
			return bytes.Equal(want[:], tag)
		}
		at += end + 1
	}
	return false
}

// TestHeaderVectorsHaveValidMACs checks FORMAT.md section 8's promise about header vectors.
func TestHeaderVectorsHaveValidMACs(t *testing.T) {
	n := 0
	for _, v := range loadVectors(t) {
		if v.Expect != "header" {
			continue
		}
		n++
		file, err := os.ReadFile(filepath.Join("testdata/vectors", v.File))
		if err != nil {
			t.Fatal(err)
		}
		key, err := hex.DecodeString(v.FileKey)
		if err != nil || len(key) != 32 {
			t.Errorf("%s: no file key", v.File)
			continue
		}
		if !validMAC(file, key) {
			t.Errorf("%s: the MAC does not verify under the published key", v.File)
		}
	}
	if n < 20 {
		t.Errorf("only %d header vectors", n)
	}
}

// TestEveryVectorHasAFileKey checks that every vector with a header publishes its file key.
func TestEveryVectorHasAFileKey(t *testing.T) {
	for _, v := range loadVectors(t) {
		if k, err := hex.DecodeString(v.FileKey); v.Expect != "not-p11e" && (err != nil || len(k) == 0) {
			t.Errorf("%s: no file key", v.File)
		}
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

const base64Alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"

// otherBase64 returns another base64 character than c.
func otherBase64(c byte) byte {
	return base64Alphabet[strings.IndexByte(base64Alphabet, c)^1]
}

// nonCanonical changes the last character of an unpadded base64 line so that it has non-zero
// padding bits: it decodes to the same bytes under a lax decoder, and is rejected by a strict one.
func nonCanonical(line string) string {
	last := strings.IndexByte(base64Alphabet, line[len(line)-1])
	return line[:len(line)-1] + string(base64Alphabet[last|1])
}

func tooManyStanzas(t *testing.T, key []byte, h *Header, payload []byte) []byte {
	many := *h
	for len(many.Stanzas) <= maxStanzas {
		s := *h.Stanzas[0]
		s.Args = []string{s.Args[0], s.Args[1], string(RoleRecipient)}
		many.Stanzas = append(many.Stanzas, &s)
	}
	return append(remac(t, key, string(many.Marshal()), false), payload...)
}

// tooLong is a header of 32 stanzas, within the stanza limit, whose size is over 65536 bytes.
func tooLong(t *testing.T, key []byte, h *Header, payload []byte) []byte {
	long := *h
	for len(long.Stanzas) < maxStanzas {
		long.Stanzas = append(long.Stanzas, &Stanza{Type: "padding", Body: make([]byte, 2100)})
	}
	enc := long.Marshal()
	if len(enc) <= maxHeaderSize {
		t.Fatalf("vector generator: a %d-byte header is not too long", len(enc))
	}
	return append(remac(t, key, string(enc), false), payload...)
}

// shortBody is the header with an rsa-oaep body of 255 bytes, which no accepted key size gives.
func shortBody(t *testing.T, key []byte, h *Header, payload []byte) []byte {
	short := *h
	s := *h.Stanzas[1]
	s.Body = s.Body[:255]
	short.Stanzas = []*Stanza{h.Stanzas[0], &s}
	return append(remac(t, key, string(short.Marshal()), false), payload...)
}

// fullLastLine is the header with an unknown-type stanza whose body ends in a full 64-character
// line, without the short (here empty) line that must end every body.
func fullLastLine(t *testing.T, key []byte, h *Header, payload []byte) []byte {
	u := &Stanza{Type: "x25519-future", Body: bytes.Repeat([]byte{7}, 48)}
	with := *h
	with.Stanzas = []*Stanza{h.Stanzas[0], u, h.Stanzas[1]}
	enc := string(with.Marshal())
	body := b64.EncodeToString(u.Body)
	enc = strings.Replace(enc, body+"\n\n", body+"\n", 1)
	return append(remac(t, key, enc, false), payload...)
}

// shortKeyFile is a file made exactly as a writer would, but under a 16-byte key: stanzas that
// wrap it, a commitment over it, and a MAC and chunks under AES-128-GCM. Every reader, on a host
// or on a token, must refuse it by the 32-byte key rule (FORMAT.md section 2.2).
func shortKeyFile(t *testing.T, key []byte, owner, authority *rsa.PrivateKey) []byte {
	block, err := aes.NewCipher(key)
	if err != nil {
		t.Fatal(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		t.Fatal(err)
	}
	h := &Header{ID: NewFileID()}
	h.Commitment = Commitment(h.ID, key)
	for _, r := range []struct {
		k    *rsa.PrivateKey
		role Role
	}{{owner, RoleOwner}, {authority, RoleAuthority}} {
		body, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, &r.k.PublicKey, key, nil)
		if err != nil {
			t.Fatal(err)
		}
		fpr, _ := FingerprintOf(&r.k.PublicKey)
		h.Stanzas = append(h.Stanzas, &Stanza{Type: typeRSAOAEP, Args: []string{"sha1", fpr.Tag(), string(r.role)}, Body: body})
	}
	rand.Read(h.Nonce[:])
	h.MAC = gmac(aead, MACNonce(h.Nonce), h.macInput())
	var buf bytes.Buffer
	buf.Write(h.Marshal())
	w := stream.NewWriter(aead, h.Core(), &buf)
	w.Write([]byte("a file under a 16-byte key"))
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}
