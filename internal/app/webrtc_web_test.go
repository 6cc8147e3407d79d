package app

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/runtime"
	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// These tests drive the pages' WebRTC features in headless Chromium
// against `shoal dev`: going live from the dashboard (WHIP, Chromium's fake
// camera and microphone) and real-time playback on the watch page (WHEP).

// jsFramesDecoded is the video frames the watch page's real-time session
// has decoded (Chromium's inbound-rtp stats), -1 without a session.
const jsFramesDecoded = `(async () => {
	const s = window.shoalRealtime;
	if (!s || !s.pc) return -1;
	let n = 0;
	(await s.pc.getStats()).forEach((r) => { if (r.type === 'inbound-rtp' && r.kind === 'video') n += r.framesDecoded || 0; });
	return n;
})()`

// pollJS waits, within timeout, until the JavaScript expression expr
// (which may be a promise) is truthy in tab, and stores its value in res.
// On timeout the test fails with what describe (a JavaScript expression)
// says of the page.
func pollJS(t *testing.T, tab *browser.Tab, timeout time.Duration, expr string, res any, describe string) {
	t.Helper()
	err := tab.Run(timeout+10*time.Second, chromedp.Poll(expr, res,
		chromedp.WithPollingInterval(200*time.Millisecond), chromedp.WithPollingTimeout(timeout)))
	if err == nil {
		return
	}
	var state string
	if describe != "" {
		_ = tab.Run(5*time.Second, chromedp.Evaluate(describe, &state))
	}
	if errors.Is(err, chromedp.ErrPollingTimeout) {
		err = fmt.Errorf("timed out after %s", timeout)
	}
	t.Fatalf("waiting for %s: %v\npage state: %s\npage logs: %s", expr, err, state, strings.Join(tab.Logs(), "\n"))
}

// until polls cond every 100 ms until it holds (true) or d has passed
// (false).
func until(d time.Duration, cond func() bool) bool {
	ctx, cancel := context.WithTimeout(context.Background(), d)
	defer cancel()
	tick := time.NewTicker(100 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-ctx.Done():
			return cond()
		case <-tick.C:
		}
	}
	return true
}

// evalJS evaluates expr (awaiting a promise) in tab.
func evalJS(t *testing.T, tab *browser.Tab, expr string, res any) {
	t.Helper()
	if err := tab.Run(10*time.Second, chromedp.Evaluate(expr, res, func(p *runtime.EvaluateParams) *runtime.EvaluateParams {
		return p.WithAwaitPromise(true)
	})); err != nil {
		t.Fatalf("evaluating %s: %v", expr, err)
	}
}

func screenshotDir(t *testing.T) string {
	if d := os.Getenv("SHOAL_SCREENSHOT_DIR"); d != "" {
		return d
	}
	return t.TempDir()
}

// probeAudio is the codec of an HLS URL's first audio stream.
func probeAudio(t *testing.T, url string) string {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=codec_name",
		"-of", "csv=p=0", url).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe %s: %v\n%s", url, err, out)
	}
	first, _, _ := strings.Cut(strings.TrimSpace(string(out)), "\n")
	return first
}

var extinf = regexp.MustCompile(`(?m)^#EXTINF:`)

