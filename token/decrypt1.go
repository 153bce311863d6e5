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
