package mirror_test

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/mirror"
	"github.com/shoal-video/shoal/internal/storage/s3store"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// recorder is the real store, noting the order of the Puts that succeed.
type recorder struct {
	storage.Store
	mu   sync.Mutex
	puts []string
}

func (r *recorder) Put(ctx context.Context, key string, rd io.Reader, size int64) (storage.Info, error) {
	info, err := r.Store.Put(ctx, key, rd, size)
	if err == nil {
		r.mu.Lock()
		r.puts = append(r.puts, key)
		r.mu.Unlock()
	}
	return info, err
}

func (r *recorder) order() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.puts)
}

type env struct {
	t     *testing.T
	srv   *s3test.Server
	store *recorder
	m     *mirror.Mirror
	dir   string
	logs  *testutil.Buffer
	stop  func()
}

func TestMain(m *testing.M) {
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}

var buckets atomic.Int64

// start gives a test a bucket on the shared server, or with own set, on a
// server of its own (to stop it).
func start(t *testing.T, own bool) *env {
	t.Helper()
	var srv *s3test.Server
	if own {
		srv = s3test.Start(t)
	} else {
		srv = s3test.Shared(t)
	}
	s3, err := s3store.New(s3store.Config{Endpoint: srv.Endpoint, Bucket: fmt.Sprintf("mirror-%d", buckets.Add(1)), PathStyle: true,
		RequestTimeout: 2 * time.Second, MaxRetries: 1})
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.EnsureBucket(t.Context()); err != nil {
		t.Fatal(err)
	}
	e := &env{t: t, srv: srv, store: &recorder{Store: storage.Sub(s3, "hls")}, dir: t.TempDir(), logs: &testutil.Buffer{}}
	return e
}

func (e *env) run() { e.runAfterScan(nil) }

// runAfterScan is run, calling afterScan (when set) between the Scan and
// the start of the uploads, as the packager finishes recordings there.
func (e *env) runAfterScan(afterScan func()) {
	e.t.Helper()
	m, err := mirror.New(mirror.Config{Dir: e.dir, MaxBackoff: 500 * time.Millisecond},
		mirror.Deps{Store: e.store, Log: slog.New(slog.NewTextHandler(e.logs, nil))})
	if err != nil {
		e.t.Fatal(err)
	}
	if _, err := m.Scan(); err != nil {
		e.t.Fatal(err)
	}
	e.m = m
	if afterScan != nil {
		afterScan()
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- m.Run(ctx, 5*time.Second) }()
	e.stop = func() {
		cancel()
		if err := <-done; err != nil {
			e.t.Errorf("Run: %v", err)
		}
	}
	e.t.Cleanup(func() {
		if e.stop != nil {
			e.stop()
		}
		if e.t.Failed() {
			e.t.Logf("mirror log:\n%s", e.logs.String())
		}
	})
}

// write writes rel under the spool and tells the mirror.
func (e *env) write(rel, data string) {
	e.t.Helper()
	e.leave(map[string]string{rel: data})
	e.m.Written(rel)
}

// leave writes files under the spool without telling the mirror, as an
// earlier run left them.
func (e *env) leave(files map[string]string) {
	e.t.Helper()
	for rel, data := range files {
		p := filepath.Join(e.dir, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			e.t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(data), 0o644); err != nil {
			e.t.Fatal(err)
		}
	}
}

// waitFor polls cond every 20 ms for at most d.
func (e *env) waitFor(what string, d time.Duration, cond func() bool) {
	e.t.Helper()
	deadline := time.NewTimer(d)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline.C:
			e.t.Fatalf("timed out after %s waiting for %s", d, what)
		case <-tick.C:
		}
	}
}

func (e *env) object(key string) (string, bool) {
	e.t.Helper()
	b, _, err := storage.ReadAll(e.t.Context(), e.store.Store, key)
	if err != nil {
		return "", false
	}
	return string(b), true
}

func TestUploadsInOrderThenRemovesTheLocalTree(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	e.run()
	const id = "stream1abc"
	for i := range 5 {
		e.write(fmt.Sprintf("%s/720p/s-0-%d.m4s", id, i), fmt.Sprintf("segment %d", i))
		e.write(id+"/720p/index.m3u8", fmt.Sprintf("playlist up to %d", i))
	}
	e.write(id+"/master.m3u8", "master")
	e.waitFor("the uploads", 20*time.Second, func() bool { return e.m.Pending() == 0 })
	if got, _ := e.object(id + "/720p/index.m3u8"); got != "playlist up to 4" {
		t.Fatalf("the playlist in the store: %q", got)
	}
	for i := range 5 {
		if got, ok := e.object(fmt.Sprintf("%s/720p/s-0-%d.m4s", id, i)); got != fmt.Sprintf("segment %d", i) {
			t.Fatalf("segment %d in the store: %q %t", i, got, ok)
		}
	}
	// Each upload of the playlist follows the segments it listed.
	order := e.store.order()
	last := slices.Index(order, id+"/720p/s-0-4.m4s")
	if pl := lastIndex(order, id+"/720p/index.m3u8"); pl < last {
		t.Fatalf("the last playlist upload came before the last segment: %q", order)
	}
	if _, err := os.Stat(filepath.Join(e.dir, id)); err != nil {
		t.Fatalf("the local tree went before the session ended: %v", err)
	}
	e.m.Ended(id)
	e.waitFor("the local tree to go", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.dir, id))
		return os.IsNotExist(err)
	})
	if got, _ := e.object(id + "/master.m3u8"); got != "master" {
		t.Fatalf("the master playlist in the store: %q", got)
	}
}

