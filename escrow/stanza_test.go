package escrow

import (
	"bytes"
	"errors"
	"slices"
	"strings"
	"testing"
)

// rawRecipient adds a fixed stanza, of any type, to a file.
type rawRecipient struct{ s *Stanza }

func (r rawRecipient) Wrap(FileKey) (*Stanza, error) { return r.s, nil }

// TestUnknownStanzaKeptAndIgnored checks that a stanza of a type this version does not know
// survives parsing byte for byte, has no role and no tag, is skipped by identities and by
// NoIdentityError, and does not stop the file from opening.
func TestUnknownStanzaKeptAndIgnored(t *testing.T) {
	owner, authority := loadKey(t, "owner.pem"), loadKey(t, "other.pem")
	unknown := &Stanza{Type: "x-future", Args: []string{"sha1", "0badc0de", "owner"}, Body: []byte("not a key")}
	key := newHostKey()
	file, _ := encrypt(t, key, []byte("payroll"), recipient(owner, RoleOwner), rawRecipient{unknown})
	h, _, err := ParseHeader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	got := h.Stanzas[1]
	if got.Type != unknown.Type || !slices.Equal(got.Args, unknown.Args) || !bytes.Equal(got.Body, unknown.Body) {
		t.Fatalf("unknown stanza parsed as %+v", got)
	}
	if StanzaRole(got) != "" || StanzaTag(got) != "" {
		t.Fatalf("unknown stanza has role %q, tag %q", StanzaRole(got), StanzaTag(got))
	}
	if typed, err := ParseStanza(got); typed != nil || err != nil {
		t.Fatalf("ParseStanza(unknown) = %v, %v", typed, err)
	}
	// Its "owner" argument means nothing: a second, real, owner stanza is not a duplicate.
	if err := checkRoles(h.Stanzas); err != nil {
		t.Fatal(err)
	}
	plain, err := decrypt(file, identity(owner))
	if err != nil || string(plain) != "payroll" {
		t.Fatalf("decrypt: %q, %v", plain, err)
	}
	_, err = decrypt(file, identity(authority))
	var nid *NoIdentityError
	if !errors.As(err, &nid) {
		t.Fatalf("err = %v, want NoIdentityError", err)
	}
	fpr, _ := FingerprintOf(&owner.PublicKey)
	if !slices.Equal(nid.Tags, []string{fpr.Tag()}) {
		t.Fatalf("NoIdentityError tags = %v, want only the owner's %s", nid.Tags, fpr.Tag())
	}
}

// testStanza is a stanza type known only to this test ("-> x-test TAG ROLE"), to check that the
// role rule, the tags and NoIdentityError go through TypedStanza and not through rsa-oaep.
type testStanza struct{ tag, role string }

func (s *testStanza) Role() Role       { return Role(s.role) }
func (s *testStanza) Tag() string      { return s.tag }
func (s *testStanza) checkBody() error { return nil }

func TestRoleAndTagThroughInterface(t *testing.T) {
	stanzaTypes["x-test"] = func(s *Stanza) (typedStanza, error) { return &testStanza{s.Args[0], s.Args[1]}, nil }
	t.Cleanup(func() { delete(stanzaTypes, "x-test") })

	owner := loadKey(t, "owner.pem")
	x := &Stanza{Type: "x-test", Args: []string{"12345678", "recipient"}, Body: []byte("x")}
	if StanzaRole(x) != RoleRecipient || StanzaTag(x) != "12345678" {
		t.Fatalf("role %q, tag %q", StanzaRole(x), StanzaTag(x))
	}
	file, _ := encrypt(t, newHostKey(), []byte("payroll"), recipient(owner, RoleOwner), rawRecipient{x})
	_, err := decrypt(file, identity(loadKey(t, "other.pem")))
	var nid *NoIdentityError
	if !errors.As(err, &nid) || !slices.Contains(nid.Tags, "12345678") {
		t.Fatalf("err = %v, want a NoIdentityError naming tag 12345678", err)
	}

	// A second owner is refused whatever its type, by Encrypt and by the parser.
	x2 := &Stanza{Type: "x-test", Args: []string{"12345678", "owner"}, Body: []byte("x")}
	var buf bytes.Buffer
	if _, err := Encrypt(&buf, NewFileID(), newHostKey(), recipient(owner, RoleOwner), rawRecipient{x2}); err == nil || !strings.Contains(err.Error(), "more than one owner") {
		t.Fatalf("Encrypt with two owners: %v", err)
	}
	h, _, err := ParseHeader(bytes.NewReader(file))
	if err != nil {
		t.Fatal(err)
	}
	h.Stanzas[1] = x2
	_, _, err = ParseHeader(bytes.NewReader(h.Marshal()))
	var he *HeaderError
	if !errors.As(err, &he) || !strings.Contains(err.Error(), "more than one owner") {
		t.Fatalf("parsing two owners: %v", err)
	}
}
