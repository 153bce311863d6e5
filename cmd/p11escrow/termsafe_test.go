package main

import "testing"

func TestTermSafe(t *testing.T) {
	for in, want := range map[string]string{
		"alice card":        "alice card",
		"Ünïcödé":           "Ünïcödé",
		"evil\x1b[2Jlabel":  `evil\x1b[2Jlabel`,
		"bell\a\r\nnewline": `bell\a\r\nnewline`,
		"a\"quote":          `a"quote`,
		"\u202egnp.exe":     `\u202egnp.exe`,
	} {
		if got := termSafe(in); got != want {
			t.Errorf("termSafe(%q) = %s, want %s", in, got, want)
		}
	}
}
