package token

import (
	"encoding/binary"
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
