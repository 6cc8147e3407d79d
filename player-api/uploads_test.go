package playerapi

import (
	"context"
	"crypto/sha256"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	tus "github.com/tus/tusd/v2/pkg/handler"

	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// twoOrigins is two APIs on one Redis sharing one upload directory, as two
// origins of one deployment.
func twoOrigins(t *testing.T) (a, b *env) {
	t.Helper()
	srv := redistest.Start(t)
	cfg := Config{UploadDir: filepath.Join(t.TempDir(), "uploads")}
	return newEnvOn(t, cfg, srv), newEnvOn(t, cfg, srv)
}

// waitFor polls cond every few milliseconds until it holds, failing the
// test after 10 s.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-tick.C
	}
}

func patchHeaders(off int) map[string]string {
	return map[string]string{"Upload-Offset": strconv.Itoa(off), "Content-Type": "application/offset+octet-stream"}
}

// An upload created at origin A, half sent there, is resumed and finished
// at origin B.
func TestTusResumesAtAnotherOrigin(t *testing.T) {
	t.Parallel()
	a, b := twoOrigins(t)
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	v := a.createVideo(t, `{"title":"two origins"}`)
	r := a.tusReq(t, "POST", "/v1/uploads/", map[string]string{
		"Upload-Length": strconv.Itoa(len(clip)), "Upload-Metadata": tusMeta("video_id", v.ID),
	}, nil).wantStatus(t, http.StatusCreated)
	path := strings.TrimPrefix(r.header.Get("Location"), testPublicURL)
	half := len(clip) / 2
	a.tusReq(t, "PATCH", path, patchHeaders(0), clip[:half]).wantStatus(t, http.StatusNoContent)

	h := b.tusReq(t, "HEAD", path, nil, nil).wantStatus(t, http.StatusOK)
	if h.header.Get("Upload-Offset") != strconv.Itoa(half) {
		t.Fatalf("HEAD at B: offset %q, want %d", h.header.Get("Upload-Offset"), half)
	}
	b.tusReq(t, "PATCH", path, patchHeaders(half), clip[half:]).wantStatus(t, http.StatusNoContent)

	stored, err := os.ReadFile(sourcePath(b.files, v.ID))
	if err != nil {
		t.Fatal(err)
	}
	if sha256.Sum256(stored) != sha256.Sum256(clip) {
		t.Fatal("the upload resumed at B is not byte-identical to the file")
	}
	for _, e := range []*env{a, b} {
		if got := e.getVideo(t, v.ID); got.Status != "processing" || got.SourceBytes != int64(len(clip)) {
			t.Fatalf("video after the upload finished at B: %+v", got)
		}
	}
}

// Two PATCHes of one upload at two origins never write at once: the
// second waits for the first to end, then finds the offset it left.
func TestTusPatchesAtTwoOriginsDoNotInterleave(t *testing.T) {
	t.Parallel()
	a, b := twoOrigins(t)
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	v := a.createVideo(t, `{"title":"race"}`)
	r := a.tusReq(t, "POST", "/v1/uploads/", map[string]string{
		"Upload-Length": strconv.Itoa(len(clip)), "Upload-Metadata": tusMeta("video_id", v.ID),
	}, nil).wantStatus(t, http.StatusCreated)
	path := strings.TrimPrefix(r.header.Get("Location"), testPublicURL)
	id := strings.TrimPrefix(path, "/v1/uploads/")
	data := filepath.Join(a.a.uploadDir, id)
	third := len(clip) / 3

	// A's PATCH sends a third of the file and stalls, holding the lock.
	pr, pw := io.Pipe()
	aDone := make(chan int, 1)
	go func() {
		req := httptest.NewRequest("PATCH", path, pr)
		req.ContentLength = -1
		req.Header.Set("Authorization", "Bearer "+testAdminKey)
		req.Header.Set("Tus-Resumable", "1.0.0")
		for k, v := range patchHeaders(0) {
			req.Header.Set(k, v)
		}
		rec := httptest.NewRecorder()
		a.h.ServeHTTP(rec, req)
		aDone <- rec.Code
	}()
	if _, err := pw.Write(clip[:third]); err != nil {
		t.Fatal(err)
	}
	size := func() int64 {
		st, err := os.Stat(data)
		if err != nil {
			return -1
		}
		return st.Size()
	}
	waitFor(t, "A's first third on disk", func() bool { return size() == int64(third) })

	// B's PATCH, from a client that read offset `third`, waits for A.
	waiting := make(chan string, 1)
	b.a.tusLocks.waiting = func(id string) { waiting <- id }
	bDone := make(chan response, 1)
	go func() { bDone <- b.tusReq(t, "PATCH", path, patchHeaders(third), clip[third:]) }()
	select {
	case got := <-waiting:
		if got != id {
			t.Fatalf("B waited for %q, want %q", got, id)
		}
	case r := <-bDone:
		t.Fatalf("B's PATCH ran while A's was writing: %d %s", r.status, r.body)
	case <-time.After(10 * time.Second):
		t.Fatal("B's PATCH neither waited nor finished")
	}
	select {
	case r := <-bDone:
		t.Fatalf("B's PATCH ended while A held the lock: %d %s", r.status, r.body)
	default:
	}
	// A goes on: another third, then its client stops.
	if _, err := pw.Write(clip[third : 2*third]); err != nil {
		t.Fatal(err)
	}
	waitFor(t, "A's second third on disk", func() bool { return size() == int64(2*third) })
	select {
	case r := <-bDone:
		t.Fatalf("B's PATCH ended while A held the lock: %d %s", r.status, r.body)
	default:
	}
	_ = pw.Close()
	if code := <-aDone; code != http.StatusNoContent {
		t.Fatalf("A's PATCH: %d", code)
	}
	// B then finds the offset A left, not the one its client sent.
	var rb response
	select {
	case rb = <-bDone:
	case <-time.After(10 * time.Second):
		t.Fatal("B's PATCH did not end after A's")
	}
	rb.wantStatus(t, http.StatusConflict)
	if got := size(); got != int64(2*third) {
		t.Fatalf("the upload has %d bytes after B's refused PATCH, want %d", got, 2*third)
	}
	// Resumed at B from the offset HEAD tells, the upload completes intact.
	b.a.tusLocks.waiting = nil
	h := b.tusReq(t, "HEAD", path, nil, nil).wantStatus(t, http.StatusOK)
	off, _ := strconv.Atoi(h.header.Get("Upload-Offset"))
	if off != 2*third {
		t.Fatalf("HEAD at B: offset %d, want %d", off, 2*third)
	}
	b.tusReq(t, "PATCH", path, patchHeaders(off), clip[off:]).wantStatus(t, http.StatusNoContent)
	stored, err := os.ReadFile(sourcePath(b.files, v.ID))
	if err != nil || sha256.Sum256(stored) != sha256.Sum256(clip) {
		t.Fatalf("the upload written at two origins is not the file (%v)", err)
	}
	if got := a.getVideo(t, v.ID); got.Status != "processing" {
		t.Fatalf("video %+v", got)
	}
}

