package routing

import (
	"bufio"
	"context"
	"crypto/sha1"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// The routing tests run on one redis-server each by default. They run on
// a Redis Cluster:
//
//   - with SHOAL_TEST_REDIS=cluster: each test starts a three-master
//     cluster of its own (go test ./internal/routing, about 30 s);
//   - always, in TestRoutingOnRedisCluster: it starts one three-master
//     cluster and runs the package's tests again in a child process on it
//     (SHOAL_TEST_REDIS_CLUSTER_URL), each test with a hash tag of its own
//     ("{shoal-N}:" rather than "{shoal}:"), so that they do not meet and
//     their keys spread over the masters; and it checks that every Lua
//     script of the package ran there.

// onCluster reports whether the tests run on a Redis Cluster.
func onCluster() bool {
	return os.Getenv("SHOAL_TEST_REDIS") == "cluster" || sharedClusterURL() != ""
}

// sharedClusterURL is the cluster every test shares, "" if none.
func sharedClusterURL() string { return os.Getenv("SHOAL_TEST_REDIS_CLUSTER_URL") }

// testPrefixes numbers the key prefixes of the tests on a shared cluster.
var testPrefixes atomic.Int64

// singleRedisOnly skips a test that talks to its redis-server through a
// TCP proxy of its own, which a cluster client (redirected to the nodes'
// own addresses) bypasses; the test runs in the default run.
func singleRedisOnly(t *testing.T) {
	t.Helper()
	if onCluster() {
		t.Skip("talks to redis-server through a proxy: runs on a single Redis only")
	}
}

// testRedis is the Redis a test's Store talks to: one redis-server, a
// three-master cluster of the test's own, or a cluster shared by the
// tests (prefix set).
type testRedis struct {
	// URL is the SHOAL_REDIS_URL of either.
	URL     string
	single  *redistest.Server
	cluster *redistest.Cluster
	// prefix replaces the Stores' key prefix on a shared cluster.
	prefix string
}

// ownRedis skips a test that kills its Redis when the cluster is shared
// (the test runs on a Redis or a cluster of its own in the other runs).
func (r *testRedis) ownRedis(t *testing.T) {
	t.Helper()
	if !r.killable() {
		t.Skip("kills its Redis: not on a shared cluster")
	}
}

// killable reports whether the test may kill its Redis (its own).
func (r *testRedis) killable() bool { return r.single != nil || r.cluster != nil }

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

// flushAll deletes s's keys: FLUSHALL on every master, or on a shared
// cluster the keys of s's prefix.
func flushAll(ctx context.Context, s *Store) error {
	if sharedClusterURL() != "" {
		keys, err := allKeys(ctx, s, "*")
		if err != nil {
			return err
		}
		for _, k := range keys {
			if err := s.rdb.Del(ctx, k).Err(); err != nil {
				return err
			}
		}
		return nil
	}
	if c, ok := s.rdb.(*redis.ClusterClient); ok {
		return c.ForEachMaster(ctx, func(ctx context.Context, m *redis.Client) error {
			return m.FlushAll(ctx).Err()
		})
	}
	return s.rdb.FlushAll(ctx).Err()
}

// allKeys is KEYS pattern over every master of s's Redis (a cluster's KEYS
// answers for one node); on a shared cluster, only the keys of s's prefix.
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
		defer mu.Unlock()
		for _, k := range keys {
			if sharedClusterURL() == "" || strings.HasPrefix(k, s.prefix) {
				out = append(out, k)
			}
		}
		return err
	})
	return out, err
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

// recordScripts has s note the SHA1 of every script it runs in the file
// SHOAL_TEST_SCRIPTS_FILE, if set, when the test ends.
func recordScripts(t *testing.T, s *Store) {
	path := os.Getenv("SHOAL_TEST_SCRIPTS_FILE")
	if path == "" {
		return
	}
	h := &scriptHook{seen: map[string]bool{}}
	s.rdb.AddHook(h)
	t.Cleanup(func() {
		h.mu.Lock()
		defer h.mu.Unlock()
		var b strings.Builder
		for sha := range h.seen {
			b.WriteString(sha + "\n")
		}
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND|os.O_CREATE, 0o600)
		if err != nil {
			t.Error(err)
			return
		}
		defer f.Close()
		if _, err := f.WriteString(b.String()); err != nil {
			t.Error(err)
		}
	})
}

// scriptHook records the scripts a client ran without an error (EVALSHA's
// SHA1, EVAL's source hashed), alone or in pipelines.
type scriptHook struct {
	mu   sync.Mutex
	seen map[string]bool
}

func (h *scriptHook) DialHook(next redis.DialHook) redis.DialHook { return next }

func (h *scriptHook) ProcessHook(next redis.ProcessHook) redis.ProcessHook {
	return func(ctx context.Context, cmd redis.Cmder) error {
		err := next(ctx, cmd)
		h.note(cmd)
		return err
	}
}

