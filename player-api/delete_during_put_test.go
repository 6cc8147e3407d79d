package playerapi

import (
	"context"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"testing"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode/vod"
)

// A video deleted while its source is still arriving by PUT does not keep
// that source in the media store (nothing would refer to it, nothing would
// remove it): the upload learns of the delete when it renews its
// reservation and answers 404.
func TestDeleteDuringPutLeavesNoSource(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	v := e.createVideo(t, `{"title":"clip"}`)

	pr, pw := io.Pipe()
	req := httptest.NewRequest("PUT", "/v1/videos/"+v.ID+"/source", pr)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "video/mp4")
	rec := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); e.h.ServeHTTP(rec, req) }()

	// The handler reads the body only once it holds the upload
	// reservation: this write returns when the upload is under way.
	if _, err := pw.Write(clip[:1000]); err != nil {
		t.Fatal(err)
	}
	e.doJSON(t, "DELETE", "/v1/videos/"+v.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	if _, err := pw.Write(clip[1000:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	<-done
	if rec.Code != http.StatusNotFound {
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
	clip, err := os.Open(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer clip.Close()
	v := e.createVideo(t, `{"title":"clip"}`)
	req := httptest.NewRequest("PUT", "/v1/videos/"+v.ID+"/source", clip)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set("Content-Type", "video/mp4")
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusNotFound {
		t.Errorf("PUT answered %d %s, want 404", rec.Code, rec.Body.Bytes())
	}
	if _, err := os.Stat(sourcePath(files, v.ID)); err == nil {
		t.Fatalf("the deleted video's source %s was kept in the media store", sourcePath(files, v.ID))
	}
}