func lastIndex(s []string, v string) int {
	for i := len(s) - 1; i >= 0; i-- {
		if s[i] == v {
			return i
		}
	}
	return -1
}

// With the store down, files wait on disk and go up, in order, when it is
// back; nothing is lost, and the log says what happened.
func TestSpoolsWhileTheStoreIsDown(t *testing.T) {
	t.Parallel()
	e := start(t, true)
	e.run()
	const id = "stream2abc"
	e.write(id+"/720p/s-0-0.m4s", "segment 0")
	e.waitFor("the first upload", 20*time.Second, func() bool { return e.m.Pending() == 0 })
	e.srv.Stop()
	for i := 1; i <= 10; i++ {
		e.write(fmt.Sprintf("%s/720p/s-0-%d.m4s", id, i), fmt.Sprintf("segment %d", i))
		e.write(id+"/720p/recording.m3u8", fmt.Sprintf("recording up to %d", i))
	}
	e.m.Ended(id)
	e.waitFor("a failing upload", 20*time.Second, func() bool {
		return strings.Contains(e.logs.String(), "the media store is failing")
	})
	if n := e.m.Pending(); n != 11 {
		t.Fatalf("pending while the store is down: %d, want 11 (10 segments and the playlist once)", n)
	}
	if _, err := os.Stat(filepath.Join(e.dir, id, "720p", "s-0-10.m4s")); err != nil {
		t.Fatalf("a spooled file: %v", err)
	}
	e.srv.Restart(t)
	e.waitFor("the spool to flush", 30*time.Second, func() bool { return e.m.Pending() == 0 })
	for i := range 11 {
		if got, _ := e.object(fmt.Sprintf("%s/720p/s-0-%d.m4s", id, i)); got != fmt.Sprintf("segment %d", i) {
			t.Fatalf("segment %d in the store after the outage: %q", i, got)
		}
	}
	if got, _ := e.object(id + "/720p/recording.m3u8"); got != "recording up to 10" {
		t.Fatalf("the recording in the store: %q", got)
	}
	order := e.store.order()
	if lastIndex(order, id+"/720p/recording.m3u8") < slices.Index(order, id+"/720p/s-0-10.m4s") {
		t.Fatalf("the recording went up before its last segment: %q", order)
	}
	e.waitFor("the log of the recovery", 10*time.Second, func() bool {
		return strings.Contains(e.logs.String(), "the media store is back")
	})
	e.waitFor("the local tree to go", 10*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.dir, id))
		return os.IsNotExist(err)
	})
}

// A reset removes the stream's objects and drops its queued files; the
// session that follows is uploaded, and its local tree is kept although
// the previous session ended.
func TestResetReplacesTheTree(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	e.run()
	const id = "stream3abc"
	e.write(id+"/720p/a-0-0.m4s", "old")
	e.write(id+"/720p/index.m3u8", "old playlist")
	e.waitFor("the uploads", 20*time.Second, func() bool { return e.m.Pending() == 0 })
	e.m.Ended(id)
	e.m.Reset(id)
	if err := os.RemoveAll(filepath.Join(e.dir, id)); err != nil {
		t.Fatal(err)
	}
	e.write(id+"/720p/b-0-0.m4s", "new")
	e.write(id+"/720p/index.m3u8", "new playlist")
	e.waitFor("the uploads", 20*time.Second, func() bool {
		got, _ := e.object(id + "/720p/index.m3u8")
		return e.m.Pending() == 0 && got == "new playlist"
	})
	if _, ok := e.object(id + "/720p/a-0-0.m4s"); ok {
		t.Fatal("the old session's segment is still in the store")
	}
	if got, _ := e.object(id + "/720p/b-0-0.m4s"); got != "new" {
		t.Fatalf("the new session's segment: %q", got)
	}
	if _, err := os.Stat(filepath.Join(e.dir, id, "720p", "b-0-0.m4s")); err != nil {
		t.Fatalf("the new session's local file: %v", err)
	}
}

