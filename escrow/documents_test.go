package escrow

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var updateDocuments = flag.Bool("update-documents", false, "regenerate testdata/documents")

// document is one entry of testdata/documents.json: a JSON document and whether a reader must
// accept it (FORMAT.md section 5.1).
type document struct {
	File    string `json:"file"`
	Kind    string `json:"kind"`               // record, request or change
	Expect  string `json:"expect"`             // valid or invalid
	Rule    string `json:"rule"`               // what the vector tests
	FileKey string `json:"file_key,omitempty"` // hex, for records
}

func parseDocument(kind string, data []byte) error {
	var err error
	switch kind {
	case "record":
		_, err = ParseRecord(data)
	case "request":
		_, err = ParseRequest(data)
	case "change":
		_, err = ParseChangeRequest(data)
	default:
		panic(kind)
	}
	return err
}

// TestDocumentVectors parses every document vector and checks its outcome. A valid record must
// also verify under the authority's key (testdata/other.pem), so that the vectors pin down
// exactly which bytes are bound.
func TestDocumentVectors(t *testing.T) {
	if *updateDocuments {
		writeDocuments(t)
	}
	data, err := os.ReadFile("testdata/documents.json")
	if err != nil {
		t.Fatal(err)
	}
	var ds []document
	if err := json.Unmarshal(data, &ds); err != nil {
		t.Fatal(err)
	}
	if len(ds) < 30 {
		t.Fatalf("only %d document vectors", len(ds))
	}
	authority := identity(loadKey(t, "other.pem"))
	for _, d := range ds {
		t.Run(strings.TrimSuffix(d.File, ".json"), func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata/documents", d.File))
			if err != nil {
				t.Fatal(err)
			}
			err = parseDocument(d.Kind, data)
			switch {
			case d.Expect == "invalid" && err == nil:
				t.Fatalf("accepted; want it refused (%s)", d.Rule)
			case d.Expect == "valid" && err != nil:
				t.Fatalf("refused: %v", err)
			case err != nil && strings.ContainsAny(err.Error(), "\n\x1b\u202e"):
				t.Fatalf("the error is not one escaped line: %q", err)
			}
			if d.Expect == "valid" && d.Kind == "record" {
				r, _ := ParseRecord(data)
				if _, err := r.Verify(authority); err != nil {
					t.Fatalf("a valid record does not verify: %v", err)
				}
			}
		})
	}
}

