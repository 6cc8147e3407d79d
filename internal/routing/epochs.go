package routing

import (
	"context"
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
//
// Both expire after the retention the caller passes (accounting.retention).
const epochPrefix = "shoal:epoch:"

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

func epochNodesKey(id string) string      { return epochPrefix + id + ":nodes" }
func epochNodeKey(id, node string) string { return epochPrefix + id + ":node:" + node }

// KEYS[1] the epoch's node set, KEYS[2] the node's hash; ARGV[1] the node
// id, ARGV[2] the TTL in ms, ARGV[3] the counter cap, then name, delta
// pairs. A counter never passes the cap.
var addFiguresScript = redis.NewScript(`
redis.call('SADD', KEYS[1], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[2])
local cap = tonumber(ARGV[3])
for i = 4, #ARGV, 2 do
  local v = redis.call('HINCRBY', KEYS[2], ARGV[i], ARGV[i+1])
  if v > cap then redis.call('HSET', KEYS[2], ARGV[i], cap) end
end
redis.call('PEXPIRE', KEYS[2], ARGV[2])
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
	args := []any{node, retention.Milliseconds(), int64(maxFigure)}
	for _, k := range names {
		args = append(args, k, deltas[k])
	}
	err := addFiguresScript.Run(ctx, s.rdb, []string{epochNodesKey(id), epochNodeKey(id, node)}, args...).Err()
	return wrapErr("add epoch figures", err)
}

// EpochFigures returns every node's figures in the epoch that starts at
// start (node id -> figure name -> value); empty when none were recorded.
func (s *Store) EpochFigures(ctx context.Context, start time.Time) (map[string]map[string]int64, error) {
	id := EpochID(start)
	nodes, err := s.rdb.SMembers(ctx, epochNodesKey(id)).Result()
	if err != nil {
		return nil, wrapErr("epoch figures", err)
	}
	sort.Strings(nodes)
	cmds := make([]*redis.MapStringStringCmd, len(nodes))
	_, err = s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, n := range nodes {
			cmds[i] = p.HGetAll(ctx, epochNodeKey(id, n))
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
