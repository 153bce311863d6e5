package token

import (
	"net/url"
	"strings"
)

// URI is the subset of an RFC 7512 PKCS#11 URI that p11-kit, OpenSSL and
// p11escrow use: which token, which object, which module, where the PIN is.
type URI struct {
	Token, Serial, Manufacturer, Model string // token selection
	Object, Type                       string // CKA_LABEL; "private", "public", "cert", "secret-key" or "data"
	ID                                 []byte // CKA_ID, raw bytes
	ModulePath                         string // query module-path
	PinSource                          string // query pin-source, as a file path
}

// Selector returns the token selection of the URI.
func (u *URI) Selector() Selector { return Selector{Label: u.Token, Serial: u.Serial} }

// pathAttrs are the RFC 7512 path attributes. Those mapped to nil are
// valid but not used for selection (library and slot details).
var pathAttrs = map[string]func(u *URI) *string{
	"token":                func(u *URI) *string { return &u.Token },
	"serial":               func(u *URI) *string { return &u.Serial },
	"manufacturer":         func(u *URI) *string { return &u.Manufacturer },
	"model":                func(u *URI) *string { return &u.Model },
	"object":               func(u *URI) *string { return &u.Object },
	"type":                 func(u *URI) *string { return &u.Type },
	"id":                   nil, // bytes, handled apart
	"library-manufacturer": nil,
	"library-description":  nil,
	"library-version":      nil,
	"slot-manufacturer":    nil,
	"slot-description":     nil,
	"slot-id":              nil,
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
			return uriErr("unknown path attribute " + quote(name) + "; use token, serial, manufacturer, model, object, type or id")
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
