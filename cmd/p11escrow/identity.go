package main

import (
	"fmt"

	"github.com/p11escrow/p11escrow/escrow"
)

// identities finds the token's keys that a header is addressed to, logging in only when one is.
type identities struct {
	s      *session
	label  string // --key; empty means every exchange key pair on the token
	filter stanzaFilter
	keys   []exchangeKey // loaded once per command
}

// forHeader returns an identity for each token key that some stanza of h is addressed to.
func (ids *identities) forHeader(h *escrow.Header) ([]escrow.Identity, error) {
	stanzas := ids.filter.apply(h.Stanzas)
	if len(stanzas) == 0 {
		return nil, &escrow.NoIdentityError{Tags: escrow.StanzaTags(h.Stanzas)}
	}
	if ids.keys == nil && !ids.named() && !ids.s.token.LoggedIn() && !ids.publicKeyMatches(stanzas) {
		return nil, &escrow.NoIdentityError{Tags: escrow.StanzaTags(stanzas)}
	}
	keys, err := ids.load()
	if err != nil {
		return nil, err
	}
	var list []escrow.Identity
	var unwrapOnly exchangeKey
	for _, kp := range keys {
		// An RSA authority key may not decrypt; asking the token would only fail.
		if _, ok := kp.(rsaExchangeKey); ok {
			if a, err := kp.attributes(); err == nil && !a.Decrypt && a.Unwrap {
				unwrapOnly = kp
				continue
			}
		}
		list = append(list, &filtered{kp.identity(), ids.filter})
	}
	if len(list) == 0 && unwrapOnly != nil {
		return nil, authorityKeyError(fmt.Sprintf("key %q on token %q", unwrapOnly.label(), ids.s.token.Info().Label))
	}
	return list, nil
}

// publicKeyMatches reports whether a stanza's tag is that of a public key on the token, or
// whether the token shows no public keys at all (then only a login can tell). It lets decrypt
// refuse a file that is not for this token without asking for the PIN.
func (ids *identities) publicKeyMatches(stanzas []*escrow.Stanza) bool {
	pubs, err := ids.s.token.PublicKeys()
	if err != nil || len(pubs) == 0 {
		return true
	}
	want := map[string]bool{}
	for _, t := range escrow.StanzaTags(stanzas) {
		want[t] = true
	}
	for _, pub := range pubs {
		if fpr, err := escrow.FingerprintOf(pub); err == nil && want[fpr.Tag()] {
			return true
		}
	}
	return false
}

// named reports whether the command names one key, by --key or by the URI.
func (ids *identities) named() bool {
	return ids.label != "" || ids.s.key.label != "" || ids.s.key.id != nil
}

func (ids *identities) load() ([]exchangeKey, error) {
	if ids.keys != nil {
		return ids.keys, nil
	}
	if err := ids.s.login(); err != nil {
		return nil, err
	}
	if ids.named() {
		kp, err := ids.s.findExchangeKey(ids.label)
		if err != nil {
			return nil, err
		}
		ids.keys = []exchangeKey{kp}
		return ids.keys, nil
	}
	keys, err := ids.s.exchangeKeys()
	if err != nil {
		return nil, err
	}
	ids.keys = keys
	return keys, nil
}

// filtered hides the stanzas its filter rejects from an identity.
type filtered struct {
	id     escrow.Identity
	filter stanzaFilter
}

func (f *filtered) Unwrap(stanzas []*escrow.Stanza) ([]byte, error) {
	return f.id.Unwrap(f.filter.apply(stanzas))
}

// apply returns the stanzas the filter keeps; a nil filter keeps all.
func (f stanzaFilter) apply(stanzas []*escrow.Stanza) []*escrow.Stanza {
	if f == nil {
		return stanzas
	}
	var keep []*escrow.Stanza
	for _, s := range stanzas {
		if f(s) {
			keep = append(keep, s)
		}
	}
	return keep
}
