package main

import (
	"runtime"
	"sync"
	"sync/atomic"

	"github.com/p11escrow/p11escrow/token"
)

// batchWorkers is how many files one call works on at once. Each worker has its own token
// session. There are more workers than cores because a small file spends as long waiting for
// fsync as it does on the token, and parallel fsyncs share the file system's journal commits.
func batchWorkers(jobs int) int { return min(jobs, 4*runtime.GOMAXPROCS(0)) }

// forEachJob runs f on jobs 0..n-1 on up to batchWorkers(n) goroutines, each with its own
// session on the session's token; all share the one login. It returns the error of the first
// failing job in job order. After a failure no new job starts; jobs already running finish,
// and each of them either commits its outputs whole or leaves nothing behind.
func (s *session) forEachJob(n int, f func(t *token.Token, i int) error) error {
	if n == 1 {
		return f(s.token, 0)
	}
	if _, err := s.token.Capabilities(); err != nil { // probed once, shared by every session
		return err
	}
	sessions := s.token.Sessions(batchWorkers(n) - 1)
	defer closeAll(sessions)
	errs := make([]error, n)
	var next atomic.Int64
	var failed atomic.Bool
	var wg sync.WaitGroup
	for _, t := range append([]*token.Token{s.token}, sessions...) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := int(next.Add(1) - 1); i < n && !failed.Load(); i = int(next.Add(1) - 1) {
				if errs[i] = f(t, i); errs[i] != nil {
					failed.Store(true)
				}
			}
		}()
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

func closeAll(ts []*token.Token) {
	for _, t := range ts {
		t.Close()
	}
}
