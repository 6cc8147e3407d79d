package app

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/remote"
	"github.com/shoal-video/shoal/transcode/vod"
)

// The origin's sampled re-check of remote workers' outputs
// (transcode.verify_fraction; transcode/remote's verifying.go) end to end:
// an origin that transcodes nothing itself, honest `shoal worker`
// processes, and workers run in process (remote.Worker with the real
// protocol client) where a test needs to reach into one.

// verifyEnv is the origin's environment of these tests: every segment
// re-checked, a two-rung ladder (small sources keep the checks short), no
// VOD worker of its own, attempts enough for a cheat's.
var verifyEnv = []string{"SHOAL_VOD_WORKERS=0", "SHOAL_VOD_MAX_ATTEMPTS=10", "SHOAL_TRANSCODE_VERIFY_FRACTION=1",
	"SHOAL_TRANSCODE_LADDER=360p:700k,240p:400k"}

// inProcessWorker is a remote.Worker run in this process with client,
// its log in log; done yields what Run returned.
type inProcessWorker struct {
	log  *testutil.Buffer
	done chan error
}

func runInProcessWorker(t *testing.T, client remote.Client, hook func(ctx context.Context, job nodeproto.WorkerJob, source, tree string) error) *inProcessWorker {
	t.Helper()
	w := &inProcessWorker{log: &testutil.Buffer{}, done: make(chan error, 1)}
	rw, err := remote.NewWorker(remote.WorkerConfig{WorkDir: t.TempDir(), Concurrency: 1, Backend: ffmpeg.BackendSoftware,
		MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second},
		remote.WorkerDeps{Client: client, NewPackager: vodPackager, BeforeManifest: hook,
			Log: slog.New(slog.NewTextHandler(w.log, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.WithoutCancel(t.Context()))
	exited := make(chan struct{})
	go func() { defer close(exited); w.done <- rw.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		<-exited
		if t.Failed() {
			t.Logf("in-process worker log:\n%s", w.log.String())
		}
	})
	return w
}

// playlistSegments lists the segments of rendition r of video id as the
// origin publishes them.
func (n *node) playlistSegments(id, r string) []string {
	var out []string
	for _, l := range strings.Split(n.playlist(id, r+"/index.m3u8"), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") {
			out = append(out, l)
		}
	}
	return out
}

// publishedPixels is what ffprobe counts in the video renditions of video
// id, as the origin serves them: width x height x frames, summed.
func (n *node) publishedPixels(id string, renditions ...string) int64 {
	n.t.Helper()
	var total int64
	for _, r := range renditions {
		out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
			"-show_entries", "stream=width,height,nb_read_packets", "-of", "csv=p=0", n.http+"/hls/"+id+"/"+r+"/index.m3u8").Output()
		if err != nil {
			n.t.Fatalf("ffprobe %s of %s: %v", r, id, err)
		}
		var w, h, frames int64
		if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "%d,%d,%d", &w, &h, &frames); err != nil {
			n.t.Fatalf("ffprobe %s of %s: %q: %v", r, id, out, err)
		}
		total += w * h * frames
	}
	return total
}

// cheatWith returns a BeforeManifest hook that makes a worker cheat: it
// transcodes other (another picture, of the source's size, rate and
// length) with the job's own settings, and puts that output's segments in
// place of every second segment of each video rendition: valid fMP4 of
// the right size, timing and structure, listed and hashed as the worker's
// own, only not the source's pictures.
func cheatWith(other string) func(ctx context.Context, job nodeproto.WorkerJob, source, tree string) error {
	return func(ctx context.Context, job nodeproto.WorkerJob, source, tree string) error {
		ladder, err := media.ParseLadder(job.Ladder)
		if err != nil {
			return err
		}
		dir, err := os.MkdirTemp(filepath.Dir(tree), "cheat-")
		if err != nil {
			return err
		}
		defer os.RemoveAll(dir)
		s := vod.Settings{Backend: ffmpeg.BackendSoftware, Preset: job.Preset, NewPackager: vodPackager,
			SegmentDuration: time.Duration(job.SegmentDurationSeconds * float64(time.Second)), Log: slog.New(slog.DiscardHandler)}
		if _, err := vod.TranscodeJob(ctx, s, job.VideoID, other, dir, ladder, func(float64) {}); err != nil {
			return fmt.Errorf("the cheat's other transcode: %w", err)
		}
		for _, r := range ladder.For(360) {
			mine, theirs := segmentFiles(filepath.Join(tree, r.Name())), segmentFiles(filepath.Join(dir, job.VideoID, r.Name()))
			for i := 1; i < min(len(mine), len(theirs)); i += 2 {
				b, err := os.ReadFile(filepath.Join(dir, job.VideoID, r.Name(), theirs[i]))
				if err != nil {
					return err
				}
				if err := os.WriteFile(filepath.Join(tree, r.Name(), mine[i]), b, 0o644); err != nil {
					return err
				}
			}
		}
		return nil
	}
}

