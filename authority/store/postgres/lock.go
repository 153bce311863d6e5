package postgres

import (
	"context"
	"crypto/sha256"
	"database/sql/driver"
	"encoding/binary"
	"fmt"

	"github.com/p11escrow/p11escrow/authority/store"
)

// LockRequest takes a session-level advisory lock, keyed by the request ID, on a connection kept
// for the purpose: PostgreSQL releases it when unlock closes that connection, or when the
// connection ends with this process, on whichever host it runs.
func (s *pgStore) LockRequest(ctx context.Context, id string) (func(), error) {
	sum := sha256.Sum256([]byte("p11escrow request " + id))
	key := int64(binary.BigEndian.Uint64(sum[:8]))
	conn, err := s.db.Conn(ctx)
	if err != nil {
		return nil, err
	}
	var got bool
	if err := conn.QueryRowContext(ctx, `SELECT pg_try_advisory_lock($1)`, key).Scan(&got); err != nil {
		conn.Close()
		return nil, fmt.Errorf("locking request %s: %w", id, err)
	}
	if !got {
		conn.Close()
		return nil, fmt.Errorf("request %s: %w", id, store.ErrInUse)
	}
	return func() {
		// Unlocked before the connection goes back to the pool, which would keep the lock; if
		// that fails, the connection is thrown away, which ends the lock.
		if _, err := conn.ExecContext(context.Background(), `SELECT pg_advisory_unlock($1)`, key); err != nil {
			conn.Raw(func(any) error { return driver.ErrBadConn })
		}
		conn.Close()
	}, nil
}
