package routing

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"
)

// Origins: every origin on this Redis announces its public URL, so that
// edges that joined one learn the others (and fail over to them).
//
//	shoal:origins   sorted set  origin public URL -> when its announcement expires (unix ms, Redis's clock)

const originsKey = "origins"

// DefaultOriginTTL is how long an origin's announcement lasts; origins
// announce themselves every third of it.
const DefaultOriginTTL = 30 * time.Second

// AnnounceOrigin says that the origin at publicURL is up for ttl
// (DefaultOriginTTL when ttl <= 0), and forgets origins whose
// announcements expired.
func (s *Store) AnnounceOrigin(ctx context.Context, publicURL string, ttl time.Duration) error {
	if u, err := url.Parse(publicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
		return fmt.Errorf("routing: an origin's public URL must be http(s), got %q", publicURL)
	}
	if ttl <= 0 {
		ttl = DefaultOriginTTL
	}
	err := announceOriginScript.Run(ctx, s.rdb, []string{s.k(originsKey)}, publicURL, ttl.Milliseconds(), s.leaseNow()).Err()
	return wrapErr("announce origin", err)
}

// KEYS: 1 the sorted set. ARGV: 1 member, 2 ttl (ms), 3 leaseNow.
var announceOriginScript = redis.NewScript(luaNowMs + `
local now = nowms(ARGV[3])
redis.call('ZADD', KEYS[1], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. string.format('%d', now))
return 1`)

// KEYS: 1 a sorted set of expiry times. ARGV: 1 leaseNow. Answers the
// members that have not expired.
var unexpiredScript = redis.NewScript(luaNowMs + `
return redis.call('ZRANGEBYSCORE', KEYS[1], string.format('%d', nowms(ARGV[1])), '+inf')`)

// WithdrawOrigin forgets the origin at publicURL (it is stopping).
func (s *Store) WithdrawOrigin(ctx context.Context, publicURL string) error {
	return wrapErr("withdraw origin", s.rdb.ZRem(ctx, s.k(originsKey), publicURL).Err())
}

// ListOrigins returns the public URLs of the origins whose announcements
// have not expired, in byte order.
func (s *Store) ListOrigins(ctx context.Context) ([]string, error) {
	urls, err := unexpiredScript.Run(ctx, s.rdb, []string{s.k(originsKey)}, s.leaseNow()).StringSlice()
	if err != nil {
		return nil, wrapErr("list origins", err)
	}
	slices.Sort(urls)
	return urls, nil
}
