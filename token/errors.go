package token

import (
	"crypto/rsa"
	"errors"
	"fmt"
	"strings"

	"github.com/miekg/pkcs11"
)

// Sentinel errors. Every *Error returned by this package unwraps to at most
// one of them, so callers can branch with errors.Is without knowing PKCS#11
// return codes.
var (
	// ErrWrongPIN: C_Login said CKR_PIN_INCORRECT. Callers must not retry
	// automatically: every retry brings the token closer to locking.
	ErrWrongPIN = errors.New("wrong PIN")
	// ErrPINLocked: the user PIN is locked; only the security officer can help.
	ErrPINLocked = errors.New("PIN locked")
	// ErrNotLoggedIn: the operation needs Login first.
	ErrNotLoggedIn = errors.New("not logged in")
	// ErrNoToken: no matching token, or the token went away mid-operation.
	ErrNoToken = errors.New("no token")
	// ErrAmbiguous: a selector or label matched more than one token or key.
	ErrAmbiguous = errors.New("ambiguous")
	// ErrExists: GenerateRSA was given a label the token already uses.
	ErrExists = errors.New("already exists")
	// ErrKeyNotFound: no key with the given label or ID.
	ErrKeyNotFound = errors.New("key not found")
	// ErrMechanism: the token lacks a mechanism or rejects its parameters.
	ErrMechanism = errors.New("mechanism not supported")
	// ErrHostWrap: FileKey.WrapOAEP cannot wrap on the token: the key was drawn on the host
	// (PathHostWrap), or the token has no OAEP with the hash asked for. The key is readable by
	// the host on both paths, and the caller wraps it there (escrow.RSARecipient does). It
	// matches errors.ErrUnsupported, the optional-interface fallback signal of the escrow package.
	ErrHostWrap = fmt.Errorf("wrap on the host: %w", errors.ErrUnsupported)
	// ErrAuthFailed: AES-GCM tag mismatch (data altered or wrong key).
	ErrAuthFailed = errors.New("authentication failed")
	// ErrDecrypt: an RSA decryption or unwrap failed; the ciphertext is not
	// for this key or is corrupt.
	// It wraps rsa.ErrDecryption, so code written for crypto/rsa keys (such as
	// escrow.RSAIdentity) tells a bad ciphertext from a token failure.
	ErrDecrypt = fmt.Errorf("decryption failed: %w", rsa.ErrDecryption)
	// ErrKeyLength: an unwrapped key is not 32 bytes. It matches ErrDecrypt too, since the
	// wrapped key is then corrupt or forged.
	ErrKeyLength = fmt.Errorf("%w: the key is not 32 bytes", ErrDecrypt)
)

// Error is the error type of this package. Its message is one sentence that
// tells a person what happened and what to do; the PKCS#11 return code, if
// any, follows in parentheses for bug reports, never on its own. Op is kept
// for logs and callers that want to add context; it is not in the message,
// so the CLI can print the sentence as is.
type Error struct {
	Op   string // what was being done, e.g. "log in to token \"alice\""
	Code uint   // PKCS#11 CK_RV, 0 if the error did not come from the token
	Msg  string // human sentence
	Kind error  // one of the sentinels above, or nil
}

// Error returns "advice (CKR_NAME)", the code part only when the token
// returned one.
func (e *Error) Error() string {
	if e.Code == 0 {
		return e.Msg
	}
	return fmt.Sprintf("%s (%s)", e.Msg, ckrName(e.Code))
}

// Unwrap exposes the sentinel so errors.Is works.
func (e *Error) Unwrap() error { return e.Kind }

// AuthFailed reports whether the token refused data as unauthentic (ErrAuthFailed: an AES-GCM
// tag that does not verify), as opposed to failing. It is how the escrow package, which does not
// import this one, tells a tampered file from a token fault.
func (e *Error) AuthFailed() bool { return errors.Is(e.Kind, ErrAuthFailed) }

// ckrName turns a return code into its CKR_ name via miekg's table.
func ckrName(code uint) string {
	s := pkcs11.Error(code).Error() // "pkcs11: 0xA0: CKR_PIN_INCORRECT"
	if i := strings.LastIndex(s, ": "); i >= 0 && strings.HasPrefix(s[i+2:], "CKR_") {
		return s[i+2:]
	}
	return fmt.Sprintf("CKR 0x%X", code)
}

