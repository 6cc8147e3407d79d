package remote

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"testing"
	"time"

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
	o, err := New(Config{Files: files, Ladder: media.DefaultLadder, Preset: "veryfast", SegmentDuration: 2 * time.Second,
		IdleTimeout: 30 * time.Second, MaxAttempts: 3}, Deps{Queue: store})
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
