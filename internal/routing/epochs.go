package routing

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Delivery accounting: per accounting epoch and node, what the node
// claimed and what others confirmed. Every figure is a counter added to as
// heartbeats, beacons and audits arrive; the report of an epoch is built
// from them (playerapi).
//
//	shoal:epoch:<epoch>:nodes        set     the nodes with figures in that epoch
//	shoal:epoch:<epoch>:node:<id>    hash    figure name -> counter (Figure* names)
//	shoal:epochs                     zset    epochs with figures (member the epoch id, score its start, Unix ms)
//	shoal:epochreport:<epoch>        string  the sealed report of the epoch (see SealEpochReport)
//	shoal:epochnode:<id>             hash    the node's last accounted heartbeat: t (the node's signed time,
//	                                         Unix µs), b (its cumulative bytes_served), at (the origin's clock,
//	                                         Unix ms), tok (the node token id it joined with)
//
// All expire after the retention the caller passes (accounting.retention).
const (
	epochPrefix       = "epoch:"
	epochsIndex       = "epochs"
	epochReportPrefix = "epochreport:"
	epochNodePrefix   = "epochnode:"
)

// Figures of a node in an epoch (hash fields).
const (
	// FigureClaimedBytes: bytes the node says it served (heartbeats).
	FigureClaimedBytes = "claimed_bytes"
	// FigureViewerBytes: bytes viewers' beacons say they received from
	// the node and verified.
	FigureViewerBytes = "viewer_bytes"
	// FigureAuditBytes: bytes the origin's audits fetched from the node
	// and found as published.
	FigureAuditBytes = "audit_bytes"
	// FigureAuditsPassed and FigureAuditsFailed count compared audits.
	FigureAuditsPassed = "audits_passed"
	FigureAuditsFailed = "audits_failed"
	// FigureUptimeMs: time the node was live (heartbeating), ms.
	FigureUptimeMs = "uptime_ms"
	// FigureQuarantineMs: the part of the uptime it spent quarantined, ms.
	FigureQuarantineMs = "quarantine_ms"
	// FigureVerifyFailures: verification failures viewers reported.
	FigureVerifyFailures = "verification_failures"
	// FigureTranscodedPixels: pixels of a remote worker's outputs that
	// the origin published (width x height x frames, over the
	// renditions); FigureSegmentsVerified: segments of those outputs the
	// origin transcoded again and found matching.
	FigureTranscodedPixels = "transcoded_pixels"
	FigureSegmentsVerified = "segments_verified"
)

// maxFigure caps a counter (1 PiB), below 2^53 so that Lua compares it
// exactly.
const maxFigure = 1 << 50

// EpochStart is the start of the epoch of length d that holds t: epochs
// start at multiples of d since the Unix epoch.
func EpochStart(t time.Time, d time.Duration) time.Time {
	if d <= 0 {
		panic("routing: epoch length must be positive")
	}
	ns := t.UnixNano()
	start := ns - ns%int64(d)
	if ns < 0 && ns%int64(d) != 0 {
		start -= int64(d)
	}
	return time.Unix(0, start).UTC()
}

// epochLayout names an epoch by its start, in ISO 8601's basic format
// (URL-safe): 20261205T070000Z.
const epochLayout = "20060102T150405Z"

// EpochID is the name of the epoch that starts at start.
func EpochID(start time.Time) string { return start.UTC().Format(epochLayout) }

// ParseEpochID reads a name made by EpochID.
func ParseEpochID(s string) (time.Time, error) {
	t, err := time.Parse(epochLayout, s)
	if err != nil || EpochID(t) != s {
		return time.Time{}, fmt.Errorf("%q is not an epoch (its start as YYYYMMDDThhmmssZ, for example 20261205T070000Z)", s)
	}
	return t, nil
}

func (s *Store) epochNodesKey(id string) string      { return s.k(epochPrefix) + id + ":nodes" }
func (s *Store) epochNodeKey(id, node string) string { return s.k(epochPrefix) + id + ":node:" + node }

