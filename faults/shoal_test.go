//go:build faults

package faults

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

const adminKey = "faults-admin-key-0123456789abcdef0123456789"

// shoal is one shoal process (`shoal dev`: origin, edge and worker).
type shoal struct {
	t       *testing.T
	redis   *redistest.Server
	dataDir string
	http    string // http://127.0.0.1:port
	rtmp    string // rtmp://127.0.0.1:port/live
	edge    string // http://127.0.0.1:port, "" without the dev edge
	env     []string
	wrap    []string // a command line the binary runs under (unshare), or nil
	cmd     *exec.Cmd
	log     *testutil.Buffer
	exited  chan struct{}
}

// freePort is testutil.FreePort.
func freePort(t *testing.T) int { return testutil.FreePort(t) }

// newShoal configures a process on rs and dataDir; start runs it.
func newShoal(t *testing.T, rs *redistest.Server, dataDir string, withEdge bool, extra ...string) *shoal {
	t.Helper()
	hp, rp := freePort(t), freePort(t)
	s := &shoal{t: t, redis: rs, dataDir: dataDir, log: &testutil.Buffer{},
		http: fmt.Sprintf("http://127.0.0.1:%d", hp), rtmp: fmt.Sprintf("rtmp://127.0.0.1:%d/live", rp)}
	edge := "off"
	if withEdge {
		ep := freePort(t)
		edge = fmt.Sprintf("127.0.0.1:%d", ep)
		s.edge = "http://" + edge
	}
	s.env = append([]string{
		"PATH=" + os.Getenv("PATH"), "HOME=" + os.Getenv("HOME"),
		"SHOAL_REDIS_URL=" + rs.URL,
		"SHOAL_DATA_DIR=" + dataDir,
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", hp),
		fmt.Sprintf("SHOAL_RTMP_ADDR=127.0.0.1:%d", rp),
		"SHOAL_PUBLIC_URL=" + s.http,
		"SHOAL_ADMIN_KEY=" + adminKey,
		"SHOAL_EDGE_ADDR=" + edge,
		"SHOAL_RTSP_ADDR=off", "SHOAL_SRT_ADDR=off",
		"SHOAL_INGEST_WHIP_UDP_PORT=0",
		"SHOAL_TRANSCODE_MAX_LADDERS=0",
		"SHOAL_INGEST_RECONNECT_GRACE=2s",
	}, extra...)
	t.Cleanup(func() {
		s.stop()
		if t.Failed() {
			t.Logf("shoal log (tail):\n%s", tail(s.log.String(), 6000))
		}
	})
	return s
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// start runs the process and waits until it is ready.
func (s *shoal) start() {
	s.t.Helper()
	args := append(append([]string{}, s.wrap...), bin, "dev")
	s.cmd = exec.Command(args[0], args[1:]...)
	s.cmd.Env = s.env
	s.cmd.Stdout, s.cmd.Stderr = io.Discard, s.log
	s.cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := s.cmd.Start(); err != nil {
		s.t.Fatal(err)
	}
	exited := make(chan struct{})
	s.exited = exited
	go func(c *exec.Cmd) { _ = c.Wait(); close(exited) }(s.cmd)
	s.waitFor("readiness", 30*time.Second, func() bool {
		select {
		case <-exited:
			s.t.Fatalf("shoal exited at start:\n%s", tail(s.log.String(), 4000))
		default:
		}
		code, _ := s.get("/readyz", "")
		return code == 200
	})
}

// pid is the shoal process's pid (the wrapped one's child when wrapped).
func (s *shoal) pid() int {
	if len(s.wrap) == 0 {
		return s.cmd.Process.Pid
	}
	// The wrapper execs shoal: same pid.
	return s.cmd.Process.Pid
}

// kill9 kills the process group at once, as a crash or the OOM killer.
func (s *shoal) kill9() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
	<-s.exited
	s.cmd = nil
}

// stop ends the process as an operator would (SIGTERM), then kills it.
func (s *shoal) stop() {
	if s.cmd == nil || s.cmd.Process == nil {
		return
	}
	_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGTERM)
	select {
	case <-s.exited:
	case <-time.After(20 * time.Second):
		s.t.Errorf("shoal did not stop within 20 s of SIGTERM")
		_ = syscall.Kill(-s.cmd.Process.Pid, syscall.SIGKILL)
		<-s.exited
	}
	s.cmd = nil
}

