package playerapi

import (
	"bytes"
	"encoding/json"
	"errors"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
	"github.com/shoal-video/shoal/transcode/vod"
)

const (
	testAdminKey  = "admin-key-for-tests-0123456789"
	testPublicURL = "http://shoal.test:8080"
	testRTMPURL   = "rtmp://shoal.test:1935/live"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	code := m.Run()
	s3test.StopShared()
	os.Exit(code)
}

// fakeStatus stands in for the media pipeline (the hub, ingest and the
// packager, tested with real publishers in internal/app): the test controls
// its live set and sees what was removed.
type fakeStatus struct {
	mu       sync.Mutex
	live     map[string]bool
	removed  []string
	problems map[string]string
}

func (f *fakeStatus) Remove(id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.removed = append(f.removed, id)
	delete(f.live, id)
	return nil
}

func (f *fakeStatus) Pull(string) (PullState, bool) { return PullState{}, false }

func (f *fakeStatus) Restreams(string) map[string]RestreamState { return nil }

func (f *fakeStatus) RefreshRestreams(string) {}

func (f *fakeStatus) Disconnect(string) {}

func (f *fakeStatus) Problem(id string) string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.problems[id]
}

func (f *fakeStatus) removedIDs() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.removed...)
}

func (f *fakeStatus) IsLive(id string) bool {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.live[id]
}

func (f *fakeStatus) set(id string, live bool) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.live == nil {
		f.live = map[string]bool{}
	}
	f.live[id] = live
}

// env is an API on a private Redis, mounted on a Gin engine the way the
// lead's engine does it (JSON 404 for unknown routes).
type env struct {
	h      http.Handler
	redis  *redistest.Server
	store  *routing.Store
	status *fakeStatus
	logs   *testutil.Buffer
	files  vod.Files
	a      *API
}

func (e *env) api() *API { return e.a }

func newEnv(t testing.TB, cfg Config) *env {
	t.Helper()
	return newEnvOn(t, cfg, redistest.Start(t))
}

// newEnvOn is newEnv on the Redis srv, which other envs may share (as the
// nodes of one deployment do).
func newEnvOn(t testing.TB, cfg Config, srv *redistest.Server) *env {
	t.Helper()
	store, err := routing.NewStore(srv.URL)
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	t.Cleanup(func() { _ = store.Close() })
	if cfg.AdminKey == "" {
		cfg.AdminKey = testAdminKey
	}
	if cfg.PublicURL == "" {
		cfg.PublicURL = testPublicURL
	}
	if cfg.RTMPURL == "" {
		cfg.RTMPURL = testRTMPURL
	}
	data := t.TempDir()
	e := &env{redis: srv, store: store, status: &fakeStatus{}, logs: &testutil.Buffer{}}
	log := slog.New(slog.NewTextHandler(e.logs, nil))
	if cfg.UploadDir == "" {
		cfg.UploadDir = filepath.Join(data, "uploads")
	}
	switch files := cfg.Videos.(type) {
	case vod.Files:
		e.files = files
	case nil:
		e.files = testFiles(t, data)
		cfg.Videos = e.files
	}
	api, err := New(cfg, store, e.status, log)
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := gin.New()
	r.NoRoute(func(c *gin.Context) { WriteError(c, http.StatusNotFound, "not_found", "no such route") })
	api.Register(r)
	e.h, e.a = r, api
	return e
}

type response struct {
	status int
	header http.Header
	body   []byte
}

