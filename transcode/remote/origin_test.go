package remote

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/transcode/vod"
)

// originEnv is an Origin on a real Redis and a media store on disk.
type originEnv struct {
	t     *testing.T
	store *routing.Store
	files vod.Files
	o     *Origin
}

func newOriginEnv(t *testing.T) *originEnv {
	t.Helper()
	return newOriginEnvWith(t, nil, Deps{})
}

// newOriginEnvWith is newOriginEnv with its config changed by change and
// deps' Figures and Registerer.
func newOriginEnvWith(t *testing.T, change func(*Config), deps Deps) *originEnv {
	t.Helper()
	rs := redistest.Start(t)
	store, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	dir := t.TempDir()
	objects, err := fsstore.New(dir)
	if err != nil {
		t.Fatal(err)
	}
	files := vod.Files{Store: objects, RecordDir: filepath.Join(dir, "videos"), WorkDir: filepath.Join(dir, "work")}
	cfg := Config{Files: files, Ladder: media.DefaultLadder, Preset: "veryfast", SegmentDuration: 2 * time.Second,
		IdleTimeout: 30 * time.Second, MaxAttempts: 3}
	if change != nil {
		change(&cfg)
	}
	deps.Queue = store
	o, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	return &originEnv{t: t, store: store, files: files, o: o}
}

// queued makes a video with its own ladder whose source (src bytes) has
// arrived, with the info the upload's probe recorded, and returns its id.
func (e *originEnv) queued(ladder string, src []byte, info routing.SourceInfo) string {
	e.t.Helper()
	ctx := e.t.Context()
	v, err := e.store.CreateVideo(ctx, routing.VideoSpec{Title: "t", Ladder: ladder})
	if err != nil {
		e.t.Fatal(err)
	}
	if err := e.store.BeginUpload(ctx, v.ID, "put"); err != nil {
		e.t.Fatal(err)
	}
	if _, err := e.files.Store.Put(ctx, vod.SourceKey(v.ID), bytes.NewReader(src), int64(len(src))); err != nil {
		e.t.Fatal(err)
	}
	info.Bytes = int64(len(src))
	if err := e.store.SourceReceived(ctx, v.ID, "put", info); err != nil {
		e.t.Fatal(err)
	}
	return v.ID
}

func (e *originEnv) claim(node string) (nodeproto.WorkerJob, nodeproto.JobRef) {
	e.t.Helper()
	job, ok, err := e.o.Claim(e.t.Context(), node)
	if err != nil || !ok {
		e.t.Fatalf("Claim: %+v %v %v", job, ok, err)
	}
	ref, err := nodeproto.ParseJobRef(job.Job)
	if err != nil {
		e.t.Fatal(err)
	}
	return job, ref
}

func sum(b []byte) string {
	s := sha256.Sum256(b)
	return hex.EncodeToString(s[:])
}

func status(err error) int {
	var we *nodeproto.WorkerError
	if errors.As(err, &we) {
		return we.Status
	}
	return 0
}

const nodeA, nodeB = "aaaaaaaaaaaaaaaaaaaa", "bbbbbbbbbbbbbbbbbbbb"

