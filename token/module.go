package token

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"unsafe"

	"github.com/miekg/pkcs11"
)

// defaultModules is searched in order by DefaultModulePath. The p11-kit
// proxy comes first: it is how Debian and Fedora register the user's real
// cards (and SoftHSM2 too, through its module file), so it sees every token
// the system knows. SoftHSM2 alone is the fallback where p11-kit is absent.
var defaultModules = []string{
	"/usr/lib/x86_64-linux-gnu/p11-kit-proxy.so",
	"/usr/lib/aarch64-linux-gnu/p11-kit-proxy.so",
	"/usr/lib64/p11-kit-proxy.so",
	"/usr/lib/p11-kit-proxy.so",
	"/usr/lib/softhsm/libsofthsm2.so",
	"/usr/lib/x86_64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib/aarch64-linux-gnu/softhsm/libsofthsm2.so",
	"/usr/lib64/pkcs11/libsofthsm2.so",
}

// DefaultModulePath returns the first existing well-known PKCS#11 module.
// It does not read $P11ESCROW_MODULE: the CLI decides precedence.
func DefaultModulePath() (string, error) { return firstModule(defaultModules) }

// firstModule returns the first of paths that exists.
func firstModule(paths []string) (string, error) {
	for _, p := range paths {
		if _, err := os.Stat(p); err == nil {
			return p, nil
		}
	}
	return "", newErr("find PKCS#11 module", nil,
		"no PKCS#11 module found in %s; install p11-kit or SoftHSM2, or name the module explicitly",
		strings.Join(paths, ", "))
}

// Module is a loaded and initialised PKCS#11 library. It is safe for
// concurrent use; the Tokens opened from it are not.
type Module struct {
	path string
	ctx  *pkcs11.Ctx
	// owner is true if our C_Initialize succeeded. If the library was
	// already initialised by someone else in this process, Close must not
	// C_Finalize it under their feet.
	owner bool

	mu   sync.Mutex
	open map[*Token]struct{} // Tokens not yet closed

	// noUnwrapValueLen remembers that the module refused CKA_VALUE_LEN in an
	// unwrap template. SoftHSM2 refuses it only after the RSA private
	// operation, so asking every time would double the cost of each unwrap.
	noUnwrapValueLen atomic.Bool

	// unwrapLenUnknown remembers that the module reports CKA_VALUE_LEN 0 for
	// unwrapped keys (SoftHSM2 2.6.1), so that a key's length must be
	// measured (see SecretKey.checkLen), which needs it extractable.
	unwrapLenUnknown atomic.Bool

	// decrypt is the module's own C_Decrypt (see decryptFn), found once.
	decryptOnce sync.Once
	decrypt     unsafe.Pointer
	// getAttr is the module's own C_GetAttributeValue (secretValue), found once; nil if not.
	getAttrOnce sync.Once
	getAttr     unsafe.Pointer

	// ecdhPeerDER remembers that the module wants the peer's point of
	// CKM_ECDH1_DERIVE inside a DER OCTET STRING, not raw (see ECKeyPair.deriveKEK).
	ecdhPeerDER atomic.Bool
}

// Load dlopens the module and calls C_Initialize. A module that someone
// else in this process already initialised (CKR_CRYPTOKI_ALREADY_INITIALIZED)
// is accepted. Load a given module once per process: SoftHSM2 reads
// SOFTHSM2_CONF only at the first C_Initialize.
func Load(path string) (*Module, error) { return LoadWithInitArgs(path, "") }

// LoadWithInitArgs is Load with a string for the pReserved member of
// CK_C_INITIALIZE_ARGS, which some modules read: NSS's softoken needs
// "configdir='sql:DIR'" there, and p11-kit module files carry it as
// x-init-reserved. An empty string passes NULL, as Load does.
func LoadWithInitArgs(path, initArgs string) (*Module, error) {
	const op = "load PKCS#11 module"
	if _, err := os.Stat(path); err != nil {
		return nil, newErr(op, nil, "the module file %s cannot be read (%v); check the path or install the module", path, err)
	}
	ctx := pkcs11.New(path)
	if ctx == nil {
		return nil, newErr(op, nil, "%s could not be loaded as a PKCS#11 module (dlopen or C_GetFunctionList failed); check that it is a PKCS#11 library for this architecture", path)
	}
	var opts []pkcs11.InitializeOption
	if initArgs != "" {
		// A NUL-terminated copy in Go memory: it holds no Go pointers and the
		// module parses it during the call (NSS copies what it keeps), so cgo's
		// pointer rules allow it; KeepAlive holds it until C_Initialize returns.
		cstr := append([]byte(initArgs), 0)
		defer runtime.KeepAlive(cstr)
		opts = append(opts, pkcs11.InitializeWithReserved(unsafe.Pointer(&cstr[0])))
	}
	err := ctx.Initialize(opts...)
	owner := err == nil
	if err != nil && !errors.Is(err, pkcs11.Error(pkcs11.CKR_CRYPTOKI_ALREADY_INITIALIZED)) {
		ctx.Destroy()
		code := uint(0)
		var perr pkcs11.Error
		if errors.As(err, &perr) {
			code = uint(perr)
		}
		switch {
		case initArgs != "":
			return nil, &Error{Op: op, Code: code, Msg: fmt.Sprintf(
				"the module %s failed to initialise with the arguments %q; check them (for NSS, that configdir names an existing database)", path, initArgs)}
		case code == pkcs11.CKR_ARGUMENTS_BAD:
			return nil, &Error{Op: op, Code: code, Msg: fmt.Sprintf(
				"the module %s needs initialisation arguments (NSS's softoken, for one, needs configdir='sql:DIR'); pass them with --module-init-args or a p11-kit module file's x-init-reserved", path)}
		}
		return nil, tokenErr(op, ctxPlain, err)
	}
	return &Module{path: path, ctx: ctx, owner: owner, open: map[*Token]struct{}{}}, nil
}

