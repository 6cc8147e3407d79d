package routing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"time"

	"github.com/redis/go-redis/v9"
)

// Playback sessions and viewer analytics, fed by the players' beacons
// (playerapi POST /v1/beacons):
//
//	shoal:session-secret              string  the key that signs playback session tokens (made once, shared by origins)
//	shoal:sess:<session id>           hash    a session's state: last accepted seq and cumulative figures (SessionTTL after its last beacon)
//	shoal:sess:<session id>:offers    set     node ids the origin offered the session (at most MaxSessionOffers)
//	shoal:an:<scope>:<hour>           hash    analytics counters and histograms of a scope in an hour
//	shoal:an:<scope>:<hour>:hll       HLL     the viewers of a scope in an hour
//	shoal:an:items:<hour>             zset    item scopes ("video:<id>", "live:<id>") by views in the hour
//	shoal:an:items:<hour>:w           zset    the same by watch time (ms)
//
// A scope is "all", "video:<id>", "live:<id>" or "node:<id>"; an hour is
// EpochID of its start. The analytics keys expire after the retention the
// caller passes (accounting.retention).
const (
	sessionSecretKey = "session-secret"
	sessionPrefix    = "sess:"
	analyticsPrefix  = "an:"
)

// SessionTTL is how long a session's state is kept after its last beacon.
// It outlasts the window in which a session may start (an hour after the
// page load), so a replayed first beacon finds the state it left.
const SessionTTL = time.Hour + time.Minute

// MaxSessionOffers bounds the nodes remembered as offered to one session.
const MaxSessionOffers = 8

// offersTTL is how long a session's offers are kept after the last offer
// or beacon, as its state is: a token that is routed but never beaconed
// leaves nothing after that.
const offersTTL = SessionTTL

// MaxBreakdownValues bounds the distinct values of one breakdown (country,
// device, os, browser) in one scope and hour; later values count as
// "other".
const MaxBreakdownValues = 64

// SessionSecret returns the key that signs playback session tokens, making
// it on first use; every origin sharing the Redis uses the same one.
func (s *Store) SessionSecret(ctx context.Context) ([]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	return s.sessionSecret(ctx, b[:])
}

// ReloadSessionSecret reads the shared session secret again for an origin
// that holds current: where the store lost it, current is written back
// (unless another origin wrote one first), never a new one, so origins
// that still hold the old secret keep agreeing.
func (s *Store) ReloadSessionSecret(ctx context.Context, current []byte) ([]byte, error) {
	return s.sessionSecret(ctx, current)
}

// sessionSecret stores secret unless a secret is stored, and returns the
// stored one.
func (s *Store) sessionSecret(ctx context.Context, secret []byte) ([]byte, error) {
	if err := s.rdb.SetNX(ctx, s.k(sessionSecretKey), hex.EncodeToString(secret), 0).Err(); err != nil {
		return nil, wrapErr("session secret", err)
	}
	v, err := s.rdb.Get(ctx, s.k(sessionSecretKey)).Result()
	if err != nil {
		return nil, wrapErr("session secret", err)
	}
	stored, err := hex.DecodeString(v)
	if err != nil || len(stored) < 16 {
		return nil, fmt.Errorf("routing: %s holds no usable secret", s.k(sessionSecretKey))
	}
	return stored, nil
}

func (s *Store) sessionKey(sid string) string       { return s.k(sessionPrefix) + sid }
func (s *Store) sessionOffersKey(sid string) string { return s.k(sessionPrefix) + sid + ":offers" }

// KEYS[1] the offers set; ARGV[1] the cap, ARGV[2] the TTL in ms, then
// node ids. Ids past the cap are not added.
var offerScript = redis.NewScript(`
local cap = tonumber(ARGV[1])
for i = 3, #ARGV do
  if redis.call('SISMEMBER', KEYS[1], ARGV[i]) == 0 and redis.call('SCARD', KEYS[1]) < cap then
    redis.call('SADD', KEYS[1], ARGV[i])
  end
end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`)

// OfferSession records that session sid was offered the nodes.
func (s *Store) OfferSession(ctx context.Context, sid string, nodes []string) error {
	if len(nodes) == 0 {
		return nil
	}
	args := []any{MaxSessionOffers, offersTTL.Milliseconds()}
	for _, n := range nodes {
		args = append(args, n)
	}
	return wrapErr("offer session", offerScript.Run(ctx, s.rdb, []string{s.sessionOffersKey(sid)}, args...).Err())
}

