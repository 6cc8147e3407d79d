package playerapi

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
)

// halfSentUpload makes a video titled title and sends half of a 2 s clip
// to it with tus; it returns the clip, the video, the upload's path and id.
func (e *env) halfSentUpload(t *testing.T, title string) ([]byte, videoJSON, string, string) {
	t.Helper()
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	v := e.createVideo(t, `{"title":"`+title+`"}`)
	path, id := e.tusCreate(t, v.ID, len(clip))
	e.tusReq(t, "PATCH", path, patchHeaders(0), clip[:len(clip)/2]).wantStatus(t, http.StatusNoContent)
	return clip, v, path, id
}

// An upload its client abandoned is removed once nothing came to it for
// the expiry: its bytes, and its hold on the video, which can then be
// uploaded again (before, a new upload is refused while the old one holds
// it); HEAD answers 404, on which tus clients start over. An upload still
// coming is kept, and an expiry of 0 keeps everything.
func TestAbandonedUploadsExpire(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := t.Context()
	clip, v, path, id := e.halfSentUpload(t, "abandoned")
	fresh := e.createVideo(t, `{"title":"still coming"}`)
	freshPath, _ := e.tusCreate(t, fresh.ID, len(clip))

	// The abandoned one was last written 25 hours ago.
	long := time.Now().Add(-25 * time.Hour)
	for _, f := range []string{id, id + ".info"} {
		if err := os.Chtimes(filepath.Join(e.a.uploadDir, f), long, long); err != nil {
			t.Fatal(err)
		}
	}
	if n, err := e.a.ExpireUploads(ctx, 0); n != 0 || err != nil {
		t.Fatalf("with no expiry: %d removed, %v", n, err)
	}
	e.tusReq(t, "POST", "/v1/uploads/", map[string]string{
		"Upload-Length": "100", "Upload-Metadata": tusMeta("video_id", v.ID),
	}, nil).wantStatus(t, http.StatusConflict)

	if n, err := e.a.ExpireUploads(ctx, 24*time.Hour); n != 1 || err != nil {
		t.Fatalf("ExpireUploads: %d removed, %v; want 1", n, err)
	}
	if _, err := os.Stat(filepath.Join(e.a.uploadDir, id)); !os.IsNotExist(err) {
		t.Fatalf("the abandoned upload's bytes are still there: %v", err)
	}
	e.tusReq(t, "HEAD", path, nil, nil).wantStatus(t, http.StatusNotFound)
	if off := e.tusOffset(t, freshPath); off != 0 {
		t.Fatalf("the upload still coming: offset %d", off)
	}
	if got := e.getVideo(t, v.ID); got.Status != "waiting" {
		t.Fatalf("the video after its upload expired: %+v", got)
	}
	if !strings.Contains(e.logs.String(), "tus upload expired") {
		t.Errorf("no log line says the upload expired:\n%s", e.logs)
	}

	// The client starts over, and the video gets its source.
	again, _ := e.tusCreate(t, v.ID, len(clip))
	e.tusReq(t, "PATCH", again, patchHeaders(0), clip).wantStatus(t, http.StatusNoContent)
	if got := e.getVideo(t, v.ID); got.Status != "processing" || got.SourceBytes != int64(len(clip)) {
		t.Fatalf("the video uploaded again: %+v", got)
	}
}

