package main

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"fmt"
	"strings"

	"github.com/p11escrow/p11escrow/escrow"
)

// A public key file is a PKIX "PUBLIC KEY" PEM block, which openssl and every other tool read,
// preceded by comment lines that PEM parsers skip. One comment matters: "# oaep-hash: sha256"
// says the key's token has shown it decrypts OAEP with SHA-256. Without it, SHA-1 is used,
// the one OAEP hash that SoftHSM2 and most HSMs accept.
const oaepHashComment = "# oaep-hash: "

// publicKeyFile is a recipient's public key and its OAEP hash.
type publicKeyFile struct {
	pub  *rsa.PublicKey
	hash crypto.Hash
}

func readPublicKey(name string) (*publicKeyFile, error) {
	k, data, err := readPKIXFile(name)
	if err != nil {
		return nil, err
	}
	pub, ok := k.(*rsa.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: not an RSA public key", name)
	}
	hash, err := oaepHashOf(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	return &publicKeyFile{pub: pub, hash: hash}, nil
}

// readPKIXFile reads a PEM "PUBLIC KEY" file: the key, and the file's bytes for its comments.
func readPKIXFile(name string) (crypto.PublicKey, []byte, error) {
	data, err := readFileLimited(name, "a public key file", maxPublicKeyFile)
	if err != nil {
		return nil, nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "PUBLIC KEY" {
		return nil, nil, fmt.Errorf("%s: not a PEM public key (want a \"PUBLIC KEY\" block)", name)
	}
	k, err := x509.ParsePKIXPublicKey(block.Bytes)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", name, err)
	}
	return k, data, nil
}

// oaepHashOf reads the oaep-hash comment before the PEM block.
func oaepHashOf(data []byte) (crypto.Hash, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----BEGIN") {
			break
		}
		if v, ok := strings.CutPrefix(line, oaepHashComment); ok {
			return escrow.ParseOAEPHash(strings.TrimSpace(v))
		}
	}
	return crypto.SHA1, nil
}

// encodePublicKey writes pub as PEM with a comment naming the key and its OAEP hash.
func encodePublicKey(pub *rsa.PublicKey, label string, hash crypto.Hash) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	fpr, err := escrow.FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	name, err := escrow.OAEPHash(hash)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# p11escrow RSA-%d key %q, fingerprint %s\n", pub.N.BitLen(), label, fpr)
	fmt.Fprintf(&b, "%s%s\n", oaepHashComment, name)
	pem.Encode(&b, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	return b.Bytes(), nil
}
