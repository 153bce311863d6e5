package main

import (
	"encoding/hex"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/internal/safetext"
	"github.com/p11escrow/p11escrow/token"
	"github.com/urfave/cli/v2"
)

// tokenFlags select the module, the token and the PIN file. Every command that uses a token has them.
func tokenFlags() []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "module", EnvVars: []string{"P11ESCROW_MODULE"}, Usage: "PKCS#11 module `PATH` (default: p11-kit-proxy, else SoftHSM2, where installed)"},
		&cli.StringFlag{Name: "module-init-args", EnvVars: []string{"P11ESCROW_MODULE_INIT_ARGS"}, Usage: "`ARGS` for C_Initialize's pReserved, which some modules need (NSS softoken: configdir='sql:DIR')"},
		&cli.StringFlag{Name: "token", EnvVars: []string{"P11ESCROW_TOKEN"}, Usage: "token `LABEL`, or a PKCS#11 URI (pkcs11:token=...;object=...?module-path=...&pin-source=...; see token list)"},
		&cli.StringFlag{Name: "token-serial", Usage: "token serial `NUMBER`"},
		&cli.StringFlag{Name: "pin-file", Usage: "read the PIN from `FILE`; beats a URI's pin-source and the PIN variables (see README, PINs)"},
	}
}

// session is one open token for one command. It logs in at most once, and only when asked to.
type session struct {
	module *token.Module
	token  *token.Token
	pin    pinSource
	key    keyRef // the key the URI names, if any
}

// keyRef names a key by label or CKA_ID.
type keyRef struct {
	label string
	id    []byte
}

// openModule loads the module that --module, --module-init-args and the URI u (may be nil) name.
func openModule(c *cli.Context, u *token.URI) (*token.Module, error) {
	path, initArgs, err := moduleFor(c, u)
	if err != nil {
		return nil, err
	}
	if path == "" {
		if path, err = token.DefaultModulePath(); err != nil {
			return nil, err
		}
	}
	return token.LoadWithInitArgs(path, initArgs)
}

// registryEnv overrides the directories of p11-kit module files that module-name= looks in.
const registryEnv = "P11ESCROW_MODULE_REGISTRY"

// moduleFor picks the module: a URI's module-path, then its module-name (through p11-kit's
// registry), then --module or $P11ESCROW_MODULE, then the default (empty path). The URI comes
// first because it is the more specific, and a $P11ESCROW_MODULE set for another token must not
// override it. The initialisation arguments are --module-init-args, else the module file's
// x-init-reserved.
func moduleFor(c *cli.Context, u *token.URI) (path, initArgs string, err error) {
	initArgs = c.String("module-init-args")
	switch {
	case u != nil && u.ModulePath != "":
		return u.ModulePath, initArgs, nil
	case u != nil && u.ModuleName != "":
		var dirs []string
		if v := os.Getenv(registryEnv); v != "" {
			dirs = filepath.SplitList(v)
		}
		rm, err := token.ResolveModuleName(u.ModuleName, dirs)
		if err != nil {
			return "", "", err
		}
		if initArgs == "" {
			initArgs = rm.InitArgs
		}
		return rm.Path, initArgs, nil
	}
	return c.String("module"), initArgs, nil
}

// tokenURI returns the URI that selects the token: --token (or $P11ESCROW_TOKEN) if it is one,
// else --key if that is one (so that --key 'pkcs11:token=T;object=K' needs no --token), else
// nil. A command without one of the flags reads it as empty.
func tokenURI(c *cli.Context) (*token.URI, error) {
	for _, name := range []string{"token", "key"} {
		if u, ok, err := parseTokenURI(c.String(name)); err != nil || ok {
			return u, err
		}
	}
	return nil, nil
}

// openSession resolves --token (label or URI), --token-serial and --pin-file, and opens the token.
func openSession(c *cli.Context) (*session, error) {
	sel := token.Selector{Label: c.String("token"), Serial: c.String("token-serial")}
	pin := pinSource{file: c.String("pin-file"), role: roleOf(c)}
	u, err := tokenURI(c)
	if err != nil {
		return nil, err
	}
	var key keyRef
	if u != nil {
		if sel, err = uriSelector(c, u); err != nil {
			return nil, err
		}
		pin.uriFile = u.PinSource
		if key, err = keyRefOf(u); err != nil {
			return nil, err
		}
	}
	m, err := openModule(c, u)
	if err != nil {
		return nil, err
	}
	t, err := openToken(m, u, sel, key)
	if err != nil {
		m.Close()
		return nil, err
	}
	pin.label = t.Info().Label
	return &session{module: m, token: t, pin: pin, key: key}, nil
}

