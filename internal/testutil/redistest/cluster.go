package redistest

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"testing"
	"time"
)

// clusterTimeout bounds how long StartCluster waits for the cluster to be
// created and to report cluster_state:ok.
const clusterTimeout = 30 * time.Second

// Cluster is a Redis Cluster of three masters (no replicas) owned by one
// test, each a redis-server on a free 127.0.0.1 port in its own temporary
// directory.
type Cluster struct {
	// Nodes are the three masters.
	Nodes []*Server
	// URL names the cluster the way Shoal's SHOAL_REDIS_URL does:
	// redis+cluster://127.0.0.1:P1,127.0.0.1:P2,127.0.0.1:P3/
	URL string
}

// StartCluster starts three redis-server processes with
// --cluster-enabled yes, joins them with redis-cli --cluster create
// (--cluster-replicas 0, so each master serves a third of the slots) and
// waits until every node reports cluster_state:ok. The processes are killed
// when the test ends. StartCluster calls t.Fatal when redis-server or
// redis-cli is missing or the cluster does not come up.
func StartCluster(t testing.TB) *Cluster {
	t.Helper()
	cli, err := exec.LookPath("redis-cli")
	if err != nil {
		t.Fatalf("redistest: redis-cli not found on PATH (install the Debian package redis-tools): %v", err)
	}
	c := &Cluster{}
	addrs := make([]string, 3)
	for i := range addrs {
		dir := t.TempDir()
		s := start(t, []string{
			"--cluster-enabled", "yes",
			"--cluster-config-file", dir + "/nodes.conf",
			"--cluster-node-timeout", "5000",
		}, clusterPort)
		c.Nodes = append(c.Nodes, s)
		addrs[i] = s.Addr
	}
	c.URL = "redis+cluster://" + strings.Join(addrs, ",") + "/"

	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	args := append([]string{"--cluster", "create"}, addrs...)
	args = append(args, "--cluster-replicas", "0", "--cluster-yes")
	if out, err := exec.CommandContext(ctx, cli, args...).CombinedOutput(); err != nil {
		t.Fatalf("redistest: redis-cli --cluster create: %v: %s", err, out)
	}
	c.waitOK(ctx, t)
	return c
}

// waitOK waits until every node reports cluster_state:ok (all slots
// served, as every node sees it).
func (c *Cluster) waitOK(ctx context.Context, t testing.TB) {
	t.Helper()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for _, s := range c.Nodes {
		for {
			info, err := command(s.Addr, "CLUSTER", "INFO")
			if err == nil && strings.Contains(info, "cluster_state:ok") {
				break
			}
			select {
			case <-ctx.Done():
				t.Fatalf("redistest: node %s not cluster_state:ok within %v: %q, %v", s.Addr, clusterTimeout, info, err)
			case <-tick.C:
			}
		}
	}
}

// Kill kills every node (SIGKILL), simulating the cluster dying.
func (c *Cluster) Kill() {
	for _, s := range c.Nodes {
		s.Kill()
	}
}

// Restart starts every node again on its port, with empty data but its
// cluster configuration (nodes.conf: the same node ids and slots), and
// waits until every node reports cluster_state:ok.
func (c *Cluster) Restart(t testing.TB) {
	t.Helper()
	for _, s := range c.Nodes {
		s.Restart(t)
	}
	ctx, cancel := context.WithTimeout(context.Background(), clusterTimeout)
	defer cancel()
	c.waitOK(ctx, t)
}

// FlushAll empties every node (FLUSHALL), clients staying connected.
func (c *Cluster) FlushAll(t testing.TB) {
	t.Helper()
	for _, s := range c.Nodes {
		s.FlushAll(t)
	}
}

// clusterPort finds a free port whose cluster bus port (port+10000) is free
// too.
func clusterPort() (int, error) {
	for range 50 {
		p, err := freePort()
		if err != nil {
			return 0, err
		}
		if p+10000 > 65535 {
			continue
		}
		l, err := net.Listen("tcp", net.JoinHostPort("127.0.0.1", strconv.Itoa(p+10000)))
		if err != nil {
			continue
		}
		l.Close()
		return p, nil
	}
	return 0, fmt.Errorf("no free port with a free bus port (+10000)")
}

// command sends one command to addr and returns its reply, which must be a
// bulk or simple string.
func command(addr string, args ...string) (string, error) {
	c, err := net.DialTimeout("tcp", addr, time.Second)
	if err != nil {
		return "", err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(2 * time.Second))
	var b strings.Builder
	fmt.Fprintf(&b, "*%d\r\n", len(args))
	for _, a := range args {
		fmt.Fprintf(&b, "$%d\r\n%s\r\n", len(a), a)
	}
	if _, err := io.WriteString(c, b.String()); err != nil {
		return "", err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return "", err
	}
	head = strings.TrimRight(head, "\r\n")
	switch {
	case strings.HasPrefix(head, "+"):
		return head[1:], nil
	case strings.HasPrefix(head, "-"):
		return "", fmt.Errorf("%s", head[1:])
	case strings.HasPrefix(head, "$"):
		n, err := strconv.Atoi(head[1:])
		if err != nil || n < 0 || n > 1<<20 {
			return "", fmt.Errorf("unexpected reply %q", head)
		}
		body := make([]byte, n+2)
		if _, err := io.ReadFull(r, body); err != nil {
			return "", err
		}
		return string(body[:n]), nil
	}
	return "", fmt.Errorf("unexpected reply %q", head)
}
