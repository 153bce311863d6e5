package token

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/asn1"
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

// benchEC holds one EC exchange key pair per curve on the main token.
var benchEC struct {
	once sync.Once
	kps  map[string]*ECKeyPair
	err  error
}

// benchECStanza returns the main token, its EC key pair on curve ("p256" or "p384"), and the
// ephemeral point and body of an ecdh stanza addressed to it.
func benchECStanza(b *testing.B, curve string) (*Token, *ECKeyPair, []byte, []byte) {
	b.Helper()
	tk, _ := benchToken(b)
	benchEC.once.Do(func() {
		benchEC.kps = map[string]*ECKeyPair{}
		for _, c := range []string{"p256", "p384"} {
			var kp *ECKeyPair
			if kp, benchEC.err = tk.GenerateEC("bench-"+c, c); benchEC.err != nil {
				return
			}
			benchEC.kps[c] = kp
		}
	})
	if benchEC.err != nil {
		b.Fatal(benchEC.err)
	}
	kp := benchEC.kps[curve]
	k, err := tk.NewFileKey(benchID)
	if err != nil {
		b.Fatal(err)
	}
	defer k.Destroy()
	eph, w, err := k.Secret().WrapECDH(kp.Public)
	if err != nil {
		b.Fatal(err)
	}
	return tk, kp, eph, w
}

// BenchmarkECUnwrap opens an ecdh stanza as decrypt does for a user's EC key
// (ECKeyPair.UnwrapECDH): C_DeriveKey of the KEK on the token, C_UnwrapKey under it, the value
// read and both objects destroyed. Compare it per stanza with BenchmarkUnwrap (RSA-3072).
func BenchmarkECUnwrap(b *testing.B) {
	for _, c := range []string{"p256", "p384"} {
		b.Run(c, func(b *testing.B) {
			_, kp, eph, w := benchECStanza(b, c)
			for b.Loop() {
				v, err := kp.UnwrapECDH(eph, w)
				if err != nil {
					b.Fatal(err)
				}
				clear(v)
			}
		})
	}
}

// BenchmarkRawECUnwrap is BenchmarkECUnwrap's PKCS#11 calls with nothing around them:
// C_DeriveKey (CKM_ECDH1_DERIVE), C_UnwrapKey (CKM_AES_KEY_WRAP_PAD), C_GetAttributeValue and two
// C_DestroyObject. The ECDH on the token is most of it.
func BenchmarkRawECUnwrap(b *testing.B) {
	for _, c := range []string{"p256", "p384"} {
		b.Run(c, func(b *testing.B) {
			tk, kp, eph, w := benchECStanza(b, c)
			v, err := kp.UnwrapECDH(eph, w) // settles the form of the peer's point
			if err != nil {
				b.Fatal(err)
			}
			clear(v)
			peer := eph
			if tk.m.ecdhPeerDER.Load() {
				if peer, err = asn1.Marshal(eph); err != nil {
					b.Fatal(err)
				}
			}
			derive := []*pkcs11.Mechanism{pkcs11.NewMechanism(pkcs11.CKM_ECDH1_DERIVE, pkcs11.NewECDH1DeriveParams(pkcs11.CKD_NULL, nil, peer))}
			read := []*pkcs11.Attribute{pkcs11.NewAttribute(pkcs11.CKA_VALUE, nil)}
			for b.Loop() {
				kek, err := tk.ctx.DeriveKey(tk.sh, derive, kp.priv, kekTemplate())
				if err != nil {
					b.Fatal(err)
				}
				h, err := tk.ctx.UnwrapKey(tk.sh, aesKeyWrapPad(), kek, w, decryptedKeyTemplate())
				if err != nil {
					b.Fatal(err)
				}
				a, err := tk.ctx.GetAttributeValue(tk.sh, h, read)
				if err != nil {
					b.Fatal(err)
				}
				clear(a[0].Value)
				tk.ctx.DestroyObject(tk.sh, h)
				tk.ctx.DestroyObject(tk.sh, kek)
			}
		})
	}
}

// BenchmarkTPMDecryptRSA2048 is one RSA-2048 OAEP decryption of a file key (KeyPair.DecryptOAEP,
// with the hash OAEPHash picks, as decrypt does) on a software TPM (swtpm through tpm2-pkcs11)
// and on SoftHSM2, each beside a bare C_DecryptInit and C_Decrypt loop. The TPM is started for
// this benchmark and stopped after it; in CI it must be there (softhsmtest.RequireTPM).
func BenchmarkTPMDecryptRSA2048(b *testing.B) {
	b.Run("tpm", func(b *testing.B) {
		p := newTPM(b)
		withTPM(b, p, func(tk *Token) {
			kp, err := tk.GenerateRSA("bench-2048", 2048, AllowDualUse)
			if err != nil {
				b.Fatal(err)
			}
			benchDecrypt(b, tk, kp)
		})
	})
	b.Run("softhsm2", func(b *testing.B) {
		tk, _ := benchToken(b)
		kp, err := tk.GenerateRSA("bench-2048", 2048)
		if err != nil {
			b.Fatal(err)
		}
		benchDecrypt(b, tk, kp)
	})
}

// benchDecrypt runs DecryptOAEP and the bare loop under kp as two sub-benchmarks.
func benchDecrypt(b *testing.B, tk *Token, kp *KeyPair) {
	hash, err := kp.OAEPHash()
	if err != nil {
		b.Fatal(err)
	}
	key := make([]byte, 32)
	rand.Read(key)
	ct, err := rsa.EncryptOAEP(hash.New(), rand.Reader, kp.Public, key, nil)
	if err != nil {
		b.Fatal(err)
	}
	b.Run("DecryptOAEP", func(b *testing.B) {
		for b.Loop() {
			pt, err := kp.DecryptOAEP(hash, ct)
			if err != nil || !bytes.Equal(pt, key) {
				b.Fatalf("DecryptOAEP = %x, %v", pt, err)
			}
		}
	})
	b.Run("RawDecrypt", func(b *testing.B) {
		mech, err := oaepMech(hash)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if err := tk.ctx.DecryptInit(tk.sh, mech, kp.priv); err != nil {
				b.Fatal(err)
			}
			// One C_Decrypt with the caller's buffer: the bare private-key operation.
			if _, ok, err := tk.decryptInto(ct, kp.Public.Size()); !ok || err != nil {
				b.Fatal(ok, err)
			}
		}
	})
}
