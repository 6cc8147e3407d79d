package playerapi

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode/vod"
)

// clipBytes is an MP4 of seconds of w x h video and sound.
func clipBytes(t *testing.T, w, h, seconds int) []byte {
	t.Helper()
	b, err := os.ReadFile(testutil.MakeMP4(t, w, h, seconds))
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// pipedPut starts a PUT of video id's source whose body the test writes to
// the pipe returned; wait returns its answer once the pipe is closed. The
// handler reads the body only once it holds the upload reservation, so a
// first write returns when the upload is under way.
func (e *env) pipedPut(t *testing.T, id string) (*io.PipeWriter, func() *httptest.ResponseRecorder) {
	t.Helper()
	pr, pw := io.Pipe()
	req := httptest.NewRequest("PUT", "/v1/videos/"+id+"/source", pr)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "video/mp4")
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); e.h.ServeHTTP(rec, req) }()
	return pw, func() *httptest.ResponseRecorder { <-done; return rec }
}

// write writes b to w or fails the test.
func write(t *testing.T, w io.Writer, b []byte) {
	t.Helper()
	if _, err := w.Write(b); err != nil {
		t.Fatal(err)
	}
}

// A video deleted while its source is still arriving by PUT does not keep
// that source in the media store (nothing would refer to it, nothing would
// remove it): the upload learns of the delete when it renews its
// reservation and answers 404.
func TestDeleteDuringPutLeavesNoSource(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	clip := clipBytes(t, 320, 240, 2)
	v := e.createVideo(t, `{"title":"clip"}`)
	pw, wait := e.pipedPut(t, v.ID)
	write(t, pw, clip[:1000])
	e.doJSON(t, "DELETE", "/v1/videos/"+v.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	write(t, pw, clip[1000:])
	pw.Close()
	if rec := wait(); rec.Code != http.StatusNotFound {
		t.Errorf("PUT after DELETE answered %d %s, want 404", rec.Code, rec.Body.Bytes())
	}
	if _, err := os.Stat(sourcePath(e.files, v.ID)); err == nil {
		t.Fatalf("the deleted video's source %s was kept in the media store", sourcePath(e.files, v.ID))
	}
}

// deletingFiles is the real media files, with a delete of the video sent
// through the API while the source is being stored.
type deletingFiles struct {
	vod.Files
	during func(id string)
}

func (f deletingFiles) KeepSource(ctx context.Context, id, file string) error {
	f.during(id)
	return f.Files.KeepSource(ctx, id, file)
}

// The same while the received file is moved into the media store (after
// the last renewal): the delete has already removed the video's files, and
// the source stored after it is removed too.
func TestDeleteWhileSourceIsStored(t *testing.T) {
	t.Parallel()
	files := testFiles(t, t.TempDir())
	var e *env
	e = newEnv(t, Config{Videos: deletingFiles{Files: files, during: func(id string) {
		e.doJSON(t, "DELETE", "/v1/videos/"+id, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	}}})
	v := e.createVideo(t, `{"title":"clip"}`)
	if r := e.put(t, v.ID, clipBytes(t, 320, 240, 2), "video/mp4"); r.status != http.StatusNotFound {
		t.Errorf("PUT answered %d %s, want 404", r.status, r.body)
	}
	if _, err := os.Stat(sourcePath(files, v.ID)); err == nil {
		t.Fatalf("the deleted video's source %s was kept in the media store", sourcePath(files, v.ID))
	}
}

// A tus PATCH for a video deleted meanwhile answers 404, as a PUT does,
// and its bytes are not appended.
func TestTusPatchAfterDeleteIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	clip := clipBytes(t, 320, 240, 2)
	v := e.createVideo(t, `{"title":"clip"}`)
	path, _ := e.tusCreate(t, v.ID, len(clip))
	third := len(clip) / 3
	e.tusReq(t, "PATCH", path, patchHeaders(0), clip[:third]).wantStatus(t, http.StatusNoContent)
	e.doJSON(t, "DELETE", "/v1/videos/"+v.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	if p := e.tusReq(t, "PATCH", path, patchHeaders(third), clip[third:2*third]); p.status != http.StatusNotFound {
		t.Fatalf("PATCH of a deleted video's upload answered %d (offset now %s), want 404", p.status, p.header.Get("Upload-Offset"))
	}
}

// A PUT that stalled past its lease while a second PUT took the video over
// and finished does not replace the second upload's source when it resumes
// and finishes: it answers 409. (RenewUpload answered "held" for a video no
// longer waiting, so the last checks let the stale upload through.)
func TestStalePutDoesNotReplaceTheSourceOfTheUploadThatTookOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	clipA, clipB := clipBytes(t, 320, 240, 2), clipBytes(t, 160, 120, 1)
	v := e.createVideo(t, `{"title":"clip"}`)
	pw, wait := e.pipedPut(t, v.ID) // upload A starts and stalls
	write(t, pw, clipA[:1000])
	// Its lease runs out (as UploadLease of Redis's clock passing would
	// make it): the record's lease end is moved into the past.
	opt, err := redis.ParseURL(e.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	if err := rdb.HSet(t.Context(), "shoal:video:"+v.ID, "upload_until", "0").Err(); err != nil {
		t.Fatal(err)
	}
	// Upload B takes the video over and finishes; then A does.
	e.put(t, v.ID, clipB, "video/mp4").wantStatus(t, http.StatusAccepted)
	write(t, pw, clipA[1000:])
	pw.Close()
	if rec := wait(); rec.Code != http.StatusConflict {
		t.Errorf("upload A answered %d %s, want 409", rec.Code, rec.Body.Bytes())
	}
	stored, err := os.ReadFile(sourcePath(e.files, v.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, clipB) {
		t.Fatalf("the video is processing B's source (%d bytes), but the media store holds %d bytes (A's is %d)",
			len(clipB), len(stored), len(clipA))
	}
}