// do sends one request; key "" sends no Authorization header.
func (e *env) do(t testing.TB, method, target, key string, body io.Reader) response {
	t.Helper()
	req := httptest.NewRequest(method, target, body)
	if key != "" {
		req.Header.Set("Authorization", "Bearer "+key)
	}
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func (e *env) doJSON(t testing.TB, method, target, key, body string) response {
	t.Helper()
	var r io.Reader
	if body != "" {
		r = strings.NewReader(body)
	}
	return e.do(t, method, target, key, r)
}

// wantStatus fails unless r has the status.
func (r response) wantStatus(t testing.TB, status int) response {
	t.Helper()
	if r.status != status {
		t.Fatalf("status %d, want %d; body %s", r.status, status, r.body)
	}
	return r
}

// wantError checks a JSON error answer.
func (r response) wantError(t testing.TB, status int, code string) errorDetail {
	t.Helper()
	r.wantStatus(t, status)
	return checkErrorBody(t, r.header, r.body, code)
}

func checkErrorBody(t testing.TB, h http.Header, body []byte, code string) errorDetail {
	t.Helper()
	if ct := h.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q, want JSON", ct)
	}
	var eb struct {
		Error *errorDetail `json:"error"`
	}
	dec := json.NewDecoder(bytes.NewReader(body))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&eb); err != nil || eb.Error == nil {
		t.Fatalf("error body %s is not {\"error\":{...}}: %v", body, err)
	}
	if eb.Error.Code != code || eb.Error.Message == "" {
		t.Fatalf("error %+v, want code %q and a message", *eb.Error, code)
	}
	return *eb.Error
}

func decode[T any](t testing.TB, r response) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(r.body, &v); err != nil {
		t.Fatalf("decode %s: %v", r.body, err)
	}
	return v
}

func TestLiveStreamCreatedWithoutP2P(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	off := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"quiet","p2p":false}`).wantStatus(t, http.StatusCreated))
	if got := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+off.ID, testAdminKey, "").wantStatus(t, http.StatusOK)); off.P2P || got.P2P {
		t.Errorf(`created with "p2p": false: %+v, then %+v`, off, got)
	}
	e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"x","p2p":0}`).wantError(t, http.StatusBadRequest, codeInvalidRequest)
}

