package main

import (
	"bufio"
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/rsa"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
)

// A public key file is a PKIX "PUBLIC KEY" PEM block, which openssl and every other tool read,
// preceded by comment lines that PEM parsers skip. One comment matters: "# oaep-hash: sha256"
// says the key's token has shown it decrypts OAEP with SHA-256. Without it, SHA-1 is used,
// the one OAEP hash that SoftHSM2 and most HSMs accept.
const oaepHashComment = "# oaep-hash: "

// publicKeyFile is a recipient's public key: RSA with its OAEP hash, or EC (FORMAT.md
// section 2.3).
type publicKeyFile struct {
	pub  crypto.PublicKey // *rsa.PublicKey, or *ecdsa.PublicKey on P-256 or P-384
	hash crypto.Hash      // the OAEP hash of an RSA key
}

// recipient wraps file keys for the key in the stanza type of its kind.
func (k *publicKeyFile) recipient(role escrow.Role) escrow.Recipient {
	if ec, ok := k.pub.(*ecdsa.PublicKey); ok {
		return &escrow.ECRecipient{Public: ec, Role: role}
	}
	return &escrow.RSARecipient{Public: k.pub.(*rsa.PublicKey), Hash: k.hash, Role: role}
}

func readPublicKey(name string) (*publicKeyFile, error) {
	k, data, err := readPKIXFile(name)
	if err != nil {
		return nil, err
	}
	hash, found, err := oaepHashOf(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %v", name, err)
	}
	switch pub := k.(type) {
	case *rsa.PublicKey:
	case *ecdsa.PublicKey:
		if _, err := escrow.CurveName(pub); err != nil {
			return nil, fmt.Errorf("%s: %v", name, err)
		}
		return &publicKeyFile{pub: pub}, nil // an oaep-hash line means nothing for ECDH
	default:
		return nil, fmt.Errorf("%s: not an RSA or EC (P-256, P-384) public key", name)
	}
	if !found {
		fmt.Fprintf(os.Stderr, "p11escrow: note: %s has no %q line, so its key gets OAEP with SHA-1, the one hash every token decrypts\n",
			safetext.Clean(name), strings.TrimSpace(oaepHashComment))
	}
	return &publicKeyFile{pub: k, hash: hash}, nil
}

// readPKIXFile reads a public key file: the key, and the file's bytes for its comments. It takes
// what other tools hand out: SPKI ("PUBLIC KEY", as openssl and p11tool write), PKCS#1 ("RSA
// PUBLIC KEY") and X.509 certificates (as PIV cards hold them), each in PEM or DER.
func readPKIXFile(name string) (crypto.PublicKey, []byte, error) {
	data, err := readFileLimited(name, "a public key file", maxPublicKeyFile)
	if err != nil {
		return nil, nil, err
	}
	k, err := parsePublicKey(data)
	if err != nil {
		return nil, nil, fmt.Errorf("%s: %v", name, err)
	}
	return k, data, nil
}

// errNotPublicKey keeps the words "not a PEM public key" that users and scripts know.
var errNotPublicKey = errors.New(`not a PEM public key, DER public key or certificate (want SPKI "PUBLIC KEY", PKCS#1 "RSA PUBLIC KEY" or an X.509 certificate)`)

// parsePublicKey parses the first PEM block of data, or data as DER if it has none.
func parsePublicKey(data []byte) (crypto.PublicKey, error) {
	if block, _ := pem.Decode(data); block != nil {
		switch block.Type {
		case "PUBLIC KEY":
			return x509.ParsePKIXPublicKey(block.Bytes)
		case "RSA PUBLIC KEY":
			return x509.ParsePKCS1PublicKey(block.Bytes)
		case "CERTIFICATE":
			return certificateKey(block.Bytes)
		}
		return nil, errNotPublicKey
	}
	if k, err := x509.ParsePKIXPublicKey(data); err == nil {
		return k, nil
	}
	if k, err := certificateKey(data); err == nil {
		return k, nil
	}
	if k, err := x509.ParsePKCS1PublicKey(data); err == nil {
		return k, nil
	}
	return nil, errNotPublicKey
}

// certificateKey returns a certificate's public key. The certificate's validity and issuer are
// not checked: it is only a container for the key, as a PIV card's is.
func certificateKey(der []byte) (crypto.PublicKey, error) {
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, err
	}
	return cert.PublicKey, nil
}

// oaepHashOf reads the oaep-hash comment before the PEM block, and says whether there was one.
func oaepHashOf(data []byte) (crypto.Hash, bool, error) {
	sc := bufio.NewScanner(bytes.NewReader(data))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "-----BEGIN") {
			break
		}
		if v, ok := strings.CutPrefix(line, oaepHashComment); ok {
			h, err := escrow.ParseOAEPHash(strings.TrimSpace(v))
			return h, true, err
		}
	}
	return crypto.SHA1, false, nil
}

// publish makes a public key file world-readable (0644) before it is committed: it is meant to
// be handed out, unlike the 0600 that outputs get by default.
func publish(o *output) error {
	if o.file == nil {
		return nil
	}
	return o.file.Chmod(0o644)
}

// encodePublicKey writes pub as PEM with a comment naming the key and, for an RSA key, its OAEP
// hash.
func encodePublicKey(pub crypto.PublicKey, label string, hash crypto.Hash) ([]byte, error) {
	der, err := x509.MarshalPKIXPublicKey(pub)
	if err != nil {
		return nil, err
	}
	fpr, err := escrow.FingerprintOf(pub)
	if err != nil {
		return nil, err
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "# p11escrow %s key %q, fingerprint %s\n", keyTypeName(pub), label, fpr)
	if _, ok := pub.(*rsa.PublicKey); ok {
		name, err := escrow.OAEPHash(hash)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(&b, "%s%s\n", oaepHashComment, name)
	}
	pem.Encode(&b, &pem.Block{Type: "PUBLIC KEY", Bytes: der})
	return b.Bytes(), nil
}

// keyTypeName names an exchange key's type as key list shows it: RSA-3072, EC-P256.
func keyTypeName(pub crypto.PublicKey) string {
	switch k := pub.(type) {
	case *rsa.PublicKey:
		return fmt.Sprintf("RSA-%d", k.N.BitLen())
	case *ecdsa.PublicKey:
		return "EC-" + strings.ReplaceAll(k.Curve.Params().Name, "-", "")
	}
	return fmt.Sprintf("%T", pub)
}
