// Package strictjson decodes p11escrow's JSON documents (records, recovery requests, change
// requests and their approvals) exactly as FORMAT.md section 5.1 says, where encoding/json is
// lenient: it matches names case-sensitively, refuses duplicate, unknown and missing members,
// invalid UTF-8, lone surrogate escapes, null, non-canonical base64 and numbers, and text with
// control or bidi characters (safetext.Check).
//
// A document is described by its Go struct, once. Every exported field with a `json:"name"` tag
// is a required member; `json:"name,omitempty"` makes it optional, and then, when present, it
// must not be empty, since a writer would have left it out. A `max:"N"` tag bounds a string or
// decoded byte field to N bytes, or a slice to N elements; without it the bounds are
// DefaultMaxString, DefaultMaxBytes and DefaultMaxItems. Supported field types are string,
// []byte (padded standard base64), int (a non-negative decimal integer), structs, pointers to
// structs and slices of those.
package strictjson

import (
	"encoding/base64"
	"errors"
	"fmt"
	"reflect"
	"strconv"
	"strings"
	"unicode/utf16"
	"unicode/utf8"

	"github.com/p11escrow/p11escrow/internal/safetext"
)

// Bounds that apply where a field has no max tag.
const (
	DefaultMaxString = 128     // bytes of a string
	DefaultMaxBytes  = 1 << 16 // decoded bytes of a base64 field
	DefaultMaxItems  = 64      // elements of an array
	maxDepth         = 8       // nesting of objects and arrays
	maxMembers       = 32      // members of an object; no document has more
	maxInt           = 9       // digits of an integer
)

// Unmarshal decodes data, one JSON object with optional whitespace around it, into v, a
// pointer to a struct. Errors are one line and name the member, as in "owner.token_label: ...".
func Unmarshal(data []byte, v any) error {
	root, err := parse(data)
	if err != nil {
		return err
	}
	rv := reflect.ValueOf(v)
	if rv.Kind() != reflect.Pointer || rv.Elem().Kind() != reflect.Struct {
		panic("strictjson: Unmarshal needs a pointer to a struct")
	}
	return decodeStruct(root, rv.Elem(), "")
}

// String returns the string member key of the top-level object in data, or "" if data is not
// a valid document or has no such string member. It lets a caller pick the parser by the
// document's format.
func String(data []byte, key string) string {
	root, err := parse(data)
	if err != nil || root.kind != kindObject {
		return ""
	}
	for _, m := range root.members {
		if m.key == key && m.val.kind == kindString {
			return m.val.text
		}
	}
	return ""
}

type kind int

const (
	kindObject kind = iota
	kindArray
	kindString
	kindNumber
	kindLiteral // true, false or null
)

var kindNames = [...]string{"an object", "an array", "a string", "a number", "a literal"}

type value struct {
	kind    kind
	text    string // a string's value, a number's or literal's text
	members []member
	items   []*value
}

type member struct {
	key string
	val *value
}

func parse(data []byte) (*value, error) {
	if !utf8.Valid(data) {
		i := 0
		for i < len(data) {
			r, n := utf8.DecodeRune(data[i:])
			if r == utf8.RuneError && n == 1 {
				break
			}
			i += n
		}
		return nil, fmt.Errorf("the document is not valid UTF-8 (byte \\x%02x at offset %d)", data[i], i)
	}
	p := &parser{s: string(data)}
	p.space()
	if p.peek() != '{' {
		return nil, p.errf("the document is not a JSON object")
	}
	v, err := p.value(0)
	if err != nil {
		return nil, err
	}
	p.space()
	if p.i != len(p.s) {
		return nil, p.errf("trailing data after the document")
	}
	return v, nil
}

type parser struct {
	s string
	i int
}

func (p *parser) errf(format string, args ...any) error {
	return fmt.Errorf("offset %d: %s", p.i, fmt.Sprintf(format, args...))
}

func (p *parser) peek() byte {
	if p.i < len(p.s) {
		return p.s[p.i]
	}
	return 0
}

func (p *parser) space() {
	for p.i < len(p.s) && strings.IndexByte(" \t\r\n", p.s[p.i]) >= 0 {
		p.i++
	}
}

func (p *parser) expect(c byte) error {
	p.space()
	if p.peek() != c {
		return p.errf("expected %q", c)
	}
	p.i++
	return nil
}

