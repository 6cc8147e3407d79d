package app

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/browser"
	"github.com/shoal-video/shoal/p2p/peer"
)

// p2pBrowserFlags let Chromium's peer connections use the loopback
// interface and plain host candidates (no mDNS names, which a Go peer does
// not resolve): viewers on one machine.
var p2pBrowserFlags = []string{"--allow-loopback-in-peer-connection", "--disable-features=WebRtcHideLocalIpsWithMdns"}

// p2pStats is what the page's P2P did (window.shoalP2PStats) and what its
// verifying loader delivered.
type p2pStats struct {
	Enabled       bool  `json:"enabled"`
	HTTPBytes     int64 `json:"http_bytes"`
	P2PBytes      int64 `json:"p2p_bytes"`
	P2PSegments   int   `json:"p2p_segments"`
	UploadedBytes int64 `json:"uploaded_bytes"`
	PeersDropped  int   `json:"peers_dropped"`
	BadReports    int   `json:"bad_reports"`
	Delivery      *deliveryState
	Buffered      float64
	Duration      float64
	Display       string
	Asked         int `json:"asked"`
	Offered       int `json:"offered"`
	Failed        int `json:"failed"`
	Debug         any
}

const p2pStatsJS = `JSON.stringify((() => { const s = window.shoalP2PStats ? window.shoalP2PStats() : {};
  const v = document.querySelector('video'); const el = document.getElementById('p2p-share');
  s.Delivery = JSON.parse(` + deliveryJS + `);
  s.Buffered = v && v.buffered.length ? v.buffered.end(v.buffered.length - 1) : 0;
  s.Duration = v && isFinite(v.duration) ? v.duration : 0;
  s.Display = el && !el.hidden ? el.textContent : '';
  const p = window.shoalP2P;
  s.Debug = p ? {ahead: p.ahead(), swarms: [...p.swarms.entries()].map(([k, w]) => ({k, dead: w.dead, peer: w.peer, rs: w.ws && w.ws.readyState, links: w.links.size}))} : null;
  return s; })())`

func readP2P(t *testing.T, tab *browser.Tab) p2pStats {
	t.Helper()
	var s string
	if err := tab.Run(5*time.Second, chromedp.Evaluate(p2pStatsJS, &s)); err != nil {
		t.Fatal(err)
	}
	var st p2pStats
	if err := json.Unmarshal([]byte(s), &st); err != nil {
		t.Fatalf("p2p stats %q: %v", s, err)
	}
	return st
}

// longVideo uploads a clip of seconds to n and waits until it is ready.
func longVideo(t *testing.T, n *node, title string, seconds int) video {
	t.Helper()
	code, b := n.do(http.MethodPost, "/v1/videos", testAdminKey, map[string]string{"title": title})
	if code != http.StatusCreated {
		t.Fatalf("create video: %d %s", code, b)
	}
	var v video
	_ = json.Unmarshal(b, &v)
	if code, b := putFile(t, v.Upload.DirectURL, testAdminKey, testutil.MakeMP4(t, 426, 240, seconds)); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, b)
	}
	v = n.waitVideo(v.ID, 120*time.Second)
	if v.Status != "ready" {
		t.Fatalf("video: %+v", v)
	}
	return v
}

