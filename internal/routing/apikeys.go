package routing

import (
	"context"
	"errors"
	"slices"
	"sort"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
)

// API key scopes: what an issued key may do. The admin key of the
// configuration has every scope.
const (
	// ScopeAdmin manages API keys, node tokens, nodes and webhooks, and
	// grants every other scope.
	ScopeAdmin = "admin"
	// ScopeStreams manages live streams and their restream targets.
	ScopeStreams = "streams"
	// ScopeVideos manages videos and their uploads.
	ScopeVideos = "videos"
	// ScopePlaybackTokens signs playback tokens.
	ScopePlaybackTokens = "playback-tokens"
	// ScopeReadOnly reads live streams (without their stream keys),
	// videos and nodes.
	ScopeReadOnly = "read-only"
)

// APIKeyScopes lists every scope, in the order the API names them.
var APIKeyScopes = []string{ScopeAdmin, ScopeStreams, ScopeVideos, ScopePlaybackTokens, ScopeReadOnly}

// LegacyAPIKeyScopes are the scopes of a key issued before keys had scopes
// (its record has no scopes field): everything but admin.
var LegacyAPIKeyScopes = []string{ScopeStreams, ScopeVideos, ScopePlaybackTokens}

// APIKey describes an API key. The key itself is shown once, by
// CreateAPIKey, and never stored.
type APIKey struct {
	ID        string
	Name      string
	Scopes    []string
	CreatedAt time.Time
	// Legacy: issued before keys had scopes; Scopes is LegacyAPIKeyScopes.
	Legacy bool
}

// HasScope tells whether the key may act with scope s (admin may do
// everything).
func (k APIKey) HasScope(s string) bool {
	return slices.Contains(k.Scopes, s) || slices.Contains(k.Scopes, ScopeAdmin)
}

const (
	apiKeyPrefix = "apikey:"
	// apiKeysIndex maps each API key's id to the hash of the key, so a key
	// can be listed and revoked by id.
	apiKeysIndex = "apikeys"
	// apiKeysIndexed is set once every key issued before the index existed
	// was added to it.
	apiKeysIndexed = "apikeys:indexed"

	fieldID      = "id"
	fieldKeyHash = "key_hash"
	fieldScopes  = "scopes"
)

// CreateAPIKey issues a new API key named name with scopes (at least one,
// each one of APIKeyScopes; the caller validates them). It returns the key
// in plain text, which is not stored and cannot be recovered, and its
// description.
func (s *Store) CreateAPIKey(ctx context.Context, name string, scopes []string) (plaintext string, info APIKey, err error) {
	if len(scopes) == 0 {
		return "", APIKey{}, errors.New("routing: an API key needs at least one scope")
	}
	plaintext = ids.NewSecret("shoal")
	hash := ids.Hash(plaintext)
	info = APIKey{ID: ids.New(), Name: name, Scopes: slices.Clone(scopes), CreatedAt: now()}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.k(apiKeyPrefix)+hash,
			fieldID, info.ID,
			fieldName, info.Name,
			fieldScopes, strings.Join(info.Scopes, ","),
			fieldCreatedAt, formatTime(info.CreatedAt),
			fieldKeyHash, hash,
		)
		p.HSet(ctx, s.k(apiKeysIndex), info.ID, hash)
		return nil
	})
	if err != nil {
		return "", APIKey{}, wrapErr("create API key", err)
	}
	return plaintext, info, nil
}

// VerifyAPIKey returns the description of the API key key, or ErrNotFound
// when no such key was issued or it was revoked. It reads Redis every
// time, so a revocation applies at once on every node sharing the store.
func (s *Store) VerifyAPIKey(ctx context.Context, key string) (APIKey, error) {
	hash := ids.Hash(key)
	f, err := s.rdb.HGetAll(ctx, s.k(apiKeyPrefix)+hash).Result()
	if err != nil {
		return APIKey{}, wrapErr("verify API key", err)
	}
	if len(f) == 0 || !ids.Equal(f[fieldKeyHash], hash) {
		return APIKey{}, ErrNotFound
	}
	k, err := s.decodeAPIKey(f)
	if err != nil {
		return APIKey{}, err
	}
	if k.Legacy && ids.Valid(k.ID) {
		// A key issued before the index: index it now, so that it can be
		// listed and revoked by id.
		if err := s.rdb.HSetNX(ctx, s.k(apiKeysIndex), k.ID, hash).Err(); err != nil {
			return APIKey{}, wrapErr("verify API key", err)
		}
	}
	return k, nil
}

