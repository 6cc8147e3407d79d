package playerapi

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/s3store"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
	"github.com/shoal-video/shoal/transcode/vod"
)

// buckets numbers the buckets of the tests on the shared S3 server.
var buckets atomic.Int64

// s3Origins is two APIs sharing one Redis and one S3 bucket as their media
// store, each with its own data dir (upload dir, work dir), as two origins
// of a deployment on S3. It also returns the bucket.
func s3Origins(t *testing.T) (a, b *env, media storage.Store) {
	t.Helper()
	return s3OriginsOn(t, s3test.Shared(t), s3store.Config{})
}

// s3OriginsOn is s3Origins on srv, with cfg's timeouts.
func s3OriginsOn(t *testing.T, srv *s3test.Server, cfg s3store.Config) (a, b *env, media storage.Store) {
	t.Helper()
	cfg.Endpoint, cfg.Bucket, cfg.PathStyle = srv.Endpoint, fmt.Sprintf("shoal-api-%d", buckets.Add(1)), true
	s3, err := s3store.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := s3.EnsureBucket(t.Context()); err != nil {
		t.Fatal(err)
	}
	rs := redistest.Start(t)
	origin := func() *env {
		data := t.TempDir()
		return newEnvOn(t, Config{
			UploadStore: UploadObjects(s3, true),
			Videos:      vod.Files{Store: s3, RecordDir: filepath.Join(data, "videos"), WorkDir: filepath.Join(data, "work")},
		}, rs)
	}
	return origin(), origin(), s3
}

// keysUnder lists the keys under prefix in s.
func keysUnder(t *testing.T, s storage.Store, prefix string) []string {
	t.Helper()
	var keys []string
	for info, err := range s.List(t.Context(), prefix, storage.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, info.Key)
	}
	return keys
}

// dirFiles lists the files in dir (none when it does not exist).
func dirFiles(t *testing.T, dir string) []string {
	t.Helper()
	entries, err := os.ReadDir(dir)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		if !e.IsDir() {
			names = append(names, e.Name())
		}
	}
	return names
}

// wantSource checks that video id's source in media is data.
func wantSource(t *testing.T, media storage.Store, id string, data []byte) {
	t.Helper()
	stored, _, err := storage.ReadAll(t.Context(), media, vod.SourceKey(id))
	if err != nil {
		t.Fatalf("the source of %s: %v", id, err)
	}
	if sha256.Sum256(stored) != sha256.Sum256(data) {
		t.Fatalf("the source of %s in the bucket is not the file (%d bytes, want %d)", id, len(stored), len(data))
	}
}

// tusCreate creates a tus upload of size bytes for video vid at e and
// returns its path and id.
func (e *env) tusCreate(t *testing.T, vid string, size int) (path, id string) {
	t.Helper()
	r := e.tusReq(t, "POST", "/v1/uploads/", map[string]string{
		"Upload-Length": strconv.Itoa(size), "Upload-Metadata": tusMeta("video_id", vid),
	}, nil).wantStatus(t, http.StatusCreated)
	path = strings.TrimPrefix(r.header.Get("Location"), testPublicURL)
	return path, strings.TrimPrefix(path, uploadsPath)
}

// tusOffset is the offset HEAD tells at e.
func (e *env) tusOffset(t *testing.T, path string) int {
	t.Helper()
	h := e.tusReq(t, "HEAD", path, nil, nil).wantStatus(t, http.StatusOK)
	off, err := strconv.Atoi(h.header.Get("Upload-Offset"))
	if err != nil {
		t.Fatalf("HEAD: Upload-Offset %q", h.header.Get("Upload-Offset"))
	}
	return off
}

