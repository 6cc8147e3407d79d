package routing

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
)

// LiveStream is a channel a creator publishes to with its stream key.
type LiveStream struct {
	ID   string
	Name string
	// StreamKey is the plain stream key, set only in what CreateLiveStream
	// and ResetStreamKey return: Redis keeps only its hash, so it is shown
	// once, when it is made.
	StreamKey string
	// StreamKeyHash is ids.Hash of the stream key.
	StreamKeyHash string
	CreatedAt     time.Time
	// PlaybackPolicy is PlaybackPublic or PlaybackSigned.
	PlaybackPolicy string
	// Ladder is the stream's own ABR ladder ("720p:3000k,360p:700k"); empty
	// means the transcoding node's ladder.
	Ladder string
	// SourceURL, when set, is an rtsp:// URL the origin pulls the stream
	// from (a camera) instead of waiting for a publisher.
	SourceURL string
	// P2POff turns peer-assisted delivery off for the stream: the
	// trackers refuse its swarms and players fetch over HTTP only.
	P2POff bool
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
	P2POff         bool   // peer-assisted delivery turned off
}

// LiveStreamUpdate changes the fields that are not nil.
type LiveStreamUpdate struct {
	Name           *string
	Ladder         *string // a pointer to "" returns the stream to the node's ladder
	PlaybackPolicy *string // PlaybackPublic or PlaybackSigned
	SourceURL      *string // a pointer to "" stops pulling
	P2P            *bool   // false turns peer-assisted delivery off, true on
}

// errPlaybackPolicy reports a playback policy the store does not know.
func errPlaybackPolicy(p string) error {
	return fmt.Errorf("routing: unknown playback policy %q (want %q or %q)", p, PlaybackPublic, PlaybackSigned)
}

const (
	liveStreamPrefix = "livestream:"
	liveStreamsIndex = "livestreams"
	streamKeyPrefix  = "streamkey:"

	fieldName          = "name"
	fieldStreamKeyHash = "stream_key_hash"
	// fieldLegacyStreamKey is where records made before stream keys were
	// stored hashed keep the plain key; MigrateStreamKeys replaces it.
	fieldLegacyStreamKey = "stream_key"
	fieldCreatedAt       = "created_at"
	fieldPlaybackPolicy  = "playback_policy"
	fieldLadder          = "ladder"
	fieldSourceURL       = "source_url"
	// fieldP2P is "off" when peer-assisted delivery is turned off (live
	// streams and videos); absent or anything else means on.
	fieldP2P = "p2p"
	p2pOff   = "off"
)

// p2pValue is the fieldP2P value of a P2POff flag.
func p2pValue(off bool) string {
	if off {
		return p2pOff
	}
	return "on"
}

func (s *Store) liveStreamKey(id string) string { return s.k(liveStreamPrefix) + id }

// s.streamKeyIndexKey is the index entry of the stream key whose hash is h.
// (The index was always keyed by the hash, so records from before keys
// were stored hashed have theirs already.)
func (s *Store) streamKeyIndexKey(h string) string { return s.k(streamKeyPrefix) + h }

// CreateLiveStream creates a live stream with a fresh id and stream key.
func (s *Store) CreateLiveStream(ctx context.Context, spec LiveStreamSpec) (LiveStream, error) {
	key := ids.NewSecret("sk")
	ls := LiveStream{
		ID:             ids.New(),
		Name:           spec.Name,
		Ladder:         spec.Ladder,
		StreamKey:      key,
		StreamKeyHash:  ids.Hash(key),
		CreatedAt:      now(),
		PlaybackPolicy: spec.PlaybackPolicy,
		SourceURL:      spec.SourceURL,
		P2POff:         spec.P2POff,
	}
	if ls.PlaybackPolicy == "" {
		ls.PlaybackPolicy = PlaybackPublic
	}
	if !ValidPlaybackPolicy(ls.PlaybackPolicy) {
		return LiveStream{}, errPlaybackPolicy(ls.PlaybackPolicy)
	}
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.liveStreamKey(ls.ID),
			fieldName, ls.Name,
			fieldStreamKeyHash, ls.StreamKeyHash,
			fieldCreatedAt, formatTime(ls.CreatedAt),
			fieldPlaybackPolicy, ls.PlaybackPolicy,
			fieldLadder, ls.Ladder,
			fieldSourceURL, ls.SourceURL,
			fieldP2P, p2pValue(ls.P2POff),
		)
		p.Set(ctx, s.streamKeyIndexKey(ls.StreamKeyHash), ls.ID, 0)
		p.ZAdd(ctx, s.k(liveStreamsIndex), redis.Z{Score: float64(ls.CreatedAt.UnixMilli()), Member: ls.ID})
		return nil
	})
	if err != nil {
		return LiveStream{}, wrapErr("create live stream", err)
	}
	return ls, nil
}

