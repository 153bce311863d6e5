package authority

import (
	"context"
	"io"

	"github.com/p11escrow/p11escrow/escrow"
	"github.com/p11escrow/p11escrow/token"
)

// DirectDecrypt decrypts a file through its authority stanza without a recovery request. It is
// the authority's path before it has officers: once any officer is registered, the two-person
// rule is in force and DirectDecrypt refuses, so that no single insider can use the tool to
// decrypt alone. Every use is written to the audit log before any plaintext is released. As in
// RecoverDecrypt, the session key stays inside the HSM: it is unwrapped sensitive and not
// extractable, and the token opens the chunks.
func (a *Authority) DirectDecrypt(ctx context.Context, in io.Reader, out io.Writer) error {
	if err := a.needToken(); err != nil {
		return err
	}
	officers, err := a.st.Officers(ctx)
	if err != nil {
		return err
	}
	if len(officers) > 0 {
		return &ApprovalsNeededError{Officers: len(officers)}
	}
	h, payload, err := escrow.ParseHeader(in)
	if err != nil {
		return err
	}
	sk, key, err := a.unwrapStanza(ctx, h)
	if err != nil {
		return err
	}
	defer sk.Destroy()
	if err := a.Log(ctx, "decrypt-direct", map[string]any{"file_id": h.ID.String(), "authority_key": key.Fingerprint}); err != nil {
		return err
	}
	return h.DecryptOn(sk, payload, out)
}

// unwrapStanza unwraps h's authority stanza with the live authority key it names, sealed.
func (a *Authority) unwrapStanza(ctx context.Context, h *escrow.Header) (*token.SecretKey, *AuthorityKey, error) {
	for _, s := range h.Stanzas {
		if escrow.StanzaRole(s) != escrow.RoleAuthority {
			continue
		}
		hash, wrapped, err := stanzaWrap(s)
		if err != nil {
			return nil, nil, err
		}
		key, err := a.keyForTag(ctx, escrow.StanzaTag(s))
		if err != nil {
			return nil, nil, err
		}
		sk, err := a.unwrapWith(key, &Wrap{KeyFingerprint: key.Fingerprint, OAEPHash: hash, Wrapped: wrapped}, false)
		return sk, key, err
	}
	return nil, nil, &escrow.NoIdentityError{}
}
