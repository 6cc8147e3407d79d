package app

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// These tests run `shoal dev` in process against a real redis-server and
// publish with the real ffmpeg CLI exactly as OBS would (FLV over RTMP,
// H.264 with a keyframe every 2 s, AAC); ffprobe reads what we serve.

const testAdminKey = "test-admin-key-0123456789"

var (
	clipMu  sync.Mutex
	clipDir string
)

// clip returns an FLV file of seconds of testsrc2 + sine, 640x360 30 fps.
func clip(t *testing.T, seconds int) string {
	t.Helper()
	return clipSized(t, 640, 360, seconds)
}

// clipSized returns an FLV file of seconds of testsrc2 + sine at w x h, 30
// fps, H.264 with a keyframe every 2 s and AAC, as OBS would send.
func clipSized(t *testing.T, w, h, seconds int) string {
	t.Helper()
	clipMu.Lock()
	defer clipMu.Unlock()
	if clipDir == "" {
		dir, err := os.MkdirTemp("", "shoal-clips-")
		if err != nil {
			t.Fatal(err)
		}
		clipDir = dir
	}
	path := filepath.Join(clipDir, fmt.Sprintf("clip-%dx%d-%ds.flv", w, h, seconds))
	if _, err := os.Stat(path); err == nil {
		return path
	}
	tmp := path + ".tmp.flv"
	cmd := exec.Command("ffmpeg", "-v", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=30", w, h),
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "96k", "-f", "flv", tmp)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("making the test clip with ffmpeg (is ffmpeg installed? `make test` installs it): %v\n%s", err, out)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
	return path
}

// runMainEnv makes the test binary run Main with its arguments instead of
// the tests, so that tests can start real `shoal` processes (and kill -9
// them) without a separately built binary.
const runMainEnv = "SHOAL_TEST_RUN_MAIN"

// claimFactorEnv makes a process that TestMain runs an edge whose
// heartbeats claim this many times the bytes it served (testOptions): a
// cheating edge, which only the test binary can make.
const claimFactorEnv = "SHOAL_TEST_EDGE_CLAIM_FACTOR"

// liveCheatEnv (=1) makes a process that TestMain runs a remote worker
// that encodes live ladders at a quarter of their bitrates (testOptions).
const liveCheatEnv = "SHOAL_TEST_LIVE_CHEAT"

func TestMain(m *testing.M) {
	if os.Getenv(runMainEnv) == "1" {
		var opts testOptions
		if f := os.Getenv(claimFactorEnv); f != "" {
			n, err := strconv.ParseInt(f, 10, 64)
			if err != nil || n < 1 {
				fmt.Fprintf(os.Stderr, "%s=%q: want a positive integer\n", claimFactorEnv, f)
				os.Exit(2)
			}
			opts.claimFactor = n
		}
		opts.liveCheat = os.Getenv(liveCheatEnv) == "1"
		ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
		code := run(ctx, os.Args[1:], os.Environ(), os.Stdout, os.Stderr, opts)
		stop()
		os.Exit(code)
	}
	code := m.Run()
	s3test.StopShared()
	if clipDir != "" {
		os.RemoveAll(clipDir)
	}
	os.Exit(code)
}

type node struct {
	t       *testing.T
	redis   *redistest.Server
	http    string // http://127.0.0.1:port
	rtmp    string // rtmp://127.0.0.1:port/live
	dataDir string
	stderr  *testutil.Buffer
	stop    context.CancelFunc
	done    chan int
}

// freePort is testutil.FreePort.
func freePort(t *testing.T) int { return testutil.FreePort(t) }

func startNode(t *testing.T, extraEnv ...string) *node {
	t.Helper()
	return startNodeOn(t, redistest.Start(t), extraEnv...)
}

