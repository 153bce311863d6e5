package token

import (
	"crypto"
	"sync"
	"testing"

	"github.com/miekg/pkcs11"
)

// Each token benchmark comes with its limit: a bare loop of the same PKCS#11 call through
// miekg/pkcs11 (the BenchmarkRaw* functions), so that a figure shows what p11escrow's layer costs
// on top of the token. The *Parallel variants run one session per goroutine, as the CLI does for
// a batch; compare them with their Raw*Parallel twins at the same -cpu.

// benchFixture is an RSA-3072 key pair (the default exchange key size) on the main token.
var benchFixture struct {
	once sync.Once
	kp   *KeyPair
	err  error
}

// benchToken returns the shared, logged-in main token and an RSA-3072 key pair on it.
func benchToken(b *testing.B) (*Token, *KeyPair) {
	b.Helper()
	loadFixture(b)
	tk := fixture.main
	benchFixture.once.Do(func() { benchFixture.kp, benchFixture.err = tk.GenerateRSA("bench-3072", 3072) })
	if benchFixture.err != nil {
		b.Fatal(benchFixture.err)
	}
	return tk, benchFixture.kp
}

// session opens a session of its own for one benchmark goroutine.
func session(b *testing.B, tk *Token) *Token {
	s, err := tk.NewSession()
	if err != nil {
		b.Fatal(err)
	}
	return s
}

var benchID = []byte("0123456789abcdef")

func BenchmarkFileKeyGenerate(b *testing.B) {
	tk, _ := benchToken(b)
	for b.Loop() {
		k, err := tk.NewFileKey(benchID)
		if err != nil {
			b.Fatal(err)
		}
		k.Destroy()
	}
}

func BenchmarkRawGenerateKey(b *testing.B) {
	tk, _ := benchToken(b)
	mech := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}
	for b.Loop() {
		h, err := tk.ctx.GenerateKey(tk.sh, mech, fileKeyTemplate(benchID))
		if err != nil {
			b.Fatal(err)
		}
		tk.ctx.DestroyObject(tk.sh, h)
	}
}

func BenchmarkFileKeyWrap(b *testing.B) {
	tk, kp := benchToken(b)
	benchWrapLoop(b, tk, kp, b.Loop)
}

func BenchmarkFileKeyWrapParallel(b *testing.B) {
	tk, kp := benchToken(b)
	b.RunParallel(func(pb *testing.PB) {
		s := session(b, tk)
		defer s.Close()
		benchWrapLoop(b, s, kp, pb.Next)
	})
}

// benchWrapLoop wraps one file key for kp, over and over.
func benchWrapLoop(b *testing.B, tk *Token, kp *KeyPair, next func() bool) {
	k, err := tk.NewFileKey(benchID)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Destroy()
	for next() {
		if _, err := k.WrapOAEP(kp.Public, crypto.SHA1); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkRawWrapKey(b *testing.B) {
	tk, kp := benchToken(b)
	rawWrapLoop(b, tk, kp, b.Loop)
}

func BenchmarkRawWrapKeyParallel(b *testing.B) {
	tk, kp := benchToken(b)
	b.RunParallel(func(pb *testing.PB) {
		s := session(b, tk)
		defer s.Close()
		rawWrapLoop(b, s, kp, pb.Next)
	})
}

// rawWrapLoop is C_WrapKey of one key with nothing around it.
func rawWrapLoop(b *testing.B, s *Token, kp *KeyPair, next func() bool) {
	pub, err := s.importPublic(kp.Public)
	if err != nil {
		b.Fatal(err)
	}
	gen := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_KEY_GEN, nil)}
	mech, _ := oaepMech(crypto.SHA1)
	h, err := s.ctx.GenerateKey(s.sh, gen, fileKeyTemplate(benchID))
	if err != nil {
		b.Fatal(err)
	}
	defer s.ctx.DestroyObject(s.sh, h)
	for next() {
		if _, err := s.ctx.WrapKey(s.sh, mech, pub, h); err != nil {
			b.Fatal(err)
		}
	}
}

