package rtsp

import (
	"bufio"
	"context"
	"fmt"
	"log/slog"
	"net"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/stream"
)

// fakeRequest is what fakeRTSP tells its answer function of a request.
type fakeRequest struct {
	Addr   string // the server's address
	Method string
	URL    string
	Auth   string // the Authorization header
}

// fakeRTSP is an RTSP server on 127.0.0.1 that answers OPTIONS with 200
// and every other request with what answer returns (a status line and
// headers, no body; "" answers nothing), counting connections.
func fakeRTSP(t *testing.T, answer func(fakeRequest) string) (string, *atomic.Int64) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var conns atomic.Int64
	var wg sync.WaitGroup
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	addr := ln.Addr().String()
	var mu sync.Mutex
	var open []net.Conn
	wg.Add(1)
	go func() {
		defer wg.Done()
		defer func() {
			mu.Lock()
			defer mu.Unlock()
			for _, c := range open {
				c.Close()
			}
		}()
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			conns.Add(1)
			mu.Lock()
			open = append(open, c)
			mu.Unlock()
			wg.Add(1)
			go func() {
				defer wg.Done()
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					line, err := br.ReadString('\n')
					if err != nil {
						return
					}
					f := strings.Fields(line)
					if len(f) < 2 {
						return
					}
					req := fakeRequest{Addr: addr, Method: f[0], URL: f[1]}
					cseq := ""
					for {
						h, err := br.ReadString('\n')
						if err != nil {
							return
						}
						h = strings.TrimSpace(h)
						if h == "" {
							break
						}
						k, v, _ := strings.Cut(h, ":")
						switch strings.ToLower(k) {
						case "cseq":
							cseq = strings.TrimSpace(v)
						case "authorization":
							req.Auth = strings.TrimSpace(v)
						}
					}
					res := "RTSP/1.0 200 OK\r\nPublic: DESCRIBE, SETUP, PLAY\r\n"
					if req.Method != "OPTIONS" {
						res = answer(req)
					}
					if res != "" {
						fmt.Fprintf(c, "%sCSeq: %s\r\n\r\n", res, cseq)
					}
				}
			}()
		}
	}()
	return addr, &conns
}