// luaAddFigures is a Lua function for the scripts below: it adds the
// name, delta pairs of list (strings; deltas > 0) to node's figures in the
// epoch (nodes: its node set, hash: the node's hash, index: the epochs
// index with the epoch's start and id), keeping each counter under cap,
// and makes every key live ttl ms; index entries older than minScore go.
const luaAddFigures = `
local function addFigures(nodes, hash, index, node, ttl, cap, start, id, minScore, list)
  if #list == 0 then return end
  redis.call('SADD', nodes, node)
  redis.call('PEXPIRE', nodes, ttl)
  for i = 1, #list, 2 do
    local v = redis.call('HINCRBY', hash, list[i], list[i+1])
    if v > cap then redis.call('HSET', hash, list[i], string.format('%d', cap)) end
  end
  redis.call('PEXPIRE', hash, ttl)
  redis.call('ZADD', index, start, id)
  redis.call('ZREMRANGEBYSCORE', index, '-inf', '(' .. minScore)
  redis.call('PEXPIRE', index, ttl)
end
`

// KEYS: the epoch's node set, the node's hash, the epochs index; ARGV[1]
// the node id, ARGV[2] the TTL in ms, ARGV[3] the counter cap, ARGV[4]
// the epoch's start (Unix ms), ARGV[5] its id, ARGV[6] the oldest start
// the index keeps, then name, delta pairs.
var addFiguresScript = redis.NewScript(luaAddFigures + `
local list = {}
for i = 7, #ARGV do list[#list+1] = ARGV[i] end
addFigures(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], list)
return 1`)

// AddEpochFigures adds deltas (figure name -> amount, each >= 0) to node's
// figures in the epoch that starts at start; its records live for
// retention.
func (s *Store) AddEpochFigures(ctx context.Context, start time.Time, node string, deltas map[string]int64, retention time.Duration) error {
	names := make([]string, 0, len(deltas))
	for k, v := range deltas {
		if v < 0 {
			return fmt.Errorf("routing: epoch figure %s: negative delta %d", k, v)
		}
		if v > 0 {
			names = append(names, k)
		}
	}
	if len(names) == 0 {
		return nil
	}
	sort.Strings(names)
	id := EpochID(start)
	args := []any{node, retention.Milliseconds(), int64(maxFigure), start.UnixMilli(), id, start.Add(-retention).UnixMilli()}
	for _, k := range names {
		args = append(args, k, deltas[k])
	}
	err := addFiguresScript.Run(ctx, s.rdb, []string{s.epochNodesKey(id), s.epochNodeKey(id, node), s.k(epochsIndex)}, args...).Err()
	return wrapErr("add epoch figures", err)
}

// KEYS: the epoch's node set, the node's hash, the epochs index, the
// network's counter; ARGV[1] the node id, ARGV[2] the TTL in ms, ARGV[3]
// the counter cap, ARGV[4] the epoch's start (Unix ms), ARGV[5] its id,
// ARGV[6] the oldest start the index keeps, ARGV[7] the bytes, ARGV[8]
// the network's cap, ARGV[9] the network counter's TTL in ms. Returns the
// bytes added.
var addViewerBytesScript = redis.NewScript(luaAddFigures + `
local had = tonumber(redis.call('GET', KEYS[4]) or '0')
local add = math.min(tonumber(ARGV[7]), tonumber(ARGV[8]) - had)
if add <= 0 then return 0 end
redis.call('INCRBY', KEYS[4], string.format('%d', add))
redis.call('PEXPIRE', KEYS[4], ARGV[9])
addFigures(KEYS[1], KEYS[2], KEYS[3], ARGV[1], ARGV[2], tonumber(ARGV[3]), ARGV[4], ARGV[5], ARGV[6], {'` + FigureViewerBytes + `', string.format('%d', add)})
return add`)

