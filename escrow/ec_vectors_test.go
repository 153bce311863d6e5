package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

var updateECVectors = flag.Bool("update-ec-vectors", false, "regenerate testdata/vectors/ec-* and testdata/ec-vectors.json")

// The ecdh vectors (FORMAT.md section 8.2) are a set of their own, beside vectors.json, so that
// they are made without changing the older files: testdata/ec-vectors.json lists them, the keys
// are testdata/owner-p256.pem and owner-p384.pem (test keys, never used elsewhere), and
// `go test ./escrow -run TestECVectors -update-ec-vectors` regenerates them.

func loadECKey(t testing.TB, name string) *ecdsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*ecdsa.PrivateKey)
}

func loadECVectors(t *testing.T) []vector {
	if *updateECVectors {
		writeECVectors(t)
	}
	data, err := os.ReadFile("testdata/ec-vectors.json")
	if err != nil {
		t.Fatal(err)
	}
	var vf vectorFile
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&vf); err != nil {
		t.Fatal(err)
	}
	if len(vf.Files) < 10 {
		t.Fatalf("only %d ec vectors", len(vf.Files))
	}
	return vf.Files
}

// TestECVectors opens every ecdh vector with the P-256 and P-384 test keys, and again from its
// file key alone, and checks the outcome.
func TestECVectors(t *testing.T) {
	ids := []Identity{ecIdentity(t, loadECKey(t, "owner-p256.pem")), ecIdentity(t, loadECKey(t, "owner-p384.pem"))}
	for _, v := range loadECVectors(t) {
		file, err := os.ReadFile(filepath.Join("testdata/vectors", v.File))
		if err != nil {
			t.Fatal(err)
		}
		got, err := decrypt(file, ids...)
		checkVector(t, v, got, err)
		if v.FileKey == "" || v.Expect == "no-identity" || strings.HasPrefix(v.File, "ec-tampered-") {
			continue // a stanza that does not open is not the file key's business
		}
		key, _ := hex.DecodeString(v.FileKey)
		got, err = decryptWithKey(file, key)
		checkVector(t, v, got, err)
	}
}

func writeECVectors(t *testing.T) {
	p256, p384 := loadECKey(t, "owner-p256.pem"), loadECKey(t, "owner-p384.pem")
	owner, other := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	dir := "testdata/vectors"
	old, _ := filepath.Glob(filepath.Join(dir, "ec-*.p11e"))
	for _, f := range old {
		os.Remove(f)
	}
	var vs []vector
	add := func(name, expect string, key hostKey, file, plain []byte) {
		v := vector{File: name, Expect: expect, FileKey: hex.EncodeToString(key)}
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
		plain := bytes.Repeat([]byte("p11escrow ec vector "), size/20+1)[:size]
		file, h := encrypt(t, key, plain, rs...)
		return key, file, plain, h
	}
	ec := func(k *ecdsa.PrivateKey, role Role) Recipient { return &ECRecipient{Public: &k.PublicKey, Role: role} }

	key, file, plain, _ := make1(chunkSize+1, ec(p256, RoleOwner), recipient(other, RoleAuthority))
	add("ec-ok-p256-owner.p11e", "success", key, file, plain)
	key, file, plain, _ = make1(100, ec(p384, RoleOwner), recipient(other, RoleAuthority))
	add("ec-ok-p384-owner.p11e", "success", key, file, plain)
	key, file, plain, _ = make1(100, recipient(owner, RoleOwner), recipient(other, RoleAuthority), ec(p384, RoleRecipient))
	add("ec-ok-p384-recipient.p11e", "success", key, file, plain)

	key, file, _, h := make1(100, ec(p256, RoleOwner), recipient(other, RoleAuthority))
	hl := len(h.Marshal())
	hdr, payload := string(file[:hl]), file[hl:]
	sub := func(old, new string) []byte {
		if !strings.Contains(hdr, old) {
			t.Fatalf("ec vector generator: %q is not in the header", old)
		}
		return append(remac(t, key, strings.Replace(hdr, old, new, 1), false), payload...)
	}
	s := h.Stanzas[0]
	point := s.Args[1]
	raw, _ := b64.DecodeString(point)
	offCurve := bytes.Clone(raw)
	offCurve[64] ^= 1
	compressed := append([]byte{2 | raw[64]&1}, raw[1:33]...)
	otherEph, _ := ecdh.P256().GenerateKey(rand.Reader)
	body := b64.EncodeToString(s.Body)
	add("ec-header-unknown-curve.p11e", "header", key, sub("-> ecdh p256 ", "-> ecdh p521 "), nil)
	add("ec-header-curve-mismatch.p11e", "header", key, sub("-> ecdh p256 ", "-> ecdh p384 "), nil)
	add("ec-header-off-curve-point.p11e", "header", key, sub(point, b64.EncodeToString(offCurve)), nil)
	add("ec-header-compressed-point.p11e", "header", key, sub(point, b64.EncodeToString(compressed)), nil)
	add("ec-header-padded-point.p11e", "header", key, sub(point, point+"="), nil)
	add("ec-header-three-args.p11e", "header", key, sub(point+" ", ""), nil)
	add("ec-header-body-39.p11e", "header", key, sub("\n"+body+"\n", "\n"+b64.EncodeToString(s.Body[:39])+"\n"), nil)
	add("ec-tampered-body.p11e", "tampered", key, sub("\n"+body+"\n", "\n"+body[:10]+string(otherBase64(body[10]))+body[11:]+"\n"), nil)
	add("ec-tampered-ephemeral.p11e", "tampered", key, sub(point, b64.EncodeToString(otherEph.PublicKey().Bytes())), nil)
	stranger, _ := ecdsa.GenerateKey(p256.Curve, rand.Reader)
	key, file, _, _ = make1(11, ec(stranger, RoleOwner))
	add("ec-no-identity.p11e", "no-identity", key, file, nil)

	data, _ := json.MarshalIndent(vectorFile{
		Comment: "FORMAT.md section 8.2, ecdh stanzas. files: escrow/testdata/vectors/FILE, the keys testdata/owner-p256.pem and testdata/owner-p384.pem.",
		Files:   vs,
	}, "", "  ")
	if err := os.WriteFile("testdata/ec-vectors.json", append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}
