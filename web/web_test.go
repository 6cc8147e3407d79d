package web

import (
	"context"
	"encoding/json"
	"fmt"
	"html"
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"reflect"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/playsession"
	"github.com/shoal-video/shoal/internal/routing"
)

func TestMain(m *testing.M) {
	gin.SetMode(gin.TestMode)
	os.Exit(m.Run())
}

const testPublicURL = "http://shoal.test:8080"

// fakeStore is an in-memory Store for the page tests that need no browser
// (the browser tests use Redis and the real API).
type fakeStore struct {
	mu     sync.Mutex
	lives  map[string]routing.LiveStream
	videos map[string]routing.Video
	err    error
}

func (f *fakeStore) GetLiveStream(_ context.Context, id string) (routing.LiveStream, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return routing.LiveStream{}, f.err
	}
	ls, ok := f.lives[id]
	if !ok {
		return routing.LiveStream{}, routing.ErrNotFound
	}
	return ls, nil
}

func (f *fakeStore) GetVideo(_ context.Context, id string) (routing.Video, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return routing.Video{}, f.err
	}
	v, ok := f.videos[id]
	if !ok {
		return routing.Video{}, routing.ErrNotFound
	}
	return v, nil
}

type unitEnv struct {
	store *fakeStore
	live  map[string]bool
	h     http.Handler
	w     *Web
}

func newUnitEnv(t *testing.T) *unitEnv {
	t.Helper()
	e := &unitEnv{
		store: &fakeStore{lives: map[string]routing.LiveStream{}, videos: map[string]routing.Video{}},
		live:  map[string]bool{},
	}
	var mu sync.Mutex
	w, err := New(Config{PublicURL: testPublicURL + "/"}, Deps{Store: e.store, IsLive: func(id string) bool {
		mu.Lock()
		defer mu.Unlock()
		return e.live[id]
	}})
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	r := gin.New()
	r.NoRoute(func(c *gin.Context) { c.JSON(http.StatusNotFound, gin.H{"error": "no route"}) })
	w.Register(r)
	e.h, e.w = r, w
	now := time.Now()
	e.store.lives["live1"] = routing.LiveStream{ID: "live1", Name: "Friday show", PlaybackPolicy: "public", CreatedAt: now}
	e.store.lives["live2"] = routing.LiveStream{ID: "live2", Name: "Members only", PlaybackPolicy: "signed", CreatedAt: now}
	e.store.videos["vid1"] = routing.Video{ID: "vid1", Title: "Holiday", Status: "ready", Progress: 100, PlaybackPolicy: "public",
		Duration: 8 * time.Second, Poster: true, Storyboard: true, CreatedAt: now,
		Renditions: []routing.VideoRendition{{Name: "240p", Width: 426, Height: 240}, {Name: "1080p", Width: 1920, Height: 1080}}}
	e.store.videos["vid2"] = routing.Video{ID: "vid2", Title: "Secret", Status: "ready", PlaybackPolicy: "signed", Poster: true, CreatedAt: now,
		Renditions: []routing.VideoRendition{{Name: "360p", Width: 640, Height: 360}}}
	e.store.videos["vid3"] = routing.Video{ID: "vid3", Title: "Broken", Status: "failed", PlaybackPolicy: "public",
		Error: "not a video file: the format is not recognised", CreatedAt: now}
	e.store.videos["vid4"] = routing.Video{ID: "vid4", Title: "Cooking", Status: "processing", Progress: 42, PlaybackPolicy: "public", CreatedAt: now}
	e.store.videos["vid5"] = routing.Video{ID: "vid5", Title: `</script><script>alert("x")</script> & <b>`, Status: "ready", PlaybackPolicy: "public", CreatedAt: now}
	return e
}

type resp struct {
	status int
	header http.Header
	body   string
}

func (e *unitEnv) get(t *testing.T, target string, hdr ...string) resp {
	t.Helper()
	return e.do(t, http.MethodGet, target, hdr...)
}