// AddViewerBytes adds n bytes that viewers on network confirmed receiving
// from node to its FigureViewerBytes in the epoch that starts at start,
// but no more than netCap from that network in the epoch in all: however
// many sessions one network opens, it confirms a node at most netCap an
// epoch. The network's counter lives keep (until the epoch is sealed). It
// returns the bytes added.
//
//	shoal:epoch:<epoch>:vnet:<node>:<network>   string   bytes confirmed from the network
func (s *Store) AddViewerBytes(ctx context.Context, start time.Time, keep time.Duration, node, network string, n, netCap int64, retention time.Duration) (int64, error) {
	if n <= 0 || netCap <= 0 {
		return 0, nil
	}
	id := EpochID(start)
	netKey := s.k(epochPrefix) + id + ":vnet:" + node + ":" + network
	netTTL := max(keep, time.Minute)
	added, err := addViewerBytesScript.Run(ctx, s.rdb, []string{s.epochNodesKey(id), s.epochNodeKey(id, node), s.k(epochsIndex), netKey},
		node, retention.Milliseconds(), int64(maxFigure), start.UnixMilli(), id, start.Add(-retention).UnixMilli(),
		n, netCap, netTTL.Milliseconds()).Int64()
	return added, wrapErr("add viewer bytes", err)
}

// EpochShares splits amount over the epochs (of length d) that the span
// from..to covers, in proportion to the time in each (the last one gets
// what rounding leaves): what was received over a span that crossed an
// epoch's end counts in both, as heartbeats' claims do. An empty or
// backwards span puts it all in to's epoch.
func EpochShares(from, to time.Time, d time.Duration, amount int64) map[time.Time]int64 {
	last := EpochStart(to, d)
	if !from.Before(to) || !EpochStart(from, d).Before(last) {
		return map[time.Time]int64{last: amount}
	}
	// At most a day of epochs back: older spans count from there.
	if from.Before(to.Add(-24 * time.Hour)) {
		from = to.Add(-24 * time.Hour)
	}
	out := map[time.Time]int64{}
	span := float64(to.Sub(from))
	left := amount
	for e := EpochStart(from, d); e.Before(last); e = e.Add(d) {
		lo, hi := maxTime(e, from), e.Add(d)
		part := int64(float64(amount) * float64(hi.Sub(lo)) / span)
		out[e] = part
		left -= part
	}
	out[last] += left
	return out
}