// Path returns the module path given to Load.
func (m *Module) Path() string { return m.path }

// Close closes any Token still open, finalises the module (only if Load
// initialised it) and unloads it. If Tokens were still open, the library
// stays mapped, so that a stray later call on such a Token returns an error
// (CKR_CRYPTOKI_NOT_INITIALIZED) instead of jumping into unmapped code; close
// Tokens first to avoid that leak.
func (m *Module) Close() error {
	if m == nil || m.ctx == nil {
		return nil
	}
	stray := m.closeTokens()
	var err error
	if m.owner {
		err = tokenErr("finalize PKCS#11 module", ctxPlain, m.ctx.Finalize())
	}
	if !stray {
		m.ctx.Destroy()
	}
	m.ctx = nil
	return err
}

// closeTokens closes the Tokens still open and says whether there were any.
func (m *Module) closeTokens() bool {
	m.mu.Lock()
	ts := make([]*Token, 0, len(m.open))
	for t := range m.open {
		ts = append(ts, t)
	}
	m.mu.Unlock()
	for _, t := range ts {
		_ = t.Close()
	}
	return len(ts) > 0
}

func (m *Module) track(t *Token, open bool) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if open {
		m.open[t] = struct{}{}
	} else {
		delete(m.open, t)
	}
}

// SlotInfo describes a slot and, if TokenPresent, its token.
type SlotInfo struct {
	SlotID           uint // changes between runs on SoftHSM2: never store it
	Description      string
	SlotManufacturer string
	TokenPresent     bool
	// Token fields, trimmed of the blank padding PKCS#11 uses.
	Label, Serial, Model, Manufacturer string
	Initialized, LoginRequired         bool
}

// String names the token for error messages: label and serial.
func (s SlotInfo) String() string {
	return fmt.Sprintf("label %q serial %q", s.Label, s.Serial)
}

// Slots lists every slot, with or without a token.
func (m *Module) Slots() ([]SlotInfo, error) {
	if m.ctx == nil {
		return nil, newErr("list slots", nil, "the module %s was closed; load it again", m.path)
	}
	ids, err := m.ctx.GetSlotList(false)
	if err != nil {
		return nil, tokenErr("list slots", ctxPlain, err)
	}
	out := make([]SlotInfo, 0, len(ids))
	for _, id := range ids {
		si, err := m.slotInfo(id)
		if err != nil {
			return nil, err
		}
		out = append(out, si)
	}
	return out, nil
}

func trim(s string) string { return strings.TrimRight(s, " \x00") }

func (m *Module) slotInfo(id uint) (SlotInfo, error) {
	raw, err := m.ctx.GetSlotInfo(id)
	if err != nil {
		return SlotInfo{}, tokenErr("read slot info", ctxPlain, err)
	}
	si := SlotInfo{SlotID: id, Description: trim(raw.SlotDescription), SlotManufacturer: trim(raw.ManufacturerID),
		TokenPresent: raw.Flags&pkcs11.CKF_TOKEN_PRESENT != 0}
	if !si.TokenPresent {
		return si, nil
	}
	ti, err := m.ctx.GetTokenInfo(id)
	if err != nil {
		return SlotInfo{}, tokenErr("read token info", ctxPlain, err)
	}
	si.Label, si.Serial = trim(ti.Label), trim(ti.SerialNumber)
	si.Model, si.Manufacturer = trim(ti.Model), trim(ti.ManufacturerID)
	si.Initialized = ti.Flags&pkcs11.CKF_TOKEN_INITIALIZED != 0
	si.LoginRequired = ti.Flags&pkcs11.CKF_LOGIN_REQUIRED != 0
	return si, nil
}

// Selector picks a token. Empty fields match anything. Open fails rather
// than guess when several tokens match, because slot order is not stable
// (SoftHSM2 even renumbers slots) and guessing could encrypt to, or ask the
// PIN of, the wrong token.
type Selector struct {
	Label, Serial, Manufacturer, Model string // CK_TOKEN_INFO fields
	SlotDescription, SlotManufacturer  string // CK_SLOT_INFO fields
	SlotID                             *uint  // the slot's number, if given
}

