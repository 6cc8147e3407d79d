package web

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"errors"
	"fmt"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"
	"github.com/gin-gonic/gin"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/browser"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/packager/origin"
	playerapi "github.com/shoal-video/shoal/player-api"
	"github.com/shoal-video/shoal/transcode/vod"
)

const e2eAdminKey = "admin-key-for-web-tests-0123456789"

// liveSet stands in for the media pipeline: the test says which live
// streams are live.
type liveSet struct {
	mu   sync.Mutex
	live map[string]bool
}

func (l *liveSet) IsLive(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.live[id]
}
func (l *liveSet) Problem(string) string                   { return "" }
func (l *liveSet) Pull(string) (playerapi.PullState, bool) { return playerapi.PullState{}, false }
func (l *liveSet) Remove(string) error                     { return nil }

func (l *liveSet) Restreams(string) map[string]playerapi.RestreamState { return nil }
func (l *liveSet) RefreshRestreams(string)                             {}
func (l *liveSet) Disconnect(string)                                   {}

// e2e is a node as the origin role mounts it: the REST API, the origin's
// HLS handler (with signed playback) and the pages, on one Gin engine, over
// a real Redis.
type e2e struct {
	url     string
	store   *routing.Store
	hlsDir  string
	key     ed25519.PrivateKey
	logs    *testutil.Buffer
	shots   string
	vodTree string // a packaged 8 s VOD (two renditions + audio group), poster and storyboard
}

