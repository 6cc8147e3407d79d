package routing

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// What the origin keeps to decide which nodes it trusts with viewers:
//
//	shoal:nodetokenids:<token id>  zset  node ids that joined with the token, by last join or heartbeat (Unix ms)
//	shoal:nodequarantine:<node id> hash  reason, at: the node is not routed to until an admin releases it
//	shoal:nodereports:<node id>    list  recent delivery reports (JSON), newest first, capped
//	shoal:nodereporters:<node id>  zset  viewer networks whose reports count against the node, by last report (Unix ms)
//	shoal:placement-secret         string the key of placement hashing (made once, shared by origins)
const (
	tokenIdentitiesPrefix = "nodetokenids:"
	quarantinePrefix      = "nodequarantine:"
	reportsPrefix         = "nodereports:"
	reportersPrefix       = "nodereporters:"
	placementSecretKey    = "placement-secret"
)

// IdentityWindow is how long an identity a token joined with counts against
// the token's cap after it was last seen.
const IdentityWindow = 24 * time.Hour

// MaxReportsKept is how many delivery reports are kept per node.
const MaxReportsKept = 50

// reportsTTL is how long a node's reports are kept after the newest one.
const reportsTTL = 7 * 24 * time.Hour

// ErrTooManyIdentities is returned by JoinNodeCapped when the token already
// holds its cap of other identities.
var ErrTooManyIdentities = errors.New("this node token already holds its maximum number of node identities")

// JoinNodeCapped is JoinNode for a node token that may hold at most max
// identities seen within IdentityWindow (max <= 0: no cap). A node joining
// again with an identity the token already holds is always accepted.
func (s *Store) JoinNodeCapped(ctx context.Context, n Node, ttl time.Duration, max int) error {
	if max > 0 && n.TokenID != AdminTokenID {
		key := s.k(tokenIdentitiesPrefix) + n.TokenID
		t := now()
		res, err := claimIdentityScript.Run(ctx, s.rdb, []string{key}, n.ID, t.UnixMilli(),
			t.Add(-IdentityWindow).UnixMilli(), max, IdentityWindow.Milliseconds()).Int()
		if err != nil {
			return wrapErr("join node", err)
		}
		if res == 0 {
			return ErrTooManyIdentities
		}
	}
	return s.JoinNode(ctx, n, ttl)
}

var claimIdentityScript = redis.NewScript(`
redis.call('ZREMRANGEBYSCORE', KEYS[1], '-inf', '(' .. ARGV[3])
if not redis.call('ZSCORE', KEYS[1], ARGV[1]) and redis.call('ZCARD', KEYS[1]) >= tonumber(ARGV[4]) then
  return 0
end
redis.call('ZADD', KEYS[1], ARGV[2], ARGV[1])
redis.call('PEXPIRE', KEYS[1], ARGV[5])
return 1`)

// TokenIdentities returns how many identities token id holds now.
func (s *Store) TokenIdentities(ctx context.Context, tokenID string) (int64, error) {
	n, err := s.rdb.ZCount(ctx, s.k(tokenIdentitiesPrefix)+tokenID, strconv.FormatInt(now().Add(-IdentityWindow).UnixMilli(), 10), "+inf").Result()
	return n, wrapErr("token identities", err)
}

// Quarantine is why and since when a node is not routed to.
type Quarantine struct {
	Reason string
	At     time.Time
}

// QuarantineNode quarantines node id (it stays so until ReleaseNode, even
// if it leaves and joins again). The first reason is kept.
func (s *Store) QuarantineNode(ctx context.Context, id, reason string) error {
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSetNX(ctx, s.k(quarantinePrefix)+id, "reason", reason)
		p.HSetNX(ctx, s.k(quarantinePrefix)+id, "at", formatTime(now()))
		return nil
	})
	return wrapErr("quarantine node", err)
}

// ReleaseNode lifts node id's quarantine; ErrNotFound if it had none.
func (s *Store) ReleaseNode(ctx context.Context, id string) error {
	n, err := s.rdb.Del(ctx, s.k(quarantinePrefix)+id).Result()
	if err != nil {
		return wrapErr("release node", err)
	}
	if n == 0 {
		return ErrNotFound
	}
	return nil
}