// Files an earlier run left in the spool go up at the next start, and
// then leave the disk.
func TestScanUploadsWhatWasLeft(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	const id = "stream4abc"
	e.leave(map[string]string{
		id + "/master.m3u8":         "master",
		id + "/720p/recording.m3u8": "recording",
		id + "/720p/x-0-0.m4s":      "segment",
		id + "/720p/init-x-0-0.mp4": "init",
	})
	e.run()
	e.waitFor("the local tree to go", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.dir, id))
		return os.IsNotExist(err)
	})
	for key, want := range map[string]string{id + "/master.m3u8": "master", id + "/720p/x-0-0.m4s": "segment", id + "/720p/init-x-0-0.mp4": "init"} {
		if got, _ := e.object(key); got != want {
			t.Fatalf("%s in the store: %q", key, got)
		}
	}
	order := e.store.order()
	if slices.Index(order, id+"/master.m3u8") < slices.Index(order, id+"/720p/recording.m3u8") ||
		slices.Index(order, id+"/720p/recording.m3u8") < slices.Index(order, id+"/720p/x-0-0.m4s") {
		t.Fatalf("upload order %q: want media, then playlists, then the master", order)
	}
}

// An origin that restarts after another took its broadcast over does not
// put its older recording over the one the other continued; a recording
// the store holds an earlier state of is uploaded.
func TestScanKeepsARecordingTakenOver(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	const taken, mine = "stream5abc", "stream6abc"
	put := func(key, data string) {
		t.Helper()
		if _, err := e.store.Store.Put(t.Context(), key, strings.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	put(taken+"/720p/recording.m3u8", "old part\n#EXT-X-DISCONTINUITY\nnew part\n")
	put(taken+"/720p/index.m3u8", "the other origin's index")
	put(taken+"/master.m3u8", "the other origin's master")
	put(mine+"/720p/recording.m3u8", "old part\n")
	put(mine+"/720p/index.m3u8", "a live window")
	e.leave(map[string]string{
		taken + "/720p/recording.m3u8": "old part\nmore\n#EXT-X-ENDLIST\n",
		taken + "/720p/index.m3u8":     "my VOD index",
		taken + "/master.m3u8":         "my master",
		taken + "/720p/x-0-9.m4s":      "late segment",
		mine + "/720p/recording.m3u8":  "old part\nmore\n#EXT-X-ENDLIST\n",
		mine + "/720p/index.m3u8":      "my VOD index",
		mine + "/master.m3u8":          "my master",
	})
	e.run()
	e.waitFor("the spool to empty", 20*time.Second, func() bool {
		_, err1 := os.Stat(filepath.Join(e.dir, taken))
		_, err2 := os.Stat(filepath.Join(e.dir, mine))
		return os.IsNotExist(err1) && os.IsNotExist(err2)
	})
	if got, _ := e.object(taken + "/720p/recording.m3u8"); got != "old part\n#EXT-X-DISCONTINUITY\nnew part\n" {
		t.Fatalf("the recording taken over was replaced: %q", got)
	}
	if got, _ := e.object(taken + "/720p/x-0-9.m4s"); got != "late segment" {
		t.Fatalf("the late segment: %q", got)
	}
	if got, _ := e.object(mine + "/720p/recording.m3u8"); got != "old part\nmore\n#EXT-X-ENDLIST\n" {
		t.Fatalf("the recording that extends the store's: %q", got)
	}
	// The other playlists follow their recording: kept where it was taken
	// over, replaced (the finished VOD index) where it was not.
	for key, want := range map[string]string{
		taken + "/720p/index.m3u8": "the other origin's index", taken + "/master.m3u8": "the other origin's master",
		mine + "/720p/index.m3u8": "my VOD index", mine + "/master.m3u8": "my master",
	} {
		if got, _ := e.object(key); got != want {
			t.Errorf("%s in the store: %q, want %q", key, got, want)
		}
	}
}

// A recording an earlier run left open is finished after the Scan (the
// packager appends ENDLIST at start): the finished one goes up before the
// local tree is removed.
func TestScanThenFinishedRecording(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	const id = "stream7abc"
	e.leave(map[string]string{
		id + "/master.m3u8":         "master",
		id + "/720p/recording.m3u8": "seg0\n",
		id + "/720p/index.m3u8":     "live window",
		id + "/720p/x-0-0.m4s":      "segment",
	})
	e.runAfterScan(func() {
		e.write(id+"/720p/index.m3u8", "seg0\n#EXT-X-ENDLIST\n")
		e.write(id+"/720p/recording.m3u8", "seg0\n#EXT-X-ENDLIST\n")
	})
	e.waitFor("the local tree to go", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.dir, id))
		return os.IsNotExist(err)
	})
	for _, key := range []string{id + "/720p/recording.m3u8", id + "/720p/index.m3u8"} {
		if got, _ := e.object(key); got != "seg0\n#EXT-X-ENDLIST\n" {
			t.Fatalf("%s in the store: %q", key, got)
		}
	}
}
