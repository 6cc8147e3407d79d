package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/nodeproto"
)

// Node tokens let independently run nodes (edges, workers) join. A node
// record lives only as long as its heartbeats keep it alive.
//
//	shoal:nodetoken:<sha256(token)>  hash   id, name, created_at
//	shoal:nodetokenid:<id>           string sha256 of the token (to revoke by id)
//	shoal:node:<node id>             hash   role, region, public_url, public_key, token_id, joined_at,
//	                                        last_heartbeat, load (JSON); expires NodeTTL after the last heartbeat
//	shoal:nodes                      zset   node ids by last heartbeat (Unix ms); pruned of expired nodes
const (
	nodeTokenPrefix   = "nodetoken:"
	nodeTokenIDPrefix = "nodetokenid:"
	nodePrefix        = "node:"
	nodesIndex        = "nodes"
)

// NodeToken is an issued node token (its secret is shown once).
type NodeToken struct {
	ID        string
	Name      string
	CreatedAt time.Time
}

// AdminTokenID is the token id recorded for nodes that joined with the
// admin key rather than an issued node token.
const AdminTokenID = "admin"

// Node is a live node as the registry knows it.
type Node struct {
	ID        string
	Role      string // "edge" or "worker"
	Region    string
	PublicURL string
	PublicKey string // base64 ed25519 public key; the id is derived from it
	TokenID   string
	JoinedAt  time.Time
	LastSeen  time.Time
	Load      NodeLoad
	// Quarantine is set when the node is quarantined (ListNodes fills it).
	Quarantine *Quarantine
}

// NodeLoad is what a node reports with every heartbeat.
type NodeLoad struct {
	Connections       int64            `json:"connections"`
	EgressBytesPerSec float64          `json:"egress_bytes_per_sec"`
	CacheBytes        int64            `json:"cache_bytes"`
	BytesServed       int64            `json:"bytes_served"`
	Hits              int64            `json:"hits"`
	Misses            int64            `json:"misses"`
	OriginFetches     int64            `json:"origin_fetches"`
	StreamBytes       map[string]int64 `json:"stream_bytes,omitempty"`
	// Viewers is how many distinct viewers the node served recently, and
	// MaxViewers how many it says it can take (0: not declared).
	Viewers    int64 `json:"viewers,omitempty"`
	MaxViewers int64 `json:"max_viewers,omitempty"`
	// MaxEgressBytesPerSec is the egress the node says it can send (0:
	// not declared); at 90% of it the node takes no more viewers.
	MaxEgressBytesPerSec float64 `json:"max_egress_bytes_per_sec,omitempty"`
	// Transcode is what a worker says it transcodes with (its join's,
	// then its latest heartbeat's); nil for edges.
	Transcode *nodeproto.Transcoding `json:"transcode,omitempty"`
}

// HitRatio is hits / (hits + misses), or 0 before any request.
func (l NodeLoad) HitRatio() float64 {
	if l.Hits+l.Misses == 0 {
		return 0
	}
	return float64(l.Hits) / float64(l.Hits+l.Misses)
}

// ErrTokenRevoked is returned by Heartbeat when the token a node joined
// with was revoked: the node must stop serving as part of the network.
var ErrTokenRevoked = errors.New("the node token was revoked")

// CreateNodeToken issues a node token named name.
func (s *Store) CreateNodeToken(ctx context.Context, name string) (string, NodeToken, error) {
	plain := ids.NewSecret("nt")
	t := NodeToken{ID: ids.New(), Name: name, CreatedAt: now()}
	h := ids.Hash(plain)
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, s.k(nodeTokenPrefix)+h, "id", t.ID, fieldName, t.Name, fieldCreatedAt, formatTime(t.CreatedAt))
		p.Set(ctx, s.k(nodeTokenIDPrefix)+t.ID, h, 0)
		return nil
	})
	if err != nil {
		return "", NodeToken{}, wrapErr("create node token", err)
	}
	return plain, t, nil
}

