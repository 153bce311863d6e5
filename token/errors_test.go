package token

import (
	"errors"
	"strings"
	"testing"

	"github.com/miekg/pkcs11"
)

// required are the codes the brief says must have their own sentence.
var required = []uint{
	pkcs11.CKR_PIN_INCORRECT, pkcs11.CKR_PIN_LOCKED, pkcs11.CKR_PIN_LEN_RANGE, pkcs11.CKR_PIN_EXPIRED,
	pkcs11.CKR_USER_NOT_LOGGED_IN, pkcs11.CKR_TOKEN_NOT_PRESENT, pkcs11.CKR_DEVICE_REMOVED,
	pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_SESSION_HANDLE_INVALID, pkcs11.CKR_MECHANISM_INVALID,
	pkcs11.CKR_MECHANISM_PARAM_INVALID, pkcs11.CKR_ARGUMENTS_BAD, pkcs11.CKR_KEY_UNEXTRACTABLE,
	pkcs11.CKR_KEY_TYPE_INCONSISTENT, pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED, pkcs11.CKR_TOKEN_WRITE_PROTECTED,
	pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_ENCRYPTED_DATA_INVALID, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE,
	pkcs11.CKR_WRAPPED_KEY_INVALID, pkcs11.CKR_GENERAL_ERROR, pkcs11.CKR_TEMPLATE_INCONSISTENT,
	pkcs11.CKR_ATTRIBUTE_VALUE_INVALID,
}

func TestEveryMappedCodeIsASentence(t *testing.T) {
	for _, c := range required {
		if _, ok := sentences[c]; !ok {
			t.Errorf("%s has no sentence", ckrName(c))
		}
	}
	check := func(ctx opContext, code uint) {
		err := tokenErr("do it", ctx, pkcs11.Error(code))
		msg := err.Error()
		name := ckrName(code)
		switch {
		case strings.HasPrefix(err.(*Error).Msg, "CKR_"), strings.HasPrefix(msg, "CKR_"):
			t.Errorf("%s: message starts with CKR_: %q", name, msg)
		case !strings.HasSuffix(msg, " ("+name+")"):
			t.Errorf("%s: message does not end with the code name: %q", name, msg)
		case !strings.Contains(err.(*Error).Msg, ";"):
			t.Errorf("%s: message has no advice clause: %q", name, msg)
		case strings.Count(err.(*Error).Msg, ".") > 1 && !strings.Contains(msg, "e.g."):
			t.Errorf("%s: message looks like several sentences: %q", name, msg)
		}
	}
	for code := range sentences {
		check(ctxPlain, code)
	}
	for ctx, m := range contextual {
		for code := range m {
			check(ctx, code)
		}
	}
	check(ctxPlain, 0x7777) // unknown code still gets a sentence
}

func TestContextualMapping(t *testing.T) {
	for _, tc := range []struct {
		ctx  opContext
		code uint
		kind error
		want string
	}{
		{ctxOAEP, pkcs11.CKR_ARGUMENTS_BAD, ErrMechanism, "the token rejected the OAEP parameters; it may support only OAEP with SHA-1"},
		{ctxDecrypt, pkcs11.CKR_ARGUMENTS_BAD, ErrMechanism, "only OAEP with SHA-1"},
		{ctxPlain, pkcs11.CKR_ARGUMENTS_BAD, nil, "p11escrow bug"},
		{ctxDecrypt, pkcs11.CKR_GENERAL_ERROR, ErrDecrypt, "it is not addressed to this key or is corrupt"},
		{ctxDecrypt, pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE, ErrDecrypt, "not addressed to this key"},
		{ctxDecrypt, pkcs11.CKR_WRAPPED_KEY_INVALID, ErrDecrypt, "not addressed to this key"},
		{ctxGCMOpen, pkcs11.CKR_GENERAL_ERROR, ErrAuthFailed, "failed authentication"},
		{ctxPlain, pkcs11.CKR_PIN_INCORRECT, ErrWrongPIN, "the PIN is wrong; it was not retried, to avoid locking the token (CKR_PIN_INCORRECT)"},
		{ctxPlain, pkcs11.CKR_PIN_LOCKED, ErrPINLocked, "locked"},
		{ctxPlain, pkcs11.CKR_TOKEN_NOT_PRESENT, ErrNoToken, "insert"},
		{ctxPlain, pkcs11.CKR_DEVICE_REMOVED, ErrNoToken, "removed"},
		{ctxPlain, pkcs11.CKR_USER_NOT_LOGGED_IN, ErrNotLoggedIn, "log in"},
		{ctxPlain, pkcs11.CKR_MECHANISM_INVALID, ErrMechanism, "does not support"},
	} {
		err := tokenErr("op", tc.ctx, pkcs11.Error(tc.code))
		if tc.kind != nil && !errors.Is(err, tc.kind) {
			t.Errorf("%s in context %d: %v is not %v", ckrName(tc.code), tc.ctx, err, tc.kind)
		}
		if !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s in context %d: %q lacks %q", ckrName(tc.code), tc.ctx, err, tc.want)
		}
	}
	if !isCode(tokenErr("op", ctxPlain, pkcs11.Error(pkcs11.CKR_PIN_INCORRECT)), pkcs11.CKR_PIN_INCORRECT) {
		t.Error("isCode does not see through *Error")
	}
}

// TestNoWipingAdvice: no error sentence may tell a user to run a command that wipes a token.
func TestNoWipingAdvice(t *testing.T) {
	var all []sentence
	for _, s := range sentences {
		all = append(all, s)
	}
	for _, m := range contextual {
		for _, s := range m {
			all = append(all, s)
		}
	}
	for _, s := range all {
		for _, bad := range []string{"--init-token", "--delete-token", "C_InitToken"} {
			if strings.Contains(s.msg, bad) {
				t.Errorf("advice %q suggests %s, which wipes the token", s.msg, bad)
			}
		}
	}
}
