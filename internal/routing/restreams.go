package routing

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
)

// Restream is a target a live stream is pushed to while it is live (another
// platform's RTMP ingest). URL holds that platform's stream key: it is a
// secret, shown redacted by the API.
type Restream struct {
	ID        string    `json:"id"`
	Name      string    `json:"name"`
	URL       string    `json:"url"`
	Rendition string    `json:"rendition,omitempty"` // "" or "source": the source as published
	CreatedAt time.Time `json:"created_at"`
}

// ErrTooMany is returned when a live stream already has as many restream
// targets as allowed.
var ErrTooMany = errors.New("too many restream targets")

const restreamsPrefix = "restreams:" // hash: target id -> Restream JSON

func (s *Store) restreamsKey(id string) string { return s.k(restreamsPrefix) + id }

// AddRestream adds a target to live stream id, which may have at most max;
// it returns ErrNotFound for an unknown stream and ErrTooMany past max.
func (s *Store) AddRestream(ctx context.Context, id string, r Restream, max int) (Restream, error) {
	const op = "add restream"
	r.ID, r.CreatedAt = ids.New(), now().UTC()
	body, err := json.Marshal(r)
	if err != nil {
		return Restream{}, fmt.Errorf("routing: %s: %w", op, err)
	}
	key, lsKey := s.restreamsKey(id), s.liveStreamKey(id)
	err = s.watchTx(ctx, op, func(tx *redis.Tx) error {
		n, err := tx.Exists(ctx, lsKey).Result()
		if err != nil {
			return err
		}
		if n == 0 {
			return ErrNotFound
		}
		count, err := tx.HLen(ctx, key).Result()
		if err != nil {
			return err
		}
		if int(count) >= max {
			return ErrTooMany
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, r.ID, body)
			return nil
		})
		return err
	}, key, lsKey)
	if errors.Is(err, ErrTooMany) {
		return Restream{}, err
	}
	if err != nil {
		return Restream{}, txErr(op, err)
	}
	return r, nil
}

// ListRestreams returns live stream id's targets, oldest first.
func (s *Store) ListRestreams(ctx context.Context, id string) ([]Restream, error) {
	m, err := s.rdb.HGetAll(ctx, s.restreamsKey(id)).Result()
	if err != nil {
		return nil, wrapErr("list restreams", err)
	}
	out := make([]Restream, 0, len(m))
	for field, v := range m {
		var r Restream
		if err := json.Unmarshal([]byte(v), &r); err != nil {
			return nil, &decodeError{key: s.restreamsKey(id) + " " + field, err: err}
		}
		out = append(out, r)
	}
	slices.SortFunc(out, func(a, b Restream) int {
		if c := a.CreatedAt.Compare(b.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(a.ID, b.ID)
	})
	return out, nil
}

// DeleteRestream removes target rid of live stream id, or returns
// ErrNotFound.
func (s *Store) DeleteRestream(ctx context.Context, id, rid string) error {
	n, err := s.rdb.HDel(ctx, s.restreamsKey(id), rid).Result()
	if err != nil {
		return wrapErr("delete restream", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}
