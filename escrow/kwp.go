package escrow

import (
	"crypto/aes"
	"crypto/subtle"
	"encoding/binary"
	"errors"
)

// This file is AES key wrap with padding (RFC 5649), the body of an ecdh stanza, for the host
// side: a sender wraps with it, and so does a reader holding a test key. Tokens do the same with
// CKM_AES_KEY_WRAP_PAD. Go's standard library has no key wrap.

// kwpICV is RFC 5649's alternative initial value: the 32-bit constant before the length.
var kwpICV = [4]byte{0xa6, 0x59, 0x59, 0xa6}

// errKeyUnwrap is every failure of UnwrapKeyPadded: a wrong KEK and a changed body look alike.
var errKeyUnwrap = errors.New("the wrapped key does not unwrap (RFC 5649 integrity check failed)")

// maxWrapped bounds the keys wrapped here; the format wraps only 32-byte keys.
const maxWrapped = 512

// WrapKeyPadded wraps key under kek with AES key wrap with padding (RFC 5649).
func WrapKeyPadded(kek, key []byte) ([]byte, error) {
	if len(key) == 0 || len(key) > maxWrapped {
		return nil, errors.New("key wrap: the key to wrap must be 1 to 512 bytes")
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := (len(key) + 7) / 8
	out := make([]byte, 8+8*n)
	copy(out[:4], kwpICV[:])
	binary.BigEndian.PutUint32(out[4:8], uint32(len(key)))
	copy(out[8:], key) // zero padding
	if n == 1 {
		b.Encrypt(out, out)
		return out, nil
	}
	var blk [16]byte
	a := out[:8]
	for j := 0; j < 6; j++ {
		for i := 1; i <= n; i++ {
			r := out[8*i : 8*i+8]
			copy(blk[:8], a)
			copy(blk[8:], r)
			b.Encrypt(blk[:], blk[:])
			t := uint64(n*j + i)
			binary.BigEndian.PutUint64(a, binary.BigEndian.Uint64(blk[:8])^t)
			copy(r, blk[8:])
		}
	}
	clear(blk[:])
	return out, nil
}

// UnwrapKeyPadded reverses WrapKeyPadded. It checks the initial value, the length and the
// padding, and returns one error for every failure.
func UnwrapKeyPadded(kek, wrapped []byte) ([]byte, error) {
	if len(wrapped) < 16 || len(wrapped)%8 != 0 || len(wrapped) > maxWrapped+8 {
		return nil, errKeyUnwrap
	}
	b, err := aes.NewCipher(kek)
	if err != nil {
		return nil, err
	}
	n := len(wrapped)/8 - 1
	buf := make([]byte, len(wrapped))
	copy(buf, wrapped)
	if n == 1 {
		b.Decrypt(buf, buf)
	} else {
		var blk [16]byte
		a := buf[:8]
		for j := 5; j >= 0; j-- {
			for i := n; i >= 1; i-- {
				r := buf[8*i : 8*i+8]
				t := uint64(n*j + i)
				binary.BigEndian.PutUint64(blk[:8], binary.BigEndian.Uint64(a)^t)
				copy(blk[8:], r)
				b.Decrypt(blk[:], blk[:])
				copy(a, blk[:8])
				copy(r, blk[8:])
			}
		}
		clear(blk[:])
	}
	mli := int(binary.BigEndian.Uint32(buf[4:8]))
	ok := subtle.ConstantTimeCompare(buf[:4], kwpICV[:])
	if mli <= 8*(n-1) || mli > 8*n {
		ok = 0
	} else {
		var pad byte
		for _, c := range buf[8+mli:] {
			pad |= c
		}
		ok &= subtle.ConstantTimeByteEq(pad, 0)
	}
	if ok != 1 {
		clear(buf)
		return nil, errKeyUnwrap
	}
	key := make([]byte, mli)
	copy(key, buf[8:8+mli])
	clear(buf)
	return key, nil
}