func (h *scriptHook) ProcessPipelineHook(next redis.ProcessPipelineHook) redis.ProcessPipelineHook {
	return func(ctx context.Context, cmds []redis.Cmder) error {
		err := next(ctx, cmds)
		for _, cmd := range cmds {
			h.note(cmd)
		}
		return err
	}
}

// note records cmd's script if cmd ran one without an error.
func (h *scriptHook) note(cmd redis.Cmder) {
	if err := cmd.Err(); err != nil && err != redis.Nil {
		return
	}
	args := cmd.Args()
	if len(args) < 2 {
		return
	}
	name, _ := args[0].(string)
	body, _ := args[1].(string)
	sha := ""
	switch strings.ToLower(name) {
	case "evalsha":
		sha = body
	case "eval":
		sum := sha1.Sum([]byte(body))
		sha = hex.EncodeToString(sum[:])
	default:
		return
	}
	h.mu.Lock()
	h.seen[sha] = true
	h.mu.Unlock()
}

// scripts are the package's Lua scripts by variable name.
// TestRoutingOnRedisCluster checks that the list is whole.
var scripts = map[string]*redis.Script{
	"offerScript": offerScript, "addAnalyticsScript": addAnalyticsScript,
	"addFiguresScript": addFiguresScript, "addViewerBytesScript": addViewerBytesScript,
	"heartbeatFiguresScript": heartbeatFiguresScript, "accountJoinScript": accountJoinScript,
	"startJobScript": startJobScript, "touchJobScript": touchJobScript, "finishJobScript": finishJobScript,
	"failJobScript": failJobScript, "claimLiveScript": claimLiveScript,
	"restoreLiveStreamScript": restoreLiveStreamScript, "heartbeatScript": heartbeatScript,
	"addP2PScript": addP2PScript, "restoreVideoScript": restoreVideoScript,
	"maintainStreamScript": maintainStreamScript, "claimIdentityScript": claimIdentityScript,
	"renewLockScript": renewLockScript, "unlockScript": unlockScript,
	"beginUploadScript": beginUploadScript, "renewUploadScript": renewUploadScript,
	"abortUploadScript": abortUploadScript, "sourceReceivedScript": sourceReceivedScript,
	"failVideoScript": failVideoScript, "deleteWebhookScript": deleteWebhookScript,
	"fanOutScript": fanOutScript, "claimDeliveryScript": claimDeliveryScript,
	"finishDeliveryScript": finishDeliveryScript, "deferJobScript": deferJobScript,
	"announceOriginScript": announceOriginScript, "unexpiredScript": unexpiredScript,
	"announceNodeScript": announceNodeScript,
}

// TestRoutingOnRedisCluster runs the package's tests on a three-master
// Redis Cluster (see the top of this file) and checks that every Lua script
// ran there without an error: keys not in KEYS, or in several slots, would
// fail on a cluster.
func TestRoutingOnRedisCluster(t *testing.T) {
	if onCluster() {
		t.Skip("already on a cluster")
	}
	// Every script of the package is in scripts.
	files, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	decl := regexp.MustCompile(`(?m)^var (\w+) = redis\.NewScript\(`)
	n := 0
	for _, f := range files {
		if strings.HasSuffix(f, "_test.go") {
			continue
		}
		src, err := os.ReadFile(f)
		if err != nil {
			t.Fatal(err)
		}
		for _, m := range decl.FindAllStringSubmatch(string(src), -1) {
			n++
			if scripts[m[1]] == nil {
				t.Errorf("%s: script %s is not in the scripts list of cluster_test.go", f, m[1])
			}
		}
	}
	if n != len(scripts) {
		t.Errorf("%d scripts declared, %d listed", n, len(scripts))
	}

	c := redistest.StartCluster(t)
	// MONITOR on every master shows the commands scripts run, right after
	// their EVAL or EVALSHA.
	monitors := make([]*monitor, len(c.Nodes))
	for i, node := range c.Nodes {
		monitors[i] = startMonitor(t, node.Addr)
	}
	ran := filepath.Join(t.TempDir(), "scripts")
	cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=.", "-test.count=1", "-test.parallel=8")
	cmd.Env = append(os.Environ(), "SHOAL_TEST_REDIS_CLUSTER_URL="+c.URL, "SHOAL_TEST_SCRIPTS_FILE="+ran)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("the tests on the cluster failed: %v\n%s", err, out)
	}
	// Every key a script touched was in its KEYS: Redis 7 lets a script
	// touch keys it did not declare when they are in the slot of those it
	// did, which a cluster does not promise.
	for i, m := range monitors {
		checkScriptKeys(t, c.Nodes[i].Addr, m.stop())
	}
	f, err := os.Open(ran)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	seen := map[string]bool{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		seen[sc.Text()] = true
	}
	for name, s := range scripts {
		if !seen[s.Hash()] {
			t.Errorf("script %s did not run on the cluster", name)
		}
	}
	// The tests' keys spread over the masters.
	for _, node := range c.Nodes {
		cl := redis.NewClient(&redis.Options{Addr: node.Addr})
		n, err := cl.DBSize(t.Context()).Result()
		_ = cl.Close()
		if err != nil || n == 0 {
			t.Errorf("master %s holds %d keys (%v): the tests' hash tags did not spread", node.Addr, n, err)
		}
	}
}

