package app

import (
	"bytes"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/webhook"
)

// VOD end to end: uploads over real HTTP (PUT and tus), the job queue on a
// real Redis, workers in process (shoal dev) or as separate processes
// (this test binary re-executed as `shoal worker`, see TestMain), and
// ffprobe reading the HLS we publish.

type video struct {
	ID         string   `json:"id"`
	Title      string   `json:"title"`
	Status     string   `json:"status"`
	Progress   int      `json:"progress"`
	Error      string   `json:"error"`
	Duration   *float64 `json:"duration"`
	Attempts   int      `json:"attempts"`
	Renditions []struct {
		Name   string `json:"name"`
		Width  int    `json:"width"`
		Height int    `json:"height"`
	} `json:"renditions"`
	Upload *struct {
		TusURL    string `json:"tus_url"`
		DirectURL string `json:"direct_url"`
	} `json:"upload"`
	Playback struct {
		HLSURL        string `json:"hls_url"`
		ThumbnailURL  string `json:"thumbnail_url"`
		StoryboardURL string `json:"storyboard_url"`
	} `json:"playback"`
}

func (n *node) createVideo(title string) video {
	n.t.Helper()
	code, body := n.do(http.MethodPost, "/v1/videos", testAdminKey, map[string]string{"title": title})
	if code != http.StatusCreated {
		n.t.Fatalf("create video: %d %s", code, body)
	}
	var v video
	if err := json.Unmarshal(body, &v); err != nil {
		n.t.Fatal(err)
	}
	return v
}

func (n *node) video(id string) video {
	n.t.Helper()
	code, body := n.get("/v1/videos/"+id, testAdminKey)
	if code != http.StatusOK {
		n.t.Fatalf("get video: %d %s", code, body)
	}
	var v video
	if err := json.Unmarshal(body, &v); err != nil {
		n.t.Fatal(err)
	}
	return v
}

