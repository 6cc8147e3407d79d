package redistest

import (
	"bufio"
	"net"
	"strings"
	"testing"
	"time"
)

func TestStartKillRestart(t *testing.T) {
	t.Parallel()
	s := Start(t)
	if s.URL != "redis://"+s.Addr+"/0" {
		t.Fatalf("URL = %q, want redis://%s/0", s.URL, s.Addr)
	}
	pid := s.pid(t)
	if err := checkServer(s.Addr, pid); err != nil {
		t.Fatalf("server not answering after Start: %v", err)
	}

	s.Kill()
	if c, err := net.DialTimeout("tcp", s.Addr, time.Second); err == nil {
		c.Close()
		t.Fatalf("dial %s succeeded after Kill", s.Addr)
	}
	s.Kill() // killing twice is harmless

	addr := s.Addr
	s.Restart(t)
	if s.Addr != addr {
		t.Fatalf("Addr changed across Restart: %q -> %q", addr, s.Addr)
	}
	if err := checkServer(s.Addr, s.pid(t)); err != nil {
		t.Fatalf("server not answering after Restart: %v", err)
	}
}

func TestServersAreIndependent(t *testing.T) {
	t.Parallel()
	a, b := Start(t), Start(t)
	if a.Addr == b.Addr {
		t.Fatalf("two servers share %s", a.Addr)
	}
	a.Kill()
	if err := checkServer(b.Addr, b.pid(t)); err != nil {
		t.Fatalf("second server died with the first: %v", err)
	}
}

func (s *Server) pid(t *testing.T) int {
	t.Helper()
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		t.Fatal("server is not running")
	}
	return s.proc.Cmd.Process.Pid
}

func TestFlushAll(t *testing.T) {
	s := Start(t)
	c, err := net.Dial("tcp", s.Addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	r := bufio.NewReader(c)
	do := func(cmd string) string {
		t.Helper()
		if _, err := c.Write([]byte(cmd + "\r\n")); err != nil {
			t.Fatal(err)
		}
		line, err := r.ReadString('\n')
		if err != nil {
			t.Fatal(err)
		}
		return line
	}
	do("SET k v")
	s.FlushAll(t)
	if got := do("EXISTS k"); got != ":0\r\n" {
		t.Fatalf("EXISTS after FlushAll = %q", got)
	}
}

func TestStartCluster(t *testing.T) {
	c := StartCluster(t)
	if len(c.Nodes) != 3 {
		t.Fatalf("%d nodes", len(c.Nodes))
	}
	want := "redis+cluster://" + c.Nodes[0].Addr + "," + c.Nodes[1].Addr + "," + c.Nodes[2].Addr + "/"
	if c.URL != want {
		t.Fatalf("URL %q, want %q", c.URL, want)
	}
	// Three masters, each serving a share of the 16384 slots.
	for _, n := range c.Nodes {
		info, err := command(n.Addr, "CLUSTER", "INFO")
		if err != nil {
			t.Fatal(err)
		}
		for _, line := range []string{"cluster_state:ok", "cluster_slots_assigned:16384", "cluster_known_nodes:3", "cluster_size:3"} {
			if !strings.Contains(info, line+"\r\n") {
				t.Errorf("%s: CLUSTER INFO lacks %s:\n%s", n.Addr, line, info)
			}
		}
	}
	// A key is refused by a node that does not serve its slot: the nodes
	// really are one cluster, not three servers.
	moved := 0
	for _, n := range c.Nodes {
		if _, err := command(n.Addr, "SET", "k", "v"); err != nil && strings.HasPrefix(err.Error(), "MOVED ") {
			moved++
		} else if err != nil {
			t.Fatalf("%s: SET: %v", n.Addr, err)
		}
	}
	if moved != 2 {
		t.Fatalf("%d nodes answered MOVED for one key, want 2", moved)
	}
}
