package main

import (
	"slices"
	"testing"
)

func TestFlagsFirst(t *testing.T) {
	app := newApp()
	cases := []struct{ in, want []string }{
		{[]string{"p", "reheader", "in.p11e", "--header", "h", "-o", "out"}, []string{"p", "reheader", "--header", "h", "-o", "out", "in.p11e"}},
		{[]string{"p", "authority", "show", "ID", "--json"}, []string{"p", "authority", "show", "--json", "ID"}},
		{[]string{"p", "authority", "recover", "r.json", "--decrypt=f.p11e", "--force", "-o", "x"}, []string{"p", "authority", "recover", "--decrypt=f.p11e", "--force", "-o", "x", "r.json"}},
		{[]string{"p", "decrypt", "-", "-o", "-"}, []string{"p", "decrypt", "-o", "-", "-"}},
		{[]string{"p", "decrypt", "a", "--", "-o"}, []string{"p", "decrypt", "a", "--", "-o"}},
		{[]string{"p", "authority"}, []string{"p", "authority"}},
		{[]string{"p", "nosuch", "x", "--y"}, []string{"p", "nosuch", "x", "--y"}},
	}
	for _, c := range cases {
		if got := flagsFirst(app, c.in); !slices.Equal(got, c.want) {
			t.Errorf("flagsFirst(%q) = %q, want %q", c.in, got, c.want)
		}
	}
}