func maxTime(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// HeartbeatFigures is what one heartbeat tells the accounting.
type HeartbeatFigures struct {
	// Sent is the node's signed time of the heartbeat: heartbeats are
	// accounted in that order, once each (a replayed or late one is not).
	Sent time.Time
	// BytesServed is the node's cumulative bytes_served; a value below
	// the previous one means the node restarted (the value is then the
	// delta).
	BytesServed int64
	// TokenID is the node token the node joined with.
	TokenID string
}

// Accounted is what AccountHeartbeat added.
type Accounted struct {
	Counted                            bool // false: a heartbeat sent no later than the last accounted one
	ClaimedBytes, UptimeMs, Quarantine int64
}

// AccountHeartbeat adds a heartbeat of node, received at now, to the
// figures of the epochs (of length epoch) atomically (heartbeats of one
// node may reach several origins at once): the bytes the node claims
// since its previous heartbeat (FigureClaimedBytes), the time since its
// previous heartbeat or join, at most maxGap (FigureUptimeMs), and that
// time again as FigureQuarantineMs while the node is quarantined. When
// that time began in the previous epoch, the figures are shared between
// the two epochs in proportion to the time in each: bytes an edge served
// just before an epoch ended count in that epoch, as the audits and
// viewers that confirm them do.
func (s *Store) AccountHeartbeat(ctx context.Context, node string, hb HeartbeatFigures, now time.Time,
	epoch, maxGap, retention time.Duration) (Accounted, error) {
	if hb.BytesServed < 0 || hb.BytesServed > maxFigure {
		return Accounted{}, fmt.Errorf("routing: account heartbeat: bytes_served %d out of range", hb.BytesServed)
	}
	start := EpochStart(now, epoch)
	prev := start.Add(-epoch)
	id, prevID := EpochID(start), EpochID(prev)
	res, err := heartbeatFiguresScript.Run(ctx, s.rdb,
		[]string{s.k(epochNodePrefix) + node, s.k(quarantinePrefix) + node, s.epochNodesKey(id), s.epochNodeKey(id, node), s.k(epochsIndex),
			s.epochNodesKey(prevID), s.epochNodeKey(prevID, node)},
		node, hb.Sent.UnixMicro(), hb.BytesServed, now.UnixMilli(), maxGap.Milliseconds(), retention.Milliseconds(),
		int64(maxFigure), start.UnixMilli(), id, prev.Add(-retention).UnixMilli(), hb.TokenID, prev.UnixMilli(), prevID).Int64Slice()
	if err != nil {
		return Accounted{}, wrapErr("account heartbeat", err)
	}
	if len(res) != 4 {
		return Accounted{}, fmt.Errorf("routing: account heartbeat: unexpected reply %v", res)
	}
	return Accounted{Counted: res[0] == 1, ClaimedBytes: res[1], UptimeMs: res[2], Quarantine: res[3]}, nil
}

// KEYS: the node's accounting state, its quarantine, the epoch's node
// set, the node's hash in the epoch, the epochs index, the previous
// epoch's node set and the node's hash in it. ARGV: 1 node id, 2 sent
// (µs), 3 bytes served, 4 now (ms), 5 max gap (ms), 6 TTL (ms), 7 counter
// cap, 8 epoch start (ms), 9 epoch id, 10 oldest start kept, 11 token id,
// 12 previous epoch's start (ms), 13 its id. Numbers stay strings where
// Redis stores them (Lua's tostring would round them).
var heartbeatFiguresScript = redis.NewScript(luaAddFigures + `
local sent = tonumber(ARGV[2])
local prevSent = redis.call('HGET', KEYS[1], 't')
if prevSent and sent <= tonumber(prevSent) then return {0, 0, 0, 0} end
local bytes = tonumber(ARGV[3])
local claimed = bytes
local prevBytes = redis.call('HGET', KEYS[1], 'b')
if prevBytes and bytes >= tonumber(prevBytes) then claimed = bytes - tonumber(prevBytes) end
local now = tonumber(ARGV[4])
local at = ARGV[4]
local up = 0
local prevAt = redis.call('HGET', KEYS[1], 'at')
if prevAt then
  up = now - tonumber(prevAt)
  if up < 0 then up = 0; at = prevAt end
  if up > tonumber(ARGV[5]) then up = tonumber(ARGV[5]) end
end
local q = 0
if up > 0 and redis.call('EXISTS', KEYS[2]) == 1 then q = up end
redis.call('HSET', KEYS[1], 't', ARGV[2], 'b', ARGV[3], 'at', at, 'tok', ARGV[11])
redis.call('PEXPIRE', KEYS[1], ARGV[6])
-- The part of [now - up, now] before this epoch's start is the previous
-- epoch's.
local pc, pu, pq = 0, 0, 0
local split = tonumber(ARGV[8]) - (now - up)
if up > 0 and split > 0 then
  pc = math.floor(claimed * split / up)
  pu = split
  if q > 0 then pq = split end
end
local function figures(c, u, qq)
  local list = {}
  if c > 0 then list[#list+1] = 'claimed_bytes'; list[#list+1] = string.format('%d', c) end
  if u > 0 then list[#list+1] = 'uptime_ms'; list[#list+1] = string.format('%d', u) end
  if qq > 0 then list[#list+1] = 'quarantine_ms'; list[#list+1] = string.format('%d', qq) end
  return list
end
addFigures(KEYS[6], KEYS[7], KEYS[5], ARGV[1], ARGV[6], tonumber(ARGV[7]), ARGV[12], ARGV[13], ARGV[10], figures(pc, pu, pq))
addFigures(KEYS[3], KEYS[4], KEYS[5], ARGV[1], ARGV[6], tonumber(ARGV[7]), ARGV[8], ARGV[9], ARGV[10], figures(claimed - pc, up - pu, q - pq))
return {1, claimed, up, q}`)

// AccountJoin records that node joined at now with the node token
// tokenID: its uptime counts from then (at its next heartbeat). The cumulative bytes it claimed stay:
// a node that joins again without restarting goes on counting.
func (s *Store) AccountJoin(ctx context.Context, node, tokenID string, now time.Time, retention time.Duration) error {
	err := accountJoinScript.Run(ctx, s.rdb, []string{s.k(epochNodePrefix) + node}, now.UnixMilli(), retention.Milliseconds(), tokenID).Err()
	return wrapErr("account join", err)
}

var accountJoinScript = redis.NewScript(`
redis.call('HSET', KEYS[1], 'tok', ARGV[3])
local at = redis.call('HGET', KEYS[1], 'at')
if not at or tonumber(at) < tonumber(ARGV[1]) then redis.call('HSET', KEYS[1], 'at', ARGV[1]) end
redis.call('PEXPIRE', KEYS[1], ARGV[2])
return 1`)

// NodeAccountToken returns the id of the node token node joined with, as
// its latest accounted heartbeat said (kept for the retention, after the
// node left the registry); ErrNotFound when none is known.
func (s *Store) NodeAccountToken(ctx context.Context, node string) (string, error) {
	tok, err := s.rdb.HGet(ctx, s.k(epochNodePrefix)+node, "tok").Result()
	if errors.Is(err, redis.Nil) {
		return "", ErrNotFound
	}
	return tok, wrapErr("node account token", err)
}

// Epochs returns the starts of the latest epochs with figures, newest
// first, at most max.
func (s *Store) Epochs(ctx context.Context, max int) ([]time.Time, error) {
	if max <= 0 {
		return nil, nil
	}
	list, err := s.rdb.ZRevRange(ctx, s.k(epochsIndex), 0, int64(max-1)).Result()
	if err != nil {
		return nil, wrapErr("epochs", err)
	}
	out := make([]time.Time, 0, len(list))
	for _, id := range list {
		if t, err := ParseEpochID(id); err == nil {
			out = append(out, t)
		}
	}
	return out, nil
}

// SealEpochReport stores report as the sealed report of the epoch that
// starts at start, unless one is stored already, and returns the one
// stored: every origin serves the first one sealed.
func (s *Store) SealEpochReport(ctx context.Context, start time.Time, report []byte, retention time.Duration) ([]byte, error) {
	key := s.k(epochReportPrefix) + EpochID(start)
	var get *redis.StringCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SetNX(ctx, key, report, retention)
		get = p.Get(ctx, key)
		return nil
	})
	if err != nil {
		return nil, wrapErr("seal epoch report", err)
	}
	return []byte(get.Val()), nil
}

