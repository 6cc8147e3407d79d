package routing

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// P2P stats: what the players of a live stream or video reported
// downloading, over HTTP and from other peers, summed over every node's
// P2P tracker (edges send theirs with their heartbeats, origins add their
// own). The figures are viewers' claims, clamped by the trackers, not
// measurements.
//
//	shoal:p2p:<id>              hash    http, p2p: bytes (deleted with the live stream or video)
//	shoal:p2pbatch:<source>     hash    boot -> the last sequence number applied from that node
//	                                    (or origin) in that run, so a batch sent again after a lost
//	                                    answer, or arriving late, is not counted twice
const (
	p2pPrefix      = "p2p:"
	p2pBatchPrefix = "p2pbatch:"
	// P2PBatchTTL is how long a source's batch log is kept after its last
	// batch.
	P2PBatchTTL = 24 * time.Hour
	// maxP2PBoots bounds a source's batch log: beyond, it keeps only the
	// current run.
	maxP2PBoots = 16
	// maxP2PCounter caps a counter, far from HINCRBY's int64 overflow.
	maxP2PCounter = 1 << 62
)

func (s *Store) p2pKey(id string) string { return s.k(p2pPrefix) + id }

// P2PBytes is what players reported downloading, by source.
type P2PBytes struct {
	HTTP int64
	P2P  int64
}

// Offload is the share of the bytes that came from peers (0 when none).
func (b P2PBytes) Offload() float64 {
	if b.HTTP+b.P2P <= 0 {
		return 0
	}
	return float64(b.P2P) / (float64(b.HTTP) + float64(b.P2P))
}

// KEYS[1] the source's batch key, then per id: live stream, video, p2p
// key. ARGV[1] the batch id ("" never deduplicates), ARGV[2] its TTL in
// ms, ARGV[3] the counter cap, then per id: http, p2p. Returns "" for a
// batch already applied, else one character per id: "1" added, "0" not
// (no such live stream or video).
var addP2PScript = redis.NewScript(`
local boot, seq = string.match(ARGV[1], '^(.+)-(%d+)$')
if boot then
  seq = tonumber(seq)
  if redis.call('TYPE', KEYS[1]).ok ~= 'hash' then redis.call('DEL', KEYS[1]) end
  local last = tonumber(redis.call('HGET', KEYS[1], boot) or '0')
  if seq <= last then return 'dup' end
elseif ARGV[1] ~= '' then
  if redis.call('TYPE', KEYS[1]).ok ~= 'string' then redis.call('DEL', KEYS[1]) end
  if redis.call('GET', KEYS[1]) == ARGV[1] then return 'dup' end
end
local cap = tonumber(ARGV[3])
local out = {}
local n = (#KEYS - 1) / 3
for i = 0, n - 1 do
  local p = KEYS[4 + 3 * i]
  if redis.call('EXISTS', KEYS[2 + 3 * i]) == 1 or redis.call('EXISTS', KEYS[3 + 3 * i]) == 1 then
    local fields = {'http', 'p2p'}
    for j = 1, 2 do
      local arg = ARGV[3 + 2 * i + j]
      local d = tonumber(arg)
      if d > 0 then
        local cur = tonumber(redis.call('HGET', p, fields[j]) or '0')
        if cur + d >= cap then
          redis.call('HSET', p, fields[j], ARGV[3])
        else
          redis.call('HINCRBY', p, fields[j], arg)
        end
      end
    end
    out[#out + 1] = '1'
  else
    out[#out + 1] = '0'
  end
end
if boot then
  if redis.call('HLEN', KEYS[1]) >= ` + strconv.Itoa(maxP2PBoots) + ` and redis.call('HEXISTS', KEYS[1], boot) == 0 then redis.call('DEL', KEYS[1]) end
  redis.call('HSET', KEYS[1], boot, seq)
  redis.call('PEXPIRE', KEYS[1], ARGV[2])
elseif ARGV[1] ~= '' then
  redis.call('SET', KEYS[1], ARGV[1], 'PX', ARGV[2])
end
return 'ok' .. table.concat(out)`)

// AddP2PStats adds a batch of per-id byte counts reported through the
// P2P tracker of source (a node id, or an origin's name), in one atomic
// step. Ids that are not a live stream or video are skipped. batch
// identifies the batch, "<boot>-<seq>" (boot random per run of the
// source, seq growing): a batch whose seq is not above the last one
// applied from that boot is not added (a batch sent again because its
// answer was lost, or one arriving late); the log of boots lasts
// P2PBatchTTL after the source's last batch. Another name is
// deduplicated against the source's last batch only. It returns what was
// added (zero when the batch was already applied) and whether it was a
// repeat.
func (s *Store) AddP2PStats(ctx context.Context, source, batch string, deltas map[string]P2PBytes) (added P2PBytes, repeat bool, err error) {
	if len(deltas) == 0 {
		return P2PBytes{}, false, nil
	}
	keys := make([]string, 0, 1+3*len(deltas))
	args := make([]any, 0, 3+2*len(deltas))
	keys = append(keys, s.k(p2pBatchPrefix)+source)
	args = append(args, batch, P2PBatchTTL.Milliseconds(), strconv.FormatInt(maxP2PCounter, 10))
	order := make([]P2PBytes, 0, len(deltas))
	for id, d := range deltas {
		keys = append(keys, s.liveStreamKey(id), s.videoKey(id), s.p2pKey(id))
		args = append(args, max(d.HTTP, 0), max(d.P2P, 0))
		order = append(order, d)
	}
	res, err := addP2PScript.Run(ctx, s.rdb, keys, args...).Text()
	if err != nil {
		return P2PBytes{}, false, wrapErr("add p2p stats", err)
	}
	if res == "dup" {
		return P2PBytes{}, true, nil
	}
	for i, ch := range res[len("ok"):] {
		if ch == '1' && i < len(order) {
			added.HTTP += max(order[i].HTTP, 0)
			added.P2P += max(order[i].P2P, 0)
		}
	}
	return added, false, nil
}

// P2PStats returns the P2P stats of ids (zero for those with none).
func (s *Store) P2PStats(ctx context.Context, idList []string) (map[string]P2PBytes, error) {
	out := make(map[string]P2PBytes, len(idList))
	if len(idList) == 0 {
		return out, nil
	}
	cmds := make([]*redis.SliceCmd, len(idList))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range idList {
			cmds[i] = p.HMGet(ctx, s.p2pKey(id), "http", "p2p")
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("read p2p stats", err)
	}
	for i, id := range idList {
		v := cmds[i].Val()
		var b P2PBytes
		if len(v) == 2 {
			b.HTTP = counter(v[0])
			b.P2P = counter(v[1])
		}
		out[id] = b
	}
	return out, nil
}

func counter(v any) int64 {
	s, ok := v.(string)
	if !ok {
		return 0
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil || n < 0 {
		return 0
	}
	return n
}