func (e *unitEnv) do(t *testing.T, method, target string, hdr ...string) resp {
	t.Helper()
	req := httptest.NewRequest(method, target, nil)
	req.Host = "shoal.test:8080"
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return resp{status: rec.Code, header: rec.Header(), body: rec.Body.String()}
}

var stateRe = regexp.MustCompile(`(?s)<script id="shoal-state" type="application/json">(.*?)</script>`)

// pageState extracts and decodes the state JSON of a page.
func pageState(t *testing.T, body string) playerState {
	t.Helper()
	m := stateRe.FindStringSubmatch(body)
	if m == nil {
		t.Fatalf("no state script in the page:\n%s", body)
	}
	var st playerState
	if err := json.Unmarshal([]byte(m[1]), &st); err != nil {
		t.Fatalf("state is not JSON: %v\n%s", err, m[1])
	}
	return st
}

func metaContent(body, attr, name string) (string, bool) {
	re := regexp.MustCompile(`<meta ` + attr + `="` + regexp.QuoteMeta(name) + `" content="([^"]*)">`)
	m := re.FindStringSubmatch(body)
	if m == nil {
		return "", false
	}
	return html.UnescapeString(m[1]), true
}

func TestNewChecksConfig(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		cfg  Config
		deps Deps
		want string
	}{
		{Config{}, Deps{Store: &fakeStore{}}, "PublicURL is required"},
		{Config{PublicURL: "ftp://x"}, Deps{Store: &fakeStore{}}, "http:// or https://"},
		{Config{PublicURL: "http://x/?a=1"}, Deps{Store: &fakeStore{}}, "must not contain"},
		{Config{PublicURL: "http://x"}, Deps{}, "Store is required"},
	} {
		_, err := New(tc.cfg, tc.deps)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("New(%+v) = %v, want an error containing %q", tc.cfg, err, tc.want)
		}
	}
}

// TestPageStateP2P: the page state says whether the owner lets viewers
// share segments (P2P).
func TestPageStateP2P(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	e.store.mu.Lock()
	v := e.store.videos["vid1"]
	v.P2POff = true
	e.store.videos["vid1"] = v
	ls := e.store.lives["live1"]
	ls.P2POff = true
	e.store.lives["live1"] = ls
	e.store.mu.Unlock()
	for id, want := range map[string]bool{"vid1": false, "live1": false, "live2": true} {
		if st := pageState(t, e.get(t, "/watch/"+id).body); st.P2P != want {
			t.Errorf("%s: p2p %v, want %v", id, st.P2P, want)
		}
	}
	// The STUN servers go with P2P.
	e.w.stunServers = []string{"stun:stun.example.net:3478"}
	if st := pageState(t, e.get(t, "/watch/live2").body); len(st.STUNServers) != 1 || st.STUNServers[0] != "stun:stun.example.net:3478" {
		t.Errorf("live2: stun servers %v", st.STUNServers)
	}
	if st := pageState(t, e.get(t, "/watch/vid1").body); st.STUNServers != nil {
		t.Errorf("vid1 (P2P off): stun servers %v", st.STUNServers)
	}
}