// memKiB reads the process's resident set now and at its peak (VmHWM).
func (s *shoal) memKiB() (rss, peak int) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", s.pid()))
	if err != nil {
		s.t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		k, v, _ := strings.Cut(sc.Text(), ":")
		n, _ := strconv.Atoi(strings.TrimSuffix(strings.TrimSpace(v), " kB"))
		switch k {
		case "VmRSS":
			rss = n
		case "VmHWM":
			peak = n
		}
	}
	return rss, peak
}

// waitFor polls cond until it holds, failing the test after d.
func (s *shoal) waitFor(what string, d time.Duration, cond func() bool) {
	s.t.Helper()
	if !poll(d, cond) {
		s.t.Fatalf("timed out after %s waiting for %s", d, what)
	}
}

// poll checks cond every 100 ms until it holds (true) or d passed.
func poll(d time.Duration, cond func() bool) bool {
	deadline := time.Now().Add(d)
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for {
		if cond() {
			return true
		}
		if time.Now().After(deadline) {
			return false
		}
		<-tick.C
	}
}

func (s *shoal) do(method, path, key string, body any) (int, []byte) {
	return request(method, s.http+path, key, body)
}

func (s *shoal) get(path, key string) (int, []byte) { return s.do("GET", path, key, nil) }

func request(method, url, key string, body any) (int, []byte) {
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, err := http.NewRequest(method, url, rd)
	if err != nil {
		return 0, nil
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	c := &http.Client{Timeout: 10 * time.Second}
	resp, err := c.Do(req)
	if err != nil {
		return 0, []byte(err.Error())
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

type liveStream struct {
	ID        string `json:"id"`
	StreamKey string `json:"stream_key"`
	Status    string `json:"status"`
}

func (s *shoal) createStream(name string) liveStream {
	s.t.Helper()
	code, body := s.do("POST", "/v1/live-streams", adminKey, map[string]string{"name": name})
	if code != http.StatusCreated {
		s.t.Fatalf("create stream: %d %s", code, body)
	}
	var ls liveStream
	if err := json.Unmarshal(body, &ls); err != nil {
		s.t.Fatal(err)
	}
	return ls
}

func (s *shoal) status(id string) string {
	code, body := s.get("/v1/live-streams/"+id, adminKey)
	if code != 200 {
		return fmt.Sprintf("http %d", code)
	}
	var ls liveStream
	_ = json.Unmarshal(body, &ls)
	return ls.Status
}

// segments counts the segments the stream's source playlist lists now.
func (s *shoal) segments(id string) int {
	_, b := s.get("/hls/"+id+"/source/recording.m3u8", "")
	return strings.Count(string(b), "#EXTINF")
}

// metric sums the samples of name whose labels contain match.
func (s *shoal) metric(name, match string) float64 {
	_, b := s.get("/metrics", "")
	var sum float64
	for _, line := range strings.Split(string(b), "\n") {
		if !strings.HasPrefix(line, name) || !strings.Contains(line, match) {
			continue
		}
		rest := strings.TrimPrefix(line, name)
		if rest == "" || (rest[0] != '{' && rest[0] != ' ') {
			continue
		}
		f := strings.Fields(line)
		v, _ := strconv.ParseFloat(f[len(f)-1], 64)
		sum += v
	}
	return sum
}

// publisher is an endless ffmpeg RTMP publisher (a test pattern and a
// tone, encoded as OBS would: H.264 with 2 s GOPs and AAC).
func publisher(t *testing.T, url string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command("ffmpeg", "-v", "error", "-re",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-c:v", "libx264", "-preset", "ultrafast", "-tune", "zerolatency", "-g", "60", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-f", "flv", url)
	var out testutil.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-done
		if t.Failed() {
			t.Logf("ffmpeg: %s", tail(out.String(), 2000))
		}
	})
	return cmd
}

// probeDuration is the duration ffprobe reads from url (0 on failure).
func probeDuration(url string) (float64, string) {
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url).CombinedOutput()
	if err != nil {
		return 0, string(out)
	}
	d, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		return 0, string(out)
	}
	return d, ""
}
