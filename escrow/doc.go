// Package escrow implements the p11escrow file format (FORMAT.md): a header of RSA-OAEP stanzas
// that wrap a per-file AES-256 key for its owner, its backup authority and any extra recipients,
// bound to that key by a commitment and a GCM MAC, followed by a chunked AES-256-GCM payload; and
// the escrow record that carries the authority's copy of the key.
//
// The package knows nothing of PKCS#11. Keys on tokens come in through small interfaces:
// FileKey, which a token makes and wraps; Decrypter, which a token's private key implements; and
// KeyOps and KeyOpener, a file key held by a token as a sensitive object, with which the backup
// authority verifies records, re-issues headers and decrypts without the key leaving the token.
// Everything the format computes with the file key can also be computed by a token that holds
// the key as a sensitive object (see CommitmentPrefix, MACNonce and Record.BindingInput).
package escrow
