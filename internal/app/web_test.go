package app

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// The watch page in headless Chromium (hls.js forced) plays what the real
// pipeline made: a VOD from the worker, and a live stream published with
// the ffmpeg CLI over RTMP.
func TestWatchPagePlaysWorkerVODAndLive(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	b := browser.Start(t)
	v := readyVideo(t, n, map[string]string{"title": "Made by the worker"})
	shots := os.Getenv("SHOAL_SCREENSHOT_DIR")
	if shots == "" {
		shots = t.TempDir()
	}
	const playing = `(() => { const v = document.querySelector('video'); return !!v && v.currentTime > 3 && v.videoWidth > 0 })()`
	const state = `JSON.stringify((() => { const v = document.querySelector('video'); return v ? {t: v.currentTime, w: v.videoWidth, err: v.error && v.error.code} : null })())`

	tab := b.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+v.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	if err := tab.WaitFor(45*time.Second, playing, state); err != nil {
		t.Fatal(err)
	}
	if errs := tab.Errors(); len(errs) > 0 {
		t.Fatalf("page errors on the VOD watch page: %v", errs)
	}
	_ = tab.Screenshot(filepath.Join(shots, "app-watch-vod.png"))

	ls := n.createStream("browser live")
	pub := publish(t, clip(t, 20), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.waitFor("the live master playlist", 15*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == http.StatusOK
	})
	live := b.NewTab(t)
	if err := live.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	if err := live.WaitFor(45*time.Second, playing, state); err != nil {
		t.Fatal(err)
	}
	var badge string
	_ = live.Run(5*time.Second, chromedp.Evaluate(`(document.getElementById('status-badge')||{}).textContent || ''`, &badge))
	if !strings.EqualFold(badge, "live") {
		t.Errorf("live badge %q", badge)
	}
	_ = live.Screenshot(filepath.Join(shots, "app-watch-live.png"))
	t.Logf("screenshots in %s", shots)
}