// segmentFiles lists the segments of the rendition playlist in dir.
func segmentFiles(dir string) []string {
	b, _ := os.ReadFile(filepath.Join(dir, "index.m3u8"))
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(l, ".m4s") {
			out = append(out, l)
		}
	}
	return out
}

// makeOther encodes seconds of another test picture (SMPTE bars) at w x h,
// 30 fps, as MakeMP4 does testsrc2.
func makeOther(t *testing.T, w, h, seconds int) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "other.mp4")
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", fmt.Sprintf("smptebars=size=%dx%d:rate=30", w, h),
		"-f", "lavfi", "-i", "sine=frequency=660:sample_rate=44100", "-t", fmt.Sprint(seconds), "-c:v", "libx264", "-preset", "ultrafast",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", p).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return p
}

// A cheating worker (its output has every second segment of each rendition
// replaced by the same segment of another picture, the files, hashes,
// playlists and structure all right) is caught by the re-check: its
// output is refused with the check's reason; with another worker joined,
// the cheat's claims of the job are deferred for it (the cheat is not
// handed it again), and an honest worker makes the video, which plays. Alone, the cheat is handed the
// next video's retries; at the third failed segment it is quarantined
// (shown in /v1/nodes with the reason), refused, and stops; a new honest
// worker makes that video.
func TestRemoteWorkerCheatCaught(t *testing.T) {
	t.Parallel()
	n := startNode(t, verifyEnv...)
	src, other := testutil.MakeMP4(t, 640, 360, 4), makeOther(t, 640, 360, 4)
	cheatToken, _ := n.nodeTokenWithID("cheats")
	honestToken, _ := n.nodeTokenWithID("honest")
	cheat := joinStranger(t, n, cheatToken)
	reached, release := make(chan string, 16), make(chan struct{})
	var first sync.Once
	tamper := cheatWith(other)
	w := runInProcessWorker(t, cheat.c, func(ctx context.Context, job nodeproto.WorkerJob, source, tree string) error {
		reached <- job.Job
		var wait bool
		first.Do(func() { wait = true })
		if wait {
			select {
			case <-ctx.Done():
				return ctx.Err()
			case <-release:
			}
		}
		return tamper(ctx, job, source, tree)
	})

	// The cheat takes the first video; an honest worker joins meanwhile.
	a := n.createVideo("cheated once")
	if code, body := putFile(t, a.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, body)
	}
	select {
	case job := <-reached:
		if !strings.HasPrefix(job, a.ID+".1.") {
			t.Fatalf("the cheat's first job %s", job)
		}
	case <-time.After(60 * time.Second):
		t.Fatalf("the cheat took no job:\n%s", w.log.String())
	}
	// Another worker is joined, idle for now: the cheat's claims of the
	// refused job are deferred for it. Then the honest worker comes.
	idle := joinStranger(t, n, honestToken)
	close(release)
	n.waitFor("the cheat's claims of the refused job to be deferred", 120*time.Second, func() bool {
		_, page := n.get("/metrics", "")
		return metric(page, "shoal_vod_remote_jobs_total", `outcome="deferred"`) >= 1
	})
	h := startRemoteWorker(t, n, honestToken, "SHOAL_TRANSCODE_MAX_LADDERS=0")
	hid := nodeIDOf(t, h)
	n.waitFor("the honest worker to join", 30*time.Second, func() bool { _, ok := n.joinedWorkers()[hid]; return ok })
	idle.stop()

	a = n.waitVideo(a.ID, 120*time.Second)
	if a.Status != "ready" || a.Attempts != 2 || len(a.Renditions) != 2 {
		t.Fatalf("the first video (want ready at the second attempt, the honest one's): %+v\norigin log:\n%s", a, n.stderr.String())
	}
	if d := probeDuration(t, a.Playback.HLSURL); d < 3.5 || d > 4.5 {
		t.Fatalf("ffprobe measures %.3f s, want 4", d)
	}
	jw := n.joinedWorkers()
	c, hw := jw[cheat.id], jw[hid]
	if c.Jobs == nil || c.Jobs.Rejected != 1 || c.Jobs.VerifyFailed != 1 || c.Jobs.Done != 0 || c.State != "active" ||
		!strings.Contains(c.Jobs.LastRejection, "failed the origin's re-check") || !strings.Contains(c.Jobs.LastRejection, "quality: PSNR") {
		t.Fatalf("the cheat in /v1/nodes: %+v %+v", c, c.Jobs)
	}
	t.Logf("the cheat's refusal: %s", c.Jobs.LastRejection)
	segs := int64(len(n.playlistSegments(a.ID, "360p")) + len(n.playlistSegments(a.ID, "240p")))
	if hw.Jobs == nil || hw.Jobs.Done != 1 || hw.Jobs.Rejected != 0 || hw.Jobs.SegmentsVerified != segs || hw.Jobs.VerifyFailed != 0 {
		t.Fatalf("the honest worker in /v1/nodes: %+v (want %d segments verified)", hw.Jobs, segs)
	}
	if !strings.Contains(n.stderr.String(), "job deferred: it goes to another worker than the one whose output of it was refused") {
		t.Errorf("the cheat's claims of the refused job were not deferred")
	}

	// The honest worker gone (and out of the registry), the cheat is
	// handed the next video's retries, and is quarantined at its third
	// failed segment.
	if err := h.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = h.cmd.Wait()
	n.waitFor("the killed and the idle worker to leave the registry", 30*time.Second, func() bool {
		jw := n.joinedWorkers()
		_, h := jw[hid]
		_, i := jw[idle.id]
		return !h && !i
	})
	b := n.createVideo("cheated twice")
	if code, body := putFile(t, b.Upload.DirectURL, testAdminKey, src); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, body)
	}
	select {
	case err := <-w.done:
		if !errors.Is(err, nodeproto.ErrRefused) {
			t.Fatalf("the cheat stopped with %v, want a refusal", err)
		}
	case <-time.After(180 * time.Second):
		t.Fatalf("the cheat was not refused:\n%s", w.log.String())
	}
	c = n.joinedWorkers()[cheat.id]
	if c.State != "quarantined" || !strings.Contains(c.QuarantineReason, "3 of its segments failed the origin's re-check") ||
		c.Jobs == nil || c.Jobs.Rejected != 3 || c.Jobs.VerifyFailed != 3 || c.Jobs.Done != 0 {
		t.Fatalf("the cheat after three failures: %+v %+v", c, c.Jobs)
	}
	if got := n.video(b.ID); got.Status != "processing" || got.Attempts != 2 {
		t.Fatalf("the second video after the cheat's two attempts: %+v", got)
	}
	if code, errCode, msg := cheat.request(cheat.key, cheat.id, http.MethodPost, nodeproto.WorkerPrefix+"/claim", []byte(`{}`), ""); code != http.StatusForbidden || errCode != "quarantined" {
		t.Errorf("a quarantined worker's claim: %d %s %s", code, errCode, msg)
	}

	// A new honest worker makes the second video.
	h2 := startRemoteWorker(t, n, honestToken, "SHOAL_TRANSCODE_MAX_LADDERS=0")
	b = n.waitVideo(b.ID, 120*time.Second)
	if b.Status != "ready" || b.Attempts != 3 {
		t.Fatalf("the second video: %+v\nworker log:\n%s", b, h2.stderr.String())
	}
	if d := probeDuration(t, b.Playback.HLSURL); d < 3.5 || d > 4.5 {
		t.Fatalf("ffprobe measures %.3f s, want 4", d)
	}
	_, page := n.get("/metrics", "")
	if f := metric(page, "shoal_vod_verify_segments_total", `result="failed"`); f != 3 {
		t.Errorf("shoal_vod_verify_segments_total{result=\"failed\"} = %v, want 3", f)
	}
	if p := metric(page, "shoal_vod_verify_segments_total", `result="passed"`); p < float64(2*segs) {
		t.Errorf("shoal_vod_verify_segments_total{result=\"passed\"} = %v, want at least %d", p, 2*segs)
	}
	if d := metric(page, "shoal_vod_remote_jobs_total", `outcome="deferred"`); d < 1 {
		t.Errorf("no deferred job in /metrics")
	}
	if c := metric(page, "shoal_vod_verify_seconds_count", ""); c < 3+float64(2*segs) {
		t.Errorf("shoal_vod_verify_seconds_count = %v", c)
	}
}

