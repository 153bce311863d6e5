package main

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"database/sql"
	"encoding/json"
	"os"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/rogpeppe/go-internal/testscript"
	_ "modernc.org/sqlite"
)

// editrequest FILE OP [ARG] tampers with a recovery request file, as an attacker would:
//
//	dup       append a copy of the first approval (the same officer twice)
//	forge     flip a bit of the first approval's signature
//	stranger  append a valid approval by a fresh key that no officer registered
//	reason T  change the reason after the approvals were given
func editRequest(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) < 2 {
		ts.Fatalf("usage: editrequest FILE dup|forge|stranger|reason TEXT")
	}
	name := ts.MkAbs(args[0])
	data, err := os.ReadFile(name)
	ts.Check(err)
	req, err := escrow.ParseRequest(data)
	ts.Check(err)
	needApproval := func() {
		if len(req.Approvals) == 0 {
			ts.Fatalf("%s has no approval", args[0])
		}
	}
	switch args[1] {
	case "dup":
		needApproval()
		req.Approvals = append(req.Approvals, req.Approvals[0])
	case "forge":
		needApproval()
		req.Approvals[0].Signature[8] ^= 1
	case "stranger":
		k, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		ts.Check(err)
		a, err := req.Approve(k)
		ts.Check(err)
		req.Approvals = append(req.Approvals, a)
	case "reason":
		if len(args) != 3 {
			ts.Fatalf("usage: editrequest FILE reason TEXT")
		}
		req.Reason = args[2]
	default:
		ts.Fatalf("unknown editrequest operation %q", args[1])
	}
	ts.Check(os.WriteFile(name, req.Marshal(), 0o644))
}

// splicerecord A B OUT writes record A with the authority stanza of B's file put into A's header
// and A's record alike: every repeated field agrees, but the wrapped key is B's file key, which
// does not open A's header.
func spliceRecord(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 3 {
		ts.Fatalf("usage: splicerecord A B OUT")
	}
	read := func(name string) (*escrow.Record, *escrow.Header) {
		data, err := os.ReadFile(ts.MkAbs(name))
		ts.Check(err)
		r, err := escrow.ParseRecord(data)
		ts.Check(err)
		h, _, err := r.AuthorityStanza()
		ts.Check(err)
		return r, h
	}
	ra, ha := read(args[0])
	rb, hb := read(args[1])
	for i, s := range ha.Stanzas {
		if escrow.StanzaRole(s) == escrow.RoleAuthority {
			for _, t := range hb.Stanzas {
				if escrow.StanzaRole(t) == escrow.RoleAuthority {
					ha.Stanzas[i] = t
				}
			}
		}
	}
	ra.Authority = rb.Authority
	ra.Header = ha.Marshal()
	out, err := json.MarshalIndent(ra, "", "  ")
	ts.Check(err)
	ts.Check(os.WriteFile(ts.MkAbs(args[2]), out, 0o644))
}

// sqlexec DB SQL runs one statement on the authority's SQLite database, as an insider with
// write access to the file would.
func sqlExec(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: sqlexec DB SQL")
	}
	db, err := sql.Open("sqlite", "file:"+ts.MkAbs(args[0]))
	ts.Check(err)
	defer db.Close()
	_, err = db.Exec(args[1])
	ts.Check(err)
}

// fileid FILE VAR sets $VAR to the file ID of an encrypted file, as a user reads it from
// `p11escrow inspect`.
func fileID(ts *testscript.TestScript, neg bool, args []string) {
	if neg || len(args) != 2 {
		ts.Fatalf("usage: fileid FILE VAR")
	}
	f, err := os.Open(ts.MkAbs(args[0]))
	ts.Check(err)
	defer f.Close()
	h, _, err := escrow.ParseHeader(f)
	ts.Check(err)
	ts.Setenv(args[1], h.ID.String())
}
