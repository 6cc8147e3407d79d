package app

import (
	"bufio"
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/chromedp/cdproto/network"
	"github.com/chromedp/chromedp"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// Verified delivery end to end: an origin, two edges (separate processes
// with their own data dirs), Redis and Chromium playing the watch page.
// The page plays from an edge and checks every segment against the
// origin's signed manifest; an edge whose disk cache was altered while it
// was stopped is caught, routed around, reported and quarantined.

// startEdgeAt runs an edge on a given port and data dir (so that it can
// be restarted as the same node).
func startEdgeAt(t *testing.T, n *node, token string, port int, dir string) *edgeProc {
	t.Helper()
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	e := startEdge(t, n, token, "", fmt.Sprintf("SHOAL_EDGE_ADDR=127.0.0.1:%d", port), "SHOAL_PUBLIC_URL="+url, "SHOAL_DATA_DIR="+dir)
	e.url = url
	return e
}

// deliveryState is what the page's verifying loader did.
type deliveryState struct {
	Node      string `json:"node"`
	Verified  int    `json:"verified"`
	Time      float64
	Failures  []struct{ Node, Kind, URL, Message string } `json:"failures"`
	Delivered []struct {
		Path   string `json:"path"`
		SHA256 string `json:"sha256"`
		Node   string `json:"node"`
	} `json:"delivered"`
}

const deliveryJS = `JSON.stringify((() => { const d = window.shoalDelivery; const v = document.querySelector('video');
  return d ? {node: document.getElementById('player').dataset.deliveryNode, verified: d.verified, Time: v ? v.currentTime : 0,
    failures: d.failures.map(f => ({Node: f.node, Kind: f.kind, URL: f.url, Message: f.message})), delivered: d.delivered} : null })())`

func readDelivery(t *testing.T, tab *browser.Tab) deliveryState {
	t.Helper()
	var s string
	if err := tab.Run(5*time.Second, chromedp.Evaluate(deliveryJS, &s)); err != nil {
		t.Fatal(err)
	}
	var d deliveryState
	if err := json.Unmarshal([]byte(s), &d); err != nil {
		t.Fatalf("delivery state %q: %v", s, err)
	}
	return d
}

// metric returns the sum of the samples of name (with labels containing
// match) in a Prometheus text page.
func metric(page []byte, name, match string) float64 {
	var total float64
	sc := bufio.NewScanner(bytes.NewReader(page))
	for sc.Scan() {
		l := sc.Text()
		if !strings.HasPrefix(l, name) || (len(l) > len(name) && l[len(name)] != ' ' && l[len(name)] != '{') || !strings.Contains(l, match) {
			continue
		}
		if v, err := strconv.ParseFloat(l[strings.LastIndexByte(l, ' ')+1:], 64); err == nil {
			total += v
		}
	}
	return total
}

// tamperSegments alters, in place and keeping their size, the body of every
// segment in an edge's disk cache, and rewrites the SHA-256 the edge keeps
// with each so that the edge itself serves them: what a malicious operator
// would do while the edge is stopped (damage alone is caught by the edge,
// see edgecache's TestDiskObjectCorrupt).
func tamperSegments(t *testing.T, cacheDir string) int {
	t.Helper()
	n := 0
	err := filepath.WalkDir(filepath.Join(cacheDir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) < 12 || string(b[:8]) != "SHOALEC1" {
			return err
		}
		hl := int(binary.BigEndian.Uint32(b[8:12]))
		var m struct {
			Key string `json:"key"`
		}
		if json.Unmarshal(b[12:12+hl], &m) != nil || !strings.HasSuffix(m.Key, ".m4s") {
			return nil
		}
		body := b[12+hl:]
		for i := len(body) / 2; i < len(body) && i < len(body)/2+64; i++ {
			body[i] ^= 0x5a
		}
		sum := sha256.Sum256(body)
		hdr := b[12 : 12+hl]
		if i := bytes.Index(hdr, []byte(`"sha256":"`)); i >= 0 {
			copy(hdr[i+10:], hex.EncodeToString(sum[:]))
		}
		n++
		return os.WriteFile(p, b, 0o644)
	})
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func (n *node) nodeState(id string) (string, string) {
	n.t.Helper()
	_, b := n.get("/v1/nodes", testAdminKey)
	var out struct {
		Data []struct {
			ID               string `json:"id"`
			State            string `json:"state"`
			QuarantineReason string `json:"quarantine_reason"`
		} `json:"data"`
	}
	_ = json.Unmarshal(b, &out)
	for _, d := range out.Data {
		if d.ID == id {
			return d.State, d.QuarantineReason
		}
	}
	return "", ""
}

// llPart matches the paths of LL-HLS partial segments.
var llPart = regexp.MustCompile(`-p[0-9]+\.m4s$`)

func TestWatchPageVerifiesEdges(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	b := browser.Start(t)
	v := readyVideo(t, n, map[string]string{"title": "verified"})
	token := n.nodeToken()
	type edge struct {
		port int
		dir  string
		proc *edgeProc
	}
	edges := []*edge{{port: freePort(t), dir: t.TempDir()}, {port: freePort(t), dir: t.TempDir()}}
	for _, e := range edges {
		e.proc = startEdgeAt(t, n, token, e.port, e.dir)
	}
	n.waitFor("both edges in /v1/nodes", 20*time.Second, func() bool { return len(n.nodes()) == 2 })
	byID := map[string]*edge{}
	for _, ni := range n.nodes() {
		for _, e := range edges {
			if ni.PublicURL == e.proc.url {
				byID[ni.ID] = e
			}
		}
	}
	originSHA := func(path string) string {
		code, body := n.get(path, "")
		if code != http.StatusOK {
			t.Fatalf("origin %s: %d", path, code)
		}
		s := sha256.Sum256(body)
		return hex.EncodeToString(s[:])
	}
	checkBytes := func(d deliveryState) {
		t.Helper()
		if len(d.Delivered) == 0 {
			t.Fatal("nothing delivered")
		}
		for _, o := range d.Delivered {
			if llPart.MatchString(o.Path) {
				// LL-HLS parts are served for a few segments only: check
				// those the origin still has.
				if code, _ := n.get(o.Path, ""); code == http.StatusNotFound {
					continue
				}
			}
			if want := originSHA(o.Path); o.SHA256 != want {
				t.Fatalf("the page played %s with SHA-256 %s from %s; the origin published %s", o.Path, o.SHA256, o.Node, want)
			}
		}
	}
	const playedToEnd = `(() => { const v = document.querySelector('video'); const d = window.shoalDelivery;
		return !!v && !!d && v.currentTime > 5 && d.verified >= 3 })()`

	// 1. The page plays from an edge; every object verified; the origin
	// served no segment to the viewer.
	tab := b.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+v.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	if err := tab.WaitFor(60*time.Second, playedToEnd, deliveryJS); err != nil {
		t.Fatal(err)
	}
	_, om := n.get("/metrics", "")
	if got := metric(om, "shoal_origin_viewer_segment_requests_total", ""); got != 0 {
		t.Errorf("the origin served %v segments to viewers", got)
	}
	d := readDelivery(t, tab)
	served := byID[d.Node]
	if served == nil || len(d.Failures) != 0 {
		t.Fatalf("the page played from %q (not an edge?) with failures %+v", d.Node, d.Failures)
	}
	checkBytes(d)
	var segBytes float64
	for _, o := range d.Delivered {
		if strings.HasSuffix(o.Path, ".m4s") {
			_, body := n.get(o.Path, "")
			segBytes += float64(len(body))
		}
	}
	_, em := httpGet(t, served.proc.url+"/metrics")
	if got := metric(em, "shoal_edge_bytes_served_total", ""); got < segBytes {
		t.Errorf("the edge counts %v bytes served, less than the %v bytes of segments the page played", got, segBytes)
	}
	t.Logf("played from edge %s: %d objects verified, %v segment bytes", d.Node, d.Verified, segBytes)

	// 2. That edge is stopped, its cached segments altered on disk, and it
	// comes back as the same node: the page still plays the right bytes,
	// from the other edge; the origin counts the failure, audits, and
	// quarantines the node, which is then never offered again.
	_ = served.proc.cmd.Process.Signal(syscall.SIGTERM)
	_ = served.proc.cmd.Wait()
	if k := tamperSegments(t, filepath.Join(served.dir, "edgecache")); k == 0 {
		t.Fatal("no cached segment to alter")
	}
	served.proc = startEdgeAt(t, n, token, served.port, served.dir)
	n.waitFor("the altered edge back and first for this video", 20*time.Second, func() bool {
		resp, err := http.Get(served.proc.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		r := n.route(v.ID, "")
		return resp.StatusCode == http.StatusOK && len(r.Candidates) == 3 && r.NodeID == d.Node
	})
	tab2 := b.NewTab(t)
	// The browser's own cache holds the good bytes from the first visit:
	// empty it, so that the page has to take them from the edge.
	if err := tab2.Run(20*time.Second, network.ClearBrowserCache(), chromedp.Navigate(n.http+"/watch/"+v.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	if err := tab2.WaitFor(60*time.Second, playedToEnd, deliveryJS); err != nil {
		t.Fatal(err)
	}
	d2 := readDelivery(t, tab2)
	checkBytes(d2)
	if len(d2.Failures) == 0 || d2.Failures[0].Node != d.Node || d2.Failures[0].Kind != "hash_mismatch" || d2.Node == d.Node || byID[d2.Node] == nil {
		t.Fatalf("after tampering: played from %s, failures %+v", d2.Node, d2.Failures)
	}
	n.waitFor("the origin to count the failure", 10*time.Second, func() bool {
		_, om := n.get("/metrics", "")
		return metric(om, "shoal_delivery_verification_failures_total", `node="`+d.Node+`"`) >= 1
	})
	n.waitFor("the altered edge to be quarantined", 10*time.Second, func() bool {
		state, _ := n.nodeState(d.Node)
		return state == "quarantined"
	})
	_, reason := n.nodeState(d.Node)
	t.Logf("quarantined: %s", reason)
	// The routing registry's copy of the node list is at most a second old.
	n.waitFor("the quarantined edge out of the routes", 5*time.Second, func() bool {
		return !n.route(v.ID, "").offers(served.proc.url)
	})
	for range 20 {
		if r := n.route(v.ID, ""); r.offers(served.proc.url) {
			t.Fatalf("a quarantined edge is still offered: %+v", r)
		}
	}

	// 3. A live stream published over RTMP plays through the honest edge,
	// verified.
	ls := n.createStream("verified live")
	pub := publish(t, clip(t, 30), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.waitFor("the live master playlist", 20*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == http.StatusOK
	})
	live := b.NewTab(t)
	if err := live.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	// Long enough for several playlist and manifest refreshes: an honest
	// edge is never reported while they move on.
	const playingLive = `(() => { const v = document.querySelector('video'); const d = window.shoalDelivery;
		return !!v && !!d && v.currentTime > 12 && d.verified >= 8 })()`
	if err := live.WaitFor(60*time.Second, playingLive, deliveryJS); err != nil {
		t.Fatal(err)
	}
	dl := readDelivery(t, live)
	if byID[dl.Node] == nil || dl.Node == d.Node || len(dl.Failures) != 0 {
		t.Fatalf("live: played from %q with failures %+v", dl.Node, dl.Failures)
	}
	checkBytes(dl)
	if errs := live.Errors(); len(errs) > 0 {
		t.Errorf("page errors: %v", errs)
	}
}

// TestLiveThroughEdgeSurvivesOriginOutage: the origin becomes unreachable
// from the edge for 10 s during a live stream; a viewer polling the edge
// like a player sees no error and keeps getting the window it had.
func TestLiveThroughEdgeSurvivesOriginOutage(t *testing.T) {
	t.Parallel()
	// The origin is reached through front, its public URL (what it
	// announces to edges): down, the origin is unreachable at every URL
	// the edge knows.
	var proxy atomic.Pointer[httputil.ReverseProxy]
	var down atomic.Bool
	front := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if down.Load() {
			// As if the origin's process were gone: the connection drops.
			if hj, ok := w.(http.Hijacker); ok {
				if c, _, err := hj.Hijack(); err == nil {
					c.Close()
					return
				}
			}
			http.Error(w, "down", http.StatusBadGateway)
			return
		}
		if p := proxy.Load(); p != nil {
			p.ServeHTTP(w, r)
			return
		}
		http.Error(w, "not started", http.StatusServiceUnavailable)
	}))
	t.Cleanup(front.Close)
	n := startNode(t, "SHOAL_PUBLIC_URL="+front.URL)
	target, _ := url.Parse(n.http)
	proxy.Store(httputil.NewSingleHostReverseProxy(target))
	e := startEdge(t, n, n.nodeToken(), "", "SHOAL_ORIGIN_URL="+front.URL)
	n.waitFor("the edge in /v1/nodes", 20*time.Second, func() bool { return len(n.nodes()) == 1 })

	ls := n.createStream("outage")
	pub := publish(t, clip(t, 40), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	playlist := e.url + "/hls/" + ls.ID + "/source/index.m3u8"
	n.waitFor("the live playlist on the edge", 20*time.Second, func() bool {
		resp, body := httpGet(t, playlist)
		return resp.StatusCode == http.StatusOK && strings.Count(string(body), "#EXTINF") >= 3
	})
	fetched := map[string]bool{}
	var errs []string
	stale := 0
	poll := func() {
		resp, body := httpGet(t, playlist)
		if resp.StatusCode != http.StatusOK {
			errs = append(errs, fmt.Sprintf("playlist: %d %s", resp.StatusCode, resp.Header.Get("Cache-Status")))
			return
		}
		if strings.Contains(resp.Header.Get("Cache-Status"), "stale-if-error") {
			stale++
		}
		for _, l := range strings.Split(string(body), "\n") {
			if l == "" || strings.HasPrefix(l, "#") || fetched[l] {
				continue
			}
			if r, _ := httpGet(t, e.url+"/hls/"+ls.ID+"/source/"+l); r.StatusCode != http.StatusOK {
				errs = append(errs, fmt.Sprintf("segment %s: %d", l, r.StatusCode))
				continue
			}
			fetched[l] = true
		}
	}
	// The viewer polls on its own cadence, as a player refreshes its
	// playlist; the outage is a real 10 s of the origin being unreachable.
	tick := time.NewTicker(500 * time.Millisecond)
	defer tick.Stop()
	for range 4 {
		poll()
		<-tick.C
	}
	down.Store(true)
	outageOver := time.After(10 * time.Second)
outage:
	for {
		poll()
		select {
		case <-outageOver:
			break outage
		case <-tick.C:
		}
	}
	down.Store(false)
	before := len(fetched)
	n.waitFor("new segments after the outage", 20*time.Second, func() bool {
		poll()
		return len(fetched) > before
	})
	if len(errs) > 0 {
		t.Fatalf("the viewer saw errors: %v", errs)
	}
	if stale == 0 {
		t.Fatal("no answer during the outage was served stale")
	}
	t.Logf("%d segments fetched, %d playlist answers served stale during the 10 s outage", len(fetched), stale)
}

// firstSegment returns the path of the first segment of rendition's
// playlist on the origin.
func (n *node) firstSegment(id, rendition string) string {
	n.t.Helper()
	var path string
	n.waitFor("a segment of "+id+"/"+rendition, 30*time.Second, func() bool {
		code, body := n.get("/hls/"+id+"/"+rendition+"/index.m3u8", "")
		if code != http.StatusOK {
			return false
		}
		for _, l := range strings.Split(string(body), "\n") {
			if strings.HasSuffix(l, ".m4s") {
				path = "/hls/" + id + "/" + rendition + "/" + l
				return true
			}
		}
		return false
	})
	return path
}

// TestEdgeDropsDeletedAndRepoliced: an edge holding a video and a live
// stream stops serving the video within seconds of its deletion, and the
// stream without a token within seconds of its PATCH to signed, although
// both were cached as public (the origin's invalidation feed, carried by
// heartbeat answers).
func TestEdgeDropsDeletedAndRepoliced(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	v := readyVideo(t, n, map[string]string{"title": "soon deleted"})
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	seg := n.firstSegment(v.ID, "240p")
	for range 2 {
		if resp, _ := httpGet(t, e.url+seg); resp.StatusCode != http.StatusOK {
			t.Fatalf("through the edge: %d", resp.StatusCode)
		}
	}
	if code, b := n.do(http.MethodDelete, "/v1/videos/"+v.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, b)
	}
	deleted := time.Now()
	n.waitFor("the edge to refuse the deleted video", 10*time.Second, func() bool {
		resp, _ := httpGet(t, e.url+seg)
		return resp.StatusCode == http.StatusNotFound
	})
	t.Logf("deleted video refused by the edge %s after the DELETE", time.Since(deleted).Round(100*time.Millisecond))

	ls := n.createStream("soon signed")
	pub := publish(t, clip(t, 30), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	lseg := n.firstSegment(ls.ID, "source")
	if resp, _ := httpGet(t, e.url+lseg); resp.StatusCode != http.StatusOK {
		t.Fatalf("live segment through the edge: %d", resp.StatusCode)
	}
	if code, b := n.do(http.MethodPatch, "/v1/live-streams/"+ls.ID, testAdminKey, map[string]string{"playback_policy": "signed"}); code != http.StatusOK {
		t.Fatalf("patch: %d %s", code, b)
	}
	patched := time.Now()
	n.waitFor("the edge to refuse the signed stream without a token", 10*time.Second, func() bool {
		resp, _ := httpGet(t, e.url+lseg)
		return resp.StatusCode == http.StatusForbidden
	})
	t.Logf("re-policied stream refused without a token %s after the PATCH", time.Since(patched).Round(100*time.Millisecond))
	if resp, _ := httpGet(t, e.url+lseg+"?token="+n.playbackToken(ls.ID, 600)); resp.StatusCode != http.StatusOK {
		t.Fatalf("with a token: %d", resp.StatusCode)
	}
}

// liar is an edge run by someone else: it joins the origin like any edge
// (a node token, its own key) and relays the origin, except that it
// answers segments with the bytes of another video's segment and, once
// asked to, live manifests with one recorded earlier (replayOld).
type liar struct {
	url    string
	id     string
	fake   []byte // what it serves for every segment
	replay atomic.Bool
	mu     sync.Mutex
	old    map[string][]byte // manifest path -> the first copy seen
	// aged makes a recorded manifest into the one the origin signed a
	// while before (tests hold the origin's key; waiting that long is
	// not needed).
	aged func([]byte) []byte
}

func startLiar(t *testing.T, n *node, token string, fake []byte) *liar {
	t.Helper()
	target, _ := url.Parse(n.http)
	proxy := httputil.NewSingleHostReverseProxy(target)
	l := &liar{fake: fake, old: map[string][]byte{}}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch {
		case strings.HasSuffix(r.URL.Path, ".m4s") && l.fake != nil:
			w.Header().Set("Access-Control-Allow-Origin", "*")
			w.Header().Set("Content-Type", "video/iso.segment")
			_, _ = w.Write(l.fake)
		case strings.HasSuffix(r.URL.Path, "/manifest.txt"):
			resp, err := http.Get(n.http + r.URL.Path)
			if err != nil {
				http.Error(w, "bad gateway", http.StatusBadGateway)
				return
			}
			body, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			l.mu.Lock()
			if l.old[r.URL.Path] == nil {
				l.old[r.URL.Path] = body
			}
			if l.replay.Load() {
				body = l.old[r.URL.Path]
				if l.aged != nil {
					body = l.aged(body)
				}
			}
			l.mu.Unlock()
			w.Header().Set("Access-Control-Allow-Origin", "*")
			w.Header().Set("Content-Type", "text/plain; charset=utf-8")
			_, _ = w.Write(body)
		default:
			proxy.ServeHTTP(w, r)
		}
	}))
	t.Cleanup(srv.Close)
	l.url = srv.URL
	_, key, _ := ed25519.GenerateKey(nil)
	c := &nodeproto.Client{OriginURL: n.http, Token: token, Key: key}
	r, err := c.Join(t.Context(), nodeproto.JoinRequest{Role: "edge", PublicURL: l.url})
	if err != nil {
		t.Fatal(err)
	}
	l.id = r.ID
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			select {
			case <-ctx.Done():
				return
			case <-time.After(nodeproto.HeartbeatInterval):
			}
			_, _ = c.Heartbeat(ctx, l.id, nodeproto.Heartbeat{})
		}
	}()
	t.Cleanup(func() { cancel(); <-done })
	return l
}

