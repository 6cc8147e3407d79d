package routing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
)

// LiveStream is a channel a creator publishes to with its stream key.
type LiveStream struct {
	ID        string
	Name      string
	StreamKey string
	CreatedAt time.Time
	// PlaybackPolicy is PlaybackPublic or PlaybackSigned.
	PlaybackPolicy string
	// Ladder is the stream's own ABR ladder ("720p:3000k,360p:700k"); empty
	// means the transcoding node's ladder.
	Ladder string
	// SourceURL, when set, is an rtsp:// URL the origin pulls the stream
	// from (a camera) instead of waiting for a publisher.
	SourceURL string
}

// PlaybackSigned is the playback policy of a stream or video that plays
// only with a playback token (see package playback).
const PlaybackSigned = "signed"

// ValidPlaybackPolicy tells whether p is a playback policy ("" is not).
func ValidPlaybackPolicy(p string) bool { return p == PlaybackPublic || p == PlaybackSigned }

// LiveStreamSpec is what a new live stream is created with.
type LiveStreamSpec struct {
	Name           string
	Ladder         string // empty: the node's ladder
	PlaybackPolicy string // empty: PlaybackPublic
	SourceURL      string // empty: published to, not pulled
}

// LiveStreamUpdate changes the fields that are not nil.
type LiveStreamUpdate struct {
	Name           *string
	Ladder         *string // a pointer to "" returns the stream to the node's ladder
	PlaybackPolicy *string // PlaybackPublic or PlaybackSigned
	SourceURL      *string // a pointer to "" stops pulling
}

// errPlaybackPolicy reports a playback policy the store does not know.
func errPlaybackPolicy(p string) error {
	return fmt.Errorf("routing: unknown playback policy %q (want %q or %q)", p, PlaybackPublic, PlaybackSigned)
}

const (
	liveStreamPrefix = "shoal:livestream:"
	liveStreamsIndex = "shoal:livestreams"
	streamKeyPrefix  = "shoal:streamkey:"

	fieldName           = "name"
	fieldStreamKey      = "stream_key"
	fieldCreatedAt      = "created_at"
	fieldPlaybackPolicy = "playback_policy"
	fieldLadder         = "ladder"
	fieldSourceURL      = "source_url"
)

func liveStreamKey(id string) string { return liveStreamPrefix + id }

func streamKeyIndexKey(streamKey string) string { return streamKeyPrefix + ids.Hash(streamKey) }

// CreateLiveStream creates a live stream with a fresh id and stream key.
func (s *Store) CreateLiveStream(ctx context.Context, spec LiveStreamSpec) (LiveStream, error) {
	ls := LiveStream{
		ID:             ids.New(),
		Name:           spec.Name,
		Ladder:         spec.Ladder,
		StreamKey:      ids.NewSecret("sk"),
		CreatedAt:      now(),
		PlaybackPolicy: spec.PlaybackPolicy,
		SourceURL:      spec.SourceURL,
	}
	if ls.PlaybackPolicy == "" {
		ls.PlaybackPolicy = PlaybackPublic
	}
	if !ValidPlaybackPolicy(ls.PlaybackPolicy) {
		return LiveStream{}, errPlaybackPolicy(ls.PlaybackPolicy)
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, liveStreamKey(ls.ID),
			fieldName, ls.Name,
			fieldStreamKey, ls.StreamKey,
			fieldCreatedAt, formatTime(ls.CreatedAt),
			fieldPlaybackPolicy, ls.PlaybackPolicy,
			fieldLadder, ls.Ladder,
			fieldSourceURL, ls.SourceURL,
		)
		p.Set(ctx, streamKeyIndexKey(ls.StreamKey), ls.ID, 0)
		p.ZAdd(ctx, liveStreamsIndex, redis.Z{Score: float64(ls.CreatedAt.UnixMilli()), Member: ls.ID})
		return nil
	})
	if err != nil {
		return LiveStream{}, wrapErr("create live stream", err)
	}
	return ls, nil
}

// GetLiveStream returns the live stream id, or ErrNotFound.
func (s *Store) GetLiveStream(ctx context.Context, id string) (LiveStream, error) {
	fields, err := s.rdb.HGetAll(ctx, liveStreamKey(id)).Result()
	if err != nil {
		return LiveStream{}, wrapErr("get live stream", err)
	}
	return decodeLiveStream(id, fields)
}

// ListLiveStreams returns every live stream, newest first.
func (s *Store) ListLiveStreams(ctx context.Context) ([]LiveStream, error) {
	idList, err := s.rdb.ZRevRange(ctx, liveStreamsIndex, 0, -1).Result()
	if err != nil {
		return nil, wrapErr("list live streams", err)
	}
	out, _, err := records(ctx, s, "list live streams", liveStreamPrefix, idList, decodeLiveStream)
	if err != nil {
		return nil, err
	}
	// The zset score has millisecond precision; order exactly.
	slices.SortStableFunc(out, func(a, b LiveStream) int {
		if c := b.CreatedAt.Compare(a.CreatedAt); c != 0 {
			return c
		}
		return cmp.Compare(b.ID, a.ID)
	})
	return out, nil
}