func TestLiveStreamCRUD(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})

	r := e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"  My show  "}`).wantStatus(t, http.StatusCreated)
	// Check the exact JSON field set of the contract.
	var raw map[string]json.RawMessage
	if err := json.Unmarshal(r.body, &raw); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"id", "name", "stream_key", "status", "created_at", "playback_policy", "p2p", "ingest", "playback"} {
		if _, ok := raw[f]; !ok {
			t.Errorf("response lacks %q: %s", f, r.body)
		}
	}
	ls := decode[liveStreamJSON](t, r)
	if !ids.Valid(ls.ID) || ls.Name != "My show" || ls.Status != "idle" || ls.PlaybackPolicy != "public" || !ls.P2P {
		t.Errorf("created %+v", ls)
	}
	if !ids.LooksLikeSecret("sk", ls.StreamKey) || ls.Ingest.StreamKey != ls.StreamKey {
		t.Errorf("stream keys %q / %q", ls.StreamKey, ls.Ingest.StreamKey)
	}
	if ls.Ingest.RTMPURL != testRTMPURL {
		t.Errorf("rtmp_url %q, want %q", ls.Ingest.RTMPURL, testRTMPURL)
	}
	if want := testPublicURL + "/hls/" + ls.ID + "/master.m3u8"; ls.Playback.HLSURL != want {
		t.Errorf("hls_url %q, want %q", ls.Playback.HLSURL, want)
	}
	if time.Since(ls.CreatedAt) > time.Minute || time.Until(ls.CreatedAt) > time.Minute {
		t.Errorf("created_at %v is not now", ls.CreatedAt)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}

	// GET returns the same but the stream key (shown once, when made),
	// and reflects the live status.
	r = e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantStatus(t, http.StatusOK)
	got := decode[liveStreamJSON](t, r)
	if !got.CreatedAt.Equal(ls.CreatedAt) {
		t.Errorf("created_at changed: %v -> %v", ls.CreatedAt, got.CreatedAt)
	}
	got.CreatedAt = ls.CreatedAt
	want := ls
	want.StreamKey, want.Ingest.StreamKey = "", ""
	if got.P2PStats == nil || *got.P2PStats != (p2pStatsJSON{}) {
		t.Errorf("GET p2p_stats = %+v, want zeros", got.P2PStats)
	}
	got.P2PStats = nil
	if got != want {
		t.Errorf("GET = %+v, want %+v", got, want)
	}
	if strings.Contains(string(r.body), "stream_key") || strings.Contains(string(r.body), ls.StreamKey) {
		t.Errorf("GET shows the stream key: %s", r.body)
	}
	e.status.set(ls.ID, true)
	if got := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "")); got.Status != "live" {
		t.Errorf("status %q while live, want live", got.Status)
	}
	e.status.set(ls.ID, false)

	// A second stream; the list is newest first.
	waitClockPast(ls.CreatedAt)
	ls2 := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"second"}`).wantStatus(t, http.StatusCreated))
	list := decode[liveStreamListJSON](t, e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, "").wantStatus(t, http.StatusOK))
	if len(list.Data) != 2 || list.Data[0].ID != ls2.ID || list.Data[1].ID != ls.ID {
		t.Errorf("list %+v, want [%s %s]", list.Data, ls2.ID, ls.ID)
	}
	if raw := e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, "").body; strings.Contains(string(raw), "stream_key") {
		t.Errorf("the list shows stream keys: %s", raw)
	}

	// PATCH turns P2P off (and on), alone.
	if upd := decode[liveStreamJSON](t, e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"p2p":false}`).wantStatus(t, http.StatusOK)); upd.P2P || upd.Name != "My show" {
		t.Errorf("PATCH p2p false: %+v", upd)
	}
	if upd := decode[liveStreamJSON](t, e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"p2p":true}`).wantStatus(t, http.StatusOK)); !upd.P2P {
		t.Errorf("PATCH p2p true: %+v", upd)
	}

	// PATCH renames.
	upd := decode[liveStreamJSON](t, e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"name":"renamed"}`).wantStatus(t, http.StatusOK))
	if upd.Name != "renamed" || upd.ID != ls.ID || upd.StreamKey != "" || upd.Ingest.StreamKey != "" {
		t.Errorf("PATCH = %+v", upd)
	}
	if got := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "")); got.Name != "renamed" {
		t.Errorf("name after PATCH %q", got.Name)
	}

	// DELETE, then it is gone.
	r = e.doJSON(t, "DELETE", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	if len(r.body) != 0 {
		t.Errorf("DELETE body %q, want empty", r.body)
	}
	if got := e.status.removedIDs(); len(got) != 1 || got[0] != ls.ID {
		t.Errorf("pipeline removals %v, want [%s]", got, ls.ID)
	}
	e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	e.doJSON(t, "DELETE", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"name":"x"}`).wantError(t, http.StatusNotFound, "not_found")
	e.doJSON(t, "POST", "/v1/live-streams/"+ls.ID+"/reset-stream-key", testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	if _, err := e.store.LiveStreamIDByKey(t.Context(), ls.StreamKey); !errors.Is(err, routing.ErrNotFound) {
		t.Errorf("deleted stream's key still resolves: %v", err)
	}
	list = decode[liveStreamListJSON](t, e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, ""))
	if len(list.Data) != 1 || list.Data[0].ID != ls2.ID {
		t.Errorf("list after delete %+v", list.Data)
	}
}

func TestEmptyListIsArray(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	r := e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, "").wantStatus(t, http.StatusOK)
	if got := strings.TrimSpace(string(r.body)); got != `{"data":[]}` {
		t.Errorf("empty list %s, want {\"data\":[]}", got)
	}
}