// newTestPuller pulls url as live stream "s1" (into a hub of its own)
// until the test ends.
func newTestPuller(t *testing.T, cfg PullConfig, url string) *Puller {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 16}, stream.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	p, err := NewPuller(cfg, PullDeps{Log: slog.New(slog.DiscardHandler), Hub: hub,
		Sources: func(context.Context) ([]Source, error) { return []Source{{ID: "s1", URL: url}}, nil }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var g errgroup.Group
	p.refresh(ctx, &g)
	t.Cleanup(func() { cancel(); _ = g.Wait() })
	return p
}

// waitRetrying waits for the first attempt of "s1" to fail and returns
// the status it left.
func waitRetrying(t *testing.T, p *Puller, within time.Duration) PullStatus {
	t.Helper()
	deadline := time.NewTimer(within)
	defer deadline.Stop()
	for {
		st, changed, _ := p.watch("s1")
		if st.State == PullRetrying {
			return st
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("the pull has not failed after %s: %+v", within, st)
		}
	}
}

// A source that answers DESCRIBE with a redirect to itself was followed
// forever (gortsplib recurses once per redirect, a new connection each,
// and the stack grew until Go's 1 GB limit killed the origin); the pull
// now fails after maxRedirects and says why.
func TestPullBoundsRedirects(t *testing.T) {
	t.Parallel()
	addr, conns := fakeRTSP(t, func(r fakeRequest) string {
		return "RTSP/1.0 301 Moved Permanently\r\nLocation: rtsp://" + r.Addr + "/again\r\n"
	})
	p := newTestPuller(t, PullConfig{AllowPrivate: true}, "rtsp://"+addr+"/start")
	st := waitRetrying(t, p, 10*time.Second)
	if !strings.Contains(st.LastError, "too many redirects") {
		t.Fatalf("last_error %q does not say there were too many redirects", st.LastError)
	}
	// The next attempt starts a second later; allow for it.
	if n := conns.Load(); n < 1+maxRedirects || n > 2*(1+maxRedirects) {
		t.Fatalf("%d connections for %d redirects", n, maxRedirects)
	}
}

// The source URL's credentials go to the source's own host and port only:
// a redirect to another one that asks for them (401, Basic: in the clear)
// does not get them, while a redirect to the same host does.
func TestPullKeepsCredentialsHome(t *testing.T) {
	t.Parallel()
	const basic = "Basic dXNlcjpzZWNyZXQ=" // user:secret
	var mu sync.Mutex
	var elsewhere, home []string
	other, _ := fakeRTSP(t, func(r fakeRequest) string {
		mu.Lock()
		defer mu.Unlock()
		elsewhere = append(elsewhere, r.Auth)
		if r.Auth == "" {
			return "RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n"
		}
		return "RTSP/1.0 404 Not Found\r\n"
	})
	addr, _ := fakeRTSP(t, func(r fakeRequest) string {
		mu.Lock()
		defer mu.Unlock()
		switch {
		case strings.HasSuffix(r.URL, "/away"):
			return "RTSP/1.0 302 Found\r\nLocation: rtsp://" + other + "/cam\r\n"
		case strings.HasSuffix(r.URL, "/start"):
			return "RTSP/1.0 301 Moved Permanently\r\nLocation: rtsp://" + r.Addr + "/cam\r\n"
		}
		home = append(home, r.Auth)
		if r.Auth == "" {
			return "RTSP/1.0 401 Unauthorized\r\nWWW-Authenticate: Basic realm=\"cam\"\r\n"
		}
		return "RTSP/1.0 404 Not Found\r\n"
	})

	p := newTestPuller(t, PullConfig{AllowPrivate: true}, "rtsp://user:secret@"+addr+"/away")
	st := waitRetrying(t, p, 10*time.Second)
	mu.Lock()
	if len(elsewhere) == 0 {
		t.Errorf("the redirect was not followed: %+v", st)
	}
	for _, a := range elsewhere {
		if a != "" {
			t.Errorf("another host was sent the source's credentials: %q", a)
		}
	}
	mu.Unlock()

	p = newTestPuller(t, PullConfig{AllowPrivate: true}, "rtsp://user:secret@"+addr+"/start")
	st = waitRetrying(t, p, 10*time.Second)
	mu.Lock()
	defer mu.Unlock()
	if len(home) != 2 || home[1] != basic {
		t.Errorf("a redirect to the same host was not authenticated: %q (%+v)", home, st)
	}
}

// An attempt's set-up is bounded as a whole: a source that never answers
// DESCRIBE fails the attempt at SetupTimeout, not at the read timeout.
func TestPullSetupDeadline(t *testing.T) {
	t.Parallel()
	addr, _ := fakeRTSP(t, func(fakeRequest) string { return "" })
	p := newTestPuller(t, PullConfig{AllowPrivate: true, ReadTimeout: time.Minute, SetupTimeout: 300 * time.Millisecond}, "rtsp://"+addr+"/cam")
	st := waitRetrying(t, p, 10*time.Second)
	if !strings.Contains(st.LastError, "not playing after 300ms") {
		t.Fatalf("last_error %q", st.LastError)
	}
}

// A source URL on a loopback, private, link-local or CGNAT address (or a
// name that resolves to one; a redirect's target is dialed the same way)
// is not dialed unless
// the puller allows private addresses: the pull's last_error would
// otherwise tell which ports of the origin's network are open, and a
// camera there could be read out over HLS.
func TestPullRefusesPrivateAddresses(t *testing.T) {
	t.Parallel()
	addr, conns := fakeRTSP(t, func(fakeRequest) string { return "RTSP/1.0 404 Not Found\r\n" })
	_, port, _ := net.SplitHostPort(addr)
	for _, url := range []string{"rtsp://" + addr + "/cam", "rtsp://localhost:" + port + "/cam"} {
		p := newTestPuller(t, PullConfig{}, url)
		st := waitRetrying(t, p, 10*time.Second)
		if !strings.Contains(st.LastError, "rtsp_pull_allow_private") {
			t.Errorf("%s: last_error %q does not say why", url, st.LastError)
		}
	}
	if n := conns.Load(); n > 0 {
		t.Fatalf("the pull connected to a loopback address %d time(s)", n)
	}
}