func TestWatchPageOfReadyVideo(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	r := e.get(t, "/watch/vid1")
	if r.status != http.StatusOK || !strings.HasPrefix(r.header.Get("Content-Type"), "text/html") {
		t.Fatalf("GET /watch/vid1 = %d %s", r.status, r.header.Get("Content-Type"))
	}
	st := pageState(t, r.body)
	want := playerState{Page: "watch", ID: "vid1", Kind: "video", Title: "Holiday", Status: "ready", Progress: 100, Duration: 8,
		HLSURL: "/hls/vid1/master.m3u8", PosterURL: "/hls/vid1/poster.jpg", StoryboardURL: "/hls/vid1/storyboard.vtt",
		WatchURL: testPublicURL + "/watch/vid1", EmbedURL: testPublicURL + "/embed/vid1", Controls: true, P2P: true}
	if st.ServerTime < time.Now().Add(-time.Minute).UnixMilli() || st.ServerTime > time.Now().UnixMilli() {
		t.Errorf("server_time %d is not now", st.ServerTime)
	}
	st.ServerTime = 0
	if !reflect.DeepEqual(st, want) {
		t.Fatalf("state\n got %+v\nwant %+v", st, want)
	}
	// The player reaches the P2P tracker of an edge over ws(s).
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "connect-src 'self' http: https: ws: wss:;") {
		t.Errorf("watch page CSP %q", csp)
	}
	for _, tc := range []struct{ attr, name, want string }{
		{"property", "og:title", "Holiday"},
		{"property", "og:type", "video.other"},
		{"property", "og:url", testPublicURL + "/watch/vid1"},
		{"property", "og:image", testPublicURL + "/hls/vid1/poster.jpg"},
		{"property", "og:image:width", "1280"},
		{"property", "og:image:height", "720"},
		{"property", "og:video:url", testPublicURL + "/embed/vid1"},
		{"name", "twitter:card", "player"},
		{"name", "twitter:player", testPublicURL + "/embed/vid1"},
	} {
		if got, ok := metaContent(r.body, tc.attr, tc.name); !ok || got != tc.want {
			t.Errorf("meta %s = %q (found %v), want %q", tc.name, got, ok, tc.want)
		}
	}
	oembed := `<link rel="alternate" type="application/json+oembed" href="` +
		html.EscapeString(testPublicURL+"/oembed?format=json&url="+url.QueryEscape(testPublicURL+"/watch/vid1")) + `"`
	if !strings.Contains(r.body, oembed) {
		t.Errorf("no oEmbed discovery link %s in\n%s", oembed, r.body)
	}
	if !strings.Contains(r.body, `<title>Holiday · Shoal</title>`) || !strings.Contains(r.body, `poster="/hls/vid1/poster.jpg"`) {
		t.Errorf("title or poster missing:\n%s", r.body)
	}
	if got := r.header.Get("X-Frame-Options"); got != "SAMEORIGIN" {
		t.Errorf("watch page X-Frame-Options = %q", got)
	}
	if r.header.Get("Set-Cookie") != "" {
		t.Errorf("watch page sets a cookie")
	}
	// HEAD answers the same status without a body.
	if h := e.do(t, http.MethodHead, "/watch/vid1"); h.status != http.StatusOK || h.body != "" {
		t.Errorf("HEAD /watch/vid1 = %d, %d bytes", h.status, len(h.body))
	}
}

func TestTitlesAreEscaped(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	r := e.get(t, "/watch/vid5")
	if strings.Contains(r.body, `<script>alert`) || strings.Contains(r.body, "<b>") {
		t.Fatalf("the title was not escaped:\n%s", r.body)
	}
	if st := pageState(t, r.body); st.Title != e.store.videos["vid5"].Title {
		t.Fatalf("state title %q", st.Title)
	}
}

func TestEmbedPage(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	r := e.get(t, "/embed/vid1?autoplay=1&muted=1&controls=0")
	if r.status != http.StatusOK {
		t.Fatalf("status %d", r.status)
	}
	st := pageState(t, r.body)
	if st.Page != "embed" || !st.Autoplay || !st.Muted || st.Controls {
		t.Fatalf("embed state %+v", st)
	}
	if r.header.Get("X-Frame-Options") != "" {
		t.Errorf("embed page sends X-Frame-Options %q", r.header.Get("X-Frame-Options"))
	}
	if csp := r.header.Get("Content-Security-Policy"); !strings.Contains(csp, "frame-ancestors *") {
		t.Errorf("embed CSP %q lacks frame-ancestors *", csp)
	}
	if r.header.Get("Set-Cookie") != "" || strings.Contains(r.body, "topbar") {
		t.Errorf("embed page has a cookie or page chrome")
	}
	if !strings.Contains(r.body, `<meta name="robots" content="noindex">`) || !strings.Contains(r.body, ` muted>`) {
		t.Errorf("embed page lacks noindex or the muted attribute:\n%s", r.body)
	}
	if st := pageState(t, e.get(t, "/embed/vid1").body); st.Autoplay || st.Muted || !st.Controls {
		t.Fatalf("default embed state %+v", st)
	}
}