func TestUnauthorized(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	well := ids.NewSecret("shoal") // well formed, never issued
	cases := map[string]string{
		"no header":       "",
		"basic":           "Basic " + testAdminKey,
		"bearer no token": "Bearer ",
		"wrong key":       "Bearer wrong",
		"admin key+1":     "Bearer " + testAdminKey + "x",
		"unissued key":    "Bearer " + well,
		"two tokens":      "Bearer " + testAdminKey + " extra",
	}
	for name, h := range cases {
		for _, rt := range [][2]string{{"GET", "/v1/live-streams"}, {"POST", "/v1/live-streams"}, {"POST", "/v1/api-keys"}, {"DELETE", "/v1/live-streams/abc"}} {
			req := httptest.NewRequest(rt[0], rt[1], strings.NewReader(`{"name":"x"}`))
			if h != "" {
				req.Header.Set("Authorization", h)
			}
			rec := httptest.NewRecorder()
			e.h.ServeHTTP(rec, req)
			if rec.Code != http.StatusUnauthorized {
				t.Errorf("%s %s with %s: status %d, want 401", rt[0], rt[1], name, rec.Code)
				continue
			}
			checkErrorBody(t, rec.Header(), rec.Body.Bytes(), "unauthorized")
			if rec.Header().Get("WWW-Authenticate") == "" {
				t.Errorf("%s: 401 without WWW-Authenticate", name)
			}
		}
	}
	// Nothing was created by the refused requests.
	if list, _ := e.store.ListLiveStreams(t.Context()); len(list) != 0 {
		t.Errorf("refused requests created %d streams", len(list))
	}
	// The scheme is case-insensitive.
	req := httptest.NewRequest("GET", "/v1/live-streams", nil)
	req.Header.Set("Authorization", "bearer "+testAdminKey)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusOK {
		t.Errorf("lowercase bearer: %d", rec.Code)
	}
}

func TestIssuedAPIKeyWorks(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	r := e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, `{"name":"ci"}`).wantStatus(t, http.StatusCreated)
	k := decode[apiKeyJSON](t, r)
	if !ids.Valid(k.ID) || k.Name != "ci" || !ids.LooksLikeSecret("shoal", k.Key) || k.CreatedAt.IsZero() {
		t.Fatalf("issued %+v", k)
	}
	if cc := r.header.Get("Cache-Control"); cc != "no-store" {
		t.Errorf("Cache-Control %q, want no-store", cc)
	}
	// Without "scopes" the key has every scope but admin.
	if strings.Join(k.Scopes, ",") != "streams,videos,playback-tokens" {
		t.Errorf("default scopes %q", k.Scopes)
	}
	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", k.Key, `{"name":"by key"}`).wantStatus(t, http.StatusCreated))
	e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, k.Key, "").wantStatus(t, http.StatusOK)
	e.doJSON(t, "POST", "/v1/api-keys", k.Key, `{"name":"second"}`).wantError(t, http.StatusForbidden, "forbidden")
	k2 := decode[apiKeyJSON](t, e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, `{"name":"second"}`).wantStatus(t, http.StatusCreated))
	if k2.Key == k.Key || k2.ID == k.ID {
		t.Errorf("second key repeats the first")
	}
	e.doJSON(t, "GET", "/v1/live-streams", k2.Key, "").wantStatus(t, http.StatusOK)
	// A near miss is refused.
	miss := k.Key[:len(k.Key)-1] + "a"
	if miss == k.Key {
		miss = k.Key[:len(k.Key)-1] + "b"
	}
	e.doJSON(t, "GET", "/v1/live-streams", miss, "").wantError(t, http.StatusUnauthorized, "unauthorized")
	e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, `{"name":""}`).wantError(t, http.StatusBadRequest, "invalid_request")
	e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, `{"name":"x","scopes":[]}`).wantError(t, http.StatusBadRequest, "invalid_request")
}

