package authority

import (
	"context"
	"errors"

	"github.com/p11escrow/p11escrow/authority/store"
)

// ErrNoBackup says that the store cannot copy itself: its backend's own tools make backups.
var ErrNoBackup = errors.New("this store is backed up with its database's own tools")

// Approvals returns the policy: how many officers must approve a request.
func (a *Authority) Approvals(ctx context.Context) (int, error) { return a.st.Approvals(ctx) }

// Officers lists the registered officers by name.
func (a *Authority) Officers(ctx context.Context) ([]*Officer, error) { return a.st.Officers(ctx) }

// Records lists the held records that f selects, without their record bytes.
func (a *Authority) Records(ctx context.Context, f Filter) ([]*HeldRecord, error) {
	return a.st.Records(ctx, f)
}

// Record returns the record with this file ID and key commitment; ErrNotFound if absent.
func (a *Authority) Record(ctx context.Context, fileID, commitment string) (*HeldRecord, error) {
	return a.st.Record(ctx, fileID, commitment)
}

// Wraps returns a record's wrapped keys, oldest first.
func (a *Authority) Wraps(ctx context.Context, fileID, commitment string) ([]*Wrap, error) {
	return a.st.Wraps(ctx, fileID, commitment)
}

// AuthorityKeys lists every registered authority key, retired ones included.
func (a *Authority) AuthorityKeys(ctx context.Context) ([]*AuthorityKey, error) {
	return a.st.AuthorityKeys(ctx)
}

// Audit returns the whole audit log in order, unchecked (see VerifyAudit).
func (a *Authority) Audit(ctx context.Context) ([]*AuditEntry, error) { return a.st.Audit(ctx) }

// Backup writes a consistent copy of the store to the new file path while others may use it. It
// returns ErrNoBackup for a store whose backend makes its copies with its own tools.
func (a *Authority) Backup(ctx context.Context, path string) error {
	b, ok := a.st.(store.Backuper)
	if !ok {
		return ErrNoBackup
	}
	return b.Backup(ctx, path)
}