func (p *parser) value(depth int) (*value, error) {
	if depth > maxDepth {
		return nil, p.errf("nested deeper than %d", maxDepth)
	}
	p.space()
	switch c := p.peek(); {
	case c == '{':
		p.i++
		v := &value{kind: kindObject}
		seen := map[string]bool{}
		p.space()
		if p.peek() == '}' {
			p.i++
			return v, nil
		}
		for {
			p.space()
			if p.peek() != '"' {
				return nil, p.errf("expected a member name")
			}
			key, err := p.str()
			if err != nil {
				return nil, err
			}
			if seen[key] {
				return nil, p.errf("duplicate member %s", safetext.Quote(key))
			}
			if seen[key] = true; len(seen) > maxMembers {
				return nil, p.errf("an object with more than %d members", maxMembers)
			}
			if err := p.expect(':'); err != nil {
				return nil, err
			}
			val, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			v.members = append(v.members, member{key, val})
			p.space()
			if p.peek() == '}' {
				p.i++
				return v, nil
			}
			if err := p.expect(','); err != nil {
				return nil, err
			}
		}
	case c == '[':
		p.i++
		v := &value{kind: kindArray}
		p.space()
		if p.peek() == ']' {
			p.i++
			return v, nil
		}
		for {
			item, err := p.value(depth + 1)
			if err != nil {
				return nil, err
			}
			v.items = append(v.items, item)
			p.space()
			if p.peek() == ']' {
				p.i++
				return v, nil
			}
			if err := p.expect(','); err != nil {
				return nil, err
			}
		}
	case c == '"':
		s, err := p.str()
		return &value{kind: kindString, text: s}, err
	case c == '-' || c >= '0' && c <= '9':
		return p.number()
	default:
		for _, lit := range []string{"true", "false", "null"} {
			if strings.HasPrefix(p.s[p.i:], lit) {
				p.i += len(lit)
				return &value{kind: kindLiteral, text: lit}, nil
			}
		}
		return nil, p.errf("expected a JSON value")
	}
}

// str reads a string, p.s[p.i] being its opening quote. Lone surrogate escapes are errors:
// encoding/json would turn them into U+FFFD, so that two readers see different text.
func (p *parser) str() (string, error) {
	p.i++
	var b strings.Builder
	for {
		if p.i >= len(p.s) {
			return "", p.errf("unterminated string")
		}
		c := p.s[p.i]
		switch {
		case c == '"':
			p.i++
			return b.String(), nil
		case c < 0x20:
			return "", p.errf("a raw control character in a string")
		case c != '\\':
			b.WriteByte(c)
			p.i++
			continue
		}
		if p.i+1 >= len(p.s) {
			return "", p.errf("unterminated string")
		}
		e := p.s[p.i+1]
		p.i += 2
		if r := strings.IndexByte(`"\/bfnrt`, e); r >= 0 {
			b.WriteByte("\"\\/\b\f\n\r\t"[r])
			continue
		}
		if e != 'u' {
			return "", p.errf("invalid escape \\%s", safetext.Clean(string(e)))
		}
		r, err := p.hex4()
		if err != nil {
			return "", err
		}
		if utf16.IsSurrogate(r) {
			if r >= 0xdc00 || !strings.HasPrefix(p.s[p.i:], `\u`) {
				return "", p.errf("a lone surrogate escape")
			}
			p.i += 2
			r2, err := p.hex4()
			if err != nil {
				return "", err
			}
			if r = utf16.DecodeRune(r, r2); r == utf8.RuneError {
				return "", p.errf("a lone surrogate escape")
			}
		}
		b.WriteRune(r)
	}
}

func (p *parser) hex4() (rune, error) {
	if p.i+4 > len(p.s) {
		return 0, p.errf("a short \\u escape")
	}
	n, err := strconv.ParseUint(p.s[p.i:p.i+4], 16, 32)
	if err != nil || strings.ContainsAny(p.s[p.i:p.i+4], "+-_") {
		return 0, p.errf("a bad \\u escape")
	}
	p.i += 4
	return rune(n), nil
}

// number reads a JSON number's text; decodeInt decides whether it is acceptable.
func (p *parser) number() (*value, error) {
	start := p.i
	digits := func() int {
		n := 0
		for p.i < len(p.s) && p.s[p.i] >= '0' && p.s[p.i] <= '9' {
			p.i++
			n++
		}
		return n
	}
	if p.peek() == '-' {
		p.i++
	}
	if digits() == 0 {
		return nil, p.errf("a bad number")
	}
	if p.peek() == '.' {
		p.i++
		if digits() == 0 {
			return nil, p.errf("a bad number")
		}
	}
	if c := p.peek(); c == 'e' || c == 'E' {
		p.i++
		if c := p.peek(); c == '+' || c == '-' {
			p.i++
		}
		if digits() == 0 {
			return nil, p.errf("a bad number")
		}
	}
	return &value{kind: kindNumber, text: p.s[start:p.i]}, nil
}

type field struct {
	name     string
	optional bool
	max      int
	index    int
}