// With the media store on S3, an abandoned upload's objects are removed
// from the bucket by any origin (here not the one it was sent to), and the
// video can be uploaded again.
func TestAbandonedUploadsExpireOnS3(t *testing.T) {
	t.Parallel()
	a, b, media := s3Origins(t)
	ctx := t.Context()
	clip, v, path, id := a.halfSentUpload(t, "abandoned on s3")

	if n, err := b.a.ExpireUploads(ctx, 24*time.Hour); n != 0 || err != nil {
		t.Fatalf("a fresh upload: %d removed, %v", n, err)
	}
	// B's clock a day and more later.
	later := time.Now().Add(25 * time.Hour)
	b.a.now = func() time.Time { return later }
	if n, err := b.a.ExpireUploads(ctx, 24*time.Hour); n != 1 || err != nil {
		t.Fatalf("ExpireUploads at B: %d removed, %v; want 1", n, err)
	}
	if got := keysUnder(t, media, "uploads/"+id+"/"); len(got) != 0 {
		t.Fatalf("the bucket still holds %q", got)
	}
	a.tusReq(t, "HEAD", path, nil, nil).wantStatus(t, http.StatusNotFound)
	again, _ := a.tusCreate(t, v.ID, len(clip))
	a.tusReq(t, "PATCH", again, patchHeaders(0), clip).wantStatus(t, http.StatusNoContent)
	wantSource(t, media, v.ID, clip)
}

// What expiry leaves, and what it takes although it looks alike: a
// complete upload that still holds its video (RecoverUploads finishes it),
// an upload whose lock a request holds (it is being written), and, taken,
// the leftovers of an upload whose video was deleted.
func TestUploadExpiryLeavesWhatItMust(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ctx := t.Context()
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	long := time.Now().Add(-25 * time.Hour)
	age := func(id string) {
		t.Helper()
		for _, f := range []string{id, id + ".info"} {
			if err := os.Chtimes(filepath.Join(e.a.uploadDir, f), long, long); err != nil {
				t.Fatal(err)
			}
		}
	}
	there := func(id string) bool {
		_, err := os.Stat(filepath.Join(e.a.uploadDir, id+".info"))
		return err == nil
	}

	// Every byte arrived (a crash came before it was finished).
	complete := e.createVideo(t, `{"title":"complete"}`)
	_, completeID := e.tusCreate(t, complete.ID, len(clip))
	if err := os.WriteFile(filepath.Join(e.a.uploadDir, completeID), clip, 0o644); err != nil {
		t.Fatal(err)
	}
	age(completeID)
	// Its video deleted while it was half sent.
	deleted := e.createVideo(t, `{"title":"deleted"}`)
	deletedPath, deletedID := e.tusCreate(t, deleted.ID, len(clip))
	e.tusReq(t, "PATCH", deletedPath, patchHeaders(0), clip[:100]).wantStatus(t, http.StatusNoContent)
	e.doJSON(t, "DELETE", "/v1/videos/"+deleted.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	age(deletedID)
	// Half sent, its lock held by a request.
	locked := e.createVideo(t, `{"title":"locked"}`)
	lockedPath, lockedID := e.tusCreate(t, locked.ID, len(clip))
	e.tusReq(t, "PATCH", lockedPath, patchHeaders(0), clip[:100]).wantStatus(t, http.StatusNoContent)
	age(lockedID)
	lock, err := e.a.tusLocks.locks.NewLock(lockedID)
	if err != nil {
		t.Fatal(err)
	}
	if err := lock.Lock(ctx); err != nil {
		t.Fatal(err)
	}
	e.a.recoverWait = 100 * time.Millisecond

	if n, err := e.a.ExpireUploads(ctx, 24*time.Hour); n != 1 || err != nil {
		t.Fatalf("ExpireUploads: %d removed, %v; want 1 (the deleted video's)", n, err)
	}
	if !there(completeID) || !there(lockedID) || there(deletedID) {
		t.Fatalf("after expiry: complete kept %v, locked kept %v, deleted video's kept %v; want true, true, false",
			there(completeID), there(lockedID), there(deletedID))
	}
	if err := lock.Unlock(); err != nil {
		t.Fatal(err)
	}
	if n, err := e.a.ExpireUploads(ctx, 24*time.Hour); n != 1 || err != nil || there(lockedID) {
		t.Fatalf("once its lock was let go: %d removed, %v", n, err)
	}
	if n, err := e.a.RecoverUploads(ctx); n != 1 || err != nil {
		t.Fatalf("RecoverUploads finishing the complete upload: %d, %v", n, err)
	}
	if got := e.getVideo(t, complete.ID); got.Status != "processing" {
		t.Fatalf("the complete upload's video: %+v", got)
	}
}
