package escrow

import (
	"bytes"
	"crypto/ecdh"
	"crypto/ecdsa"
	"crypto/elliptic"
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

// benchEC is a recipient on curve and its private half held on the host, with one stanza
// wrapped for it.
func benchEC(b *testing.B, curve ecdh.Curve) (*ECRecipient, ECHostKey, *ECStanza) {
	b.Helper()
	priv, err := curve.GenerateKey(rand.Reader)
	if err != nil {
		b.Fatal(err)
	}
	pub, err := ecdsa.ParseUncompressedPublicKey(ecdsaCurve(curve), priv.PublicKey().Bytes())
	if err != nil {
		b.Fatal(err)
	}
	r := &ECRecipient{Public: pub, Role: RoleOwner}
	s, err := r.Wrap(newHostKey())
	if err != nil {
		b.Fatal(err)
	}
	e, err := ParseECStanza(s)
	if err != nil {
		b.Fatal(err)
	}
	return r, ECHostKey{Private: priv}, e
}

func ecdsaCurve(c ecdh.Curve) elliptic.Curve {
	if c == ecdh.P384() {
		return elliptic.P384()
	}
	return elliptic.P256()
}

// BenchmarkECWrap is the sender's side of an ecdh stanza, as encrypt makes it for an EC
// recipient: a fresh ephemeral key, ECDH and RFC 5649 on the host. Its limit is the ECDH itself
// (key generation and one scalar multiplication in crypto/ecdh); compare it with the token's
// RSA-3072 wrap (token.BenchmarkFileKeyWrap), which is how an RSA stanza is made.
func BenchmarkECWrap(b *testing.B) {
	for _, c := range []struct {
		name  string
		curve ecdh.Curve
	}{{"P256", ecdh.P256()}, {"P384", ecdh.P384()}} {
		b.Run(c.name, func(b *testing.B) {
			r, _, _ := benchEC(b, c.curve)
			key := newHostKey()
			for b.Loop() {
				if _, err := r.Wrap(key); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkECHostUnwrap opens an ecdh stanza with the private key on the host (ECHostKey): the
// cost of the format's own work around the ECDH, for comparison with the token's
// (token.BenchmarkECUnwrap).
func BenchmarkECHostUnwrap(b *testing.B) {
	for _, c := range []struct {
		name  string
		curve ecdh.Curve
	}{{"P256", ecdh.P256()}, {"P384", ecdh.P384()}} {
		b.Run(c.name, func(b *testing.B) {
			_, hk, e := benchEC(b, c.curve)
			for b.Loop() {
				key, err := hk.UnwrapECDH(e.Ephemeral, e.Wrapped)
				if err != nil {
					b.Fatal(err)
				}
				clear(key)
			}
		})
	}
}
