package authority

import (
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"errors"
	"fmt"
	"github.com/p11escrow/p11escrow/escrow"
	"path/filepath"
	"sync"
	"testing"
	"time"
)

// TestVerifyWhileWriting: --verify reads the log and its head at one instant, so a writer in
// another process never makes a sound log look broken.
func TestVerifyWhileWriting(t *testing.T) {
	path := filepath.Join(t.TempDir(), "a.db")
	open := func() Store {
		st, err := OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		return st
	}
	w, r := New(open(), nil, "writer"), New(open(), nil, "reader")
	done := make(chan struct{})
	go func() {
		defer close(done)
		for i := 0; i < 150; i++ {
			if err := w.Log("note", map[string]any{"n": i}); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	checks := 0
	for {
		select {
		case <-done:
			if checks < 10 {
				t.Logf("only %d checks ran during the writes", checks)
			}
			return
		default:
		}
		if _, _, err := r.VerifyAudit(); err != nil {
			<-done // the writer reports to t: let it finish first
			t.Fatalf("verify during writes (check %d): %v", checks, err)
		}
		checks++
	}
}

// TestStateBoundToChain: the rows that decide recoveries are bound to the audit chain, so an
// edit made with SQLite itself, without p11escrow, is caught by --verify. A used request
// flipped back to open would otherwise allow a second recovery with the same approvals.
func TestStateBoundToChain(t *testing.T) {
	a, kp := newAuthority(t)
	owner, err := a.Token.GenerateRSA(uniq(t, "alice"), 2048)
	if err != nil {
		t.Fatal(err)
	}
	res, err := a.Intake("f", encryptFor(t, owner, kp.Public, 10).record)
	if err != nil || res.Outcome != Held {
		t.Fatal(res, err)
	}
	req, err := a.NewRequest(res.FileID, "", escrow.ActionReheader, owner.Public, crypto.SHA1, "test", time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	if err := a.Store.Recovered(req.ID, a.event("recover", nil)); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.VerifyAudit(); err != nil {
		t.Fatalf("untouched store: %v", err)
	}
	st := a.Store.(*sqliteStore)
	cases := []struct {
		name, sql, table string
	}{
		{"request reopened", `UPDATE requests SET state = 'open'`, "requests"},
		{"record status", `UPDATE records SET status = 'held'`, "records"},
		{"policy", `UPDATE meta SET value = '5' WHERE key = 'approvals'`, "meta"},
		{"officer inserted", `INSERT INTO officers VALUES ('00', 'mallory', 'ecdsa-p256-sha256', x'00', '2026-01-01T00:00:00Z')`, "officers"},
		{"wrap deleted", `DELETE FROM wraps`, "wraps"},
		{"key state", `UPDATE authority_keys SET state = 'retired'`, "authority_keys"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			tx, err := st.db.Begin()
			if err != nil {
				t.Fatal(err)
			}
			defer tx.Rollback() // undo the edit for the next case
			if _, err := tx.Exec(`PRAGMA defer_foreign_keys = ON`); err != nil {
				t.Fatal(err)
			}
			if _, err := tx.Exec(c.sql); err != nil {
				t.Fatal(err)
			}
			entries, err := readAudit(tx)
			if err != nil {
				t.Fatal(err)
			}
			state, err := currentState(tx)
			if err != nil {
				t.Fatal(err)
			}
			err = VerifyState(entries, state)
			var se *StateError
			if !errors.As(err, &se) || se.Table != c.table {
				t.Errorf("VerifyState = %v, want a change to %s", err, c.table)
			}
		})
	}
	// And through the whole command path, with the edit committed.
	if _, err := st.db.Exec(`UPDATE requests SET state = 'open'`); err != nil {
		t.Fatal(err)
	}
	if _, _, err := a.VerifyAudit(); err == nil {
		t.Error("a request flipped back to open was not caught")
	}
}

// TestOfficerAddRace: the bootstrap check (fewer officers than the policy) and the insert are
// one transaction, so officers added at once through separate store handles never exceed the
// policy directly.
func TestOfficerAddRace(t *testing.T) {
	for round := 0; round < 3; round++ {
		path := filepath.Join(t.TempDir(), fmt.Sprintf("r%d.db", round))
		var wg sync.WaitGroup
		var mu sync.Mutex
		added := 0
		for i := 0; i < 4; i++ {
			st, err := OpenSQLite(path)
			if err != nil {
				t.Fatal(err)
			}
			defer st.Close()
			k, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
			wg.Add(1)
			go func() {
				defer wg.Done()
				if _, err := New(st, nil, "test").AddOfficer(fmt.Sprintf("o%d", i), k.Public()); err == nil {
					mu.Lock()
					added++
					mu.Unlock()
				}
			}()
		}
		wg.Wait()
		st, err := OpenSQLite(path)
		if err != nil {
			t.Fatal(err)
		}
		officers, _ := st.Officers()
		st.Close()
		if len(officers) != 2 || added != 2 {
			t.Fatalf("round %d: %d officers registered directly (%d calls succeeded), policy 2", round, len(officers), added)
		}
	}
}
