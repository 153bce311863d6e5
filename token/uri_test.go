package token

import (
	"bytes"
	"reflect"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    URI
		wantErr string
	}{
		{in: "pkcs11:", want: URI{}},
		{
			in: "pkcs11:token=alice;object=exchange;type=private?module-path=/usr/lib/softhsm/libsofthsm2.so&pin-source=file:pin.txt",
			want: URI{Token: "alice", Object: "exchange", Type: "private",
				ModulePath: "/usr/lib/softhsm/libsofthsm2.so", PinSource: "pin.txt"},
		},
		{in: "pkcs11:token=My%20Token;object=a+b", want: URI{Token: "My Token", Object: "a+b"}},
		{in: "pkcs11:object=a%2Bb%3Bc", want: URI{Object: "a+b;c"}},
		{in: "PKCS11:id=%01%02%ff;serial=d659", want: URI{ID: []byte{1, 2, 0xff}, Serial: "d659"}},
		{in: "pkcs11:model=SoftHSM%20v2;manufacturer=SoftHSM%20project;library-description=x;slot-id=3",
			want: URI{Model: "SoftHSM v2", Manufacturer: "SoftHSM project"}},
		{in: "pkcs11:?pin-source=/run/pin&module-name=softhsm2&x-vendor=1", want: URI{PinSource: "/run/pin"}},
		{in: "pkcs11:?pin-source=file:///etc/p11/pin", want: URI{PinSource: "/etc/p11/pin"}},
		{in: "pkcs11:?pin-source=file%3A%2Ftmp%2Fp", want: URI{PinSource: "/tmp/p"}},
		{in: "pkcs11:token=a?pin-value=1234", wantErr: "PINs must come from an environment variable, a file"},
		{in: "pkcs11:colour=blue", wantErr: "unknown path attribute \"colour\""},
		{in: "pkcs11:token=a;token=b", wantErr: "appears twice"},
		{in: "pkcs11:token=%zz", wantErr: "bad percent-encoding"},
		{in: "pkcs11:token", wantErr: "has no '='"},
		{in: "pkcs11:type=keyish", wantErr: "is not one of"},
		{in: "pkcs11:?pin-source=|/bin/getpin", wantErr: "runs a program"},
		{in: "token=alice", wantErr: "does not start with \"pkcs11:\""},
	} {
		got, err := ParseURI(tc.in)
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("ParseURI(%q) = %v, want error containing %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil {
			t.Errorf("ParseURI(%q): %v", tc.in, err)
			continue
		}
		w := tc.want
		if !bytes.Equal(got.ID, w.ID) {
			t.Errorf("ParseURI(%q).ID = %x, want %x", tc.in, got.ID, w.ID)
		}
		got.ID, w.ID = nil, nil
		if !reflect.DeepEqual(*got, w) {
			t.Errorf("ParseURI(%q) = %+v, want %+v", tc.in, *got, w)
		}
	}
}

func TestURISelector(t *testing.T) {
	u, err := ParseURI("pkcs11:token=alice;serial=42")
	if err != nil {
		t.Fatal(err)
	}
	if u.Selector() != (Selector{Label: "alice", Serial: "42"}) {
		t.Errorf("Selector() = %+v", u.Selector())
	}
}
