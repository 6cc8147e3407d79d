package main

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/pprof"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/benchmarks/internal/benchutil"
	"github.com/shoal-video/shoal/edgecache"
)

// The edge child: this binary re-executed with childEnv set runs one
// edgecache.Cache behind an http.Server and prints its address (and, with
// childPprofEnv, a second address serving /debug/pprof/profile).
const (
	childEnv       = "SHOAL_BENCH_EDGE_CHILD"
	childOriginEnv = "SHOAL_BENCH_EDGE_ORIGIN"
	childDirEnv    = "SHOAL_BENCH_EDGE_DIR"
	childPprofEnv  = "SHOAL_BENCH_EDGE_PPROF"
	childMemEnv    = "SHOAL_BENCH_EDGE_MEMORY"
)

// edgeMemoryBytes is the memory tier of every cache the benchmark runs.
const edgeMemoryBytes = 256 << 20

func edgeChild() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	// The parent holds our stdin: when it is gone, so are we.
	go func() {
		_, _ = io.Copy(io.Discard, os.Stdin)
		stop()
	}()
	mem, err := strconv.ParseInt(os.Getenv(childMemEnv), 10, 64)
	if err != nil {
		return fmt.Errorf("%s: %w", childMemEnv, err)
	}
	c, err := edgecache.New(edgecache.Config{
		OriginURL:   os.Getenv(childOriginEnv),
		CacheDir:    os.Getenv(childDirEnv),
		MemoryBytes: mem,
	}, edgecache.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return err
	}
	srv := &http.Server{Handler: c, MaxHeaderBytes: 16 << 10, ReadHeaderTimeout: 10 * time.Second}
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { return c.Run(ctx) })
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return err
		}
		return nil
	})
	fmt.Println(ln.Addr().String())
	if os.Getenv(childPprofEnv) != "" {
		pln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return err
		}
		mux := http.NewServeMux()
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		psrv := &http.Server{Handler: mux, ReadHeaderTimeout: 10 * time.Second}
		g.Go(func() error {
			if err := psrv.Serve(pln); !errors.Is(err, http.ErrServerClosed) {
				return err
			}
			return nil
		})
		g.Go(func() error {
			<-ctx.Done()
			return psrv.Close()
		})
		fmt.Println(pln.Addr().String())
	}
	g.Go(func() error {
		<-ctx.Done()
		return srv.Close()
	})
	return g.Wait()
}

// child is a process the benchmark started; stop ends it.
type child struct {
	name string
	cmd  *exec.Cmd
	done chan struct{}
	in   io.Closer // the child's stdin, when it watches it
}

func startChild(name string, cmd *exec.Cmd, term syscall.Signal) (*child, error) {
	// Killed with us even if we die without running our defers.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: term}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("starting %s: %w", name, err)
	}
	ch := &child{name: name, cmd: cmd, done: make(chan struct{})}
	go func() {
		_ = cmd.Wait()
		close(ch.done)
	}()
	return ch, nil
}

// stop asks the child to end (SIGTERM), then kills it after 5 s.
func (ch *child) stop() {
	if ch == nil {
		return
	}
	if ch.in != nil {
		ch.in.Close()
	}
	select {
	case <-ch.done:
		return
	default:
	}
	_ = ch.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-ch.done:
	case <-time.After(5 * time.Second):
		_ = ch.cmd.Process.Kill()
		<-ch.done
	}
}

func (ch *child) exited() bool {
	select {
	case <-ch.done:
		return true
	default:
		return false
	}
}

// edgeProc is our edge in a child process.
type edgeProc struct {
	*child
	addr, pprofAddr string
}

// startEdge re-executes this binary as an edge child with GOMAXPROCS=1.
func startEdge(ctx context.Context, originURL, cacheDir string, memory int64, pprof bool) (*edgeProc, error) {
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	cmd := exec.Command(exe)
	cmd.Env = append(os.Environ(), "GOMAXPROCS=1", childEnv+"=1", childOriginEnv+"="+originURL, childDirEnv+"="+cacheDir,
		childMemEnv+"="+strconv.FormatInt(memory, 10))
	if pprof {
		cmd.Env = append(cmd.Env, childPprofEnv+"=1")
	}
	cmd.Stderr = os.Stderr
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	out, err := cmd.StdoutPipe()
	if err != nil {
		return nil, err
	}
	ch, err := startChild("edge", cmd, syscall.SIGKILL)
	if err != nil {
		return nil, err
	}
	ch.in = in
	e := &edgeProc{child: ch}
	lines := make(chan string, 2)
	go func() {
		sc := bufio.NewScanner(out)
		for sc.Scan() {
			lines <- sc.Text()
		}
		close(lines)
	}()
	want := 1
	if pprof {
		want = 2
	}
	for i := 0; i < want; i++ {
		select {
		case l, ok := <-lines:
			if !ok {
				ch.stop()
				return nil, errors.New("the edge child exited before listening")
			}
			if i == 0 {
				e.addr = l
			} else {
				e.pprofAddr = l
			}
		case <-time.After(20 * time.Second):
			ch.stop()
			return nil, errors.New("the edge child did not start in 20 s")
		case <-ctx.Done():
			ch.stop()
			return nil, ctx.Err()
		}
	}
	return e, nil
}