// An honest worker over a run of videos, every segment re-checked, is
// never refused: every video is ready at the first attempt, and its
// figures count every video segment published (segments_verified) and its
// pixels as ffprobe counts them, in /v1/nodes and in its usage by
// accounting epoch.
func TestRemoteWorkerHonestLongRun(t *testing.T) {
	t.Parallel()
	n := startNode(t, verifyEnv...)
	token, _ := n.nodeTokenWithID("honest")
	w := startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0", "SHOAL_VOD_WORKERS=2")
	var ids []string
	for i, secs := range []int{3, 4, 5, 3, 6} {
		v := n.createVideo(fmt.Sprintf("honest %d", i))
		if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, testutil.MakeMP4(t, 640, 360, secs)); code != http.StatusAccepted {
			t.Fatalf("PUT: %d %s", code, body)
		}
		ids = append(ids, v.ID)
	}
	var segs, pixels int64
	for _, id := range ids {
		v := n.waitVideo(id, 180*time.Second)
		if v.Status != "ready" || v.Attempts != 1 {
			t.Fatalf("video %s: %+v\nworker log:\n%s", id, v, w.stderr.String())
		}
		segs += int64(len(n.playlistSegments(id, "360p")) + len(n.playlistSegments(id, "240p")))
		pixels += n.publishedPixels(id, "360p", "240p")
	}
	wid := nodeIDOf(t, w)
	jw := n.joinedWorkers()[wid]
	if jw.Jobs == nil || jw.Jobs.Done != int64(len(ids)) || jw.Jobs.Rejected != 0 || jw.Jobs.Failed != 0 || jw.Jobs.VerifyFailed != 0 ||
		jw.Jobs.VerifyErrors != 0 || jw.Jobs.SegmentsVerified != segs || jw.Jobs.TranscodedPixels != pixels || jw.State != "active" {
		t.Fatalf("the honest worker in /v1/nodes: %+v %+v (want %d segments verified, %d pixels)", jw, jw.Jobs, segs, pixels)
	}
	t.Logf("%d videos, %d segments verified, %d pixels", len(ids), segs, pixels)
	_, page := n.get("/metrics", "")
	if p, f, e := metric(page, "shoal_vod_verify_segments_total", `result="passed"`), metric(page, "shoal_vod_verify_segments_total", `result="failed"`),
		metric(page, "shoal_vod_verify_segments_total", `result="error"`); p != float64(segs) || f != 0 || e != 0 {
		t.Errorf("re-checks in /metrics: %v passed, %v failed, %v errors; want %d passed", p, f, e, segs)
	}
	// Credited by accounting epoch: the worker's usage sums to the same.
	code, body := n.get("/v1/nodes/"+wid+"/usage?limit=24", testAdminKey)
	var usage struct {
		Epochs []struct {
			TranscodedPixels int64 `json:"transcoded_pixels"`
			SegmentsVerified int64 `json:"segments_verified"`
		} `json:"epochs"`
	}
	if code != http.StatusOK || json.Unmarshal(body, &usage) != nil {
		t.Fatalf("the worker's usage: %d %s", code, body)
	}
	var up, us int64
	for _, e := range usage.Epochs {
		up, us = up+e.TranscodedPixels, us+e.SegmentsVerified
	}
	if up != pixels || us != segs {
		t.Errorf("the worker's usage credits %d pixels and %d segments verified, want %d and %d: %s", up, us, pixels, segs, body)
	}
}

