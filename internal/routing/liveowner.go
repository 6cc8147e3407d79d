package routing

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
)

// Live stream owners: a live stream is ingested by one origin at a time,
// the one that holds its lease.
//
//	shoal:liveowner:{<id>}   string  the owning origin's URL, with a TTL (the lease)
//
// The owner claims the lease when a publisher is authorized and renews it
// (the same claim) every third of its TTL while the stream is live there,
// including the reconnect grace; it releases it when the stream ends. An
// origin that dies stops renewing, and after at most one TTL another origin
// may take the stream. Origins are named by their public URL (how the
// others reach them), so an origin that restarts takes its own lease back
// at once.

// DefaultLiveOwnerTTL is how long a live stream's lease outlives its
// owner's last renewal.
const DefaultLiveOwnerTTL = 10 * time.Second

const liveOwnerPrefix = "liveowner:"

func (s *Store) liveOwnerKey(id string) string { return s.k(liveOwnerPrefix) + "{" + id + "}" }

// claimLiveScript makes ARGV[1] the owner of KEYS[1] for ARGV[2] ms unless
// another owner holds it; it returns the owner after the claim.
var claimLiveScript = redis.NewScript(`
local cur = redis.call('GET', KEYS[1])
if cur and cur ~= ARGV[1] then
	return cur
end
redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
return ARGV[1]`)

// ClaimLiveStream makes owner the owner of live stream id for ttl
// (DefaultLiveOwnerTTL when ttl <= 0), or renews its lease, unless another
// origin holds it: it returns the owner after the claim, owner itself when
// it succeeded.
func (s *Store) ClaimLiveStream(ctx context.Context, id, owner string, ttl time.Duration) (string, error) {
	if !ids.Valid(id) {
		return "", fmt.Errorf("routing: invalid live stream id %q", id)
	}
	if owner == "" {
		return "", errors.New("routing: an empty live stream owner")
	}
	if ttl <= 0 {
		ttl = DefaultLiveOwnerTTL
	}
	got, err := claimLiveScript.Run(ctx, s.rdb, []string{s.liveOwnerKey(id)}, owner, ttl.Milliseconds()).Text()
	if err != nil {
		return "", wrapErr("claim live stream", err)
	}
	return got, nil
}

// ReleaseLiveStream ends owner's lease on live stream id, if it holds it.
func (s *Store) ReleaseLiveStream(ctx context.Context, id, owner string) error {
	if !ids.Valid(id) {
		return fmt.Errorf("routing: invalid live stream id %q", id)
	}
	return wrapErr("release live stream", unlockScript.Run(ctx, s.rdb, []string{s.liveOwnerKey(id)}, owner).Err())
}

// LiveStreamOwners returns the owner of each live stream of ids that is
// live at some origin (absent: none is). One round trip (pipelined GETs,
// which Redis Cluster accepts across slots).
func (s *Store) LiveStreamOwners(ctx context.Context, list ...string) (map[string]string, error) {
	pipe := s.rdb.Pipeline()
	cmds := make(map[string]*redis.StringCmd, len(list))
	for _, id := range list {
		if ids.Valid(id) {
			cmds[id] = pipe.Get(ctx, s.liveOwnerKey(id))
		}
	}
	if len(cmds) == 0 {
		return map[string]string{}, nil
	}
	if _, err := pipe.Exec(ctx); err != nil && !errors.Is(err, redis.Nil) {
		return nil, wrapErr("live stream owners", err)
	}
	out := make(map[string]string, len(cmds))
	for id, c := range cmds {
		if v, err := c.Result(); err == nil && v != "" {
			out[id] = v
		}
	}
	return out, nil
}
