package token

import (
	"bytes"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

func TestParseURI(t *testing.T) {
	three := uint(3)
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
			want: URI{Model: "SoftHSM v2", Manufacturer: "SoftHSM project", LibraryDescription: "x", SlotID: &three}},
		{in: "pkcs11:library-manufacturer=SoftHSM;library-version=2.6;slot-manufacturer=m;slot-description=d",
			want: URI{LibraryManufacturer: "SoftHSM", LibraryVersion: "2.6", SlotManufacturer: "m", SlotDescription: "d"}},
		{in: "pkcs11:?pin-source=/run/pin&module-name=softhsm2&x-vendor=1", want: URI{PinSource: "/run/pin", ModuleName: "softhsm2"}},
		{in: "pkcs11:slot-id=x", wantErr: "slot-id \"x\" is not a decimal number"},
		{in: "pkcs11:library-version=two", wantErr: "is not M or M.N"},
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

// TestURIString checks that String percent-encodes what it must and parses back to the same URI.
func TestURIString(t *testing.T) {
	slot := uint(7)
	u := URI{Token: "My Token;x", Serial: "42", Manufacturer: "A&B", Model: "m/1", Object: "key=1",
		Type: "private", ID: []byte{0, 0xff, 'a'}, SlotID: &slot, LibraryVersion: "2.6", ModuleName: "softhsm2"}
	s := u.String()
	want := "pkcs11:library-version=2.6;slot-id=7;model=m/1;manufacturer=A%26B;serial=42;token=My%20Token%3bx;id=%00%ff%61;object=key%3d1;type=private?module-name=softhsm2"
	if s != want {
		t.Errorf("String() = %s\nwant       %s", s, want)
	}
	back, err := ParseURI(s)
	if err != nil {
		t.Fatal(err)
	}
	if back.String() != s {
		t.Errorf("round trip: %s", back.String())
	}
}

func TestResolveModuleName(t *testing.T) {
	etc, usr := t.TempDir(), t.TempDir()
	write := func(dir, name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write(usr, "softhsm2.module", "# comment\nmodule: /usr/lib/softhsm/libsofthsm2.so\n")
	write(usr, "nss.module", "module: /usr/lib/libsoftokn3.so\nx-init-reserved: configdir='sql:/tmp/db'\n")
	write(etc, "nss.module", "module: /opt/nss/libsoftokn3.so\n")
	write(usr, "settings.module", "enable-in: firefox\n") // no module: key, not a module
	for _, tc := range []struct{ name, path, args, err string }{
		{name: "softhsm2", path: "/usr/lib/softhsm/libsofthsm2.so"},
		{name: "softokn3", path: "/opt/nss/libsoftokn3.so"}, // by library name; /etc wins
		{name: "nss", path: "/opt/nss/libsoftokn3.so"},
		{name: "settings", err: "no p11-kit module named \"settings\""},
		{name: "nope", err: "registered: nss, nss, softhsm2"},
	} {
		rm, err := ResolveModuleName(tc.name, []string{etc, usr})
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("%s: err = %v, want %q", tc.name, err, tc.err)
			}
			continue
		}
		if err != nil || rm.Path != tc.path || rm.InitArgs != tc.args {
			t.Errorf("%s: %+v, %v; want path %s", tc.name, rm, err, tc.path)
		}
	}
	rm, err := ResolveModuleName("nss", []string{usr})
	if err != nil || rm.InitArgs != "configdir='sql:/tmp/db'" {
		t.Errorf("x-init-reserved: %+v, %v", rm, err)
	}
}

// TestDefaultModuleOrder: where both are installed, the p11-kit proxy, which sees every module
// the system registered, is preferred to SoftHSM2 alone.
func TestDefaultModuleOrder(t *testing.T) {
	lastProxy, firstSoftHSM := -1, len(defaultModules)
	for i, p := range defaultModules {
		switch {
		case strings.Contains(p, "p11-kit-proxy"):
			lastProxy = i
		case strings.Contains(p, "softhsm2") && i < firstSoftHSM:
			firstSoftHSM = i
		}
	}
	if lastProxy < 0 || lastProxy > firstSoftHSM {
		t.Errorf("defaultModules = %v: every p11-kit proxy path must come before SoftHSM2", defaultModules)
	}
	dir := t.TempDir()
	proxy, softhsm := filepath.Join(dir, "p11-kit-proxy.so"), filepath.Join(dir, "libsofthsm2.so")
	for _, f := range []string{proxy, softhsm} {
		if err := os.WriteFile(f, nil, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := firstModule([]string{filepath.Join(dir, "absent.so"), proxy, softhsm}); err != nil || got != proxy {
		t.Errorf("firstModule = %q, %v; want %s", got, err, proxy)
	}
	if _, err := firstModule([]string{filepath.Join(dir, "absent.so")}); err == nil || !strings.Contains(err.Error(), "install p11-kit or SoftHSM2") {
		t.Errorf("firstModule with none: %v", err)
	}
}