// startNodeOn starts shoal dev on the Redis rs, which other nodes may share
// (several origins).
func startNodeOn(t *testing.T, rs *redistest.Server, extraEnv ...string) *node {
	t.Helper()
	httpPort, rtmpPort := freePort(t), freePort(t)
	n := &node{
		t: t, redis: rs,
		http:    fmt.Sprintf("http://127.0.0.1:%d", httpPort),
		rtmp:    fmt.Sprintf("rtmp://127.0.0.1:%d/live", rtmpPort),
		dataDir: t.TempDir(),
		stderr:  &testutil.Buffer{},
		done:    make(chan int, 1),
	}
	env := append([]string{
		"SHOAL_REDIS_URL=" + rs.URL,
		"SHOAL_DATA_DIR=" + n.dataDir,
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", httpPort),
		fmt.Sprintf("SHOAL_RTMP_ADDR=127.0.0.1:%d", rtmpPort),
		"SHOAL_ADMIN_KEY=" + testAdminKey,
		"SHOAL_INGEST_RECONNECT_GRACE=3s",
		"SHOAL_LOG_LEVEL=debug",
		// These tests check the source path; transcode_test.go turns the ladder on.
		"SHOAL_TRANSCODE_MAX_LADDERS=0",
		// dev's own edge, RTSP and SRT ingest only where a test asks for
		// them; WebRTC media on ephemeral ports (tests run side by side).
		"SHOAL_EDGE_ADDR=off",
		"SHOAL_RTSP_ADDR=off",
		"SHOAL_SRT_ADDR=off",
		"SHOAL_INGEST_WHIP_UDP_PORT=0",
		"SHOAL_P2P_STUN_SERVERS=off", // no network here: host candidates only
	}, extraEnv...)
	ctx, cancel := context.WithCancel(context.Background())
	n.stop = cancel
	go func() { n.done <- Main(ctx, []string{"dev"}, env, io.Discard, n.stderr) }()
	t.Cleanup(func() {
		cancel()
		select {
		case code := <-n.done:
			if code != 0 {
				t.Errorf("shoal dev exited with %d", code)
			}
		case <-time.After(20 * time.Second):
			t.Errorf("shoal dev did not stop within 20 s")
		}
		if t.Failed() {
			t.Logf("shoal log:\n%s", n.stderr.String())
		}
	})
	n.waitFor("readiness", 20*time.Second, func() bool {
		code, _ := n.get("/readyz", "")
		return code == 200
	})
	return n
}

// waitFor waits until cond holds, looking every 50 ms, for at most d: for
// what is seen only through the node's HTTP API, Redis or a process's
// output.
func (n *node) waitFor(what string, d time.Duration, cond func() bool) {
	n.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline.C:
			n.t.Fatalf("timed out after %s waiting for %s", d, what)
		}
	}
}

func (n *node) do(method, path, key string, body any) (int, []byte) {
	n.t.Helper()
	var rd io.Reader
	if body != nil {
		b, _ := json.Marshal(body)
		rd = bytes.NewReader(b)
	}
	req, _ := http.NewRequest(method, n.http+path, rd)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return 0, nil
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

func (n *node) get(path, key string) (int, []byte) {
	n.t.Helper()
	return n.do(http.MethodGet, path, key, nil)
}

type liveStream struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	StreamKey string `json:"stream_key"`
	Status    string `json:"status"`
	Ingest    struct {
		RTMPURL string `json:"rtmp_url"`
		RTSPURL string `json:"rtsp_url"`
		WHIPURL string `json:"whip_url"`
		SRTURL  string `json:"srt_url"`
	} `json:"ingest"`
	Playback struct {
		HLSURL  string `json:"hls_url"`
		WHEPURL string `json:"whep_url"`
	} `json:"playback"`
}

func (n *node) createStream(name string) liveStream {
	n.t.Helper()
	code, body := n.do(http.MethodPost, "/v1/live-streams", testAdminKey, map[string]string{"name": name})
	if code != http.StatusCreated {
		n.t.Fatalf("create stream: %d %s", code, body)
	}
	var ls liveStream
	if err := json.Unmarshal(body, &ls); err != nil {
		n.t.Fatal(err)
	}
	return ls
}

func (n *node) status(id string) string {
	n.t.Helper()
	code, body := n.get("/v1/live-streams/"+id, testAdminKey)
	if code != 200 {
		return fmt.Sprintf("http %d", code)
	}
	var ls liveStream
	_ = json.Unmarshal(body, &ls)
	return ls.Status
}

