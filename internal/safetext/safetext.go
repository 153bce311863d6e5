// Package safetext is the one rule for text that p11escrow did not write itself: file names,
// token labels, descriptions, reasons, officer names. Writers make such text valid with Clean
// before they bind or sign it (FORMAT.md section 5.1), readers refuse what Clean would have
// changed (Check), and human output shows it through Clean too, so that no byte from outside
// can move a terminal's cursor, retitle its window or reorder a line.
package safetext

import (
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"
)

// Hidden reports whether r is a character that text in p11escrow's documents never holds raw:
// a control character (C0, DEL, C1: Unicode category Cc), a bidirectional formatting character
// (Unicode property Bidi_Control, such as U+202E), or a line or paragraph separator (U+2028,
// U+2029). Each of them can make a line look other than it is.
func Hidden(r rune) bool {
	return unicode.Is(unicode.Cc, r) || unicode.Is(unicode.Bidi_Control, r) ||
		r == '\u2028' || r == '\u2029'
}

// Clean returns s with every byte that is not part of valid UTF-8 written as \xHH, every
// hidden character (see Hidden) below U+0080 as \xHH and every other hidden character as
// \uHHHH, in lower-case hex. Everything else, the backslash included, is kept as it is. The
// result is valid UTF-8 without hidden characters, so Check accepts it, and Clean leaves such
// text unchanged. For example the Latin-1 name "caf\xe9.bin" becomes `caf\xe9.bin` and
// ESC [ 2 J becomes `\x1b[2J`.
func Clean(s string) string {
	if Check(s) == nil {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); {
		r, n := utf8.DecodeRuneInString(s[i:])
		if r == utf8.RuneError && n == 1 {
			fmt.Fprintf(&b, `\x%02x`, s[i])
		} else {
			b.WriteString(escapeRune(r, s[i:i+n]))
		}
		i += n
	}
	return b.String()
}

// escapeRune returns the escape of a hidden character r, or raw, its UTF-8 bytes.
func escapeRune(r rune, raw string) string {
	switch {
	case Hidden(r) && r < 0x80:
		return fmt.Sprintf(`\x%02x`, r)
	case Hidden(r):
		return fmt.Sprintf(`\u%04x`, r)
	}
	return raw
}

// Check returns an error if s is not valid UTF-8 or holds a hidden character (see Hidden).
// The error names the first offending byte or character in escaped form, and reads as the
// predicate of a sentence whose subject is the field: "description holds ...".
func Check(s string) error {
	for i, r := range s {
		if r == utf8.RuneError {
			if _, n := utf8.DecodeRuneInString(s[i:]); n == 1 {
				return fmt.Errorf("is not valid UTF-8 (byte \\x%02x at offset %d)", s[i], i)
			}
		}
		if Hidden(r) {
			return fmt.Errorf("holds the control or bidi character %s at offset %d", escapeRune(r, ""), i)
		}
	}
	return nil
}

// Quote returns Clean(s) in double quotes, for naming outside text in a message.
func Quote(s string) string { return `"` + Clean(s) + `"` }