// Quarantines returns the quarantine of each of the node ids that has one.
func (s *Store) Quarantines(ctx context.Context, idList []string) (map[string]Quarantine, error) {
	out := map[string]Quarantine{}
	if len(idList) == 0 {
		return out, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(idList))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range idList {
			cmds[i] = p.HGetAll(ctx, s.k(quarantinePrefix)+id)
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("quarantines", err)
	}
	for i, c := range cmds {
		f := c.Val()
		if len(f) == 0 {
			continue
		}
		at, _ := parseTime(f["at"])
		out[idList[i]] = Quarantine{Reason: f["reason"], At: at}
	}
	return out, nil
}

// DeliveryReport is what a viewer's player reported about a node, with
// what the origin made of it.
type DeliveryReport struct {
	At        time.Time `json:"at"`
	Kind      string    `json:"kind"` // hash_mismatch, bad_manifest, stale_manifest, unlisted, http_error, timeout
	URL       string    `json:"url"`
	Expected  string    `json:"expected_sha256,omitempty"`
	Received  string    `json:"received_sha256,omitempty"`
	Detail    string    `json:"detail,omitempty"`
	Reporter  string    `json:"reporter"` // the viewer's network (an address prefix)
	Offered   bool      `json:"offered"`  // the origin had offered this node to that network
	Confirmed bool      `json:"confirmed"`
	Refuted   bool      `json:"refuted,omitempty"` // the audit saw the node serve the published object
	Audit     string    `json:"audit,omitempty"`   // what the origin's own check found
}

// AddDeliveryReport records r for node id and returns the reports kept.
func (s *Store) AddDeliveryReport(ctx context.Context, id string, r DeliveryReport) error {
	b, err := json.Marshal(r)
	if err != nil {
		return fmt.Errorf("routing: report: %w", err)
	}
	key := s.k(reportsPrefix) + id
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.LPush(ctx, key, b)
		p.LTrim(ctx, key, 0, MaxReportsKept-1)
		p.PExpire(ctx, key, reportsTTL)
		return nil
	})
	return wrapErr("add delivery report", err)
}

// AddReporter records that network reported node id and returns how many
// distinct networks did within window.
func (s *Store) AddReporter(ctx context.Context, id, network string, window time.Duration) (int64, error) {
	t := now()
	key := s.k(reportersPrefix) + id
	var count *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.ZAdd(ctx, key, redis.Z{Score: float64(t.UnixMilli()), Member: network})
		p.ZRemRangeByScore(ctx, key, "-inf", "("+strconv.FormatInt(t.Add(-window).UnixMilli(), 10))
		count = p.ZCard(ctx, key)
		p.PExpire(ctx, key, window)
		return nil
	})
	if err != nil {
		return 0, wrapErr("add reporter", err)
	}
	return count.Val(), nil
}

// RecentDeliveryReports returns up to n recent reports of each of the node
// ids, newest first, in one round trip.
func (s *Store) RecentDeliveryReports(ctx context.Context, idList []string, n int) (map[string][]DeliveryReport, error) {
	out := make(map[string][]DeliveryReport, len(idList))
	if len(idList) == 0 {
		return out, nil
	}
	cmds := make([]*redis.StringSliceCmd, len(idList))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range idList {
			cmds[i] = p.LRange(ctx, s.k(reportsPrefix)+id, 0, int64(n)-1)
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("delivery reports", err)
	}
	for i, c := range cmds {
		out[idList[i]] = decodeReports(c.Val())
	}
	return out, nil
}

func decodeReports(raw []string) []DeliveryReport {
	out := make([]DeliveryReport, 0, len(raw))
	for _, s := range raw {
		var r DeliveryReport
		if json.Unmarshal([]byte(s), &r) == nil {
			out = append(out, r)
		}
	}
	return out
}

// PlacementSecret returns the secret that keys placement hashing, making
// it on first use; every origin sharing the Redis uses the same one.
func (s *Store) PlacementSecret(ctx context.Context) ([]byte, error) {
	var b [32]byte
	if _, err := rand.Read(b[:]); err != nil {
		return nil, err
	}
	if err := s.rdb.SetNX(ctx, s.k(placementSecretKey), hex.EncodeToString(b[:]), 0).Err(); err != nil {
		return nil, wrapErr("placement secret", err)
	}
	v, err := s.rdb.Get(ctx, s.k(placementSecretKey)).Result()
	if err != nil {
		return nil, wrapErr("placement secret", err)
	}
	secret, err := hex.DecodeString(v)
	if err != nil || len(secret) < 16 {
		return nil, fmt.Errorf("routing: %s holds no usable secret", s.k(placementSecretKey))
	}
	return secret, nil
}
