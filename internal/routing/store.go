// Package routing is Shoal's Redis-backed state: live streams, their stream
// keys, API keys, videos, the VOD job queue, events and webhooks. No *redis.Client leaves this package; consumers declare
// the interfaces they need and are given a *Store.
//
// # Redis schema
//
// Every key starts with "shoal:" ("{shoal}:" on a Redis Cluster: one hash
// tag, so that every script and transaction stays in one slot; each script
// is given every key it touches in KEYS). Below, names are shown with
// "shoal:". Times are stored as RFC 3339 strings in UTC
// with microsecond precision.
//
//	shoal:livestream:<id>          hash   name, stream_key_hash (sha256 of the key), created_at, playback_policy
//	shoal:livestreams              zset   member <id>, score created_at in Unix milliseconds
//	shoal:streamkey:<sha256(key)>  string <id> of the live stream that owns the stream key
//	shoal:keyrevocations           stream live streams whose key was reset or deleted (see keyrevocations.go)
//	shoal:apikey:<sha256(key)>     hash   id, name, scopes (comma-separated; absent: issued before scopes), created_at, key_hash
//	shoal:apikeys                  hash   API key id -> sha256(key), for listing and revoking by id
//	shoal:apikeys:indexed          string set once the keys issued before shoal:apikeys existed were added to it
//	shoal:video:<id>               hash   title, status, progress, error, duration (seconds), renditions (JSON),
//	                                      ladder, playback_policy, upload, source_bytes, poster, storyboard,
//	                                      attempts, last_error, worker, created_at, updated_at
//	shoal:videos                   zset   member <id>, score created_at in Unix microseconds
//	shoal:jobs:vod                 stream VOD jobs (field video), consumer group "workers" (see jobs.go);
//	                                      acknowledged entries trimmed (see streams.go)
//	shoal:events                   stream events for webhooks (fields type, data, at; see events.go);
//	                                      MAXLEN ~ and acknowledged entries trimmed (see streams.go)
//	shoal:webhook:<id>, shoal:webhooks, shoal:webhookdelivery:<did>, shoal:webhookdue,
//	shoal:webhookpending:<id>, shoal:webhooklog:<id>   webhooks and their deliveries (see webhooks.go)
//	shoal:p2p:<id>, shoal:p2pbatch:<source>   players' reported HTTP and P2P bytes (see p2pstats.go)
//	shoal:uploadlock:<upload id>   string the token of the holder of a tus upload's lock, with a TTL (see uploadlock.go)
//
// Stream keys and API keys are shown once, when they are made, and only
// their hash (ids.Hash) is stored: the live stream's hash keeps
// stream_key_hash, and the index that ingest looks keys up in is keyed by
// it, so a lookup never compares plain keys. Records written before stream
// keys were stored hashed kept the plain key in a stream_key field;
// MigrateStreamKeys (run by every origin at start) replaces it.
//
// Creating, deleting and resetting the key of a live stream change the hash,
// the zset and the stream key index in one MULTI/EXEC transaction, and the
// operations that read before they write WATCH the live stream's hash, so the
// index never holds an entry for a deleted stream or a replaced key.
//
// # Errors
//
// Lookups of missing records return ErrNotFound. When Redis cannot be
// reached (connection refused, timeouts, a server still loading its data)
// the error wraps ErrUnavailable, so callers can answer "try again" rather
// than "internal error".
package routing

import (
	"context"
	"errors"
	"fmt"
	mrand "math/rand/v2"
	"net"
	"net/url"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/redis/go-redis/v9"
)

// ErrNotFound is returned when the requested record does not exist.
var ErrNotFound = errors.New("not found")

// ErrUnavailable is wrapped by every error that comes from Redis being
// unreachable or not ready to serve.
var ErrUnavailable = errors.New("redis unreachable")

// PlaybackPublic is the playback policy of a stream anyone may watch.
const PlaybackPublic = "public"