func TestResetStreamKey(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"s"}`).wantStatus(t, http.StatusCreated))
	r := e.doJSON(t, "POST", "/v1/live-streams/"+ls.ID+"/reset-stream-key", testAdminKey, "").wantStatus(t, http.StatusOK)
	reset := decode[liveStreamJSON](t, r)
	if reset.ID != ls.ID || reset.StreamKey == ls.StreamKey || reset.Ingest.StreamKey != reset.StreamKey || !ids.LooksLikeSecret("sk", reset.StreamKey) {
		t.Fatalf("reset %+v (old key %q)", reset, ls.StreamKey)
	}
	if _, err := e.store.LiveStreamIDByKey(t.Context(), ls.StreamKey); !errors.Is(err, routing.ErrNotFound) {
		t.Errorf("old key lookup: %v, want ErrNotFound", err)
	}
	if id, err := e.store.LiveStreamIDByKey(t.Context(), reset.StreamKey); err != nil || id != ls.ID {
		t.Errorf("new key lookup = %q, %v", id, err)
	}
	if got := e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "").body; strings.Contains(string(got), "stream_key") || strings.Contains(string(got), reset.StreamKey) {
		t.Errorf("GET after a reset shows the key: %s", got)
	}
}

// invalidIDPaths are live stream paths whose id is not valid.
var invalidIDPaths = []string{"..", "a%2Fb", "A", "%2e%2e", "abc.def", "a%00", "a%20b", strings.Repeat("a", 65), "%C3%A9"}

func TestInvalidIDsAreNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	check := func() {
		t.Helper()
		for _, id := range invalidIDPaths {
			base := "/v1/live-streams/" + id
			for _, rt := range [][2]string{{"GET", base}, {"PATCH", base}, {"DELETE", base}, {"POST", base + "/reset-stream-key"}} {
				e.doJSON(t, rt[0], rt[1], testAdminKey, `{"name":"x"}`).wantError(t, http.StatusNotFound, "not_found")
			}
		}
	}
	check()
	// With Redis dead they are still 404, not 503: they never reach Redis.
	e.redis.Kill()
	check()
	if strings.Contains(e.logs.String(), "ERROR") {
		t.Errorf("invalid ids caused server errors:\n%s", e.logs)
	}
}

func TestUnknownValidIDIsNotFound(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	d := e.doJSON(t, "GET", "/v1/live-streams/"+ids.New(), testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	if d.Message != "live stream not found" {
		t.Errorf("message %q", d.Message)
	}
}

func TestBodyTooLarge(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	big := `{"name":"` + strings.Repeat("a", DefaultMaxBodyBytes) + `"}`
	e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, big).wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
	// Also without a Content-Length (chunked upload).
	req := httptest.NewRequest("POST", "/v1/live-streams", io.MultiReader(strings.NewReader(big)))
	req.ContentLength = -1
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusRequestEntityTooLarge {
		t.Fatalf("chunked: status %d", rec.Code)
	}
	checkErrorBody(t, rec.Header(), rec.Body.Bytes(), "payload_too_large")

	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"ok"}`).wantStatus(t, http.StatusCreated))
	e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, big).wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
	e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, big).wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")

	// A configured limit applies; a body at the limit is fine.
	small := newEnv(t, Config{MaxBodyBytes: 64})
	body := `{"name":"` + strings.Repeat("b", 64-len(`{"name":""}`)) + `"}`
	small.doJSON(t, "POST", "/v1/live-streams", testAdminKey, body).wantStatus(t, http.StatusCreated)
	small.doJSON(t, "POST", "/v1/live-streams", testAdminKey, body+" ").wantError(t, http.StatusRequestEntityTooLarge, "payload_too_large")
}