// SessionState is what the origin keeps of a playback session between
// its beacons.
type SessionState struct {
	// Started: an earlier beacon was accepted (the state was read from
	// Redis); the fields below are then set.
	Started bool
	Kind    string // "video" or "live"
	Item    string
	Start   time.Time // arrival of the first accepted beacon
	Last    time.Time // arrival of the last accepted beacon
	Seq     int64
	Final   bool
	// Counters are the last accepted cumulative figures (watch_ms, ...),
	// Bytes the cumulative bytes per source (node id, "origin", "p2p").
	Counters map[string]int64
	Bytes    map[string]int64
	// The view: its hour, the node it is counted for ("origin" when
	// none), whether its startup time was observed and the bucket its
	// rebuffer ratio is counted in (-1: none).
	Hour        time.Time
	Home        string
	Viewed      bool // the session played: it is a view
	Startup     bool
	RatioBucket int
	// Who watched: the viewer id (or the session's), country, device,
	// os and browser.
	Viewer, Country, Device, OS, Browser string
	// Network is the viewer network (/24, /48) the session started on.
	Network string
}

// ErrSessionBusy is returned by UpdateSession when other beacons of the
// session kept changing it.
var ErrSessionBusy = errors.New("routing: playback session is being updated concurrently")

// UpdateSession reads session sid's state and the nodes it was offered,
// lets update change the state, and writes it back unless update fails
// (its error is returned) or another update of the session came first (it
// is retried). The state then lives SessionTTL.
func (s *Store) UpdateSession(ctx context.Context, sid string, update func(st *SessionState, offered map[string]bool) error) error {
	key := s.sessionKey(sid)
	var userErr error
	txf := func(tx *redis.Tx) error {
		userErr = nil
		raw, err := tx.HGetAll(ctx, key).Result()
		if err != nil {
			return err
		}
		offers, err := tx.SMembers(ctx, s.sessionOffersKey(sid)).Result()
		if err != nil {
			return err
		}
		offered := make(map[string]bool, len(offers))
		for _, o := range offers {
			offered[o] = true
		}
		st := decodeSession(raw)
		if userErr = update(&st, offered); userErr != nil {
			return userErr
		}
		_, err = tx.TxPipelined(ctx, func(p redis.Pipeliner) error {
			p.Del(ctx, key)
			p.HSet(ctx, key, encodeSession(st))
			p.PExpire(ctx, key, SessionTTL)
			p.PExpire(ctx, s.sessionOffersKey(sid), offersTTL)
			return nil
		})
		return err
	}
	for range 8 {
		err := s.rdb.Watch(ctx, txf, key)
		switch {
		case err == nil:
			return nil
		case userErr != nil && errors.Is(err, userErr):
			return userErr
		case errors.Is(err, redis.TxFailedErr):
			continue
		default:
			return wrapErr("update session", err)
		}
	}
	return ErrSessionBusy
}

func decodeSession(f map[string]string) SessionState {
	st := SessionState{Counters: map[string]int64{}, Bytes: map[string]int64{}, RatioBucket: -1}
	if len(f) == 0 {
		return st
	}
	num := func(k string) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
	st.Started = true
	st.Kind, st.Item, st.Home = f["kind"], f["item"], f["home"]
	st.Start, st.Last = time.UnixMilli(num("start")).UTC(), time.UnixMilli(num("last")).UTC()
	st.Hour = time.UnixMilli(num("hour")).UTC()
	st.Seq, st.Final, st.Startup, st.Viewed = num("seq"), f["final"] == "1", f["startup"] == "1", f["viewed"] == "1"
	st.RatioBucket = int(num("rb"))
	st.Viewer, st.Country, st.Device, st.OS, st.Browser, st.Network = f["viewer"], f["country"], f["device"], f["os"], f["browser"], f["net"]
	for k, v := range f {
		x, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		if name, ok := strings.CutPrefix(k, "c:"); ok {
			st.Counters[name] = x
		} else if src, ok := strings.CutPrefix(k, "b:"); ok {
			st.Bytes[src] = x
		}
	}
	return st
}

func encodeSession(st SessionState) map[string]any {
	b := func(v bool) string {
		if v {
			return "1"
		}
		return "0"
	}
	f := map[string]any{
		"kind": st.Kind, "item": st.Item, "home": st.Home,
		"start": st.Start.UnixMilli(), "last": st.Last.UnixMilli(), "hour": st.Hour.UnixMilli(),
		"seq": st.Seq, "final": b(st.Final), "startup": b(st.Startup), "viewed": b(st.Viewed), "rb": st.RatioBucket,
		"viewer": st.Viewer, "country": st.Country, "device": st.Device, "os": st.OS, "browser": st.Browser, "net": st.Network,
	}
	for k, v := range st.Counters {
		f["c:"+k] = v
	}
	for k, v := range st.Bytes {
		f["b:"+k] = v
	}
	return f
}

