package main

import (
	"crypto"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// Which OAEP hash a key's token decrypts is found with a private-key operation (see
// token.KeyPair.OAEPHash), a slow one on a TPM. The answer cannot change for a key that never
// leaves its token, so it is kept in the user's cache directory, one file per key named by its
// fingerprint ($XDG_CACHE_HOME/p11escrow/oaep-hash/FINGERPRINT, holding "sha1" or "sha256"),
// beside the oaep-hash comment of the key's .pub file. A missing, unreadable or malformed
// entry only means one more probe; a cache that cannot be written only means no cache.

// oaepHashFor returns kp's OAEP hash, from the cache or from a probe it then caches.
func oaepHashFor(kp *token.KeyPair) (crypto.Hash, error) {
	fpr, err := escrow.FingerprintOf(kp.Public)
	if err != nil {
		return 0, err
	}
	name := oaepCachePath(fpr)
	if name != "" {
		if h, ok := readOAEPCache(name); ok {
			return h, nil
		}
	}
	hash, err := kp.OAEPHash()
	if err != nil {
		return 0, err
	}
	if name != "" {
		writeOAEPCache(name, hash)
	}
	return hash, nil
}

// oaepCachePath is the cache file of a key, or "" without a cache directory.
func oaepCachePath(fpr escrow.Fingerprint) string {
	dir, err := os.UserCacheDir()
	if err != nil {
		return ""
	}
	return filepath.Join(dir, "p11escrow", "oaep-hash", fpr.String())
}

func readOAEPCache(name string) (crypto.Hash, bool) {
	f, err := os.Open(name)
	if err != nil {
		return 0, false
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, 16)) // "sha256\n" and no more
	if err != nil {
		return 0, false
	}
	h, err := escrow.ParseOAEPHash(strings.TrimSuffix(string(b), "\n"))
	return h, err == nil
}

// writeOAEPCache writes the entry through a temporary file, so a reader never sees half of it.
func writeOAEPCache(name string, hash crypto.Hash) {
	v, err := escrow.OAEPHash(hash)
	if err != nil || os.MkdirAll(filepath.Dir(name), 0o700) != nil {
		return
	}
	tmp, err := os.CreateTemp(filepath.Dir(name), ".tmp-*")
	if err != nil {
		return
	}
	_, err = tmp.WriteString(v + "\n")
	if cerr := tmp.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp.Name(), name)
	}
	if err != nil {
		os.Remove(tmp.Name())
	}
}