func TestBadRequests(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"target"}`).wantStatus(t, http.StatusCreated))
	bad := map[string]string{
		"unknown field":     `{"name":"a","extra":1}`,
		"only unknown":      `{"title":"a"}`,
		"wrong type":        `{"name":5}`,
		"wrong type bool":   `{"name":true}`,
		"wrong type object": `{"name":{}}`,
		"null name":         `{"name":null}`,
		"missing name":      `{}`,
		"empty name":        `{"name":""}`,
		"blank name":        `{"name":"   "}`,
		"control char":      `{"name":"a\u0000b"}`,
		"too long":          `{"name":"` + strings.Repeat("x", 201) + `"}`,
		"array":             `[]`,
		"string":            `"name"`,
		"null":              `null`,
		"empty body":        ``,
		"syntax":            `{"name":`,
		"garbage":           `name=x`,
		"trailing":          `{"name":"a"} x`,
		"two objects":       `{"name":"a"}{"name":"b"}`,
		"trailing brace":    `{"name":"a"}}`,
	}
	for name, body := range bad {
		for _, rt := range [][2]string{{"POST", "/v1/live-streams"}, {"PATCH", "/v1/live-streams/" + ls.ID}} {
			r := e.do(t, rt[0], rt[1], testAdminKey, strings.NewReader(body))
			if r.status != http.StatusBadRequest {
				t.Errorf("%s %s with %s: status %d, want 400; body %s", rt[0], rt[1], name, r.status, r.body)
				continue
			}
			checkErrorBody(t, r.header, r.body, "invalid_request")
		}
	}
	// Nothing changed.
	list := decode[liveStreamListJSON](t, e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, ""))
	if len(list.Data) != 1 || list.Data[0].Name != "target" {
		t.Errorf("bad requests changed state: %+v", list.Data)
	}
	// Messages say what is wrong.
	d := e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"a","extra":1}`).wantError(t, http.StatusBadRequest, "invalid_request")
	if !strings.Contains(d.Message, `unknown field "extra"`) {
		t.Errorf("unknown field message %q", d.Message)
	}
	d = e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":5}`).wantError(t, http.StatusBadRequest, "invalid_request")
	if !strings.Contains(d.Message, `"name" must be a string`) {
		t.Errorf("wrong type message %q", d.Message)
	}
	// A long unknown field name is not echoed in full.
	d = e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"`+strings.Repeat("z", 5000)+`":1}`).wantError(t, http.StatusBadRequest, "invalid_request")
	if len(d.Message) > 300 {
		t.Errorf("message of %d bytes echoes the input", len(d.Message))
	}

	// Limits are in characters: 200 multi-byte characters are fine.
	long := strings.Repeat("é", 200)
	got := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"`+long+`"}`).wantStatus(t, http.StatusCreated))
	if got.Name != long {
		t.Errorf("name %q", got.Name)
	}
}