// Analytics scopes.
const ScopeAll = "all"

// AnalyticsAdd is what one beacon adds to one scope's figures of one hour.
type AnalyticsAdd struct {
	Scope  string
	Hour   time.Time
	Fields map[string]int64 // counter or histogram bucket -> delta (may be negative)
	// Viewer, when set, is added to the scope's unique viewers.
	Viewer string
	// Breakdown adds views and watch time to values of breakdowns.
	Breakdown []BreakdownAdd
	// Item, for an item's scope, indexes it among the hour's items by
	// ItemViews and ItemWatchMs.
	Item                   bool
	ItemViews, ItemWatchMs int64
}

// BreakdownAdd adds to one value of one breakdown ("country", "device",
// "os", "browser").
type BreakdownAdd struct {
	Dim, Value     string
	Views, WatchMs int64
}

// HourID names an analytics hour (the hour that holds t).
func HourID(t time.Time) string { return EpochID(EpochStart(t, time.Hour)) }

func (s *Store) analyticsKey(scope string, hour time.Time) string {
	return s.k(analyticsPrefix) + scope + ":" + HourID(hour)
}

func (s *Store) itemsKey(hour time.Time) string {
	return s.k(analyticsPrefix) + "items:" + HourID(hour)
}

// KEYS: the hash, the HLL, the items zsets (views, watch). ARGV[1] the TTL
// in ms, ARGV[2] the viewer ("" none), ARGV[3] the item member ("" none),
// ARGV[4], ARGV[5] its views and watch deltas, ARGV[6] the cap of
// breakdown values, ARGV[7] the number of field pairs, the pairs, then
// breakdown quadruples (dim, value, views, watch ms).
var addAnalyticsScript = redis.NewScript(`
local ttl = ARGV[1]
if ARGV[2] ~= '' then
  redis.call('PFADD', KEYS[2], ARGV[2])
  redis.call('PEXPIRE', KEYS[2], ttl)
end
if ARGV[3] ~= '' then
  if tonumber(ARGV[4]) ~= 0 then redis.call('ZINCRBY', KEYS[3], ARGV[4], ARGV[3]) end
  if tonumber(ARGV[5]) ~= 0 then redis.call('ZINCRBY', KEYS[4], ARGV[5], ARGV[3]) end
  redis.call('PEXPIRE', KEYS[3], ttl)
  redis.call('PEXPIRE', KEYS[4], ttl)
end
local cap = tonumber(ARGV[6])
local i = 8
for j = 1, tonumber(ARGV[7]) do
  redis.call('HINCRBY', KEYS[1], ARGV[i], ARGV[i+1])
  i = i + 2
end
while i <= #ARGV do
  local dim, value = ARGV[i], ARGV[i+1]
  local f = 'x:' .. dim .. ':' .. value
  if redis.call('HEXISTS', KEYS[1], f .. ':v') == 0 and redis.call('HEXISTS', KEYS[1], f .. ':w') == 0 then
    if tonumber(redis.call('HGET', KEYS[1], 'n:' .. dim) or '0') >= cap then
      f = 'x:' .. dim .. ':other'
    else
      redis.call('HINCRBY', KEYS[1], 'n:' .. dim, 1)
    end
  end
  if tonumber(ARGV[i+2]) ~= 0 then redis.call('HINCRBY', KEYS[1], f .. ':v', ARGV[i+2]) end
  if tonumber(ARGV[i+3]) ~= 0 then redis.call('HINCRBY', KEYS[1], f .. ':w', ARGV[i+3]) end
  i = i + 4
end
redis.call('PEXPIRE', KEYS[1], ttl)
return 1`)

