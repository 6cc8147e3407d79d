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
	ls := e.createLiveStream(t, `{"name":"cam","source_url":"rtsp://admin:hunter2@cam.example.net:554/stream1"}`)
	if ls.SourceURL != "rtsp://admin:***@cam.example.net:554/stream1" || ls.Pull == nil || ls.Pull.State != "connecting" {
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

// TestLiveStreamSourceURLPrivate: a source URL naming a loopback, private,
// link-local or CGNAT address outright is refused unless the node allows
// them (ingest.rtsp_pull_allow_private); names are checked when dialed.
func TestLiveStreamSourceURLPrivate(t *testing.T) {
	t.Parallel()
	private := []string{"rtsp://127.0.0.1:8554/x", "rtsp://user:pw@10.0.0.5/x", "rtsp://192.168.1.64:554/Streaming/Channels/101",
		"rtsps://[::1]:322/x", "rtsp://169.254.169.254/x", "rtsp://100.64.0.1/x", "rtsp://LOCALHOST/x", "rtsp://cam.localhost/x"}
	e := newEnv(t, Config{})
	ls := e.createLiveStream(t, `{"name":"cam","source_url":"rtsp://cam.example.net/x"}`)
	for _, u := range private {
		e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"x","source_url":"`+u+`"}`).wantError(t, http.StatusBadRequest, codeInvalidRequest)
		e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"source_url":"`+u+`"}`).wantError(t, http.StatusBadRequest, codeInvalidRequest)
	}
	allowed := newEnv(t, Config{SourceAllowPrivate: true})
	for _, u := range private {
		allowed.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"x","source_url":"`+u+`"}`).wantStatus(t, http.StatusCreated)
	}
}
