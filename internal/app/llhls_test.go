package app

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// hintPosition reads the preload hint of a live LL-HLS playlist: the msn
// and part index it announces ("<prefix>-<msn>-p<k>.m4s").
func hintPosition(t *testing.T, pl string) (uint64, int, string) {
	t.Helper()
	for _, l := range strings.Split(pl, "\n") {
		if rest, ok := strings.CutPrefix(l, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\""); ok {
			uri := strings.TrimSuffix(rest, "\"")
			name := strings.TrimSuffix(uri, ".m4s")
			i := strings.LastIndex(name, "-p")
			j := strings.LastIndex(name[:i], "-")
			msn, err1 := strconv.ParseUint(name[j+1:i], 10, 64)
			k, err2 := strconv.Atoi(name[i+2:])
			if err1 != nil || err2 != nil {
				t.Fatalf("preload hint %q", uri)
			}
			return msn, k, uri
		}
	}
	t.Fatalf("no preload hint in\n%s", pl)
	return 0, 0, ""
}

// LL-HLS end to end: ffmpeg publishes over RTMP, the origin packages parts,
// an edge passes blocking reloads and parts through, and hls.js in
// Chromium plays the stream in low-latency mode from that edge, verified.
func TestLowLatencyThroughEdge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream("low latency")
	pub := publish(t, clip(t, 60), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	playlist := e.url + "/hls/" + ls.ID + "/source/index.m3u8"
	var body string
	n.waitFor("parts in the edge's playlist", 20*time.Second, func() bool {
		resp, b := httpGet(t, playlist)
		body = string(b)
		return resp.StatusCode == 200 && strings.Contains(body, "#EXT-X-PRELOAD-HINT")
	})
	for _, tag := range []string{"#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5", "#EXT-X-PART-INF:PART-TARGET=0.5", "#EXT-X-PART:"} {
		if !strings.Contains(body, tag) {
			t.Fatalf("the live playlist has no %s:\n%s", tag, body)
		}
	}

	// A blocking reload through the edge waits for the hinted part and
	// answers with it listed; the part itself comes through the edge.
	msn, part, hint := hintPosition(t, body)
	url := fmt.Sprintf("%s?_HLS_msn=%d&_HLS_part=%d", playlist, msn, part)
	resp, b := httpGet(t, url)
	if resp.StatusCode != 200 || !strings.Contains(string(b), `#EXT-X-PART:DURATION=`) || !strings.Contains(string(b), `URI="`+hint+`"`) {
		t.Fatalf("blocking reload for %d.%d: %d\n%s", msn, part, resp.StatusCode, b)
	}
	again, _ := httpGet(t, url)
	if cs := again.Header.Get("Cache-Status"); !strings.Contains(cs, "hit") {
		t.Errorf("the same blocking reload again: Cache-Status %q, want a hit", cs)
	}
	pr, pb := httpGet(t, e.url+"/hls/"+ls.ID+"/source/"+hint)
	if pr.StatusCode != 200 || len(pb) == 0 {
		t.Fatalf("the part %s through the edge: %d, %d bytes, %v", hint, pr.StatusCode, len(pb), pr.Header)
	}
	if far, _ := httpGet(t, fmt.Sprintf("%s?_HLS_msn=%d", playlist, msn+5)); far.StatusCode != http.StatusBadRequest {
		t.Errorf("a far-future msn through the edge: %d, want 400", far.StatusCode)
	}

	// hls.js plays it in low-latency mode, from the edge, every object
	// verified against the signed manifests.
	br := browser.Start(t)
	tab := br.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	const playingLL = `(() => { const v = document.querySelector('video'); const d = window.shoalDelivery; const p = window.shoalPlayer;
		const i = p && p.latencyInfo(); return !!v && !!d && !!i && i.lowLatency && v.currentTime > 6 && d.verified >= 10 })()`
	const state = `JSON.stringify({info: window.shoalPlayer && window.shoalPlayer.latencyInfo(), delivery: JSON.parse(` + deliveryJS + `)})`
	if err := tab.WaitFor(60*time.Second, playingLL, state); err != nil {
		t.Fatal(err)
	}
	// Long enough for hls.js to settle at its target latency.
	settled := `(() => { const v = document.querySelector('video'); return !!v && v.currentTime > 20 })()`
	if err := tab.WaitFor(60*time.Second, settled, state); err != nil {
		t.Fatal(err)
	}
	var raw string
	if err := tab.Run(10*time.Second, chromedp.Evaluate(state, &raw)); err != nil {
		t.Fatal(err)
	}
	var got struct {
		Info struct {
			Latency, Measured, Target, PartTarget float64
			LowLatency                            bool
		}
		Delivery deliveryState
	}
	if err := json.Unmarshal([]byte(raw), &got); err != nil {
		t.Fatalf("%v: %s", err, raw)
	}
	if got.Delivery.Node == "" || len(got.Delivery.Failures) != 0 {
		t.Fatalf("played from %q with failures %+v", got.Delivery.Node, got.Delivery.Failures)
	}
	parts := 0
	for _, o := range got.Delivery.Delivered {
		if llPart.MatchString(o.Path) {
			parts++
		}
	}
	if parts == 0 {
		t.Fatalf("the page fetched no part: %+v", got.Delivery.Delivered)
	}
	// Reported, not asserted: wall-clock figures on a loaded CI machine
	// say little (benchmarks/README.md has the measured ones).
	t.Logf("hls.js low-latency through the edge: latency %.2f s (target %.2f s), program-date-time latency %.2f s, %d parts verified of %d objects",
		got.Info.Latency, got.Info.Target, got.Info.Measured, parts, got.Delivery.Verified)
	if errs := tab.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}

