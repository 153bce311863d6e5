package authority

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"io"
	"testing"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// TestRecoverToSHA256Owner: a new owner whose key file says oaep-hash: sha256 (a TPM or NSS
// user) gets a header from an HSM that wraps with OAEP-SHA1 only (SoftHSM2). The HSM re-wraps
// with SHA-1, which every token decrypts, the owner stanza says so, and the owner opens the file.
func TestRecoverToSHA256Owner(t *testing.T) {
	a, authKP := newAuthority(t)
	alice, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	f := encryptFor(t, alice, authKP.Public, escrow.ChunkSize+1)
	res, err := a.Intake(t.Context(), "alice.json", f.record)
	if err != nil || res.Outcome != Held {
		t.Fatalf("intake: %+v %v", res, err)
	}
	o1 := officer(t, a, "olivia", token.SignECDSAP256)
	o2 := officer(t, a, "oscar", token.SignECDSAP256)
	owner, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	req, err := a.NewRequest(t.Context(), res.FileID, "", escrow.ActionReheader, &owner.PublicKey, crypto.SHA256, "new TPM card", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	approve(t, a, req, o1)
	approve(t, a, req, o2)
	hdr := &memDelivery{}
	if err := a.Recover(t.Context(), roundTrip(t, req), hdr.create); err != nil {
		t.Fatalf("recovery to a SHA-256 owner on a SHA-1-only HSM: %v", err)
	}
	h, _, err := escrow.ParseHeader(bytes.NewReader(hdr.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var hashes []string
	for _, s := range h.Stanzas {
		if escrow.StanzaRole(s) == escrow.RoleOwner {
			st, err := escrow.ParseRSAStanza(s)
			if err != nil {
				t.Fatal(err)
			}
			hashes = append(hashes, st.HashName())
		}
	}
	if len(hashes) != 1 || hashes[0] != "sha1" {
		t.Fatalf("owner stanza hashes %v, want [sha1]", hashes)
	}
	_, payload, err := escrow.ParseHeader(bytes.NewReader(f.file))
	if err != nil {
		t.Fatal(err)
	}
	rest, _ := io.ReadAll(payload)
	r, err := escrow.Decrypt(io.MultiReader(bytes.NewReader(hdr.Bytes()), bytes.NewReader(rest)),
		&escrow.RSAIdentity{Public: &owner.PublicKey, Key: hostOwner{owner}})
	if err != nil {
		t.Fatal(err)
	}
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, f.plain) {
		t.Fatalf("the new owner's decrypt: %v, equal %v", err, bytes.Equal(got, f.plain))
	}
}

// hostOwner decrypts OAEP in Go: the new owner's token, for this test.
type hostOwner struct{ k *rsa.PrivateKey }

func (h hostOwner) DecryptOAEP(hash crypto.Hash, ct []byte) ([]byte, error) {
	return rsa.DecryptOAEP(hash.New(), nil, h.k, ct, nil)
}