// TestDashboardGoLive: the dashboard's "Go live" panel publishes
// Chromium's fake camera and microphone over WHIP; the stream goes live,
// HLS has AAC audio, and after Stop the recording ends and plays.
func TestDashboardGoLive(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("from the browser")
	if ls.Ingest.WHIPURL == "" {
		t.Fatalf("the stream has no ingest.whip_url: %+v", ls)
	}
	b := browser.Start(t, browser.WithFlags(browser.FakeMediaFlags...))
	tab := b.NewTab(t)
	shots := screenshotDir(t)

	card := `.card.stream[data-id="` + ls.ID + `"]`
	panel := card + ` .golive`
	describe := `JSON.stringify((() => { const p = document.querySelector('` + panel + `'); return p ? {state: p.dataset.state, stream: p.dataset.streamStatus, codec: p.dataset.codec, text: p.innerText} : document.body.innerText.slice(0, 500) })())`
	if err := tab.Run(30*time.Second,
		chromedp.Navigate(n.http+"/"),
		chromedp.WaitVisible("#api-key", chromedp.ByID),
		chromedp.SendKeys("#api-key", testAdminKey+kb.Enter, chromedp.ByID),
		chromedp.WaitVisible(card, chromedp.ByQuery)); err != nil {
		t.Fatalf("signing in to the dashboard: %v", err)
	}
	// The card lists the WHIP URL (no key in it) and the OBS steps for it.
	var whip string
	evalJS(t, tab, `document.querySelector('`+card+` code.whip-url').textContent`, &whip)
	if whip != ls.Ingest.WHIPURL {
		t.Errorf("WHIP URL shown %q, want %q", whip, ls.Ingest.WHIPURL)
	}
	var text string
	evalJS(t, tab, `document.querySelector('`+card+`').textContent`, &text)
	if strings.Contains(text, ls.StreamKey) {
		t.Errorf("the card shows the stream key, which only the create answer had")
	}

	// Go live: the panel opens with the fake camera's preview.
	if err := tab.Run(10*time.Second, chromedp.Click(card+` .golive-open`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	var ok bool
	pollJS(t, tab, 20*time.Second, `(() => { const p = document.querySelector('`+panel+`'); const v = p && p.querySelector('video');
		return !!p && p.dataset.state === 'preview' && v.videoWidth > 0 && p.querySelectorAll('.golive-cam option').length > 0 })()`, &ok, describe)
	if err := tab.Run(10*time.Second, chromedp.Click(panel+` .golive-start`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 30*time.Second, `document.querySelector('`+panel+`').dataset.state === 'live'`, &ok, describe)
	if !until(20*time.Second, func() bool { return n.status(ls.ID) == "live" }) {
		// Connected, but the server publishes nothing: the negotiation is
		// the usual suspect.
		var state, sdp string
		_ = tab.Run(5*time.Second, chromedp.Evaluate(describe, &state),
			chromedp.Evaluate(`JSON.stringify(window.shoalGoLive && window.shoalGoLive.sdp)`, &sdp))
		t.Fatalf("the stream is not live 20 s after the browser connected; status %q\npanel: %s\nSDP: %s", n.status(ls.ID), state, sdp)
	}
	// The page's own status polling follows.
	pollJS(t, tab, 20*time.Second, `document.querySelector('`+panel+`').dataset.streamStatus === 'live' && document.querySelector('`+card+`').dataset.status === 'live'`, &ok, describe)
	var codec, degradation string
	evalJS(t, tab, `document.querySelector('`+panel+`').dataset.codec || ''`, &codec)
	evalJS(t, tab, `document.querySelector('`+panel+`').dataset.degradation || ''`, &degradation)
	t.Logf("Chromium sends %s (degradation preference %q)", codec, degradation)
	if codec != "H.264" && codec != "VP8" {
		t.Errorf("negotiated video codec %q, want H.264 (or VP8)", codec)
	}

	n.waitFor("the master playlist", 20*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == http.StatusOK
	})
	// Media for a few seconds (segments are cut at keyframes).
	n.waitFor("two segments", 30*time.Second, func() bool {
		return len(extinf.FindAllString(n.playlist(ls.ID, "audio/index.m3u8"), -1)) >= 2 ||
			len(extinf.FindAllString(n.playlist(ls.ID, "source/index.m3u8"), -1)) >= 2
	})
	if a := probeAudio(t, ls.Playback.HLSURL); a != "aac" {
		t.Errorf("live HLS audio %q, want aac (Opus from the browser converted)", a)
	}
	_ = tab.Screenshot(filepath.Join(shots, "app-dashboard-golive.png"))
	if errs := tab.Errors(); len(errs) > 0 {
		t.Errorf("page errors while live: %v", errs)
	}

	// Stop: the session ends (DELETE), the broadcast's recording ends.
	if err := tab.Run(10*time.Second, chromedp.Click(panel+` .golive-stop`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 10*time.Second, `(() => { const p = document.querySelector('`+panel+`'); return p.dataset.state === 'stopped' && !p.querySelector('video').srcObject })()`, &ok, describe)
	n.waitFor("ENDLIST", 30*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
	n.waitFor("status idle", 10*time.Second, func() bool { return n.status(ls.ID) == "idle" })
	pollJS(t, tab, 20*time.Second, `document.querySelector('`+panel+`').dataset.streamStatus === 'idle'`, &ok, describe)
	if d := probeDuration(t, ls.Playback.HLSURL); d <= 2 {
		t.Errorf("the recording lasts %.3f s, want more than 2", d)
	}
	if v := probeVideo(t, ls.Playback.HLSURL); !strings.HasPrefix(v, "h264,") {
		t.Errorf("recording video %q, want h264", v)
	}
	if a := probeAudio(t, ls.Playback.HLSURL); a != "aac" {
		t.Errorf("recording audio %q, want aac", a)
	}
	_, metrics := n.get("/metrics", "")
	if metric(metrics, "shoal_ingest_bytes_total", `protocol="whip"`) == 0 {
		t.Error("no WHIP ingest bytes in /metrics")
	}
	t.Logf("screenshots in %s", shots)
}

// TestWatchRealtimeMode: ffmpeg publishes over RTMP; the watch page opened
// with ?mode=realtime plays over WHEP (Chromium decodes more and more
// frames); the toggle switches to HLS, which ends the WebRTC session, and
// back; leaving the page ends its session; when the broadcast ends the page
// waits for the next one.
func TestWatchRealtimeMode(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("real time")
	pub := publish(t, clip(t, 30), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.waitFor("the stream live", 15*time.Second, func() bool { return n.status(ls.ID) == "live" })
	b := browser.Start(t, browser.WithFlags(browser.FakeMediaFlags...))
	tab := b.NewTab(t)
	shots := screenshotDir(t)
	describe := `JSON.stringify({mode: document.body.dataset.mode, status: document.body.dataset.status, engine: document.getElementById('player').dataset.engine,
		err: document.body.dataset.realtimeError, conn: window.shoalRealtime && window.shoalRealtime.pc && window.shoalRealtime.pc.connectionState,
		w: document.querySelector('video').videoWidth, t: document.querySelector('video').currentTime})`

	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?mode=realtime")); err != nil {
		t.Fatal(err)
	}
	var ok bool
	pollJS(t, tab, 30*time.Second, `document.body.dataset.mode === 'realtime' && document.getElementById('player').dataset.engine === 'webrtc'`, &ok, describe)
	var first float64
	pollJS(t, tab, 30*time.Second, `(async () => { const n = await `+jsFramesDecoded+`; return n > 0 ? n : 0 })()`, &first, describe)
	var later float64
	// 30 fps: two more seconds of pictures.
	pollJS(t, tab, 30*time.Second, fmt.Sprintf(`(async () => { const n = await %s; return n >= %d ? n : 0 })()`, jsFramesDecoded, int(first)+60), &later, describe)
	t.Logf("framesDecoded %v, then %v", first, later)
	var w int
	evalJS(t, tab, `document.querySelector('video').videoWidth`, &w)
	if w != 640 {
		t.Errorf("video width %d over WebRTC, want 640", w)
	}
	var label string
	evalJS(t, tab, `(document.getElementById('play-mode') || {}).textContent || ''`, &label)
	if !strings.Contains(label, "real time") {
		t.Errorf("mode label %q, want it to say real time", label)
	}
	_ = tab.Screenshot(filepath.Join(shots, "app-watch-realtime.png"))
	_, metrics := n.get("/metrics", "")
	if v := metric(metrics, "shoal_whep_viewers", ""); v != 1 {
		t.Errorf("shoal_whep_viewers = %v, want 1", v)
	}

	// Back to HLS: the WHEP session ends (DELETE) and hls.js plays.
	if err := tab.Run(10*time.Second, chromedp.Click("#mode-toggle", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 45*time.Second, `document.body.dataset.mode === 'hls' && document.getElementById('player').dataset.engine === 'hls.js' &&
		document.querySelector('video').currentTime > 1 && !location.search.includes('mode=realtime')`, &ok, describe)
	n.waitFor("the WHEP session to end", 10*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_whep_viewers", "") == 0
	})
	// And real time again, from the toggle.
	if err := tab.Run(10*time.Second, chromedp.Click("#mode-toggle", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 30*time.Second, `(async () => document.getElementById('player').dataset.engine === 'webrtc' && (await `+jsFramesDecoded+`) > 30)()`, &ok, describe)
	if errs := tab.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}

	// A second viewer leaves the page: its session ends with it.
	second := b.NewTab(t)
	if err := second.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?mode=realtime")); err != nil {
		t.Fatal(err)
	}
	pollJS(t, second, 30*time.Second, `(async () => (await `+jsFramesDecoded+`) > 0)()`, &ok, describe)
	n.waitFor("two WHEP viewers", 10*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_whep_viewers", "") == 2
	})
	if err := second.Run(10*time.Second, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	n.waitFor("the WHEP session to end with the page", 15*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_whep_viewers", "") == 1
	})

	// The broadcast ends: the page says so and waits for the next one, in
	// real time again.
	_ = pub.Process.Kill()
	pollJS(t, tab, 40*time.Second, `document.body.dataset.status === 'idle' && document.body.dataset.mode === 'realtime-pending' &&
		document.querySelector('.overlay').innerText.includes('ended')`, &ok, describe)
	n.waitFor("no WHEP viewer", 15*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_whep_viewers", "") == 0
	})
	for _, e := range tab.Errors() {
		// The page DELETEs its session, which the server may have ended.
		if !strings.Contains(e, "404 (Not Found) "+n.http+"/v1/whep/"+ls.ID+"/") {
			t.Errorf("page error after the broadcast: %s", e)
		}
	}
}