// A claimed job is its node's alone; its source is served in ranges; a
// file is kept only with the declared bytes; the whole output is bounded
// by its ladder's bitrates over the source's duration (reservations of
// uploads in flight included); and once a completion began, no upload
// may change the files it checks and publishes, even when it ends in an
// error the worker may retry.
func TestOriginJobs(t *testing.T) {
	t.Parallel()
	e := newOriginEnv(t)
	ctx := t.Context()
	if _, ok, err := e.o.Claim(ctx, nodeA); ok || err != nil {
		t.Fatalf("a claim with no job: %v %v", ok, err)
	}
	src := []byte("the source's bytes, whatever they are")
	// No size recorded: the origin will have to probe the source.
	id := e.queued("360p:100k", src, routing.SourceInfo{Duration: 6 * time.Second})
	job, ref := e.claim(nodeA)
	if job.VideoID != id || job.Attempt != 1 || job.Ladder != "360p:100k" || job.SourceBytes != int64(len(src)) ||
		job.SourceURL != "/v1/worker/jobs/"+job.Job+"/source" || job.SourcePresignedURL != "" || job.ProgressIntervalSeconds != 1 {
		t.Fatalf("job %+v", job)
	}
	if h, _ := e.store.JobHolder(ctx, id); h.Worker != nodeA {
		t.Fatalf("holder %+v", h)
	}
	rc, info, err := e.o.OpenSource(ctx, nodeA, ref, storage.Range{Offset: 4})
	if err != nil {
		t.Fatal(err)
	}
	got, _ := io.ReadAll(rc)
	rc.Close()
	if string(got) != string(src[4:]) || info.Size != int64(len(src)) {
		t.Fatalf("source from byte 4: %q (%d)", got, info.Size)
	}
	// Another node may not touch it; a stale attempt is gone.
	if err := e.o.Progress(ctx, nodeB, ref, 10); status(err) != http.StatusForbidden {
		t.Errorf("progress from another node: %v", err)
	}
	if _, _, err := e.o.OpenSource(ctx, nodeB, ref, storage.Range{}); status(err) != http.StatusForbidden {
		t.Errorf("the source for another node: %v", err)
	}
	stale := ref
	stale.Attempt = 2
	if err := e.o.Progress(ctx, nodeA, stale, 10); status(err) != http.StatusGone {
		t.Errorf("progress of an attempt that is not the job's: %v", err)
	}
	if err := e.o.Progress(ctx, nodeA, ref, 100); err != nil {
		t.Fatal(err)
	}
	if v, _ := e.store.GetVideo(ctx, id); v.Progress != 99 {
		t.Errorf("progress shown %d, want 99 until published", v.Progress)
	}

	put := func(node, path string, body []byte, declared string) error {
		return e.o.PutFile(ctx, node, ref, path, int64(len(body)), declared, bytes.NewReader(body))
	}
	master := []byte("#EXTM3U\n")
	if err := put(nodeA, "master.m3u8", master, sum([]byte("other"))); status(err) != http.StatusBadRequest {
		t.Errorf("a file whose bytes are not those declared: %v", err)
	}
	if err := put(nodeA, "../master.m3u8", master, sum(master)); status(err) != http.StatusBadRequest {
		t.Errorf("a path trick: %v", err)
	}
	if err := put(nodeB, "master.m3u8", master, sum(master)); status(err) != http.StatusForbidden {
		t.Errorf("a file from another node: %v", err)
	}
	if err := put(nodeA, "master.m3u8", master, sum(master)); err != nil {
		t.Fatal(err)
	}

	// The budget: 360p at 100 kb/s plus audio over a minute (the least
	// counted), four times, plus 64 MiB. An upload in flight holds its
	// share while its body arrives.
	budget := int64((100_000+256_000)/8*60)*4 + 64<<20
	if job.MaxOutputBytes != budget {
		t.Fatalf("max_output_bytes %d, want %d", job.MaxOutputBytes, budget)
	}
	pr, pw := io.Pipe()
	big := budget - 1000
	errc := make(chan error, 1)
	go func() { errc <- e.o.PutFile(ctx, nodeA, ref, "360p/a.m4s", big, sum(nil), pr) }()
	if _, err := pw.Write([]byte("x")); err != nil { // read: the room is reserved
		t.Fatal(err)
	}
	if err := put(nodeA, "360p/b.m4s", make([]byte, 2000), sum(make([]byte, 2000))); status(err) != http.StatusRequestEntityTooLarge {
		t.Errorf("an upload past the budget: %v", err)
	}
	pw.CloseWithError(errors.New("the worker went away"))
	if err := <-errc; status(err) != http.StatusBadRequest {
		t.Errorf("an upload that broke off: %v", err)
	}
	if err := put(nodeA, "360p/b.m4s", make([]byte, 2000), sum(make([]byte, 2000))); err != nil {
		t.Errorf("an upload within the budget once the broken one let go: %v", err)
	}
	if _, err := os.Stat(filepath.Join(e.files.WorkDir, StagingDir, ref.String(), "360p", "a.m4s")); !os.IsNotExist(err) {
		t.Errorf("the broken upload left a file: %v", err)
	}

	// A completion that fails on the origin's side (the source it must
	// probe is gone) seals the files all the same.
	if err := e.files.Store.Delete(ctx, vod.SourceKey(id)); err != nil {
		t.Fatal(err)
	}
	m := nodeproto.Complete{Job: ref.String(), DurationSeconds: 6, Renditions: []nodeproto.Rendition{{Name: "360p", Width: 640, Height: 360, Bitrate: 100_000}},
		Files: []nodeproto.OutputFile{{Path: "master.m3u8", Size: int64(len(master)), SHA256: sum(master)}}}
	if err := e.o.Complete(ctx, nodeA, ref, m); err == nil || status(err) != 0 {
		t.Fatalf("a completion whose source cannot be probed: %v", err)
	}
	if err := put(nodeA, "master.m3u8", []byte("#EXTM3U\n#changed\n"), sum([]byte("#EXTM3U\n#changed\n"))); status(err) != http.StatusConflict {
		t.Errorf("an upload after a completion began: %v", err)
	}
	if b, _ := os.ReadFile(filepath.Join(e.files.WorkDir, StagingDir, ref.String(), "master.m3u8")); !bytes.Equal(b, master) {
		t.Errorf("the staged master changed: %q", b)
	}
	m.Job = "abc.1.1-0"
	if err := e.o.Complete(ctx, nodeA, ref, m); status(err) != http.StatusBadRequest {
		t.Errorf("a manifest for another job: %v", err)
	}

	// A worker's failure report ends the attempt, retried by another.
	out, err := e.o.Fail(ctx, nodeA, ref, nodeproto.Failure{Error: "not a video file: trust me", Permanent: true})
	if err != nil || !out.Retry {
		t.Fatalf("a permanent failure from a worker: %+v %v", out, err)
	}
	if v, _ := e.store.GetVideo(ctx, id); v.Status != routing.VideoProcessing {
		t.Errorf("one worker's word failed the video: %+v", v)
	}
	if _, err := os.Stat(filepath.Join(e.files.WorkDir, StagingDir, ref.String())); !os.IsNotExist(err) {
		t.Errorf("the failed attempt's staging is still there: %v", err)
	}
	if st, _ := e.store.WorkerStats(ctx, []string{nodeA}); st[nodeA].Failed != 1 {
		t.Errorf("the node's failures: %+v", st[nodeA])
	}
	if _, ref2 := e.claim(nodeB); ref2.Attempt != 2 || ref2.VideoID != id {
		t.Errorf("the retry: %+v", ref2)
	}
}