// wrapped returns a file key wrapped for kp, and the key's value.
func wrapped(b *testing.B, tk *Token, kp *KeyPair) []byte {
	k, err := tk.NewFileKey(benchID)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Destroy()
	w, err := k.WrapOAEP(kp.Public, crypto.SHA1)
	if err != nil {
		b.Fatal(err)
	}
	return w
}

func BenchmarkUnwrap(b *testing.B) {
	tk, kp := benchToken(b)
	w := wrapped(b, tk, kp)
	for b.Loop() {
		unwrapOnce(b, kp, w)
	}
}

func BenchmarkUnwrapParallel(b *testing.B) {
	tk, kp := benchToken(b)
	w := wrapped(b, tk, kp)
	b.RunParallel(func(pb *testing.PB) {
		s := session(b, tk)
		defer s.Close()
		mine := kp.On(s)
		for pb.Next() {
			unwrapOnce(b, mine, w)
		}
	})
}

func unwrapOnce(b *testing.B, kp *KeyPair, w []byte) {
	k, err := kp.UnwrapOAEP(crypto.SHA1, w)
	if err != nil {
		b.Fatal(err)
	}
	k.Destroy()
}

func BenchmarkRawUnwrapKey(b *testing.B) {
	tk, kp := benchToken(b)
	rawUnwrapLoop(b, tk, kp, wrapped(b, tk, kp), b.Loop)
}

func BenchmarkRawUnwrapKeyParallel(b *testing.B) {
	tk, kp := benchToken(b)
	w := wrapped(b, tk, kp)
	b.RunParallel(func(pb *testing.PB) {
		s := session(b, tk)
		defer s.Close()
		rawUnwrapLoop(b, s, kp, w, pb.Next)
	})
}

// rawUnwrapLoop is C_UnwrapKey and C_DestroyObject alone: the RSA private operation on the
// token is the whole cost, and the limit of any unwrap-based verification.
func rawUnwrapLoop(b *testing.B, s *Token, kp *KeyPair, w []byte, next func() bool) {
	mech, _ := oaepMech(crypto.SHA1)
	tmpl := []*pkcs11.Attribute{ // what UnwrapOAEP asks for on SoftHSM2, spelled out
		pkcs11.NewAttribute(pkcs11.CKA_CLASS, pkcs11.CKO_SECRET_KEY),
		pkcs11.NewAttribute(pkcs11.CKA_KEY_TYPE, pkcs11.CKK_AES),
		pkcs11.NewAttribute(pkcs11.CKA_TOKEN, false),
		pkcs11.NewAttribute(pkcs11.CKA_SENSITIVE, true),
	}
	for next() {
		h, err := s.ctx.UnwrapKey(s.sh, mech, kp.priv, w, tmpl)
		if err != nil {
			b.Fatal(err)
		}
		s.ctx.DestroyObject(s.sh, h)
	}
}

func BenchmarkSealGCMChunk(b *testing.B) {
	tk, _ := benchToken(b)
	k, err := tk.NewFileKey(benchID)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Destroy()
	nonce, aad, chunk := make([]byte, GCMNonceSize), []byte("core"), make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		if _, err := k.Secret().SealGCM(nonce, aad, chunk); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkRawEncryptGCMChunk is C_EncryptInit(CKM_AES_GCM) and C_Encrypt of one 64 KiB chunk.
func BenchmarkRawEncryptGCMChunk(b *testing.B) {
	tk, _ := benchToken(b)
	k, err := tk.NewFileKey(benchID)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Destroy()
	nonce, aad, chunk := make([]byte, GCMNonceSize), []byte("core"), make([]byte, 64<<10)
	b.SetBytes(int64(len(chunk)))
	for b.Loop() {
		p := pkcs11.NewGCMParams(nonce, aad, GCMTagSize*8)
		if err := tk.ctx.EncryptInit(tk.sh, []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_AES_GCM, p)}, k.secret.h); err != nil {
			b.Fatal(err)
		}
		if _, err := tk.ctx.Encrypt(tk.sh, chunk); err != nil {
			b.Fatal(err)
		}
		p.Free()
	}
}
