// Command storage measures what keeping media on S3 costs against the
// local disk, side by side on the same machine: `shoal dev` with
// SHOAL_STORAGE_BACKEND=fs, then with s3 on a local SeaweedFS (the same
// Redis), each processing the same uploaded 720p clip (PUT to ready: the
// source kept, fetched, transcoded into the ladder, published), then, on
// s3, a live stream whose segments go up as they are written. It prints
// one line:
//
//	bench-storage vod_fs_s=.. vod_s3_s=.. s3_over_fs=.. live_upload_p50_ms=.. live_upload_p95_ms=.. live_upload_mean_ms=.. clip_s=..
//
// s3_over_fs = vod_s3_s / vod_fs_s (above 1: S3 is slower); the live
// figures are the time from a live file's write to its upload into the
// bucket (shoal_storage_upload_delay_seconds; percentiles are the upper
// bounds of the histogram's buckets). SeaweedFS runs on loopback: a
// remote S3 adds its round trips.
package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/benchmarks/internal/benchutil"
	"github.com/shoal-video/shoal/internal/app"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

const (
	nodeEnv  = "SHOAL_BENCH_STORAGE_NODE"
	adminKey = "bench-storage-admin-key-0123456789"
	bucket   = "shoal-bench"
)

func main() {
	if os.Getenv(nodeEnv) == "1" {
		ctx, stop := signalContext()
		code := app.Main(ctx, os.Args[1:], os.Environ(), io.Discard, os.Stderr)
		stop()
		os.Exit(code)
	}
	seconds := flag.Int("seconds", 60, "length of the 720p30 clip uploaded")
	live := flag.Int("live", 20, "seconds of live stream published on s3")
	flag.Parse()
	if err := run(*seconds, *live); err != nil {
		fmt.Fprintln(os.Stderr, "bench-storage:", err)
		os.Exit(1)
	}
}

func signalContext() (context.Context, func()) {
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		// The parent closes stdin to stop the node.
		_, _ = io.Copy(io.Discard, os.Stdin)
		cancel()
	}()
	return ctx, cancel
}

// tb starts the shared SeaweedFS outside a test.
type tb struct{ testing.TB }

func (tb) Helper() {}
func (tb) Fatalf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-storage: "+format+"\n", args...)
	os.Exit(1)
}