func (s *Store) decodeAPIKey(f map[string]string) (APIKey, error) {
	created, err := parseTime(f[fieldCreatedAt])
	if err != nil {
		return APIKey{}, &decodeError{key: s.k(apiKeyPrefix) + "<hash>", err: err}
	}
	k := APIKey{ID: f[fieldID], Name: f[fieldName], CreatedAt: created}
	raw, ok := f[fieldScopes]
	if !ok {
		k.Scopes, k.Legacy = slices.Clone(LegacyAPIKeyScopes), true
	} else if raw != "" {
		k.Scopes = strings.Split(raw, ",")
	}
	return k, nil
}

// ListAPIKeys returns every API key, oldest first (without the keys, which
// are not stored).
func (s *Store) ListAPIKeys(ctx context.Context) ([]APIKey, error) {
	if err := s.indexLegacyAPIKeys(ctx); err != nil {
		return nil, err
	}
	index, err := s.rdb.HGetAll(ctx, s.k(apiKeysIndex)).Result()
	if err != nil {
		return nil, wrapErr("list API keys", err)
	}
	p := s.rdb.Pipeline()
	cmds := make([]*redis.MapStringStringCmd, 0, len(index))
	for _, hash := range index {
		cmds = append(cmds, p.HGetAll(ctx, s.k(apiKeyPrefix)+hash))
	}
	if len(cmds) > 0 {
		if _, err := p.Exec(ctx); err != nil {
			return nil, wrapErr("list API keys", err)
		}
	}
	out := make([]APIKey, 0, len(cmds))
	for _, c := range cmds {
		f := c.Val()
		if len(f) == 0 {
			continue // revoked meanwhile
		}
		k, err := s.decodeAPIKey(f)
		if err != nil {
			return nil, err
		}
		out = append(out, k)
	}
	sort.Slice(out, func(i, j int) bool {
		if !out[i].CreatedAt.Equal(out[j].CreatedAt) {
			return out[i].CreatedAt.Before(out[j].CreatedAt)
		}
		return out[i].ID < out[j].ID
	})
	return out, nil
}

// DeleteAPIKey revokes the API key id: from then on it is refused on every
// node. It returns ErrNotFound when there is no such key.
func (s *Store) DeleteAPIKey(ctx context.Context, id string) error {
	hash, err := s.rdb.HGet(ctx, s.k(apiKeysIndex), id).Result()
	if errors.Is(err, redis.Nil) {
		// Maybe a key issued before the index that was never used since.
		if err := s.indexLegacyAPIKeys(ctx); err != nil {
			return err
		}
		hash, err = s.rdb.HGet(ctx, s.k(apiKeysIndex), id).Result()
	}
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if err != nil {
		return wrapErr("delete API key", err)
	}
	var deleted *redis.IntCmd
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		deleted = p.Del(ctx, s.k(apiKeyPrefix)+hash)
		p.HDel(ctx, s.k(apiKeysIndex), id)
		return nil
	})
	if err != nil {
		return wrapErr("delete API key", err)
	}
	if deleted.Val() == 0 {
		return ErrNotFound
	}
	return nil
}

// indexLegacyAPIKeys adds the keys issued before the index existed to it,
// once: it scans shoal:apikey:* and then marks the index complete (every
// key issued since is indexed when it is created). A key that an older
// Shoal, still running during an upgrade, issues after that is indexed by
// VerifyAPIKey at its first use.
func (s *Store) indexLegacyAPIKeys(ctx context.Context) error {
	n, err := s.rdb.Exists(ctx, s.k(apiKeysIndexed)).Result()
	if err != nil {
		return wrapErr("index API keys", err)
	}
	if n == 1 {
		return nil
	}
	node, err := s.scanNode(ctx)
	if err != nil {
		return wrapErr("index API keys", err)
	}
	var cursor uint64
	for {
		keys, next, err := node.Scan(ctx, cursor, s.k(apiKeyPrefix)+"*", 1000).Result()
		if err != nil {
			return wrapErr("index API keys", err)
		}
		p := s.rdb.Pipeline()
		cmds := make([]*redis.SliceCmd, len(keys))
		for i, k := range keys {
			cmds[i] = p.HMGet(ctx, k, fieldID, fieldKeyHash)
		}
		if len(keys) > 0 {
			if _, err := p.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return wrapErr("index API keys", err)
			}
			w := s.rdb.Pipeline()
			for i, c := range cmds {
				v := c.Val()
				if len(v) != 2 {
					continue
				}
				id, _ := v[0].(string)
				hash, _ := v[1].(string)
				if !ids.Valid(id) || keys[i] != s.k(apiKeyPrefix)+hash {
					continue
				}
				w.HSetNX(ctx, s.k(apiKeysIndex), id, hash)
			}
			if _, err := w.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
				return wrapErr("index API keys", err)
			}
		}
		if cursor = next; cursor == 0 {
			break
		}
	}
	return wrapErr("index API keys", s.rdb.Set(ctx, s.k(apiKeysIndexed), "1", 0).Err())
}
