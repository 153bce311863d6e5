package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"strings"
	"testing"
	"time"
)

func newECKey(t testing.TB, c elliptic.Curve) *ecdsa.PrivateKey {
	t.Helper()
	k, err := ecdsa.GenerateKey(c, rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func ecIdentity(t testing.TB, k *ecdsa.PrivateKey) *ECIdentity {
	t.Helper()
	priv, err := k.ECDH()
	if err != nil {
		t.Fatal(err)
	}
	return &ECIdentity{Public: &k.PublicKey, Key: ECHostKey{priv}}
}

// TestKeyWrapPaddedRFC5649 checks the host key wrap against RFC 5649 section 6's vectors, and
// that every changed byte of a wrapped key is refused.
func TestKeyWrapPaddedRFC5649(t *testing.T) {
	h := func(s string) []byte {
		b, err := hex.DecodeString(strings.ReplaceAll(s, " ", ""))
		if err != nil {
			t.Fatal(err)
		}
		return b
	}
	kek := h("5840df6e29b02af1 ab493b705bf16ea1 ae8338f4dcc176a8")
	for _, v := range []struct{ key, wrapped string }{
		{"c37b7e6492584340 bed1220780894115 5068f738", "138bdeaa9b8fa7fc 61f97742e72248ee 5ae6ae5360d1ae6a 5f54f373fa543b6a"},
		{"466f7250617369", "afbeb0f07dfbf541 9200f2ccb50bb24f"},
	} {
		got, err := WrapKeyPadded(kek, h(v.key))
		if err != nil || !bytes.Equal(got, h(v.wrapped)) {
			t.Fatalf("wrap %s = %x, %v; want %s", v.key, got, err, v.wrapped)
		}
		key, err := UnwrapKeyPadded(kek, got)
		if err != nil || !bytes.Equal(key, h(v.key)) {
			t.Fatalf("unwrap = %x, %v", key, err)
		}
		for i := range got {
			bad := bytes.Clone(got)
			bad[i] ^= 0x01
			if _, err := UnwrapKeyPadded(kek, bad); err == nil {
				t.Fatalf("a wrapped key changed at byte %d unwraps", i)
			}
		}
	}
	if _, err := UnwrapKeyPadded(kek, h("afbeb0f07dfbf541 9200f2ccb50bb2")); err == nil {
		t.Fatal("a wrapped key that is not a multiple of 8 bytes unwraps")
	}
}

// TestECRoundTrip encrypts to EC owners on P-256 and P-384 beside an RSA authority and an EC
// recipient, and checks that each key opens the file and that the stanza has the shape of
// FORMAT.md section 2.2.2.
func TestECRoundTrip(t *testing.T) {
	authority := loadKey(t, "other.pem")
	for _, c := range []elliptic.Curve{elliptic.P256(), elliptic.P384()} {
		owner, extra := newECKey(t, c), newECKey(t, elliptic.P256())
		key := newHostKey()
		file, h := encrypt(t, key, []byte("payroll"), &ECRecipient{Public: &owner.PublicKey, Role: RoleOwner},
			recipient(authority, RoleAuthority), &ECRecipient{Public: &extra.PublicKey, Role: RoleRecipient})
		s := h.Stanzas[0]
		name, _ := CurveName(&owner.PublicKey)
		fpr, _ := FingerprintOf(&owner.PublicKey)
		if s.Type != "ecdh" || len(s.Args) != 4 || s.Args[0] != name || s.Args[2] != fpr.Tag() || s.Args[3] != "owner" || len(s.Body) != 40 {
			t.Fatalf("%s: owner stanza %s %v with a %d-byte body", name, s.Type, s.Args, len(s.Body))
		}
		if StanzaRole(s) != RoleOwner || StanzaTag(s) != fpr.Tag() {
			t.Fatalf("%s: role %q tag %q", name, StanzaRole(s), StanzaTag(s))
		}
		for _, id := range []Identity{ecIdentity(t, owner), identity(authority), ecIdentity(t, extra)} {
			plain, err := decrypt(file, id)
			if err != nil || string(plain) != "payroll" {
				t.Fatalf("%s: decrypt with %T: %q, %v", name, id, plain, err)
			}
		}
		// Two stanzas for one key never share an ephemeral point.
		_, h2 := encrypt(t, key, []byte("payroll"), &ECRecipient{Public: &owner.PublicKey, Role: RoleOwner})
		if h2.Stanzas[0].Args[1] == s.Args[1] {
			t.Fatal("an ephemeral point was used twice")
		}
		var nid *NoIdentityError
		if _, err := decrypt(file, ecIdentity(t, newECKey(t, c))); !errors.As(err, &nid) {
			t.Fatalf("%s: a stranger's key: %v, want NoIdentityError", name, err)
		}
	}
}

// TestECStanzaTampered checks that a changed ecdh body, or a body wrapped for another key under
// the right tag, is a tampered file and not a token error.
func TestECStanzaTampered(t *testing.T) {
	owner := newECKey(t, elliptic.P256())
	file, h := encrypt(t, newHostKey(), []byte("x"), &ECRecipient{Public: &owner.PublicKey, Role: RoleOwner})
	body := h.Stanzas[0].Body
	enc := b64.EncodeToString(body)
	i := bytes.Index(file, []byte(enc))
	if i < 0 {
		t.Fatal("body not found")
	}
	bad := bytes.Clone(file)
	body[5] ^= 1
	copy(bad[i:], b64.EncodeToString(body))
	_, err := decrypt(bad, ecIdentity(t, owner))
	var tampered *TamperedError
	if !errors.As(err, &tampered) {
		t.Fatalf("changed body: %v, want TamperedError", err)
	}
}

// TestECStanzaArgs checks the ecdh stanza line and body rules of FORMAT.md sections 2.2.2 and
// 8.1: each bad stanza makes the header malformed.
func TestECStanzaArgs(t *testing.T) {
	k := newECKey(t, elliptic.P256())
	fpr, _ := FingerprintOf(&k.PublicKey)
	eph, _ := ecdh.P256().GenerateKey(rand.Reader)
	point := eph.PublicKey().Bytes()
	offCurve := bytes.Clone(point)
	offCurve[64] ^= 1
	compressed := append([]byte{2 | point[64]&1}, point[1:33]...)
	good := []string{"p256", b64.EncodeToString(point), fpr.Tag(), "owner"}
	body := make([]byte, 40)
	if _, err := ParseECStanza(&Stanza{Type: "ecdh", Args: good, Body: body}); err != nil {
		t.Fatalf("good stanza: %v", err)
	}
	header := func(s *Stanza) error {
		var buf bytes.Buffer
		buf.WriteString("p11escrow/v1\ncore 5f1c0b3e9a2d4c7b8e6f1a2b3c4d5e6f 65536 " + strings.Repeat("A", 43) + "\n")
		buf.WriteString("-> ecdh " + strings.Join(s.Args, " ") + "\n")
		buf.Write(wrapBody(s.Body))
		buf.WriteString("--- " + strings.Repeat("A", 15) + " " + strings.Repeat("A", 22) + "\n")
		_, _, err := ParseHeader(&buf)
		return err
	}
	if err := header(&Stanza{Args: good, Body: body}); err != nil {
		t.Fatalf("good stanza in a header: %v", err)
	}
	with := func(i int, v string) []string { a := append([]string(nil), good...); a[i] = v; return a }
	for name, s := range map[string]*Stanza{
		"curve p521":      {Args: with(0, "p521"), Body: body},
		"curve of point":  {Args: with(0, "p384"), Body: body},
		"off the curve":   {Args: with(1, b64.EncodeToString(offCurve)), Body: body},
		"compressed":      {Args: with(1, b64.EncodeToString(compressed)), Body: body},
		"padded base64":   {Args: with(1, b64.EncodeToString(point)+"="), Body: body},
		"upper-case tag":  {Args: with(2, strings.ToUpper("a"+fpr.Tag()[1:])), Body: body}, // at least one letter, whatever the tag
		"role":            {Args: with(3, "boss"), Body: body},
		"three arguments": {Args: good[1:], Body: body},
		"short body":      {Args: good, Body: body[:39]},
		"long body":       {Args: good, Body: make([]byte, 48)},
	} {
		s.Type = "ecdh"
		if _, err := ParseECStanza(s); err == nil {
			t.Errorf("%s: parsed", name)
		}
		err := header(s)
		var he *HeaderError
		if !errors.As(err, &he) {
			t.Errorf("%s: ParseHeader: %v, want HeaderError", name, err)
		}
	}
}

// wrapBody writes a stanza body as the header does: 64-column base64 lines and a short last line.
func wrapBody(b []byte) []byte {
	enc := b64.EncodeToString(b)
	var out []byte
	for len(enc) >= 64 {
		out = append(out, enc[:64]+"\n"...)
		enc = enc[64:]
	}
	return append(out, enc+"\n"...)
}

// TestECRecord escrows a file whose authority key is EC (FORMAT.md section 5): the record says
// type ecdh, curve and ephemeral point and no hash, verifies with the authority's key, and every
// changed authority member is caught. Members of the other type make a record invalid.
func TestECRecord(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	authority := loadECKey(t, "owner-p384.pem")
	key := newHostKey()
	_, h := encrypt(t, key, []byte("payroll"), recipient(owner, RoleOwner), &ECRecipient{Public: &authority.PublicKey, Role: RoleAuthority})
	fpr, _ := FingerprintOf(&owner.PublicKey)
	rec, err := NewRecord(h, key, "Q3 payroll", RecordOwner{Fingerprint: fpr.String(), TokenLabel: "alice", TokenSerial: "42"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	a := rec.Authority
	if a.Type != "ecdh" || a.Curve != "p384" || len(a.Ephemeral) != 97 || a.Hash != "" || len(a.WrappedKey) != 40 {
		t.Fatalf("authority = %+v", a)
	}
	data := rec.Marshal()
	if bytes.Contains(data, []byte(`"hash"`)) || !bytes.Contains(data, []byte(`"type": "ecdh"`)) {
		t.Fatalf("record JSON:\n%s", data)
	}
	parsed, err := ParseRecord(data)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parsed.Verify(ecIdentity(t, authority)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	for name, mutate := range map[string]func(r *Record){
		"ephemeral":   func(r *Record) { r.Authority.Ephemeral[10] ^= 1 },
		"curve":       func(r *Record) { r.Authority.Curve = "p256" },
		"wrapped key": func(r *Record) { r.Authority.WrappedKey[5] ^= 1 },
		"key tag":     func(r *Record) { r.Authority.KeyTag = "00000000" },
	} {
		r, _ := ParseRecord(data)
		mutate(r)
		if _, err := r.Verify(ecIdentity(t, authority)); err == nil {
			t.Errorf("changed %s: record still verifies", name)
		}
	}
	var re *RecordError
	for name, edit := range map[string][2]string{
		"a hash too":     {`"type": "ecdh",`, `"type": "ecdh", "hash": "sha1",`},
		"no ephemeral":   {`"ephemeral"`, `"x-ephemeral"`},
		"unknown type":   {`"type": "ecdh"`, `"type": "x25519"`},
		"rsa-oaep named": {`"type": "ecdh"`, `"type": "rsa-oaep"`},
		"empty type":     {`"type": "ecdh"`, `"type": ""`},
	} {
		bad := bytes.Replace(data, []byte(edit[0]), []byte(edit[1]), 1)
		if bytes.Equal(bad, data) {
			t.Fatalf("%s: edit not applied", name)
		}
		if _, err := ParseRecord(bad); !errors.As(err, &re) {
			t.Errorf("%s: ParseRecord = %v, want RecordError", name, err)
		}
	}
	// An rsa-oaep record with a curve, or a type, is invalid too.
	_, hr := encrypt(t, key, []byte("x"), recipient(owner, RoleOwner), recipient(loadKey(t, "other.pem"), RoleAuthority))
	rr, err := NewRecord(hr, key, "", RecordOwner{Fingerprint: fpr.String()}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	rdata := rr.Marshal()
	for _, edit := range [][2]string{{`"hash"`, `"curve": "p256", "hash"`}, {`"key_tag"`, `"type": "rsa-oaep", "key_tag"`}} {
		if _, err := ParseRecord(bytes.Replace(rdata, []byte(edit[0]), []byte(edit[1]), 1)); !errors.As(err, &re) {
			t.Errorf("rsa-oaep record with %s: %v, want RecordError", edit[1], err)
		}
	}
}
