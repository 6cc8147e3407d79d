package routing

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/nodeproto"
)

// Announced nodes: the origins and `shoal worker` processes on this Redis
// say what they are (role, region, public URL, what they transcode with),
// so that GET /v1/nodes lists them after the edges. They are the
// operator's own processes, which share Redis: they do not join with a
// node token, are never routed to and are not in the node registry
// (nodes.go). An announcement lasts its TTL; its node renews it every
// third of that and withdraws it when it stops.
//
//	shoal:announcednode:<id>  hash  role, region, public_url, started_at, last_seen,
//	                                transcode (JSON nodeproto.Transcoding; absent: does not transcode);
//	                                expires with the announcement
//	shoal:announcednodes      zset  node id -> when its announcement expires (Unix ms); pruned of
//	                                expired ones at every announcement and listing
const (
	announcedPrefix = "announcednode:"
	announcedIndex  = "announcednodes"
)

// Roles of announced nodes.
const (
	RoleOrigin = "origin"
	RoleWorker = "worker"
)

// AnnouncedNode is what an origin or a worker says about itself.
type AnnouncedNode struct {
	// ID names the node: "origin-" and a hash of its public URL for an
	// origin, "worker-" and its job queue consumer name for a worker.
	ID string
	// Role is RoleOrigin or RoleWorker.
	Role   string
	Region string
	// PublicURL is where an origin is reached; "" for a worker.
	PublicURL string
	// StartedAt is when the node started; LastSeen when it last
	// announced itself (set by AnnounceNode).
	StartedAt time.Time
	LastSeen  time.Time
	// Transcode is what the node transcodes with; nil when it does not
	// transcode.
	Transcode *nodeproto.Transcoding
}

// AnnounceNode records n for ttl (DefaultOriginTTL when ttl <= 0),
// replacing its last announcement, with LastSeen now, and forgets the
// announcements that expired.
func (s *Store) AnnounceNode(ctx context.Context, n AnnouncedNode, ttl time.Duration) error {
	if err := checkAnnounced(n); err != nil {
		return err
	}
	if ttl <= 0 {
		ttl = DefaultOriginTTL
	}
	fields := []any{"role", n.Role, "region", n.Region, "public_url", n.PublicURL,
		"started_at", formatTime(n.StartedAt), "last_seen", formatTime(s.now())}
	if n.Transcode != nil {
		b, err := json.Marshal(n.Transcode)
		if err != nil {
			return fmt.Errorf("routing: announce node: %w", err)
		}
		fields = append(fields, "transcode", string(b))
	}
	args := append([]any{n.ID, ttl.Milliseconds(), s.leaseNow()}, fields...)
	err := announceNodeScript.Run(ctx, s.rdb, []string{s.k(announcedPrefix) + n.ID, s.k(announcedIndex)}, args...).Err()
	return wrapErr("announce node", err)
}

// KEYS: 1 the node's hash, 2 the index. ARGV: 1 id, 2 ttl (ms), 3
// leaseNow, 4... the hash's fields and values.
var announceNodeScript = redis.NewScript(luaNowMs + `
local now = nowms(ARGV[3])
redis.call('DEL', KEYS[1])
redis.call('HSET', KEYS[1], unpack(ARGV, 4))
redis.call('PEXPIRE', KEYS[1], ARGV[2])
redis.call('ZADD', KEYS[2], now + tonumber(ARGV[2]), ARGV[1])
redis.call('ZREMRANGEBYSCORE', KEYS[2], '-inf', '(' .. string.format('%d', now))
return 1`)

func checkAnnounced(n AnnouncedNode) error {
	if n.ID == "" {
		return errors.New("routing: an announced node needs an id")
	}
	switch n.Role {
	case RoleOrigin:
		if u, err := url.Parse(n.PublicURL); err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" {
			return fmt.Errorf("routing: an origin's public URL must be http(s), got %q", n.PublicURL)
		}
	case RoleWorker:
	default:
		return fmt.Errorf("routing: an announced node's role must be %q or %q, got %q", RoleOrigin, RoleWorker, n.Role)
	}
	return nil
}

// WithdrawNode forgets the announcement of the node id (it is stopping).
func (s *Store) WithdrawNode(ctx context.Context, id string) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.k(announcedPrefix)+id)
		p.ZRem(ctx, s.k(announcedIndex), id)
		return nil
	})
	return wrapErr("withdraw node", err)
}

// AnnouncedNodes returns the nodes whose announcements have not expired:
// origins, then workers, each in id order.
func (s *Store) AnnouncedNodes(ctx context.Context) ([]AnnouncedNode, error) {
	idList, err := unexpiredScript.Run(ctx, s.rdb, []string{s.k(announcedIndex)}, s.leaseNow()).StringSlice()
	if err != nil {
		return nil, wrapErr("list announced nodes", err)
	}
	out, gone, err := records(ctx, s, "list announced nodes", s.k(announcedPrefix), idList, s.decodeAnnounced)
	if err != nil {
		return nil, err
	}
	if len(gone) > 0 {
		members := make([]any, len(gone))
		for i, id := range gone {
			members[i] = id
		}
		_ = s.rdb.ZRem(ctx, s.k(announcedIndex), members...).Err()
	}
	slices.SortFunc(out, func(a, b AnnouncedNode) int {
		// "origin" < "worker".
		return cmp.Or(cmp.Compare(a.Role, b.Role), cmp.Compare(a.ID, b.ID))
	})
	return out, nil
}

func (s *Store) decodeAnnounced(id string, f map[string]string) (AnnouncedNode, error) {
	if len(f) == 0 || f["role"] == "" {
		return AnnouncedNode{}, ErrNotFound
	}
	n := AnnouncedNode{ID: id, Role: f["role"], Region: f["region"], PublicURL: f["public_url"]}
	key := s.k(announcedPrefix) + id
	var err error
	if n.StartedAt, err = parseTime(f["started_at"]); err != nil {
		return AnnouncedNode{}, &decodeError{key: key, err: err}
	}
	if n.LastSeen, err = parseTime(f["last_seen"]); err != nil {
		return AnnouncedNode{}, &decodeError{key: key, err: err}
	}
	if tc := f["transcode"]; tc != "" {
		n.Transcode = &nodeproto.Transcoding{}
		if err := json.Unmarshal([]byte(tc), n.Transcode); err != nil {
			return AnnouncedNode{}, &decodeError{key: key, err: fmt.Errorf("transcode: %w", err)}
		}
	}
	return n, nil
}