// VerifyNodeToken returns the token's record, or ErrNotFound.
func (s *Store) VerifyNodeToken(ctx context.Context, token string) (NodeToken, error) {
	f, err := s.rdb.HGetAll(ctx, s.k(nodeTokenPrefix)+ids.Hash(token)).Result()
	if err != nil {
		return NodeToken{}, wrapErr("verify node token", err)
	}
	if len(f) == 0 {
		return NodeToken{}, ErrNotFound
	}
	created, err := parseTime(f[fieldCreatedAt])
	if err != nil {
		return NodeToken{}, &decodeError{key: "node token", err: err}
	}
	return NodeToken{ID: f["id"], Name: f[fieldName], CreatedAt: created}, nil
}

// RevokeNodeToken deletes the token id; nodes that joined with it are
// refused at their next heartbeat.
func (s *Store) RevokeNodeToken(ctx context.Context, id string) error {
	h, err := s.rdb.Get(ctx, s.k(nodeTokenIDPrefix)+id).Result()
	if errors.Is(err, redis.Nil) {
		return ErrNotFound
	}
	if err != nil {
		return wrapErr("revoke node token", err)
	}
	_, err = s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, s.k(nodeTokenPrefix)+h, s.k(nodeTokenIDPrefix)+id)
		return nil
	})
	return wrapErr("revoke node token", err)
}

// JoinNode records node as live for ttl. A node that joins again (a
// restart) keeps its id, which its key determines.
func (s *Store) JoinNode(ctx context.Context, n Node, ttl time.Duration) error {
	t := now()
	load, _ := json.Marshal(n.Load)
	key := s.k(nodePrefix) + n.ID
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.Del(ctx, key)
		p.HSet(ctx, key, "role", n.Role, "region", n.Region, "public_url", n.PublicURL, "public_key", n.PublicKey,
			"token_id", n.TokenID, "joined_at", formatTime(t), "last_heartbeat", formatTime(t), "load", string(load))
		p.PExpire(ctx, key, ttl)
		p.ZAdd(ctx, s.k(nodesIndex), redis.Z{Score: float64(t.UnixMilli()), Member: n.ID})
		return nil
	})
	return wrapErr("join node", err)
}

// GetNode returns the live node id, or ErrNotFound (never joined, or its
// heartbeats stopped).
func (s *Store) GetNode(ctx context.Context, id string) (Node, error) {
	f, err := s.rdb.HGetAll(ctx, s.k(nodePrefix)+id).Result()
	if err != nil {
		return Node{}, wrapErr("get node", err)
	}
	n, err := s.decodeNode(id, f)
	if err != nil {
		return Node{}, err
	}
	q, err := s.Quarantines(ctx, []string{id})
	if err != nil {
		return Node{}, err
	}
	if qq, ok := q[id]; ok {
		n.Quarantine = &qq
	}
	return n, nil
}

// NodeHeartbeat records a heartbeat of the live node id with its load and
// extends its life by ttl. It returns ErrNotFound when the node is not
// live (it must join again) and ErrTokenRevoked when its token is gone.
func (s *Store) NodeHeartbeat(ctx context.Context, id string, load NodeLoad, ttl time.Duration) error {
	b, err := json.Marshal(load)
	if err != nil {
		return fmt.Errorf("routing: heartbeat: %w", err)
	}
	// The keys of the node's token depend on the token id in its record:
	// read it, then have the script check that it did not change, so
	// every key the script touches is declared (Redis Cluster).
	var res string
	for range maxTxAttempts {
		tok, err := s.rdb.HGet(ctx, s.k(nodePrefix)+id, "token_id").Result()
		if errors.Is(err, redis.Nil) {
			return ErrNotFound
		}
		if err != nil {
			return wrapErr("heartbeat", err)
		}
		t := now()
		res, err = heartbeatScript.Run(ctx, s.rdb,
			[]string{s.k(nodePrefix) + id, s.k(nodesIndex), s.k(nodeTokenIDPrefix) + tok, s.k(tokenIdentitiesPrefix) + tok},
			string(b), formatTime(t), ttl.Milliseconds(), t.UnixMilli(), id, tok, IdentityWindow.Milliseconds()).Text()
		if err != nil {
			return wrapErr("heartbeat", err)
		}
		if res != "stale" {
			break
		}
	}
	switch res {
	case "ok":
		return nil
	case "revoked":
		return ErrTokenRevoked
	case "stale":
		return fmt.Errorf("routing: heartbeat: %w", errTxConflict)
	default:
		return ErrNotFound
	}
}