const (
	// Client settings that make a dead Redis fail fast instead of hanging
	// the requests that depend on it.
	dialTimeout = time.Second
	ioTimeout   = time.Second
	maxRetries  = 1

	// maxTxAttempts bounds the retries of a WATCH transaction that lost a
	// race with a concurrent writer. The backoff between them grows to
	// about 6 ms, so a writer contending with a few others in tight loops
	// (the concurrency test; on a loaded machine) still gets its turn:
	// 10 attempts were seen to starve a delete under CI load.
	maxTxAttempts = 30
)

// Store reads and writes Shoal's state in Redis. It is safe for concurrent
// use.
type Store struct {
	rdb redis.UniversalClient
	// prefix starts every key name (singlePrefix or clusterPrefix).
	prefix  string
	cluster bool
	// clock is this machine's time, which new webhooks are stamped with
	// and stream maintenance is paced by (time.Now when nil; tests set it
	// before use).
	clock func() time.Time
	// redisClock, set by tests only, replaces Redis's own clock (TIME) in
	// the leases every node reckons alike (see leaseNow).
	redisClock func() time.Time
	// maintainedAt is when (s.nowMs) this Store last trimmed the streams
	// (see streams.go); 0: never.
	maintainedAt atomic.Int64
}

func (s *Store) nowMs() int64 {
	if s.clock != nil {
		return s.clock().UnixMilli()
	}
	return time.Now().UnixMilli()
}

// leaseNow is the ARGV a script passes to nowms (luaNowMs): announcements
// and upload leases are reckoned on Redis's clock, one clock for every
// node, so that a node whose own clock is off neither prunes the others'
// announcements nor takes over their leases early. Tests that move time
// set redisClock.
func (s *Store) leaseNow() string {
	if s.redisClock != nil {
		return strconv.FormatInt(s.redisClock().UnixMilli(), 10)
	}
	return ""
}

// luaNowMs starts the scripts that reckon leases: nowms(leaseNow()) is
// Redis's time in unix ms (or the test's).
const luaNowMs = `local function nowms(arg)
  if arg ~= '' then return tonumber(arg) end
  local t = redis.call('TIME')
  return tonumber(t[1]) * 1000 + math.floor(tonumber(t[2]) / 1000)
end
`

// now is now() on s's clock.
func (s *Store) now() time.Time {
	if s.clock != nil {
		return s.clock().UTC().Truncate(time.Microsecond)
	}
	return now()
}

// NewStore returns a Store for the Redis at redisURL. It does not connect;
// use Ping to check that Redis is reachable.
//
// A single Redis is named by a redis:// or rediss:// URL, as accepted by
// go-redis (redis://[user:password@]host:port/db). A Redis Cluster is named
// by redis+cluster:// (rediss+cluster:// for TLS) and one or more of its
// nodes, separated by commas: redis+cluster://[user:password@]host1:port1,host2:port2/
// (the client learns the rest of the cluster from them; a cluster has no
// database number). Query parameters are those go-redis accepts.
//
// On a cluster every key is named "{shoal}:..." instead of "shoal:...":
// the hash tag puts all of Shoal's keys in one hash slot, so the scripts
// and MULTI/EXEC transactions that touch several of them run there.
//
// Timeouts are short (1 s to dial, read or write, one retry) so that a dead
// Redis fails requests fast. While Redis is down, operations fail with
// ErrUnavailable; once it is back, the Store reconnects by itself within
// about a second.
func NewStore(redisURL string) (*Store, error) {
	bad := func(err error) error {
		// A *url.Error quotes the whole URL, password included; keep only
		// its cause.
		var uerr *url.Error
		if errors.As(err, &uerr) {
			err = uerr.Err
		}
		return fmt.Errorf("routing: invalid Redis URL %s: %w", redactURL(redisURL), err)
	}
	if curl, ok, err := clusterURL(redisURL); ok {
		if err != nil {
			return nil, bad(err)
		}
		opt, err := redis.ParseClusterURL(curl)
		if err != nil {
			return nil, bad(err)
		}
		opt.DialTimeout = dialTimeout
		opt.ReadTimeout = ioTimeout
		opt.WriteTimeout = ioTimeout
		opt.MaxRetries = maxRetries
		opt.DialerRetries = 1
		opt.ContextTimeoutEnabled = true
		return &Store{rdb: redis.NewClusterClient(opt), prefix: clusterPrefix, cluster: true}, nil
	}
	opt, err := redis.ParseURL(redisURL)
	if err != nil {
		return nil, bad(err)
	}
	opt.DialTimeout = dialTimeout
	opt.ReadTimeout = ioTimeout
	opt.WriteTimeout = ioTimeout
	opt.MaxRetries = maxRetries
	opt.DialerRetries = 1 // MaxRetries already retries the command
	opt.ContextTimeoutEnabled = true
	return &Store{rdb: redis.NewClient(opt), prefix: singlePrefix}, nil
}

