package main

import (
	"crypto"
	"errors"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// exchangeKey is a user's key pair on the token that files are encrypted to: RSA
// (*token.KeyPair, rsa-oaep stanzas) or EC on P-256 or P-384 (*token.ECKeyPair, ecdh stanzas).
// The commands that take an owner's key or decrypt use it, so that either kind works alike.
type exchangeKey interface {
	label() string
	id() []byte
	public() crypto.PublicKey
	attributes() (token.KeyAttributes, error)
	// recipient is the key as a recipient for encrypt, with its OAEP hash for RSA.
	recipient(role escrow.Role) (escrow.Recipient, error)
	// identity opens the stanzas addressed to the key, on the token.
	identity() escrow.Identity
	// pemFile is the key's public key file (FORMAT.md section 2.3).
	pemFile() ([]byte, error)
}

type rsaExchangeKey struct{ *token.KeyPair }

func (k rsaExchangeKey) label() string                            { return k.Label }
func (k rsaExchangeKey) id() []byte                               { return k.ID }
func (k rsaExchangeKey) public() crypto.PublicKey                 { return k.Public }
func (k rsaExchangeKey) attributes() (token.KeyAttributes, error) { return k.PrivateAttributes() }
func (k rsaExchangeKey) identity() escrow.Identity {
	return &escrow.RSAIdentity{Public: k.Public, Key: k.KeyPair}
}

func (k rsaExchangeKey) recipient(role escrow.Role) (escrow.Recipient, error) {
	hash, err := oaepHashFor(k.KeyPair)
	if err != nil {
		return nil, err
	}
	return &escrow.RSARecipient{Public: k.Public, Hash: hash, Role: role}, nil
}

// pemFile probes the key's OAEP hash with one round trip (or takes it from the cache, see
// oaepHashFor) for the file's oaep-hash line.
func (k rsaExchangeKey) pemFile() ([]byte, error) {
	hash, err := oaepHashFor(k.KeyPair)
	if err != nil {
		return nil, err
	}
	return encodePublicKey(k.Public, k.Label, hash)
}

type ecExchangeKey struct{ *token.ECKeyPair }

func (k ecExchangeKey) label() string                            { return k.Label }
func (k ecExchangeKey) id() []byte                               { return k.ID }
func (k ecExchangeKey) public() crypto.PublicKey                 { return k.Public }
func (k ecExchangeKey) attributes() (token.KeyAttributes, error) { return k.PrivateAttributes() }
func (k ecExchangeKey) identity() escrow.Identity {
	return &escrow.ECIdentity{Public: k.Public, Key: k.ECKeyPair}
}
func (k ecExchangeKey) recipient(role escrow.Role) (escrow.Recipient, error) {
	return &escrow.ECRecipient{Public: k.Public, Role: role}, nil
}
func (k ecExchangeKey) pemFile() ([]byte, error) { return encodePublicKey(k.Public, k.Label, 0) }

// findExchangeKey finds the exchange key named as findKey does, RSA or EC.
func (s *session) findExchangeKey(name string) (exchangeKey, error) {
	ref, err := s.keyRef(name)
	if err != nil {
		return nil, err
	}
	if ref.label == "" && ref.id == nil {
		return nil, usagef("name the key with --key LABEL, or with object= in a PKCS#11 URI")
	}
	kp, err := s.token.FindKeyPair(ref.label, ref.id)
	if err == nil {
		return rsaExchangeKey{kp}, nil
	}
	if !errors.Is(err, token.ErrKeyNotFound) {
		return nil, err
	}
	ec, ecErr := s.token.FindECKeyPair(ref.label, ref.id)
	switch {
	case ecErr == nil:
		return ecExchangeKey{ec}, nil
	case errors.Is(ecErr, token.ErrKeyNotFound):
		return nil, err // the RSA search's sentence, which names the key
	}
	return nil, ecErr
}

// exchangeKeys lists every exchange key on the token, RSA first.
func (s *session) exchangeKeys() ([]exchangeKey, error) {
	rsaKeys, err := s.token.KeyPairs()
	if err != nil {
		return nil, err
	}
	ecKeys, err := s.token.ECKeyPairs()
	if err != nil {
		return nil, err
	}
	var out []exchangeKey
	for _, k := range rsaKeys {
		out = append(out, rsaExchangeKey{k})
	}
	for _, k := range ecKeys {
		out = append(out, ecExchangeKey{k})
	}
	return out, nil
}
