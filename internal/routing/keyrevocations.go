package routing

import (
	"context"
	"errors"
	"time"

	"github.com/redis/go-redis/v9"
)

// Key revocations tell every origin that a live stream's stream key was
// reset, or the stream deleted:
//
//	shoal:keyrevocations  stream  id; the latest MaxKeyRevocations kept
//
// The entry is appended in the transaction that replaces (or deletes) the
// key, so an origin that follows the stream (KeyRevocations, blocking)
// hears of it as soon as Redis has made the change: it disconnects the
// stream's publisher and forgets the keys it remembered for the stream, so
// the old key is not accepted from its memory even if Redis goes down right
// after the reset was answered.
const keyRevocationsKey = "keyrevocations"

// MaxKeyRevocations is how many key revocations are kept.
const MaxKeyRevocations = 10000

// KeyRevocation is one entry: live stream ID's key was replaced or deleted.
type KeyRevocation struct {
	Cursor string
	ID     string
}

func (s *Store) addKeyRevocation(ctx context.Context, p redis.Pipeliner, id string) {
	p.XAdd(ctx, &redis.XAddArgs{Stream: s.k(keyRevocationsKey), MaxLen: MaxKeyRevocations, Approx: true,
		Values: []any{"id", id}})
}

// KeyRevocationsCursor is the cursor of the latest key revocation ("0-0"
// when there is none yet): following from it gets every later one.
func (s *Store) KeyRevocationsCursor(ctx context.Context) (string, error) {
	msgs, err := s.rdb.XRevRangeN(ctx, s.k(keyRevocationsKey), "+", "-", 1).Result()
	if err != nil {
		return "", wrapErr("key revocations", err)
	}
	if len(msgs) == 0 {
		return "0-0", nil
	}
	return msgs[0].ID, nil
}

// KeyRevocations waits up to block (not at all when block <= 0) for key
// revocations after cursor and returns them (none when block passed) with
// the cursor to ask from next.
func (s *Store) KeyRevocations(ctx context.Context, cursor string, block time.Duration) ([]KeyRevocation, string, error) {
	if block <= 0 {
		block = -1 // no BLOCK: BLOCK 0 would wait forever
	}
	streams, err := s.rdb.XRead(ctx, &redis.XReadArgs{Streams: []string{s.k(keyRevocationsKey), cursor}, Count: 1000, Block: block}).Result()
	if errors.Is(err, redis.Nil) {
		return nil, cursor, nil
	}
	if err != nil {
		return nil, cursor, wrapErr("key revocations", err)
	}
	var out []KeyRevocation
	for _, st := range streams {
		for _, m := range st.Messages {
			id, _ := m.Values["id"].(string)
			out = append(out, KeyRevocation{Cursor: m.ID, ID: id})
			cursor = m.ID
		}
	}
	return out, cursor, nil
}
