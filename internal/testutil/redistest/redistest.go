// Package redistest runs a real, private redis-server for tests.
//
// Each Server listens on a free 127.0.0.1 port, keeps nothing on disk
// (--save "" --appendonly no) and works in t.TempDir(). The test's cleanup
// kills it. Kill and Restart let a test simulate Redis dying and coming back
// on the same address.
package redistest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
)

// startTimeout bounds how long Start and Restart wait for PING to answer.
const startTimeout = 10 * time.Second

// Server is a redis-server process owned by one test.
type Server struct {
	// Addr is host:port, for example "127.0.0.1:40123".
	Addr string
	// URL is the redis:// URL of database 0, for example
	// "redis://127.0.0.1:40123/0".
	URL string

	bin  string
	port int
	dir  string
	// extra are more redis-server arguments (cluster mode).
	extra []string

	mu   sync.Mutex
	proc *testutil.Process // nil while killed
}

// Start runs redis-server on a free port and waits until it answers PING.
// The server is killed when the test ends. Start calls t.Fatal when
// redis-server is not installed or does not come up.
func Start(t testing.TB) *Server {
	t.Helper()
	return start(t, nil, freePort)
}

// start runs a Server with the extra arguments on a port from pick.
func start(t testing.TB, extra []string, pick func() (int, error)) *Server {
	t.Helper()
	bin, err := exec.LookPath("redis-server")
	if err != nil {
		t.Fatalf("redistest: redis-server not found on PATH (install the Debian package redis-server): %v", err)
	}
	s := &Server{bin: bin, dir: t.TempDir(), extra: extra}
	t.Cleanup(s.Kill)

	// A free port found by listening on :0 can be taken by someone else
	// before redis-server binds it, so try a few ports.
	var lastErr error
	for range 5 {
		port, err := pick()
		if err != nil {
			t.Fatalf("redistest: find a free port: %v", err)
		}
		s.port = port
		s.Addr = net.JoinHostPort("127.0.0.1", strconv.Itoa(port))
		s.URL = "redis://" + s.Addr + "/0"
		if lastErr = s.start(); lastErr == nil {
			return s
		}
	}
	t.Fatalf("redistest: redis-server did not start: %v", lastErr)
	return nil
}

// Kill sends SIGKILL to redis-server and waits for it to exit, simulating
// Redis dying. Killing a server that is not running does nothing.
func (s *Server) Kill() {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc == nil {
		return
	}
	s.proc.Kill()
	s.proc = nil
}

// FlushAll empties the server (FLUSHALL), as a Redis without persistence
// restarted would be, without a restart: clients stay connected.
func (s *Server) FlushAll(t testing.TB) {
	t.Helper()
	c, err := net.DialTimeout("tcp", s.Addr, time.Second)
	if err != nil {
		t.Fatalf("redistest: FLUSHALL: %v", err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Write([]byte("FLUSHALL\r\n")); err != nil {
		t.Fatalf("redistest: FLUSHALL: %v", err)
	}
	reply, err := bufio.NewReader(c).ReadString('\n')
	if err != nil || reply != "+OK\r\n" {
		t.Fatalf("redistest: FLUSHALL answered %q, %v", reply, err)
	}
}

// Restart starts redis-server again on the same port, with empty data, and
// waits until it answers PING. A running server is killed first.
func (s *Server) Restart(t testing.TB) {
	t.Helper()
	s.Kill()
	// The port was just released; retry briefly in case it is not yet
	// bindable.
	if err := testutil.Retry(startTimeout, 50*time.Millisecond, s.start); err != nil {
		t.Fatalf("redistest: restart redis-server on %s: %v", s.Addr, err)
	}
}

// start runs one redis-server process and waits for PING. On failure the
// process is gone and the error includes its output.
func (s *Server) start() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.proc != nil {
		return fmt.Errorf("already running")
	}
	cmd := exec.Command(s.bin,
		"--port", strconv.Itoa(s.port),
		"--bind", "127.0.0.1",
		"--save", "",
		"--appendonly", "no",
		"--dir", s.dir,
		"--daemonize", "no",
	)
	cmd.Args = append(cmd.Args, s.extra...)
	p, err := testutil.StartProcess(cmd)
	if err != nil {
		return err
	}
	err = p.WaitReady(startTimeout, 10*time.Millisecond, func() error { return checkServer(s.Addr, cmd.Process.Pid) })
	var exited *testutil.ExitedError
	switch {
	case errors.As(err, &exited):
		return fmt.Errorf("redis-server exited (%v) on port %d: %s", exited.State, s.port, bytes.TrimSpace(p.Out.Bytes()))
	case err != nil:
		return fmt.Errorf("redis-server on port %d did not answer PING within %v: %s", s.port, startTimeout, bytes.TrimSpace(p.Out.Bytes()))
	}
	s.proc = p
	return nil
}

// checkServer asks the server at addr for INFO server and checks that it is
// the process pid, not another test's redis-server that took the port.
func checkServer(addr string, pid int) error {
	c, err := net.DialTimeout("tcp", addr, 200*time.Millisecond)
	if err != nil {
		return err
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(time.Second))
	if _, err := c.Write([]byte("INFO server\r\n")); err != nil {
		return err
	}
	r := bufio.NewReader(c)
	head, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if len(head) < 4 || head[0] != '$' {
		return fmt.Errorf("unexpected INFO reply %q", head)
	}
	n, err := strconv.Atoi(strings.TrimSpace(head[1:]))
	if err != nil || n < 0 || n > 1<<20 {
		return fmt.Errorf("unexpected INFO reply %q", head)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(r, body); err != nil {
		return err
	}
	want := "process_id:" + strconv.Itoa(pid) + "\r\n"
	if !strings.Contains(string(body), want) {
		return fmt.Errorf("port %s is served by another process", addr)
	}
	return nil
}

func freePort() (int, error) {
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return 0, err
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port, nil
}