// A broadcast ends and the creator goes live again: a viewer who stayed on
// the watch page plays the new broadcast by itself, through the edge, in
// low-latency mode.
func TestWatchPageFollowsANewBroadcast(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream("twice")
	first := publish(t, clip(t, 10), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	n.waitFor("the first broadcast at the edge", 20*time.Second, func() bool {
		resp, b := httpGet(t, e.url+"/hls/"+ls.ID+"/source/index.m3u8")
		return resp.StatusCode == 200 && strings.Contains(string(b), "#EXT-X-PART:")
	})
	br := browser.Start(t)
	tab := br.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	const state = `JSON.stringify({status: document.body.dataset.status, t: (document.querySelector('video') || {}).currentTime,
		delivered: window.shoalDelivery ? window.shoalDelivery.delivered.slice(-3).map((d) => d.path) : []})`
	const playing = `(() => { const v = document.querySelector('video'); return !!v && v.currentTime > 2 && document.body.dataset.status === 'live' })()`
	if err := tab.WaitFor(45*time.Second, playing, state); err != nil {
		t.Fatal(err)
	}
	if err := first.Wait(); err != nil {
		t.Fatalf("first broadcast: %v", err)
	}
	sessionOf := func(pl string) string {
		s := ""
		for _, l := range strings.Split(pl, "\n") {
			if strings.HasSuffix(l, ".m4s") && !strings.HasPrefix(l, "#") {
				s = l[:strings.IndexByte(l, '-')]
			}
		}
		return s
	}
	// The first broadcast is over: its recording ended.
	n.waitFor("the first broadcast's ENDLIST", 30*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
	firstSession := sessionOf(n.playlist(ls.ID, "source/index.m3u8"))
	if err := tab.WaitFor(30*time.Second, `document.body.dataset.status !== 'live'`, state); err != nil {
		t.Fatalf("the page never saw the end: %v", err)
	}
	second := publish(t, clip(t, 30), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer second.Process.Kill()
	var session string
	n.waitFor("the second broadcast's segments", 20*time.Second, func() bool {
		pl := n.playlist(ls.ID, "source/index.m3u8")
		session = sessionOf(pl)
		return session != "" && session != firstSession && !strings.Contains(pl, "#EXT-X-ENDLIST")
	})
	started := time.Now()
	// The page polls, loads the new broadcast and plays its parts.
	newMedia := `(() => { const d = window.shoalDelivery; const v = document.querySelector('video');
		return document.body.dataset.status === 'live' && !!d && !!v && !v.paused &&
			d.delivered.some((o) => o.path.includes('/` + session + `-')) })()`
	if err := tab.WaitFor(30*time.Second, newMedia, state); err != nil {
		t.Fatal(err)
	}
	t.Logf("the page plays the new broadcast (%s) %.1f s after its first segment", session, time.Since(started).Seconds())
}

// The DVR window end to end: a viewer watching live through an edge seeks
// 22 s back (past the live playlist), plays from the DVR playlist there (its segments verified
// against range manifests), and jumps back to live in low-latency mode.
func TestWatchPageDVR(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream("dvr")
	pub := publish(t, clip(t, 120), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	// 30 s of broadcast: the live playlist holds about 12 s, the DVR one
	// all of it.
	n.waitFor("30 s of broadcast at the edge", 60*time.Second, func() bool {
		resp, b := httpGet(t, e.url+"/hls/"+ls.ID+"/source/dvr.m3u8")
		return resp.StatusCode == 200 && strings.Count(string(b), "#EXTINF") >= 15
	})
	resp, b := httpGet(t, e.url+"/hls/"+ls.ID+"/source/dvr.m3u8?_HLS_skip=YES")
	if resp.StatusCode != 200 || !strings.Contains(string(b), "#EXT-X-SKIP:SKIPPED-SEGMENTS=") {
		t.Fatalf("delta update through the edge: %d\n%s", resp.StatusCode, b)
	}
	br := browser.Start(t)
	tab := br.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	const state = `JSON.stringify({dvr: window.shoalPlayer && window.shoalPlayer.dvrInfo(), latency: window.shoalPlayer && window.shoalPlayer.latencyInfo(),
		t: (document.querySelector('video') || {}).currentTime, failures: window.shoalDelivery ? window.shoalDelivery.failures : null})`
	const playingLL = `(() => { const v = document.querySelector('video'); const p = window.shoalPlayer; const i = p && p.latencyInfo();
		return !!v && !!i && i.lowLatency && v.currentTime > 3 })()`
	if err := tab.WaitFor(45*time.Second, playingLL, state); err != nil {
		t.Fatal(err)
	}
	if err := tab.Run(5*time.Second, chromedp.Evaluate(`window.shoalPlayer.seekBack(22)`, nil)); err != nil {
		t.Fatal(err)
	}
	const inDVR = `(() => { const p = window.shoalPlayer, v = document.querySelector('video'), i = p && p.dvrInfo();
		return document.getElementById('player').dataset.dvr === 'true' && i.active && !v.paused && v.readyState >= 3
			&& i.behind > 17 && i.behind < 37 && window.shoalDelivery.failures.length === 0
			&& [...window.shoalDelivery.ranges.values()].some((m) => m.size > 0) })()`
	if err := tab.WaitFor(45*time.Second, inDVR, state); err != nil {
		t.Fatal(err)
	}
	var raw string
	if err := tab.Run(5*time.Second, chromedp.Evaluate(state, &raw)); err != nil {
		t.Fatal(err)
	}
	t.Logf("in the DVR window: %s", raw)
	if err := tab.Run(5*time.Second, chromedp.Evaluate(`window.shoalPlayer.goLive()`, nil)); err != nil {
		t.Fatal(err)
	}
	const live = `(() => { const p = window.shoalPlayer, v = document.querySelector('video'), i = p.dvrInfo(), l = p.latencyInfo();
		return !document.getElementById('player').dataset.dvr && !i.active && !v.paused && v.readyState >= 3
			&& i.behind != null && i.behind < 10 && !!l && l.lowLatency })()`
	if err := tab.WaitFor(45*time.Second, live, state); err != nil {
		t.Fatal(err)
	}
	if errs := tab.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}