// With the media store on S3, an upload created at origin A and half sent
// there is resumed and finished at origin B, which has its own upload
// directory: the data lives in the bucket, not in A's directory.
func TestTusOnS3ResumesAtAnotherOrigin(t *testing.T) {
	t.Parallel()
	a, b, media := s3Origins(t)
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	v := a.createVideo(t, `{"title":"two origins on s3"}`)
	path, id := a.tusCreate(t, v.ID, len(clip))
	half := len(clip) / 2
	a.tusReq(t, "PATCH", path, patchHeaders(0), clip[:half]).wantStatus(t, http.StatusNoContent)
	want := []string{"uploads/" + id + "/info", "uploads/" + id + "/part-00000000000000000000"}
	if got := keysUnder(t, media, "uploads/"); !equalStrings(got, want) {
		t.Fatalf("the bucket holds %q for the half upload, want %q", got, want)
	}
	if files := dirFiles(t, a.a.uploadDir); len(files) != 0 {
		t.Fatalf("A's upload directory holds %q", files)
	}

	if off := b.tusOffset(t, path); off != half {
		t.Fatalf("HEAD at B: offset %d, want %d", off, half)
	}
	b.tusReq(t, "PATCH", path, patchHeaders(half), clip[half:]).wantStatus(t, http.StatusNoContent)

	wantSource(t, media, v.ID, clip)
	for _, e := range []*env{a, b} {
		if got := e.getVideo(t, v.ID); got.Status != "processing" || got.SourceBytes != int64(len(clip)) {
			t.Fatalf("video after the upload finished at B: %+v", got)
		}
		if files := dirFiles(t, e.a.uploadDir); len(files) != 0 {
			t.Errorf("an upload directory holds %q after the upload", files)
		}
	}
	// Once the video is queued, the upload's objects are gone.
	if got := keysUnder(t, media, "uploads/"); len(got) != 0 {
		t.Fatalf("the bucket still holds %q after the upload", got)
	}
	b.tusReq(t, "HEAD", path, nil, nil).wantStatus(t, http.StatusNotFound)
}

func equalStrings(a, b []string) bool {
	return strings.Join(a, "\n") == strings.Join(b, "\n")
}

// rawPatch sends a PATCH that declares length bytes but whose client
// stops after body and closes its side of a real connection to srv, as a
// client that drops mid-upload; it returns the status the server answers
// once it has handled the request.
func rawPatch(t *testing.T, srv *httptest.Server, path string, offset, length int, body []byte) int {
	t.Helper()
	u, _ := url.Parse(srv.URL)
	conn, err := net.Dial("tcp", u.Host)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	var req bytes.Buffer
	fmt.Fprintf(&req, "PATCH %s HTTP/1.1\r\nHost: %s\r\nAuthorization: Bearer %s\r\nTus-Resumable: 1.0.0\r\n", path, u.Host, testAdminKey)
	fmt.Fprintf(&req, "Upload-Offset: %d\r\nContent-Type: application/offset+octet-stream\r\nContent-Length: %d\r\n\r\n", offset, length)
	req.Write(body)
	if _, err := conn.Write(req.Bytes()); err != nil {
		t.Fatal(err)
	}
	if err := conn.(*net.TCPConn).CloseWrite(); err != nil {
		t.Fatal(err)
	}
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("the answer to an interrupted PATCH: %v", err)
	}
	_ = resp.Body.Close()
	return resp.StatusCode
}

// A PATCH whose client disconnects mid-body keeps what arrived, as parts
// of a bounded size: HEAD (at either origin) tells its end, a part a writer that lost
// its lock might leave past it is not counted, and the upload resumed from
// there is the file.
func TestTusOnS3InterruptedPatchResumes(t *testing.T) {
	t.Parallel()
	a, b, media := s3Origins(t)
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(a.h)
	defer srv.Close()
	v := a.createVideo(t, `{"title":"interrupted"}`)
	path, id := a.tusCreate(t, v.ID, len(clip))
	// A stores parts of at most 1000 bytes; the PATCH drops after a whole
	// number of them.
	a.a.tusPartMax.Store(1000)
	third := len(clip) / 3 / 1000 * 1000
	if code := rawPatch(t, srv, path, 0, len(clip), clip[:third]); code < 400 {
		t.Fatalf("an interrupted PATCH answered %d", code)
	}
	parts := keysUnder(t, media, "uploads/"+id+"/part-")
	if len(parts) != third/1000 || parts[1] != "uploads/"+tusPartKey(id, 1000) {
		t.Fatalf("the interrupted PATCH of %d bytes left %d parts (%q...), want %d", third, len(parts), parts[:2], third/1000)
	}
	if off := b.tusOffset(t, path); off != third {
		t.Fatalf("HEAD at B after the interrupted PATCH: offset %d, want %d", off, third)
	}
	// A second interruption, from there, before any byte: nothing stored.
	if code := rawPatch(t, srv, path, third, len(clip)-third, nil); code < 400 {
		t.Fatalf("a PATCH dropped before its first byte answered %d", code)
	}
	if off := a.tusOffset(t, path); off != third {
		t.Fatalf("HEAD after a PATCH dropped before its first byte: offset %d, want %d", off, third)
	}
	// A stray part past the end (as a writer that lost its lock might
	// store late) does not move the offset.
	stray := bytes.Repeat([]byte("x"), 10)
	if _, err := media.Put(t.Context(), "uploads/"+tusPartKey(id, int64(third+5)), bytes.NewReader(stray), int64(len(stray))); err != nil {
		t.Fatal(err)
	}
	if off := b.tusOffset(t, path); off != third {
		t.Fatalf("HEAD with a stray part: offset %d, want %d", off, third)
	}
	b.tusReq(t, "PATCH", path, patchHeaders(third), clip[third:]).wantStatus(t, http.StatusNoContent)
	wantSource(t, media, v.ID, clip)
	if got := a.getVideo(t, v.ID); got.Status != "processing" || got.SourceBytes != int64(len(clip)) {
		t.Fatalf("video after the resumed upload: %+v", got)
	}
	if got := keysUnder(t, media, "uploads/"); len(got) != 0 {
		t.Fatalf("the bucket still holds %q after the upload", got)
	}
}

