package app

import (
	"bytes"
	"encoding/json"
	"math"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/fetch"
	"github.com/chromedp/chromedp"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// edgeBytesServed is what the edge at url really sent to clients, from its
// own /metrics (heartbeats may lie; this counter does not, in tests).
func edgeBytesServed(t *testing.T, url string) int64 {
	t.Helper()
	resp, body := httpGet(t, url+"/metrics")
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("%s/metrics: %d", url, resp.StatusCode)
	}
	if !bytes.Contains(body, []byte("\nshoal_edge_bytes_served_total ")) {
		t.Fatalf("%s/metrics has no shoal_edge_bytes_served_total", url)
	}
	return int64(metric(body, "shoal_edge_bytes_served_total", ""))
}

// frontProxy adds the header name: value to the tab's requests for URLs
// that match a pattern, as a front proxy of the origin would (a header set
// on every request would make the browser ask the edges for CORS leave to
// send it).
func frontProxy(t *testing.T, tab *browser.Tab, patterns []string, name, value string) {
	t.Helper()
	chromedp.ListenTarget(tab.Ctx, func(ev any) {
		e, ok := ev.(*fetch.EventRequestPaused)
		if !ok {
			return
		}
		h := []*fetch.HeaderEntry{{Name: name, Value: value}}
		for k, v := range e.Request.Headers {
			if s, ok := v.(string); ok && !strings.EqualFold(k, name) {
				h = append(h, &fetch.HeaderEntry{Name: k, Value: s})
			}
		}
		// Not on the event's goroutine, which delivers the answer.
		go func() { _ = chromedp.Run(tab.Ctx, fetch.ContinueRequest(e.RequestID).WithHeaders(h)) }()
	})
	var ps []*fetch.RequestPattern
	for _, p := range patterns {
		ps = append(ps, &fetch.RequestPattern{URLPattern: p})
	}
	if err := tab.Run(10*time.Second, fetch.Enable().WithPatterns(ps)); err != nil {
		t.Fatal(err)
	}
}

