package token

import (
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"errors"

	"github.com/miekg/pkcs11"
)

// FileKeySize is the length of a file key: AES-256.
const FileKeySize = 32

// FileKey is a fresh AES-256 key for one file. On PathTokenWrap it is a
// session object on the token (gone when the session closes); on
// PathHostWrap it lives only in Go memory. Call Destroy when done.
type FileKey struct {
	t      *Token
	path   Path
	secret *SecretKey // PathTokenWrap only
	val    []byte     // PathHostWrap only
}

// oaepMech builds CKM_RSA_PKCS_OAEP with MGF1 over the same hash and an
// empty label (pSourceData NULL): the only form SoftHSM2 and most tokens
// accept, and what crypto/rsa produces with a nil label.
func oaepMech(hash crypto.Hash) ([]*pkcs11.Mechanism, error) {
	var h, mgf uint
	switch hash {
	case crypto.SHA1:
		h, mgf = pkcs11.CKM_SHA_1, pkcs11.CKG_MGF1_SHA1
	case crypto.SHA256:
		h, mgf = pkcs11.CKM_SHA256, pkcs11.CKG_MGF1_SHA256
	default:
		return nil, newErr("RSA-OAEP", ErrMechanism, "OAEP with %v is not supported; use SHA-1 or SHA-256", hash)
	}
	p := pkcs11.NewOAEPParams(h, mgf, pkcs11.CKZ_DATA_SPECIFIED, nil)
	return []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_RSA_PKCS_OAEP, p)}, nil
}

// NewFileKey makes a fresh AES-256 key following Capabilities().Plan().
// On PathTokenWrap the key is a private, non-sensitive, extractable session
// object labelled "p11escrow file <hex id>": non-sensitive because the host
// does the bulk AES-GCM, extractable because C_WrapKey requires it, and
// never a token object so nothing outlives the session. On PathHostWrap the
// 32 bytes come from C_GenerateRandom (crypto/rand if the token has no RNG).
func (t *Token) NewFileKey(id []byte) (*FileKey, error) {
	c, err := t.Capabilities()
	if err != nil {
		return nil, err
	}
	path, _ := c.Plan()
	if path == PathHostWrap {
		return t.newHostKey(c.GenerateRandom)
	}
	h, err := t.ctx.GenerateKey(t.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}, fileKeyTemplate(id))
	if err != nil {
		return nil, tokenErr("generate file key", ctxPlain, err)
	}
	return &FileKey{t: t, path: PathTokenWrap, secret: &SecretKey{t: t, h: h}}, nil
}

func (t *Token) newHostKey(tokenRNG bool) (*FileKey, error) {
	if !tokenRNG {
		v := make([]byte, FileKeySize)
		if _, err := rand.Read(v); err != nil {
			return nil, err
		}
		return &FileKey{t: t, path: PathHostWrap, val: v}, nil
	}
	v, err := t.Random(FileKeySize)
	if err != nil {
		return nil, err
	}
	return &FileKey{t: t, path: PathHostWrap, val: v}, nil
}

// Path tells which path made the key.
func (k *FileKey) Path() Path { return k.path }

// Secret gives token-side operations (digest, GCM, rewrap) on the same key
// object. It is nil on PathHostWrap, where no token object exists. The
// SecretKey shares the object: destroying either destroys both.
func (k *FileKey) Secret() *SecretKey { return k.secret }

// Value returns a copy of the 32 key bytes; the caller must clear() it.
func (k *FileKey) Value() ([]byte, error) {
	const op = "read file key"
	if k.path == PathHostWrap {
		if k.val == nil {
			return nil, newErr(op, nil, "the file key was destroyed; make a new one")
		}
		return append([]byte(nil), k.val...), nil
	}
	if k.secret.destroyed {
		return nil, newErr(op, nil, "the file key was destroyed; make a new one")
	}
	v, err := k.t.readSecret(k.secret.h)
	if err != nil {
		return nil, tokenErr(op, ctxPlain, err)
	}
	if len(v) != FileKeySize {
		clear(v)
		return nil, newErr(op, nil, "the token returned a %d-byte key instead of %d; the module is faulty", len(v), FileKeySize)
	}
	return v, nil
}

// WrapOAEP wraps the key on the token for pub with RSA-OAEP(hash, MGF1(hash),
// empty label), with C_WrapKey: pub is imported as a session object (cached
// per Token). hash must be crypto.SHA1 or crypto.SHA256. It returns an error
// matching ErrHostWrap (and errors.ErrUnsupported) when the token cannot do
// it: on PathHostWrap, and for a hash the token refuses (SoftHSM2 2.6.1 does
// OAEP with SHA-1 only). The caller then wraps on the host, where the key is
// readable on both paths; escrow.RSARecipient does so. This makes FileKey an
// escrow.OAEPWrapper.
func (k *FileKey) WrapOAEP(pub *rsa.PublicKey, hash crypto.Hash) ([]byte, error) {
	const op = "wrap file key"
	mech, err := oaepMech(hash)
	if err != nil {
		return nil, err
	}
	if pub == nil {
		return nil, newErr(op, nil, "no public key was given; this is a p11escrow bug")
	}
	hostWrap := newErr(op, ErrHostWrap, "the token cannot wrap the file key with OAEP-%v; wrap it on the host", hash)
	if k.path == PathHostWrap || k.t.noWrapHash[hash] {
		return nil, hostWrap
	}
	if k.secret.destroyed {
		return nil, newErr(op, nil, "the file key was destroyed; make a new one")
	}
	ph, err := k.t.importPublic(pub)
	if err != nil {
		return nil, err
	}
	w, err := k.t.ctx.WrapKey(k.t.sh, mech, ph, k.secret.h)
	err = tokenErr(op, ctxOAEP, err)
	if !errors.Is(err, ErrMechanism) {
		return w, err
	}
	// The token cannot wrap with this OAEP hash, but the recipient's key file asks for it.
	// Remember the refusal for the rest of the session, so later file keys ask only once.
	if k.t.noWrapHash == nil {
		k.t.noWrapHash = map[crypto.Hash]bool{}
	}
	k.t.noWrapHash[hash] = true
	return nil, hostWrap
}

// Destroy removes the session object and clears any Go copy. Idempotent.
func (k *FileKey) Destroy() error {
	clear(k.val)
	k.val = nil
	if k.secret != nil {
		return k.secret.Destroy()
	}
	return nil
}

// importPublic creates (once per Token and key) a session public key
// object usable by C_WrapKey.
func (t *Token) importPublic(pub *rsa.PublicKey) (pkcs11.ObjectHandle, error) {
	// A batch wraps every file for the same few *rsa.PublicKey values: finding them by pointer
	// first saves a DER encoding per wrap.
	if h, ok := t.pubPtrs[pub]; ok {
		return h, nil
	}
	h, err := t.importPublicDER(pub)
	if err == nil {
		t.pubPtrs[pub] = h
	}
	return h, err
}

// importPublicDER finds pub's session object by its PKIX DER, or creates it.
func (t *Token) importPublicDER(pub *rsa.PublicKey) (pkcs11.ObjectHandle, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return 0, newErr("import public key", nil, "the public key cannot be encoded (%v); check the key file", err)
	}
	if h, ok := t.pubs[string(der)]; ok {
		return h, nil
	}
	h, err := t.ctx.CreateObject(t.sh, importedPublicTemplate(pub))
	if err != nil {
		return 0, tokenErr("import public key", ctxPlain, err)
	}
	t.pubs[string(der)] = h
	return h, nil
}
