package escrow

import (
	"bytes"
	"crypto/rand"
	"testing"
)

// benchHeader is a header like the CLI's: an owner and an authority stanza for RSA-3072 keys.
func benchHeader() (*Header, []byte) {
	key := make([]byte, fileKeySize)
	rand.Read(key)
	h := &Header{ID: NewFileID()}
	for _, role := range []Role{RoleOwner, RoleAuthority} {
		body := make([]byte, 384)
		rand.Read(body)
		h.Stanzas = append(h.Stanzas, &Stanza{Type: typeRSAOAEP, Args: []string{"sha1", "0badc0de", string(role)}, Body: body})
	}
	return h, key
}

// BenchmarkHeaderBuild is what Encrypt does after the wraps: commitment, MAC and encoding.
func BenchmarkHeaderBuild(b *testing.B) {
	h, key := benchHeader()
	for b.Loop() {
		h.seal(newAEAD(key), key)
		h.Marshal()
	}
}

// BenchmarkHeaderParse is ParseHeader and the commitment and MAC checks, without the unwrap.
func BenchmarkHeaderParse(b *testing.B) {
	h, key := benchHeader()
	h.seal(newAEAD(key), key)
	enc := h.Marshal()
	for b.Loop() {
		p, _, err := ParseHeader(bytes.NewReader(enc))
		if err != nil {
			b.Fatal(err)
		}
		k, err := newMemKey(key)
		if err != nil {
			b.Fatal(err)
		}
		if err := p.VerifyOn(k); err != nil {
			b.Fatal(err)
		}
	}
}