// putFile uploads path with one PUT of the raw file, as curl -T does.
func putFile(t *testing.T, url, key, path string) (int, []byte) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	st, _ := f.Stat()
	req, _ := http.NewRequest(http.MethodPut, url, f)
	req.ContentLength = st.Size()
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("PUT %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// waitVideo waits until the video leaves waiting/processing and returns it,
// logging the progress it saw.
func (n *node) waitVideo(id string, d time.Duration) video {
	n.t.Helper()
	var v video
	var seen []int
	n.waitFor("video "+id+" to finish processing", d, func() bool {
		v = n.video(id)
		if len(seen) == 0 || seen[len(seen)-1] != v.Progress {
			seen = append(seen, v.Progress)
		}
		return v.Status != "waiting" && v.Status != "processing"
	})
	n.t.Logf("video %s: %s, progress seen %v", id, v.Status, seen)
	return v
}

func TestVODUploadBecomesReady(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	src := testutil.MakeMP4(t, 854, 480, 10)
	v := n.createVideo("ten seconds")
	if v.Status != "waiting" || v.Upload == nil || v.Upload.DirectURL != n.http+"/v1/videos/"+v.ID+"/source" {
		t.Fatalf("new video: %+v", v)
	}
	start := time.Now()
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT source: %d %s", code, body)
	}
	v = n.waitVideo(v.ID, 90*time.Second)
	t.Logf("10 s 480p clip: upload to ready in %s", time.Since(start).Round(time.Millisecond))
	if v.Status != "ready" || v.Progress != 100 || v.Error != "" || v.Attempts != 1 {
		t.Fatalf("video (want ready at the first attempt): %+v", v)
	}
	if len(v.Renditions) < 2 || v.Renditions[0].Name != "480p" || v.Renditions[1].Name != "360p" {
		t.Fatalf("renditions %+v, want 480p and 360p", v.Renditions)
	}
	if v.Duration == nil || *v.Duration < 9.5 || *v.Duration > 10.5 {
		t.Fatalf("duration %v, want 10 s", v.Duration)
	}
	if d := probeDuration(t, v.Playback.HLSURL); d < 9.5 || d > 10.5 {
		t.Fatalf("ffprobe measures %.3f s, want 10 ± 0.5", d)
	}
	if got := probeVideo(t, n.http+"/hls/"+v.ID+"/480p/index.m3u8"); got != "h264,854,480" {
		t.Fatalf("480p rendition = %q", got)
	}
	master := n.playlist(v.ID, "master.m3u8")
	for _, want := range []string{"480p/index.m3u8", "360p/index.m3u8", `TYPE=AUDIO`, "CODECS="} {
		if !strings.Contains(master, want) {
			t.Errorf("master playlist lacks %q:\n%s", want, master)
		}
	}
	idx := n.playlist(v.ID, "360p/index.m3u8")
	if !strings.Contains(idx, "#EXT-X-ENDLIST") || !strings.Contains(idx, "#EXT-X-PLAYLIST-TYPE:VOD") {
		t.Errorf("rendition playlist is not a finished VOD playlist:\n%s", idx)
	}
	// Poster and storyboard.
	if v.Playback.ThumbnailURL != n.http+"/hls/"+v.ID+"/poster.jpg" || v.Playback.StoryboardURL == "" {
		t.Fatalf("playback = %+v", v.Playback)
	}
	code, poster := n.get("/hls/"+v.ID+"/poster.jpg", "")
	if code != 200 || !bytes.HasPrefix(poster, []byte{0xff, 0xd8}) {
		t.Fatalf("poster: %d, %d bytes", code, len(poster))
	}
	code, vtt := n.get("/hls/"+v.ID+"/storyboard.vtt", "")
	if code != 200 || !strings.HasPrefix(string(vtt), "WEBVTT") || !strings.Contains(string(vtt), "storyboard-0.jpg#xywh=") {
		t.Fatalf("storyboard: %d\n%s", code, vtt)
	}
	if n := strings.Count(string(vtt), "-->"); n < 9 || n > 11 {
		t.Errorf("storyboard has %d cues for 10 s, want about 10", n)
	}
	if code, _ := n.get("/hls/"+v.ID+"/storyboard-0.jpg", ""); code != 200 {
		t.Fatalf("storyboard sprite: %d", code)
	}
	// Nothing is left in the staging area.
	if ents, _ := os.ReadDir(filepath.Join(n.dataDir, "work", "staging")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
	code, metrics := n.get("/metrics", "")
	for _, m := range []string{`shoal_vod_jobs_total{outcome="ready"} 1`, "shoal_vod_job_duration_seconds_count 1", "shoal_vod_queue_jobs"} {
		if code != 200 || !strings.Contains(string(metrics), m) {
			t.Errorf("/metrics lacks %s", m)
		}
	}

	// DELETE removes the record and the files.
	if code, _ := n.do(http.MethodDelete, "/v1/videos/"+v.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d", code)
	}
	if code, _ := n.get("/hls/"+v.ID+"/master.m3u8", ""); code != http.StatusNotFound {
		t.Fatalf("master playlist after DELETE: %d", code)
	}
	if _, err := os.Stat(filepath.Join(n.dataDir, "videos", v.ID)); !os.IsNotExist(err) {
		t.Fatalf("source after DELETE: %v", err)
	}
}

func TestVODRefusals(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_MAX_UPLOAD_BYTES=1048576")
	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	os.WriteFile(text, bytes.Repeat([]byte("not a video at all\n"), 100), 0o644)
	v := n.createVideo("notes")
	code, body := putFile(t, v.Upload.DirectURL, testAdminKey, text)
	if code != http.StatusUnprocessableEntity || !strings.Contains(string(body), "not a video file") {
		t.Fatalf("PUT of a text file: %d %s", code, body)
	}
	if got := n.video(v.ID); got.Status != "failed" || !strings.HasPrefix(got.Error, "not a video file") {
		t.Fatalf("video after a text upload: %+v", got)
	}
	// Audio only.
	audio := filepath.Join(dir, "tone.m4a")
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-f", "lavfi", "-i", "sine=frequency=440", "-t", "2", audio).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v %s", err, out)
	}
	v = n.createVideo("tone")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, audio); code != http.StatusUnprocessableEntity ||
		!strings.Contains(string(body), "no video stream") {
		t.Fatalf("PUT of an audio file: %d %s", code, body)
	}
	// A truncated MP4.
	whole, _ := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	trunc := filepath.Join(dir, "trunc.mp4")
	os.WriteFile(trunc, whole[:len(whole)/2], 0o644)
	v = n.createVideo("truncated")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, trunc); code != http.StatusUnprocessableEntity {
		t.Fatalf("PUT of a truncated MP4: %d %s", code, body)
	}
	t.Logf("truncated MP4: %s", n.video(v.ID).Error)
	// No key, then too large.
	v = n.createVideo("big")
	if code, _ := putFile(t, v.Upload.DirectURL, "", text); code != http.StatusUnauthorized {
		t.Fatalf("PUT without a key: %d", code)
	}
	big := filepath.Join(dir, "big.bin")
	os.WriteFile(big, make([]byte, 1<<20+1), 0o644)
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, big); code != http.StatusRequestEntityTooLarge {
		t.Fatalf("PUT of 1 MiB + 1 with a 1 MiB limit: %d %s", code, body)
	}
	if got := n.video(v.ID); got.Status != "waiting" {
		t.Fatalf("video after a refused upload: %+v", got)
	}
}