// complete uploads the output tree as node's output of ref and completes
// it.
func (e *originEnv) complete(node string, ref nodeproto.JobRef, tree string, out routing.JobOutcome) error {
	e.t.Helper()
	m, err := BuildManifest(tree, ref.String(), out)
	if err != nil {
		e.t.Fatal(err)
	}
	for _, f := range m.Files {
		b, err := os.ReadFile(filepath.Join(tree, filepath.FromSlash(f.Path)))
		if err != nil {
			e.t.Fatal(err)
		}
		if err := e.o.PutFile(e.t.Context(), node, ref, f.Path, int64(len(b)), f.SHA256, bytes.NewReader(b)); err != nil {
			e.t.Fatalf("PutFile %s: %v", f.Path, err)
		}
	}
	return e.completeWait(node, ref, m)
}

// completeWait sends the manifest m again while the origin says its
// checks go on, as a worker does.
func (e *originEnv) completeWait(node string, ref nodeproto.JobRef, m nodeproto.Complete) error {
	for {
		err := e.o.Complete(e.t.Context(), node, ref, m)
		if !errors.Is(err, nodeproto.ErrStillChecking) {
			return err
		}
	}
}

// A completion whose checks outlast the request (a long video behind a
// reverse proxy that gives up after 60 s) goes on without it: the
// request answers 202 after CompleteWait, the request going away (its
// context cancelled) stops nothing, and sending the same manifest again
// waits for the same run; another manifest is refused (409), and so is
// another node (403). A run that ended in the origin's own trouble is
// forgotten: sending the manifest again starts another. The answer stays
// for CompletionKept, then the job's own state answers.
func TestOriginCompletionOutlastsTheRequest(t *testing.T) {
	t.Parallel()
	tree, out, srcPath := transcodeTree(t, "testsrc2")
	e := newOriginEnvWith(t, func(c *Config) {
		c.Preset, c.SegmentDuration, c.CompleteWait = "ultrafast", time.Second, 50*time.Millisecond
	}, Deps{})
	release := make(chan struct{}, 4) // a token per run let through
	started := make(chan struct{}, 4)
	e.o.beforeChecks = func() {
		started <- struct{}{}
		<-release
	}
	ctx := t.Context()
	src, err := os.ReadFile(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	// No size recorded at upload: the origin probes the source for it.
	id := e.queued("360p:700k,240p:400k", src, routing.SourceInfo{Duration: 4 * time.Second})
	_, ref := e.claim(nodeA)
	m, err := BuildManifest(tree, ref.String(), out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		b, err := os.ReadFile(filepath.Join(tree, filepath.FromSlash(f.Path)))
		if err != nil {
			t.Fatal(err)
		}
		if err := e.o.PutFile(ctx, nodeA, ref, f.Path, int64(len(b)), f.SHA256, bytes.NewReader(b)); err != nil {
			t.Fatal(err)
		}
	}

	// The origin's trouble: the source it must probe is gone.
	if err := e.files.Store.Delete(ctx, vod.SourceKey(id)); err != nil {
		t.Fatal(err)
	}
	release <- struct{}{}
	if err := e.completeWait(nodeA, ref, m); err == nil || status(err) != 0 {
		t.Fatalf("a completion whose source cannot be probed: %v", err)
	}
	<-started
	if _, err := e.files.Store.Put(ctx, vod.SourceKey(id), bytes.NewReader(src), int64(len(src))); err != nil {
		t.Fatal(err)
	}

	// The request that starts the run goes away once answered 202.
	req, cancel := context.WithCancel(ctx)
	if err := e.o.Complete(req, nodeA, ref, m); !errors.Is(err, nodeproto.ErrStillChecking) || status(err) != http.StatusAccepted {
		t.Fatalf("a completion whose checks go on: %v, want 202", err)
	}
	<-started
	cancel()
	if err := e.o.Complete(req, nodeA, ref, m); !errors.Is(err, context.Canceled) {
		t.Fatalf("a request that went away: %v", err)
	}
	other := m
	other.DurationSeconds++
	if err := e.o.Complete(ctx, nodeA, ref, other); status(err) != http.StatusConflict {
		t.Errorf("another manifest meanwhile: %v, want 409", err)
	}
	if err := e.o.Complete(ctx, nodeB, ref, m); status(err) != http.StatusForbidden {
		t.Errorf("another node: %v, want 403", err)
	}
	if err := e.o.PutFile(ctx, nodeA, ref, "master.m3u8", 8, sum([]byte("#EXTM3U\n")), strings.NewReader("#EXTM3U\n")); status(err) != http.StatusConflict {
		t.Errorf("an upload while the checks run: %v, want 409", err)
	}
	if v, _ := e.store.GetVideo(ctx, id); v.Status != routing.VideoProcessing {
		t.Fatalf("the video before the checks ended: %s", v.Status)
	}
	release <- struct{}{}
	if err := e.completeWait(nodeA, ref, m); err != nil {
		t.Fatalf("waiting again for the checks: %v", err)
	}
	if len(started) != 0 {
		t.Fatal("the checks ran more than once")
	}
	if v, _ := e.store.GetVideo(ctx, id); v.Status != routing.VideoReady {
		t.Fatalf("the video after the checks: %s", v.Status)
	}
	if err := e.o.Complete(ctx, nodeA, ref, m); err != nil {
		t.Fatalf("the answer, asked again: %v", err)
	}
	later := time.Now().Add(CompletionKept + time.Minute)
	e.o.now = func() time.Time { return later }
	e.o.sweep(ctx)
	if err := e.o.Complete(ctx, nodeA, ref, m); status(err) != http.StatusGone {
		t.Fatalf("past CompletionKept: %v, want 410 (the job is done)", err)
	}
}

// Sampled verification at the origin (every segment re-checked): a
// worker whose output has a segment of another picture is refused with
// the re-check's reason each time; with no other worker it is handed the
// job again, with one it is not (the job is deferred, no attempt spent);
// the other's honest output is published and credited (its verified
// segments and pixels, to its figures and to the accounting epoch's); at
// QuarantineAfter failed segments the cheat is quarantined. A re-check
// the origin cannot make (the source gone) publishes nothing and blames
// nobody: the attempt is retried, by the same worker if it claims it.
func TestOriginVerifies(t *testing.T) {
	t.Parallel()
	tree, out, srcPath := transcodeTree(t, "testsrc2")
	other, _, _ := transcodeTree(t, "smptebars")
	cheat := t.TempDir()
	if err := os.CopyFS(cheat, os.DirFS(tree)); err != nil {
		t.Fatal(err)
	}
	for i, seg := range segmentsOf(t, tree, "360p") {
		if i%2 == 1 {
			b, _ := os.ReadFile(filepath.Join(other, "360p", segmentsOf(t, other, "360p")[i]))
			if err := os.WriteFile(filepath.Join(cheat, "360p", seg), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	var pixels int64
	for _, r := range []string{"360p", "240p"} {
		n, w, h := probeFrames(t, tree, r)
		pixels += n * w * h
	}
	var mu sync.Mutex
	credited := map[string]map[string]int64{}
	reg := prometheus.NewRegistry()
	e := newOriginEnvWith(t, func(c *Config) {
		c.VerifyFraction, c.MaxAttempts, c.Preset, c.SegmentDuration = 1, 10, "ultrafast", time.Second
	}, Deps{Registerer: reg, Figures: func(_ context.Context, node string, d map[string]int64) error {
		mu.Lock()
		defer mu.Unlock()
		if credited[node] == nil {
			credited[node] = map[string]int64{}
		}
		for k, v := range d {
			credited[node][k] += v
		}
		return nil
	}})
	ctx := t.Context()
	src, err := os.ReadFile(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	info := routing.SourceInfo{Duration: 4 * time.Second, Width: 640, Height: 360}
	const ladder = "360p:700k,240p:400k"
	join := func(id string) {
		if err := e.store.JoinNode(ctx, routing.Node{ID: id, Role: nodeproto.RoleWorker, PublicKey: "k", TokenID: routing.AdminTokenID}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	stats := func(id string) routing.WorkerStats {
		st, err := e.store.WorkerStats(ctx, []string{id})
		if err != nil {
			t.Fatal(err)
		}
		return st[id]
	}
	refused := func(step string, err error) {
		t.Helper()
		var we *nodeproto.WorkerError
		if !errors.As(err, &we) || we.Status != http.StatusUnprocessableEntity || !strings.Contains(we.Message, "failed the origin's re-check") ||
			!strings.Contains(we.Message, "360p/") || !strings.Contains(we.Message, "quality") {
			t.Fatalf("%s: %v, want a refusal by the re-check", step, err)
		}
	}

	// The cheat alone: refused, and handed the job again.
	join(nodeB)
	v1 := e.queued(ladder, src, info)
	_, ref := e.claim(nodeB)
	refused("the cheat's first output", e.complete(nodeB, ref, cheat, out))
	_, ref = e.claim(nodeB)
	if ref.VideoID != v1 || ref.Attempt != 2 {
		t.Fatalf("with no other worker, the cheat's claim: %+v", ref)
	}
	refused("the cheat's second output", e.complete(nodeB, ref, cheat, out))
	if st := stats(nodeB); st.VerifyFailed != 2 || st.Rejected != 2 || st.SegmentsVerified != 0 {
		t.Fatalf("the cheat's figures: %+v", st)
	}
	if q, _ := e.store.Quarantines(ctx, []string{nodeB}); len(q) != 0 {
		t.Fatalf("quarantined after 2 failures: %+v", q)
	}

	// Another worker joined: the cheat's claim is deferred, the other
	// takes the job (attempt 3: no attempt was spent on the deferral).
	join(nodeA)
	if job, ok, err := e.o.Claim(ctx, nodeB); ok || err != nil {
		t.Fatalf("the cheat's claim with another worker available: %+v %v %v", job, ok, err)
	}
	_, ref = e.claim(nodeA)
	if ref.VideoID != v1 || ref.Attempt != 3 {
		t.Fatalf("the other's claim: %+v", ref)
	}
	if err := e.complete(nodeA, ref, tree, out); err != nil {
		t.Fatalf("the honest output: %v", err)
	}
	if v, _ := e.store.GetVideo(ctx, v1); v.Status != routing.VideoReady || v.Attempts != 3 {
		t.Fatalf("the video: %+v", v)
	}
	// What was published is the origin's playlists, not the worker's.
	if rc, _, err := e.files.HLS().Get(ctx, v1+"/360p/index.m3u8", storage.Range{}); err != nil {
		t.Fatal(err)
	} else {
		b, _ := io.ReadAll(rc)
		rc.Close()
		if !bytes.Contains(b, []byte("#EXTINF:")) || bytes.Contains(b, []byte("PROGRAM-DATE-TIME")) {
			t.Errorf("the published 360p/index.m3u8 is not the origin's:\n%s", b)
		}
	}
	segs := int64(len(segmentsOf(t, tree, "360p")) + len(segmentsOf(t, tree, "240p")))
	if st := stats(nodeA); st.Done != 1 || st.SegmentsVerified != segs || st.TranscodedPixels != pixels || st.VerifyFailed != 0 {
		t.Fatalf("the honest worker's figures: %+v (want %d segments, %d pixels)", st, segs, pixels)
	}
	mu.Lock()
	if c := credited[nodeA]; c[routing.FigureSegmentsVerified] != segs || c[routing.FigureTranscodedPixels] != pixels || len(credited) != 1 {
		t.Fatalf("credited to the epoch: %+v", credited)
	}
	mu.Unlock()

	// A third failed segment quarantines the cheat.
	e.queued(ladder, src, info)
	_, ref = e.claim(nodeB)
	refused("the cheat's third output", e.complete(nodeB, ref, cheat, out))
	q, _ := e.store.Quarantines(ctx, []string{nodeB})
	if qq, ok := q[nodeB]; !ok || !strings.Contains(qq.Reason, "3 of its segments failed the origin's re-check") {
		t.Fatalf("the cheat's quarantine: %+v", q)
	}

	// The source gone: nothing published, nobody blamed, the job retried.
	v3 := e.queued(ladder, src, info)
	_, ref = e.claim(nodeA)
	if ref.VideoID == v3 {
		t.Fatalf("claimed %+v: the cheat's refused video should come first", ref)
	}
	if err := e.complete(nodeA, ref, tree, out); err != nil {
		t.Fatalf("the honest output of the second video: %v", err)
	}
	_, ref = e.claim(nodeA)
	if ref.VideoID != v3 {
		t.Fatalf("claimed %+v, want the third video", ref)
	}
	if err := e.files.Store.Delete(ctx, vod.SourceKey(v3)); err != nil {
		t.Fatal(err)
	}
	err = e.complete(nodeA, ref, tree, out)
	if status(err) != http.StatusGone || !strings.Contains(err.Error(), "could not check") {
		t.Fatalf("a completion the origin cannot check: %v", err)
	}
	if st := stats(nodeA); st.VerifyErrors != 1 || st.Rejected != 0 || st.Failed != 0 || st.VerifyFailed != 0 || st.Done != 2 {
		t.Fatalf("the honest worker's figures after the check error: %+v", st)
	}
	if _, err := os.Stat(filepath.Join(e.files.WorkDir, StagingDir, ref.String())); !os.IsNotExist(err) {
		t.Errorf("the unchecked attempt's staging is still there: %v", err)
	}
	if code, _ := e.files.HLS().Stat(ctx, v3+"/master.m3u8"); code.Size != 0 {
		t.Errorf("something of the unchecked output was published")
	}
	if _, ref2 := e.claim(nodeA); ref2.VideoID != v3 || ref2.Attempt != 2 {
		t.Errorf("the retry after the check error: %+v", ref2)
	}
	mf, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, f := range mf {
		for _, m := range f.GetMetric() {
			switch f.GetName() {
			case "shoal_vod_verify_segments_total", "shoal_vod_remote_jobs_total":
				got[f.GetName()+"/"+m.GetLabel()[0].GetValue()] = m.GetCounter().GetValue()
			case "shoal_vod_verify_seconds":
				got[f.GetName()] = float64(m.GetHistogram().GetSampleCount())
			}
		}
	}
	t.Logf("metrics: %v", got)
	if got["shoal_vod_verify_segments_total/passed"] < float64(2*segs) || got["shoal_vod_verify_segments_total/failed"] != 3 ||
		got["shoal_vod_verify_segments_total/error"] != 0 || got["shoal_vod_remote_jobs_total/deferred"] != 1 ||
		got["shoal_vod_remote_jobs_total/unverified"] != 1 || got["shoal_vod_remote_jobs_total/rejected"] != 3 ||
		got["shoal_vod_verify_seconds"] != got["shoal_vod_verify_segments_total/passed"]+3 {
		t.Errorf("metrics: %v", got)
	}
}

// One worker cannot hold every job or fail a video for good: it holds one
// job at a time before an output of its was published; its failures make
// its job avoid it and do not fail the video while no other worker failed
// it; the video's error is the origin's words, never the worker's; a
// worker that reports a failure while its completion runs is told to
// wait; and it starts at most ClaimsPerWindow jobs per window.
func TestOriginWorkerLimits(t *testing.T) {
	t.Parallel()
	e := newOriginEnv(t)
	ctx := t.Context()
	info := routing.SourceInfo{Duration: 6 * time.Second}
	v1 := e.queued("360p:100k", []byte("one"), info)
	v2 := e.queued("360p:100k", []byte("two"), info)
	_, ref := e.claim(nodeA)
	if ref.VideoID != v1 {
		t.Fatalf("claimed %+v", ref)
	}
	if job, ok, err := e.o.Claim(ctx, nodeA); ok || err != nil {
		t.Fatalf("a second job for a worker with no published output: %+v %v %v", job, ok, err)
	}
	_, refB := e.claim(nodeB)
	if refB.VideoID != v2 {
		t.Fatalf("the other worker's claim: %+v", refB)
	}

	// A failure reported while the attempt's completion runs: 409.
	s, err := e.o.stage(ctx, ref)
	if err != nil {
		t.Fatal(err)
	}
	e.o.mu.Lock()
	s.completing = true
	e.o.mu.Unlock()
	if _, err := e.o.Fail(ctx, nodeA, ref, nodeproto.Failure{Error: "x"}); status(err) != http.StatusConflict {
		t.Errorf("a failure during the completion: %v", err)
	}
	e.o.mu.Lock()
	s.completing = false
	e.o.mu.Unlock()

	// nodeA alone fails v1 past MaxAttempts (3): the video goes on.
	const lie = "not a video file: trust me <script>"
	for i := 1; i <= 4; i++ {
		out, err := e.o.Fail(ctx, nodeA, ref, nodeproto.Failure{Error: lie, Permanent: true})
		if err != nil || !out.Retry {
			t.Fatalf("failure %d of one worker: %+v %v", i, out, err)
		}
		if avoided, _ := e.store.AvoidedWorkers(ctx, v1); avoided[nodeA].IsZero() {
			t.Fatalf("failure %d: the job does not avoid the worker: %v", i, avoided)
		}
		v, _ := e.store.GetVideo(ctx, v1)
		if v.Status != routing.VideoProcessing || strings.Contains(v.Error, "trust me") {
			t.Fatalf("failure %d of one worker: the video %+v", i, v)
		}
		if _, ref = e.claim(nodeA); ref.VideoID != v1 || ref.Attempt != i+1 {
			t.Fatalf("claim after failure %d: %+v", i, ref)
		}
	}
	if fields, _ := e.store.VideoFields(ctx, v1); strings.Contains(fields["last_error"], "trust me") || fields["last_error"] != failedPublic {
		t.Errorf("the video's last error: %q", fields["last_error"])
	}
	// A second worker's failure after the attempts ran out fails it, with
	// the origin's words.
	if _, err := e.o.Fail(ctx, nodeA, ref, nodeproto.Failure{Error: lie}); err != nil {
		t.Fatal(err)
	}
	const nodeC = "cccccccccccccccccccc"
	if _, ref = e.claim(nodeC); ref.VideoID != v1 {
		t.Fatalf("the second worker's claim: %+v", ref)
	}
	if out, err := e.o.Fail(ctx, nodeC, ref, nodeproto.Failure{Error: lie}); err != nil || out.Retry {
		t.Fatalf("the second worker's failure after the attempts ran out: %+v %v", out, err)
	}
	if v, _ := e.store.GetVideo(ctx, v1); v.Status != routing.VideoFailed || v.Error != failedPublic {
		t.Fatalf("the video failed by two workers: %+v", v)
	}

	// The claims of one worker per window.
	e2 := newOriginEnv(t)
	v := e2.queued("360p:100k", []byte("three"), info)
	for i := range ClaimsPerWindow {
		_, ref := e2.claim(nodeA)
		if ref.VideoID != v {
			t.Fatalf("claim %d: %+v", i, ref)
		}
		if _, err := e2.o.Fail(ctx, nodeA, ref, nodeproto.Failure{Error: "x"}); err != nil {
			t.Fatal(err)
		}
	}
	if job, ok, err := e2.o.Claim(ctx, nodeA); ok || err != nil {
		t.Fatalf("a claim past the window's: %+v %v %v", job, ok, err)
	}
	if _, ref := e2.claim(nodeB); ref.VideoID != v {
		t.Fatalf("another worker's claim: %+v", ref)
	}
}

// An attempt whose progress stops advancing, or that runs past its time
// limit, is ended by the origin as failed by its worker.
func TestOriginJobTimeLimits(t *testing.T) {
	t.Parallel()
	e := newOriginEnv(t)
	ctx := t.Context()
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	e.o.now = func() time.Time { return clock }
	id := e.queued("360p:100k", []byte("src"), routing.SourceInfo{Duration: 6 * time.Second})
	_, ref := e.claim(nodeA)
	clock = clock.Add(StallAfter - time.Second)
	if err := e.o.Progress(ctx, nodeA, ref, 0); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(2 * time.Second)
	if err := e.o.Progress(ctx, nodeA, ref, 0); status(err) != http.StatusGone {
		t.Fatalf("progress that did not advance for %s: %v", StallAfter, err)
	}
	if st, _ := e.store.WorkerStats(ctx, []string{nodeA}); st[nodeA].Failed != 1 {
		t.Errorf("the stalled worker's failures: %+v", st[nodeA])
	}
	if v, _ := e.store.GetVideo(ctx, id); v.Status != routing.VideoProcessing {
		t.Errorf("the video after a stalled attempt: %+v", v)
	}
	// Progress that advances, past the time limit.
	_, ref = e.claim(nodeB)
	limit := JobTimeBase + JobTimePerSource*6*time.Second
	for p := 1; clock.Add(StallAfter / 2).Before(clock.Add(limit)); p++ {
		clock = clock.Add(StallAfter / 2)
		limit -= StallAfter / 2
		if err := e.o.Progress(ctx, nodeB, ref, p); err != nil {
			t.Fatalf("advancing progress at %d: %v", p, err)
		}
	}
	clock = clock.Add(StallAfter / 2)
	if err := e.o.Progress(ctx, nodeB, ref, 98); status(err) != http.StatusGone {
		t.Fatalf("progress past the time limit: %v", err)
	}
}

// The origin's own trouble staging a file is a 503 that does not show
// its staging path; a body that broke off stays the worker's 400.
func TestOriginStagingTrouble(t *testing.T) {
	t.Parallel()
	e := newOriginEnv(t)
	ctx := t.Context()
	e.queued("360p:100k", []byte("src"), routing.SourceInfo{Duration: 6 * time.Second})
	_, ref := e.claim(nodeA)
	dir := filepath.Join(e.files.WorkDir, StagingDir, ref.String())
	poster := []byte("poster")
	if err := e.o.PutFile(ctx, nodeA, ref, "poster.jpg", int64(len(poster)), sum(poster), bytes.NewReader(poster)); err != nil {
		t.Fatal(err)
	}
	// A file where the rendition's directory should be: it cannot be made.
	if err := os.WriteFile(filepath.Join(dir, "360p"), nil, 0o644); err != nil {
		t.Fatal(err)
	}
	body := []byte("segment")
	err := e.o.PutFile(ctx, nodeA, ref, "360p/a.m4s", int64(len(body)), sum(body), bytes.NewReader(body))
	var we *nodeproto.WorkerError
	if !errors.As(err, &we) || we.Status != http.StatusServiceUnavailable || strings.Contains(we.Message, e.files.WorkDir) {
		t.Fatalf("a file the origin cannot stage: %v", err)
	}
	pr, pw := io.Pipe()
	pw.CloseWithError(errors.New("connection reset"))
	if err := e.o.PutFile(ctx, nodeA, ref, "poster.jpg", 10, sum(nil), pr); status(err) != http.StatusBadRequest {
		t.Fatalf("a body that broke off: %v", err)
	}
}

// An output's file count is bounded as its files arrive (empty files
// too), and Run sweeps every stale staging directory, however many.
func TestOriginStagingBounds(t *testing.T) {
	t.Parallel()
	e := newOriginEnv(t)
	ctx := t.Context()
	e.queued("360p:100k", []byte("src"), routing.SourceInfo{Duration: 6 * time.Second, Height: 360})
	_, ref := e.claim(nodeA)
	// 360p and audio, 4 segments of 2 s each counted twice, 16 more each,
	// and 2000.
	const limit = 2*(2*4+16) + 2000
	for i := range limit {
		if err := e.o.PutFile(ctx, nodeA, ref, fmt.Sprintf("360p/s%d.m4s", i), 0, nodeproto.EmptySHA256, bytes.NewReader(nil)); err != nil {
			t.Fatalf("file %d: %v", i, err)
		}
	}
	if err := e.o.PutFile(ctx, nodeA, ref, "360p/one-more.m4s", 0, nodeproto.EmptySHA256, bytes.NewReader(nil)); status(err) != http.StatusRequestEntityTooLarge {
		t.Fatalf("a file past the output's count: %v", err)
	}
	if err := e.o.PutFile(ctx, nodeA, ref, "360p/s0.m4s", 0, nodeproto.EmptySHA256, bytes.NewReader(nil)); err != nil {
		t.Fatalf("a file sent again: %v", err)
	}

	root := filepath.Join(e.files.WorkDir, StagingDir)
	for i := range 1200 {
		if err := os.MkdirAll(filepath.Join(root, fmt.Sprintf("stale-%04d", i)), 0o755); err != nil {
			t.Fatal(err)
		}
	}
	runCtx, stop := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- e.o.Run(runCtx) }()
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	for {
		ents, err := os.ReadDir(root)
		if err != nil {
			t.Fatal(err)
		}
		if len(ents) == 1 && ents[0].Name() == ref.String() {
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("the sweep left %d entries", len(ents))
		}
	}
	stop()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
}

// A job taken over from a worker that stopped reporting counts as that
// worker's failure: the job avoids it.
func TestOriginReclaimBlames(t *testing.T) {
	t.Parallel()
	e := newOriginEnvWith(t, func(c *Config) { c.IdleTimeout = time.Second }, Deps{})
	ctx := t.Context()
	id := e.queued("360p:100k", []byte("src"), routing.SourceInfo{Duration: 6 * time.Second})
	if _, ref := e.claim(nodeA); ref.VideoID != id {
		t.Fatalf("claimed %+v", ref)
	}
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for {
		job, ok, err := e.o.Claim(ctx, nodeB)
		if err != nil {
			t.Fatal(err)
		}
		if ok {
			if job.VideoID != id || job.Attempt != 2 {
				t.Fatalf("the job taken over: %+v", job)
			}
			break
		}
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatal("the idle job was never taken over")
		}
	}
	if avoided, _ := e.store.AvoidedWorkers(ctx, id); avoided[nodeA].IsZero() {
		t.Errorf("the job does not avoid the worker that stopped: %v", avoided)
	}
}

type failingPut struct {
	storage.Store
	fail atomic.Bool
}

func (s *failingPut) Put(ctx context.Context, key string, r io.Reader, size int64) (storage.Info, error) {
	if s.fail.Load() && strings.HasSuffix(key, "/master.m3u8") {
		return storage.Info{}, errors.New("the store is briefly unavailable")
	}
	return s.Store.Put(ctx, key, r, size)
}

func TestOriginPublishTroubleDoesNotRefuseTheOutput(t *testing.T) {
	t.Parallel()
	tree, out, srcPath := transcodeTree(t, "testsrc2")
	var fp *failingPut
	e := newOriginEnvWith(t, func(c *Config) {
		c.Preset, c.SegmentDuration = "ultrafast", time.Second
		fp = &failingPut{Store: c.Files.Store}
		c.Files.Store = fp
	}, Deps{})
	ctx := t.Context()
	src, err := os.ReadFile(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	id := e.queued("360p:700k,240p:400k", src, routing.SourceInfo{Duration: 4 * time.Second, Width: 640, Height: 360})
	_, ref := e.claim(nodeA)
	fp.fail.Store(true)
	err = e.complete(nodeA, ref, tree, out)
	if err == nil || status(err) != 0 {
		t.Fatalf("a completion whose publication failed on the store: %v, want the origin's own error", err)
	}
	fp.fail.Store(false)
	m, err := BuildManifest(tree, ref.String(), out)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.completeWait(nodeA, ref, m); err != nil {
		t.Errorf("the same manifest sent again once the store is back: %v, want the output published", err)
	}
	v, _ := e.store.GetVideo(ctx, id)
	st, _ := e.store.WorkerStats(ctx, []string{nodeA})
	if v.Status != routing.VideoReady || st[nodeA].Rejected != 0 {
		t.Fatalf("the video is %s (%s); the worker's rejections: %d (%s)", v.Status, v.Error, st[nodeA].Rejected, st[nodeA].LastRejection)
	}
}

// failingFinish is a Queue whose FinishJob fails while fail is set, as
// Redis failing would (not routing.ErrJobLost).
type failingFinish struct {
	Queue
	fail atomic.Bool
}

func (q *failingFinish) FinishJob(ctx context.Context, job routing.Job, attempt int, out routing.JobOutcome) error {
	if q.fail.Load() {
		return errors.New("redis: connection refused")
	}
	return q.Queue.FinishJob(ctx, job, attempt, out)
}

// Ending the job failing on Redis after the output was published is the
// origin's trouble too: the staged files stay as the worker signed them,
// and the same manifest sent again publishes the output and ends the job;
// the worker is not blamed.
func TestOriginFinishTroubleDoesNotRefuseTheOutput(t *testing.T) {
	t.Parallel()
	tree, out, srcPath := transcodeTree(t, "testsrc2")
	e := newOriginEnvWith(t, func(c *Config) { c.Preset, c.SegmentDuration = "ultrafast", time.Second }, Deps{})
	q := &failingFinish{Queue: e.store}
	o, err := New(e.o.cfg, Deps{Queue: q})
	if err != nil {
		t.Fatal(err)
	}
	e.o = o
	ctx := t.Context()
	src, err := os.ReadFile(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	id := e.queued("360p:700k,240p:400k", src, routing.SourceInfo{Duration: 4 * time.Second, Width: 640, Height: 360})
	_, ref := e.claim(nodeA)
	q.fail.Store(true)
	err = e.complete(nodeA, ref, tree, out)
	if err == nil || status(err) != 0 {
		t.Fatalf("a completion whose job could not be ended: %v, want the origin's own error", err)
	}
	if _, err := e.files.HLS().Stat(ctx, id+"/master.m3u8"); err != nil {
		t.Fatalf("the output was not published before the job's end failed: %v", err)
	}
	m, err := BuildManifest(tree, ref.String(), out)
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range m.Files {
		size, sha, err := hashFile(filepath.Join(e.files.WorkDir, StagingDir, ref.String(), filepath.FromSlash(f.Path)))
		if err != nil || size != f.Size || sha != f.SHA256 {
			t.Fatalf("staged %s after the publication: %d bytes, %s, %v; the manifest says %d bytes, %s", f.Path, size, sha, err, f.Size, f.SHA256)
		}
	}
	q.fail.Store(false)
	if err := e.completeWait(nodeA, ref, m); err != nil {
		t.Errorf("the same manifest sent again once Redis is back: %v, want the job ended", err)
	}
	v, _ := e.store.GetVideo(ctx, id)
	st, _ := e.store.WorkerStats(ctx, []string{nodeA})
	if v.Status != routing.VideoReady || st[nodeA].Rejected != 0 || st[nodeA].Done != 1 {
		t.Fatalf("the video is %s (%s); the worker's rejections: %d (%s), published: %d", v.Status, v.Error, st[nodeA].Rejected, st[nodeA].LastRejection, st[nodeA].Done)
	}
	if ents, err := os.ReadDir(filepath.Join(e.files.WorkDir, PublishingDir)); err != nil || len(ents) != 0 {
		t.Errorf("the layouts for publication left: %v %v", ents, err)
	}
}

// An origin restarted after its store failed a publication midway checks
// the staged output again when the worker sends its manifest again: the
// staged files are still what the worker signed, so the output passes and
// is published.
func TestOriginPublishTroubleSurvivesARestart(t *testing.T) {
	t.Parallel()
	tree, out, srcPath := transcodeTree(t, "testsrc2")
	var fp *failingPut
	e := newOriginEnvWith(t, func(c *Config) {
		c.Preset, c.SegmentDuration = "ultrafast", time.Second
		fp = &failingPut{Store: c.Files.Store}
		c.Files.Store = fp
	}, Deps{})
	ctx := t.Context()
	src, err := os.ReadFile(srcPath)
	if err != nil {
		t.Fatal(err)
	}
	id := e.queued("360p:700k,240p:400k", src, routing.SourceInfo{Duration: 4 * time.Second, Width: 640, Height: 360})
	_, ref := e.claim(nodeA)
	fp.fail.Store(true)
	if err := e.complete(nodeA, ref, tree, out); err == nil || status(err) != 0 {
		t.Fatalf("a completion whose publication failed on the store: %v, want the origin's own error", err)
	}
	fp.fail.Store(false)
	o, err := New(e.o.cfg, Deps{Queue: e.store}) // the restarted origin: it remembers nothing
	if err != nil {
		t.Fatal(err)
	}
	e.o = o
	m, err := BuildManifest(tree, ref.String(), out)
	if err != nil {
		t.Fatal(err)
	}
	if err := e.completeWait(nodeA, ref, m); err != nil {
		t.Errorf("the same manifest sent to the restarted origin: %v, want the output published", err)
	}
	v, _ := e.store.GetVideo(ctx, id)
	st, _ := e.store.WorkerStats(ctx, []string{nodeA})
	if v.Status != routing.VideoReady || st[nodeA].Rejected != 0 {
		t.Fatalf("the video is %s (%s); the worker's rejections: %d (%s)", v.Status, v.Error, st[nodeA].Rejected, st[nodeA].LastRejection)
	}
}