// TestP2PBrowser: peer-assisted delivery between real browsers and with a
// Go peer, on a real node with a VOD video.
//
//  1. Two headless Chromium browsers (separate profiles) watch the same
//     video: the second gets segments from the first over a WebRTC data
//     channel, each verified against the signed manifest (the bytes it
//     played are the origin's), and the tracker counts the P2P bytes. A Go
//     peer gets a segment from the browsers too.
//  2. The browsers leave; a Go peer (p2p/peer) that serves tampered bytes
//     (one byte flipped) holds every segment: a browser that asks it gets
//     its bytes over the data channel, finds they fail verification, drops
//     it, reports it to the tracker (bad) and plays the origin's bytes over
//     HTTP. The browser and the Go peer speak one protocol.
//  3. With ?p2p=0 the page never joins the swarm; the viewer's switch
//     leaves it and is remembered.
func TestP2PBrowser(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	v := longVideo(t, n, "p2p", 24)
	b1 := browser.Start(t, browser.WithFlags(p2pBrowserFlags...))
	b2 := browser.Start(t, browser.WithFlags(p2pBrowserFlags...))
	watch := n.http + "/watch/" + v.ID + "?player=hlsjs"

	originSHA := map[string]string{}
	checkPlayed := func(who string, d *deliveryState) {
		t.Helper()
		if d == nil || len(d.Delivered) == 0 {
			t.Fatalf("%s: nothing delivered", who)
		}
		for _, o := range d.Delivered {
			want, ok := originSHA[o.Path]
			if !ok {
				code, body := n.get(o.Path, "")
				if code != http.StatusOK {
					t.Fatalf("origin %s: %d", o.Path, code)
				}
				s := sha256.Sum256(body)
				want = hex.EncodeToString(s[:])
				originSHA[o.Path] = want
			}
			if o.SHA256 != want {
				t.Fatalf("%s played %s with SHA-256 %s (from %q); the origin published %s", who, o.Path, o.SHA256, o.Node, want)
			}
		}
		if len(d.Failures) != 0 {
			t.Fatalf("%s: verification failures %+v", who, d.Failures)
		}
	}
	// Everything buffered: the first viewer holds every segment it may
	// serve (at most the last 30).
	const allBuffered = `(() => { const v = document.querySelector('video'); const s = window.shoalP2PStats && window.shoalP2PStats();
		return !!v && !!s && s.enabled && isFinite(v.duration) && v.buffered.length > 0 && v.buffered.end(v.buffered.length - 1) > v.duration - 0.5 })()`

	// 1. Two browsers.
	tab1 := b1.NewTab(t)
	if err := tab1.Run(20*time.Second, chromedp.Navigate(watch)); err != nil {
		t.Fatal(err)
	}
	if err := tab1.WaitFor(60*time.Second, allBuffered, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	s1 := readP2P(t, tab1)
	checkPlayed("the first viewer", s1.Delivery)
	if s1.HTTPBytes == 0 {
		t.Fatalf("the first viewer counted no HTTP bytes: %+v", s1)
	}
	tab2 := b2.NewTab(t)
	if err := tab2.Run(20*time.Second, chromedp.Navigate(watch)); err != nil {
		t.Fatal(err)
	}
	const gotFromPeer = `(() => { const v = document.querySelector('video'); const s = window.shoalP2PStats && window.shoalP2PStats();
		return !!v && !!s && s.p2p_segments >= 1 && isFinite(v.duration) && v.buffered.length > 0 && v.buffered.end(v.buffered.length - 1) > v.duration - 0.5 })()`
	if err := tab2.WaitFor(60*time.Second, gotFromPeer, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	s2 := readP2P(t, tab2)
	checkPlayed("the second viewer", s2.Delivery)
	if s2.P2PSegments < 1 || s2.P2PBytes == 0 || s2.PeersDropped != 0 {
		t.Fatalf("the second viewer: %+v", s2)
	}
	fromPeers := 0
	for _, o := range s2.Delivery.Delivered {
		if o.Node == "p2p" {
			fromPeers++
		}
	}
	if fromPeers != s2.P2PSegments {
		t.Fatalf("the second viewer counts %d segments from peers, its loader delivered %d", s2.P2PSegments, fromPeers)
	}
	if !strings.HasPrefix(s2.Display, "P2P ") {
		t.Errorf("the watch page shows %q as its P2P share", s2.Display)
	}
	if err := tab1.WaitFor(10*time.Second, `window.shoalP2PStats().uploaded_bytes > 0`, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	t.Logf("second viewer: %d segments (%d bytes) from peers, %d bytes over HTTP; first viewer uploaded %d bytes",
		s2.P2PSegments, s2.P2PBytes, s2.HTTPBytes, readP2P(t, tab1).UploadedBytes)

	// A Go peer gets a segment the browsers hold from one of them (it
	// offers, a browser answers), verified.
	keys := n.contentKeys()
	var segPath string
	for _, o := range s2.Delivery.Delivered {
		if o.Node == "p2p" {
			segPath = o.Path
		}
	}
	parts := strings.Split(segPath, "/") // "", "hls", id, rendition, name
	if len(parts) != 5 {
		t.Fatalf("delivered path %q", segPath)
	}
	{
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cfg := peerConfig(n.http, v.ID, parts[3], keys)
		// Connecting (ICE, DTLS, SCTP) on a loaded machine: room enough
		// that the segment does not fall back to HTTP.
		cfg.PeerTimeout = 20 * time.Second
		g, err := peer.Join(ctx, cfg)
		if err != nil {
			cancel()
			t.Fatal(err)
		}
		data, from, err := g.Fetch(ctx, parts[4])
		cancel()
		_ = g.Close()
		if err != nil || from != peer.SourceP2P {
			t.Fatalf("the Go peer's fetch of %s from the browsers: from %q, %v", parts[4], from, err)
		}
		sum := sha256.Sum256(data)
		if hex.EncodeToString(sum[:]) != originSHA[segPath] {
			t.Fatalf("the Go peer got other bytes of %s than the origin's", segPath)
		}
	}
	// Stats reach the tracker (every 10 s, and when a page leaves).
	for _, tab := range []*browser.Tab{tab1, tab2} {
		if err := tab.Run(10*time.Second, chromedp.Navigate("about:blank")); err != nil {
			t.Fatal(err)
		}
	}
	n.waitFor("the tracker to count the P2P bytes", 20*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_p2p_bytes_total", `source="p2p"`) >= float64(s2.P2PBytes) && metric(m, "shoal_p2p_peers", "") == 0
	})
	_, m := n.get("/metrics", "")
	if got := metric(m, "shoal_p2p_violations_total", ""); got != 0 {
		t.Fatalf("the tracker closed %v sockets for protocol violations", got)
	}

	// 2. A Go peer serving tampered bytes.
	code, master := n.get("/hls/"+v.ID+"/master.m3u8", "")
	if code != http.StatusOK {
		t.Fatalf("master: %d", code)
	}
	var bad []*peer.Peer
	for _, l := range strings.Split(string(master), "\n") {
		if l == "" || strings.HasPrefix(l, "#") {
			continue
		}
		rendition, _, _ := strings.Cut(l, "/")
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		cfg := peerConfig(n.http, v.ID, rendition, keys)
		cfg.Mutate = func(b []byte) []byte {
			b[len(b)/2] ^= 0x01
			return b
		}
		p, err := peer.Join(ctx, cfg)
		if err != nil {
			cancel()
			t.Fatalf("join %s: %v", rendition, err)
		}
		t.Cleanup(func() { _ = p.Close() })
		code, pl := n.get("/hls/"+v.ID+"/"+rendition+"/index.m3u8", "")
		if code != http.StatusOK {
			t.Fatalf("playlist %s: %d", rendition, code)
		}
		objs, _, _ := manifest.PlaylistObjects(pl)
		for _, o := range objs {
			if o.Kind != manifest.KindSegment {
				continue
			}
			if _, _, err := p.Fetch(ctx, o.URI); err != nil {
				t.Fatalf("the Go peer's fetch of %s: %v", o.URI, err)
			}
		}
		if err := p.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		cancel()
		bad = append(bad, p)
	}
	tab3 := b1.NewTab(t)
	if err := tab3.Run(20*time.Second, network.ClearBrowserCache(), chromedp.Navigate(watch)); err != nil {
		t.Fatal(err)
	}
	const caught = `(() => { const v = document.querySelector('video'); const s = window.shoalP2PStats && window.shoalP2PStats();
		return !!v && !!s && s.peers_dropped >= 1 && isFinite(v.duration) && v.buffered.length > 0 && v.buffered.end(v.buffered.length - 1) > v.duration - 0.5 })()`
	if err := tab3.WaitFor(60*time.Second, caught, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	s3 := readP2P(t, tab3)
	checkPlayed("the viewer offered a tampering peer", s3.Delivery)
	if s3.P2PSegments != 0 || s3.P2PBytes != 0 || s3.BadReports < 1 {
		t.Fatalf("the viewer offered a tampering peer: %+v", s3)
	}
	var uploaded int64
	for _, p := range bad {
		uploaded += p.Stats().UploadedBytes
	}
	if uploaded == 0 {
		t.Fatal("the Go peer uploaded nothing: the browser never got its (tampered) bytes over the data channel")
	}
	n.waitFor("the tracker to count the report", 10*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_p2p_bad_reports_total", "") >= 1
	})
	t.Logf("tampering Go peer: uploaded %d bytes, dropped by the browser (%d dropped, %d reported), which played %d bytes over HTTP",
		uploaded, s3.PeersDropped, s3.BadReports, s3.HTTPBytes)

	// 3. ?p2p=0: no swarm.
	if err := tab3.Run(10*time.Second, chromedp.Navigate("about:blank")); err != nil {
		t.Fatal(err)
	}
	n.waitFor("only the Go peers in the swarms", 10*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_p2p_peers", "") == float64(len(bad))
	})
	tab4 := b2.NewTab(t)
	if err := tab4.Run(20*time.Second, chromedp.Navigate(watch+"&p2p=0")); err != nil {
		t.Fatal(err)
	}
	if err := tab4.WaitFor(60*time.Second, `(() => { const d = window.shoalDelivery; return !!d && d.verified >= 3 })()`, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	s4 := readP2P(t, tab4)
	_, m = n.get("/metrics", "")
	if s4.Enabled || metric(m, "shoal_p2p_peers", "") != float64(len(bad)) {
		t.Fatalf("with ?p2p=0: %+v, %v peers on the tracker", s4, metric(m, "shoal_p2p_peers", ""))
	}

	// 4. The viewer's switch: off leaves the swarms at once, and stays off
	// (localStorage) on the next visit.
	tab5 := b2.NewTab(t)
	if err := tab5.Run(20*time.Second, chromedp.Navigate(watch)); err != nil {
		t.Fatal(err)
	}
	if err := tab5.WaitFor(60*time.Second, `(() => { const s = window.shoalP2PStats && window.shoalP2PStats(); const d = window.shoalDelivery;
		return !!s && s.enabled && !!d && d.verified >= 3 && document.getElementById('p2p-toggle').getAttribute('aria-pressed') === 'true' })()`, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	n.waitFor("the viewer in the swarm", 10*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_p2p_peers", "") > float64(len(bad))
	})
	if err := tab5.Run(10*time.Second, chromedp.Click("#p2p-toggle", chromedp.ByID)); err != nil {
		t.Fatal(err)
	}
	n.waitFor("the viewer out of the swarm", 10*time.Second, func() bool {
		_, m := n.get("/metrics", "")
		return metric(m, "shoal_p2p_peers", "") == float64(len(bad))
	})
	if err := tab5.Run(20*time.Second, chromedp.Navigate(watch)); err != nil {
		t.Fatal(err)
	}
	if err := tab5.WaitFor(60*time.Second, `(() => { const s = window.shoalP2PStats && window.shoalP2PStats(); const d = window.shoalDelivery;
		return !!s && !s.enabled && !!d && d.verified >= 3 && localStorage.getItem('shoal.p2p') === 'off'
			&& document.getElementById('p2p-toggle').getAttribute('aria-pressed') === 'false' })()`, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	_, m = n.get("/metrics", "")
	if got := metric(m, "shoal_p2p_peers", ""); got != float64(len(bad)) {
		t.Fatalf("with the switch off, %v peers on the tracker, want the %d Go peers", got, len(bad))
	}
}

// TestP2PBrowserLive: two Chromium browsers watch a live stream (plain
// HLS: LL-HLS off, see the README on parts) published with the FFmpeg CLI,
// through an edge: both join the swarm on the edge's tracker, and one gets
// live segments from the other over a data channel, verified.
func TestP2PBrowserLive(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_HLS_PART_DURATION=0")
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream("p2p live")
	pub := publish(t, clip(t, 90), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.firstSegment(ls.ID, "source")
	b1 := browser.Start(t, browser.WithFlags(p2pBrowserFlags...))
	b2 := browser.Start(t, browser.WithFlags(p2pBrowserFlags...))
	watch := n.http + "/watch/" + ls.ID + "?player=hlsjs"
	const playing = `(() => { const v = document.querySelector('video'); const s = window.shoalP2PStats && window.shoalP2PStats();
		return !!v && !!s && s.enabled && v.currentTime > 2 && window.shoalDelivery.verified >= 4 })()`
	tab1 := b1.NewTab(t)
	if err := tab1.Run(20*time.Second, chromedp.Navigate(watch)); err != nil {
		t.Fatal(err)
	}
	if err := tab1.WaitFor(60*time.Second, playing, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	tab2 := b2.NewTab(t)
	if err := tab2.Run(20*time.Second, chromedp.Navigate(watch)); err != nil {
		t.Fatal(err)
	}
	// Which of the two is ahead of the other at the live edge (and so
	// serves it) depends on their latencies: the second viewer gets the
	// segments before its playhead from the first, and either may get the
	// newest ones from the other.
	if err := tab2.WaitFor(60*time.Second, playing, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	var s1, s2 p2pStats
	defer func() {
		if t.Failed() {
			for i, s := range []p2pStats{s1, s2} {
				s.Delivery = nil
				t.Logf("viewer %d: %+v", i+1, s)
			}
		}
	}()
	n.waitFor("a viewer to get a live segment from the other", 60*time.Second, func() bool {
		s1, s2 = readP2P(t, tab1), readP2P(t, tab2)
		return s1.P2PSegments+s2.P2PSegments >= 1
	})
	for _, s := range []p2pStats{s1, s2} {
		d := s.Delivery
		if d == nil || d.Node == "" || d.Node == "origin" || len(d.Failures) != 0 || s.PeersDropped != 0 {
			t.Fatalf("a viewer played from %q (not the edge?): %+v", d.Node, s)
		}
		for _, o := range d.Delivered {
			code, body := n.get(o.Path, "")
			if code != http.StatusOK {
				continue // left the live window
			}
			sum := sha256.Sum256(body)
			if want := hex.EncodeToString(sum[:]); o.SHA256 != want {
				t.Fatalf("a viewer played %s with SHA-256 %s (from %q); the origin published %s", o.Path, o.SHA256, o.Node, want)
			}
		}
	}
	for _, tab := range []*browser.Tab{tab1, tab2} {
		if err := tab.Run(10*time.Second, chromedp.Navigate("about:blank")); err != nil {
			t.Fatal(err)
		}
	}
	if s1.UploadedBytes+s2.UploadedBytes == 0 {
		t.Fatalf("the viewers got %d bytes from peers and uploaded none", s1.P2PBytes+s2.P2PBytes)
	}
	var em []byte
	n.waitFor("the edge's tracker to count the P2P bytes", 20*time.Second, func() bool {
		_, em = httpGet(t, e.url+"/metrics")
		return metric(em, "shoal_p2p_bytes_total", `source="p2p"`) >= float64(s1.P2PBytes+s2.P2PBytes)
	})
	t.Logf("live through the edge: from peers, the first viewer got %d segments (%d bytes), the second %d (%d bytes); over HTTP %d and %d bytes; edge tracker counts p2p=%v",
		s1.P2PSegments, s1.P2PBytes, s2.P2PSegments, s2.P2PBytes, s1.HTTPBytes, s2.HTTPBytes, metric(em, "shoal_p2p_bytes_total", `source="p2p"`))
	if got := metric(em, "shoal_p2p_violations_total", ""); got != 0 {
		t.Fatalf("the edge's tracker closed %v sockets for protocol violations", got)
	}
}

// TestP2PBrowserLowLatency: a browser playing a low-latency live stream
// loads parts, never whole segments; it puts each segment together from
// its verified parts once a signed manifest lists it, and serves it: a Go
// peer gets a live segment from it over a data channel, verified.
func TestP2PBrowserLowLatency(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("p2p ll")
	pub := publish(t, clip(t, 90), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.firstSegment(ls.ID, "source")
	b := browser.Start(t, browser.WithFlags(p2pBrowserFlags...))
	tab := b.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	// Playing from parts, with whole segments put together to serve.
	const playingLL = `(() => { const v = document.querySelector('video'); const p = window.shoalPlayer; const q = window.shoalP2P;
		const i = p && p.latencyInfo(); return !!v && !!i && i.lowLatency && v.currentTime > 4 && !!q
			&& [...q.store.map.keys()].some((k) => k.startsWith('source/')) })()`
	if err := tab.WaitFor(60*time.Second, playingLL, p2pStatsJS); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	cfg := peerConfig(n.http, ls.ID, "source", n.contentKeys())
	cfg.PeerTimeout = 20 * time.Second
	g, err := peer.Join(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer g.Close()
	// What the browser holds: the segments it assembled (the newest ones
	// it has; the Go peer asks for each at most once).
	asked := map[string]bool{}
	var got string
	n.waitFor("the Go peer to get a segment the browser assembled", 60*time.Second, func() bool {
		var held []string
		if err := tab.Run(5*time.Second, chromedp.Evaluate(`[...window.shoalP2P.store.map.keys()].filter((k) => k.startsWith('source/')).map((k) => k.slice(7))`, &held)); err != nil {
			t.Fatal(err)
		}
		for i := len(held) - 1; i >= 0; i-- {
			name := held[i]
			if asked[name] {
				continue
			}
			asked[name] = true
			data, from, err := g.Fetch(ctx, name)
			if err != nil {
				t.Logf("fetch %s: %v", name, err)
				return false
			}
			code, body := n.get("/hls/"+ls.ID+"/source/"+name, "")
			if code == http.StatusOK && !bytes.Equal(body, data) {
				t.Fatalf("the Go peer got other bytes of %s than the origin's", name)
			}
			if from == peer.SourceP2P {
				got = name
				return true
			}
			t.Logf("%s came over HTTP", name)
			return false
		}
		return false
	})
	s := readP2P(t, tab)
	if s.UploadedBytes == 0 || s.Delivery == nil || len(s.Delivery.Failures) != 0 {
		t.Fatalf("the browser: %+v", s)
	}
	for _, o := range s.Delivery.Delivered {
		if strings.HasSuffix(o.Path, "/source/"+got) {
			t.Fatalf("the browser loaded %s whole; the test wants one put together from parts", got)
		}
	}
	t.Logf("low latency: the browser served %s (put together from its parts) to a Go peer; uploaded %d bytes", got, s.UploadedBytes)
}
