//go:build unix && !linux

package sqlite

import "golang.org/x/sys/unix"

// setLock is a process's lock where open file description locks are missing: it conflicts
// with other processes only, which is what a recovery attempt (one per process) needs.
const setLock = unix.F_SETLK
