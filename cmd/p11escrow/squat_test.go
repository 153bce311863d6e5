package main

import (
	"bytes"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"os"
	"time"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/rogpeppe/go-internal/testscript"
)

// squatKey is a file key in the squatter's memory: they made it, so they know it.
type squatKey []byte

func (k squatKey) Value() ([]byte, error) { return bytes.Clone(k), nil }

func (k squatKey) WrapOAEP(pub *rsa.PublicKey, hash crypto.Hash) ([]byte, error) {
	return rsa.EncryptOAEP(hash.New(), rand.Reader, pub, k, nil)
}

// squat VICTIM.p11e AUTH.pub OUT writes OUT.p11e and OUT.p11e.escrow.json: a file of the
// squatter's own, under a key of their own, with the file ID copied from the victim's clear
// header, and a record for it that is correctly bound, so the authority verifies it.
func squat(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: squat VICTIM.p11e AUTH.pub OUT")
	}
	f, err := os.Open(ts.MkAbs(args[0]))
	ts.Check(err)
	victim, _, err := escrow.ParseHeader(f)
	f.Close()
	ts.Check(err)
	pemData, err := os.ReadFile(ts.MkAbs(args[1]))
	ts.Check(err)
	block, _ := pem.Decode(pemData)
	p, err := x509.ParsePKIXPublicKey(block.Bytes)
	ts.Check(err)
	auth := p.(*rsa.PublicKey)
	mine, err := rsa.GenerateKey(rand.Reader, 2048)
	ts.Check(err)
	key := make(squatKey, 32)
	rand.Read(key)
	var out bytes.Buffer
	w, err := escrow.Encrypt(&out, victim.ID, key,
		&escrow.RSARecipient{Public: &mine.PublicKey, Hash: crypto.SHA1, Role: escrow.RoleOwner},
		&escrow.RSARecipient{Public: auth, Hash: crypto.SHA1, Role: escrow.RoleAuthority})
	ts.Check(err)
	w.Write([]byte("the squatter's own plaintext"))
	ts.Check(w.Close())
	fpr, err := escrow.FingerprintOf(&mine.PublicKey)
	ts.Check(err)
	rec, err := escrow.NewRecord(w.Header(), key, "squatted", escrow.RecordOwner{Fingerprint: fpr.String(),
		TokenLabel: "mallory", TokenSerial: "0"}, time.Now())
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[2]+".p11e"), out.Bytes(), 0o644))
	ts.Check(os.WriteFile(ts.MkAbs(args[2]+".p11e.escrow.json"), rec.Marshal(), 0o644))
}
