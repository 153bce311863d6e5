package escrow

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"io"
	"os"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"
)

// hostKey is a file key held in Go memory, for format tests and vectors. On a token, the same
// interface is implemented by token.FileKey; the SoftHSM2 tests live in token/ and cmd/.
type hostKey []byte

func newHostKey() hostKey {
	k := make(hostKey, 32)
	rand.Read(k)
	return k
}

func (k hostKey) Value() ([]byte, error) { return bytes.Clone(k), nil }

// hostKey has no WrapOAEP: RSARecipient wraps it on the host (see TestOAEPWrapperOptional).

// hostDecrypter is an RSA private key in Go memory.
type hostDecrypter struct{ *rsa.PrivateKey }

func (d hostDecrypter) DecryptOAEP(hash crypto.Hash, ct []byte) ([]byte, error) {
	return rsa.DecryptOAEP(hash.New(), nil, d.PrivateKey, ct, nil)
}

func loadKey(t testing.TB, name string) *rsa.PrivateKey {
	t.Helper()
	data, err := os.ReadFile("testdata/" + name)
	if err != nil {
		t.Fatal(err)
	}
	block, _ := pem.Decode(data)
	if block == nil {
		t.Fatalf("%s: no PEM block", name)
	}
	k, err := x509.ParsePKCS8PrivateKey(block.Bytes)
	if err != nil {
		t.Fatal(err)
	}
	return k.(*rsa.PrivateKey)
}

func identity(k *rsa.PrivateKey) *RSAIdentity {
	return &RSAIdentity{Public: &k.PublicKey, Key: hostDecrypter{k}}
}

func recipient(k *rsa.PrivateKey, role Role) *RSARecipient {
	return &RSARecipient{Public: &k.PublicKey, Hash: crypto.SHA1, Role: role}
}

func encrypt(t testing.TB, key FileKey, plain []byte, rs ...Recipient) ([]byte, *Header) {
	t.Helper()
	var buf bytes.Buffer
	w, err := Encrypt(&buf, NewFileID(), key, rs...)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := w.Write(plain); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes(), w.Header()
}