// publish starts ffmpeg sending file to url as OBS would.
func publish(t *testing.T, file, url string) *exec.Cmd {
	t.Helper()
	return startClient(t, exec.Command("ffmpeg", "-v", "error", "-re", "-i", file, "-c", "copy", "-f", "flv", url))
}

// startClient starts a client process (a publisher) that the test's end
// kills if it still runs; its output is logged when the test failed.
func startClient(t *testing.T, cmd *exec.Cmd) *exec.Cmd {
	t.Helper()
	var out testutil.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Kill()
			_, _ = cmd.Process.Wait()
		}
		if t.Failed() {
			t.Logf("%s:\n%s", filepath.Base(cmd.Path), out.String())
		}
	})
	return cmd
}

func probeDuration(t *testing.T, url string) float64 {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "format=duration", "-of", "csv=p=0", url).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", url, err, out)
	}
	d, err := strconv.ParseFloat(strings.TrimSpace(string(out)), 64)
	if err != nil {
		t.Fatalf("ffprobe duration %q: %v", out, err)
	}
	return d
}

func probeVideo(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-show_entries", "stream=codec_name,width,height", "-of", "csv=p=0", url).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", url, err, out)
	}
	// ffprobe lists the stream once per HLS program and once on its own.
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first
}

// ended reports whether every media playlist of id has ENDLIST.
func (n *node) ended(id, name string) bool {
	return strings.Contains(n.playlist(id, "source/"+name), "#EXT-X-ENDLIST") &&
		strings.Contains(n.playlist(id, "audio/"+name), "#EXT-X-ENDLIST")
}

func (n *node) playlist(id, rel string) string {
	_, b := n.get("/hls/"+id+"/"+rel, "")
	return string(b)
}

func TestLiveToVODEndToEnd(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("e2e")
	if ls.Status != "idle" || ls.StreamKey == "" || ls.Ingest.RTMPURL != n.rtmp {
		t.Fatalf("new stream: %+v", ls)
	}
	if want := n.http + "/hls/" + ls.ID + "/master.m3u8"; ls.Playback.HLSURL != want {
		t.Fatalf("hls_url = %q, want %q", ls.Playback.HLSURL, want)
	}
	hook := newReceiver(t)
	hook.register(n, "live_stream.started", "live_stream.ended")
	file := clip(t, 10)
	start := time.Now()
	pub := publish(t, file, ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	n.waitFor("the master playlist", 15*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == 200
	})
	t.Logf("publish to first master playlist: %s", time.Since(start).Round(time.Millisecond))
	if s := n.status(ls.ID); s != "live" {
		t.Fatalf("status while publishing = %q, want live", s)
	}
	if got := probeVideo(t, ls.Playback.HLSURL); got != "h264,640,360" {
		t.Fatalf("live HLS video = %q, want h264,640,360", got)
	}
	if err := pub.Wait(); err != nil {
		t.Fatalf("ffmpeg publish: %v", err)
	}
	n.waitFor("ENDLIST", 15*time.Second, func() bool {
		return n.ended(ls.ID, "index.m3u8")
	})
	t.Logf("publish start to ENDLIST (10 s clip + 3 s grace): %s", time.Since(start).Round(time.Millisecond))
	if d := probeDuration(t, ls.Playback.HLSURL); d < 9 || d > 11 {
		t.Fatalf("recording lasts %.3f s, want 10 ± 1", d)
	}
	idx := n.playlist(ls.ID, "source/index.m3u8")
	for _, line := range strings.Split(idx, "\n") {
		if d, ok := strings.CutPrefix(line, "#EXTINF:"); ok {
			v, _ := strconv.ParseFloat(strings.TrimSuffix(d, ","), 64)
			if v < 1.9 || v > 2.1 {
				t.Errorf("segment of %.3f s, want 2 (keyframe every 2 s)", v)
			}
		}
	}
	n.waitFor("status idle", 5*time.Second, func() bool { return n.status(ls.ID) == "idle" })
	n.waitFor("the live_stream.ended webhook", 10*time.Second, func() bool { return hook.count("live_stream.ended", ls.ID) == 1 })
	if got := hook.count("live_stream.started", ls.ID); got != 1 {
		t.Errorf("%d live_stream.started deliveries, want 1", got)
	}

	code, metrics := n.get("/metrics", "")
	for _, m := range []string{"shoal_ingest_bytes_total", "shoal_hub_publications", `shoal_http_requests_total{method="GET",route="/hls/*path",status="200"}`, "shoal_packager_segments_total"} {
		if code != 200 || !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}
}