// nginxProc is nginx serving root (where /hls/ lives) from its own config.
type nginxProc struct {
	*child
	addr string
	dir  string
}

func startNginx(ctx context.Context, bin, dir, root string) (*nginxProc, error) {
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return nil, err
	}
	port, err := benchutil.FreePort()
	if err != nil {
		return nil, err
	}
	addr := "127.0.0.1:" + strconv.Itoa(port)
	user := ""
	if os.Geteuid() == 0 {
		// As root the worker would switch to nobody, who may not read our
		// 0700 temp directory: keep it as root.
		user = "user root root;\n"
	}
	conf := fmt.Sprintf(`%sworker_processes 1;
daemon off;
master_process on;
pid %[2]s/nginx.pid;
error_log %[2]s/error.log warn;
events {
    worker_connections 1024;
}
http {
    access_log off;
    client_body_temp_path %[2]s/body;
    proxy_temp_path %[2]s/proxy;
    fastcgi_temp_path %[2]s/fastcgi;
    uwsgi_temp_path %[2]s/uwsgi;
    scgi_temp_path %[2]s/scgi;
    sendfile on;
    tcp_nopush on;
    tcp_nodelay on;
    keepalive_timeout 65;
    keepalive_requests 100000000;
    types {
        application/vnd.apple.mpegurl m3u8;
        video/iso.segment m4s;
    }
    default_type application/octet-stream;
    server {
        listen %[3]s;
        root %[4]s;
        location /hls/ {
            # The CORS headers our edge and the origin send.
            add_header Access-Control-Allow-Origin * always;
            add_header Access-Control-Expose-Headers "Content-Length, Content-Range, ETag, Cache-Status" always;
        }
    }
}
`, user, dir, addr, root)
	confPath := filepath.Join(dir, "nginx.conf")
	if err := os.WriteFile(confPath, []byte(conf), 0o644); err != nil {
		return nil, err
	}
	cmd := exec.Command(bin, "-p", dir, "-c", confPath, "-e", filepath.Join(dir, "error.log"))
	cmd.Stdout = os.Stderr
	cmd.Stderr = os.Stderr
	ch, err := startChild("nginx", cmd, syscall.SIGTERM)
	if err != nil {
		return nil, err
	}
	n := &nginxProc{child: ch, addr: addr, dir: dir}
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := net.DialTimeout("tcp", addr, time.Second)
		if err == nil {
			c.Close()
			return n, nil
		}
		if ch.exited() || time.Now().After(deadline) || ctx.Err() != nil {
			ch.stop()
			log, _ := os.ReadFile(filepath.Join(dir, "error.log"))
			return nil, fmt.Errorf("nginx did not listen on %s: %v\n%s", addr, err, log)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

// workerPIDs lists the processes whose parent is nginx's master.
func (n *nginxProc) workerPIDs() []int {
	ents, err := os.ReadDir("/proc")
	if err != nil {
		return nil
	}
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		if ppid, _, ok := procStat(pid); ok && ppid == n.cmd.Process.Pid {
			pids = append(pids, pid)
		}
	}
	return pids
}

// procStat returns a process's parent and its CPU time (user + system, all
// threads).
func procStat(pid int) (ppid int, cpu time.Duration, ok bool) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, 0, false
	}
	s := string(b)
	i := strings.LastIndexByte(s, ')')
	if i < 0 {
		return 0, 0, false
	}
	// Fields after the command: state(3) ppid(4) ... utime(14) stime(15).
	f := strings.Fields(s[i+1:])
	if len(f) < 13 {
		return 0, 0, false
	}
	ppid, _ = strconv.Atoi(f[1])
	ut, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	const hz = 100 // USER_HZ on Linux
	return ppid, time.Duration(ut+st) * time.Second / hz, true
}

// cpuOf sums the CPU time of pids.
func cpuOf(pids []int) time.Duration {
	var sum time.Duration
	for _, p := range pids {
		if _, c, ok := procStat(p); ok {
			sum += c
		}
	}
	return sum
}