// uriSelector is the URI's token selection; --token-serial still applies, and a plain --token
// label still applies when the URI came from --key.
func uriSelector(c *cli.Context, u *token.URI) (token.Selector, error) {
	sel := u.Selector()
	if s := c.String("token-serial"); s != "" {
		sel.Serial = s
	}
	if l := c.String("token"); l != "" && !isURI(l) {
		if sel.Label != "" && sel.Label != l {
			return sel, usagef("--token %q and the URI's token=%q disagree; give one", l, sel.Label)
		}
		sel.Label = l
	}
	return sel, nil
}

// openToken checks the URI's library attributes, finds the token of a URI that names only an
// object, and opens the token.
func openToken(m *token.Module, u *token.URI, sel token.Selector, key keyRef) (*token.Token, error) {
	if u != nil {
		if err := m.CheckLibrary(u.Library()); err != nil {
			return nil, err
		}
		if sel == (token.Selector{}) && (key.label != "" || key.id != nil) {
			found, err := m.FindObjectToken(key.label, key.id)
			if err != nil {
				return nil, err
			}
			sel = found
		}
	}
	return m.Open(sel)
}

// keyRefOf is the key a URI names. Only key pairs are p11escrow keys: a type that names
// anything else is refused rather than ignored.
func keyRefOf(u *token.URI) (keyRef, error) {
	switch u.Type {
	case "", "private", "public":
		return keyRef{label: u.Object, id: u.ID}, nil
	}
	return keyRef{}, fmt.Errorf("the URI has type=%s, but p11escrow uses key pairs; write type=private or type=public, or leave type out", u.Type)
}

func isURI(s string) bool {
	return len(s) >= 7 && strings.EqualFold(s[:7], "pkcs11:") // RFC 3986: schemes are case-insensitive
}

// roleOf says which part the command's token plays, for its PIN variable.
func roleOf(c *cli.Context) pinRole {
	for _, ctx := range c.Lineage() {
		if ctx.Command == nil || ctx.Command.Name != "authority" {
			continue
		}
		if c.Command.Name == "approve" {
			return roleOfficer
		}
		return roleAuthority
	}
	return roleUser
}

func parseTokenURI(s string) (*token.URI, bool, error) {
	if !isURI(s) {
		return nil, false, nil
	}
	u, err := token.ParseURI(s)
	return u, err == nil, err
}

// login reads the PIN and logs in once. A wrong PIN is reported, never retried: PINs lock tokens.
// A token that needs no login is not asked for a PIN.
func (s *session) login() error {
	if !s.token.NeedsLogin() {
		return nil
	}
	pin, err := s.pin.read()
	if err != nil {
		return err
	}
	return s.token.Login(pin)
}

func (s *session) close() {
	s.token.Close()
	s.module.Close()
}

// findKey finds the key pair named by --key (a label or a URI), by the --token URI's object or
// id, or fails.
func (s *session) findKey(name string) (*token.KeyPair, error) {
	ref, err := s.keyRef(name)
	if err != nil {
		return nil, err
	}
	if ref.label == "" && ref.id == nil {
		return nil, usagef("name the key with --key LABEL, or with object= in a PKCS#11 URI")
	}
	return s.token.FindKeyPair(ref.label, ref.id)
}

// findSigner finds an officer's signing key named by a label or a URI's object.
func (s *session) findSigner(name string) (*token.Signer, error) {
	ref, err := s.keyRef(name)
	if err != nil {
		return nil, err
	}
	if ref.label == "" {
		return nil, usagef("name the signing key by its label, with --key LABEL or object= in a PKCS#11 URI")
	}
	return s.token.FindSigner(ref.label)
}

// keyRef resolves a key name: a URI's object and id, a bare label, or, if empty, the key the
// --token URI names.
func (s *session) keyRef(name string) (keyRef, error) {
	if name == "" {
		return s.key, nil
	}
	if u, ok, err := parseTokenURI(name); err != nil {
		return keyRef{}, err
	} else if ok {
		return keyRefOf(u)
	}
	return keyRef{label: name}, nil
}

// withSession opens the token, runs f, and closes the token.
func withSession(c *cli.Context, f func(s *session) error) error {
	s, err := openSession(c)
	if err != nil {
		return err
	}
	defer s.close()
	return f(s)
}