// AddAnalytics applies the adds; the keys they touch live for retention.
func (s *Store) AddAnalytics(ctx context.Context, adds []AnalyticsAdd, retention time.Duration) error {
	if len(adds) == 0 {
		return nil
	}
	run := func(p redis.Pipeliner) error {
		for _, a := range adds {
			key := s.analyticsKey(a.Scope, a.Hour)
			item := ""
			if a.Item {
				item = a.Scope
			}
			names := make([]string, 0, len(a.Fields))
			for k, v := range a.Fields {
				if v != 0 {
					names = append(names, k)
				}
			}
			sort.Strings(names)
			args := []any{retention.Milliseconds(), a.Viewer, item, a.ItemViews, a.ItemWatchMs, MaxBreakdownValues, len(names)}
			for _, k := range names {
				args = append(args, k, a.Fields[k])
			}
			for _, b := range a.Breakdown {
				args = append(args, b.Dim, b.Value, b.Views, b.WatchMs)
			}
			ik := s.itemsKey(a.Hour)
			addAnalyticsScript.EvalSha(ctx, p, []string{key, key + ":hll", ik, ik + ":w"}, args...)
		}
		return nil
	}
	_, err := s.rdb.Pipelined(ctx, run)
	if redis.HasErrorPrefix(err, "NOSCRIPT") {
		// Redis does not have the script yet: every call of the
		// pipeline failed alike; load it and send them again.
		if err = addAnalyticsScript.Load(ctx, s.rdb).Err(); err == nil {
			_, err = s.rdb.Pipelined(ctx, run)
		}
	}
	return wrapErr("add analytics", err)
}

// AnalyticsHours returns scope's figures in each of the hours (field ->
// value; empty when none).
func (s *Store) AnalyticsHours(ctx context.Context, scope string, hours []time.Time) ([]map[string]int64, error) {
	cmds := make([]*redis.MapStringStringCmd, len(hours))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, h := range hours {
			cmds[i] = p.HGetAll(ctx, s.analyticsKey(scope, h))
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("analytics", err)
	}
	out := make([]map[string]int64, len(hours))
	for i, c := range cmds {
		m := map[string]int64{}
		for k, v := range c.Val() {
			if x, err := strconv.ParseInt(v, 10, 64); err == nil {
				m[k] = x
			}
		}
		out[i] = m
	}
	return out, nil
}

// UniqueViewers estimates the distinct viewers of scope over each group of
// hours, in one round trip (HyperLogLog: exact for small counts, about 1%
// off for large ones).
func (s *Store) UniqueViewers(ctx context.Context, scope string, groups [][]time.Time) ([]int64, error) {
	cmds := make([]*redis.IntCmd, len(groups))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, hours := range groups {
			if len(hours) == 0 {
				continue
			}
			keys := make([]string, len(hours))
			for j, h := range hours {
				keys[j] = s.analyticsKey(scope, h) + ":hll"
			}
			cmds[i] = p.PFCount(ctx, keys...)
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("unique viewers", err)
	}
	out := make([]int64, len(groups))
	for i, c := range cmds {
		if c != nil {
			out[i] = c.Val()
		}
	}
	return out, nil
}

// ItemFigures is an item's views and watch time over some hours.
type ItemFigures struct {
	Scope          string // "video:<id>" or "live:<id>"
	Views, WatchMs int64
}

// TopItems returns up to n items with the most views over the hours (then
// by watch time, then scope).
func (s *Store) TopItems(ctx context.Context, hours []time.Time, n int) ([]ItemFigures, error) {
	if len(hours) == 0 {
		return nil, nil
	}
	vk, wk := make([]string, len(hours)), make([]string, len(hours))
	for i, h := range hours {
		vk[i], wk[i] = s.itemsKey(h), s.itemsKey(h)+":w"
	}
	views, err := s.rdb.ZUnionWithScores(ctx, redis.ZStore{Keys: vk}).Result()
	if err != nil {
		return nil, wrapErr("top items", err)
	}
	watch, err := s.rdb.ZUnionWithScores(ctx, redis.ZStore{Keys: wk}).Result()
	if err != nil {
		return nil, wrapErr("top items", err)
	}
	byScope := map[string]*ItemFigures{}
	get := func(m any) *ItemFigures {
		k := fmt.Sprint(m)
		f := byScope[k]
		if f == nil {
			f = &ItemFigures{Scope: k}
			byScope[k] = f
		}
		return f
	}
	for _, z := range views {
		get(z.Member).Views = int64(z.Score)
	}
	for _, z := range watch {
		get(z.Member).WatchMs = int64(z.Score)
	}
	out := make([]ItemFigures, 0, len(byScope))
	for _, f := range byScope {
		out = append(out, *f)
	}
	sort.Slice(out, func(i, j int) bool {
		a, b := out[i], out[j]
		if a.Views != b.Views {
			return a.Views > b.Views
		}
		if a.WatchMs != b.WatchMs {
			return a.WatchMs > b.WatchMs
		}
		return a.Scope < b.Scope
	})
	if len(out) > n {
		out = out[:n]
	}
	return out, nil
}
