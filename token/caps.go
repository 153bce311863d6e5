package token

import (
	"slices"

	"github.com/miekg/pkcs11"
)

// Capabilities says which of the mechanisms p11escrow can use the token
// offers. Smart cards often lack AES entirely, so the file key path is chosen
// from these (see Plan) rather than assumed.
type Capabilities struct {
	AESKeyGen      bool // CKM_AES_KEY_GEN
	AESGCM         bool // CKM_AES_GCM
	RSAOAEP        bool // CKM_RSA_PKCS_OAEP
	RSAKeyGen      bool // CKM_RSA_PKCS_KEY_PAIR_GEN
	SHA256Digest   bool // CKM_SHA256 with CKF_DIGEST
	GenerateRandom bool // token flag CKF_RNG
	WrapWithOAEP   bool // CKM_RSA_PKCS_OAEP has CKF_WRAP
	UnwrapWithOAEP bool // CKM_RSA_PKCS_OAEP has CKF_UNWRAP
	// EC exchange keys (ecdh stanzas) need all three.
	ECKeyGen      bool // CKM_EC_KEY_PAIR_GEN
	ECDHDerive    bool // CKM_ECDH1_DERIVE with CKF_DERIVE
	AESKeyWrapPad bool // CKM_AES_KEY_WRAP_PAD with CKF_WRAP and CKF_UNWRAP
}

// Capabilities probes the mechanism list once per Token and caches it.
func (t *Token) Capabilities() (Capabilities, error) {
	if t.caps != nil {
		return *t.caps, nil
	}
	c, err := t.probe()
	if err != nil {
		return Capabilities{}, err
	}
	t.caps = &c
	return c, nil
}

// probed lists the mechanisms whose flags Capabilities needs.
var probed = []uint{pkcs11.CKM_AES_KEY_GEN, pkcs11.CKM_AES_GCM, pkcs11.CKM_RSA_PKCS_OAEP,
	pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKM_SHA256, pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKM_ECDH1_DERIVE,
	pkcs11.CKM_AES_KEY_WRAP_PAD}

func (t *Token) probe() (Capabilities, error) {
	const op = "read token mechanisms"
	list, err := t.ctx.GetMechanismList(t.info.SlotID)
	if err != nil {
		return Capabilities{}, tokenErr(op, ctxPlain, err)
	}
	flags := map[uint]uint{}
	for _, m := range list {
		if slices.Contains(probed, m.Mechanism) {
			mi, err := t.ctx.GetMechanismInfo(t.info.SlotID, []*pkcs11.Mechanism{m})
			if err == nil { // listed but not describable: treat as absent
				flags[m.Mechanism] = mi.Flags
			}
		}
	}
	tf, err := t.tokenFlags()
	if err != nil {
		return Capabilities{}, tokenErr(op, ctxPlain, err)
	}
	has := func(m, f uint) bool { v, ok := flags[m]; return ok && v&f == f }
	const oaep = pkcs11.CKM_RSA_PKCS_OAEP
	return Capabilities{
		AESKeyGen:      has(pkcs11.CKM_AES_KEY_GEN, pkcs11.CKF_GENERATE),
		AESGCM:         has(pkcs11.CKM_AES_GCM, pkcs11.CKF_ENCRYPT|pkcs11.CKF_DECRYPT),
		RSAOAEP:        has(oaep, 0),
		RSAKeyGen:      has(pkcs11.CKM_RSA_PKCS_KEY_PAIR_GEN, pkcs11.CKF_GENERATE_KEY_PAIR),
		SHA256Digest:   has(pkcs11.CKM_SHA256, pkcs11.CKF_DIGEST),
		GenerateRandom: tf&pkcs11.CKF_RNG != 0,
		WrapWithOAEP:   has(oaep, pkcs11.CKF_WRAP),
		UnwrapWithOAEP: has(oaep, pkcs11.CKF_UNWRAP),
		ECKeyGen:       has(pkcs11.CKM_EC_KEY_PAIR_GEN, pkcs11.CKF_GENERATE_KEY_PAIR),
		ECDHDerive:     has(pkcs11.CKM_ECDH1_DERIVE, pkcs11.CKF_DERIVE),
		AESKeyWrapPad:  has(pkcs11.CKM_AES_KEY_WRAP_PAD, pkcs11.CKF_WRAP|pkcs11.CKF_UNWRAP),
	}, nil
}

// Path says how a file key is made and wrapped on this token.
type Path int

const (
	// PathTokenWrap: C_GenerateKey(CKM_AES_KEY_GEN) makes a session key
	// and C_WrapKey(CKM_RSA_PKCS_OAEP) wraps it, both on the token.
	PathTokenWrap Path = iota
	// PathHostWrap: C_GenerateRandom(32) on the token, then RSA-OAEP with
	// crypto/rsa on the host. For tokens without AES, e.g. smart cards.
	PathHostWrap
)

// String returns "token-wrap" or "host-wrap", for logs and --verbose.
func (p Path) String() string {
	switch p {
	case PathTokenWrap:
		return "token-wrap"
	case PathHostWrap:
		return "host-wrap"
	}
	return "unknown"
}

// Plan picks the file key path and gives a one-sentence reason for logs
// and `--verbose` output.
func (c Capabilities) Plan() (Path, string) {
	switch {
	case c.AESKeyGen && c.WrapWithOAEP:
		return PathTokenWrap, "the token offers CKM_AES_KEY_GEN and wraps with CKM_RSA_PKCS_OAEP"
	case !c.AESKeyGen:
		return PathHostWrap, "the token has no AES key generation, so the key is drawn with C_GenerateRandom and wrapped on the host"
	default:
		return PathHostWrap, "the token cannot wrap with CKM_RSA_PKCS_OAEP, so the key is drawn with C_GenerateRandom and wrapped on the host"
	}
}

// KeepsKeysInside reports whether the token can keep session keys inside it, as a backup
// authority's HSM must: unwrap with RSA-OAEP (C_UnwrapKey), AES-GCM and SHA-256 digests of keys
// (C_DigestKey) all on the token. It also names, for a person, each mechanism that is missing
// (a TPM through tpm2-pkcs11 lacks the first two).
func (c Capabilities) KeepsKeysInside() (ok bool, missing []string) {
	if !c.UnwrapWithOAEP {
		missing = append(missing, "C_UnwrapKey with CKM_RSA_PKCS_OAEP")
	}
	if !c.AESGCM {
		missing = append(missing, "CKM_AES_GCM")
	}
	if !c.SHA256Digest {
		missing = append(missing, "CKM_SHA256 digests")
	}
	return len(missing) == 0, missing
}
