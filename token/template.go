package token

// Every attribute template p11escrow hands a token is in this file, so that what each kind of
// object may do (and may never do) can be read in one place: exchange and authority key pairs,
// officers' signing keys, file keys, unwrapped keys, imported public keys and the measuring key.

import (
	"crypto/rsa"
	"encoding/binary"
	"encoding/hex"
	"math/big"
	"runtime"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// arrayAttr is an attribute whose value is itself a template
// (CKF_ARRAY_ATTRIBUTE, such as CKA_UNWRAP_TEMPLATE). miekg/pkcs11 passes every
// attribute value as bytes, copied into C memory, so the inner CK_ATTRIBUTE
// structs are laid out here by hand, pointing at Go buffers that stay pinned
// (runtime.Pinner) until free is called after the PKCS#11 call.
type arrayAttr struct {
	attr   *pkcs11.Attribute
	pinner runtime.Pinner
}

// newSensitiveUnwrapTemplate is CKA_UNWRAP_TEMPLATE = {CKA_SENSITIVE true}:
// every key unwrapped under a key that carries it must be sensitive.
func newSensitiveUnwrapTemplate() *arrayAttr {
	return newArrayAttr(pkcs11.CKA_UNWRAP_TEMPLATE, pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true))
}

// newArrayAttr lays out CK_ATTRIBUTE{type, pValue, ulValueLen} for each inner
// attribute, with CK_ULONG the size of a pointer: true on every Unix ABI
// (LP64 and ILP32). Windows packs PKCS#11 structs and has a 4-byte CK_ULONG
// beside 8-byte pointers; there the attribute is sent empty, and a module
// refuses it like one that does not know array attributes.
func newArrayAttr(typ uint, inner ...*pkcs11.Attribute) *arrayAttr {
	a := &arrayAttr{}
	if runtime.GOOS == "windows" {
		a.attr = pkcs11.NewAttribute(typ, nil)
		return a
	}
	word := int(unsafe.Sizeof(uintptr(0)))
	put := func(b []byte, v uint64) {
		if word == 8 {
			binary.NativeEndian.PutUint64(b, v)
		} else {
			binary.NativeEndian.PutUint32(b, uint32(v))
		}
	}
	raw := make([]byte, 3*word*len(inner))
	for i, in := range inner {
		val := append([]byte(nil), in.Value...)
		var p uintptr
		if len(val) > 0 {
			a.pinner.Pin(&val[0])
			p = uintptr(unsafe.Pointer(&val[0]))
		}
		off := 3 * word * i
		put(raw[off:], uint64(in.Type))
		put(raw[off+word:], uint64(p))
		put(raw[off+2*word:], uint64(len(val)))
	}
	a.attr = pkcs11.NewAttribute(typ, raw)
	return a
}

// free unpins the inner buffers; call it once the PKCS#11 call returned.
func (a *arrayAttr) free() { a.pinner.Unpin() }

// rsaPublicTemplate is an exchange or authority key's public half: it may wrap and encrypt,
// never verify.
func rsaPublicTemplate(label string, id []byte, bits int) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// rsaPrivateTemplate is the private key's template; unwrapOnly makes an
// authority key, which may not decrypt.
func rsaPrivateTemplate(label string, id []byte, unwrapOnly bool) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, !unwrapOnly),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// rsaClass is the search template for RSA keys of one object class.
func rsaClass(class uint) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
	}
}

// signTemplates returns the mechanism and templates for one signing key type: the private half
// may sign and nothing else.
// GenerateSigner checks typ first.
func signTemplates(typ SignKeyType, label string, id []byte) ([]*pkcs11.Mechanism, []*pkcs11.Attribute, []*pkcs11.Attribute) {
	common := func(class, keyType uint) []*pkcs11.Attribute {
		return []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_CLASS, class),
			pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, keyType),
			pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
			pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
			pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		}
	}
	keyType, mech := uint(pkcs11.CKK_RSA), uint(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN)
	var pubExtra []*pkcs11.Attribute
	switch typ {
	case SignECDSAP256:
		keyType, mech = pkcs11.CKK_EC, pkcs11.CKM_EC_KEY_PAIR_GEN
		pubExtra = []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, oidP256)}
	case SignRSAPSS2048, SignRSAPSS3072:
		bits := map[SignKeyType]int{SignRSAPSS2048: 2048, SignRSAPSS3072: 3072}[typ]
		pubExtra = []*pkcs11.Attribute{
			pkcs11.NewAttribute(pkcs11.CKA_MODULUS_BITS, bits),
			pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, []byte{1, 0, 1}),
			pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
			pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		}
	}
	pub := append(common(pkcs11.CKO_PUBLIC_KEY, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, true))
	priv := append(common(pkcs11.CKO_PRIVATE_KEY, keyType),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false))
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(mech, nil)}, append(pub, pubExtra...), priv
}

