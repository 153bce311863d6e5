package sqlite

import "golang.org/x/sys/unix"

// setLock takes an open file description's lock (Linux 3.15 and later): it conflicts with
// other openings of the file in the same process too, which the conformance suite relies on.
const setLock = unix.F_OFD_SETLK
