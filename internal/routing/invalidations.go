package routing

import (
	"context"
	"time"

	"github.com/redis/go-redis/v9"
)

// Invalidations tell edges to stop serving what they cached of an id:
//
//	shoal:invalidations  stream  id, deleted (0|1), signed (0|1); the latest MaxInvalidations kept
//
// The origin appends one in the same transaction that deletes a live
// stream or video, or changes a live stream's playback policy, and one
// when a new broadcast of a live stream starts; edges get the entries
// after their cursor in every heartbeat answer.
const invalidationsKey = "invalidations"

// MaxInvalidations is how many invalidations are kept (an edge that was
// away for longer than that many changes gets them all again on joining).
const MaxInvalidations = 5000

// Invalidation is one entry of the feed.
type Invalidation struct {
	Cursor  string // the entry's id in the stream
	ID      string // live stream or video
	Deleted bool
	Signed  bool // the playback policy now (when not deleted)
}

func (s *Store) addInvalidation(ctx context.Context, p redis.Pipeliner, id string, deleted, signed bool) {
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	p.XAdd(ctx, &redis.XAddArgs{Stream: s.k(invalidationsKey), MaxLen: MaxInvalidations, Approx: true,
		Values: []any{"id", id, "deleted", b(deleted), "signed", b(signed)}})
	if deleted {
		// A tombstone: the id's files, while they are being removed (or
		// any left behind), are never served again.
		p.Set(ctx, s.deletedKey(id), "1", DeletedTTL)
	}
}

// DeletedTTL is how long a deleted id's tombstone lasts.
const DeletedTTL = 30 * 24 * time.Hour

func (s *Store) deletedKey(id string) string { return s.k("deleted:" + id) }

// WasDeleted reports whether id was a live stream or video that was deleted
// (in the last DeletedTTL).
func (s *Store) WasDeleted(ctx context.Context, id string) (bool, error) {
	n, err := s.rdb.Exists(ctx, s.deletedKey(id)).Result()
	if err != nil {
		return false, wrapErr("deleted check", err)
	}
	return n == 1, nil
}

// Invalidations returns up to max entries after cursor ("" for every entry
// kept) and the cursor to ask from next time (cursor itself when there is
// nothing new).
func (s *Store) Invalidations(ctx context.Context, cursor string, max int64) ([]Invalidation, string, error) {
	start := "-"
	if cursor != "" {
		start = "(" + cursor
	}
	msgs, err := s.rdb.XRangeN(ctx, s.k(invalidationsKey), start, "+", max).Result()
	if err != nil {
		return nil, cursor, wrapErr("invalidations", err)
	}
	out := make([]Invalidation, 0, len(msgs))
	for _, m := range msgs {
		id, _ := m.Values["id"].(string)
		del, _ := m.Values["deleted"].(string)
		sig, _ := m.Values["signed"].(string)
		out = append(out, Invalidation{Cursor: m.ID, ID: id, Deleted: del == "1", Signed: sig == "1"})
		cursor = m.ID
	}
	return out, cursor, nil
}

// InvalidateCached appends an invalidation of live stream id that keeps its
// playback policy: a new broadcast replaced its playlists, and edges must
// not go on serving the last one's (an ended playlist is cached for a
// minute). The policy is read in the transaction that appends the entry
// (WATCH on the record), never taken from the caller: a PATCH of the
// policy just before lands either before (its value is read) or after
// (its own entry follows), so the feed's last word about the stream is
// always its policy now. ErrNotFound for a stream that does not exist
// (deleted: its deletion is in the feed already).
func (s *Store) InvalidateCached(ctx context.Context, id string) error {
	const op = "invalidate"
	err := s.watchTx(ctx, op, func(tx *redis.Tx) error {
		cur, err := s.getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			s.addInvalidation(ctx, p, id, false, cur.PlaybackPolicy == PlaybackSigned)
			return nil
		})
		return err
	}, s.liveStreamKey(id))
	if err != nil {
		return txErr(op, err)
	}
	return nil
}
