package escrow

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"strings"
	"testing"
	"time"
)

// Seeds for the writers' fuzz tests: the texts that once made documents nobody could read.
var textSeeds = []string{
	"Q3 payroll", "", "caf\xe9.bin", "\xff\xfe", "\x1b]0;owned\x07\x1b[2Jstatus: recovered",
	"evil\u202etxt.exe", "a\nb\r\tc", "\u0085\u009b", "\xed\xa0\x80", "emoji 😀", `back\slash \xe9`,
	strings.Repeat("\xe9", 255),
}

// FuzzNewRecord checks that every record NewRecord writes, ParseRecord accepts, with the same
// record-bytes, and that it verifies under the authority's key: what the tool binds is what it
// writes, whatever the file name, description or token label.
func FuzzNewRecord(f *testing.F) {
	for i, s := range textSeeds {
		f.Add(s, textSeeds[(i+1)%len(textSeeds)], textSeeds[(i+2)%len(textSeeds)])
	}
	owner, authority := loadKey(f, "owner.pem"), loadKey(f, "other.pem")
	key := newHostKey()
	_, h := encrypt(f, key, []byte("payroll"), recipient(owner, RoleOwner), recipient(authority, RoleAuthority))
	fpr, _ := FingerprintOf(&owner.PublicKey)
	f.Fuzz(func(t *testing.T, description, label, serial string) {
		if len(label) > 32 || len(serial) > 32 {
			t.Skip("PKCS#11 labels are 32 bytes, serials 16")
		}
		rec, err := NewRecord(h, key, description, RecordOwner{Fingerprint: fpr.String(), TokenLabel: label, TokenSerial: serial}, time.Now())
		if err != nil {
			if len(description) > 1024/4 && strings.Contains(err.Error(), "longer than") {
				return // a description that cannot be made valid within its limit is refused
			}
			t.Fatalf("NewRecord: %v", err)
		}
		parsed, err := ParseRecord(rec.Marshal())
		if err != nil {
			t.Fatalf("the reader refuses what the writer wrote: %v", err)
		}
		if !bytes.Equal(parsed.BindingInput(), rec.BindingInput()) {
			t.Fatal("the bytes read differ from the bytes bound")
		}
		if _, err := parsed.Verify(identity(authority)); err != nil {
			t.Fatalf("Verify: %v", err)
		}
	})
}

// FuzzNewRequest checks that every recovery request NewRequest writes, with an approval,
// ParseRequest accepts with the same request-bytes, and the approval still verifies.
func FuzzNewRequest(f *testing.F) {
	for i, s := range textSeeds {
		f.Add(s, textSeeds[(i+1)%len(textSeeds)])
	}
	owner := loadKey(f, "owner.pem")
	officer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	fid := NewFileID()
	auth := strings.Repeat("ab", 16)
	f.Fuzz(func(t *testing.T, reason, requester string) {
		r, err := NewRequest(auth, fid, "IG31jf6aGP0WxmJU6xcuQwY0w+fk12Mt76cKOnUoORk", ActionReheader, &owner.PublicKey, crypto.SHA1, reason, requester, time.Now(), time.Hour)
		if err != nil {
			if len(reason) > 1024/4 || len(requester) > 512/4 {
				return
			}
			t.Fatalf("NewRequest: %v", err)
		}
		ap, err := r.Approve(officer)
		if err != nil {
			t.Fatal(err)
		}
		r.AddApproval(ap)
		parsed, err := ParseRequest(r.Marshal())
		if err != nil {
			t.Fatalf("the reader refuses what the writer wrote: %v", err)
		}
		if !bytes.Equal(parsed.CanonicalBytes(), r.CanonicalBytes()) {
			t.Fatal("the bytes read differ from the bytes signed")
		}
		if err := parsed.VerifyApproval(parsed.Approvals[0], officer.Public()); err != nil {
			t.Fatalf("the approval no longer verifies: %v", err)
		}
	})
}

// FuzzNewChangeRequest does the same for change requests, officer name included.
func FuzzNewChangeRequest(f *testing.F) {
	for i, s := range textSeeds {
		f.Add(s, textSeeds[(i+1)%len(textSeeds)], textSeeds[(i+2)%len(textSeeds)])
	}
	officer, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		f.Fatal(err)
	}
	auth := strings.Repeat("ab", 16)
	f.Fuzz(func(t *testing.T, name, reason, requester string) {
		ch, err := OfficerAddChange(name, officer.Public())
		if err != nil {
			t.Fatal(err)
		}
		r, err := NewChangeRequest(auth, ch, reason, requester, time.Now(), time.Hour)
		if err != nil {
			if name == "" || len(name) > 128/4 || len(reason) > 1024/4 || len(requester) > 512/4 {
				return
			}
			t.Fatalf("NewChangeRequest: %v", err)
		}
		ap, err := r.Approve(officer)
		if err != nil {
			t.Fatal(err)
		}
		r.AddApproval(ap)
		parsed, err := ParseChangeRequest(r.Marshal())
		if err != nil {
			t.Fatalf("the reader refuses what the writer wrote: %v", err)
		}
		if !bytes.Equal(parsed.CanonicalBytes(), r.CanonicalBytes()) {
			t.Fatal("the bytes read differ from the bytes signed")
		}
		if err := parsed.VerifyApproval(parsed.Approvals[0], officer.Public()); err != nil {
			t.Fatalf("the approval no longer verifies: %v", err)
		}
	})
}
