package main

import (
	"fmt"
	"io"
)

// Limits on the inputs that are read whole. Files and payloads are streamed and need none; every
// other input is small by construction, and a bound keeps a hostile or mistaken one (a device, a
// FIFO, a huge file) from costing more than a few hundred KiB. README.md ("Limits today") lists them.
const (
	// maxHeaderFile is a re-issued header file: a header and nothing after it, at most 65536
	// bytes (FORMAT.md section 2).
	maxHeaderFile = 65536
	// maxRecordFile is an escrow record: the base64 of the largest header, plus 16 KiB for the
	// other fields, whose longest is a description (FORMAT.md section 5).
	maxRecordFile = (maxHeaderFile+2)/3*4 + 16<<10
	// maxRequestFile is a recovery or change request with its approvals: a few KiB of fields
	// and one approval (about 200 bytes) per officer.
	maxRequestFile = 256 << 10
	// maxPublicKeyFile is a public key file: a PEM key with comments, or a certificate.
	maxPublicKeyFile = 64 << 10
	// maxPINFile is a PIN file. PINs are short; PKCS#11 tokens take at most a few dozen bytes.
	maxPINFile = 1 << 10
)

// readLimited reads all of r, or fails with a one-line error naming what and its limit once r
// holds more than limit bytes. It never allocates more than limit+1 bytes.
func readLimited(r io.Reader, name, what string, limit int64) ([]byte, error) {
	data, err := io.ReadAll(io.LimitReader(r, limit+1))
	if err != nil {
		return nil, unwrapPath(err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("%s: larger than %s, the limit for %s; refusing", name, sizeText(limit), what)
	}
	return data, nil
}

// readFileLimited opens name ("-" is stdin) and reads it with readLimited.
func readFileLimited(name, what string, limit int64) ([]byte, error) {
	r, err := openInput(name)
	if err != nil {
		return nil, err
	}
	defer r.Close()
	return readLimited(r, name, what, limit)
}

// sizeText writes a limit in KiB when it is a whole number of them.
func sizeText(n int64) string {
	if n >= 1024 && n%1024 == 0 {
		return fmt.Sprintf("%d KiB", n/1024)
	}
	return fmt.Sprintf("%d bytes", n)
}