func TestUnknownIDsAre404Pages(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	for _, p := range []string{"/watch/nosuchvideo", "/watch/Bad-Id", "/embed/nosuchvideo", "/watch/" + strings.Repeat("a", 65)} {
		r := e.get(t, p)
		if r.status != http.StatusNotFound || !strings.Contains(r.body, "This video does not exist") {
			t.Errorf("GET %s = %d\n%s", p, r.status, r.body)
		}
		if strings.HasPrefix(p, "/embed/") && r.header.Get("X-Frame-Options") != "" {
			t.Errorf("embed 404 cannot be framed")
		}
	}
}

func TestStoreErrors(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	e.store.mu.Lock()
	e.store.err = fmt.Errorf("get: %w: dial tcp: refused", routing.ErrUnavailable)
	e.store.mu.Unlock()
	r := e.get(t, "/watch/vid1")
	if r.status != http.StatusServiceUnavailable || r.header.Get("Retry-After") == "" {
		t.Fatalf("unavailable store: %d %v", r.status, r.header)
	}
	if o := e.get(t, "/oembed?url="+url.QueryEscape(testPublicURL+"/watch/vid1")); o.status != http.StatusServiceUnavailable {
		t.Fatalf("oembed with an unavailable store: %d", o.status)
	}
	e.store.mu.Lock()
	e.store.err = fmt.Errorf("corrupt record")
	e.store.mu.Unlock()
	if r := e.get(t, "/watch/vid1"); r.status != http.StatusInternalServerError {
		t.Fatalf("broken store: %d", r.status)
	}
}

func TestStateMessages(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	for _, tc := range []struct {
		path, status, message string
		needsToken            bool
	}{
		{"/watch/live1", "idle", "This stream is offline", false},
		{"/watch/vid3", "failed", "not a video file: the format is not recognised", false},
		{"/watch/vid4", "processing", "This video is being processed", false},
		{"/watch/vid2", "ready", "This video needs a playback link with a token", true},
		{"/watch/live2", "idle", "This video needs a playback link with a token", true},
		{"/embed/vid2", "ready", "This video needs a playback link with a token", true},
	} {
		r := e.get(t, tc.path)
		st := pageState(t, r.body)
		if st.Status != tc.status || st.NeedsToken != tc.needsToken || !strings.Contains(r.body, tc.message) {
			t.Errorf("%s: status %q needs_token %v, want %q %v and the message %q:\n%s", tc.path, st.Status, st.NeedsToken, tc.status, tc.needsToken, tc.message, r.body)
		}
	}
	if r := e.get(t, "/watch/vid4"); !strings.Contains(r.body, `<progress max="100" value="42"`) {
		t.Errorf("processing page shows no progress:\n%s", r.body)
	}
	// A signed video with a token plays, and nothing about its media is
	// advertised to link previews.
	r := e.get(t, "/watch/vid2?token=abc.def")
	st := pageState(t, r.body)
	if st.NeedsToken || !st.Signed || !strings.Contains(r.body, `poster="/hls/vid2/poster.jpg?token=abc.def"`) {
		t.Errorf("signed video with a token: %+v\n%s", st, r.body)
	}
	if _, ok := metaContent(r.body, "property", "og:image"); ok {
		t.Errorf("signed video advertises its poster")
	}
	if r.header.Get("Referrer-Policy") != "same-origin" {
		t.Errorf("page with a token: Referrer-Policy %q", r.header.Get("Referrer-Policy"))
	}
	// A live stream that is live.
	e.live["live1"] = true
	if st := pageState(t, e.get(t, "/watch/live1").body); st.Status != "live" || st.Kind != "live" {
		t.Errorf("live stream state %+v", st)
	}
}