// sourceRemover is the protocol client of a worker whose first
// completion the origin cannot re-check: the video's source is moved
// away while the origin handles it, and back once it has answered.
type sourceRemover struct {
	*nodeproto.Client
	t       *testing.T
	dataDir string
	once    sync.Once
}

func (c *sourceRemover) Complete(ctx context.Context, origin string, m nodeproto.Complete) (nodeproto.Completed, error) {
	var out nodeproto.Completed
	var err error
	removed := false
	c.once.Do(func() {
		removed = true
		ref, perr := nodeproto.ParseJobRef(m.Job)
		if perr != nil {
			c.t.Error(perr)
			return
		}
		src := filepath.Join(c.dataDir, filepath.FromSlash(vod.SourceKey(ref.VideoID)))
		if err := os.Rename(src, src+".away"); err != nil {
			c.t.Errorf("moving the source away: %v", err)
		}
		defer func() {
			if err := os.Rename(src+".away", src); err != nil {
				c.t.Errorf("moving the source back: %v", err)
			}
		}()
		out, err = c.Client.Complete(ctx, origin, m)
	})
	if removed {
		return out, err
	}
	return c.Client.Complete(ctx, origin, m)
}

// A re-check the origin cannot make (the source gone from under it while
// it checks) publishes nothing and does not count against the worker: no
// refusal, no failure, no failed segment, only its verify_errors; the job
// is retried (by the same worker, which is not avoided) and the video
// made.
func TestRemoteWorkerCheckErrorNotBlamed(t *testing.T) {
	t.Parallel()
	n := startNode(t, verifyEnv...)
	token, _ := n.nodeTokenWithID("honest")
	s := joinStranger(t, n, token)
	w := runInProcessWorker(t, &sourceRemover{Client: s.c, t: t, dataDir: n.dataDir}, nil)
	v := n.createVideo("checked the second time")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, testutil.MakeMP4(t, 640, 360, 4)); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, body)
	}
	v = n.waitVideo(v.ID, 120*time.Second)
	if v.Status != "ready" || v.Attempts != 2 {
		t.Fatalf("video (want ready at the second attempt): %+v\nworker log:\n%s", v, w.log.String())
	}
	if d := probeDuration(t, v.Playback.HLSURL); d < 3.5 || d > 4.5 {
		t.Fatalf("ffprobe measures %.3f s, want 4", d)
	}
	if !strings.Contains(w.log.String(), "the origin took the job away") || !strings.Contains(w.log.String(), "could not check its output") {
		t.Errorf("the worker was not told its first output could not be checked:\n%s", w.log.String())
	}
	jw := n.joinedWorkers()[s.id]
	if jw.State != "active" || jw.Jobs == nil || jw.Jobs.Done != 1 || jw.Jobs.Rejected != 0 || jw.Jobs.Failed != 0 || jw.Jobs.VerifyFailed != 0 ||
		jw.Jobs.VerifyErrors != 1 || jw.Jobs.SegmentsVerified == 0 {
		t.Fatalf("the worker in /v1/nodes: %+v %+v", jw, jw.Jobs)
	}
	_, page := n.get("/metrics", "")
	if u := metric(page, "shoal_vod_remote_jobs_total", `outcome="unverified"`); u != 1 {
		t.Errorf("shoal_vod_remote_jobs_total{outcome=\"unverified\"} = %v, want 1", u)
	}
	if r := metric(page, "shoal_vod_remote_jobs_total", `outcome="rejected"`); r != 0 {
		t.Errorf("shoal_vod_remote_jobs_total{outcome=\"rejected\"} = %v, want 0", r)
	}
}
