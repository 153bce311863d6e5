package token

import (
	"crypto"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"

	"github.com/miekg/pkcs11"
)

// KeyID is the CKA_ID p11escrow gives every key pair it generates, exchange,
// authority or signing key: the first 16 bytes of SHA-256 over the PKIX DER
// public key. It is derived from the key, so any party holding only the
// public key (e.g. a PEM file) can compute it.
func KeyID(pub crypto.PublicKey) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	sum := sha256.Sum256(der)
	return sum[:16], nil
}

// generatePair is the body that GenerateRSA, GenerateUnwrapRSA and
// GenerateSigner share. It refuses an empty label and one that any object on
// the token already has, so that labels keep naming exactly one pair; runs gen
// (C_GenerateKeyPair with the caller's templates) under a random temporary
// CKA_ID, since KeyID is known only after generation; reads the public half
// back; and gives both halves their ID (setKeyID). If anything fails after
// generation, both halves are destroyed.
func (t *Token) generatePair(op, label string, gen func(id []byte) (pubH, privH pkcs11.ObjectHandle, err error)) (crypto.PublicKey, []byte, pkcs11.ObjectHandle, error) {
	if label == "" {
		return nil, nil, 0, newErr(op, nil, "the key needs a label; give one")
	}
	if hs, err := t.findObjects([]*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_LABEL, label)}); err != nil {
		return nil, nil, 0, err
	} else if len(hs) > 0 {
		return nil, nil, 0, newErr(op, ErrExists, "the token already has an object labelled %q; choose another label or delete the old key", label)
	}
	tmpID := make([]byte, 16)
	if _, err := rand.Read(tmpID); err != nil {
		return nil, nil, 0, err
	}
	pubH, privH, err := gen(tmpID)
	if err != nil {
		return nil, nil, 0, tokenErr(op, ctxGenerate, err)
	}
	pub, err := t.objectPublic(pubH)
	var id []byte
	if err == nil {
		id, err = t.setKeyID(pub, tmpID, pubH, privH)
	}
	if err != nil {
		_ = t.ctx.DestroyObject(t.sh, privH)
		_ = t.ctx.DestroyObject(t.sh, pubH)
		return nil, nil, 0, tokenErr(op, ctxPlain, err)
	}
	return pub, id, privH, nil
}

// setKeyID gives both halves of a new pair the CKA_ID KeyID(pub) and returns
// it. A token that refuses to change CKA_ID (CKR_ATTRIBUTE_READ_ONLY and
// similar) for either half leaves both on tmpID, which is returned instead:
// the halves never end on different IDs, which would break finding a private
// key's public half by CKA_ID.
func (t *Token) setKeyID(pub crypto.PublicKey, tmpID []byte, pubH, privH pkcs11.ObjectHandle) ([]byte, error) {
	id, err := KeyID(pub)
	if err != nil {
		return nil, err
	}
	set := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, id)}
	err = t.ctx.SetAttributeValue(t.sh, privH, set)
	if err == nil {
		if err = t.ctx.SetAttributeValue(t.sh, pubH, set); err != nil {
			back := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_ID, tmpID)}
			if err := t.ctx.SetAttributeValue(t.sh, privH, back); err != nil {
				return nil, err // the halves disagree: the caller destroys both
			}
		}
	}
	switch {
	case err == nil:
		return id, nil
	case refused(err):
		return tmpID, nil
	}
	return nil, err
}

// refused reports a token saying "you may not change that" as opposed to
// a failure of the token itself.
func refused(err error) bool {
	return isCode(err, pkcs11.CKR_ATTRIBUTE_READ_ONLY, pkcs11.CKR_ACTION_PROHIBITED,
		pkcs11.CKR_ATTRIBUTE_VALUE_INVALID, pkcs11.CKR_TEMPLATE_INCONSISTENT,
		pkcs11.CKR_FUNCTION_NOT_SUPPORTED, pkcs11.CKR_ATTRIBUTE_TYPE_INVALID)
}
