package token

import (
	"slices"
	"strings"

	"github.com/miekg/pkcs11"
)

// GenOption changes how GenerateRSA and GenerateSigner make a key pair.
type GenOption int

// AllowDualUse lets a key pair be generated without its usage restriction when the token
// refuses the restricted template. tpm2-pkcs11 makes every key able to both sign and decrypt,
// and refuses (CKR_GENERAL_ERROR, "User specified and TPM specified attr mismatch") any
// template that sets CKA_SIGN, CKA_VERIFY, CKA_DECRYPT or CKA_ENCRYPT to false; no retry of
// the same template can succeed there. With AllowDualUse the pair is generated once more
// without those false attributes, and the caller learns from PrivateAttributes().DualUse()
// what the token made. It is for users' exchange keys and officers' signing keys; never pass
// it for a backup authority's key, whose whole point is that it cannot be used for anything
// but its one purpose.
const AllowDualUse GenOption = 1

// usageAttrs are the attributes a dual-use token refuses to see set to false.
var usageAttrs = []uint{pkcs11.CKA_SIGN, pkcs11.CKA_VERIFY, pkcs11.CKA_DECRYPT, pkcs11.CKA_ENCRYPT}

// generateKeyPair runs C_GenerateKeyPair and, with AllowDualUse among opts, retries once
// without the false usage attributes when the token refuses the restricted template. On a
// module known to refuse it (dualUseOnly) it does not ask for the restricted template at all.
func (t *Token) generateKeyPair(mech []*pkcs11.Mechanism, pubT, privT []*pkcs11.Attribute, opts []GenOption) (pubH, privH pkcs11.ObjectHandle, err error) {
	allow := slices.Contains(opts, AllowDualUse)
	pub2, pubDropped := dropFalseUsage(pubT)
	priv2, privDropped := dropFalseUsage(privT)
	if allow && t.dualUseOnly() {
		return t.ctx.GenerateKeyPair(t.sh, mech, pub2, priv2)
	}
	pubH, privH, err = t.ctx.GenerateKeyPair(t.sh, mech, pubT, privT)
	if err == nil || !allow || !templateRefused(err) || (!pubDropped && !privDropped) {
		return pubH, privH, err
	}
	return t.ctx.GenerateKeyPair(t.sh, mech, pub2, priv2)
}

// dualUseOnly reports a module known to refuse single-use templates: tpm2-pkcs11. Asking it
// first is not free: its refused C_GenerateKeyPair has already created and loaded the key on
// the TPM and does not flush it, and a TPM without a resource manager in front (swtpm, or
// /dev/tpm0) has only three object slots, so the retry would fail with "out of memory for
// object contexts". The generic retry stays for every other module.
func (t *Token) dualUseOnly() bool {
	info, err := t.ctx.GetInfo()
	return err == nil && strings.HasPrefix(info.ManufacturerID, "tpm2-software")
}

// templateRefused reports the answers tokens give to a template they will not honour:
// tpm2-pkcs11 says CKR_GENERAL_ERROR, others CKR_TEMPLATE_INCONSISTENT or
// CKR_ATTRIBUTE_VALUE_INVALID.
func templateRefused(err error) bool {
	return isCode(err, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_TEMPLATE_INCONSISTENT, pkcs11.CKR_ATTRIBUTE_VALUE_INVALID)
}

// dropFalseUsage returns tmpl without the usage attributes set to false, and whether it
// dropped any.
func dropFalseUsage(tmpl []*pkcs11.Attribute) ([]*pkcs11.Attribute, bool) {
	out := make([]*pkcs11.Attribute, 0, len(tmpl))
	for _, a := range tmpl {
		if slices.Contains(usageAttrs, a.Type) && !boolAttr(a.Value) {
			continue
		}
		out = append(out, a)
	}
	return out, len(out) != len(tmpl)
}
