package playerapi

import (
	"bytes"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/testutil"
)

// A PUT that stalled past its lease while a second PUT took the video over
// and finished must not replace the second upload's source when it resumes
// and finishes: RenewUpload answers "held" (true) for a video no longer
// waiting, so both the last check of receive and the one sourceArrived
// makes before KeepSource let the stale upload through.
func TestStalePutDoesNotReplaceTheSourceOfTheUploadThatTookOver(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	clipA, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	clipB, err := os.ReadFile(testutil.MakeMP4(t, 160, 120, 1))
	if err != nil {
		t.Fatal(err)
	}
	v := e.createVideo(t, `{"title":"clip"}`)

	// Upload A starts and stalls.
	pr, pw := io.Pipe()
	reqA := httptest.NewRequest("PUT", "/v1/videos/"+v.ID+"/source", pr)
	reqA.Header.Set("Authorization", "Bearer "+testAdminKey)
	reqA.Header.Set("Content-Type", "video/mp4")
	recA := httptest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); e.h.ServeHTTP(recA, reqA) }()
	if _, err := pw.Write(clipA[:1000]); err != nil {
		t.Fatal(err)
	}

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

	// Upload B takes the video over and finishes.
	reqB := httptest.NewRequest("PUT", "/v1/videos/"+v.ID+"/source", bytes.NewReader(clipB))
	reqB.Header.Set("Authorization", "Bearer "+testAdminKey)
	reqB.Header.Set("Content-Type", "video/mp4")
	recB := httptest.NewRecorder()
	e.h.ServeHTTP(recB, reqB)
	if recB.Code != http.StatusAccepted {
		t.Fatalf("upload B: %d %s", recB.Code, recB.Body.Bytes())
	}

	// A resumes and finishes.
	if _, err := pw.Write(clipA[1000:]); err != nil {
		t.Fatal(err)
	}
	pw.Close()
	<-done
	t.Logf("upload A answered %d %s", recA.Code, strings.TrimSpace(recA.Body.String()))
	stored, err := os.ReadFile(sourcePath(e.files, v.ID))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(stored, clipB) {
		t.Fatalf("the video is processing B's source (%d bytes), but the media store now holds %d bytes (A's is %d)",
			len(clipB), len(stored), len(clipA))
	}
}