func run(seconds, liveSeconds int) error {
	dir, err := os.MkdirTemp("", "bench-storage-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	src := filepath.Join(dir, "src.mp4")
	if err := makeClip(src, seconds); err != nil {
		return fmt.Errorf("making the clip: %w", err)
	}
	liveClip := filepath.Join(dir, "live.mp4")
	if err := makeClip(liveClip, liveSeconds); err != nil {
		return fmt.Errorf("making the live clip: %w", err)
	}
	redisURL, stopRedis, err := benchutil.StartRedis(dir)
	if err != nil {
		return err
	}
	defer stopRedis()
	srv := s3test.Shared(tb{})
	defer s3test.StopShared()
	s3env := []string{"SHOAL_STORAGE_BACKEND=s3", "SHOAL_STORAGE_ENDPOINT=" + srv.Endpoint, "SHOAL_STORAGE_BUCKET=" + bucket, "SHOAL_STORAGE_PATH_STYLE=true"}

	fs, err := startNode(filepath.Join(dir, "fs"), redisURL, nil)
	if err != nil {
		return err
	}
	vodFS, err := fs.vod(src)
	fs.stop()
	if err != nil {
		return fmt.Errorf("fs: %w", err)
	}
	s3, err := startNode(filepath.Join(dir, "s3"), redisURL, s3env)
	if err != nil {
		return err
	}
	defer s3.stop()
	vodS3, err := s3.vod(src)
	if err != nil {
		return fmt.Errorf("s3: %w", err)
	}
	p50, p95, mean, err := s3.live(liveClip)
	if err != nil {
		return fmt.Errorf("s3 live: %w", err)
	}
	fmt.Printf("bench-storage vod_fs_s=%.2f vod_s3_s=%.2f s3_over_fs=%.2f live_upload_p50_ms=%.0f live_upload_p95_ms=%.0f live_upload_mean_ms=%.1f clip_s=%d\n",
		vodFS, vodS3, vodS3/vodFS, p50*1000, p95*1000, mean*1000, seconds)
	return nil
}

func makeClip(path string, seconds int) error {
	return benchutil.Sh("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1280x720:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "veryfast", "-g", "60", "-b:v", "3M", "-c:a", "aac", "-shortest", path)
}

// node is `shoal dev` in a child process.
type node struct {
	url, rtmp string
	cmd       *exec.Cmd
	stdin     io.Closer
	log       *bytes.Buffer
}

func startNode(dataDir, redisURL string, extra []string) (*node, error) {
	hp, _ := benchutil.FreePort()
	rp, _ := benchutil.FreePort()
	exe, err := os.Executable()
	if err != nil {
		return nil, err
	}
	n := &node{url: fmt.Sprintf("http://127.0.0.1:%d", hp), rtmp: fmt.Sprintf("rtmp://127.0.0.1:%d/live", rp), log: &bytes.Buffer{}}
	cmd := exec.Command(exe, "dev")
	cmd.Env = append(append(os.Environ(), nodeEnv+"=1", "SHOAL_REDIS_URL="+redisURL, "SHOAL_DATA_DIR="+dataDir,
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", hp), fmt.Sprintf("SHOAL_RTMP_ADDR=127.0.0.1:%d", rp),
		"SHOAL_EDGE_ADDR=off", "SHOAL_RTSP_ADDR=off", "SHOAL_SRT_ADDR=off", "SHOAL_INGEST_WHIP_UDP_PORT=0",
		"SHOAL_ADMIN_KEY="+adminKey, "SHOAL_TRANSCODE_HWACCEL=none", "SHOAL_TRANSCODE_MAX_LADDERS=0",
		"SHOAL_HLS_PART_DURATION=0", "SHOAL_LOG_LEVEL=warn"), extra...)
	cmd.Stdout, cmd.Stderr = io.Discard, n.log
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
	in, err := cmd.StdinPipe()
	if err != nil {
		return nil, err
	}
	if err := cmd.Start(); err != nil {
		return nil, err
	}
	n.cmd, n.stdin = cmd, in
	for deadline := time.Now().Add(30 * time.Second); ; time.Sleep(100 * time.Millisecond) {
		if resp, err := http.Get(n.url + "/readyz"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return n, nil
			}
		}
		if time.Now().After(deadline) {
			n.stop()
			return nil, fmt.Errorf("shoal dev did not get ready in 30 s:\n%s", n.log)
		}
	}
}

func (n *node) stop() {
	n.stdin.Close()
	done := make(chan struct{})
	go func() { _ = n.cmd.Wait(); close(done) }()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		_ = n.cmd.Process.Kill()
		<-done
	}
}

