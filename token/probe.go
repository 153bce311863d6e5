package token

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"errors"

	"github.com/miekg/pkcs11"
)

// OAEPHash returns the OAEP hash to wrap for k: SHA-256 if k's token really decrypts RSA-OAEP
// with SHA-256 (and MGF1-SHA256, empty label), else SHA-1, the one hash SoftHSM2 2.6.1 and most
// HSMs accept. A lost login or token is an error; any other refusal means SHA-1.
func (k *KeyPair) OAEPHash() (crypto.Hash, error) {
	ok, err := k.SupportsOAEPSHA256()
	if err != nil || !ok {
		return crypto.SHA1, err
	}
	return crypto.SHA256, nil
}

// SupportsOAEPSHA256 reports whether the token decrypts RSA-OAEP with SHA-256 under k, at a
// fraction of the cost of a round trip for tokens that do not. It first asks the
// token to start the operation (C_DecryptInit with OAEP-SHA256 parameters): a token that
// refuses there, as SoftHSM2 2.6.1 does with CKR_ARGUMENTS_BAD, has answered, and no RSA
// operation runs on either side. Only a token that accepts gets the real round trip, on the
// operation already started: the host encrypts 32 random bytes, the token decrypts them. That
// saves a host RSA encryption (about 0.25 ms for RSA-3072) on every encrypt call, where the
// probe runs once per call for the owner's key.
//
// An unwrap-only key (an authority key, see GenerateUnwrapRSA) may not decrypt, so it is probed
// with C_UnwrapKey of 32 random bytes instead, into a sensitive session key destroyed at once.
func (k *KeyPair) SupportsOAEPSHA256() (bool, error) {
	const op = "probe RSA-OAEP with SHA-256"
	mech, err := oaepMech(crypto.SHA256)
	if err != nil {
		return false, err
	}
	if a, err := k.t.attrs(k.priv, pkcs11.CKA_DECRYPT); err == nil && !boolAttr(a[pkcs11.CKA_DECRYPT]) {
		return k.probeUnwrapSHA256()
	}
	if err := k.t.ctx.DecryptInit(k.t.sh, mech, k.priv); err != nil {
		return false, fatalProbe(tokenErr(op, ctxDecrypt, err))
	}
	msg := make([]byte, 32)
	defer clear(msg)
	rand.Read(msg)
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, k.Public, msg, nil)
	if err != nil {
		// End the operation the token started: any failing C_Decrypt does.
		_, _ = k.t.ctx.Decrypt(k.t.sh, make([]byte, k.Public.Size()))
		return false, err
	}
	pt, ok, err := k.t.decryptInto(ct, k.Public.Size()) // one private-key operation, as in DecryptOAEP
	if !ok {
		pt, err = k.t.ctx.Decrypt(k.t.sh, ct)
	}
	if err != nil {
		return false, fatalProbe(tokenErr(op, ctxDecrypt, err))
	}
	defer clear(pt)
	return bytes.Equal(pt, msg), nil
}

// probeUnwrapSHA256 is the probe for a key that may only unwrap: the host wraps 32 random bytes
// with OAEP-SHA256, and the token must unwrap them. OAEP decoding fails under the wrong hash, so
// a successful unwrap is the answer.
func (k *KeyPair) probeUnwrapSHA256() (bool, error) {
	msg := make([]byte, FileKeySize)
	defer clear(msg)
	rand.Read(msg)
	ct, err := rsa.EncryptOAEP(sha256.New(), rand.Reader, k.Public, msg, nil)
	if err != nil {
		return false, err
	}
	sk, err := k.unwrapOAEP(crypto.SHA256, ct, false)
	if err != nil {
		return false, fatalProbe(err)
	}
	return true, sk.Destroy()
}

// fatalProbe keeps the errors that mean the token or the login is gone; every other refusal
// just means "no SHA-256".
func fatalProbe(err error) error {
	if errors.Is(err, ErrNotLoggedIn) || errors.Is(err, ErrNoToken) || errors.Is(err, ErrPINLocked) {
		return err
	}
	return nil
}