func TestRedisDown(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	key := decode[apiKeyJSON](t, e.doJSON(t, "POST", "/v1/api-keys", testAdminKey, `{"name":"k"}`).wantStatus(t, http.StatusCreated)).Key
	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"s"}`).wantStatus(t, http.StatusCreated))

	e.redis.Kill()
	requests := [][3]string{
		{"POST", "/v1/live-streams", `{"name":"x"}`},
		{"GET", "/v1/live-streams", ""},
		{"GET", "/v1/live-streams/" + ls.ID, ""},
		{"PATCH", "/v1/live-streams/" + ls.ID, `{"name":"y"}`},
		{"DELETE", "/v1/live-streams/" + ls.ID, ""},
		{"POST", "/v1/live-streams/" + ls.ID + "/reset-stream-key", ""},
		{"POST", "/v1/api-keys", `{"name":"z"}`},
	}
	fails := 0
	for _, rq := range requests {
		// The admin key still authenticates, so the answer is 503, not 401.
		r := e.doJSON(t, rq[0], rq[1], testAdminKey, rq[2])
		d := r.wantError(t, http.StatusServiceUnavailable, "unavailable")
		fails++
		if d.Message != "state store (Redis) is unreachable; retry shortly" {
			t.Errorf("message %q", d.Message)
		}
		if r.header.Get("Retry-After") == "" {
			t.Errorf("503 without Retry-After")
		}
	}
	// An issued key cannot be checked: 503, not 401.
	e.doJSON(t, "GET", "/v1/live-streams", key, "").wantError(t, http.StatusServiceUnavailable, "unavailable")
	e.doJSON(t, "GET", "/v1/live-streams", ids.NewSecret("shoal"), "").wantError(t, http.StatusServiceUnavailable, "unavailable")
	fails += 2
	// Requests that need no Redis are answered as usual.
	e.doJSON(t, "GET", "/v1/live-streams", "", "").wantError(t, http.StatusUnauthorized, "unauthorized")
	e.doJSON(t, "GET", "/v1/live-streams", "not-a-key", "").wantError(t, http.StatusUnauthorized, "unauthorized")
	e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"bad":1}`).wantError(t, http.StatusBadRequest, "invalid_request")

	// Each 5xx is logged exactly once, without secrets.
	logs := e.logs.String()
	if n := strings.Count(logs, "level=ERROR"); n != fails {
		t.Errorf("%d error records for %d failed requests:\n%s", n, fails, logs)
	}
	for _, secret := range []string{testAdminKey, key, ls.StreamKey} {
		if strings.Contains(logs, secret) {
			t.Errorf("logs contain a secret:\n%s", logs)
		}
	}

	e.redis.Restart(t)
	// The restarted Redis is empty; requests succeed again once the store
	// has reconnected (about a second).
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		r := e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, "")
		if r.status == http.StatusOK {
			break
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("still %d after Redis restarted: %s", r.status, r.body)
		}
	}
	e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"again"}`).wantStatus(t, http.StatusCreated)
}

func TestUnknownRoutesUnderV1(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	e.doJSON(t, "GET", "/v1/nope", testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
	e.doJSON(t, "PUT", "/v1/live-streams", testAdminKey, "").wantError(t, http.StatusNotFound, "not_found")
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	good := Config{AdminKey: testAdminKey, PublicURL: testPublicURL, RTMPURL: testRTMPURL,
		UploadDir: t.TempDir(), Videos: testFiles(t, t.TempDir())}
	store, err := routing.NewStore("redis://127.0.0.1:1/0")
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	status := &fakeStatus{}

	api, err := New(good, store, status, nil)
	if err != nil {
		t.Fatalf("New(good): %v", err)
	}
	if api.maxBody != DefaultMaxBodyBytes {
		t.Errorf("default max body %d", api.maxBody)
	}
	withSlash := good
	withSlash.PublicURL = "https://cdn.example.com/shoal/"
	if api, err := New(withSlash, store, status, nil); err != nil || api.publicURL != "https://cdn.example.com/shoal" {
		t.Errorf("trailing slash: %v, %q", err, api.publicURL)
	}

	bad := map[string]func(*Config){
		"no admin key":        func(c *Config) { c.AdminKey = "" },
		"short admin key":     func(c *Config) { c.AdminKey = "short" },
		"admin key space":     func(c *Config) { c.AdminKey = "a very long admin key with spaces" },
		"admin key non-ascii": func(c *Config) { c.AdminKey = "ééééééééééééééééé" },
		"no public url":       func(c *Config) { c.PublicURL = "" },
		"public url scheme":   func(c *Config) { c.PublicURL = "ftp://x" },
		"public url no host":  func(c *Config) { c.PublicURL = "http://" },
		"public url relative": func(c *Config) { c.PublicURL = "localhost:8080" },
		"public url query":    func(c *Config) { c.PublicURL = "http://x/?a=b" },
		"no rtmp url":         func(c *Config) { c.RTMPURL = "" },
		"rtmp url scheme":     func(c *Config) { c.RTMPURL = "http://x/live" },
		"negative body":       func(c *Config) { c.MaxBodyBytes = -1 },
	}
	for name, mutate := range bad {
		cfg := good
		mutate(&cfg)
		if _, err := New(cfg, store, status, nil); err == nil {
			t.Errorf("%s: New succeeded", name)
		} else if strings.Contains(err.Error(), testAdminKey) {
			t.Errorf("%s: error leaks the admin key: %v", name, err)
		}
	}
	if _, err := New(good, nil, status, nil); err == nil {
		t.Errorf("nil store accepted")
	}
	if _, err := New(good, store, nil, nil); err == nil {
		t.Errorf("nil status accepted")
	}
	// Every problem is reported at once.
	_, err = New(Config{MaxBodyBytes: -1}, nil, nil, nil)
	for _, want := range []string{"AdminKey", "PublicURL", "RTMPURL", "MaxBodyBytes", "Store", "Live pipeline"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v does not mention %s", err, want)
		}
	}
}

func TestLiveStreamLadder(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	r := e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"abr","ladder":"360p:0.7M, 720p:3000k"}`).wantStatus(t, http.StatusCreated)
	ls := decode[liveStreamJSON](t, r)
	if ls.Ladder != "720p:3000k,360p:700k" {
		t.Fatalf("ladder %q, want it normalized to 720p:3000k,360p:700k", ls.Ladder)
	}
	e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"bad","ladder":"721p:1M"}`).wantError(t, http.StatusBadRequest, "invalid_request")
	e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"bad","ladder":720}`).wantError(t, http.StatusBadRequest, "invalid_request")
	e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{}`).wantError(t, http.StatusBadRequest, "invalid_request")
	r = e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"ladder":""}`).wantStatus(t, http.StatusOK)
	if got := decode[liveStreamJSON](t, r); got.Ladder != "" || got.Name != "abr" {
		t.Fatalf("after clearing the ladder: %+v", got)
	}
	if strings.Contains(string(r.body), `"ladder"`) {
		t.Fatalf("a stream on the node's ladder shows a ladder: %s", r.body)
	}
	r = e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"ladder":"480p:1200k"}`).wantStatus(t, http.StatusOK)
	if got := decode[liveStreamJSON](t, r); got.Ladder != "480p:1200k" {
		t.Fatalf("ladder after PATCH %q", got.Ladder)
	}
}

func TestLiveStreamShowsAProblem(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"p"}`).wantStatus(t, http.StatusCreated))
	if ls.Error != "" {
		t.Fatalf("new stream has an error: %q", ls.Error)
	}
	e.status.mu.Lock()
	e.status.problems = map[string]string{ls.ID: "transcoding failed"}
	e.status.mu.Unlock()
	got := decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantStatus(t, http.StatusOK))
	if got.Error != "transcoding failed" {
		t.Fatalf("error %q", got.Error)
	}
}