// The states a kill leaves of uploads kept in the bucket are finished or
// cleaned up by RecoverUploads at any origin sharing it.
func TestTusOnS3RecoveryAfterCrash(t *testing.T) {
	t.Parallel()
	a, b, media := s3Origins(t)
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	ctx := t.Context()
	// start creates an upload at A and sends its first n bytes.
	start := func(title string, body []byte, n int) (videoJSON, string, string) {
		t.Helper()
		v := a.createVideo(t, `{"title":"`+title+`"}`)
		path, id := a.tusCreate(t, v.ID, len(body))
		a.tusReq(t, "PATCH", path, patchHeaders(0), body[:n]).wantStatus(t, http.StatusNoContent)
		return v, path, id
	}
	// crashAfterLastByte stores the rest as the last PATCH does, and
	// stops there, as a kill before the finish hook would.
	crashAfterLastByte := func(id string, body []byte, from int) {
		t.Helper()
		if _, err := media.Put(ctx, "uploads/"+tusPartKey(id, int64(from)), bytes.NewReader(body[from:]), int64(len(body)-from)); err != nil {
			t.Fatal(err)
		}
	}
	// 1. Every byte arrived, the finish never ran; the assembled file of
	// an earlier try is left in A's upload directory.
	unfinished, _, id1 := start("unfinished", clip, len(clip)/2)
	crashAfterLastByte(id1, clip, len(clip)/2)
	if err := os.WriteFile(filepath.Join(a.a.uploadDir, id1+tusAssembledSuffix), []byte("partial"), 0o644); err != nil {
		t.Fatal(err)
	}
	// 2. The source was kept in the bucket, the video not queued.
	kept, _, id2 := start("kept", clip, len(clip)/3)
	crashAfterLastByte(id2, clip, len(clip)/3)
	if _, err := media.Put(ctx, vod.SourceKey(kept.ID), bytes.NewReader(clip), int64(len(clip))); err != nil {
		t.Fatal(err)
	}
	// 3. A complete upload of a text file: the video fails, saying why.
	text := []byte(strings.Repeat("not a video\n", 100))
	notVideo, _, id3 := start("text", text, 10)
	crashAfterLastByte(id3, text, 10)
	// 4. Half an upload: left for its client to resume.
	half, path4, _ := start("half", clip, len(clip)/2)
	// 5. The objects of an upload whose video was deleted.
	gone, _, id5 := start("gone", clip, 100)
	a.doJSON(t, "DELETE", "/v1/videos/"+gone.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	// 6. Parts whose info was removed (a removal cut short), and a stale
	// assembled file of an upload no longer in the bucket, at B.
	const id6 = "abcdefgh-12345678"
	if _, err := media.Put(ctx, "uploads/"+tusPartKey(id6, 0), strings.NewReader("xyz"), 3); err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(b.a.uploadDir, 0o755); err != nil {
		t.Fatal(err)
	}
	staleB := filepath.Join(b.a.uploadDir, id6+tusAssembledSuffix)
	if err := os.WriteFile(staleB, []byte("stale"), 0o644); err != nil {
		t.Fatal(err)
	}

	// B, whose directory never saw these uploads, recovers them.
	if n, err := b.a.RecoverUploads(ctx); n != 3 || err != nil {
		t.Fatalf("RecoverUploads at B = %d, %v; want 3, nil", n, err)
	}
	for _, v := range []videoJSON{unfinished, kept} {
		if got := b.getVideo(t, v.ID); got.Status != "processing" || got.SourceBytes != int64(len(clip)) {
			t.Errorf("%s after recovery: %+v", v.Title, got)
		}
		wantSource(t, media, v.ID, clip)
	}
	if got := b.getVideo(t, notVideo.ID); got.Status != "failed" || got.Error == "" {
		t.Errorf("text upload after recovery: %+v", got)
	}
	for _, id := range []string{id1, id2, id3, id5, id6} {
		if keys := keysUnder(t, media, "uploads/"+id+"/"); len(keys) != 0 {
			t.Errorf("the bucket still holds %q", keys)
		}
	}
	if _, err := os.Stat(staleB); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the stale assembled file is left at B (%v)", err)
	}
	// A's own leftover goes at A's next recovery (the upload is gone).
	if n, err := a.a.RecoverUploads(ctx); n != 0 || err != nil {
		t.Errorf("RecoverUploads at A = %d, %v; want 0, nil", n, err)
	}
	if files := dirFiles(t, a.a.uploadDir); len(files) != 0 {
		t.Errorf("A's upload directory holds %q after recovery", files)
	}
	// The half upload resumes and completes, at B.
	if off := b.tusOffset(t, path4); off != len(clip)/2 {
		t.Fatalf("the half upload's offset after recovery is %d, want %d", off, len(clip)/2)
	}
	b.tusReq(t, "PATCH", path4, patchHeaders(len(clip)/2), clip[len(clip)/2:]).wantStatus(t, http.StatusNoContent)
	if got := b.getVideo(t, half.ID); got.Status != "processing" {
		t.Errorf("the resumed upload's video: %+v", got)
	}
	wantSource(t, media, half.ID, clip)
	if keys := keysUnder(t, media, "uploads/"); len(keys) != 0 {
		t.Errorf("the bucket still holds %q", keys)
	}
	if n, err := b.a.RecoverUploads(ctx); n != 0 || err != nil {
		t.Errorf("second RecoverUploads = %d, %v; want 0, nil", n, err)
	}
}