// opContext says what kind of call failed, because the same code means
// different things: CKR_GENERAL_ERROR from a GCM decrypt is a tag mismatch,
// from an RSA decrypt a wrong or corrupt key blob.
type opContext int

const (
	ctxPlain     opContext = iota
	ctxOAEP                // OAEP encrypt or wrap
	ctxDecrypt             // OAEP decrypt or unwrap
	ctxGCMOpen             // AES-GCM decrypt
	ctxGenerate            // key pair generation
	ctxDerive              // ECDH derivation of a KEK
	ctxKeyUnwrap           // AES key unwrap (RFC 5649) under a derived KEK
)

type sentence struct {
	msg  string
	kind error
}

const msgNotForKey = "the token could not decrypt this key; it is not addressed to this key or is corrupt"

// contextual overrides the generic table for one context.
var contextual = map[opContext]map[uint]sentence{
	ctxOAEP: {
		pkcs11.CKR_ARGUMENTS_BAD:              {"the token rejected the OAEP parameters; it may support only OAEP with SHA-1", ErrMechanism},
		pkcs11.CKR_MECHANISM_PARAM_INVALID:    {"the token rejected the OAEP parameters; it may support only OAEP with SHA-1", ErrMechanism},
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED: {"the public key may not be used for wrapping on this token; import it with CKA_WRAP set", nil},
	},
	ctxDecrypt: {
		pkcs11.CKR_ARGUMENTS_BAD:            {"the token rejected the OAEP parameters; it may support only OAEP with SHA-1", ErrMechanism},
		pkcs11.CKR_MECHANISM_PARAM_INVALID:  {"the token rejected the OAEP parameters; it may support only OAEP with SHA-1", ErrMechanism},
		pkcs11.CKR_ENCRYPTED_DATA_INVALID:   {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE: {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_WRAPPED_KEY_INVALID:      {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_WRAPPED_KEY_LEN_RANGE:    {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_GENERAL_ERROR:            {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_DATA_LEN_RANGE:           {msgNotForKey, ErrDecrypt},
	},
	ctxGenerate: {
		// tpm2-pkcs11 answers a template it will not honour this way; no retry can fix that.
		pkcs11.CKR_GENERAL_ERROR: {"the token refused to generate this key; it may not allow the key's type, size or usage, and retrying will not help (the token's log may say why)", nil},
	},
	ctxDerive: {
		pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED: {"the EC key may not derive (CKA_DERIVE is false); make exchange keys with `p11escrow key generate --type ec-p256`, or with pkcs11-tool --usage-derive", nil},
		pkcs11.CKR_MECHANISM_INVALID:          {"the token does not offer ECDH (CKM_ECDH1_DERIVE), which EC keys need; use an RSA key on this token", ErrMechanism},
	},
	ctxKeyUnwrap: {
		pkcs11.CKR_MECHANISM_INVALID:        {"the token does not offer AES key wrap with padding (CKM_AES_KEY_WRAP_PAD), which EC keys need; use an RSA key on this token", ErrMechanism},
		pkcs11.CKR_ENCRYPTED_DATA_INVALID:   {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE: {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_WRAPPED_KEY_INVALID:      {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_WRAPPED_KEY_LEN_RANGE:    {msgNotForKey, ErrDecrypt},
		pkcs11.CKR_GENERAL_ERROR:            {msgNotForKey, ErrDecrypt},
	},
	ctxGCMOpen: {
		pkcs11.CKR_ENCRYPTED_DATA_INVALID:   {"the data failed authentication; it was altered or the key is wrong", ErrAuthFailed},
		pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE: {"the data failed authentication; it was truncated or altered", ErrAuthFailed},
		pkcs11.CKR_GENERAL_ERROR:            {"the data failed authentication; it was altered or the key is wrong", ErrAuthFailed},
	},
}

// sentences maps return codes to advice, independent of context.
var sentences = map[uint]sentence{
	pkcs11.CKR_PIN_INCORRECT:                  {"the PIN is wrong; it was not retried, to avoid locking the token", ErrWrongPIN},
	pkcs11.CKR_PIN_INVALID:                    {"the PIN contains characters the token does not accept; check that you typed the user PIN", ErrWrongPIN},
	pkcs11.CKR_PIN_LOCKED:                     {"the user PIN is locked after too many wrong tries; ask the token's security officer to unlock or reset it", ErrPINLocked},
	pkcs11.CKR_PIN_LEN_RANGE:                  {"the PIN has a length the token does not accept; check that you typed the user PIN, not the SO PIN", ErrWrongPIN},
	pkcs11.CKR_PIN_EXPIRED:                    {"the PIN has expired; change it with the token's own tool, then try again", ErrWrongPIN},
	pkcs11.CKR_USER_PIN_NOT_INITIALIZED:       {"the token has no user PIN yet; its security officer must set one (C_InitPIN, e.g. pkcs11-tool --init-pin --login --login-type so), which keeps the token's keys", ErrNotLoggedIn},
	pkcs11.CKR_USER_NOT_LOGGED_IN:             {"the token needs the user PIN for this; log in first", ErrNotLoggedIn},
	pkcs11.CKR_USER_ANOTHER_ALREADY_LOGGED_IN: {"the security officer is logged in to this token; log the SO out, then try again", nil},
	pkcs11.CKR_TOKEN_NOT_PRESENT:              {"no token is in the slot; insert the token and try again", ErrNoToken},
	pkcs11.CKR_TOKEN_NOT_RECOGNIZED:           {"the module does not recognise the token in the slot; check that you use the right PKCS#11 module", ErrNoToken},
	pkcs11.CKR_DEVICE_REMOVED:                 {"the token was removed during the operation; insert it again and retry", ErrNoToken},
	pkcs11.CKR_DEVICE_ERROR:                   {"the token reported a device error; reinsert it or restart its middleware (e.g. pcscd), then retry", nil},
	pkcs11.CKR_DEVICE_MEMORY:                  {"the token is out of memory; delete unused objects from it and try again", nil},
	pkcs11.CKR_HOST_MEMORY:                    {"the PKCS#11 module ran out of host memory; free memory and try again", nil},
	pkcs11.CKR_SESSION_HANDLE_INVALID:         {"the session with the token was lost (removed or reset); open the token again", ErrNoToken},
	pkcs11.CKR_SESSION_CLOSED:                 {"the session with the token was closed; open the token again", ErrNoToken},
	pkcs11.CKR_SESSION_READ_ONLY:              {"the session is read-only; the token must allow read-write sessions for this", nil},
	pkcs11.CKR_SLOT_ID_INVALID:                {"the slot no longer exists; the token was probably removed, so insert it and retry", ErrNoToken},
	pkcs11.CKR_MECHANISM_INVALID:              {"the token does not support a mechanism this needs; use a token with RSA-OAEP", ErrMechanism},
	pkcs11.CKR_MECHANISM_PARAM_INVALID:        {"the token rejected the mechanism parameters; it may support only a narrower variant", ErrMechanism},
	pkcs11.CKR_FUNCTION_NOT_SUPPORTED:         {"the PKCS#11 module does not implement a function this needs; use another module or token", ErrMechanism},
	pkcs11.CKR_ARGUMENTS_BAD:                  {"the token rejected the call's arguments; this is probably a p11escrow bug, please report it", nil},
	pkcs11.CKR_KEY_UNEXTRACTABLE:              {"the key is marked non-extractable, so the token will not wrap it; create it with CKA_EXTRACTABLE set", nil},
	pkcs11.CKR_KEY_TYPE_INCONSISTENT:          {"the key has the wrong type for this operation; check that the label names an RSA key pair", nil},
	pkcs11.CKR_KEY_FUNCTION_NOT_PERMITTED:     {"the key's attributes forbid this use (e.g. CKA_DECRYPT or CKA_WRAP is false); use or create a key that allows it", nil},
	pkcs11.CKR_KEY_SIZE_RANGE:                 {"the token does not support this key size; choose another size", ErrMechanism},
	pkcs11.CKR_KEY_HANDLE_INVALID:             {"the key no longer exists on the token; it was destroyed or the session was reset", ErrKeyNotFound},
	pkcs11.CKR_OBJECT_HANDLE_INVALID:          {"the object no longer exists on the token; it was destroyed or the session was reset", ErrKeyNotFound},
	pkcs11.CKR_TOKEN_WRITE_PROTECTED:          {"the token is write-protected; use a writable token", nil},
	pkcs11.CKR_ENCRYPTED_DATA_INVALID:         {"the token found the encrypted data invalid; the input is corrupt", ErrDecrypt},
	pkcs11.CKR_ENCRYPTED_DATA_LEN_RANGE:       {"the encrypted data has the wrong length for this key; the input is corrupt or for another key", ErrDecrypt},
	pkcs11.CKR_WRAPPED_KEY_INVALID:            {msgNotForKey, ErrDecrypt},
	pkcs11.CKR_DATA_LEN_RANGE:                 {"the data is too long for this key and mechanism; this is probably a p11escrow bug, please report it", nil},
	pkcs11.CKR_GENERAL_ERROR:                  {"the token reported an unspecified failure; retry, and check the token's log if it persists", nil},
	pkcs11.CKR_FUNCTION_FAILED:                {"the token could not complete the operation; retry, and check the token's log if it persists", nil},
	pkcs11.CKR_TEMPLATE_INCONSISTENT:          {"the token refused the key attributes p11escrow asked for; it may not allow this kind of key", nil},
	pkcs11.CKR_TEMPLATE_INCOMPLETE:            {"the token wants more key attributes than p11escrow gave; this token needs special support, please report it", nil},
	pkcs11.CKR_ATTRIBUTE_VALUE_INVALID:        {"the token refused an attribute value (e.g. key size or exponent); it may not support this setting", nil},
	pkcs11.CKR_ATTRIBUTE_READ_ONLY:            {"the token does not let this attribute be set; it may not allow this kind of key", nil},
	pkcs11.CKR_ATTRIBUTE_TYPE_INVALID:         {"the token does not know an attribute p11escrow used; it may not support this kind of key", nil},
	pkcs11.CKR_ATTRIBUTE_SENSITIVE:            {"the key is sensitive, so the token will not reveal its value; use the token-side operations instead", nil},
	pkcs11.CKR_OPERATION_ACTIVE:               {"another operation is still running in this session; do one thing at a time per session", nil},
	pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED:       {"the PKCS#11 module is not initialised; load it with token.Load first", nil},
	pkcs11.CKR_RANDOM_NO_RNG:                  {"the token has no random number generator; use a token with an RNG", ErrMechanism},
	pkcs11.CKR_ACTION_PROHIBITED:              {"the token forbids this action on the object; it may not allow changing or using it this way", nil},
}

// tokenErr converts an error from miekg/pkcs11 into an *Error with advice.
// Errors that are not pkcs11.Error pass through with op prefixed.
func tokenErr(op string, ctx opContext, err error) error {
	if err == nil {
		return nil
	}
	var ck pkcs11.Error
	if !errors.As(err, &ck) {
		return fmt.Errorf("%s: %w", op, err)
	}
	s := lookup(ctx, uint(ck))
	return &Error{Op: op, Code: uint(ck), Msg: s.msg, Kind: s.kind}
}

func lookup(ctx opContext, code uint) sentence {
	if s, ok := contextual[ctx][code]; ok {
		return s
	}
	if s, ok := sentences[code]; ok {
		return s
	}
	return sentence{msg: "the token refused the operation with an unexpected error; retry, and report it if it persists"}
}

// Broken reports whether err means that the token or the session can do nothing more for now
// (the token is gone, the session was lost or logged out, the device or the module is out of
// order), as opposed to the failure of one operation on its input (a ciphertext that does not
// decrypt, a mechanism parameter the token refuses). A batch stops at the first; it can skip
// the item that caused the second and go on.
func Broken(err error) bool {
	switch {
	case err == nil:
		return false
	case errors.Is(err, ErrNoToken), errors.Is(err, ErrNotLoggedIn), errors.Is(err, ErrWrongPIN), errors.Is(err, ErrPINLocked):
		return true
	}
	return isCode(err, pkcs11.CKR_DEVICE_ERROR, pkcs11.CKR_DEVICE_MEMORY, pkcs11.CKR_HOST_MEMORY,
		pkcs11.CKR_CRYPTOKI_NOT_INITIALIZED, pkcs11.CKR_SESSION_READ_ONLY, pkcs11.CKR_OPERATION_ACTIVE)
}

// isCode reports whether err is the PKCS#11 code (raw or inside *Error).
func isCode(err error, codes ...uint) bool {
	var got uint
	var ck pkcs11.Error
	var e *Error
	switch {
	case errors.As(err, &e):
		got = e.Code
	case errors.As(err, &ck):
		got = uint(ck)
	default:
		return false
	}
	for _, c := range codes {
		if got == c {
			return true
		}
	}
	return false
}

// newErr builds an *Error that did not come from the token.
func newErr(op string, kind error, format string, args ...any) error {
	return &Error{Op: op, Msg: fmt.Sprintf(format, args...), Kind: kind}
}
