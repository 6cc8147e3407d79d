package routing

import (
	"context"
	"strings"
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

// MaxInvalidations is about how many invalidations are kept (an edge
// whose cursor fell behind them is told it missed some: see
// InvalidationsAfter).
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
// nothing new). See InvalidationsAfter for what a reader missed.
func (s *Store) Invalidations(ctx context.Context, cursor string, max int64) ([]Invalidation, string, error) {
	p, err := s.InvalidationsAfter(ctx, cursor, max)
	return p.Entries, p.Cursor, err
}

// InvalidationPage is one read of the feed.
type InvalidationPage struct {
	Entries []Invalidation
	// Cursor is where to read from next time.
	Cursor string
	// More: entries after Cursor wait for the next read.
	More bool
	// Reset: entries the reader has not seen are lost (the feed was
	// trimmed past its cursor, or lost its history: Redis emptied or
	// restored from an older copy). It must stop trusting whatever it
	// cached before, then go on from Cursor.
	Reset bool
}

// InvalidationsAfter returns up to max entries after cursor and tells
// whether the reader missed some. A cursor the feed no longer holds (every
// cursor handed out is an entry's id, and the latest entry is never
// trimmed) means a gap; so does an empty cursor (from the start) when
// entries were ever trimmed. The first case may report a gap where there
// is none (a cursor that was the very last entry trimmed): the reader then
// drops what it could have kept, never the reverse.
func (s *Store) InvalidationsAfter(ctx context.Context, cursor string, max int64) (InvalidationPage, error) {
	page := InvalidationPage{Cursor: cursor}
	start := "-"
	if cursor != "" {
		start = cursor // inclusive: the cursor's own entry tells it is still there
	}
	msgs, err := s.rdb.XRangeN(ctx, s.k(invalidationsKey), start, "+", max+2).Result()
	if err != nil {
		return page, wrapErr("invalidations", err)
	}
	if cursor != "" {
		if len(msgs) > 0 && msgs[0].ID == cursor {
			msgs = msgs[1:]
		} else {
			page.Reset = true
			if len(msgs) == 0 {
				// Past the feed's end (Redis restored from an older
				// copy) or an empty feed: go on from its last entry.
				last, err := s.rdb.XRevRangeN(ctx, s.k(invalidationsKey), "+", "-", 1).Result()
				if err != nil {
					return page, wrapErr("invalidations", err)
				}
				page.Cursor = ""
				if len(last) == 1 {
					page.Cursor = last[0].ID
				}
			}
		}
	} else {
		info, err := s.rdb.XInfoStream(ctx, s.k(invalidationsKey)).Result()
		if err != nil && !isNoSuchKey(err) {
			return page, wrapErr("invalidations", err)
		}
		// Redis 7 counts the entries ever added; before, the gap of a
		// reader starting from the beginning is not seen.
		page.Reset = err == nil && info.EntriesAdded > info.Length
	}
	if int64(len(msgs)) > max {
		msgs, page.More = msgs[:max], true
	}
	page.Entries = make([]Invalidation, 0, len(msgs))
	for _, m := range msgs {
		id, _ := m.Values["id"].(string)
		del, _ := m.Values["deleted"].(string)
		sig, _ := m.Values["signed"].(string)
		page.Entries = append(page.Entries, Invalidation{Cursor: m.ID, ID: id, Deleted: del == "1", Signed: sig == "1"})
		page.Cursor = m.ID
	}
	return page, nil
}

// isNoSuchKey reports whether err is Redis's answer to XINFO STREAM of a
// stream that does not exist.
func isNoSuchKey(err error) bool {
	return err != nil && strings.Contains(err.Error(), "no such key")
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