// KEYS: 1 node, 2 nodes index, 3 the token's id key, 4 the token's
// identities (both of the token id read before: "stale" when it changed).
// ARGV: 1 load, 2 now (text), 3 ttl (ms), 4 now (ms), 5 node id,
// 6 token id, 7 identity window (ms).
var heartbeatScript = redis.NewScript(`
local tok = redis.call('HGET', KEYS[1], 'token_id')
if not tok then return 'missing' end
if tok ~= ARGV[6] then return 'stale' end
if tok ~= 'admin' and redis.call('EXISTS', KEYS[3]) == 0 then
  redis.call('DEL', KEYS[1])
  redis.call('ZREM', KEYS[2], ARGV[5])
  return 'revoked'
end
redis.call('HSET', KEYS[1], 'load', ARGV[1], 'last_heartbeat', ARGV[2])
redis.call('PEXPIRE', KEYS[1], ARGV[3])
redis.call('ZADD', KEYS[2], ARGV[4], ARGV[5])
if tok ~= 'admin' then
  -- The identity stays counted against its token while it lives.
  if redis.call('EXISTS', KEYS[4]) == 1 then
    redis.call('ZADD', KEYS[4], ARGV[4], ARGV[5])
    redis.call('PEXPIRE', KEYS[4], ARGV[7])
  end
end
return 'ok'`)

// ListNodes returns the live nodes, most recently seen first. Nodes whose
// record expired are pruned from the index on the way.
func (s *Store) ListNodes(ctx context.Context) ([]Node, error) {
	idList, err := s.rdb.ZRevRange(ctx, s.k(nodesIndex), 0, -1).Result()
	if err != nil {
		return nil, wrapErr("list nodes", err)
	}
	out, gone, err := records(ctx, s, "list nodes", s.k(nodePrefix), idList, s.decodeNode)
	if err != nil {
		return nil, err
	}
	live := make([]string, len(out))
	for i, n := range out {
		live[i] = n.ID
	}
	q, err := s.Quarantines(ctx, live)
	if err != nil {
		return nil, err
	}
	for i := range out {
		if qq, ok := q[out[i].ID]; ok {
			out[i].Quarantine = &qq
		}
	}
	if len(gone) > 0 {
		members := make([]any, len(gone))
		for i, id := range gone {
			members[i] = id
		}
		_ = s.rdb.ZRem(ctx, s.k(nodesIndex), members...).Err()
	}
	return out, nil
}

func (s *Store) decodeNode(id string, f map[string]string) (Node, error) {
	if len(f) == 0 || f["role"] == "" {
		return Node{}, ErrNotFound
	}
	n := Node{ID: id, Role: f["role"], Region: f["region"], PublicURL: f["public_url"], PublicKey: f["public_key"], TokenID: f["token_id"]}
	var err error
	if n.JoinedAt, err = parseTime(f["joined_at"]); err != nil {
		return Node{}, &decodeError{key: s.k(nodePrefix) + id, err: err}
	}
	if n.LastSeen, err = parseTime(f["last_heartbeat"]); err != nil {
		return Node{}, &decodeError{key: s.k(nodePrefix) + id, err: err}
	}
	if load := f["load"]; load != "" {
		if err := json.Unmarshal([]byte(load), &n.Load); err != nil {
			return Node{}, &decodeError{key: s.k(nodePrefix) + id, err: fmt.Errorf("load: %w", err)}
		}
	}
	return n, nil
}