// TestCreditWithViewers: the accuracy of delivery accounting with real
// viewers. Two real edges in two regions, one of which claims 3x what it
// served in its heartbeats; the origin audits both every second. A
// headless Chromium viewer in each region (the region header a front
// proxy would set) plays a whole video through its edge, verifying every
// segment and sending beacons. Then, over the accounting epochs:
//   - the honest edge is credited within 5% of what it really served (its
//     own byte counter), its claims match it within 5%;
//   - the cheating edge claims about 3x, and is credited within 5% of
//     what its viewer's beacons and the audits confirmed, and within 5% of
//     what it really served;
//   - the analytics show one view per viewer with the watch time the
//     video elements played (within 3 s), broken down by region.
func TestCreditWithViewers(t *testing.T) {
	t.Parallel()
	// A week-long epoch: the test never straddles two (each epoch credits
	// min(claimed, confirmed) on its own).
	n := startNode(t, "SHOAL_ROUTE_AUDIT_INTERVAL=1s", "SHOAL_ACCOUNTING_EPOCH=168h", "SHOAL_ROUTE_REGION_HEADER=X-Viewer-Region")
	pub := n.contentKey()
	v := longVideo(t, n, "credited", 12)
	token := n.nodeToken()
	honest := startEdge(t, n, token, "eu")
	liar := startEdge(t, n, token, "us", claimFactorEnv+"=3")
	ids := map[string]string{}
	n.waitFor("both edges in /v1/nodes", 20*time.Second, func() bool {
		for _, ni := range n.nodes() {
			ids[ni.PublicURL] = ni.ID
		}
		return ids[honest.url] != "" && ids[liar.url] != ""
	})
	hid, lid := ids[honest.url], ids[liar.url]

	type viewerResult struct {
		played float64
		bytes  map[string]int64
	}
	watch := func(region string) viewerResult {
		b := browser.Start(t)
		tab := b.NewTab(t)
		frontProxy(t, tab, []string{n.http + "/v1/route/*", n.http + "/v1/beacons"}, "X-Viewer-Region", region)
		// No P2P: each viewer's bytes come from its edge.
		if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+v.ID+"?player=hlsjs&p2p=0")); err != nil {
			t.Fatal(err)
		}
		var ok bool
		evalJS(t, tab, `(() => { const v = document.querySelector('video'); v.muted = true; return v.play().then(() => true, () => true) })()`, &ok)
		// ended sends the final beacon by itself.
		pollJS(t, tab, 60*time.Second, `document.querySelector('video').ended`, &ok, `document.body.dataset.deliveryNode + ' ' + document.body.innerText.slice(0, 500)`)
		var r viewerResult
		evalJS(t, tab, `(() => { const v = document.querySelector('video'); let s = 0;
			for (let i = 0; i < v.played.length; i++) s += v.played.end(i) - v.played.start(i); return s })()`, &r.played)
		var snap string
		evalJS(t, tab, `window.shoalBeacons.flush(true).then(() => JSON.stringify(window.shoalBeacons.snapshot()))`, &snap)
		var sent struct {
			Bytes  map[string]int64 `json:"bytes"`
			Failed int              `json:"failed"`
		}
		if err := json.Unmarshal([]byte(snap), &sent); err != nil || sent.Failed != 0 {
			t.Fatalf("viewer in %s: beacon %s (%v)", region, snap, err)
		}
		r.bytes = sent.Bytes
		t.Logf("viewer in %s played %.1f s; its beacon: %s", region, r.played, snap)
		return r
	}
	eu, us := watch("eu"), watch("us")
	if eu.bytes[hid] == 0 || us.bytes[lid] == 0 {
		t.Fatalf("the viewers did not play through their region's edge: eu %v, us %v", eu.bytes, us.bytes)
	}

	// Wait until the heartbeats carry everything the edges served (the
	// audits go on meanwhile, so read what was served after the claims).
	var h, l usageTotals
	var hServed, lServed int64
	n.waitFor("the heartbeats to catch up with what the edges served", 30*time.Second, func() bool {
		h, l = n.usage(hid, testAdminKey, pub), n.usage(lid, testAdminKey, pub)
		hServed, lServed = edgeBytesServed(t, honest.url), edgeBytesServed(t, liar.url)
		return h.claimed >= hServed && l.claimed >= 3*lServed
	})
	t.Logf("honest edge: served %d, claimed %d, confirmed %d by its viewer + %d by %d audits (%d failed), credited %d",
		hServed, h.claimed, h.viewer, h.audit, h.passed, h.failed, h.credited)
	t.Logf("cheating edge: served %d, claimed %d, confirmed %d by its viewer + %d by %d audits (%d failed), credited %d",
		lServed, l.claimed, l.viewer, l.audit, l.passed, l.failed, l.credited)
	if h.viewer != eu.bytes[hid] || l.viewer != us.bytes[lid] {
		t.Errorf("viewer bytes: honest %d (its viewer sent %d), cheating %d (its viewer sent %d)", h.viewer, eu.bytes[hid], l.viewer, us.bytes[lid])
	}
	if !within(h.credited, hServed, 0.05) {
		t.Errorf("the honest edge was credited %d; it served %d", h.credited, hServed)
	}
	if !within(h.claimed, hServed, 0.05) {
		t.Errorf("the honest edge claimed %d; it served %d", h.claimed, hServed)
	}
	if !within(l.claimed, 3*lServed, 0.05) {
		t.Errorf("the cheating edge claimed %d; 3x what it served is %d", l.claimed, 3*lServed)
	}
	if !within(l.credited, l.viewer+l.audit, 0.05) || l.credited > l.viewer+l.audit {
		t.Errorf("the cheating edge was credited %d; its viewer and the audits confirmed %d", l.credited, l.viewer+l.audit)
	}
	if !within(l.credited, lServed, 0.05) {
		t.Errorf("the cheating edge was credited %d; it served %d", l.credited, lServed)
	}
	if h.failed != 0 || l.failed != 0 || h.passed == 0 || l.passed == 0 {
		t.Errorf("audits: honest %d passed, %d failed; cheating %d passed, %d failed", h.passed, h.failed, l.passed, l.failed)
	}

	// The analytics: two views, the watch time the videos played, and one
	// view from each region.
	var a struct {
		Totals struct {
			Views         int64   `json:"views"`
			UniqueViewers int64   `json:"unique_viewers"`
			WatchSeconds  float64 `json:"watch_seconds"`
		} `json:"totals"`
		Breakdown map[string][]struct {
			Value string `json:"value"`
			Views int64  `json:"views"`
		} `json:"breakdown"`
	}
	code, body := n.get("/v1/analytics/videos/"+v.ID, testAdminKey)
	if code != http.StatusOK || json.Unmarshal(body, &a) != nil {
		t.Fatalf("analytics: %d %s", code, body)
	}
	if a.Totals.Views != 2 || a.Totals.UniqueViewers != 2 || math.Abs(a.Totals.WatchSeconds-(eu.played+us.played)) > 3 {
		t.Errorf("analytics: %s; the videos played %.1f s and %.1f s", body, eu.played, us.played)
	}
	regions := map[string]int64{}
	for _, c := range a.Breakdown["country"] {
		regions[strings.ToLower(c.Value)] = c.Views
	}
	if len(regions) != 2 || regions["eu"] != 1 || regions["us"] != 1 {
		t.Errorf("analytics by country: %v", a.Breakdown["country"])
	}
	t.Logf("analytics: %d views, %.1f s watched (played %.1f s), by country %v", a.Totals.Views, a.Totals.WatchSeconds, eu.played+us.played, regions)
}
