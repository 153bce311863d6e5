package escrow

import (
	"bytes"
	"encoding/binary"
	"strings"
	"testing"
	"time"
)

// TestErrorClassRules checks the rules of FORMAT.md section 8.1 at their edges: where the input
// ends, and files with two faults, where the first rule broken decides.
func TestErrorClassRules(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	key := newHostKey()
	file, h := encrypt(t, key, []byte("class rules"), recipient(owner, RoleOwner), recipient(authority, RoleAuthority))
	hdr := string(h.Marshal())
	lines := strings.SplitAfter(hdr, "\n")
	// cutIn returns the header with old replaced by new, cut after the line holding new and the
	// first 10 bytes of the next line.
	cutIn := func(old, new string) []byte {
		t.Helper()
		at := strings.Index(hdr, old)
		s := strings.Replace(hdr, old, new, 1)
		i := at + len(new)
		i += strings.IndexByte(s[i:], '\n') + 1
		return []byte(s[:i+10])
	}
	many := *h
	for len(many.Stanzas) <= maxStanzas {
		s := *h.Stanzas[0]
		s.Args = []string{s.Args[0], s.Args[1], string(RoleRecipient)}
		many.Stanzas = append(many.Stanzas, &s)
	}
	manyHdr := string(many.Marshal())
	lastStanza := strings.LastIndex(manyHdr, "\n-> ") + 1
	thirtyThird := []byte(manyHdr[:lastStanza+strings.IndexByte(manyHdr[lastStanza:], '\n')+5])

	for _, c := range []struct {
		name  string
		input []byte
		want  string
	}{
		{"empty", nil, "not-p11e"},
		{"nine bytes of the magic", []byte("p11escrow"), "not-p11e"},
		{"other text", []byte("p11escrox/v1\n"), "not-p11e"},
		{"the magic", []byte("p11escrow/"), "truncated"},
		{"version line without LF", []byte("p11escrow/v1"), "truncated"},
		{"version line only", []byte("p11escrow/v1\n"), "truncated"},
		{"short other version", []byte("p11escrow/v2"), "header"},
		{"other version", []byte("p11escrow/v1.1\n"), "header"},
		{"cut inside the core line", []byte(lines[0] + lines[1][:20]), "truncated"},
		{"control byte in a cut line", []byte(lines[0] + "core \x01"), "truncated"},
		{"control byte in a complete line", []byte(lines[0] + "core \x01\n"), "header"},
		{"second owner, cut in its body", cutIn(" authority\n", " owner\n"), "header"},
		{"bad hash, cut in its body", cutIn("-> rsa-oaep sha1 ", "-> rsa-oaep md5 "), "header"},
		{"33rd stanza, cut in its body", thirtyThird, "header"},
		{"cut inside the mac-line", file[:len(hdr)-5], "truncated"},
		{"header only", file[:len(hdr)], "truncated"},
	} {
		_, err := decrypt(c.input, identity(owner))
		if got := outcome(err); got != c.want {
			t.Errorf("%s: %q (%v), want %q", c.name, got, err, c.want)
		}
	}
}

// TestBindingFieldFileIDIsHex pins FORMAT.md section 5: field(file_id) is the 32-character hex
// text, not the 16 bytes.
func TestBindingFieldFileIDIsHex(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	key := newHostKey()
	_, h := encrypt(t, key, []byte("x"), recipient(owner, RoleOwner), recipient(authority, RoleAuthority))
	rec, err := NewRecord(h, key, "d", RecordOwner{Fingerprint: strings.Repeat("a", 64), TokenLabel: "l", TokenSerial: "s"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	want := []byte("p11escrow-record/v1\n")
	want = binary.BigEndian.AppendUint32(want, 32)
	want = append(want, h.ID.String()...)
	if !bytes.HasPrefix(rec.BindingInput(), want) {
		t.Errorf("record-bytes start %q, want %q", rec.BindingInput()[:len(want)], want)
	}
}