func (s Selector) matches(si SlotInfo) bool {
	return si.TokenPresent && si.Initialized &&
		(s.Label == "" || s.Label == si.Label) &&
		(s.Serial == "" || s.Serial == si.Serial) &&
		(s.Manufacturer == "" || s.Manufacturer == si.Manufacturer) &&
		(s.Model == "" || s.Model == si.Model) &&
		(s.SlotDescription == "" || s.SlotDescription == si.Description) &&
		(s.SlotManufacturer == "" || s.SlotManufacturer == si.SlotManufacturer) &&
		(s.SlotID == nil || *s.SlotID == si.SlotID)
}

// String describes the selection for error messages.
func (s Selector) String() string {
	var parts []string
	for _, f := range []struct{ name, v string }{
		{"label", s.Label}, {"serial", s.Serial}, {"manufacturer", s.Manufacturer}, {"model", s.Model},
		{"slot description", s.SlotDescription}, {"slot manufacturer", s.SlotManufacturer},
	} {
		if f.v != "" {
			parts = append(parts, fmt.Sprintf("%s %q", f.name, f.v))
		}
	}
	if s.SlotID != nil {
		parts = append(parts, fmt.Sprintf("slot-id %d", *s.SlotID))
	}
	if len(parts) == 0 {
		return "any token"
	}
	return strings.Join(parts, " and ")
}

// Library selects a module by its CK_INFO, as the library-* attributes of a URI do. Empty
// fields match anything; Version is "M" or "M.N".
type Library struct {
	Manufacturer, Description, Version string
}

// LibraryInfo returns the module's CK_INFO: manufacturer, description and "M.N" version.
func (m *Module) LibraryInfo() (Library, error) {
	info, err := m.ctx.GetInfo()
	if err != nil {
		return Library{}, tokenErr("read module info", ctxPlain, err)
	}
	return Library{Manufacturer: trim(info.ManufacturerID), Description: trim(info.LibraryDescription),
		Version: fmt.Sprintf("%d.%d", info.LibraryVersion.Major, info.LibraryVersion.Minor)}, nil
}

// CheckLibrary fails with ErrNoToken if the module is not the library l describes.
func (m *Module) CheckLibrary(l Library) error {
	if l == (Library{}) {
		return nil
	}
	have, err := m.LibraryInfo()
	if err != nil {
		return err
	}
	haveMajor, _, _ := strings.Cut(have.Version, ".")
	ok := (l.Manufacturer == "" || l.Manufacturer == have.Manufacturer) &&
		(l.Description == "" || l.Description == have.Description) &&
		(l.Version == "" || l.Version == have.Version || !strings.Contains(l.Version, ".") && l.Version == haveMajor)
	if !ok {
		return newErr("select module", ErrNoToken,
			"the module %s is library-manufacturer %q, library-description %q, library-version %s, which the URI does not match; name the right module with module-path or --module",
			m.path, have.Manufacturer, have.Description, have.Version)
	}
	return nil
}

// Open selects exactly one initialised token and opens one read-write
// serial session on it. Uninitialised tokens (e.g. SoftHSM2's spare free
// slot) never match.
func (m *Module) Open(sel Selector) (*Token, error) {
	si, err := m.selectSlot(sel)
	if err != nil {
		return nil, err
	}
	sh, err := m.ctx.OpenSession(si.SlotID, pkcs11.CKF_SERIAL_SESSION|pkcs11.CKF_RW_SESSION)
	if err != nil {
		return nil, tokenErr(fmt.Sprintf("open token %q", si.Label), ctxPlain, err)
	}
	t := &Token{m: m, ctx: m.ctx, sh: sh, info: si, pubs: map[string]pkcs11.ObjectHandle{},
		pubPtrs: map[*rsa.PublicKey]pkcs11.ObjectHandle{}}
	m.track(t, true)
	return t, nil
}

func (m *Module) selectSlot(sel Selector) (SlotInfo, error) {
	const op = "select token"
	slots, err := m.Slots()
	if err != nil {
		return SlotInfo{}, err
	}
	var found, all []SlotInfo
	for _, si := range slots {
		if si.TokenPresent && si.Initialized {
			all = append(all, si)
		}
		if sel.matches(si) {
			found = append(found, si)
		}
	}
	switch len(found) {
	case 1:
		return found[0], nil
	case 0:
		return SlotInfo{}, newErr(op, ErrNoToken, "no token matches %s in %s (initialised tokens present: %s); insert the token or fix the label or serial",
			sel, m.path, listSlots(all))
	default:
		return SlotInfo{}, newErr(op, ErrAmbiguous, "%d tokens match %s (%s); give a label and/or serial that picks one",
			len(found), sel, listSlots(found))
	}
}

func listSlots(s []SlotInfo) string {
	if len(s) == 0 {
		return "none"
	}
	parts := make([]string, len(s))
	for i, si := range s {
		parts[i] = si.String()
	}
	return strings.Join(parts, "; ")
}