const (
	// singlePrefix starts every key on a single Redis (the names Shoal
	// has always used, so an upgrade finds its data).
	singlePrefix = "shoal:"
	// clusterPrefix starts every key on a Redis Cluster: one hash tag,
	// so all keys hash to one slot.
	clusterPrefix = "{shoal}:"
)

// k is the full name of the key name (without the prefix) in s's Redis.
func (s *Store) k(name string) string { return s.prefix + name }

// scanNode is where SCAN finds s's keys: s's Redis, or the master of the
// cluster that serves their hash slot (a cluster client sends SCAN to any
// node).
func (s *Store) scanNode(ctx context.Context) (redis.Cmdable, error) {
	c, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return s.rdb, nil
	}
	return c.MasterForKey(ctx, s.k(""))
}

// Cluster reports whether s talks to a Redis Cluster.
func (s *Store) Cluster() bool { return s.cluster }

// clusterURL turns redis+cluster://[userinfo@]h1:p1,h2:p2/[?query] into the
// form redis.ParseClusterURL reads (redis://[userinfo@]h1:p1?addr=h2:p2...).
// ok is false for a URL of another scheme.
func clusterURL(raw string) (out string, ok bool, err error) {
	scheme, rest, found := strings.Cut(raw, "://")
	if !found {
		return "", false, nil
	}
	var base string
	switch strings.ToLower(scheme) {
	case "redis+cluster":
		base = "redis"
	case "rediss+cluster":
		base = "rediss"
	default:
		return "", false, nil
	}
	rest, query, _ := strings.Cut(rest, "?")
	hostPart, path, _ := strings.Cut(rest, "/")
	if path != "" && path != "0" {
		return "", true, fmt.Errorf("a Redis Cluster has no database number (path /%s)", path)
	}
	userinfo := ""
	if i := strings.LastIndex(hostPart, "@"); i >= 0 {
		userinfo, hostPart = hostPart[:i+1], hostPart[i+1:]
	}
	hosts := strings.Split(hostPart, ",")
	q, err := url.ParseQuery(query)
	if err != nil {
		return "", true, err
	}
	for i, h := range hosts {
		if h == "" {
			return "", true, errors.New("an empty node address in the cluster's list")
		}
		if _, _, err := net.SplitHostPort(h); err != nil {
			return "", true, fmt.Errorf("node %q: %w", h, err)
		}
		if i > 0 {
			q.Add("addr", h)
		}
	}
	out = base + "://" + userinfo + hosts[0]
	if len(q) > 0 {
		out += "?" + q.Encode()
	}
	return out, true, nil
}

// Close closes the connections to Redis. Operations after Close fail.
func (s *Store) Close() error {
	return s.rdb.Close()
}

// Ping checks that Redis answers. The error reads "redis unreachable: ..."
// and wraps ErrUnavailable.
func (s *Store) Ping(ctx context.Context) error {
	if err := s.rdb.Ping(ctx).Err(); err != nil {
		return fmt.Errorf("%w: %w", ErrUnavailable, err)
	}
	return nil
}

