package routing

import (
	"context"
	"os"
	"sync"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// testRedis is the Redis a test's Store talks to: one redis-server, or a
// three-master cluster (SHOAL_TEST_REDIS=cluster).
type testRedis struct {
	// URL is the SHOAL_REDIS_URL of either.
	URL     string
	single  *redistest.Server
	cluster *redistest.Cluster
}

// Kill kills the server, or every node of the cluster.
func (r *testRedis) Kill() {
	if r.cluster != nil {
		r.cluster.Kill()
		return
	}
	r.single.Kill()
}

// Restart starts it again with empty data.
func (r *testRedis) Restart(t *testing.T) {
	t.Helper()
	if r.cluster != nil {
		r.cluster.Restart(t)
		return
	}
	r.single.Restart(t)
}

// flushAll empties every master of s's Redis.
func flushAll(ctx context.Context, s *Store) error {
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			return m.FlushAll(ctx).Err()
		})
	}
	return s.rdb.FlushAll(ctx).Err()
}

// serverOf is the server that holds s's keys: s's Redis, or the master of
// a cluster that serves the slot of its hash tag (for CONFIG SET and
// keyspace notifications, which are per node).
func serverOf(ctx context.Context, t *testing.T, s *Store) redis.UniversalClient {
	t.Helper()
	c, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return s.rdb
	}
	m, err := c.MasterForKey(ctx, s.k("x"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// onCluster reports whether the tests run on a Redis Cluster
// (SHOAL_TEST_REDIS=cluster): newTestStore then starts a three-master
// cluster for each test instead of one redis-server.
func onCluster() bool { return os.Getenv("SHOAL_TEST_REDIS") == "cluster" }

// singleRedisOnly skips a test that talks to its redis-server through a
// TCP proxy of its own, which a cluster client (redirected to the nodes'
// own addresses) bypasses; the test runs in the default run.
func singleRedisOnly(t *testing.T) {
	t.Helper()
	if onCluster() {
		t.Skip("kills its redis-server: runs on a single Redis only")
	}
}

// allKeys is KEYS pattern over every master of s's Redis (a cluster's KEYS
// answers for one node).
func allKeys(ctx context.Context, s *Store, pattern string) ([]string, error) {
	c, ok := s.rdb.(*redis.ClusterClient)
	if !ok {
		return s.rdb.Keys(ctx, pattern).Result()
	}
	var (
		mu  sync.Mutex
		out []string
	)
	err := c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
		keys, err := m.Keys(ctx, pattern).Result()
		mu.Lock()
		out = append(out, keys...)
		mu.Unlock()
		return err
	})
	return out, err
}
