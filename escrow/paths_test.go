package escrow

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"encoding/hex"
	"errors"
	"io"
	"os"
	"path/filepath"
	"testing"

	"github.com/p11escrow/p11escrow/escrow/internal/stream"
	softhsmtest "github.com/p11escrow/p11escrow/softhsm-test"
	"github.com/p11escrow/p11escrow/token"
)

// TestVectorsSameClassOnEveryPath runs every vector through the owner's host paths (Decrypt with
// the RSA key, DecryptReaderAt) and the authority's (ParseHeader, then DecryptOn with the file key
// unwrapped on a SoftHSM2 token as a sensitive, non-extractable object), and checks that each
// path gives the vector's error class. One chunk loop and one verification path make this hold
// by construction; this test keeps it so.
func TestVectorsSameClassOnEveryPath(t *testing.T) {
	env := softhsmtest.New(t)
	t.Setenv("SOFTHSM2_CONF", env.ConfPath)
	const label, pin = "vectors", "1234"
	env.InitToken(t, label, "12345678", pin)
	mod, err := token.Load(env.ModulePath)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	tok, err := mod.Open(token.Selector{Label: label})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if err := tok.Login(pin); err != nil {
		t.Fatal(err)
	}
	authority, err := tok.GenerateRSA("authority", 2048)
	if err != nil {
		t.Fatal(err)
	}
	owner := identity(loadKey(t, "owner.pem"))

	for _, v := range loadVectors(t) {
		t.Run(v.File, func(t *testing.T) {
			file, err := os.ReadFile(filepath.Join("testdata/vectors", v.File))
			if err != nil {
				t.Fatal(err)
			}
			got, err := decrypt(file, owner)
			checkVector(t, v, got, err)

			got, err = decryptAt(file, owner)
			checkVector(t, v, got, err)

			h, payload, err := ParseHeader(bytes.NewReader(file))
			if err != nil {
				checkVector(t, v, nil, err)
				return
			}
			if v.Expect == "no-identity" {
				// The authority decrypts with the key it holds in escrow, so "not addressed to
				// your key" has no authority-side counterpart.
				return
			}
			key, err := hex.DecodeString(v.FileKey)
			if err != nil {
				t.Fatal(err)
			}
			wrapped, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, authority.Public, key, nil)
			if err != nil {
				t.Fatal(err)
			}
			sk, err := authority.UnwrapOAEPSealed(crypto.SHA1, wrapped)
			if errors.Is(err, token.ErrDecrypt) {
				// The token refused the stanza's key (the 32-byte key rule): on the authority's
				// path that is "the stanza addressed to it does not open", which is tampered.
				checkVector(t, v, nil, &TamperedError{Reason: err.Error()})
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			defer sk.Destroy()
			var out bytes.Buffer
			err = h.DecryptOn(sk, payload, &out)
			checkVector(t, v, out.Bytes(), err)
		})
	}
}

// decryptAt opens file with DecryptReaderAt and reads it whole.
func decryptAt(file []byte, ids ...Identity) ([]byte, error) {
	r, size, err := DecryptReaderAt(bytes.NewReader(file), int64(len(file)), ids...)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(io.NewSectionReader(r, 0, size))
}

// failingOpener is a key on a real token whose session is closed before its second chunk, as
// when a token is pulled out mid-file.
type failingOpener struct {
	KeyOpener
	session *token.Token
	opened  int
}

func (f *failingOpener) OpenGCM(nonce, aad, sealed []byte) ([]byte, error) {
	if f.opened++; f.opened == 2 {
		f.session.Close()
	}
	return f.KeyOpener.OpenGCM(nonce, aad, sealed)
}

// TestTokenFaultIsNotTampering: a token that fails mid-file (its session gone) is reported as
// the token's failure, not as a tampered file, and nothing after the last verified chunk is
// released; the same file with a changed byte in that chunk is tampered.
func TestTokenFaultIsNotTampering(t *testing.T) {
	env := softhsmtest.New(t)
	t.Setenv("SOFTHSM2_CONF", env.ConfPath)
	env.InitToken(t, "fault", "12345678", "1234")
	mod, err := token.Load(env.ModulePath)
	if err != nil {
		t.Fatal(err)
	}
	defer mod.Close()
	tok, err := mod.Open(token.Selector{Label: "fault"})
	if err != nil {
		t.Fatal(err)
	}
	defer tok.Close()
	if err := tok.Login("1234"); err != nil {
		t.Fatal(err)
	}
	kp, err := tok.GenerateRSA("authority", 2048)
	if err != nil {
		t.Fatal(err)
	}
	key := newHostKey()
	var buf bytes.Buffer
	w, err := Encrypt(&buf, NewFileID(), key, &RSARecipient{Public: kp.Public, Hash: crypto.SHA1, Role: RoleOwner})
	if err != nil {
		t.Fatal(err)
	}
	plain := make([]byte, 3*ChunkSize)
	rand.Read(plain)
	w.Write(plain)
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	wrapped, err := rsa.EncryptOAEP(crypto.SHA1.New(), rand.Reader, kp.Public, key, nil)
	if err != nil {
		t.Fatal(err)
	}
	open := func(file []byte, fail bool) ([]byte, error) {
		t.Helper()
		session := tok.Sessions(1)[0]
		defer session.Close()
		sk, err := kp.On(session).UnwrapOAEPSealed(crypto.SHA1, wrapped)
		if err != nil {
			t.Fatal(err)
		}
		h, payload, err := ParseHeader(bytes.NewReader(file))
		if err != nil {
			t.Fatal(err)
		}
		var k KeyOpener = sk
		if fail {
			k = &failingOpener{KeyOpener: sk, session: session}
		}
		var out bytes.Buffer
		err = h.DecryptOn(k, payload, &out)
		return out.Bytes(), err
	}

	got, err := open(buf.Bytes(), true)
	var tampered *TamperedError
	if err == nil || errors.As(err, &tampered) || !errors.Is(err, stream.ErrFault) {
		t.Fatalf("a token fault mid-file: %v, want the token's failure, not tampering", err)
	}
	if !bytes.Equal(got, plain[:ChunkSize]) {
		t.Fatalf("released %d bytes after a token fault, want the first chunk only (%d)", len(got), ChunkSize)
	}

	bad := bytes.Clone(buf.Bytes())
	bad[len(bad)-2*(ChunkSize+16)-5] ^= 1 // a byte of the second chunk
	if _, err := open(bad, false); !errors.As(err, &tampered) {
		t.Fatalf("a changed byte in the second chunk: %v, want tampering", err)
	}
}