func newE2E(t *testing.T) *e2e {
	t.Helper()
	rs := redistest.Start(t)
	store, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	data := t.TempDir()
	e := &e2e{store: store, hlsDir: filepath.Join(data, "hls"), logs: &testutil.Buffer{}}
	e.key, err = playback.LoadOrCreateKey(filepath.Join(data, "playback-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	e.shots = os.Getenv("SHOAL_SCREENSHOT_DIR")
	if e.shots == "" {
		e.shots = t.TempDir()
	}
	log := slog.New(slog.NewTextHandler(e.logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("server logs:\n%s", e.logs.String())
		}
	})

	srv := httptest.NewUnstartedServer(nil)
	e.url = "http://" + srv.Listener.Addr().String()
	live := &liveSet{live: map[string]bool{}}
	objects, err := fsstore.New(data)
	if err != nil {
		t.Fatal(err)
	}
	api, err := playerapi.New(playerapi.Config{
		AdminKey: e2eAdminKey, PublicURL: e.url, RTMPURL: "rtmp://127.0.0.1:1935/live",
		UploadDir: filepath.Join(data, "uploads"), Videos: vod.Files{Store: objects, RecordDir: filepath.Join(data, "videos"), WorkDir: filepath.Join(data, "work")},
		PlaybackKey: e.key,
		// The origin's audits of edges, as the app's shopper would tell them.
		AuditSummary: func(string) (playerapi.AuditSummary, bool) {
			return playerapi.AuditSummary{Passed: 12, Failed: 1, LastResult: "pass", LastFinding: "the node serves the published bytes to the origin", TTFBMillis: 4}, true
		},
	}, store, live, log.With("component", "api"))
	if err != nil {
		t.Fatal(err)
	}
	// The pages carry playback sessions the API takes beacons of.
	w, err := New(Config{PublicURL: e.url}, Deps{Store: store, IsLive: live.IsLive, Log: log.With("component", "web"), NewSession: api.NewSession})
	if err != nil {
		t.Fatal(err)
	}
	signed := func(id string) bool {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if v, err := store.GetVideo(ctx, id); err == nil {
			return v.PlaybackPolicy == routing.PlaybackSigned
		}
		if ls, err := store.GetLiveStream(ctx, id); err == nil {
			return ls.PlaybackPolicy == routing.PlaybackSigned
		}
		return false
	}
	hlsStore, err := fsstore.New(e.hlsDir)
	if err != nil {
		t.Fatal(err)
	}
	hls := gin.WrapH(origin.NewHandler(hlsStore, origin.WithSignedPlayback(signed, e.key.Public().(ed25519.PublicKey))))

	r := gin.New()
	r.ContextWithFallback = true
	for _, m := range []string{http.MethodGet, http.MethodHead, http.MethodOptions} {
		r.Handle(m, "/hls/*path", hls)
	}
	api.Register(r)
	w.Register(r)
	r.NoRoute(func(c *gin.Context) { playerapi.WriteError(c, http.StatusNotFound, "not_found", "no such endpoint") })
	srv.Config.Handler = r
	srv.Start()
	t.Cleanup(srv.Close)
	return e
}

// makeVODTree packages 8 s of testsrc2 + a sine tone with the ffmpeg CLI as
// the VOD worker lays a video out: master.m3u8 with an audio group and two
// video renditions (fMP4, 2 s segments), poster.jpg and a storyboard.
func makeVODTree(t *testing.T) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "vod")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	run := func(args ...string) {
		t.Helper()
		cmd := exec.Command("ffmpeg", append([]string{"-nostdin", "-v", "error", "-y"}, args...)...)
		cmd.Dir = dir
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg %s (is ffmpeg installed? `make test` installs it): %v\n%s", strings.Join(args, " "), err, out)
		}
	}
	run("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "8",
		"-filter_complex", "[0:v]split=2[a][b];[b]scale=426:240[b2]", "-map", "[a]", "-map", "[b2]", "-map", "1:a",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0",
		"-b:v:0", "800k", "-b:v:1", "300k", "-c:a", "aac", "-b:a", "64k",
		"-f", "hls", "-hls_time", "2", "-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
		"-hls_fmp4_init_filename", "init-%v.mp4", "-hls_segment_filename", "%v/seg%d.m4s", "-master_pl_name", "master.m3u8",
		"-var_stream_map", "v:0,agroup:aud,name:360p v:1,agroup:aud,name:240p a:0,agroup:aud,name:audio", "%v/index.m3u8")
	// ffmpeg lists the audio group as a variant of its own too; Shoal's
	// packager does not: drop that variant.
	master, err := os.ReadFile(filepath.Join(dir, "master.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	var lines []string
	skip := false
	for _, l := range strings.Split(string(master), "\n") {
		switch {
		case skip:
			skip = false
			continue
		case strings.HasPrefix(l, "#EXT-X-STREAM-INF") && !strings.Contains(l, "RESOLUTION="):
			skip = true
			continue
		case strings.TrimSpace(l) == "":
			continue
		}
		lines = append(lines, l)
	}
	writeFile(t, filepath.Join(dir, "master.m3u8"), strings.Join(lines, "\n")+"\n")
	// Poster and storyboard: one 160x90 tile a second on one sheet.
	run("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-ss", "1", "-frames:v", "1", "-q:v", "4", "poster.jpg")
	run("-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-t", "8", "-vf", "fps=1,scale=160:90,tile=8x1", "-frames:v", "1", "-q:v", "5", "storyboard-0.jpg")
	vtt := "WEBVTT\n"
	for i := range 8 {
		vtt += fmt.Sprintf("\n00:00:%02d.000 --> 00:00:%02d.000\nstoryboard-0.jpg#xywh=%d,0,160,90\n", i, i+1, i*160)
	}
	writeFile(t, filepath.Join(dir, "storyboard.vtt"), vtt)
	return dir
}

func writeFile(t *testing.T, path, s string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}

// copyTree copies the packaged VOD to <hls>/<id>; live drops the end of
// every media playlist, so that it reads as a live stream in progress.
func copyTree(t *testing.T, src, dst string, live bool) {
	t.Helper()
	err := filepath.WalkDir(src, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(src, p)
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		if live && strings.HasSuffix(p, "index.m3u8") {
			s := strings.ReplaceAll(string(b), "#EXT-X-ENDLIST\n", "")
			s = strings.ReplaceAll(s, "#EXT-X-PLAYLIST-TYPE:VOD\n", "")
			b = []byte(s)
		}
		if live && (strings.HasSuffix(p, ".jpg") || strings.HasSuffix(p, ".vtt")) {
			return nil
		}
		out := filepath.Join(dst, rel)
		if err := os.MkdirAll(filepath.Dir(out), 0o755); err != nil {
			return err
		}
		return os.WriteFile(out, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
}

// readyVideo makes a video "ready" through the store the way a worker
// does (upload reserved, source received and queued, job started and
// finished) and puts its HLS tree in place.
func (e *e2e) readyVideo(t *testing.T, title, policy string) string {
	t.Helper()
	id := e.queueVideo(t, title, policy)
	job, attempt := e.startJob(t, id)
	e.finishJob(t, job, attempt)
	return id
}

// queueVideo creates a video whose source has arrived: it is processing.
func (e *e2e) queueVideo(t *testing.T, title, policy string) string {
	t.Helper()
	ctx := t.Context()
	v, err := e.store.CreateVideo(ctx, routing.VideoSpec{Title: title, PlaybackPolicy: policy})
	if err != nil {
		t.Fatal(err)
	}
	if err := e.store.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := e.store.BeginUpload(ctx, v.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.SourceReceived(ctx, v.ID, "put", routing.SourceInfo{Bytes: 1 << 20, Duration: 8 * time.Second}); err != nil {
		t.Fatal(err)
	}
	return v.ID
}

// startJob takes the job of video id from the queue, as a worker would.
func (e *e2e) startJob(t *testing.T, id string) (routing.Job, int) {
	t.Helper()
	for {
		job, ok, err := e.store.NextJob(t.Context(), "web-test", time.Second, time.Hour)
		if err != nil || !ok {
			t.Fatalf("NextJob = %v, %v", ok, err)
		}
		if job.VideoID != id {
			continue
		}
		st, err := e.store.StartJob(t.Context(), job, "web-test", 3)
		if err != nil || st.Attempt == 0 {
			t.Fatalf("StartJob = %+v, %v", st, err)
		}
		return job, st.Attempt
	}
}

// finishJob publishes the packaged tree as the video's and makes it ready.
func (e *e2e) finishJob(t *testing.T, job routing.Job, attempt int) {
	t.Helper()
	copyTree(t, e.vodTree, filepath.Join(e.hlsDir, job.VideoID), false)
	out := routing.JobOutcome{Duration: 8 * time.Second, Poster: true, Storyboard: true, Renditions: []routing.VideoRendition{
		{Name: "360p", Width: 640, Height: 360, Bitrate: 800_000}, {Name: "240p", Width: 426, Height: 240, Bitrate: 300_000}}}
	if err := e.store.FinishJob(t.Context(), job, attempt, out); err != nil {
		t.Fatal(err)
	}
}

func (e *e2e) shot(t *testing.T, tab *browser.Tab, name string) {
	t.Helper()
	p := filepath.Join(e.shots, name+".png")
	// Let transitions (controls fading in) finish: wait for every finite
	// CSS transition or animation running to end (spinners loop forever).
	var running int
	if err := tab.Run(10*time.Second, chromedp.Evaluate(settleAnimationsJS, &running, awaitPromise)); err != nil || running != 0 {
		t.Errorf("screenshot %s: transitions still running (%d): %v", name, running, err)
	}
	capture := tab.Screenshot
	if strings.HasPrefix(name, "dashboard") {
		capture = tab.FullScreenshot
	}
	if err := capture(p); err != nil {
		t.Errorf("screenshot %s: %v", name, err)
		return
	}
	t.Logf("screenshot: %s", p)
}

// settleAnimationsJS waits for the page's finite animations (CSS
// transitions included) to finish, again while finishing ones start others,
// and returns how many still run.
const settleAnimationsJS = `(async () => {
	const running = () => document.getAnimations().filter(a => a.playState === 'running' &&
		isFinite(a.effect.getComputedTiming().endTime));
	for (let i = 0; i < 20; i++) {
		const now = running();
		if (now.length === 0) {
			return 0;
		}
		await Promise.all(now.map(a => a.finished.catch(() => {})));
	}
	return running().length;
})()`

// awaitPromise makes chromedp.Evaluate wait for the promise the expression
// returns.
func awaitPromise(p *runtime.EvaluateParams) *runtime.EvaluateParams { return p.WithAwaitPromise(true) }

// requireClean fails the test on console errors and exceptions other than
// those allowed (substrings).
func requireClean(t *testing.T, tab *browser.Tab, allowed ...string) {
	t.Helper()
next:
	for _, e := range tab.Errors() {
		for _, a := range allowed {
			if strings.Contains(e, a) {
				continue next
			}
		}
		t.Errorf("page error: %s", e)
	}
	if t.Failed() {
		t.Logf("console:\n%s", strings.Join(tab.Logs(), "\n"))
	}
}

const playerStateJS = `JSON.stringify({t: document.querySelector('video') && document.querySelector('video').currentTime,
	w: document.querySelector('video') && document.querySelector('video').videoWidth,
	paused: document.querySelector('video') && document.querySelector('video').paused,
	muted: document.querySelector('video') && document.querySelector('video').muted,
	engine: document.getElementById('player') && document.getElementById('player').dataset.engine,
	message: document.querySelector('.overlay') && document.querySelector('.overlay').innerText,
	classes: document.getElementById('player') && document.getElementById('player').className})`

// TestBrowser drives the pages in headless Chromium against a real API,
// origin handler and Redis: playback (hls.js), embed, oEmbed, error pages,
// an offline live stream going live, and the dashboard.
func TestBrowser(t *testing.T) {
	b := browser.Start(t) // skips here when Chromium is missing outside CI
	e := newE2E(t)
	e.vodTree = makeVODTree(t)
	ctx := t.Context()
	vid := e.readyVideo(t, "Test pattern", "")
	signedVid := e.readyVideo(t, "Members only", routing.PlaybackSigned)
	failed, err := e.store.CreateVideo(ctx, routing.VideoSpec{Title: "Broken upload"})
	if err != nil {
		t.Fatal(err)
	}
	const failMsg = "not a video file: the format is not recognised"
	if err := e.store.BeginUpload(ctx, failed.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := e.store.FailVideo(ctx, failed.ID, "put", failMsg); err != nil {
		t.Fatal(err)
	}
	ls, err := e.store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "Evening stream"})
	if err != nil {
		t.Fatal(err)
	}

	t.Run("watch", func(t *testing.T) {
		tab := b.NewTab(t)
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/watch/"+vid+"?player=hlsjs")); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(45*time.Second, `(() => { const v = document.querySelector('video');
			return v.currentTime > 3 && v.videoWidth > 0 && !v.paused })()`, playerStateJS); err != nil {
			t.Fatal(err)
		}
		var got struct {
			Engine  string
			Levels  []string
			Title   string
			Preview bool
			Sprite  string
			OEmbed  string
			OGImage string
			Poster  string
		}
		err := tab.Run(10*time.Second, chromedp.Evaluate(`(() => {
			const seek = document.querySelector('.seek');
			const r = seek.getBoundingClientRect();
			document.getElementById('player').dispatchEvent(new PointerEvent('pointermove', {bubbles: true, clientX: r.left + 10, clientY: r.top - 40}));
			seek.dispatchEvent(new PointerEvent('pointermove', {bubbles: true, clientX: r.left + r.width * 0.6, clientY: r.top + 5}));
			const pv = document.querySelector('.sb-preview');
			return {
				engine: document.getElementById('player').dataset.engine,
				levels: [...document.querySelectorAll('.quality-item')].map(e => e.firstChild.textContent),
				title: document.querySelector('h1').textContent,
				preview: !pv.hidden && pv.classList.contains('has-image'),
				sprite: document.querySelector('.sb-sprite').style.backgroundImage,
				oembed: document.querySelector('link[rel=alternate][type="application/json+oembed"]').href,
				ogimage: document.querySelector('meta[property="og:image"]').content,
				poster: document.querySelector('video').poster,
			};
		})()`, &got))
		if err != nil {
			t.Fatal(err)
		}
		if got.Engine != "hls.js" || strings.Join(got.Levels, ",") != "Auto,360p,240p" || got.Title != "Test pattern" {
			t.Errorf("player: %+v", got)
		}
		if !got.Preview || !strings.Contains(got.Sprite, "/hls/"+vid+"/storyboard-0.jpg") {
			t.Errorf("no storyboard preview on the seek bar: %+v", got)
		}
		if !strings.HasSuffix(got.Poster, "/hls/"+vid+"/poster.jpg") || got.OGImage != e.url+"/hls/"+vid+"/poster.jpg" ||
			!strings.Contains(got.OEmbed, "/oembed?format=json&url=") {
			t.Errorf("poster / meta tags: %+v", got)
		}
		e.shot(t, tab, "watch")
		// Choosing a quality from the menu, with the keyboard, switches
		// hls.js to that level (End: the last item, the lowest rung).
		var lowest string
		if err := tab.Run(10*time.Second, chromedp.Evaluate(`[...document.querySelectorAll('.quality-item')].find(e => e.textContent.startsWith('240p')).dataset.level`, &lowest),
			chromedp.Focus(".quality-btn", chromedp.ByQuery), chromedp.KeyEvent(kb.Enter),
			chromedp.WaitVisible(".quality-menu", chromedp.ByQuery), chromedp.KeyEvent(kb.End), chromedp.KeyEvent(kb.Enter)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `window.shoalPlayer.hls.currentLevel === `+lowest+` && !window.shoalPlayer.hls.autoLevelEnabled &&
			document.querySelector('.quality-label').textContent === '240p' && document.querySelector('video').videoHeight === 240`,
			playerStateJS+` + ' level ' + window.shoalPlayer.hls.currentLevel + ' ' + document.querySelector('video').videoHeight`); err != nil {
			t.Error(err)
		}
		// Viewer beacons (beacons.js) run when, and only when, the page has a
		// playback session from the origin; then their figures show this
		// playback.
		var beacons struct {
			Session bool
			Has     bool
			Body    struct {
				Seq       int              `json:"seq"`
				WatchMS   int              `json:"watch_ms"`
				StartupMS int              `json:"startup_ms"`
				Switches  int              `json:"switches"`
				Bytes     map[string]int64 `json:"bytes"`
			}
		}
		if err := tab.Run(10*time.Second, chromedp.Evaluate(`(() => {
			const st = JSON.parse(document.getElementById('shoal-state').textContent);
			return {session: !!st.session, has: !!window.shoalBeacons, body: window.shoalBeacons ? window.shoalBeacons.snapshot() : {}};
		})()`, &beacons)); err != nil {
			t.Fatal(err)
		}
		if !beacons.Session || !beacons.Has {
			t.Errorf("window.shoalBeacons is there: %v, the page has a session: %v", beacons.Has, beacons.Session)
		}
		if b := beacons.Body; b.Seq < 2 || b.WatchMS < 2000 || b.StartupMS <= 0 || b.Switches < 1 || len(b.Bytes) == 0 {
			t.Errorf("beacon after playing 3 s and a quality switch: %+v", b)
		}
		// At phone width the page fits (nothing overflows sideways).
		if err := tab.Run(10*time.Second, browser.SetViewport(375, 740, true)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `document.documentElement.scrollWidth <= 375 && document.getElementById('player').offsetWidth <= 375`,
			`document.documentElement.scrollWidth + ' px wide'`); err != nil {
			t.Error(err)
		}
		e.shot(t, tab, "watch-phone")
		requireClean(t, tab)
	})

	t.Run("signed", func(t *testing.T) {
		tok, err := playback.Sign(e.key, playback.Claims{ID: signedVid, Expires: time.Now().Add(time.Hour)})
		if err != nil {
			t.Fatal(err)
		}
		tab := b.NewTab(t)
		// Without a token the page says what is missing.
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/watch/"+signedVid)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `document.querySelector('.overlay').innerText.includes('needs a playback link with a token')`, playerStateJS); err != nil {
			t.Fatal(err)
		}
		// With one, the page passes its token to every HLS request.
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/watch/"+signedVid+"?player=hlsjs&token="+url.QueryEscape(tok))); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(45*time.Second, `(() => { const v = document.querySelector('video'); return v.currentTime > 1 && v.videoWidth > 0 })()`, playerStateJS); err != nil {
			t.Fatal(err)
		}
		requireClean(t, tab)
	})

	t.Run("embed", func(t *testing.T) {
		tab := b.NewTab(t)
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/embed/"+vid+"?autoplay=1&muted=1&player=hlsjs")); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(45*time.Second, `(() => { const v = document.querySelector('video');
			return v.muted && v.currentTime > 1.5 && v.videoWidth > 0 })()`, playerStateJS); err != nil {
			t.Fatal(err)
		}
		var chrome bool
		if err := tab.Run(5*time.Second, chromedp.Evaluate(`!!document.querySelector('.topbar, h1, footer')`, &chrome)); err != nil || chrome {
			t.Errorf("the embed page has page chrome (%v)", err)
		}
		e.shot(t, tab, "embed")
		requireClean(t, tab)
		// The same page in an iframe of another page plays too.
		res, err := http.Get(e.url + "/embed/" + vid)
		if err != nil {
			t.Fatal(err)
		}
		res.Body.Close()
		if res.Header.Get("X-Frame-Options") != "" || !strings.Contains(res.Header.Get("Content-Security-Policy"), "frame-ancestors *") {
			t.Errorf("embed headers forbid framing: %v", res.Header)
		}
	})

	t.Run("oembed", func(t *testing.T) {
		res, err := http.Get(e.url + "/oembed?format=json&url=" + url.QueryEscape(e.url+"/watch/"+vid))
		if err != nil {
			t.Fatal(err)
		}
		defer res.Body.Close()
		var o oembedJSON
		if err := json.NewDecoder(res.Body).Decode(&o); err != nil || res.StatusCode != 200 {
			t.Fatalf("oembed: %d %v", res.StatusCode, err)
		}
		if !strings.Contains(o.HTML, `<iframe src="`+e.url+"/embed/"+vid+`"`) || o.Type != "video" || o.Title != "Test pattern" ||
			o.ThumbnailURL != e.url+"/hls/"+vid+"/poster.jpg" || o.Width != 640 || o.Height != 360 {
			t.Errorf("oembed answer %+v", o)
		}
		for target, want := range map[string]int{
			"/oembed?url=" + url.QueryEscape(e.url+"/watch/nosuchvideo"):          404,
			"/oembed?url=" + url.QueryEscape(e.url+"/watch/"+vid) + "&format=xml": 501,
		} {
			res, err := http.Get(e.url + target)
			if err != nil {
				t.Fatal(err)
			}
			_, _ = io.Copy(io.Discard, res.Body)
			res.Body.Close()
			if res.StatusCode != want {
				t.Errorf("GET %s = %d, want %d", target, res.StatusCode, want)
			}
		}
	})

	t.Run("errors", func(t *testing.T) {
		tab := b.NewTab(t)
		var status int64
		err := tab.Run(20*time.Second, chromedp.ActionFunc(func(ctx context.Context) error {
			resp, err := chromedp.RunResponse(ctx, chromedp.Navigate(e.url+"/watch/nosuchvideo"))
			if resp != nil {
				status = resp.Status
			}
			return err
		}))
		if err != nil {
			t.Fatal(err)
		}
		var heading string
		if err := tab.Run(5*time.Second, chromedp.Text("h1", &heading, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if status != 404 || heading != "This video does not exist" {
			t.Errorf("unknown id: %d %q", status, heading)
		}
		e.shot(t, tab, "notfound")
		requireClean(t, tab, "404 (Not Found)")

		tab.ResetErrors()
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/watch/"+failed.ID)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `document.querySelector('.overlay').innerText.includes(`+jsString(failMsg)+`)`, playerStateJS); err != nil {
			t.Error(err)
		}
		e.shot(t, tab, "failed")
		requireClean(t, tab)
	})

	t.Run("offline-live", func(t *testing.T) {
		tab := b.NewTab(t)
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `document.querySelector('.overlay').innerText.includes('offline') &&
			document.getElementById('status-badge').textContent === 'Offline'`, playerStateJS); err != nil {
			t.Fatal(err)
		}
		e.shot(t, tab, "offline")
		// The creator goes live: the page notices and plays by itself.
		copyTree(t, e.vodTree, filepath.Join(e.hlsDir, ls.ID), true)
		if err := tab.WaitFor(45*time.Second, `(() => { const v = document.querySelector('video');
			return v.currentTime > 0.5 && v.videoWidth > 0 && document.getElementById('status-badge').textContent === 'Live' &&
				document.getElementById('player').classList.contains('is-live') })()`, playerStateJS); err != nil {
			t.Fatal(err)
		}
		e.shot(t, tab, "live")
		// The offline page's polls of the missing playlist are 404s.
		requireClean(t, tab, "404 (Not Found)")
	})

	// Real-time playback asked for (?mode=realtime) where WHEP does not
	// answer (this server has no WebRTC): the page says so and plays HLS.
	t.Run("realtime-fallback", func(t *testing.T) {
		tab := b.NewTab(t)
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/watch/"+ls.ID+"?player=hlsjs&mode=realtime")); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(45*time.Second, `(() => { const v = document.querySelector('video'); const note = document.querySelector('.player-note');
			return v.currentTime > 0.5 && document.getElementById('player').dataset.engine === 'hls.js' && document.body.dataset.mode === 'hls' &&
				!!note && !note.hidden && note.textContent.includes('Playing over HLS instead') &&
				document.getElementById('mode-toggle').getAttribute('aria-pressed') === 'false' && !location.search.includes('mode=') })()`,
			playerStateJS+` + ' note: ' + (document.querySelector('.player-note') || {}).textContent`); err != nil {
			t.Fatal(err)
		}
		e.shot(t, tab, "realtime-fallback")
		// The refused offer is logged by the browser.
		requireClean(t, tab, "/v1/whep/"+ls.ID)
	})

	t.Run("processing", func(t *testing.T) {
		id := e.queueVideo(t, "Still cooking", "")
		job, attempt := e.startJob(t, id)
		if err := e.store.TouchJob(ctx, job, "web-test", attempt, 37); err != nil {
			t.Fatal(err)
		}
		tab := b.NewTab(t)
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/watch/"+id+"?player=hlsjs")); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `document.querySelector('.overlay').innerText.includes('being processed') &&
			document.querySelector('.overlay progress').value === 37`, playerStateJS); err != nil {
			t.Fatal(err)
		}
		e.shot(t, tab, "processing")
		// The worker finishes: the page notices and plays by itself.
		e.finishJob(t, job, attempt)
		if err := tab.WaitFor(45*time.Second, `(() => { const v = document.querySelector('video');
			return v.currentTime > 0.5 && v.videoWidth > 0 })()`, playerStateJS); err != nil {
			t.Fatal(err)
		}
		requireClean(t, tab)
	})

	t.Run("dashboard", func(t *testing.T) {
		// An edge that joined and heartbeats, for the nodes section.
		node := joinNode(t, e)
		clip := testutil.MakeMP4(t, 320, 240, 2)
		tab := b.NewTab(t)
		if err := tab.Run(20*time.Second, chromedp.Navigate(e.url+"/"),
			chromedp.WaitVisible("#api-key", chromedp.ByID)); err != nil {
			t.Fatal(err)
		}
		e.shot(t, tab, "signin")
		// A wrong key is refused with a message; the right one signs in
		// (typed and submitted with the keyboard).
		if err := tab.Run(10*time.Second, chromedp.SendKeys("#api-key", "wrong-key-wrong-key"+kb.Enter, chromedp.ByID),
			chromedp.WaitVisible("#signin-error", chromedp.ByID)); err != nil {
			t.Fatal(err)
		}
		tab.ResetErrors() // the refused key's 401 is logged by the browser
		if err := tab.Run(10*time.Second, chromedp.Evaluate(`document.getElementById('api-key').value = ''`, nil),
			chromedp.SendKeys("#api-key", e2eAdminKey+kb.Enter, chromedp.ByID),
			chromedp.WaitVisible("#new-stream-form", chromedp.ByID)); err != nil {
			t.Fatal(err)
		}
		// Create a live stream and see its key.
		if err := tab.Run(10*time.Second, chromedp.SendKeys("#stream-name", "Launch party", chromedp.ByID),
			chromedp.Click(`#new-stream-form button[type=submit]`, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `[...document.querySelectorAll('.card.stream h3')].some(h => h.textContent === 'Launch party')`, `document.getElementById('stream-list').innerText`); err != nil {
			t.Fatal(err)
		}
		streams, err := e.store.ListLiveStreams(ctx)
		if err != nil {
			t.Fatal(err)
		}
		var created routing.LiveStream
		for _, s := range streams {
			if s.Name == "Launch party" {
				created = s
			}
		}
		// Its key is shown once, right after it was made, with the note
		// that it is.
		var shown, note string
		sel := `.card.stream[data-id="` + created.ID + `"]`
		if err := tab.Run(10*time.Second, chromedp.WaitVisible(sel+` .stream-key code.secret`, chromedp.ByQuery),
			chromedp.Text(sel+" .stream-key code.secret", &shown, chromedp.ByQuery),
			chromedp.Text(sel+" .stream-key .key-once", &note, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if id, err := e.store.LiveStreamIDByKey(ctx, shown); err != nil || id != created.ID {
			t.Errorf("shown stream key %q resolves to %q, %v; want %s", shown, id, err, created.ID)
		}
		if !strings.Contains(note, "shown once") || !strings.Contains(note, "Reset makes a new one") {
			t.Errorf("note by the new key: %q", note)
		}
		e.shot(t, tab, "dashboard-live")
		// Done hides it for good: the dashboard cannot get it back.
		if err := tab.Run(10*time.Second, chromedp.Click(sel+` .key-done`, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `!document.querySelector('`+sel+` code.secret') &&
			document.querySelector('`+sel+` .stream-key').innerText.includes('Shown once') &&
			!document.body.innerText.includes(`+jsString(shown)+`)`, `document.querySelector('`+sel+` .stream-key').innerText`); err != nil {
			t.Error(err)
		}
		// P2P is on, and the switch turns it off for the stream.
		var p2pOn bool
		if err := tab.Run(10*time.Second, chromedp.Evaluate(`document.querySelector('`+sel+` .p2p-toggle').checked`, &p2pOn),
			chromedp.Click(sel+" .p2p-toggle", chromedp.ByQuery)); err != nil || !p2pOn {
			t.Fatalf("the P2P switch: on %v, %v", p2pOn, err)
		}
		if err := tab.WaitFor(10*time.Second, `!document.querySelector('`+sel+` .p2p-toggle').disabled`, ""); err != nil {
			t.Fatal(err)
		}
		if ls, err := e.store.GetLiveStream(ctx, created.ID); err != nil || !ls.P2POff {
			t.Fatalf("after the P2P switch: %+v, %v; want P2P off", ls, err)
		}
		// Reset the key (confirmed in a dialog): the new key is shown once,
		// and the old one no longer works.
		if err := tab.Run(10*time.Second, chromedp.Evaluate(`[...document.querySelectorAll('`+sel+` button')].find(b => b.textContent.includes('Reset key')).click()`, nil),
			chromedp.WaitVisible("dialog[open]", chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		var warning string
		if err := tab.Run(10*time.Second, chromedp.Text("dialog[open]", &warning, chromedp.ByQuery),
			chromedp.Click("dialog[open] .btn-danger-solid", chromedp.ByQuery),
			chromedp.WaitVisible(sel+` .stream-key code.secret`, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if !strings.Contains(warning, "disconnected") {
			t.Errorf("the reset dialog does not say the publisher is disconnected: %q", warning)
		}
		var reset string
		if err := tab.Run(10*time.Second, chromedp.Text(sel+" .stream-key code.secret", &reset, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if id, err := e.store.LiveStreamIDByKey(ctx, reset); err != nil || id != created.ID || reset == shown {
			t.Errorf("shown key after the reset %q resolves to %q, %v", reset, id, err)
		}
		if _, err := e.store.LiveStreamIDByKey(ctx, shown); !errors.Is(err, routing.ErrNotFound) {
			t.Errorf("the old key after the reset: %v, want not found", err)
		}
		// Delete a stream (confirmed): its card goes away.
		if err := tab.Run(10*time.Second, chromedp.SendKeys("#stream-name", "Doomed", chromedp.ByID),
			chromedp.Click(`#new-stream-form button[type=submit]`, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `[...document.querySelectorAll('.card.stream h3')].some(h => h.textContent === 'Doomed')`, ""); err != nil {
			t.Fatal(err)
		}
		var doomed routing.LiveStream
		if streams, err = e.store.ListLiveStreams(ctx); err != nil {
			t.Fatal(err)
		}
		for _, s := range streams {
			if s.Name == "Doomed" {
				doomed = s
			}
		}
		dsel := `.card.stream[data-id="` + doomed.ID + `"]`
		if err := tab.Run(10*time.Second, chromedp.Evaluate(`[...document.querySelectorAll('`+dsel+` button')].find(b => b.textContent.includes('Delete')).click()`, nil),
			chromedp.WaitVisible("dialog[open]", chromedp.ByQuery),
			chromedp.Click("dialog[open] .btn-danger-solid", chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(10*time.Second, `!document.querySelector('`+dsel+`')`, ""); err != nil {
			t.Error(err)
		}
		if _, err := e.store.GetLiveStream(ctx, doomed.ID); !errors.Is(err, routing.ErrNotFound) {
			t.Errorf("deleted stream: %v", err)
		}

		// Upload a clip with tus and see it processing (no worker runs here).
		if err := tab.Run(10*time.Second, chromedp.Click(`.tabs a[href="#videos"]`, chromedp.ByQuery),
			chromedp.WaitVisible("#upload-form", chromedp.ByID),
			chromedp.SendKeys("#video-title", "My clip", chromedp.ByID),
			chromedp.SetUploadFiles("#video-file", []string{clip}, chromedp.ByID),
			chromedp.Click("#upload-button", chromedp.ByID)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(30*time.Second, `[...document.querySelectorAll('.card.video')].some(c =>
			c.querySelector('h3').textContent === 'My clip' && c.dataset.status === 'processing')`,
			`document.getElementById('upload-status').innerText + ' | ' + document.getElementById('video-list').innerText`); err != nil {
			t.Fatal(err)
		}
		var pct float64
		if err := tab.Run(5*time.Second, chromedp.Evaluate(`document.getElementById('upload-progress').value`, &pct)); err != nil || pct != 100 {
			t.Errorf("upload progress bar at %v (%v)", pct, err)
		}
		e.shot(t, tab, "dashboard-videos")

		// The edge is listed, and the charts are drawn.
		if err := tab.Run(10*time.Second, chromedp.Click(`.tabs a[href="#nodes"]`, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if err := tab.WaitFor(15*time.Second, `!!document.querySelector('#nodes-table tr[data-id="`+node+`"]') &&
			document.querySelectorAll('#chart-egress canvas, #chart-hits canvas').length === 2`,
			`document.getElementById('panel-nodes').innerText`); err != nil {
			t.Fatal(err)
		}
		e.shot(t, tab, "dashboard")
		// Its audits, from GET /v1/nodes.
		var audits, auditTitle string
		if err := tab.Run(10*time.Second, chromedp.Text(`#nodes-table tr[data-id="`+node+`"] td.audits`, &audits, chromedp.ByQuery),
			chromedp.AttributeValue(`#nodes-table tr[data-id="`+node+`"] td.audits span`, "title", &auditTitle, nil, chromedp.ByQuery)); err != nil {
			t.Fatal(err)
		}
		if audits != "12 passed · 1 failed" || !strings.Contains(auditTitle, "first byte in 4 ms") {
			t.Errorf("audits cell %q, title %q", audits, auditTitle)
		}

		// At phone width nothing overflows sideways.
		if err := tab.Run(10*time.Second, browser.SetViewport(375, 740, true)); err != nil {
			t.Fatal(err)
		}
		for _, section := range []string{"nodes", "videos", "live"} {
			if err := tab.Run(5*time.Second, chromedp.Click(`.tabs a[href="#`+section+`"]`, chromedp.ByQuery)); err != nil {
				t.Fatal(err)
			}
			if err := tab.WaitFor(5*time.Second, `document.documentElement.scrollWidth <= 375`,
				`document.documentElement.scrollWidth + ' px wide'`); err != nil {
				t.Errorf("%s section at 375 px: %v", section, err)
			}
		}
		e.shot(t, tab, "dashboard-phone")
		requireClean(t, tab)
	})

}

func jsString(s string) string {
	b, _ := json.Marshal(s)
	return string(b)
}

// joinNode joins an edge to the API with a signed join (the admin key as
// its token) and heartbeats it until the test ends. It returns its id.
func joinNode(t *testing.T, e *e2e) string {
	t.Helper()
	_, key, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	c := &nodeproto.Client{OriginURL: e.url, Token: e2eAdminKey, Key: key}
	resp, err := c.Join(t.Context(), nodeproto.JoinRequest{Role: "edge", Region: "eu-west", PublicURL: "http://edge1.test:8081"})
	if err != nil {
		t.Fatalf("join: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		served := int64(0)
		for i := 0; ; i++ {
			served += 3_000_000 + int64(i%4)*500_000
			hb := nodeproto.Heartbeat{Connections: 12 + int64(i%3), EgressBytesPerSec: float64(1_500_000 + (i%5)*250_000),
				CacheBytes: 750 << 20, BytesServed: served, Hits: int64(40 + 9*i), Misses: int64(10 + i), OriginFetches: int64(10 + i)}
			if _, err := c.Heartbeat(ctx, resp.ID, hb); err != nil && ctx.Err() == nil {
				t.Logf("heartbeat: %v", err)
			}
			select {
			case <-ctx.Done():
				return
			case <-time.After(time.Second):
			}
		}
	}()
	t.Cleanup(func() {
		cancel()
		<-done
	})
	return resp.ID
}