// TestRealtimeState: live streams' pages name their WHEP endpoint (the
// player's real-time mode), videos' do not; only the dashboard may use the
// camera, microphone and screen capture ("Go live" from the browser).
func TestRealtimeState(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	for _, tc := range []struct{ path, want string }{
		{"/watch/live1", "/v1/whep/live1"},
		{"/embed/live1", "/v1/whep/live1"},
		{"/watch/live2?token=abc.def", "/v1/whep/live2"},
		{"/watch/vid1", ""},
	} {
		if st := pageState(t, e.get(t, tc.path).body); st.WHEPURL != tc.want {
			t.Errorf("%s: whep_url %q, want %q", tc.path, st.WHEPURL, tc.want)
		}
	}
	for _, tc := range []struct {
		path  string
		allow bool
	}{{"/", true}, {"/watch/live1", false}, {"/embed/live1", false}, {"/watch/nosuch", false}} {
		pp := e.get(t, tc.path).header.Get("Permissions-Policy")
		for _, f := range []string{"camera", "microphone", "display-capture"} {
			want := f + "=()"
			if tc.allow {
				want = f + "=(self)"
			}
			if !strings.Contains(pp, want) {
				t.Errorf("%s: Permissions-Policy %q, want %s", tc.path, pp, want)
			}
		}
	}
}

func TestOEmbed(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	q := func(u string, extra string) string { return "/oembed?url=" + url.QueryEscape(u) + extra }
	for _, tc := range []struct {
		target        string
		status        int
		width, height int
		src           string
		thumb         bool
	}{
		{q(testPublicURL+"/watch/vid1", "&format=json"), 200, 640, 360, testPublicURL + "/embed/vid1", true},
		{q(testPublicURL+"/embed/vid1", ""), 200, 640, 360, testPublicURL + "/embed/vid1", true},
		{q(testPublicURL+"/watch/vid1", "&maxwidth=320"), 200, 320, 180, testPublicURL + "/embed/vid1", true},
		{q(testPublicURL+"/watch/vid1", "&maxwidth=1000&maxheight=180"), 200, 320, 180, testPublicURL + "/embed/vid1", true},
		{q(testPublicURL+"/watch/live1", ""), 200, 640, 360, testPublicURL + "/embed/live1", false},
		{q(testPublicURL+"/watch/vid2?token=t.k", ""), 200, 640, 360, testPublicURL + "/embed/vid2?token=t.k", false},
		{q("HTTP://SHOAL.TEST:8080/watch/vid1/", ""), 200, 640, 360, testPublicURL + "/embed/vid1", true},
		{q(testPublicURL+"/watch/nosuch", ""), 404, 0, 0, "", false},
		{q("http://elsewhere.example/watch/vid1", ""), 404, 0, 0, "", false},
		{q(testPublicURL+"/v1/videos/vid1", ""), 404, 0, 0, "", false},
		{q(testPublicURL+"/watch/vid1", "&format=xml"), 501, 0, 0, "", false},
		{q(testPublicURL+"/watch/vid1", "&maxwidth=-3"), 400, 0, 0, "", false},
		{"/oembed", 400, 0, 0, "", false},
	} {
		r := e.get(t, tc.target)
		if r.status != tc.status {
			t.Errorf("GET %s = %d, want %d: %s", tc.target, r.status, tc.status, r.body)
			continue
		}
		if r.status != 200 {
			continue
		}
		var o oembedJSON
		if err := json.Unmarshal([]byte(r.body), &o); err != nil {
			t.Fatalf("%s: %v", tc.target, err)
		}
		wantHTML := fmt.Sprintf(`<iframe src="%s" width="%d" height="%d"`, html.EscapeString(tc.src), tc.width, tc.height)
		if o.Version != "1.0" || o.Type != "video" || o.ProviderName != "Shoal" || o.ProviderURL != testPublicURL+"/" ||
			o.Width != tc.width || o.Height != tc.height || !strings.HasPrefix(o.HTML, wantHTML) || o.Title == "" {
			t.Errorf("GET %s = %+v, want html starting %s", tc.target, o, wantHTML)
		}
		if (o.ThumbnailURL != "") != tc.thumb || (tc.thumb && (o.ThumbnailWidth != 1280 || o.ThumbnailHeight != 720)) {
			t.Errorf("GET %s: thumbnail %q %dx%d, want one: %v", tc.target, o.ThumbnailURL, o.ThumbnailWidth, o.ThumbnailHeight, tc.thumb)
		}
	}
}

