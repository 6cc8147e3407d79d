package routing

import (
	"context"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
)

// APIKey describes an API key. The key itself is shown once, by
// CreateAPIKey, and never stored.
type APIKey struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

const (
	apiKeyPrefix = "shoal:apikey:"

	fieldID      = "id"
	fieldKeyHash = "key_hash"
)

// CreateAPIKey issues a new API key named name. It returns the key in plain
// text, which is not stored and cannot be recovered, and its description.
func (s *Store) CreateAPIKey(ctx context.Context, name string) (plaintext string, info APIKey, err error) {
	plaintext = ids.NewSecret("shoal")
	hash := ids.Hash(plaintext)
	info = APIKey{ID: ids.New(), Name: name, CreatedAt: now()}
	err = s.rdb.HSet(ctx, apiKeyPrefix+hash,
		fieldID, info.ID,
		fieldName, info.Name,
		fieldCreatedAt, formatTime(info.CreatedAt),
		fieldKeyHash, hash,
	).Err()
	if err != nil {
		return "", APIKey{}, wrapErr("create API key", err)
	}
	return plaintext, info, nil
}

// VerifyAPIKey returns the description of the API key key, or ErrNotFound
// when no such key was issued.
func (s *Store) VerifyAPIKey(ctx context.Context, key string) (APIKey, error) {
	hash := ids.Hash(key)
	f, err := s.rdb.HGetAll(ctx, apiKeyPrefix+hash).Result()
	if err != nil {
		return APIKey{}, wrapErr("verify API key", err)
	}
	if len(f) == 0 || !ids.Equal(f[fieldKeyHash], hash) {
		return APIKey{}, ErrNotFound
	}
	created, err := parseTime(f[fieldCreatedAt])
	if err != nil {
		return APIKey{}, &decodeError{key: apiKeyPrefix + "<hash>", err: err}
	}
	return APIKey{ID: f[fieldID], Name: f[fieldName], CreatedAt: created}, nil
}