// tusClient is a small tus 1.0 client over real HTTP.
type tusClient struct {
	t   *testing.T
	key string
}

func (c tusClient) do(method, url string, hdr map[string]string, body io.Reader, size int64) (*http.Response, error) {
	req, _ := http.NewRequest(method, url, body)
	if body != nil {
		req.ContentLength = size
	}
	req.Header.Set("Authorization", "Bearer "+c.key)
	req.Header.Set("Tus-Resumable", "1.0.0")
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err == nil {
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
	}
	return resp, err
}

// failingReader returns n bytes of r, then an error, as a dropped
// connection does mid-upload.
type failingReader struct {
	r io.Reader
	n int
}

func (f *failingReader) Read(p []byte) (int, error) {
	if f.n <= 0 {
		return 0, errors.New("connection dropped")
	}
	if len(p) > f.n {
		p = p[:f.n]
	}
	k, err := f.r.Read(p)
	f.n -= k
	return k, err
}

func TestVODTusUploadInterruptedAndResumed(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	src := testutil.MakeMP4(t, 640, 360, 6)
	data, _ := os.ReadFile(src)
	v := n.createVideo("tus")
	c := tusClient{t: t, key: testAdminKey}
	meta := "video_id " + base64.StdEncoding.EncodeToString([]byte(v.ID)) + ",filename " + base64.StdEncoding.EncodeToString([]byte("clip.mp4"))
	resp, err := c.do(http.MethodPost, v.Upload.TusURL, map[string]string{
		"Upload-Length": strconv.Itoa(len(data)), "Upload-Metadata": meta,
	}, nil, 0)
	if err != nil || resp.StatusCode != http.StatusCreated {
		t.Fatalf("tus create: %v %v", resp, err)
	}
	loc := resp.Header.Get("Location")
	if !strings.HasPrefix(loc, n.http+"/v1/uploads/") {
		t.Fatalf("Location %q", loc)
	}
	// The connection drops after 40% of the file.
	cut := len(data) * 2 / 5
	_, err = c.do(http.MethodPatch, loc, map[string]string{
		"Upload-Offset": "0", "Content-Type": "application/offset+octet-stream",
	}, &failingReader{r: bytes.NewReader(data), n: cut}, int64(len(data)))
	if err == nil {
		t.Fatal("the interrupted PATCH succeeded")
	}
	// Resume from wherever the server got to.
	var offset int
	n.waitFor("the server to record the partial upload", 10*time.Second, func() bool {
		resp, err := c.do(http.MethodHead, loc, nil, nil, 0)
		if err != nil || resp.StatusCode != 200 {
			return false
		}
		offset, _ = strconv.Atoi(resp.Header.Get("Upload-Offset"))
		return offset > 0
	})
	if offset > cut {
		t.Fatalf("server offset %d beyond the %d bytes sent", offset, cut)
	}
	t.Logf("interrupted after %d of %d bytes; the server kept %d", cut, len(data), offset)
	if got := n.video(v.ID); got.Status != "waiting" {
		t.Fatalf("video during the interrupted upload: %+v", got)
	}
	resp, err = c.do(http.MethodPatch, loc, map[string]string{
		"Upload-Offset": strconv.Itoa(offset), "Content-Type": "application/offset+octet-stream",
	}, bytes.NewReader(data[offset:]), int64(len(data)-offset))
	if err != nil || resp.StatusCode != http.StatusNoContent {
		t.Fatalf("resumed PATCH: %v %v", resp, err)
	}
	stored, err := os.ReadFile(filepath.Join(n.dataDir, "videos", v.ID, "source"))
	if err != nil || sha256.Sum256(stored) != sha256.Sum256(data) {
		t.Fatalf("stored source is not byte-identical to the file (%v)", err)
	}
	v = n.waitVideo(v.ID, 90*time.Second)
	if v.Status != "ready" {
		t.Fatalf("video: %+v", v)
	}
	if d := probeDuration(t, v.Playback.HLSURL); d < 5.5 || d > 6.5 {
		t.Fatalf("ffprobe measures %.3f s, want 6", d)
	}
}

