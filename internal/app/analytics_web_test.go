package app

import (
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"
	"github.com/chromedp/chromedp/kb"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// TestDashboardAnalyticsTab: the dashboard's Analytics tab, in headless
// Chromium. A live stream card's Analytics link opens the tab on that
// stream (#analytics/live_stream/<id>, which a reload keeps), which asks
// GET /v1/analytics/live-streams/<id> for the last 24 hours by hour;
// choosing "All" asks GET /v1/analytics and puts #analytics in the
// address. The figures are shown (the origin has the analytics API), never
// an error.
func TestDashboardAnalyticsTab(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("analysed")
	b := browser.Start(t)
	tab := b.NewTab(t)
	shots := screenshotDir(t)
	describe := `document.getElementById('panel-analytics') ? document.getElementById('panel-analytics').innerText.slice(0, 2000) : document.body.innerText.slice(0, 500)`
	card := `.card.stream[data-id="` + ls.ID + `"]`
	if err := tab.Run(30*time.Second,
		chromedp.Navigate(n.http+"/"),
		chromedp.WaitVisible("#api-key", chromedp.ByID),
		chromedp.SendKeys("#api-key", testAdminKey+kb.Enter, chromedp.ByID),
		chromedp.WaitVisible(card, chromedp.ByQuery),
		chromedp.Click(card+` a.analytics-link`, chromedp.ByQuery)); err != nil {
		t.Fatal(err)
	}
	// settled: the tab is shown, its request answered and drawn.
	settled := `(() => { const p = document.getElementById('panel-analytics'); const b = document.getElementById('analytics-body');
		return !p.hidden && b && !b.hasAttribute('aria-busy') && (!!b.querySelector('.unavailable') || !!b.querySelector('#analytics-totals')) })()`
	// shown: settled with the figures, not "not available".
	const shown = `(!document.querySelector('#analytics-body .unavailable') && !!document.querySelector('#analytics-body #analytics-totals'))`
	var ok bool
	pollJS(t, tab, 15*time.Second, settled, &ok, describe)
	var st struct {
		Hash, Item, Body string
		Requests         []string
		Current          string
	}
	const state = `(() => ({Hash: location.hash, Item: document.getElementById('analytics-item').value,
		Body: document.getElementById('analytics-body').innerText,
		Current: document.querySelector('.tabs a[aria-current=page]').getAttribute('href'),
		Requests: performance.getEntriesByType('resource').map(e => new URL(e.name).pathname + new URL(e.name).search).filter(p => p.startsWith('/v1/analytics'))}))()`
	evalJS(t, tab, state, &st)
	if st.Hash != "#analytics/live_stream/"+ls.ID || st.Item != "live_stream:"+ls.ID || st.Current != "#analytics" {
		t.Errorf("after the card's Analytics link: %+v", st)
	}
	if !hasRequest(st.Requests, "/v1/analytics/live-streams/"+ls.ID+"?", "bucket=hour") {
		t.Errorf("requests %v: none for the live stream's analytics by hour", st.Requests)
	}
	t.Logf("the tab shows: %q", st.Body)
	_ = tab.Screenshot(filepath.Join(shots, "app-dashboard-analytics.png"))

	// A reload keeps the stream.
	if err := tab.Run(20*time.Second, chromedp.Reload()); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 15*time.Second, settled, &ok, describe)
	evalJS(t, tab, state, &st)
	if st.Item != "live_stream:"+ls.ID || !hasRequest(st.Requests, "/v1/analytics/live-streams/"+ls.ID+"?") {
		t.Errorf("after a reload: %+v", st)
	}

	// All videos and live streams.
	if err := tab.Run(10*time.Second, chromedp.SetValue("#analytics-item", "all:", chromedp.ByID),
		chromedp.Evaluate(`document.getElementById('analytics-item').dispatchEvent(new Event('change')); true`, &ok)); err != nil {
		t.Fatal(err)
	}
	pollJS(t, tab, 15*time.Second, `performance.getEntriesByType('resource').some(e => new URL(e.name).pathname === '/v1/analytics')`, &ok, describe)
	pollJS(t, tab, 15*time.Second, settled, &ok, describe)
	evalJS(t, tab, state, &st)
	if st.Hash != "#analytics" || st.Item != "all:" {
		t.Errorf("after choosing All: %+v", st)
	}
	var loadErrors int
	evalJS(t, tab, `document.querySelectorAll('#panel-analytics .load-error, #toasts .toast-error').length`, &loadErrors)
	if loadErrors != 0 {
		t.Errorf("errors shown: %q", st.Body)
	}
	var figures bool
	evalJS(t, tab, shown, &figures)
	if !figures {
		t.Errorf("the Analytics tab shows no figures: %q", st.Body)
	}
	for _, e := range tab.Errors() {
		t.Errorf("page error: %s", e)
	}
}

// hasRequest reports whether one of the request paths starts with prefix
// and contains all of parts.
func hasRequest(reqs []string, prefix string, parts ...string) bool {
next:
	for _, r := range reqs {
		if !strings.HasPrefix(r, prefix) {
			continue
		}
		for _, p := range parts {
			if !strings.Contains(r, p) {
				continue next
			}
		}
		return true
	}
	return false
}