func TestIngestRefusals(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("refusals")
	file := clip(t, 10)

	bad := exec.Command("ffmpeg", "-v", "error", "-re", "-i", file, "-c", "copy", "-f", "flv", n.rtmp+"/sk_wrongwrongwrongwrongwrongwrongwr")
	if out, err := bad.CombinedOutput(); err == nil {
		t.Fatalf("publishing with a wrong key succeeded: %s", out)
	}
	if entries, _ := os.ReadDir(filepath.Join(n.dataDir, "hls")); len(entries) != 0 {
		t.Fatalf("a refused publisher produced output: %v", entries)
	}
	if !strings.Contains(n.stderr.String(), "reason=unknown_key") {
		t.Fatalf("the refusal was not logged")
	}

	first := publish(t, file, n.rtmp+"/"+ls.StreamKey)
	n.waitFor("live", 10*time.Second, func() bool { return n.status(ls.ID) == "live" })
	second := exec.Command("ffmpeg", "-v", "error", "-re", "-i", file, "-c", "copy", "-f", "flv", n.rtmp+"/"+ls.StreamKey)
	if out, err := second.CombinedOutput(); err == nil {
		t.Fatalf("a second publisher on a live key was accepted: %s", out)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("the first publisher was disturbed: %v", err)
	}

	// The control API and the origin refuse what they should.
	if code, body := n.get("/v1/live-streams", ""); code != 401 || !strings.Contains(string(body), `"code":"unauthorized"`) {
		t.Fatalf("no API key: %d %s", code, body)
	}
	for _, p := range []string{"/hls/../dev-admin-key", "/hls/%2e%2e/%2e%2e/etc/passwd", "/hls/" + ls.ID + "/..%2f..%2fdev-admin-key", "/v1/live-streams/..%2f"} {
		key := ""
		if strings.HasPrefix(p, "/v1/") {
			key = testAdminKey
		}
		if code, body := n.get(p, key); code != 400 && code != 404 || strings.Contains(string(body), "shoal_") {
			t.Errorf("%s: %d %s", p, code, body)
		}
	}
}

func TestReconnectWithinGraceIsOneStream(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("reconnect")
	file := clip(t, 6)
	url := n.rtmp + "/" + ls.StreamKey
	if err := publish(t, file, url).Wait(); err != nil {
		t.Fatal(err)
	}
	if err := publish(t, file, url).Wait(); err != nil { // within the 3 s grace
		t.Fatal(err)
	}
	n.waitFor("ENDLIST", 15*time.Second, func() bool {
		return n.ended(ls.ID, "recording.m3u8")
	})
	rec := n.playlist(ls.ID, "source/recording.m3u8")
	if c := strings.Count(rec, "#EXT-X-DISCONTINUITY\n"); c != 1 {
		t.Fatalf("%d discontinuities, want 1:\n%s", c, rec)
	}
	if d := probeDuration(t, ls.Playback.HLSURL); d < 11 || d > 13 {
		t.Fatalf("recording lasts %.3f s, want 12 ± 1 (both sessions, nothing lost)", d)
	}
}