// UpdateLiveStream changes the live stream id and returns it, or ErrNotFound.
func (s *Store) UpdateLiveStream(ctx context.Context, id string, u LiveStreamUpdate) (LiveStream, error) {
	const op = "update live stream"
	if u.PlaybackPolicy != nil && !ValidPlaybackPolicy(*u.PlaybackPolicy) {
		return LiveStream{}, errPlaybackPolicy(*u.PlaybackPolicy)
	}
	key := liveStreamKey(id)
	var ls LiveStream
	err := s.watchTx(ctx, op, func(tx *redis.Tx) error {
		cur, err := s.getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		var set []any
		if u.Name != nil {
			cur.Name = *u.Name
			set = append(set, fieldName, cur.Name)
		}
		if u.Ladder != nil {
			cur.Ladder = *u.Ladder
			set = append(set, fieldLadder, cur.Ladder)
		}
		policyChanged := false
		if u.SourceURL != nil {
			cur.SourceURL = *u.SourceURL
			set = append(set, fieldSourceURL, cur.SourceURL)
		}
		if u.PlaybackPolicy != nil {
			policyChanged = cur.PlaybackPolicy != *u.PlaybackPolicy
			cur.PlaybackPolicy = *u.PlaybackPolicy
			set = append(set, fieldPlaybackPolicy, cur.PlaybackPolicy)
		}
		if len(set) > 0 {
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, set...)
				if policyChanged {
					addInvalidation(ctx, p, id, false, cur.PlaybackPolicy == PlaybackSigned)
				}
				return nil
			})
			if err != nil {
				return err
			}
		}
		ls = cur
		return nil
	}, key)
	if err != nil {
		return LiveStream{}, txErr(op, err)
	}
	return ls, nil
}

// DeleteLiveStream deletes the live stream id and its stream key, or returns
// ErrNotFound. The stream key stops working at once.
func (s *Store) DeleteLiveStream(ctx context.Context, id string) error {
	const op = "delete live stream"
	key := liveStreamKey(id)
	err := s.watchTx(ctx, op, func(tx *redis.Tx) error {
		cur, err := s.getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key, streamKeyIndexKey(cur.StreamKey), restreamsKey(id))
			p.ZRem(ctx, liveStreamsIndex, id)
			addInvalidation(ctx, p, id, true, false)
			return nil
		})
		return err
	}, key)
	if err != nil {
		return txErr(op, err)
	}
	return nil
}

// ResetStreamKey gives the live stream id a new stream key and returns the
// stream, or ErrNotFound. The old key stops working at once.
func (s *Store) ResetStreamKey(ctx context.Context, id string) (LiveStream, error) {
	const op = "reset stream key"
	key := liveStreamKey(id)
	var ls LiveStream
	err := s.watchTx(ctx, op, func(tx *redis.Tx) error {
		cur, err := s.getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		newKey := ids.NewSecret("sk")
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, fieldStreamKey, newKey)
			p.Del(ctx, streamKeyIndexKey(cur.StreamKey))
			p.Set(ctx, streamKeyIndexKey(newKey), id, 0)
			return nil
		})
		if err != nil {
			return err
		}
		cur.StreamKey = newKey
		ls = cur
		return nil
	}, key)
	if err != nil {
		return LiveStream{}, txErr(op, err)
	}
	return ls, nil
}

// LiveStreamIDByKey returns the id of the live stream whose stream key is
// streamKey, or ErrNotFound.
func (s *Store) LiveStreamIDByKey(ctx context.Context, streamKey string) (string, error) {
	id, err := s.rdb.Get(ctx, streamKeyIndexKey(streamKey)).Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	if err != nil {
		return "", wrapErr("look up stream key", err)
	}
	return id, nil
}

// getForUpdate reads the live stream id inside a WATCH transaction.
func (s *Store) getForUpdate(ctx context.Context, tx *redis.Tx, id string) (LiveStream, error) {
	fields, err := tx.HGetAll(ctx, liveStreamKey(id)).Result()
	if err != nil {
		return LiveStream{}, err
	}
	return decodeLiveStream(id, fields)
}

// txErr wraps an error from watchTx: ErrNotFound and the package's own
// errors pass through, Redis errors are classified by wrapErr.
func txErr(op string, err error) error {
	var de *decodeError
	switch {
	case errors.Is(err, ErrNotFound), errors.As(err, &de):
		return err
	case errors.Is(err, errTxConflict):
		return err
	}
	return wrapErr(op, err)
}

// decodeError reports a record in Redis that Shoal cannot read.
type decodeError struct {
	key string
	err error
}

func (e *decodeError) Error() string {
	return fmt.Sprintf("routing: corrupt record %s: %v", e.key, e.err)
}

func (e *decodeError) Unwrap() error { return e.err }

func decodeLiveStream(id string, f map[string]string) (LiveStream, error) {
	if len(f) == 0 {
		return LiveStream{}, ErrNotFound
	}
	created, err := parseTime(f[fieldCreatedAt])
	if err != nil {
		return LiveStream{}, &decodeError{key: liveStreamKey(id), err: err}
	}
	ls := LiveStream{
		ID:             id,
		Name:           f[fieldName],
		StreamKey:      f[fieldStreamKey],
		CreatedAt:      created,
		PlaybackPolicy: f[fieldPlaybackPolicy],
		Ladder:         f[fieldLadder],
		SourceURL:      f[fieldSourceURL],
	}
	if ls.StreamKey == "" {
		return LiveStream{}, &decodeError{key: liveStreamKey(id), err: errors.New("no stream key")}
	}
	if ls.PlaybackPolicy == "" {
		ls.PlaybackPolicy = PlaybackPublic
	}
	return ls, nil
}
