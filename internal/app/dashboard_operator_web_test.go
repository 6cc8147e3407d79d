package app

import (
	"encoding/json"
	"math"
	"net/http"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// TestDashboardOperatorViews: the dashboard's operator and analytics views
// on the real APIs (issue 18, parts B and C), in headless Chromium. A video
// is played through a real edge in one tab; in the dashboard the video's
// Analytics show the view with the watch time the player measured (within
// 3 s), the edge's page shows the session and its credited bytes as GET
// /v1/nodes/{id}/usage has them, and the epoch's report lists the edge with
// the whole reward pool.
func TestDashboardOperatorViews(t *testing.T) {
	t.Parallel()
	// No audits: the edge's credit is what the viewer confirmed, exactly.
	n := startNode(t, "SHOAL_ROUTE_AUDIT_INTERVAL=0")
	v := readyVideo(t, n, map[string]string{"title": "measured"})
	e := startEdge(t, n, n.nodeToken(), "eu-test")
	var id string
	n.waitFor("the edge to join", 30*time.Second, func() bool {
		for _, ni := range n.nodes() {
			if ni.PublicURL == e.url {
				id = ni.ID
				return true
			}
		}
		return false
	})
	b := browser.Start(t)
	shots := screenshotDir(t)

	// Watch 5 s of the video through the edge, then send the final beacon.
	viewer := b.NewTab(t)
	var ok bool
	if err := viewer.Run(30*time.Second, chromedp.Navigate(n.http+"/watch/"+v.ID)); err != nil {
		t.Fatal(err)
	}
	evalJS(t, viewer, `(() => { const v = document.querySelector('video'); v.muted = true; return v.play().then(() => true, () => true) })()`, &ok)
	pollJS(t, viewer, 30*time.Second, `document.querySelector('video').currentTime > 5`, &ok, `document.body.innerText`)
	var sent struct {
		WatchMs int64            `json:"watch_ms"`
		Bytes   map[string]int64 `json:"bytes"`
	}
	// What was really watched: the stretches of the timeline the video
	// element played (the video was never seeked).
	var played float64
	evalJS(t, viewer, `(() => { const v = document.querySelector('video'); v.pause(); let s = 0;
		for (let i = 0; i < v.played.length; i++) s += v.played.end(i) - v.played.start(i); return s })()`, &played)
	var snap string
	evalJS(t, viewer, `(() => {
		return window.shoalBeacons.flush(true).then(() => JSON.stringify(window.shoalBeacons.snapshot())) })()`, &snap)
	if err := json.Unmarshal([]byte(snap), &sent); err != nil || sent.Bytes[id] == 0 {
		t.Fatalf("the player's last beacon %s (%v): no bytes from the edge %s", snap, err, id)
	}
	t.Logf("the player sent: %s", snap)

	// The API has it.
	n.waitFor("the view in the analytics", 20*time.Second, func() bool {
		code, body := n.get("/v1/analytics/videos/"+v.ID, testAdminKey)
		var a struct {
			Totals struct {
				Views int64 `json:"views"`
			} `json:"totals"`
		}
		return code == http.StatusOK && json.Unmarshal(body, &a) == nil && a.Totals.Views == 1
	})
	var credited int64
	n.waitFor("the edge credited what the viewer confirmed", 20*time.Second, func() bool {
		code, body := n.get("/v1/nodes/"+id+"/usage", testAdminKey)
		var u struct {
			Epochs []struct {
				CreditedBytes int64 `json:"credited_bytes"`
			} `json:"epochs"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &u) != nil {
			return false
		}
		credited = 0
		for _, r := range u.Epochs {
			credited += r.CreditedBytes
		}
		return credited == sent.Bytes[id]
	})

	tab := b.NewTab(t)
	describe := `document.body.innerText.slice(0, 3000)`
	if err := tab.Run(30*time.Second, chromedp.Navigate(n.http+"/#analytics/video/"+v.ID), chromedp.WaitVisible("#api-key", chromedp.ByID),
		chromedp.SendKeys("#api-key", testAdminKey+kb.Enter, chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	stat := func(sel, name string) string {
		var s string
		pollJS(t, tab, 15*time.Second, `(() => { const e = document.querySelector('`+sel+` [data-stat="`+name+`"] .stat-value'); return e && e.textContent })()`, &s, describe)
		return s
	}
	if got := stat("#analytics-totals", "views"); got != "1" {
		t.Errorf("Analytics: %s views, want 1", got)
	}
	watch := stat("#analytics-totals", "watch")
	if secs := seconds(t, watch); math.Abs(secs-played) > 3 {
		t.Errorf("Analytics: watch time %q, the video played %.1f s", watch, played)
	}
	t.Logf("watch time: analytics %q, played %.1f s, the player's beacon %d ms", watch, played, sent.WatchMs)
	var charts int
	evalJS(t, tab, `document.querySelectorAll('#analytics-body svg.chart-svg[role=img]').length`, &charts)
	if charts != 4 {
		t.Errorf("%d charts in the Analytics tab, want 4", charts)
	}
	_ = tab.FullScreenshot(filepath.Join(shots, "app-dashboard-analytics-real.png"))

	// The edge's page: the session it served and its credited bytes.
	row := `#nodes-table tr[data-id="` + id + `"]`
	if err := tab.Run(10*time.Second, chromedp.Click(`.tabs a[href="#nodes"]`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 20*time.Second, `!!document.querySelector('`+row+` .node-open')`, &ok, describe)
	if err := tab.Run(10*time.Second, chromedp.Click(row+` .node-open`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	if got := stat("#node-qoe", "views"); got != "1" {
		t.Errorf("node page: %s sessions, want 1", got)
	}
	var shown string
	pollJS(t, tab, 15*time.Second, `(() => { const c = document.querySelector('#node-usage td.credited'); return c && c.textContent })()`, &shown, describe)
	var want string
	evalJS(t, tab, `(() => { const n = `+strconv.FormatInt(credited, 10)+`; const u = ['B','KB','MB','GB','TB']; let i = 0, x = n;
		while (x >= 1000 && i < u.length - 1) { x /= 1000; i++; } return (x >= 100 || i === 0 ? Math.round(x) : x.toFixed(1)) + ' ' + u[i] })()`, &want)
	if shown != want {
		t.Errorf("node page: credited %q, the API says %d bytes (%s)", shown, credited, want)
	}

	// The epoch's report: the edge alone, with the whole pool.
	if err := tab.Run(10*time.Second, chromedp.Click(`#epochs > summary`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 15*time.Second, `!!document.querySelector('#epochs-list tbody tr .epoch-open')`, &ok, describe)
	if err := tab.Run(10*time.Second, chromedp.Click(`#epochs-list tbody tr .epoch-open`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	var points string
	pollJS(t, tab, 15*time.Second, `(() => { const r = document.querySelector('#epoch-report tr[data-node="`+id+`"] td.points'); return r && r.textContent })()`, &points, describe)
	if points != "1,000" {
		t.Errorf("epoch report: the edge has %s points, want the whole pool (1,000)", points)
	}
	_ = tab.FullScreenshot(filepath.Join(shots, "app-dashboard-operator-real.png"))
	for _, e := range tab.Errors() {
		t.Errorf("page error: %s", e)
	}
}

// seconds reads a watch time as the dashboard writes it ("45 s", "2 min 5 s").
func seconds(t *testing.T, s string) float64 {
	t.Helper()
	var total float64
	f := strings.Fields(s)
	for i := 0; i+1 < len(f); i += 2 {
		var v float64
		if err := json.Unmarshal([]byte(f[i]), &v); err != nil {
			t.Fatalf("watch time %q: %v", s, err)
		}
		switch f[i+1] {
		case "s":
			total += v
		case "min":
			total += 60 * v
		case "h":
			total += 3600 * v
		default:
			t.Fatalf("watch time %q: unit %q", s, f[i+1])
		}
	}
	return total
}