// warn prints a warning line on stderr.
func warn(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "p11escrow: warning: %s\n", safetext.Clean(fmt.Sprintf(format, args...)))
}

// listOtherKeys adds the token's other private keys (officers' signing keys, EC keys on other
// curves or that may not derive) to a key list, with their type and no tag: they cannot be
// encrypted to. kps are the exchange keys listed already.
func listOtherKeys(w io.Writer, s *session, kps []exchangeKey) error {
	others, err := otherKeys(s, kps)
	if err != nil {
		return err
	}
	for _, k := range others {
		fmt.Fprintf(w, "%s\t%x\t%s\t-\t%v\t%v\t-\t-\t-\t-\t%s\n", safetext.Clean(k.Label), k.ID, k.Type, k.Sensitive, k.Extractable,
			objectURI(s, k.Label, k.ID))
	}
	return nil
}

// keyJSON is a key in `key list --json`.
type keyJSON struct {
	Label       string `json:"label"`
	ID          string `json:"id"`
	Type        string `json:"type"`
	Tag         string `json:"tag,omitempty"`
	Fingerprint string `json:"fingerprint,omitempty"`
	Sensitive   bool   `json:"sensitive"`
	Extractable bool   `json:"extractable"`
	// GeneratedOnToken, Use and DualUse are key list's GENERATED-ON-TOKEN, USE and DUAL-USE
	// columns; they are left out for keys p11escrow cannot encrypt to.
	GeneratedOnToken *bool  `json:"generated_on_token,omitempty"`
	Use              string `json:"use,omitempty"`
	DualUse          *bool  `json:"dual_use,omitempty"`
	URI              string `json:"uri"`
}

// listKeysJSON prints the token's key pairs, then its other private keys, as JSON.
func listKeysJSON(s *session, kps []exchangeKey) error {
	list := []keyJSON{}
	for _, kp := range kps {
		fpr, _ := escrow.FingerprintOf(kp.public())
		attrs, err := kp.attributes()
		if err != nil {
			return err
		}
		local, dual := attrs.NeverLeftToken(), attrs.DualUse()
		list = append(list, keyJSON{Label: kp.label(), ID: hex.EncodeToString(kp.id()), Type: keyTypeName(kp.public()),
			Tag: fpr.Tag(), Fingerprint: fpr.String(), Sensitive: attrs.Sensitive, Extractable: attrs.Extractable,
			GeneratedOnToken: &local, Use: keyUse(attrs), DualUse: &dual, URI: keyURI(s, kp)})
	}
	others, err := otherKeys(s, kps)
	if err != nil {
		return err
	}
	for _, k := range others {
		list = append(list, keyJSON{Label: k.Label, ID: hex.EncodeToString(k.ID), Type: k.Type,
			Sensitive: k.Sensitive, Extractable: k.Extractable, URI: objectURI(s, k.Label, k.ID)})
	}
	return printJSON(list)
}

// keyUse is key list's USE column: "unwrap-only" for a key that unwraps and does not decrypt
// (a backup authority's key), "derive" for an EC exchange key, else "decrypt".
func keyUse(a token.KeyAttributes) string {
	switch {
	case !a.Decrypt && a.Unwrap:
		return "unwrap-only"
	case !a.Decrypt && a.Derive:
		return "derive"
	}
	return "decrypt"
}

// keyURI is the URI of a key pair's private key, which --key and --token accept.
func keyURI(s *session, kp exchangeKey) string { return objectURI(s, kp.label(), kp.id()) }

// objectURI is the URI of the private key labelled label with CKA_ID id on the session's token.
func objectURI(s *session, label string, id []byte) string {
	u := s.token.Info().URI()
	u.Object, u.ID, u.Type = label, id, "private"
	return u.String()
}

// otherKeys is the token's non-RSA private keys but the EC exchange keys among kps.
func otherKeys(s *session, kps []exchangeKey) ([]token.OtherKey, error) {
	others, err := s.token.OtherPrivateKeys()
	if err != nil {
		return nil, err
	}
	listed := map[string]bool{}
	for _, kp := range kps {
		listed[kp.label()+"\x00"+string(kp.id())] = true
	}
	var out []token.OtherKey
	for _, k := range others {
		if !listed[k.Label+"\x00"+string(k.ID)] {
			out = append(out, k)
		}
	}
	return out, nil
}