// workerProc is `shoal worker` running as a separate process.
type workerProc struct {
	cmd    *exec.Cmd
	stderr *testutil.Buffer
}

// killBusy waits (up to a minute) until ready holds and one of workers has
// logged busy, kills that one with SIGKILL (kill -9, as a machine dies) and
// returns it and the other.
func (n *node) killBusy(t *testing.T, what string, workers [2]*workerProc, ready func() bool, busy string) (victim, other *workerProc) {
	t.Helper()
	n.waitFor(what, 60*time.Second, func() bool {
		if !ready() {
			return false
		}
		for i, w := range workers {
			if strings.Contains(w.stderr.String(), busy) {
				victim, other = w, workers[1-i]
				return true
			}
		}
		return false
	})
	if err := victim.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = victim.cmd.Wait()
	return victim, other
}

// startWorker runs this test binary as `shoal worker` (see TestMain) on
// n's Redis and data directory.
func startWorker(t *testing.T, n *node, extraEnv ...string) *workerProc {
	t.Helper()
	return startProc(t, "worker", append([]string{
		"SHOAL_REDIS_URL=" + n.redis.URL,
		"SHOAL_DATA_DIR=" + n.dataDir,
		fmt.Sprintf("SHOAL_HTTP_ADDR=127.0.0.1:%d", freePort(t)),
		"SHOAL_TRANSCODE_HWACCEL=none",
	}, extraEnv...)...)
}

// startProc runs this test binary as `shoal <role>` with env.
func startProc(t *testing.T, role string, env ...string) *workerProc {
	t.Helper()
	cmd := exec.Command(os.Args[0], role)
	cmd.Env = append(os.Environ(), append([]string{runMainEnv + "=1", "SHOAL_LOG_LEVEL=debug"}, env...)...)
	w := &workerProc{cmd: cmd, stderr: &testutil.Buffer{}}
	cmd.Stdout, cmd.Stderr = w.stderr, w.stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			_ = cmd.Process.Signal(syscall.SIGTERM)
			done := make(chan struct{})
			go func() { _ = cmd.Wait(); close(done) }()
			select {
			case <-done:
			case <-time.After(15 * time.Second):
				_ = cmd.Process.Kill()
				<-done
				t.Errorf("worker did not stop on SIGTERM")
			}
		}
		if t.Failed() {
			t.Logf("worker %d log:\n%s", cmd.Process.Pid, w.stderr.String())
		}
	})
	return w
}

// receiver is a webhook endpoint that verifies every delivery's signature.
type receiver struct {
	t      *testing.T
	url    string
	secret string

	mu     sync.Mutex
	events []map[string]any
	bad    int
}

func newReceiver(t *testing.T) *receiver {
	r := &receiver{t: t}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		body, _ := io.ReadAll(req.Body)
		r.mu.Lock()
		defer r.mu.Unlock()
		if err := webhook.Verify(r.secret, req.Header.Get("Shoal-Signature"), body, time.Minute, time.Now()); err != nil {
			r.bad++
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		var ev map[string]any
		_ = json.Unmarshal(body, &ev)
		r.events = append(r.events, ev)
	}))
	t.Cleanup(srv.Close)
	r.url = srv.URL + "/hooks/shoal"
	return r
}

