//go:build linux || darwin || freebsd

package token

/*
#cgo linux LDFLAGS: -ldl
#include <dlfcn.h>
#include <stddef.h>
#include <stdlib.h>

typedef unsigned long p11_ulong;
typedef p11_ulong (*p11_get_list_fn)(void **);
typedef p11_ulong (*p11_decrypt_fn)(p11_ulong, unsigned char *, p11_ulong, unsigned char *, p11_ulong *);

// p11_find_decrypt returns C_Decrypt from the function list of the module at path, which the
// process has already loaded (RTLD_NOLOAD: nothing new is loaded or initialised), or NULL.
// CK_FUNCTION_LIST is a CK_VERSION followed by the function pointers in the order of
// pkcs11f.h, with no packing on Unix: the first pointer sits at the pointer's own alignment,
// and C_Decrypt is the 35th.
static void *p11_find_decrypt(const char *path) {
	void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	if (h == NULL) {
		return NULL;
	}
	p11_get_list_fn get = (p11_get_list_fn)dlsym(h, "C_GetFunctionList");
	void *list = NULL;
	if (get == NULL || get(&list) != 0 || list == NULL) {
		return NULL;
	}
	void **fns = (void **)((char *)list + sizeof(void *));
	return fns[34];
}

static p11_ulong p11_decrypt(void *fn, p11_ulong session, unsigned char *in, p11_ulong inLen,
		unsigned char *out, p11_ulong *outLen) {
	return ((p11_decrypt_fn)fn)(session, in, inLen, out, outLen);
}

// CK_ATTRIBUTE, unpacked as on every Unix.
typedef struct { p11_ulong type; void *value; p11_ulong len; } p11_attr;
typedef p11_ulong (*p11_getattr_fn)(p11_ulong, p11_ulong, p11_attr *, p11_ulong);

// p11_find_getattr is p11_find_decrypt for C_GetAttributeValue, the 25th function.
static void *p11_find_getattr(const char *path) {
	void *h = dlopen(path, RTLD_NOW | RTLD_NOLOAD);
	if (h == NULL) {
		return NULL;
	}
	p11_get_list_fn get = (p11_get_list_fn)dlsym(h, "C_GetFunctionList");
	void *list = NULL;
	if (get == NULL || get(&list) != 0 || list == NULL) {
		return NULL;
	}
	void **fns = (void **)((char *)list + sizeof(void *));
	return fns[24];
}

// p11_get_value reads an object's CKA_VALUE (0x11) into buf, of *len bytes, and sets *len.
static p11_ulong p11_get_value(void *fn, p11_ulong session, p11_ulong object, unsigned char *buf, p11_ulong *len) {
	p11_attr a = { 0x11, buf, *len };
	p11_ulong rv = ((p11_getattr_fn)fn)(session, object, &a, 1);
	*len = a.len;
	return rv;
}

// p11_wipe zeroes n bytes at p through a volatile pointer, so that the stores are not dropped.
static void p11_wipe(void *p, size_t n) {
	volatile unsigned char *v = (volatile unsigned char *)p;
	while (n--) {
		*v++ = 0;
	}
}
*/
import "C"

import (
	"unsafe"

	"github.com/miekg/pkcs11"
)

// decryptFn finds the module's C_Decrypt once. miekg/pkcs11 (v1.1.2) has no C_Decrypt call
// that takes the caller's buffer: its Ctx.Decrypt first asks for the length with no buffer,
// and a TPM (tpm2-pkcs11) runs the whole RSA operation for that query too. Calling the
// module's own C_Decrypt with a buffer of the modulus size makes one call, one private-key
// operation. The library is the one Load opened: dlopen with RTLD_NOLOAD only finds it.
func (m *Module) decryptFn() unsafe.Pointer {
	m.decryptOnce.Do(func() {
		p := C.CString(m.path)
		defer C.free(unsafe.Pointer(p))
		m.decrypt = C.p11_find_decrypt(p)
	})
	return m.decrypt
}

// decryptInto runs C_Decrypt once, after the caller's C_DecryptInit, into a buffer of max
// bytes. ok is false where the module's C_Decrypt could not be found; the operation is then
// still active, for Ctx.Decrypt.
func (t *Token) decryptInto(ciphertext []byte, max int) (out []byte, ok bool, err error) {
	fn := t.m.decryptFn()
	if fn == nil || len(ciphertext) == 0 || max <= 0 {
		return nil, false, nil
	}
	buf := make([]byte, max)
	n := C.p11_ulong(len(buf))
	rv := C.p11_decrypt(fn, C.p11_ulong(t.sh), (*C.uchar)(unsafe.Pointer(&ciphertext[0])), C.p11_ulong(len(ciphertext)),
		(*C.uchar)(unsafe.Pointer(&buf[0])), &n)
	if rv != 0 {
		clear(buf)
		return nil, true, pkcs11.Error(rv)
	}
	if int(n) > len(buf) {
		clear(buf)
		return nil, true, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)
	}
	out = append([]byte(nil), buf[:n]...)
	clear(buf)
	return out, true, nil
}

// maxSecretValue is the largest CKA_VALUE secretValue reads: every secret p11escrow reads is a
// 32-byte file key, or a shared secret of at most 66 bytes (P-521).
const maxSecretValue = 128

// secretValue reads a secret object's CKA_VALUE through the module's own C_GetAttributeValue,
// into a C buffer that is zeroed before it is freed: miekg/pkcs11 frees its copies without
// zeroing them, which left key bytes in the C heap. ok is false where the function could not be
// found; the caller then uses Ctx.GetAttributeValue.
func (t *Token) secretValue(h pkcs11.ObjectHandle) (v []byte, ok bool, err error) {
	t.m.getAttrOnce.Do(func() {
		p := C.CString(t.m.path)
		defer C.free(unsafe.Pointer(p))
		t.m.getAttr = C.p11_find_getattr(p)
	})
	if t.m.getAttr == nil {
		return nil, false, nil
	}
	buf := C.malloc(maxSecretValue)
	defer func() {
		C.p11_wipe(buf, maxSecretValue)
		C.free(buf)
	}()
	n := C.p11_ulong(maxSecretValue)
	rv := C.p11_get_value(t.m.getAttr, C.p11_ulong(t.sh), C.p11_ulong(h), (*C.uchar)(buf), &n)
	if rv != 0 {
		return nil, true, pkcs11.Error(rv)
	}
	if n > maxSecretValue {
		return nil, true, pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)
	}
	return C.GoBytes(buf, C.int(n)), true, nil
}