// SealedEpochReport returns the sealed report of the epoch that starts at
// start, or ErrNotFound.
func (s *Store) SealedEpochReport(ctx context.Context, start time.Time) ([]byte, error) {
	b, err := s.rdb.Get(ctx, s.k(epochReportPrefix)+EpochID(start)).Bytes()
	if errors.Is(err, redis.Nil) {
		return nil, ErrNotFound
	}
	return b, wrapErr("sealed epoch report", err)
}

// EpochFigures returns every node's figures in the epoch that starts at
// start (node id -> figure name -> value); empty when none were recorded.
func (s *Store) EpochFigures(ctx context.Context, start time.Time) (map[string]map[string]int64, error) {
	id := EpochID(start)
	nodes, err := s.rdb.SMembers(ctx, s.epochNodesKey(id)).Result()
	if err != nil {
		return nil, wrapErr("epoch figures", err)
	}
	sort.Strings(nodes)
	cmds := make([]*redis.MapStringStringCmd, len(nodes))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range nodes {
			cmds[i] = p.HGetAll(ctx, s.epochNodeKey(id, n))
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("epoch figures", err)
	}
	out := make(map[string]map[string]int64, len(nodes))
	for i, n := range nodes {
		f := map[string]int64{}
		for k, v := range cmds[i].Val() {
			if x, err := strconv.ParseInt(v, 10, 64); err == nil {
				f[k] = x
			}
		}
		if len(f) > 0 {
			out[n] = f
		}
	}
	return out, nil
}
