package routing

import (
	"context"
	"encoding/hex"
	"fmt"
	"regexp"
)

// Signing keys shared by every origin on this Redis:
//
//	shoal:signingkey:<name>   string  hex of an ed25519 seed (32 bytes)
//
// The first origin to start offers its own key; later ones adopt the one
// stored, so that a playback token one origin signs is good at every
// other, and every origin signs manifests and reports with the key edges
// and players were given. Redis is trusted with them (as with the
// playback session secret).
const signingKeyPrefix = "signingkey:"

var signingKeyName = regexp.MustCompile(`^[a-z][a-z0-9-]{0,31}$`)

// ShareSigningKey stores seed as the signing key name unless one is stored,
// and returns the stored seed.
func (s *Store) ShareSigningKey(ctx context.Context, name string, seed []byte) ([]byte, error) {
	if !signingKeyName.MatchString(name) {
		return nil, fmt.Errorf("routing: invalid signing key name %q", name)
	}
	if len(seed) != 32 {
		return nil, fmt.Errorf("routing: a signing key seed of %d bytes, want 32", len(seed))
	}
	key := s.k(signingKeyPrefix) + name
	if err := s.rdb.SetNX(ctx, key, hex.EncodeToString(seed), 0).Err(); err != nil {
		return nil, wrapErr("share signing key", err)
	}
	v, err := s.rdb.Get(ctx, key).Result()
	if err != nil {
		return nil, wrapErr("share signing key", err)
	}
	stored, err := hex.DecodeString(v)
	if err != nil || len(stored) != 32 {
		return nil, fmt.Errorf("routing: %s holds no usable key", key)
	}
	return stored, nil
}
