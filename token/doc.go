// Package token is p11escrow's PKCS#11 layer. It hides github.com/miekg/pkcs11
// behind a small API: load a module, select a token by label or serial, log
// in once, make per-file AES-256 keys and wrap them with RSA-OAEP, and find or
// generate RSA key pairs whose private half never leaves the token.
//
// It is written on raw miekg/pkcs11, not on crypto11: crypto11 would be a
// second PKCS#11 stack loading the same module in this process, which is
// fragile (it counts modules by path string, and its Finalize would pull the
// module from under this package's sessions), and it hides the attribute
// templates and mechanism parameters that p11escrow must choose itself.
//
// The files follow the concerns:
//   - module.go, registry.go, find.go, uri.go: loading modules, selecting tokens;
//   - token.go, pool.go: a session, login, and more sessions for a batch (Sessions);
//   - template.go: every attribute template handed to a token;
//   - generate.go, keypair.go, sign.go, public.go, otherkeys.go: generating and
//     finding exchange, authority and signing keys (one KeyID rule for all);
//   - filekey.go, secret.go, rewrap.go: file keys and keys unwrapped on the token;
//   - caps.go, probe.go, dualuse.go: what a token can do, and its quirks;
//   - errors.go: one human sentence for every CKR_ code.
//
// Errors are *Error values whose message tells the user what to do; test
// them with errors.Is against the Err* sentinels.
package token
