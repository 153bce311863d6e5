package token

import (
	"testing"

	"github.com/miekg/pkcs11"
)

// TestDropFalseUsage: the dual-use retry drops exactly the usage attributes set to false, and
// only the refusals a template can cause trigger it.
func TestDropFalseUsage(t *testing.T) {
	priv := rsaPrivateTemplate("k", []byte{1}, false)
	got, dropped := dropFalseUsage(priv)
	if !dropped || len(got) != len(priv)-1 {
		t.Fatalf("dropped %v, %d of %d attributes left; want CKA_SIGN=false gone", dropped, len(got), len(priv))
	}
	for _, a := range got {
		if a.Type == pkcs11.CKA_SIGN {
			t.Error("CKA_SIGN=false survived")
		}
	}
	for _, keep := range []uint{pkcs11.CKA_DECRYPT, pkcs11.CKA_UNWRAP, pkcs11.CKA_SENSITIVE, pkcs11.CKA_EXTRACTABLE} {
		found := false
		for _, a := range got {
			found = found || a.Type == keep
		}
		if !found {
			t.Errorf("attribute 0x%x was dropped", keep)
		}
	}
	pub := rsaPublicTemplate("k", []byte{1}, 2048)
	if got, dropped := dropFalseUsage(pub); !dropped || len(got) != len(pub)-1 {
		t.Errorf("public template: dropped %v, %d of %d left; want CKA_VERIFY=false gone", dropped, len(got), len(pub))
	}
	if _, dropped := dropFalseUsage(got); dropped {
		t.Error("a template without false usage attributes lost some")
	}
	if !templateRefused(pkcs11.Error(pkcs11.CKR_GENERAL_ERROR)) || templateRefused(pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)) ||
		templateRefused(pkcs11.Error(pkcs11.CKR_DEVICE_MEMORY)) {
		t.Error("templateRefused misjudges codes")
	}
}