// GetLiveStream returns the live stream id, or ErrNotFound.
func (s *Store) GetLiveStream(ctx context.Context, id string) (LiveStream, error) {
	fields, err := s.rdb.HGetAll(ctx, s.liveStreamKey(id)).Result()
	if err != nil {
		return LiveStream{}, wrapErr("get live stream", err)
	}
	return s.decodeLiveStream(id, fields)
}

// ListLiveStreams returns every live stream, newest first.
func (s *Store) ListLiveStreams(ctx context.Context) ([]LiveStream, error) {
	idList, err := s.rdb.ZRevRange(ctx, s.k(liveStreamsIndex), 0, -1).Result()
	if err != nil {
		return nil, wrapErr("list live streams", err)
	}
	out, _, err := records(ctx, s, "list live streams", s.k(liveStreamPrefix), idList, s.decodeLiveStream)
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
	key := s.liveStreamKey(id)
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
		if u.P2P != nil {
			// Edges keep the flag with what they cached of the stream:
			// they drop it, as for a policy change.
			policyChanged = policyChanged || cur.P2POff == *u.P2P
			cur.P2POff = !*u.P2P
			set = append(set, fieldP2P, p2pValue(cur.P2POff))
		}
		if u.PlaybackPolicy != nil {
			policyChanged = policyChanged || cur.PlaybackPolicy != *u.PlaybackPolicy
			cur.PlaybackPolicy = *u.PlaybackPolicy
			set = append(set, fieldPlaybackPolicy, cur.PlaybackPolicy)
		}
		if len(set) > 0 {
			_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
				p.HSet(ctx, key, set...)
				if policyChanged {
					s.addInvalidation(ctx, p, id, false, cur.PlaybackPolicy == PlaybackSigned)
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
	key := s.liveStreamKey(id)
	err := s.watchTx(ctx, op, func(tx *redis.Tx) error {
		cur, err := s.getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key, s.streamKeyIndexKey(cur.StreamKeyHash), s.restreamsKey(id), s.p2pKey(id))
			p.ZRem(ctx, s.k(liveStreamsIndex), id)
			s.addInvalidation(ctx, p, id, true, false)
			s.addKeyRevocation(ctx, p, id)
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
// stream with it (the only time the new key is seen in plain text), or
// ErrNotFound. The old key stops working at once, and every origin is told
// to forget it and disconnect its publisher (see KeyRevocations).
func (s *Store) ResetStreamKey(ctx context.Context, id string) (LiveStream, error) {
	const op = "reset stream key"
	key := s.liveStreamKey(id)
	var ls LiveStream
	err := s.watchTx(ctx, op, func(tx *redis.Tx) error {
		cur, err := s.getForUpdate(ctx, tx, id)
		if err != nil {
			return err
		}
		newKey := ids.NewSecret("sk")
		newHash := ids.Hash(newKey)
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.HSet(ctx, key, fieldStreamKeyHash, newHash)
			p.HDel(ctx, key, fieldLegacyStreamKey)
			p.Del(ctx, s.streamKeyIndexKey(cur.StreamKeyHash))
			p.Set(ctx, s.streamKeyIndexKey(newHash), id, 0)
			s.addKeyRevocation(ctx, p, id)
			return nil
		})
		if err != nil {
			return err
		}
		cur.StreamKey, cur.StreamKeyHash = newKey, newHash
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
	id, err := s.rdb.Get(ctx, s.streamKeyIndexKey(ids.Hash(streamKey))).Result()
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
	fields, err := tx.HGetAll(ctx, s.liveStreamKey(id)).Result()
	if err != nil {
		return LiveStream{}, err
	}
	return s.decodeLiveStream(id, fields)
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

func (s *Store) decodeLiveStream(id string, f map[string]string) (LiveStream, error) {
	if len(f) == 0 {
		return LiveStream{}, ErrNotFound
	}
	created, err := parseTime(f[fieldCreatedAt])
	if err != nil {
		return LiveStream{}, &decodeError{key: s.liveStreamKey(id), err: err}
	}
	ls := LiveStream{
		ID:             id,
		Name:           f[fieldName],
		StreamKeyHash:  f[fieldStreamKeyHash],
		CreatedAt:      created,
		PlaybackPolicy: f[fieldPlaybackPolicy],
		Ladder:         f[fieldLadder],
		SourceURL:      f[fieldSourceURL],
		P2POff:         f[fieldP2P] == p2pOff,
	}
	if ls.StreamKeyHash == "" && f[fieldLegacyStreamKey] != "" {
		// Not migrated yet: the plain key is not shown, only hashed.
		ls.StreamKeyHash = ids.Hash(f[fieldLegacyStreamKey])
	}
	if ls.StreamKeyHash == "" {
		return LiveStream{}, &decodeError{key: s.liveStreamKey(id), err: errors.New("no stream key")}
	}
	if ls.PlaybackPolicy == "" {
		ls.PlaybackPolicy = PlaybackPublic
	}
	return ls, nil
}

// MigrateStreamKeys replaces the plain stream key of every live stream
// record written before keys were stored hashed (field stream_key) by its
// hash, and makes sure the key's index entry is there, so that the key
// goes on working and Redis no longer holds it. It walks the records with
// SCAN (batch at a time), is idempotent and safe to run from several
// origins at once, and returns how many records it changed.
func (s *Store) MigrateStreamKeys(ctx context.Context, batch int64) (int, error) {
	const op = "migrate stream keys"
	migrated := 0
	node, err := s.scanNode(ctx)
	if err != nil {
		return 0, wrapErr(op, err)
	}
	var cursor uint64
	for {
		keys, next, err := node.ScanType(ctx, cursor, s.k(liveStreamPrefix)+"*", batch, "hash").Result()
		if err != nil {
			return migrated, wrapErr(op, err)
		}
		for _, key := range keys {
			id := strings.TrimPrefix(key, s.k(liveStreamPrefix))
			if !ids.Valid(id) {
				continue
			}
			done, err := s.migrateStreamKey(ctx, id)
			if err != nil {
				return migrated, err
			}
			if done {
				migrated++
			}
		}
		if next == 0 {
			return migrated, nil
		}
		cursor = next
	}
}

// migrateStreamKey hashes live stream id's plain stream key, if it has one.
func (s *Store) migrateStreamKey(ctx context.Context, id string) (bool, error) {
	const op = "migrate stream key"
	key := s.liveStreamKey(id)
	done := false
	err := s.watchTx(ctx, op, func(tx *redis.Tx) error {
		done = false
		plain, err := tx.HGet(ctx, key, fieldLegacyStreamKey).Result()
		if errors.Is(err, redis.Nil) {
			return nil
		}
		if err != nil {
			return err
		}
		// A record that has both was reset (or migrated) since: its
		// hash is the one that counts.
		h, err := tx.HGet(ctx, key, fieldStreamKeyHash).Result()
		if err != nil && !errors.Is(err, redis.Nil) {
			return err
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			if h == "" {
				h = ids.Hash(plain)
				p.HSet(ctx, key, fieldStreamKeyHash, h)
				p.SetNX(ctx, s.streamKeyIndexKey(h), id, 0)
			}
			p.HDel(ctx, key, fieldLegacyStreamKey)
			return nil
		})
		done = err == nil
		return err
	}, key)
	if err != nil {
		return false, txErr(op, err)
	}
	return done, nil
}

// RestoreLiveStream writes back the record of live stream ls, as this
// origin knew it when the broadcast started, when Redis lost it (restarted
// empty) while the stream is live: its publisher can then reconnect with
// the same key, and the API and the playback policy know it again. It
// writes nothing and reports false when the record exists or the stream
// was deleted.
func (s *Store) RestoreLiveStream(ctx context.Context, ls LiveStream) (bool, error) {
	if !ids.Valid(ls.ID) || ls.StreamKeyHash == "" || !ValidPlaybackPolicy(ls.PlaybackPolicy) {
		return false, fmt.Errorf("restore live stream %q: incomplete record", ls.ID)
	}
	n, err := restoreLiveStreamScript.Run(ctx, s.rdb,
		[]string{s.liveStreamKey(ls.ID), s.deletedKey(ls.ID), s.streamKeyIndexKey(ls.StreamKeyHash), s.k(liveStreamsIndex)},
		ls.ID, ls.Name, ls.StreamKeyHash, formatTime(ls.CreatedAt), ls.PlaybackPolicy, ls.Ladder, ls.SourceURL,
		ls.CreatedAt.UnixMilli(), p2pValue(ls.P2POff)).Int()
	if err != nil {
		return false, wrapErr("restore live stream", err)
	}
	return n == 1, nil
}

var restoreLiveStreamScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
redis.call('HSET', KEYS[1], '` + fieldName + `', ARGV[2], '` + fieldStreamKeyHash + `', ARGV[3], '` + fieldCreatedAt + `', ARGV[4],
  '` + fieldPlaybackPolicy + `', ARGV[5], '` + fieldLadder + `', ARGV[6], '` + fieldSourceURL + `', ARGV[7],
  '` + fieldP2P + `', ARGV[9])
redis.call('SET', KEYS[3], ARGV[1], 'NX')
redis.call('ZADD', KEYS[4], ARGV[8], ARGV[1])
return 1`)