func TestAssets(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	page := e.get(t, "/").body
	refs := regexp.MustCompile(`(?:src|href)="(/assets/[^"]+)"`).FindAllStringSubmatch(page, -1)
	if len(refs) < 3 {
		t.Fatalf("the dashboard references %d assets:\n%s", len(refs), page)
	}
	for _, m := range refs {
		r := e.get(t, m[1])
		if r.status != 200 || r.header.Get("Cache-Control") != "public, max-age=31536000, immutable" || r.header.Get("ETag") == "" {
			t.Errorf("GET %s = %d %v", m[1], r.status, r.header)
		}
		if nm := e.get(t, m[1], "If-None-Match", r.header.Get("ETag")); nm.status != http.StatusNotModified {
			t.Errorf("GET %s with its ETag = %d", m[1], nm.status)
		}
	}
	js := e.get(t, "/assets/player.js", "Accept-Encoding", "gzip, br")
	if js.status != 200 || js.header.Get("Content-Encoding") != "gzip" || js.header.Get("Cache-Control") != "public, no-cache" ||
		!strings.HasPrefix(js.header.Get("Content-Type"), "text/javascript") {
		t.Errorf("GET /assets/player.js = %d %v", js.status, js.header)
	}
	plain := e.get(t, "/assets/player.js")
	if plain.header.Get("Content-Encoding") != "" || len(plain.body) <= len(js.body) {
		t.Errorf("uncompressed player.js: %v, %d bytes vs %d gzipped", plain.header, len(plain.body), len(js.body))
	}
	if r := e.get(t, "/assets/nosuch.js"); r.status != http.StatusNotFound {
		t.Errorf("unknown asset: %d", r.status)
	}
	if r := e.get(t, "/assets/../web.go"); r.status == http.StatusOK {
		t.Errorf("path escape served: %s", r.body)
	}
	for _, tc := range []struct {
		h    string
		want bool
	}{{"gzip", true}, {"br, gzip;q=0.5", true}, {"gzip;q=0", false}, {"gzip; q=0.000", false}, {"identity", false}, {"", false}, {"GZIP", true}} {
		if got := acceptsGzip(tc.h); got != tc.want {
			t.Errorf("acceptsGzip(%q) = %v", tc.h, got)
		}
	}
}

func TestDashboardPage(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	r := e.get(t, "/")
	if r.status != 200 || !strings.Contains(r.body, `id="signin-form"`) || !strings.Contains(r.body, `<label for="api-key">`) {
		t.Fatalf("GET / = %d\n%s", r.status, r.body)
	}
	csp := r.header.Get("Content-Security-Policy")
	if r.header.Get("X-Frame-Options") != "DENY" || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("dashboard can be framed: %v", r.header)
	}
	// It holds an API key: it talks to this node only.
	if !strings.Contains(csp, "connect-src 'self' "+testPublicURL+";") || strings.Contains(csp, "http:;") {
		t.Errorf("dashboard CSP %q", csp)
	}
	if h := e.do(t, http.MethodHead, "/"); h.status != 200 {
		t.Errorf("HEAD / = %d", h.status)
	}
}

