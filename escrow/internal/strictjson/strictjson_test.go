package strictjson

import (
	"strings"
	"testing"
)

type inner struct {
	B []byte `json:"b"`
}

type doc struct {
	S     string   `json:"s" max:"8"`
	B     []byte   `json:"b,omitempty"`
	N     int      `json:"n,omitempty"`
	In    inner    `json:"in"`
	Items []*inner `json:"items" max:"2"`
}

func TestUnmarshal(t *testing.T) {
	for _, c := range []struct {
		in string
		ok bool
	}{
		{`{"s":"x","in":{"b":"AA=="},"items":[]}`, true},
		{` {"s":"x","n":7,"in":{"b":""},"items":[{"b":"AAA="}]} ` + "\n", true},
		{`{"s":"x","in":{"b":"AA=="},"items":[{"b":"AA=="},{"b":"AA=="},{"b":"AA=="}]}`, false}, // max items
		{`{"s":"123456789","in":{"b":"AA=="},"items":[]}`, false},                               // max bytes
		{`{"s":"x","n":0,"in":{"b":"AA=="},"items":[]}`, false},                                 // optional but empty
		{`{"s":"x","b":"","in":{"b":"AA=="},"items":[]}`, false},                                // optional bytes but empty
		{`{"s":"x","b":"AA==","in":{"b":"AA=="},"items":[]}`, true},
		{`{"s":"x","n":-1,"in":{"b":"AA=="},"items":[]}`, false},
		{`{"s":"x","in":{"b":"AB=="},"items":[]}`, false}, // non-zero padding bits
		{`{"s":"x","in":{"b":"AA=="},"items":[],}`, false},
		{`{"s":"x","in":{"b":"AA=="},"items":[]`, false},
		{`{"s":"\x","in":{"b":"AA=="},"items":[]}`, false},
		{`{"s":"\u00","in":{"b":"AA=="},"items":[]}`, false},
		{`{"s":true,"in":{"b":"AA=="},"items":[]}`, false},
		{`{"s":"x","in":{"b":"AA==", "b":"AA=="},"items":[]}`, false},
	} {
		var d doc
		err := Unmarshal([]byte(c.in), &d)
		if (err == nil) != c.ok {
			t.Errorf("Unmarshal(%s) = %v, want ok=%v", c.in, err, c.ok)
		}
	}
}

func TestMembers(t *testing.T) {
	var b strings.Builder
	b.WriteString(`{"s":"x","in":{"b":""},"items":[]`)
	for i := 0; i < 40; i++ {
		b.WriteString(`,"u` + strings.Repeat("x", i) + `":0`)
	}
	b.WriteString("}")
	var d doc
	if err := Unmarshal([]byte(b.String()), &d); err == nil || !strings.Contains(err.Error(), "more than 32 members") {
		t.Fatalf("many members: %v", err)
	}
}

func TestDepth(t *testing.T) {
	deep := `{"s":` + strings.Repeat("[", 100000) + strings.Repeat("]", 100000) + `}`
	var d doc
	if err := Unmarshal([]byte(deep), &d); err == nil || !strings.Contains(err.Error(), "nested") {
		t.Fatalf("deep nesting: %v", err)
	}
}

func TestString(t *testing.T) {
	if got := String([]byte(`{"format":"a","x":{"format":"b"}}`), "format"); got != "a" {
		t.Errorf("String = %q", got)
	}
	if got := String([]byte(`{"format":"a","format":"b"}`), "format"); got != "" {
		t.Errorf("String of an invalid document = %q", got)
	}
}