// A request that cannot get an upload's lock before its context ends gets
// tusd's ErrLockTimeout, as with tusd's own lockers.
func TestTusLockTimeoutIsTusds(t *testing.T) {
	t.Parallel()
	a, b := twoOrigins(t)
	const id = "abc-12345678"
	held, err := a.a.tusLocks.NewLock(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := held.Lock(t.Context(), func() { t.Error("the holder was asked to let go") }); err != nil {
		t.Fatal(err)
	}
	defer func() { _ = held.Unlock() }()
	other, err := b.a.tusLocks.NewLock(id)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(t.Context(), 50*time.Millisecond)
	defer cancel()
	if err := other.Lock(ctx, func() {}); !errors.Is(err, tus.ErrLockTimeout) {
		t.Fatalf("Lock of a held upload until the deadline: %v, want tusd's ErrLockTimeout", err)
	}
	if _, err := a.a.tusLocks.NewLock("../x"); !errors.Is(err, tus.ErrNotFound) {
		t.Fatalf("NewLock of a bad id: %v, want ErrNotFound", err)
	}
}

// An upload whose every byte arrived but whose finish never ran, locked by
// a holder that died (its lease is no longer renewed), is finished by
// RecoverUploads once the lease expires; by default it waits longer than a
// lease lasts.
func TestTusRecoveryOutwaitsADeadHoldersLease(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	if w, ttl := e.a.recoverLockWait(), e.a.tusLocks.locks.TTL(); w <= ttl {
		t.Fatalf("RecoverUploads waits %v for a lock whose lease lasts %v", w, ttl)
	}
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	v := e.createVideo(t, `{"title":"dead holder"}`)
	r := e.tusReq(t, "POST", "/v1/uploads/", map[string]string{
		"Upload-Length": strconv.Itoa(len(clip)), "Upload-Metadata": tusMeta("video_id", v.ID),
	}, nil).wantStatus(t, http.StatusCreated)
	path := strings.TrimPrefix(r.header.Get("Location"), testPublicURL)
	id := strings.TrimPrefix(path, "/v1/uploads/")
	e.tusReq(t, "PATCH", path, patchHeaders(0), clip[:100]).wantStatus(t, http.StatusNoContent)
	// The rest reaches the file, and the origin dies holding the lock.
	if err := os.WriteFile(filepath.Join(e.a.uploadDir, id), clip, 0o644); err != nil {
		t.Fatal(err)
	}
	dead, err := routing.NewStore(e.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	lock, err := dead.UploadLocker(300*time.Millisecond, nil).NewLock(id)
	if err != nil {
		t.Fatal(err)
	}
	if err := lock.Lock(t.Context()); err != nil {
		t.Fatal(err)
	}
	_ = dead.Close() // its renewals fail from now on
	t.Cleanup(func() { _ = lock.Unlock() })

	e.a.recoverWait = 10 * time.Second
	if n, err := e.a.RecoverUploads(t.Context()); n != 1 || err != nil {
		t.Fatalf("RecoverUploads = %d, %v; want 1, nil", n, err)
	}
	if got := e.getVideo(t, v.ID); got.Status != "processing" || got.SourceBytes != int64(len(clip)) {
		t.Fatalf("video after recovery: %+v", got)
	}
}
