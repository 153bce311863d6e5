package authority

import (
	"context"
	"errors"
	"fmt"

	"github.com/p11escrow/p11escrow/escrow"
)

// FindRecord returns the held record of file fileID whose key commitment is commitment (as
// escrow.CommitmentText writes it). An empty commitment names the only record held under
// fileID. A file ID is in every file's clear header, so anyone can copy it into a file of their
// own and have that held too: when the ID is held more than once, FindRecord refuses and says
// how to name the record meant.
func (a *Authority) FindRecord(ctx context.Context, fileID, commitment string) (*HeldRecord, error) {
	if _, err := escrow.ParseFileID(fileID); err != nil {
		return nil, err
	}
	if commitment != "" {
		r, err := a.st.Record(ctx, fileID, commitment)
		if errors.Is(err, ErrNotFound) {
			return nil, fmt.Errorf("the authority holds no record for file %s with key commitment %s", fileID, commitment)
		}
		return r, err
	}
	recs, err := a.st.RecordsByID(ctx, fileID)
	switch {
	case err != nil:
		return nil, err
	case len(recs) == 0:
		return nil, fmt.Errorf("the authority holds no record for file %s", fileID)
	case len(recs) > 1:
		return nil, ambiguous(recs)
	}
	return recs[0], nil
}

// ambiguous is the error for a file ID held more than once.
func ambiguous(recs []*HeldRecord) error {
	var cs []string
	for _, r := range recs {
		cs = append(cs, r.Commitment)
	}
	return &AmbiguousError{FileID: recs[0].FileID, Commitments: cs}
}
