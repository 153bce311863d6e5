package authority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// Key is an authority key pair on the HSM: RSA (RSA set; it unwraps rsa-oaep stanzas) or EC on
// P-256 or P-384 (EC set; it derives the key-encryption key of ecdh stanzas). Exactly one is
// set. Either way the file key is unwrapped on the HSM into a sensitive session key.
type Key struct {
	RSA *token.KeyPair
	EC  *token.ECKeyPair
}

// Label returns the key's label on the HSM.
func (k Key) Label() string {
	if k.EC != nil {
		return k.EC.Label
	}
	return k.RSA.Label
}

// Public returns the key's public half: *rsa.PublicKey or *ecdsa.PublicKey.
func (k Key) Public() crypto.PublicKey {
	if k.EC != nil {
		return k.EC.Public
	}
	return k.RSA.Public
}

// On returns the same key used through session s (see token.Token.Sessions).
func (k Key) On(s *token.Token) Key {
	if k.EC != nil {
		return Key{EC: k.EC.On(s)}
	}
	return Key{RSA: k.RSA.On(s)}
}

func (k Key) attributes() (token.KeyAttributes, error) {
	if k.EC != nil {
		return k.EC.PrivateAttributes()
	}
	return k.RSA.PrivateAttributes()
}

// An EC authority key's wraps are kept in the store (store.Wrap.Wrapped) as the ephemeral
// public point, uncompressed (65 bytes on P-256, 97 on P-384), followed by the RFC 5649 wrap of
// the file key (40 bytes): the two byte strings of the ecdh stanza (FORMAT.md section 2.2.2),
// the point's length fixed by the key's curve. Its OAEPHash is empty. An RSA key's wraps are
// the rsa-oaep body, with the stanza's OAEP hash.

// ecWrap joins an ecdh stanza's ephemeral point and body as the store keeps them.
func ecWrap(ephemeral, wrapped []byte) []byte {
	return append(append([]byte{}, ephemeral...), wrapped...)
}

// splitECWrap splits a stored EC wrap for the key pub (see ecWrap).
func splitECWrap(pub *ecdsa.PublicKey, w []byte) (ephemeral, wrapped []byte, err error) {
	epub, err := pub.ECDH()
	if err != nil {
		return nil, nil, err
	}
	n := len(epub.Bytes())
	if len(w) <= n {
		return nil, nil, errors.New("a stored EC wrap is shorter than its ephemeral point")
	}
	if _, err := epub.Curve().NewPublicKey(w[:n]); err != nil {
		return nil, nil, errors.New("a stored EC wrap does not start with a point on its key's curve")
	}
	return w[:n], w[n:], nil
}

// stanzaWrap returns what the store keeps of an authority stanza: the OAEP hash name (empty for
// ecdh) and the wrapped bytes (see ecWrap).
func stanzaWrap(st *escrow.Stanza) (string, []byte, error) {
	if st.Type == "ecdh" {
		e, err := escrow.ParseECStanza(st)
		if err != nil {
			return "", nil, err
		}
		return "", ecWrap(e.Ephemeral, e.Wrapped), nil
	}
	rs, err := escrow.ParseRSAStanza(st)
	if err != nil {
		return "", nil, err
	}
	return rs.HashName(), rs.Wrapped, nil
}

// registeredPublic parses a registered authority key's public key: RSA or EC.
func registeredPublic(k *AuthorityKey) (crypto.PublicKey, error) {
	p, err := x509.ParsePKIXPublicKey(k.PublicKey)
	if err != nil {
		return nil, err
	}
	switch p := p.(type) {
	case *rsa.PublicKey:
		return p, nil
	case *ecdsa.PublicKey:
		if _, err := escrow.CurveName(p); err != nil {
			return nil, err
		}
		return p, nil
	}
	return nil, fmt.Errorf("the registered authority key %s is neither RSA nor EC", k.Fingerprint)
}

// unwrap unwraps a stored wrap w with the key on the HSM, as a sensitive session key;
// extractable lets it be re-wrapped on the HSM.
func (k Key) unwrap(w *Wrap, extractable bool) (*token.SecretKey, error) {
	if k.EC != nil {
		eph, body, err := splitECWrap(k.EC.Public, w.Wrapped)
		if err != nil {
			return nil, err
		}
		return k.EC.UnwrapECDHKey(eph, body, extractable)
	}
	hash, err := escrow.ParseOAEPHash(w.OAEPHash)
	if err != nil {
		return nil, err
	}
	if extractable {
		return k.RSA.UnwrapOAEP(hash, w.Wrapped)
	}
	return k.RSA.UnwrapOAEPSealed(hash, w.Wrapped)
}

// wrapFor wraps sk on the HSM for the registered authority key k: C_WrapKey with RSA-OAEP, or
// with CKM_AES_KEY_WRAP_PAD under a KEK derived on the HSM from an ephemeral key made there.
// It returns the wrap as the store keeps it.
func wrapFor(sk *token.SecretKey, k *AuthorityKey) (oaepHash string, wrapped []byte, err error) {
	pub, err := registeredPublic(k)
	if err != nil {
		return "", nil, err
	}
	if ec, ok := pub.(*ecdsa.PublicKey); ok {
		eph, w, err := sk.WrapECDH(ec)
		if err != nil {
			return "", nil, err
		}
		return "", ecWrap(eph, w), nil
	}
	hash, err := escrow.ParseOAEPHash(k.OAEPHash)
	if err != nil {
		return "", nil, err
	}
	w, err := sk.WrapOAEP(pub.(*rsa.PublicKey), hash)
	return k.OAEPHash, w, err
}

// authorityStanza rebuilds the authority stanza of a re-issued header from the stored wrap w
// under k.
func authorityStanza(k *AuthorityKey, w *Wrap) (*escrow.Stanza, error) {
	pub, err := registeredPublic(k)
	if err != nil {
		return nil, err
	}
	if ec, ok := pub.(*ecdsa.PublicKey); ok {
		eph, body, err := splitECWrap(ec, w.Wrapped)
		if err != nil {
			return nil, err
		}
		return escrow.NewECStanza(ec, eph, escrow.RoleAuthority, body)
	}
	hash, err := escrow.ParseOAEPHash(w.OAEPHash)
	if err != nil {
		return nil, err
	}
	return escrow.NewRSAStanza(pub.(*rsa.PublicKey), hash, escrow.RoleAuthority, w.Wrapped)
}
