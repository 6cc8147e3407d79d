package routing

import (
	"context"
	"fmt"
	"net/url"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Origins: every origin on this Redis announces its public URL, so that
// edges that joined one learn the others (and fail over to them).
//
//	shoal:origins   sorted set  origin public URL -> when its announcement expires (unix ms)

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
	now := s.nowMs()
	p := s.rdb.Pipeline()
	p.ZAdd(ctx, s.k(originsKey), redis.Z{Score: float64(now + ttl.Milliseconds()), Member: publicURL})
	p.ZRemRangeByScore(ctx, s.k(originsKey), "-inf", "("+strconv.FormatInt(now, 10))
	_, err := p.Exec(ctx)
	return wrapErr("announce origin", err)
}

// WithdrawOrigin forgets the origin at publicURL (it is stopping).
func (s *Store) WithdrawOrigin(ctx context.Context, publicURL string) error {
	return wrapErr("withdraw origin", s.rdb.ZRem(ctx, s.k(originsKey), publicURL).Err())
}

// ListOrigins returns the public URLs of the origins whose announcements
// have not expired, in byte order.
func (s *Store) ListOrigins(ctx context.Context) ([]string, error) {
	urls, err := s.rdb.ZRangeByScore(ctx, s.k(originsKey), &redis.ZRangeBy{Min: strconv.FormatInt(s.nowMs(), 10), Max: "+inf"}).Result()
	if err != nil {
		return nil, wrapErr("list origins", err)
	}
	slices.Sort(urls)
	return urls, nil
}
