package playerapi

import (
	"net/http"
	"os"
	"strconv"
	"strings"
	"testing"

	"github.com/shoal-video/shoal/internal/testutil"
)

// A tus PATCH for a video deleted meanwhile answers 404, as a PUT does,
// and its bytes are not appended.
func TestTusPatchAfterDeleteIsRefused(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	clip, err := os.ReadFile(testutil.MakeMP4(t, 320, 240, 2))
	if err != nil {
		t.Fatal(err)
	}
	v := e.createVideo(t, `{"title":"clip"}`)
	r := e.tusReq(t, "POST", "/v1/uploads/", map[string]string{
		"Upload-Length": strconv.Itoa(len(clip)), "Upload-Metadata": tusMeta("video_id", v.ID),
	}, nil).wantStatus(t, http.StatusCreated)
	path := strings.TrimPrefix(r.header.Get("Location"), testPublicURL)
	third := len(clip) / 3
	e.tusReq(t, "PATCH", path, patchHeaders(0), clip[:third]).wantStatus(t, http.StatusNoContent)

	e.doJSON(t, "DELETE", "/v1/videos/"+v.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)

	p := e.tusReq(t, "PATCH", path, patchHeaders(third), clip[third:2*third])
	t.Logf("PATCH after DELETE: %d %s offset=%q", p.status, p.body, p.header.Get("Upload-Offset"))
	if p.status != http.StatusNotFound {
		t.Fatalf("PATCH of a deleted video's upload was accepted (offset now %s)", p.header.Get("Upload-Offset"))
	}
}
