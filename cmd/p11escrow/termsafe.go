package main

import (
	"strconv"
	"strings"
	"unicode"
)

// termSafe makes a string from a token (a label, a serial, a model) safe to print on a terminal:
// a token is outside input, and a label with escape sequences could rewrite the screen or hide
// what is printed next to it. Printable text passes unchanged; anything else is written as Go
// escapes, such as \x1b.
func termSafe(s string) string {
	if strings.IndexFunc(s, func(r rune) bool { return !unicode.IsPrint(r) }) < 0 {
		return s
	}
	q := strconv.QuoteToGraphic(s)
	return q[1 : len(q)-1]
}