// fileKeyTemplate is a file key on the token-wrap path (see NewFileKey): a session object,
// non-sensitive because the host does the bulk AES-GCM, extractable because C_WrapKey needs it.
func fileKeyTemplate(id []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, FileKeySize),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow file "+hex.EncodeToString(id)),
	}
}

// unwrapTemplate is a file key unwrapped on the token (KeyPair.UnwrapOAEP): a sensitive
// session object; withLen adds CKA_VALUE_LEN for the modules that want it.
func unwrapTemplate(withLen, extractable bool) []*pkcs11.Attribute {
	a := []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, extractable),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow unwrapped key"),
	}
	if withLen {
		a = append(a, pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, FileKeySize))
	}
	return a
}

// decryptedKeyTemplate is what an owner's ecdh stanza is unwrapped into under its derived KEK
// (ECKeyPair.UnwrapECDH), for a key the host is to read: a generic secret of whatever length
// the stanza holds (so that a key of the wrong length is reported by the caller's length
// check), readable, a session object destroyed as soon as it is read.
func decryptedKeyTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_GENERIC_SECRET),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, true),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow decrypted key"),
	}
}

// importedPublicTemplate is a recipient's public key imported for C_WrapKey: a session object
// that may wrap and encrypt, and nothing else.
func importedPublicTemplate(pub *rsa.PublicKey) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_RSA),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, true),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow imported public key"),
		pkcs11.NewAttribute(pkcs11.CKA_MODULUS, pub.N.Bytes()),
		pkcs11.NewAttribute(pkcs11.CKA_PUBLIC_EXPONENT, big.NewInt(int64(pub.E)).Bytes()),
	}
}

// measureKeyTemplate is the AES key SecretKey.measureLen wraps an unwrapped key under: sensitive,
// never extractable, wrap-only, a session object (one per session, destroyed with it).
func measureKeyTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, FileKeySize),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, true),
		// It wraps only, so that what it wraps cannot be opened again on the token.
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow length check"),
	}
}

// ecPublicTemplate is an EC exchange key's public half (P-256 or P-384): it only carries the
// point; ECDH needs nothing else of it.
func ecPublicTemplate(label string, id, params []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, false),
		pkcs11.NewAttribute(pkcs11.CKA_VERIFY, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, false),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// ecPrivateTemplate is an EC exchange key's private half: it may derive (ECDH) and nothing
// else, is sensitive and never extractable.
func ecPrivateTemplate(label string, id []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, true),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, label),
		pkcs11.NewAttribute(pkcs11.CKA_ID, id),
	}
}

// kekTemplate is the key-encryption key derived with CKM_ECDH1_DERIVE (FORMAT.md section
// 2.2.2): a 32-byte AES session key, sensitive and never extractable, that may only unwrap.
func kekTemplate() []*pkcs11.Attribute { return kekFor(false) }

// wrapKEKTemplate is kekTemplate for SecretKey.WrapECDH: it may only wrap.
func wrapKEKTemplate() []*pkcs11.Attribute { return kekFor(true) }

func kekFor(wrap bool) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_VALUE_LEN, 32),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_UNWRAP, !wrap),
		pkcs11.NewAttribute(pkcs11.CKA_WRAP, wrap),
		pkcs11.NewAttribute(pkcs11.CKA_ENCRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_DECRYPT, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow ecdh kek"),
	}
}

// ephemeralPublicTemplate and ephemeralPrivateTemplate are the ephemeral key pair SecretKey.WrapECDH
// makes on the token for one stanza: session objects, the private half sensitive, never
// extractable and derive-only, destroyed right after the derivation.
func ephemeralPublicTemplate(params []byte) []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PUBLIC_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_EC_PARAMS, params),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow ephemeral key"),
	}
}

func ephemeralPrivateTemplate() []*pkcs11.Attribute {
	return []*pkcs11.Attribute{
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_PRIVATE_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_EC),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_PRIVATE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_EXTRACTABLE, false),
		pkcs11.NewAttribute(pkcs11.CKA_DERIVE, true),
		pkcs11.NewAttribute(pkcs11.CKA_SIGN, false),
		pkcs11.NewAttribute(pkcs11.CKA_LABEL, "p11escrow ephemeral key"),
	}
}
