//go:build !(linux || darwin || freebsd)

package token

import "github.com/miekg/pkcs11"

// decryptInto is not offered here (see decrypt1.go): Windows packs PKCS#11 structs and has a
// 4-byte CK_ULONG, so the function list is not read by hand. DecryptOAEP uses Ctx.Decrypt.
func (t *Token) decryptInto(ciphertext []byte, max int) (out []byte, ok bool, err error) {
	return nil, false, nil
}

// secretValue is not offered here either; callers use Ctx.GetAttributeValue.
func (t *Token) secretValue(h pkcs11.ObjectHandle) (v []byte, ok bool, err error) {
	return nil, false, nil
}