// TestIngestURLsWithKeyOnlyWhenMade: the RTSP and SRT URLs embed the stream
// key, so they are in the create and reset answers only; GET, the list and
// PATCH give the RTMP server and the WHIP endpoint, which do not.
func TestIngestURLsWithKeyOnlyWhenMade(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{RTSPURL: "rtsp://shoal.test:8554/live", SRTURL: "srt://shoal.test:9000"})
	ls := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams", testAdminKey, `{"name":"s"}`).wantStatus(t, http.StatusCreated))
	if ls.Ingest.RTSPURL != "rtsp://shoal.test:8554/live/"+ls.StreamKey || ls.Ingest.SRTURL != "srt://shoal.test:9000?streamid=publish:"+ls.StreamKey {
		t.Errorf("create answer ingest %+v", ls.Ingest)
	}
	reset := decode[liveStreamJSON](t, e.doJSON(t, "POST", "/v1/live-streams/"+ls.ID+"/reset-stream-key", testAdminKey, "").wantStatus(t, http.StatusOK))
	if reset.Ingest.RTSPURL != "rtsp://shoal.test:8554/live/"+reset.StreamKey || reset.Ingest.SRTURL != "srt://shoal.test:9000?streamid=publish:"+reset.StreamKey {
		t.Errorf("reset answer ingest %+v", reset.Ingest)
	}
	for _, r := range []response{
		e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantStatus(t, http.StatusOK),
		e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, "").wantStatus(t, http.StatusOK),
		e.doJSON(t, "PATCH", "/v1/live-streams/"+ls.ID, testAdminKey, `{"name":"t"}`).wantStatus(t, http.StatusOK),
	} {
		body := string(r.body)
		for _, leak := range []string{"stream_key", "rtsp_url", "srt_url", reset.StreamKey} {
			if strings.Contains(body, leak) {
				t.Errorf("answer has %q: %s", leak, body)
			}
		}
		if !strings.Contains(body, `"rtmp_url":"`+testRTMPURL+`"`) {
			t.Errorf("answer lacks the RTMP server: %s", body)
		}
	}
}

// testFiles are the video files of a node with its data dir at data.
func testFiles(t testing.TB, data string) vod.Files {
	t.Helper()
	media, err := fsstore.New(data)
	if err != nil {
		t.Fatal(err)
	}
	return vod.Files{Store: media, RecordDir: filepath.Join(data, "videos"), WorkDir: filepath.Join(data, "work")}
}

// sourcePath is the file of video id's source in files (on local disk).
func sourcePath(files vod.Files, id string) string {
	p, _ := storage.LocalPath(files.Store, vod.SourceKey(id))
	return p
}