func (n *node) api(method, path string, body io.Reader, out any) error {
	req, err := http.NewRequest(method, n.url+path, body)
	if err != nil {
		return err
	}
	req.Header.Set("Authorization", "Bearer "+adminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	if resp.StatusCode >= 300 {
		return fmt.Errorf("%s %s: %d %s", method, path, resp.StatusCode, b)
	}
	if out != nil {
		return json.Unmarshal(b, out)
	}
	return nil
}

// vod uploads src and returns the seconds from the PUT to ready.
func (n *node) vod(src string) (float64, error) {
	var v struct{ ID, Status, Error string }
	if err := n.api(http.MethodPost, "/v1/videos", strings.NewReader(`{"title":"bench"}`), &v); err != nil {
		return 0, err
	}
	f, err := os.Open(src)
	if err != nil {
		return 0, err
	}
	defer f.Close()
	start := time.Now()
	if err := n.api(http.MethodPut, "/v1/videos/"+v.ID+"/source", f, nil); err != nil {
		return 0, err
	}
	for deadline := time.Now().Add(10 * time.Minute); ; time.Sleep(100 * time.Millisecond) {
		if err := n.api(http.MethodGet, "/v1/videos/"+v.ID, nil, &v); err != nil {
			return 0, err
		}
		switch v.Status {
		case "ready":
			return time.Since(start).Seconds(), nil
		case "failed":
			return 0, fmt.Errorf("the video failed: %s", v.Error)
		}
		if time.Now().After(deadline) {
			return 0, errors.New("the video was not ready in 10 minutes")
		}
	}
}

// live publishes clip in real time and returns the upload delays of its
// files: p50, p95 (bucket upper bounds) and the mean, in seconds.
func (n *node) live(clip string) (p50, p95, mean float64, err error) {
	var ls struct {
		ID        string `json:"id"`
		StreamKey string `json:"stream_key"`
	}
	if err := n.api(http.MethodPost, "/v1/live-streams", strings.NewReader(`{"name":"bench"}`), &ls); err != nil {
		return 0, 0, 0, err
	}
	pub := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip, "-c", "copy", "-f", "flv", n.rtmp+"/"+ls.StreamKey)
	if out, err := pub.CombinedOutput(); err != nil {
		return 0, 0, 0, fmt.Errorf("publishing: %v\n%s", err, out)
	}
	// Wait for the spool to empty.
	for deadline := time.Now().Add(time.Minute); ; time.Sleep(200 * time.Millisecond) {
		h, err := n.histogram("shoal_storage_upload_delay_seconds")
		if err != nil {
			return 0, 0, 0, err
		}
		if spool, err := n.gauge("shoal_storage_spool_objects"); err == nil && spool == 0 && h.count > 0 {
			return h.quantile(0.5), h.quantile(0.95), h.sum / h.count, nil
		}
		if time.Now().After(deadline) {
			return 0, 0, 0, errors.New("the spool did not empty in a minute")
		}
	}
}

type histogram struct {
	buckets    []bucketCount // cumulative, by upper bound
	sum, count float64
}

type bucketCount struct{ le, n float64 }

func (h histogram) quantile(q float64) float64 {
	want := q * h.count
	for _, b := range h.buckets {
		if b.n >= want {
			return b.le
		}
	}
	return math.Inf(1)
}

func (n *node) metrics() ([]string, error) {
	resp, err := http.Get(n.url + "/metrics")
	if err != nil {
		return nil, err
	}
	defer resp.Body.Close()
	var lines []string
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		lines = append(lines, sc.Text())
	}
	return lines, sc.Err()
}

func (n *node) gauge(name string) (float64, error) {
	lines, err := n.metrics()
	if err != nil {
		return 0, err
	}
	for _, l := range lines {
		if v, ok := strings.CutPrefix(l, name+" "); ok {
			return strconv.ParseFloat(v, 64)
		}
	}
	return 0, fmt.Errorf("no %s in /metrics", name)
}

func (n *node) histogram(name string) (histogram, error) {
	lines, err := n.metrics()
	if err != nil {
		return histogram{}, err
	}
	var h histogram
	for _, l := range lines {
		switch {
		case strings.HasPrefix(l, name+`_bucket{le="`):
			rest := strings.TrimPrefix(l, name+`_bucket{le="`)
			le, val, _ := strings.Cut(rest, `"} `)
			b, _ := strconv.ParseFloat(le, 64)
			if le == "+Inf" {
				b = math.Inf(1)
			}
			c, _ := strconv.ParseFloat(val, 64)
			h.buckets = append(h.buckets, bucketCount{b, c})
		case strings.HasPrefix(l, name+"_sum "):
			h.sum, _ = strconv.ParseFloat(strings.TrimPrefix(l, name+"_sum "), 64)
		case strings.HasPrefix(l, name+"_count "):
			h.count, _ = strconv.ParseFloat(strings.TrimPrefix(l, name+"_count "), 64)
		}
	}
	sort.Slice(h.buckets, func(i, j int) bool { return h.buckets[i].le < h.buckets[j].le })
	return h, nil
}