// While the bucket cannot be reached, tus requests answer 503 (try again)
// rather than 500, and an upload that could not be created does not keep
// its video reserved (the video offers its upload URLs again).
func TestTusOnS3Unavailable(t *testing.T) {
	t.Parallel()
	srv := s3test.Start(t)
	a, _, _ := s3OriginsOn(t, srv, s3store.Config{DialTimeout: time.Second, RequestTimeout: 2 * time.Second, MaxRetries: 2})
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	before := a.createVideo(t, `{"title":"before the outage"}`)
	path, _ := a.tusCreate(t, before.ID, len(clip))
	half := len(clip) / 2
	a.tusReq(t, "PATCH", path, patchHeaders(0), clip[:half]).wantStatus(t, http.StatusNoContent)
	during := a.createVideo(t, `{"title":"during the outage"}`)

	srv.Stop()
	r := a.tusReq(t, "POST", "/v1/uploads/", map[string]string{
		"Upload-Length": strconv.Itoa(len(clip)), "Upload-Metadata": tusMeta("video_id", during.ID),
	}, nil)
	r.wantError(t, http.StatusServiceUnavailable, codeUnavailable)
	if r.header.Get("Retry-After") != "1" {
		t.Errorf("503 without Retry-After: %v", r.header)
	}
	if got := a.getVideo(t, during.ID); got.Status != "waiting" || got.Upload == nil {
		t.Fatalf("the video whose upload could not be created is still reserved: %+v", got)
	}
	a.tusReq(t, "HEAD", path, nil, nil).wantStatus(t, http.StatusServiceUnavailable)
	a.tusReq(t, "PATCH", path, patchHeaders(half), clip[half:]).wantError(t, http.StatusServiceUnavailable, codeUnavailable)
	a.tusReq(t, "DELETE", path, nil, nil).wantError(t, http.StatusServiceUnavailable, codeUnavailable)
}