// monitor collects what MONITOR shows of one server.
type monitor struct {
	conn  net.Conn
	mu    sync.Mutex
	lines []string
	done  chan struct{}
}

func startMonitor(t *testing.T, addr string) *monitor {
	t.Helper()
	conn, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	m := &monitor{conn: conn, done: make(chan struct{})}
	t.Cleanup(func() { _ = conn.Close() })
	r := bufio.NewReaderSize(conn, 1<<20)
	if _, err := conn.Write([]byte("MONITOR\r\n")); err != nil {
		t.Fatal(err)
	}
	if ok, err := r.ReadString('\n'); err != nil || ok != "+OK\r\n" {
		t.Fatalf("MONITOR: %q, %v", ok, err)
	}
	go func() {
		defer close(m.done)
		for {
			line, err := r.ReadString('\n')
			if err != nil {
				return
			}
			m.mu.Lock()
			m.lines = append(m.lines, strings.TrimSuffix(strings.TrimPrefix(line, "+"), "\r\n"))
			m.mu.Unlock()
		}
	}()
	return m
}

// stop ends the monitor and returns its lines.
func (m *monitor) stop() []string {
	_ = m.conn.Close()
	<-m.done
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.lines
}

// checkScriptKeys checks, in the MONITOR lines of the server at addr, that
// every key of every command a script ran ("[0 lua]") was among the KEYS
// of that script's EVAL or EVALSHA. COMMAND GETKEYS tells a command's keys.
func checkScriptKeys(t *testing.T, addr string, lines []string) {
	t.Helper()
	cl := redis.NewClient(&redis.Options{Addr: addr})
	defer cl.Close()
	var declared map[string]bool
	calls := 0
	for _, line := range lines {
		_, rest, ok := strings.Cut(line, " [")
		if !ok {
			continue
		}
		source, argText, ok := strings.Cut(rest, "] ")
		if !ok {
			continue
		}
		args, err := monitorArgs(argText)
		if err != nil || len(args) == 0 {
			t.Fatalf("MONITOR line %q: %v", line, err)
		}
		if !strings.HasSuffix(source, " lua") {
			declared = nil
			if name := strings.ToLower(args[0]); (name == "eval" || name == "evalsha") && len(args) >= 3 {
				n, err := strconv.Atoi(args[2])
				if err != nil || 3+n > len(args) {
					t.Fatalf("MONITOR line %q: bad numkeys", line)
				}
				declared = map[string]bool{}
				for _, k := range args[3 : 3+n] {
					declared[k] = true
				}
			}
			continue
		}
		if declared == nil {
			t.Fatalf("MONITOR: a script's command %q follows no EVAL", line)
		}
		calls++
		if len(args) == 1 {
			continue // a command without arguments (TIME) touches no key
		}
		cmd := make([]any, len(args))
		for i, a := range args {
			cmd[i] = a
		}
		keys, err := cl.CommandGetKeys(t.Context(), cmd...).Result()
		if err != nil {
			if strings.Contains(err.Error(), "no key arguments") {
				continue
			}
			t.Fatalf("COMMAND GETKEYS %q: %v", line, err)
		}
		for _, k := range keys {
			if !declared[k] {
				t.Errorf("a script touched %q, not in its KEYS: %s", k, line)
			}
		}
	}
	t.Logf("%s: %d commands run by scripts checked", addr, calls)
}

// monitorArgs splits the arguments of a MONITOR line: "quoted" strings
// with C-style escapes (\\, \", \n, \r, \t, \a, \b, \xHH).
func monitorArgs(s string) ([]string, error) {
	var out []string
	for i := 0; i < len(s); {
		if s[i] == ' ' {
			i++
			continue
		}
		if s[i] != '"' {
			return nil, fmt.Errorf("no quote at %d", i)
		}
		i++
		var b strings.Builder
		for {
			if i >= len(s) {
				return nil, errors.New("unterminated string")
			}
			c := s[i]
			if c == '"' {
				i++
				break
			}
			if c != '\\' {
				b.WriteByte(c)
				i++
				continue
			}
			if i+1 >= len(s) {
				return nil, errors.New("trailing backslash")
			}
			switch e := s[i+1]; e {
			case 'n':
				b.WriteByte('\n')
			case 'r':
				b.WriteByte('\r')
			case 't':
				b.WriteByte('\t')
			case 'a':
				b.WriteByte('\a')
			case 'b':
				b.WriteByte('\b')
			case 'x':
				if i+3 >= len(s) {
					return nil, errors.New("short \\x escape")
				}
				v, err := strconv.ParseUint(s[i+2:i+4], 16, 8)
				if err != nil {
					return nil, err
				}
				b.WriteByte(byte(v))
				i += 2
			default:
				b.WriteByte(e)
			}
			i += 2
		}
		out = append(out, b.String())
	}
	return out, nil
}