// TestLyingEdgeIsNeverPlayed: the only edge serves another video's
// segments, then replays an old live manifest: the page plays none of it
// (every object it plays has the origin's hash), reports the edge, and the
// origin quarantines it.
func TestLyingEdgeIsNeverPlayed(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	b := browser.Start(t)
	v := readyVideo(t, n, map[string]string{"title": "the real one"})
	// Another video, from another clip: its segments are not this one's.
	code, b2 := n.do(http.MethodPost, "/v1/videos", testAdminKey, map[string]string{"title": "the other one"})
	if code != http.StatusCreated {
		t.Fatalf("create video: %d %s", code, b2)
	}
	var other video
	_ = json.Unmarshal(b2, &other)
	if code, b := putFile(t, other.Upload.DirectURL, testAdminKey, testutil.MakeMP4(t, 320, 180, 4)); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, b)
	}
	if other = n.waitVideo(other.ID, 60*time.Second); other.Status != "ready" {
		t.Fatalf("other video: %+v", other)
	}
	_, fake := n.get(n.firstSegment(other.ID, "180p"), "")
	l := startLiar(t, n, n.nodeToken(), fake)
	n.waitFor("the liar first in the route", 10*time.Second, func() bool { return n.route(v.ID, "").NodeID == l.id })

	tab := b.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+v.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	const played = `(() => { const v = document.querySelector('video'); const d = window.shoalDelivery;
		return !!v && !!d && v.currentTime > 5 && d.verified >= 3 })()`
	if err := tab.WaitFor(60*time.Second, played, deliveryJS); err != nil {
		t.Fatal(err)
	}
	d := readDelivery(t, tab)
	if len(d.Failures) == 0 || d.Failures[0].Node != l.id || d.Failures[0].Kind != "hash_mismatch" || d.Node != "origin" {
		t.Fatalf("played from %q, failures %+v", d.Node, d.Failures)
	}
	for _, o := range d.Delivered {
		_, want := n.get(o.Path, "")
		sum := sha256.Sum256(want)
		// What the liar relayed untouched (init sections) verifies and may
		// be used; nothing else it sent may be.
		if o.SHA256 != hex.EncodeToString(sum[:]) {
			t.Fatalf("played %s from %q with SHA-256 %s", o.Path, o.Node, o.SHA256)
		}
	}
	n.waitFor("the liar quarantined", 10*time.Second, func() bool {
		state, _ := n.nodeState(l.id)
		return state == "quarantined"
	})

	// A second liar replays old live manifests (and serves good segments:
	// it relays them). The page refuses the stale manifest and plays from
	// the origin.
	l2 := startLiar(t, n, n.nodeToken(), nil)
	contentKey, err := playback.LoadOrCreateKey(filepath.Join(n.dataDir, "content-key.pem"))
	if err != nil {
		t.Fatal(err)
	}
	l2.mu.Lock()
	l2.aged = func(b []byte) []byte {
		// The player refuses live manifests older than 30 s: this one is 40.
		m, _, _, err := manifest.Parse(b)
		if err != nil {
			return b
		}
		m.Time = m.Time.Add(-40 * time.Second)
		out, err := manifest.Sign(m, contentKey)
		if err != nil {
			return b
		}
		return out
	}
	l2.mu.Unlock()
	ls := n.createStream("replayed")
	pub := publish(t, clip(t, 60), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.firstSegment(ls.ID, "source")
	n.waitFor("the second liar first in the route", 10*time.Second, func() bool { return n.route(ls.ID, "").NodeID == l2.id })
	// Record the manifest now, then replay it as it was 40 s before.
	if resp, _ := httpGet(t, l2.url+"/hls/"+ls.ID+"/source/manifest.txt"); resp.StatusCode != http.StatusOK {
		t.Fatalf("liar manifest: %d", resp.StatusCode)
	}
	l2.replay.Store(true)
	live := b.NewTab(t)
	if err := live.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	const playingLive = `(() => { const v = document.querySelector('video'); const d = window.shoalDelivery;
		return !!v && !!d && v.currentTime > 2 && d.verified >= 3 })()`
	if err := live.WaitFor(60*time.Second, playingLive, deliveryJS); err != nil {
		t.Fatal(err)
	}
	dl := readDelivery(t, live)
	if len(dl.Failures) == 0 || dl.Failures[0].Node != l2.id || dl.Failures[0].Kind != "stale_manifest" || dl.Node != "origin" {
		t.Fatalf("live: played from %q, failures %+v", dl.Node, dl.Failures)
	}
	for _, o := range dl.Delivered {
		if o.Node == l2.id && strings.HasSuffix(o.Path, ".m4s") {
			t.Fatalf("played %s from the replaying edge", o.Path)
		}
	}
	n.waitFor("the replaying edge quarantined", 10*time.Second, func() bool {
		state, _ := n.nodeState(l2.id)
		return state == "quarantined"
	})
}

// TestWatchPageSignedThroughEdge: a signed video's watch page, opened with
// a playback token, plays from an edge with every object verified (the
// token travels with the route, the playlists and the manifests).
func TestWatchPageSignedThroughEdge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	b := browser.Start(t)
	v := readyVideo(t, n, map[string]string{"title": "members", "playback_policy": "signed"})
	startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	edgeID := n.nodes()[0].ID
	tok := n.playbackToken(v.ID, 600)
	tab := b.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+v.ID+"?player=hlsjs&token="+tok)); err != nil {
		t.Fatal(err)
	}
	const played = `(() => { const v = document.querySelector('video'); const d = window.shoalDelivery;
		return !!v && !!d && v.currentTime > 3 && d.verified >= 3 })()`
	if err := tab.WaitFor(60*time.Second, played, deliveryJS); err != nil {
		t.Fatal(err)
	}
	if d := readDelivery(t, tab); d.Node != edgeID || len(d.Failures) != 0 {
		t.Fatalf("played from %q with failures %+v", d.Node, d.Failures)
	}
}