func fields(t reflect.Type) []field {
	var fs []field
	for i := 0; i < t.NumField(); i++ {
		sf := t.Field(i)
		tag, ok := sf.Tag.Lookup("json")
		if !ok || !sf.IsExported() {
			continue
		}
		name, opts, _ := strings.Cut(tag, ",")
		f := field{name: name, optional: opts == "omitempty", index: i, max: -1}
		if m, ok := sf.Tag.Lookup("max"); ok {
			n, err := strconv.Atoi(m)
			if err != nil {
				panic("strictjson: bad max tag on " + t.Name() + "." + sf.Name)
			}
			f.max = n
		}
		fs = append(fs, f)
	}
	return fs
}

func decodeStruct(v *value, dst reflect.Value, path string) error {
	if v.kind != kindObject {
		return pathErr(path, "is %s, not an object", kindNames[v.kind])
	}
	fs := fields(dst.Type())
	seen := make([]bool, len(fs))
member:
	for _, m := range v.members {
		for i, f := range fs {
			if f.name == m.key {
				seen[i] = true
				if err := decodeValue(m.val, dst.Field(f.index), f, join(path, f.name)); err != nil {
					return err
				}
				if fv := dst.Field(f.index); f.optional && (fv.IsZero() || fv.Kind() == reflect.Slice && fv.Len() == 0) {
					return pathErr(join(path, f.name), "is empty; a writer leaves it out")
				}
				continue member
			}
		}
		return pathErr(join(path, safetext.Quote(m.key)), "is not a known member (names are case-sensitive)")
	}
	for i, f := range fs {
		if !seen[i] && !f.optional {
			return pathErr(join(path, f.name), "is missing")
		}
	}
	return nil
}

var bytesType = reflect.TypeOf([]byte(nil))

func decodeValue(v *value, dst reflect.Value, f field, path string) error {
	limit := func(def int) int {
		if f.max >= 0 {
			return f.max
		}
		return def
	}
	want := func(k kind) error {
		if v.kind != k {
			return pathErr(path, "is %s, not %s", kindNames[v.kind], kindNames[k])
		}
		return nil
	}
	switch {
	case dst.Type() == bytesType:
		if err := want(kindString); err != nil {
			return err
		}
		b, err := base64.StdEncoding.Strict().DecodeString(v.text)
		if err != nil || base64.StdEncoding.EncodeToString(b) != v.text {
			return pathErr(path, "is not padded standard base64 without whitespace")
		}
		if len(b) > limit(DefaultMaxBytes) {
			return pathErr(path, "is longer than %d bytes", limit(DefaultMaxBytes))
		}
		dst.SetBytes(b)
	case dst.Kind() == reflect.String:
		if err := want(kindString); err != nil {
			return err
		}
		if len(v.text) > limit(DefaultMaxString) {
			return pathErr(path, "is longer than %d bytes", limit(DefaultMaxString))
		}
		if err := safetext.Check(v.text); err != nil {
			return pathErr(path, "%v", err)
		}
		dst.SetString(v.text)
	case dst.Kind() == reflect.Int:
		if err := want(kindNumber); err != nil {
			return err
		}
		t := v.text
		if len(t) > maxInt || strings.ContainsAny(t, "-.eE") || len(t) > 1 && t[0] == '0' {
			return pathErr(path, "is not a non-negative integer of at most %d digits without leading zeros", maxInt)
		}
		n, _ := strconv.Atoi(t)
		dst.SetInt(int64(n))
	case dst.Kind() == reflect.Struct:
		return decodeStruct(v, dst, path)
	case dst.Kind() == reflect.Pointer && dst.Type().Elem().Kind() == reflect.Struct:
		dst.Set(reflect.New(dst.Type().Elem()))
		return decodeStruct(v, dst.Elem(), path)
	case dst.Kind() == reflect.Slice:
		if err := want(kindArray); err != nil {
			return err
		}
		if len(v.items) > limit(DefaultMaxItems) {
			return pathErr(path, "has more than %d elements", limit(DefaultMaxItems))
		}
		s := reflect.MakeSlice(dst.Type(), len(v.items), len(v.items))
		for i, item := range v.items {
			if err := decodeValue(item, s.Index(i), field{max: -1}, fmt.Sprintf("%s[%d]", path, i)); err != nil {
				return err
			}
		}
		dst.Set(s)
	default:
		panic("strictjson: unsupported field type " + dst.Type().String())
	}
	return nil
}

func join(path, name string) string {
	if path == "" {
		return name
	}
	return path + "." + name
}

func pathErr(path, format string, args ...any) error {
	return errors.New(path + " " + fmt.Sprintf(format, args...))
}
