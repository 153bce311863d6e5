package sqlite

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"os"

	"github.com/p11escrow/p11escrow/authority/store"
	"golang.org/x/sys/unix"
)

// LockRequest locks one byte of the file beside the database, DB-locks, at an offset derived
// from the request ID. The lock is an open file description's (setLock), so that it conflicts
// with every other opening of the file, in this process or another, and it ends when the file
// is closed: by unlock, or by the kernel when the process dies. All processes that use a SQLite
// store run on its host, so a lock there is enough.
func (s *sqliteStore) LockRequest(ctx context.Context, id string) (func(), error) {
	f, err := os.OpenFile(s.path+"-locks", os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("the authority's lock file: %w", unwrapPathErr(err))
	}
	sum := sha256.Sum256([]byte("p11escrow request " + id))
	lk := unix.Flock_t{Type: unix.F_WRLCK, Whence: 0, Len: 1,
		Start: int64(binary.BigEndian.Uint64(sum[:8]) >> 2)} // a non-negative offset
	if err := unix.FcntlFlock(f.Fd(), setLock, &lk); err != nil {
		f.Close()
		if errors.Is(err, unix.EAGAIN) || errors.Is(err, unix.EACCES) {
			return nil, fmt.Errorf("request %s: %w", id, store.ErrInUse)
		}
		return nil, fmt.Errorf("locking request %s: %w", id, err)
	}
	return func() { f.Close() }, nil
}