func decrypt(file []byte, ids ...Identity) ([]byte, error) {
	r, err := Decrypt(bytes.NewReader(file), ids...)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestRoundTripEveryRecipient(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	extra, err := rsa.GenerateKey(rand.Reader, 3072)
	if err != nil {
		t.Fatal(err)
	}
	for _, size := range []int{0, 1, chunkSize - 1, chunkSize, chunkSize + 1, 3<<20 + 5} {
		plain := make([]byte, size)
		rand.Read(plain)
		r := []Recipient{recipient(owner, RoleOwner), recipient(authority, RoleAuthority),
			&RSARecipient{Public: &extra.PublicKey, Hash: crypto.SHA256, Role: RoleRecipient}}
		file, _ := encrypt(t, newHostKey(), plain, r...)
		for name, k := range map[string]*rsa.PrivateKey{"owner": owner, "authority": authority, "extra": extra} {
			got, err := decrypt(file, identity(k))
			if err != nil || !bytes.Equal(got, plain) {
				t.Fatalf("size %d, %s: err %v, equal %v", size, name, err, bytes.Equal(got, plain))
			}
		}
	}
}

func TestHeaderRoundTrip(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	file, h := encrypt(t, newHostKey(), []byte("x"), recipient(owner, RoleOwner))
	parsed, _, err := ParseHeader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(parsed.Marshal(), h.Marshal()) {
		t.Fatalf("re-marshalled header differs:\n%s\n%s", parsed.Marshal(), h.Marshal())
	}
	if !bytes.HasPrefix(file, h.Marshal()) {
		t.Fatal("file does not start with the header")
	}
}

func TestNotAddressed(t *testing.T) {
	owner, other := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	file, _ := encrypt(t, newHostKey(), []byte("secret"), recipient(owner, RoleOwner))
	_, err := decrypt(file, identity(other))
	var nid *NoIdentityError
	if !errors.As(err, &nid) || !strings.Contains(err.Error(), "not addressed to your key") {
		t.Fatalf("err = %v, want NoIdentityError", err)
	}
}

// TestEveryByteFlip flips every byte of a two-chunk file. Header bytes go through the RSA
// identity; payload bytes through the known file key, which is the same check minus RSA.
func TestEveryByteFlip(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	key := newHostKey()
	plain := make([]byte, chunkSize+100)
	rand.Read(plain)
	file, h := encrypt(t, key, plain, recipient(owner, RoleOwner))
	headerLen := len(h.Marshal())
	var wg sync.WaitGroup
	errs := make(chan string, 16)
	workers := 4
	for w := range workers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			mangled := bytes.Clone(file)
			for i := w; i < len(file); i += workers {
				mangled[i] ^= 0x01
				var got []byte
				var err error
				if i < headerLen {
					got, err = decrypt(mangled, identity(owner))
				} else {
					got, err = decryptWithKey(mangled, key)
				}
				mangled[i] ^= 0x01
				if err == nil || len(got) > chunkSize {
					select {
					case errs <- "flip at byte " + strconv.Itoa(i) + " was accepted":
					default:
					}
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for e := range errs {
		t.Error(e)
	}
}

func decryptWithKey(file []byte, key []byte) ([]byte, error) {
	r, err := DecryptWithKey(bytes.NewReader(file), key)
	if err != nil {
		return nil, err
	}
	return io.ReadAll(r)
}

func TestTruncatedHeaderAndPayload(t *testing.T) {
	owner := loadKey(t, "owner.pem")
	file, h := encrypt(t, newHostKey(), make([]byte, 3*chunkSize), recipient(owner, RoleOwner))
	hl := len(h.Marshal())
	for _, cut := range []int{hl / 2, hl - 1, hl, hl + chunkSize + 16, hl + 2*(chunkSize+16)} {
		_, err := decrypt(file[:cut], identity(owner))
		var te *TruncatedError
		if !errors.As(err, &te) {
			t.Errorf("cut at %d of %d: err = %v, want TruncatedError", cut, len(file), err)
		}
	}
}

// TestSplicedStanzaRejectedByBoth puts the authority stanza of another file, which wraps a
// different key, into this file's header. The owner must fail the header MAC, and the authority
// must fail the key commitment: nobody sees a different plaintext.
func TestSplicedStanzaRejectedByBoth(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	rs := []Recipient{recipient(owner, RoleOwner), recipient(authority, RoleAuthority)}
	fileA, hA := encrypt(t, newHostKey(), []byte("file A"), rs...)
	_, hB := encrypt(t, newHostKey(), []byte("file B"), rs...)
	spliced := *hA
	spliced.Stanzas = []*Stanza{hA.Stanzas[0], hB.Stanzas[1]}
	file := append(spliced.Marshal(), fileA[len(hA.Marshal()):]...)
	for name, k := range map[string]*rsa.PrivateKey{"owner": owner, "authority": authority} {
		_, err := decrypt(file, identity(k))
		var te *TamperedError
		if !errors.As(err, &te) {
			t.Errorf("%s: err = %v, want TamperedError", name, err)
		}
	}
}

// TestForgedDifferentKeys is the stronger attack: a sender who knows both keys and re-MACs the
// header. The key commitment names one key, so the reader holding the other is refused.
func TestForgedDifferentKeys(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	k1, k2 := newHostKey(), newHostKey()
	file, h := encrypt(t, k1, []byte("what the owner sees"),
		recipient(owner, RoleOwner), recipient(authority, RoleAuthority))
	other, err := recipient(authority, RoleAuthority).Wrap(k2)
	if err != nil {
		t.Fatal(err)
	}
	forged := &Header{ID: h.ID, Commitment: h.Commitment, Stanzas: []*Stanza{h.Stanzas[0], other}}
	forged.Nonce = h.Nonce
	forged.MAC = gmac(newAEAD(k2), MACNonce(forged.Nonce), forged.macInput())
	file = append(forged.Marshal(), file[len(h.Marshal()):]...)
	if _, err := decrypt(file, identity(authority)); !strings.Contains(fmtErr(err), "key commitment") {
		t.Errorf("authority: err = %v, want a key commitment failure", err)
	}
	if _, err := decrypt(file, identity(owner)); err == nil {
		t.Error("owner: accepted a header MACed under another key")
	}
}

func fmtErr(err error) string {
	if err == nil {
		return "<nil>"
	}
	return err.Error()
}

func TestReissueKeepsPayload(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	newOwner, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	key := newHostKey()
	plain := make([]byte, 2*chunkSize+3)
	rand.Read(plain)
	file, h := encrypt(t, key, plain, recipient(owner, RoleOwner), recipient(authority, RoleAuthority))
	s, err := recipient(newOwner, RoleOwner).Wrap(key)
	if err != nil {
		t.Fatal(err)
	}
	// The host re-issues through the same ReissueOn, with the same checks, as the token does.
	k, err := newMemKey(key)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := h.ReissueOn(k, []*Stanza{s, h.Stanzas[0], h.Stanzas[1]}); err == nil {
		t.Fatal("ReissueOn accepted two owner stanzas")
	}
	wrong, _ := newMemKey(newHostKey())
	if _, err := h.ReissueOn(wrong, []*Stanza{s, h.Stanzas[1]}); outcome(err) != "tampered" {
		t.Fatalf("ReissueOn with another key: %v, want tampered", err)
	}
	n, err := h.ReissueOn(k, []*Stanza{s, h.Stanzas[1]})
	if err != nil {
		t.Fatal(err)
	}
	if n.Nonce == h.Nonce {
		t.Fatal("re-issued header reused the header nonce")
	}
	reissued := append(n.Marshal(), file[len(h.Marshal()):]...)
	got, err := decrypt(reissued, identity(newOwner))
	if err != nil || !bytes.Equal(got, plain) {
		t.Fatalf("new owner: err %v", err)
	}
	if _, err := decrypt(reissued, identity(owner)); err == nil {
		t.Fatal("old owner still opens the re-issued file")
	}
}

func TestRecord(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	key := newHostKey()
	_, h := encrypt(t, key, []byte("payroll"), recipient(owner, RoleOwner), recipient(authority, RoleAuthority))
	fpr, _ := FingerprintOf(&owner.PublicKey)
	rec, err := NewRecord(h, key, "Q3 payroll", RecordOwner{Fingerprint: fpr.String(), TokenLabel: "alice", TokenSerial: "42"}, time.Now())
	if err != nil {
		t.Fatal(err)
	}
	parsed, err := ParseRecord(rec.Marshal())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := parsed.Verify(identity(authority)); err != nil {
		t.Fatalf("Verify: %v", err)
	}
	if err := parsed.MatchesFile(h); err != nil {
		t.Fatalf("MatchesFile: %v", err)
	}
	mutations := map[string]func(r *Record){
		"description": func(r *Record) { r.Description = "nothing to see" },
		"owner":       func(r *Record) { r.Owner.Fingerprint = strings.Repeat("0", 64) },
		"token label": func(r *Record) { r.Owner.TokenLabel = "mallory" },
		"created":     func(r *Record) { r.Created = "2020-01-01T00:00:00Z" },
		"wrapped key": func(r *Record) { r.Authority.WrappedKey[5] ^= 1 },
		"file id":     func(r *Record) { r.FileID = strings.Repeat("a", 32) },
		"binding":     func(r *Record) { r.Binding.Tag[0] ^= 1 },
	}
	for name, mutate := range mutations {
		r, _ := ParseRecord(rec.Marshal())
		mutate(r)
		if _, err := r.Verify(identity(authority)); err == nil {
			t.Errorf("changed %s: record still verifies", name)
		}
	}
	if _, err := parsed.Verify(identity(owner)); !errors.Is(err, ErrIncorrectIdentity) {
		t.Errorf("owner verifying: err = %v, want ErrIncorrectIdentity", err)
	}
	_, other := encrypt(t, newHostKey(), nil, recipient(owner, RoleOwner))
	var re *RecordError
	if err := parsed.MatchesFile(other); !errors.As(err, &re) {
		t.Errorf("MatchesFile(other) = %v, want RecordError", err)
	}
	if _, err := ParseRecord(append(rec.Marshal()[:10], '}')); !errors.As(err, &re) {
		t.Errorf("broken JSON: err = %v, want RecordError", err)
	}
}

// TestReissuedStanzas pins FORMAT.md section 11's order: owner, authority, then the other stanzas,
// unknown types included, unchanged and in their order; the old owner and authority are dropped.
func TestReissuedStanzas(t *testing.T) {
	st := func(typ string, args ...string) *Stanza { return &Stanza{Type: typ, Args: args} }
	oldOwner := st(typeRSAOAEP, "sha1", "00000001", "owner")
	oldAuth := st(typeRSAOAEP, "sha1", "00000002", "authority")
	r1 := st(typeRSAOAEP, "sha1", "00000003", "recipient")
	u := st("x25519-future", "owner")
	r2 := st(typeRSAOAEP, "sha256", "00000004", "recipient")
	h := &Header{Stanzas: []*Stanza{r1, oldAuth, u, oldOwner, r2}}
	newOwner := st(typeRSAOAEP, "sha1", "00000005", "owner")
	newAuth := st(typeRSAOAEP, "sha1", "00000006", "authority")
	got := h.ReissuedStanzas(newOwner, newAuth)
	want := []*Stanza{newOwner, newAuth, r1, u, r2}
	if len(got) != len(want) {
		t.Fatalf("%d stanzas, want %d", len(got), len(want))
	}
	for i := range want {
		if got[i] != want[i] {
			t.Errorf("stanza %d is %v, want %v", i, got[i], want[i])
		}
	}
}
