package playerapi

import (
	"net/http"
	"strings"
	"testing"
)

// TestLiveStreamSourceURL: a live stream may be pulled from an RTSP URL;
// the password never comes back, bad URLs are refused, "" stops pulling.
func TestLiveStreamSourceURL(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ls := e.createLiveStream(t, `{"name":"cam","source_url":"rtsp://admin:hunter2@10.0.0.5:554/stream1"}`)
	if ls.SourceURL != "rtsp://admin:***@10.0.0.5:554/stream1" || ls.Pull == nil || ls.Pull.State != "connecting" {
		t.Fatalf("created %+v (pull %+v)", ls, ls.Pull)
	}
	got := e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantStatus(t, http.StatusOK)
	if strings.Contains(string(got.body), "hunter2") {
		t.Fatalf("the password came back: %s", got.body)
	}
	for _, bad := range []string{`"http://cam/x"`, `"rtsp://"`, `"rtsp:///x"`, `5`, `"rtsp://cam/` + strings.Repeat("a", 1100) + `"`} {
		e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"x","source_url":`+bad+`}`).wantError(t, http.StatusBadRequest, codeInvalidRequest)
		e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"source_url":`+bad+`}`).wantError(t, http.StatusBadRequest, codeInvalidRequest)
	}
	up := decode[liveStreamJSON](t, e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"source_url":""}`).wantStatus(t, http.StatusOK))
	if up.SourceURL != "" || up.Pull != nil {
		t.Fatalf("after clearing: %+v", up)
	}
}
