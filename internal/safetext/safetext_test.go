package safetext

import "testing"

func TestClean(t *testing.T) {
	for _, c := range []struct{ in, want string }{
		{"Q3 payroll.csv", "Q3 payroll.csv"},
		{"café ☕", "café ☕"},
		{"caf\xe9.bin", `caf\xe9.bin`},
		{"\x1b[2J\x1b]0;owned\x07", `\x1b[2J\x1b]0;owned\x07`},
		{"a\nstatus: recovered\r", `a\x0astatus: recovered\x0d`},
		{"\x7f\u0085\u009b", `\x7f\u0085\u009b`},
		{"evil\u202eexe.txt\u2066\u200f\u061c", `evil\u202eexe.txt\u2066\u200f\u061c`},
		{"line\u2028para\u2029", `line\u2028para\u2029`},
		{`already \xe9`, `already \xe9`},
		{"\xed\xa0\x80", `\xed\xa0\x80`}, // an encoded surrogate is not valid UTF-8
	} {
		got := Clean(c.in)
		if got != c.want {
			t.Errorf("Clean(%q) = %q, want %q", c.in, got, c.want)
		}
		if err := Check(got); err != nil {
			t.Errorf("Check(Clean(%q)) = %v", c.in, err)
		}
		if Clean(got) != got {
			t.Errorf("Clean is not idempotent on %q", c.in)
		}
		if (Check(c.in) == nil) != (c.in == c.want) {
			t.Errorf("Check(%q) disagrees with Clean", c.in)
		}
	}
}

func FuzzClean(f *testing.F) {
	for _, s := range []string{"", "caf\xe9", "\x1b[31m", "\u202e", "\xf0\x9f\x98"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		c := Clean(s)
		if err := Check(c); err != nil {
			t.Fatalf("Check(Clean(%q)) = %v", s, err)
		}
		if Clean(c) != c {
			t.Fatalf("Clean is not idempotent on %q", s)
		}
	})
}
