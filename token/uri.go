package token

import (
	"fmt"
	"net/url"
	"regexp"
	"strconv"
	"strings"
)

var versionRE = regexp.MustCompile(`^[0-9]+(\.[0-9]+)?$`)

// URI is an RFC 7512 PKCS#11 URI: which module, slot, token and object, and where the PIN is.
// Every path attribute is honoured: the token and slot ones by Selector, the library ones by
// Module.CheckLibrary, object, id and type by the caller's key lookup.
type URI struct {
	Token, Serial, Manufacturer, Model string // token selection (CK_TOKEN_INFO)
	SlotDescription, SlotManufacturer  string // slot selection (CK_SLOT_INFO)
	SlotID                             *uint  // slot-id, if given
	LibraryManufacturer                string // module selection (CK_INFO)
	LibraryDescription                 string
	LibraryVersion                     string // "M" or "M.N"
	Object, Type                       string // CKA_LABEL; "private", "public", "cert", "secret-key" or "data"
	ID                                 []byte // CKA_ID, raw bytes
	ModulePath                         string // query module-path
	ModuleName                         string // query module-name, resolved by ResolveModuleName
	PinSource                          string // query pin-source, as a file path
}

// Selector returns the token and slot selection of the URI.
func (u *URI) Selector() Selector {
	return Selector{Label: u.Token, Serial: u.Serial, Manufacturer: u.Manufacturer, Model: u.Model,
		SlotDescription: u.SlotDescription, SlotManufacturer: u.SlotManufacturer, SlotID: u.SlotID}
}

// Library returns the library (module) selection of the URI.
func (u *URI) Library() Library {
	return Library{Manufacturer: u.LibraryManufacturer, Description: u.LibraryDescription, Version: u.LibraryVersion}
}

// NamesToken reports whether the URI says anything about which token or slot to use. A URI that
// names only an object leaves the search to every token (see Module.FindObjectToken).
func (u *URI) NamesToken() bool { return u.Selector() != (Selector{}) }

// pathAttrs are the RFC 7512 path attributes that are strings.
var pathAttrs = map[string]func(u *URI) *string{
	"token":                func(u *URI) *string { return &u.Token },
	"serial":               func(u *URI) *string { return &u.Serial },
	"manufacturer":         func(u *URI) *string { return &u.Manufacturer },
	"model":                func(u *URI) *string { return &u.Model },
	"object":               func(u *URI) *string { return &u.Object },
	"type":                 func(u *URI) *string { return &u.Type },
	"library-manufacturer": func(u *URI) *string { return &u.LibraryManufacturer },
	"library-description":  func(u *URI) *string { return &u.LibraryDescription },
	"library-version":      func(u *URI) *string { return &u.LibraryVersion },
	"slot-manufacturer":    func(u *URI) *string { return &u.SlotManufacturer },
	"slot-description":     func(u *URI) *string { return &u.SlotDescription },
	"id":                   nil, // bytes, handled apart
	"slot-id":              nil, // a number, handled apart
}

var objectTypes = map[string]bool{"private": true, "public": true, "cert": true, "secret-key": true, "data": true}

// ParseURI parses a "pkcs11:" URI. Path attributes are separated by ';',
// query attributes by '&'; values are percent-decoded and '+' stays a
// literal plus (RFC 7512 is not form encoding). Unknown or repeated path
// attributes are errors, since silently ignoring a selector could pick the
// wrong key; unknown query attributes are ignored, as the RFC allows.
// pin-value is refused: a PIN in a URI ends up in shell history and process
// listings, so PINs must come from an environment variable, a file
// (pin-source) or the prompt.
func ParseURI(s string) (*URI, error) {
	const op = "parse PKCS#11 URI"
	if len(s) < 7 || !strings.EqualFold(s[:7], "pkcs11:") {
		return nil, newErr(op, nil, "%q does not start with \"pkcs11:\"; write e.g. pkcs11:token=NAME;object=LABEL", s)
	}
	path, query, _ := strings.Cut(s[7:], "?")
	u := &URI{}
	if err := u.parsePath(path); err != nil {
		return nil, &Error{Op: op, Msg: "PKCS#11 URI: " + err.Error()}
	}
	if err := u.parseQuery(query); err != nil {
		return nil, &Error{Op: op, Msg: "PKCS#11 URI: " + err.Error()}
	}
	return u, nil
}

// uriErr carries a parse problem up to ParseURI, which wraps it in *Error.
type uriErr string

// Error returns the message.
func (e uriErr) Error() string { return string(e) }