// writeDocuments regenerates the document vectors. Run:
// go test ./escrow -run TestDocumentVectors -update-documents
func writeDocuments(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	dir := "testdata/documents"
	os.RemoveAll(dir)
	os.MkdirAll(dir, 0o755)
	var ds []document
	add := func(kind, name, expect, rule string, key hostKey, data string) {
		d := document{File: kind + "-" + name + ".json", Kind: kind, Expect: expect, Rule: rule}
		if key != nil {
			d.FileKey = hex.EncodeToString(key)
		}
		if err := os.WriteFile(filepath.Join(dir, d.File), []byte(data), 0o644); err != nil {
			t.Fatal(err)
		}
		ds = append(ds, d)
	}
	sub := func(s, old, new string) string {
		if !strings.Contains(s, old) {
			t.Fatalf("%q is not in %s", old, s)
		}
		return strings.Replace(s, old, new, 1)
	}
	created := time.Date(2026, 11, 27, 10, 31, 5, 0, time.UTC)

	key := newHostKey()
	_, h := encrypt(t, key, []byte("payroll"), recipient(owner, RoleOwner), recipient(authority, RoleAuthority))
	fpr, _ := FingerprintOf(&owner.PublicKey)
	newRecord := func(description string) string {
		r, err := NewRecord(h, key, description, RecordOwner{Fingerprint: fpr.String(), TokenLabel: "alice", TokenSerial: "3e9b0c4f1a2b7d6e"}, created)
		if err != nil {
			t.Fatal(err)
		}
		return string(r.Marshal())
	}
	rec := newRecord("Q3 payroll")
	wk := base64.StdEncoding.EncodeToString(h.stanza(RoleAuthority).Body)
	hdr := base64.StdEncoding.EncodeToString(h.Marshal())
	add("record", "ok", "valid", "a record as p11escrow writes it", key, rec)
	add("record", "ok-compact", "valid", "whitespace between tokens is free", key,
		compact(t, rec))
	add("record", "ok-escaped-text", "valid", "JSON escapes are decoded before binding", key,
		sub(newRecord("café ☕ 😀"), "café ☕ 😀", `caf\u00e9 \u2615 \ud83d\ude00`))
	add("record", "ok-cleaned-latin1-name", "valid", "a Latin-1 file name, cleaned by the writer", key,
		newRecord("caf\xe9.bin"))
	add("record", "ok-description-1024", "valid", "a description of exactly 1024 bytes", key,
		newRecord(strings.Repeat("d", 1024)))
	add("record", "description-1025", "invalid", "a description of 1025 bytes", key,
		sub(rec, `"Q3 payroll"`, `"`+strings.Repeat("d", 1025)+`"`))
	add("record", "name-case", "invalid", "member names are case-sensitive", key, sub(rec, `"description"`, `"Description"`))
	add("record", "duplicate-member", "invalid", "a duplicate member", key,
		sub(rec, `"description": "Q3 payroll",`, `"description": "Q3 payroll", "description": "Q3 payroll",`))
	add("record", "unknown-member", "invalid", "an unknown member", key, sub(rec, `"description"`, `"note": "", "description"`))
	add("record", "missing-description", "invalid", "a missing required member", key,
		sub(rec, `"description": "Q3 payroll",`, ``))
	add("record", "missing-token-serial", "invalid", "a missing required member in owner", key,
		sub(rec, `,
    "token_serial": "3e9b0c4f1a2b7d6e"`, ``))
	add("record", "null-owner", "invalid", "null is not an object", key, sub(rec, `"owner": {`, `"owner": null, "x": {`))
	add("record", "wrapped-key-newline", "invalid", "base64 with an embedded \\n", key, sub(rec, wk, wk[:20]+`\n`+wk[20:]))
	add("record", "wrapped-key-unpadded", "invalid", "base64 without its padding", key,
		sub(rec, wk, strings.TrimRight(wk, "=")))
	add("record", "wrapped-key-url-alphabet", "invalid", "base64 in the URL alphabet", key,
		sub(rec, `"wrapped_key": "`+wk, `"wrapped_key": "`+base64.URLEncoding.EncodeToString(h.stanza(RoleAuthority).Body)))
	add("record", "created-yesterday", "invalid", "created is not a time", key, sub(rec, "2026-11-27T10:31:05Z", "yesterday"))
	add("record", "created-offset", "invalid", "created with +00:00, not Z", key, sub(rec, "2026-11-27T10:31:05Z", "2026-11-27T10:31:05+00:00"))
	add("record", "created-fraction", "invalid", "created with fractional seconds", key, sub(rec, "2026-11-27T10:31:05Z", "2026-11-27T10:31:05.0Z"))
	add("record", "created-lower-z", "invalid", "created with a lower-case z", key, sub(rec, "2026-11-27T10:31:05Z", "2026-11-27T10:31:05z"))
	add("record", "header-trailing-bytes", "invalid", "bytes after the header's mac-line", key,
		sub(rec, hdr, base64.StdEncoding.EncodeToString(append(h.Marshal(), "payload"...))))
	add("record", "raw-ff-byte", "invalid", "a raw 0xFF byte: not UTF-8", key, sub(rec, "Q3 payroll", "Q3 pay\xffroll"))
	add("record", "lone-surrogate", "invalid", "a lone surrogate escape", key, sub(rec, "Q3 payroll", `Q3 pay\ud800roll`))
	add("record", "lone-low-surrogate", "invalid", "a lone low surrogate escape", key, sub(rec, "Q3 payroll", `Q3 pay\udc00roll`))
	add("record", "escape-sequence", "invalid", "an ESC control character", key, sub(rec, "Q3 payroll", `\u001b[2JQ3 payroll`))
	add("record", "del", "invalid", "a DEL character", key, sub(rec, "Q3 payroll", "Q3 payroll\x7f"))
	add("record", "c1-control", "invalid", "a C1 control character (U+009B, CSI)", key, sub(rec, "Q3 payroll", "Q3 \u009b2Jpayroll"))
	add("record", "bidi-override", "invalid", "a bidi override (U+202E)", key, sub(rec, `"alice"`, `"ali`+"\u202e"+`ecnap"`))
	add("record", "newline-in-label", "invalid", "a newline in a text field", key, sub(rec, `"alice"`, `"alice\nstatus: recovered"`))
	add("record", "trailing-data", "invalid", "data after the document", key, rec+"{}")
	add("record", "not-an-object", "invalid", "the document is an array", key, "["+rec+"]")
	add("record", "bom", "invalid", "a byte order mark before the document", key, "\ufeff"+rec)
	add("record", "format", "invalid", "an unknown format", key, sub(rec, "p11escrow-record/v1", "p11escrow-record/v2"))

	k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	fid, _ := ParseFileID("5f1c0b3e9a2d4c7b8e6f1a2b3c4d5e6f")
	auth := "0123456789abcdef0123456789abcdef"
	r, err := NewRequest(auth, fid, "IG31jf6aGP0WxmJU6xcuQwY0w+fk12Mt76cKOnUoORk", ActionReheader, &owner.PublicKey, crypto.SHA1, "ticket 42: lost card", "user=alice", created, 7*24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	ap, err := r.Approve(k)
	if err != nil {
		t.Fatal(err)
	}
	r.AddApproval(ap)
	req := string(r.Marshal())
	sig := base64.StdEncoding.EncodeToString(ap.Signature)
	add("request", "ok", "valid", "a request as p11escrow writes it", nil, req)
	add("request", "name-case", "invalid", "member names are case-sensitive", nil, sub(req, `"reason"`, `"Reason"`))
	add("request", "duplicate-member", "invalid", "a duplicate member", nil, sub(req, `"reason": `, `"reason": "x", "reason": `))
	add("request", "missing-reason", "invalid", "a missing required member", nil, sub(req, `"reason": "ticket 42: lost card",`, ``))
	add("request", "missing-approvals", "invalid", "a missing approvals array", nil, sub(req, `,
  "approvals": [`, `, "x": [`))
	add("request", "null-approvals", "invalid", "null is not an array", nil, sub(req, `"approvals": [`, `"approvals": null, "x": [`))
	add("request", "signature-space", "invalid", "base64 with a space", nil, sub(req, sig, sig[:8]+" "+sig[8:]))
	add("request", "expires-offset", "invalid", "expires with +00:00, not Z", nil, sub(req, "2026-12-04T10:31:05Z", "2026-12-04T10:31:05+00:00"))
	add("request", "reason-escape", "invalid", "an ESC control character in reason", nil, sub(req, "ticket 42", `\u001b]0;owned\u0007ticket 42`))
	add("request", "reason-bidi", "invalid", "a bidi isolate (U+2067) in reason", nil, sub(req, "ticket 42", "\u2067ticket 42"))
	add("request", "reason-raw-latin1", "invalid", "a raw Latin-1 byte in reason", nil, sub(req, "lost card", "lost caf\xe9"))
	add("request", "reason-lone-surrogate", "invalid", "a lone surrogate escape in reason", nil, sub(req, "lost card", `lost \udfffcard`))
	add("request", "reason-1025", "invalid", "a reason of 1025 bytes", nil, sub(req, "ticket 42: lost card", strings.Repeat("r", 1025)))

	ch, err := NewChangeRequest(auth, PolicyChange(3), "ticket 7", "user=alice", created, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chg := string(ch.Marshal())
	add("change", "ok-policy", "valid", "a policy change as p11escrow writes it", nil, chg)
	add("change", "approvals-leading-zero", "invalid", "a number with a leading zero", nil, sub(chg, `"approvals": 3`, `"approvals": 03`))
	add("change", "approvals-fraction", "invalid", "a number with a fraction", nil, sub(chg, `"approvals": 3`, `"approvals": 3.0`))
	add("change", "approvals-exponent", "invalid", "a number with an exponent", nil, sub(chg, `"approvals": 3`, `"approvals": 3e0`))
	add("change", "approvals-string", "invalid", "a number as a string", nil, sub(chg, `"approvals": 3`, `"approvals": "3"`))
	add("change", "empty-name", "invalid", "an optional member present but empty", nil, sub(chg, `"approvals": 3`, `"approvals": 3, "name": ""`))
	add("change", "kind-case", "invalid", "member names are case-sensitive", nil, sub(chg, `"kind"`, `"Kind"`))
	oa, err := OfficerAddChange("oscar", k.Public())
	if err != nil {
		t.Fatal(err)
	}
	ch, err = NewChangeRequest(auth, oa, "ticket 8", "user=alice", created, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	chg = string(ch.Marshal())
	add("change", "ok-officer-add", "valid", "an officer-add change as p11escrow writes it", nil, chg)
	add("change", "officer-name-escape", "invalid", "an ESC control character in the officer's name", nil, sub(chg, `"oscar"`, `"osc\u001b[8mar"`))
	add("change", "officer-name-129", "invalid", "an officer name of 129 bytes", nil, sub(chg, `"oscar"`, `"`+strings.Repeat("o", 129)+`"`))

	data, _ := json.MarshalIndent(ds, "", "  ")
	if err := os.WriteFile("testdata/documents.json", append(data, '\n'), 0o644); err != nil {
		t.Fatal(err)
	}
}

func compact(t *testing.T, s string) string {
	var b bytes.Buffer
	if err := json.Compact(&b, []byte(s)); err != nil {
		t.Fatal(err)
	}
	return b.String()
}