func TestRedisDeathDoesNotStopTheStream(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("redis-dies")
	file := clip(t, 10)
	pub := publish(t, file, n.rtmp+"/"+ls.StreamKey)
	n.waitFor("the first segment", 15*time.Second, func() bool {
		return strings.Contains(n.playlist(ls.ID, "source/index.m3u8"), "#EXTINF")
	})
	n.redis.Kill()
	code, body := n.get("/readyz", "")
	if code != 503 || !strings.Contains(string(body), "redis") {
		t.Fatalf("/readyz with Redis dead: %d %s", code, body)
	}
	code, body = n.get("/v1/live-streams/"+ls.ID, testAdminKey)
	if code != 503 || !strings.Contains(string(body), `"code":"unavailable"`) {
		t.Fatalf("API with Redis dead: %d %s", code, body)
	}
	before := strings.Count(n.playlist(ls.ID, "source/index.m3u8"), "#EXTINF")
	n.waitFor("more segments while Redis is dead", 10*time.Second, func() bool {
		return strings.Count(n.playlist(ls.ID, "source/index.m3u8"), "#EXTINF") > before
	})
	n.redis.Restart(t)
	n.waitFor("readiness after Redis returns", 10*time.Second, func() bool {
		code, _ := n.get("/readyz", "")
		return code == 200
	})
	// This Redis keeps no data across the kill; the API must simply work again.
	if code, body := n.get("/v1/live-streams", testAdminKey); code != 200 {
		t.Fatalf("API after Redis returned: %d %s", code, body)
	}
	if err := pub.Wait(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	n.waitFor("ENDLIST", 15*time.Second, func() bool {
		return n.ended(ls.ID, "index.m3u8")
	})
	if d := probeDuration(t, ls.Playback.HLSURL); d < 9 || d > 11 {
		t.Fatalf("recording lasts %.3f s, want 10 ± 1", d)
	}
}

func TestDeleteWhileLiveStopsAndRemoves(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("to-delete")
	pub := publish(t, clip(t, 10), n.rtmp+"/"+ls.StreamKey)
	n.waitFor("the master playlist", 15*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == 200
	})
	if code, body := n.do(http.MethodDelete, "/v1/live-streams/"+ls.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, body)
	}
	done := make(chan error, 1)
	go func() { done <- pub.Wait() }()
	select {
	case <-done: // disconnected long before the 10 s clip ends
	case <-time.After(5 * time.Second):
		t.Fatal("the publisher of a deleted stream is still connected")
	}
	n.waitFor("the output to be removed", 10*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		_, err := os.Stat(filepath.Join(n.dataDir, "hls", ls.ID))
		return code == 404 && os.IsNotExist(err)
	})
	if code, _ := n.get("/v1/live-streams/"+ls.ID, testAdminKey); code != 404 {
		t.Fatalf("deleted stream: GET %d, want 404", code)
	}
}

// While Redis is down a publisher this node already accepted can reconnect
// (its key is remembered), and the recording continues; a key the node has
// never seen cannot be checked and is refused.
func TestReconnectWhileRedisIsDown(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("outage")
	file := clip(t, 6)
	url := n.rtmp + "/" + ls.StreamKey
	if err := publish(t, file, url).Wait(); err != nil {
		t.Fatal(err)
	}
	n.redis.Kill()
	if err := publish(t, file, url).Wait(); err != nil { // within the 3 s grace
		t.Fatalf("reconnect with a known key while Redis is down: %v", err)
	}
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", file, "-c", "copy", "-f", "flv",
		n.rtmp+"/sk_neverseenneverseenneverseennever").CombinedOutput(); err == nil {
		t.Fatalf("an unknown key was accepted while Redis is down: %s", out)
	}
	n.waitFor("ENDLIST", 15*time.Second, func() bool { return n.ended(ls.ID, "recording.m3u8") })
	rec := n.playlist(ls.ID, "source/recording.m3u8")
	if c := strings.Count(rec, "#EXT-X-DISCONTINUITY\n"); c != 1 {
		t.Fatalf("%d discontinuities, want 1:\n%s", c, rec)
	}
	if d := probeDuration(t, ls.Playback.HLSURL); d < 11 || d > 13 {
		t.Fatalf("recording lasts %.3f s, want 12 ± 1", d)
	}
	if !strings.Contains(n.stderr.String(), "reason=auth_unavailable") {
		t.Fatal("the refusal of an uncheckable key was not logged as auth_unavailable")
	}
}