// redactURL returns u with any password replaced, for error messages.
func redactURL(raw string) string {
	u, err := url.Parse(raw)
	if err != nil {
		return "(unparsable URL)"
	}
	return fmt.Sprintf("%q", u.Redacted())
}

// unavailablePrefixes are the Redis error replies that mean "not ready to
// serve" rather than "this command is wrong".
var unavailablePrefixes = []string{
	"LOADING", "READONLY", "MASTERDOWN", "TRYAGAIN", "CLUSTERDOWN", "BUSY ",
	"MISCONF", "NOAUTH", "WRONGPASS", "NOPERM", "max number of clients",
}

// wrapErr annotates an error from a Redis call with the operation and, for
// connection-level failures, ErrUnavailable. A nil err stays nil.
func wrapErr(op string, err error) error {
	if err == nil {
		return nil
	}
	if isUnavailable(err) {
		return fmt.Errorf("routing: %s: %w: %w", op, ErrUnavailable, err)
	}
	return fmt.Errorf("routing: %s: %w", op, err)
}

func isUnavailable(err error) bool {
	var rerr redis.Error
	if !errors.As(err, &rerr) {
		// Not a reply from the server: the network, a timeout, the pool,
		// a cancelled context or a closed client.
		return true
	}
	for _, p := range unavailablePrefixes {
		if redis.HasErrorPrefix(err, p) {
			return true
		}
	}
	return false
}

// now is the creation time stored for new records.
func now() time.Time { return time.Now().UTC().Truncate(time.Microsecond) }

func formatTime(t time.Time) string { return t.UTC().Format(time.RFC3339Nano) }

func parseTime(s string) (time.Time, error) {
	t, err := time.Parse(time.RFC3339Nano, s)
	if err != nil {
		return time.Time{}, fmt.Errorf("bad created_at %q: %w", s, err)
	}
	return t.UTC(), nil
}

// errTxConflict is returned when a WATCH transaction kept losing races.
var errTxConflict = errors.New("too many conflicting concurrent updates")

// watchTx runs fn in a WATCH transaction on keys, retrying when a concurrent
// writer changed a watched key.
func (s *Store) watchTx(ctx context.Context, op string, fn func(*redis.Tx) error, keys ...string) error {
	for attempt := range maxTxAttempts {
		err := s.rdb.Watch(ctx, fn, keys...)
		if !errors.Is(err, redis.TxFailedErr) {
			return err
		}
		// Back off a random, growing while before trying again, so that
		// writers contending for one record do not retry in lockstep.
		d := time.Duration(mrand.Int64N(int64(100*time.Microsecond) << min(attempt, 6)))
		select {
		case <-ctx.Done():
			return wrapErr(op, ctx.Err())
		case <-time.After(d):
		}
	}
	return fmt.Errorf("routing: %s: gave up after %d attempts: %w", op, maxTxAttempts, errTxConflict)
}

// records reads the hashes prefix+id of idList in one pipeline and decodes
// them in order. Records that went away between the index read and this one
// (decode answers ErrNotFound) are skipped and their ids returned in gone.
func records[T any](ctx context.Context, s *Store, op, prefix string, idList []string,
	decode func(id string, f map[string]string) (T, error)) (out []T, gone []string, err error) {
	out = make([]T, 0, len(idList))
	if len(idList) == 0 {
		return out, nil, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(idList))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range idList {
			cmds[i] = p.HGetAll(ctx, prefix+id)
		}
		return nil
	})
	if err != nil {
		return nil, nil, wrapErr(op, err)
	}
	for i, id := range idList {
		v, err := decode(id, cmds[i].Val())
		if errors.Is(err, ErrNotFound) {
			gone = append(gone, id)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		out = append(out, v)
	}
	return out, gone, nil
}