func (u *URI) parsePath(path string) error {
	seen := map[string]bool{}
	for _, part := range splitNonEmpty(path, ";") {
		name, raw, ok := strings.Cut(part, "=")
		if !ok {
			return uriErr("path attribute " + quote(part) + " has no '='; write name=value")
		}
		field, known := pathAttrs[name]
		if !known {
			return uriErr("unknown path attribute " + quote(name) + "; RFC 7512 has token, serial, manufacturer, model, object, type, id, slot-id, slot-description, slot-manufacturer and library-manufacturer, -description and -version")
		}
		if seen[name] {
			return uriErr("path attribute " + quote(name) + " appears twice; give it once")
		}
		seen[name] = true
		val, err := pctDecode(raw)
		if err != nil {
			return err
		}
		switch {
		case name == "id":
			u.ID = []byte(val)
		case name == "slot-id":
			n, err := strconv.ParseUint(val, 10, 0)
			if err != nil {
				return uriErr("slot-id " + quote(val) + " is not a decimal number")
			}
			id := uint(n)
			u.SlotID = &id
		case name == "library-version" && !versionRE.MatchString(val):
			return uriErr("library-version " + quote(val) + " is not M or M.N")
		case name == "type" && !objectTypes[val]:
			return uriErr("type " + quote(val) + " is not one of private, public, cert, secret-key, data")
		case field != nil:
			*field(u) = val
		}
	}
	return nil
}

func (u *URI) parseQuery(query string) error {
	for _, part := range splitNonEmpty(query, "&") {
		name, raw, _ := strings.Cut(part, "=")
		val, err := pctDecode(raw)
		if err != nil {
			return err
		}
		switch name {
		case "pin-value":
			return uriErr("the URI contains pin-value, which is refused; PINs must come from an environment variable, a file (pin-source) or the prompt")
		case "module-path":
			u.ModulePath = val
		case "module-name":
			u.ModuleName = val
		case "pin-source":
			if u.PinSource, err = pinSourcePath(val); err != nil {
				return err
			}
		}
	}
	return nil
}

// pinSourcePath accepts "file:PATH", "file://PATH" (PATH absolute) or a
// bare path.
func pinSourcePath(v string) (string, error) {
	switch {
	case strings.HasPrefix(v, "file://"):
		v = strings.TrimPrefix(v, "file://")
	case strings.HasPrefix(v, "file:"):
		v = strings.TrimPrefix(v, "file:")
	case strings.HasPrefix(v, "|"):
		return "", uriErr("pin-source " + quote(v) + " runs a program, which is not supported; use a file path")
	}
	if v == "" {
		return "", uriErr("pin-source is empty; give a file path")
	}
	return v, nil
}

// pctDecode undoes percent-encoding only; '+' is kept as is.
func pctDecode(s string) (string, error) {
	v, err := url.PathUnescape(s)
	if err != nil {
		return "", uriErr("bad percent-encoding in " + quote(s) + "; write bytes as %XX")
	}
	return v, nil
}

func splitNonEmpty(s, sep string) []string {
	var out []string
	for _, p := range strings.Split(s, sep) {
		if p != "" {
			out = append(out, p)
		}
	}
	return out
}

func quote(s string) string { return "\"" + s + "\"" }

// String formats the URI with its attributes in the order p11tool prints them, percent-encoding
// every byte outside RFC 7512's unreserved set, so that the result can be pasted into --token
// or --key.
func (u *URI) String() string {
	var path []string
	add := func(name, v string) {
		if v != "" {
			path = append(path, name+"="+pctEncode([]byte(v)))
		}
	}
	add("library-manufacturer", u.LibraryManufacturer)
	add("library-description", u.LibraryDescription)
	add("library-version", u.LibraryVersion)
	add("slot-manufacturer", u.SlotManufacturer)
	add("slot-description", u.SlotDescription)
	if u.SlotID != nil {
		path = append(path, "slot-id="+strconv.FormatUint(uint64(*u.SlotID), 10))
	}
	add("model", u.Model)
	add("manufacturer", u.Manufacturer)
	add("serial", u.Serial)
	add("token", u.Token)
	if len(u.ID) > 0 {
		path = append(path, "id="+pctEncodeAll(u.ID))
	}
	add("object", u.Object)
	add("type", u.Type)
	s := "pkcs11:" + strings.Join(path, ";")
	var query []string
	if u.ModuleName != "" {
		query = append(query, "module-name="+pctEncode([]byte(u.ModuleName)))
	}
	if u.ModulePath != "" {
		query = append(query, "module-path="+pctEncode([]byte(u.ModulePath)))
	}
	if u.PinSource != "" {
		query = append(query, "pin-source="+pctEncode([]byte(u.PinSource)))
	}
	if len(query) > 0 {
		s += "?" + strings.Join(query, "&")
	}
	return s
}

// pctEncode keeps RFC 3986 unreserved characters and '/' (allowed in values) as they are.
func pctEncode(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		if 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || strings.IndexByte("-._~/", c) >= 0 {
			sb.WriteByte(c)
		} else {
			fmt.Fprintf(&sb, "%%%02x", c)
		}
	}
	return sb.String()
}

// pctEncodeAll encodes every byte, as p11tool does for id.
func pctEncodeAll(b []byte) string {
	var sb strings.Builder
	for _, c := range b {
		fmt.Fprintf(&sb, "%%%02x", c)
	}
	return sb.String()
}

// URI returns the URI that selects this token, with the attributes p11tool --list-token-urls
// prints: model, manufacturer, serial and token.
func (s SlotInfo) URI() *URI {
	return &URI{Model: s.Model, Manufacturer: s.Manufacturer, Serial: s.Serial, Token: s.Label}
}