// TestDistIsCommitted guards against a web/dist that lost files or grew
// too large (it is embedded in every binary).
func TestDistIsCommitted(t *testing.T) {
	t.Parallel()
	a, err := loadAssets(distFS)
	if err != nil {
		t.Fatal(err)
	}
	total := 0
	for _, as := range a.byName {
		total += len(as.body)
	}
	if total > 2<<20 {
		t.Errorf("web/dist is %d bytes; keep it under 2 MiB", total)
	}
	f, err := distFS.Open("dist/THIRD_PARTY_LICENSES.txt")
	if err != nil {
		t.Fatalf("the bundled packages' licenses are missing: %v", err)
	}
	b, _ := io.ReadAll(f)
	for _, p := range []string{"hls.js", "tus-js-client", "uplot"} {
		if !strings.Contains(string(b), p) {
			t.Errorf("THIRD_PARTY_LICENSES.txt lacks %s", p)
		}
	}
}

// TestPageStateSession: watch and embed pages carry a fresh playback
// session token for their item, and the beacon URL; without a way to mint
// one (or when minting fails) they carry neither and still play.
func TestPageStateSession(t *testing.T) {
	t.Parallel()
	e := newUnitEnv(t)
	if st := pageState(t, e.get(t, "/watch/vid1").body); st.Session != "" || st.BeaconURL != "" {
		t.Fatalf("no minter: session %q beacon %q", st.Session, st.BeaconURL)
	}
	secret := []byte("a test secret of thirty-two bytes")
	e.w.newSession = playsession.NewKeeper(func(context.Context) ([]byte, error) { return secret, nil }, nil).Mint
	seen := map[string]bool{}
	for _, c := range []struct{ path, kind, id string }{
		{"/watch/vid1", playsession.KindVideo, "vid1"}, {"/embed/vid1", playsession.KindVideo, "vid1"},
		{"/watch/live1", playsession.KindLive, "live1"}, {"/embed/live2?token=abc", playsession.KindLive, "live2"},
	} {
		r := e.get(t, c.path)
		// Each render has its own session: a shared cache must not keep it.
		if cc := r.header.Get("Cache-Control"); cc != "private, no-cache" {
			t.Fatalf("%s: Cache-Control %q", c.path, cc)
		}
		st := pageState(t, r.body)
		cl, err := playsession.Parse(secret, st.Session)
		if err != nil || cl.Kind != c.kind || cl.ItemID != c.id || st.BeaconURL != "/v1/beacons" || seen[cl.Session] {
			t.Fatalf("%s: session %q (%+v, %v), beacon %q", c.path, st.Session, cl, err, st.BeaconURL)
		}
		if time.Since(cl.IssuedAt) > time.Minute {
			t.Fatalf("%s: issued at %s", c.path, cl.IssuedAt)
		}
		seen[cl.Session] = true
	}
	// A signed video's page without its token cannot play: no session.
	if st := pageState(t, e.get(t, "/watch/vid2").body); !st.NeedsToken || st.Session != "" {
		t.Fatalf("signed video without a token: needs token %v, session %q", st.NeedsToken, st.Session)
	}
	if st := pageState(t, e.get(t, "/watch/vid2?token=abc").body); st.Session == "" {
		t.Fatal("signed video with a token: no session")
	}
	e.w.newSession = func(context.Context, string, string) (string, error) { return "", routing.ErrUnavailable }
	r := e.get(t, "/watch/vid1")
	if st := pageState(t, r.body); r.status != http.StatusOK || st.Session != "" || st.BeaconURL != "" {
		t.Fatalf("failed minting: %d, session %q", r.status, st.Session)
	}
}