// register creates a webhook on n for events.
func (r *receiver) register(n *node, events ...string) {
	code, body := n.do(http.MethodPost, "/v1/webhooks", testAdminKey, map[string]any{"url": r.url, "events": events})
	if code != http.StatusCreated {
		r.t.Fatalf("create webhook: %d %s", code, body)
	}
	var wh struct {
		Secret string `json:"secret"`
	}
	_ = json.Unmarshal(body, &wh)
	r.mu.Lock()
	r.secret = wh.Secret
	r.mu.Unlock()
}

// count returns how many verified deliveries of typ about id arrived.
func (r *receiver) count(typ, id string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	n := 0
	for _, ev := range r.events {
		data, _ := ev["data"].(map[string]any)
		if ev["type"] == typ && data["id"] == id {
			n++
		}
	}
	return n
}

func TestVODWorkerKilledMidJob(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_VOD_WORKERS=0")
	hook := newReceiver(t)
	hook.register(n, "video.ready", "video.failed")
	workers := []*workerProc{
		startWorker(t, n, "SHOAL_VOD_IDLE_TIMEOUT=3s"),
		startWorker(t, n, "SHOAL_VOD_IDLE_TIMEOUT=3s"),
	}
	src := testutil.MakeMP4(t, 854, 480, 20)
	v := n.createVideo("survives a dead worker")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, body)
	}
	// Kill the worker holding the job once it has made progress.
	victim, other := n.killBusy(t, "a worker to make progress on the job", [2]*workerProc{workers[0], workers[1]},
		func() bool { return n.video(v.ID).Progress >= 5 }, "processing video")
	killedAt := time.Now()
	t.Logf("killed worker %d at %d%%", victim.cmd.Process.Pid, n.video(v.ID).Progress)
	v = n.waitVideo(v.ID, 120*time.Second)
	if v.Status != "ready" {
		t.Fatalf("video after its worker died: %+v\nsurvivor log:\n%s", v, other.stderr.String())
	}
	t.Logf("ready %s after the kill, attempts %d", time.Since(killedAt).Round(time.Millisecond), v.Attempts)
	if v.Attempts != 2 {
		t.Errorf("attempts = %d, want 2 (the killed one and the takeover)", v.Attempts)
	}
	if !strings.Contains(other.stderr.String(), "took over a job from a worker that stopped") {
		t.Errorf("the survivor did not report the takeover")
	}
	if d := probeDuration(t, v.Playback.HLSURL); d < 19.5 || d > 20.5 {
		t.Fatalf("ffprobe measures %.3f s, want 20", d)
	}
	if ents, _ := os.ReadDir(filepath.Join(n.dataDir, "work", "staging")); len(ents) != 0 {
		t.Errorf("staging left behind: %v", ents)
	}
	// The signed webhook says ready, once.
	n.waitFor("the video.ready webhook", 20*time.Second, func() bool { return hook.count("video.ready", v.ID) > 0 })
	// A duplicate could only come from a job still held, an event not yet
	// fanned out or a delivery not yet finished: once there are none,
	// every delivery has arrived.
	store, err := routing.NewStore(n.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	n.waitFor("no job, event or delivery left in flight", 20*time.Second, func() bool {
		ctx := t.Context()
		jobs, err1 := store.JobQueue(ctx)
		events, err2 := store.WebhookEventBacklog(ctx)
		deliveries, err3 := store.PendingWebhookDeliveries(ctx)
		return errors.Join(err1, err2, err3) == nil && jobs == (routing.JobQueueStats{}) && events == 0 && deliveries == 0
	})
	if got := hook.count("video.ready", v.ID); got != 1 || hook.count("video.failed", v.ID) != 0 || hook.bad != 0 {
		t.Fatalf("webhooks: %d video.ready, %d video.failed, %d badly signed; want exactly one video.ready",
			got, hook.count("video.failed", v.ID), hook.bad)
	}
}
