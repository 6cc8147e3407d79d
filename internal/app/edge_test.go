package app

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/testutil"
)

// Edges end to end: an origin (shoal dev, with its VOD worker) and edges
// as separate processes of this test binary, the edges joined with a node
// token over HTTP, ffprobe playing through them.

type edgeProc struct {
	*workerProc
	url string
}

func startEdge(t *testing.T, n *node, token, region string, extraEnv ...string) *edgeProc {
	t.Helper()
	port := freePort(t)
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	p := startProc(t, "edge", append([]string{
		"SHOAL_ORIGIN_URL=" + n.http,
		"SHOAL_NODE_TOKEN=" + token,
		"SHOAL_REGION=" + region,
		fmt.Sprintf("SHOAL_EDGE_ADDR=127.0.0.1:%d", port),
		"SHOAL_PUBLIC_URL=" + url,
		"SHOAL_DATA_DIR=" + t.TempDir(),
		"SHOAL_EDGE_CACHE_BYTES=104857600",
		"SHOAL_EDGE_MEMORY_BYTES=16777216",
	}, extraEnv...)...)
	return &edgeProc{workerProc: p, url: url}
}

func httpGet(t *testing.T, url string) (*http.Response, []byte) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// readyVideo uploads a short clip to n and waits until it is ready.
func readyVideo(t *testing.T, n *node, body map[string]string) video {
	t.Helper()
	code, b := n.do(http.MethodPost, "/v1/videos", testAdminKey, body)
	if code != http.StatusCreated {
		t.Fatalf("create video: %d %s", code, b)
	}
	var v video
	_ = json.Unmarshal(b, &v)
	if code, b := putFile(t, v.Upload.DirectURL, testAdminKey, testutil.MakeMP4(t, 426, 240, 6)); code != http.StatusAccepted {
		t.Fatalf("PUT: %d %s", code, b)
	}
	v = n.waitVideo(v.ID, 60*time.Second)
	if v.Status != "ready" {
		t.Fatalf("video: %+v", v)
	}
	return v
}

type nodeInfo struct {
	ID        string  `json:"id"`
	Role      string  `json:"role"`
	Region    string  `json:"region"`
	PublicURL string  `json:"public_url"`
	HitRatio  float64 `json:"hit_ratio"`
}

// nodes lists the edges in GET /v1/nodes (the joined nodes; not the
// origins and workers listed after them).
func (n *node) nodes() []nodeInfo {
	n.t.Helper()
	var edges []nodeInfo
	for _, ni := range n.allNodes() {
		if ni.Role == "edge" {
			edges = append(edges, ni)
		}
	}
	return edges
}

// allNodes lists every entry of GET /v1/nodes: edges, origins, workers.
func (n *node) allNodes() []nodeInfo {
	n.t.Helper()
	code, b := n.get("/v1/nodes", testAdminKey)
	if code != http.StatusOK {
		n.t.Fatalf("GET /v1/nodes: %d %s", code, b)
	}
	var out struct {
		Data []nodeInfo `json:"data"`
	}
	_ = json.Unmarshal(b, &out)
	return out.Data
}

func (n *node) nodeToken() string {
	n.t.Helper()
	code, b := n.do(http.MethodPost, "/v1/node-tokens", testAdminKey, map[string]string{"name": "test edges"})
	if code != http.StatusCreated {
		n.t.Fatalf("create node token: %d %s", code, b)
	}
	var tok struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal(b, &tok)
	return tok.Token
}

type route struct {
	URL        string `json:"url"`
	NodeID     string `json:"node_id"`
	Reason     string `json:"reason"`
	Candidates []struct {
		NodeID string `json:"node_id"`
		URL    string `json:"url"`
	} `json:"candidates"`
}

// offers reports whether r offers the edge at url.
func (r route) offers(url string) bool {
	for _, c := range r.Candidates {
		if strings.HasPrefix(c.URL, url+"/") {
			return true
		}
	}
	return false
}

func (n *node) route(id, query string) route {
	n.t.Helper()
	code, b := n.get("/v1/route/"+id+query, "")
	if code != http.StatusOK {
		n.t.Fatalf("route: %d %s", code, b)
	}
	var r route
	_ = json.Unmarshal(b, &r)
	return r
}

func TestEdgesServeRouteAndFailOver(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	v := readyVideo(t, n, map[string]string{"title": "through edges"})
	token := n.nodeToken()
	edges := []*edgeProc{startEdge(t, n, token, "eu"), startEdge(t, n, token, "eu")}
	n.waitFor("both edges in /v1/nodes", 20*time.Second, func() bool { return len(n.nodes()) == 2 })
	byURL := map[string]*edgeProc{}
	for _, e := range edges {
		byURL[e.url] = e
	}
	for _, ni := range n.nodes() {
		if ni.Role != "edge" || ni.Region != "eu" || byURL[ni.PublicURL] == nil {
			t.Fatalf("node listed as %+v", ni)
		}
	}

	// Both edges serve the video; the second fetch of a segment is a hit.
	for _, e := range edges {
		resp, master := httpGet(t, e.url+"/hls/"+v.ID+"/master.m3u8")
		if resp.StatusCode != 200 || !strings.Contains(string(master), "240p/index.m3u8") {
			t.Fatalf("edge master: %d\n%s", resp.StatusCode, master)
		}
		_, idx := httpGet(t, e.url+"/hls/"+v.ID+"/240p/index.m3u8")
		var seg string
		for _, line := range strings.Split(string(idx), "\n") {
			if strings.HasSuffix(line, ".m4s") {
				seg = line
				break
			}
		}
		if seg == "" {
			t.Fatalf("no segment in\n%s", idx)
		}
		first, b1 := httpGet(t, e.url+"/hls/"+v.ID+"/240p/"+seg)
		second, b2 := httpGet(t, e.url+"/hls/"+v.ID+"/240p/"+seg)
		_, want := n.get("/hls/"+v.ID+"/240p/"+seg, "")
		if string(b1) != string(want) || string(b2) != string(want) {
			t.Fatalf("edge bytes differ from the origin's")
		}
		if cs := second.Header.Get("Cache-Status"); !strings.Contains(cs, "hit") {
			t.Fatalf("second fetch Cache-Status %q (first %q), want a hit", cs, first.Header.Get("Cache-Status"))
		}
	}
	// Path tricks and oversized headers are refused.
	for _, p := range []string{"/hls/../../etc/passwd", "/hls/%2e%2e/x.m3u8", "/hls/" + v.ID + "/..%2f..%2fnode.key", "/node.key"} {
		if resp, body := httpGet(t, edges[0].url+p); resp.StatusCode != 400 && resp.StatusCode != 404 || strings.Contains(string(body), "PRIVATE KEY") {
			t.Errorf("edge %s: %d", p, resp.StatusCode)
		}
	}
	req, _ := http.NewRequest(http.MethodGet, edges[0].url+"/hls/"+v.ID+"/master.m3u8", nil)
	req.Header.Set("X-Big", strings.Repeat("a", 64<<10))
	if resp, err := http.DefaultClient.Do(req); err == nil {
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestHeaderFieldsTooLarge {
			t.Errorf("64 KiB of headers: %d, want 431", resp.StatusCode)
		}
	}
	if d := probeDuration(t, edges[0].url+"/hls/"+v.ID+"/master.m3u8"); d < 5.5 || d > 6.5 {
		t.Fatalf("ffprobe through the edge: %.3f s, want 6", d)
	}

	// /play redirects to an edge; kill -9 that edge and within 10 s the
	// route never offers it again.
	noRedirect := &http.Client{CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }}
	resp, err := noRedirect.Get(n.http + "/play/" + v.ID + "?region=eu")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	loc := resp.Header.Get("Location")
	chosen := byURL[strings.TrimSuffix(loc, "/hls/"+v.ID+"/master.m3u8")]
	if resp.StatusCode != http.StatusFound || chosen == nil {
		t.Fatalf("/play: %d Location %q", resp.StatusCode, loc)
	}
	if r := n.route(v.ID, "?region=eu"); r.URL != loc || r.Reason == "" {
		t.Fatalf("/v1/route %+v disagrees with /play %q", r, loc)
	}
	if err := chosen.cmd.Process.Kill(); err != nil {
		t.Fatal(err)
	}
	_ = chosen.cmd.Wait()
	killed := time.Now()
	n.waitFor("the dead edge to leave the routes", 12*time.Second, func() bool {
		return !n.route(v.ID, "?region=eu").offers(chosen.url)
	})
	t.Logf("a killed edge left the routes after %s", time.Since(killed).Round(100*time.Millisecond))
	for range 20 {
		if r := n.route(v.ID, "?region=eu"); r.offers(chosen.url) || strings.HasPrefix(r.URL, chosen.url) {
			t.Fatalf("routed to the dead edge: %+v", r)
		}
	}
	if len(n.nodes()) != 1 {
		t.Fatalf("nodes after the kill: %+v", n.nodes())
	}

	// Operator figures.
	code, metrics := n.get("/metrics", "")
	if code != 200 || !strings.Contains(string(metrics), "shoal_node_bytes_served") {
		t.Errorf("origin /metrics lacks per-node figures")
	}
}

func TestEdgeJoinRefusals(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	bad := startEdge(t, n, "nt_notarealtokenatall00000000000000", "")
	done := make(chan error, 1)
	go func() { done <- bad.cmd.Wait() }()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("an edge with a wrong token exited 0")
		}
	case <-time.After(20 * time.Second):
		t.Fatal("an edge with a wrong token kept running")
	}
	if log := bad.stderr.String(); !strings.Contains(log, "refused") {
		t.Fatalf("the edge did not say it was refused:\n%s", log)
	}
	if len(n.nodes()) != 0 {
		t.Fatalf("a refused edge was listed: %+v", n.nodes())
	}
}

func (n *node) playbackToken(id string, ttl int) string {
	n.t.Helper()
	code, b := n.do(http.MethodPost, "/v1/playback-tokens", testAdminKey, map[string]any{"id": id, "ttl_seconds": ttl})
	if code != http.StatusCreated {
		n.t.Fatalf("playback token: %d %s", code, b)
	}
	var tok struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal(b, &tok)
	return tok.Token
}

func TestSignedPlaybackThroughAnEdge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	v := readyVideo(t, n, map[string]string{"title": "members only", "playback_policy": "signed"})
	other := readyVideo(t, n, map[string]string{"title": "another one", "playback_policy": "signed"})
	// A token that lives one second, issued first: it expires while the
	// edge joins.
	short := n.playbackToken(v.ID, 1)
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	good := n.playbackToken(v.ID, 600)
	wrong := n.playbackToken(other.ID, 600)
	n.waitFor("the one-second token to expire", 5*time.Second, func() bool {
		resp, _ := httpGet(t, n.http+"/hls/"+v.ID+"/master.m3u8?token="+short)
		return resp.StatusCode == http.StatusForbidden
	})

	for _, base := range []string{n.http, e.url} {
		master := base + "/hls/" + v.ID + "/master.m3u8"
		for name, url := range map[string]string{
			"no token":               master,
			"expired token":          master + "?token=" + short,
			"token for another id":   master + "?token=" + wrong,
			"garbage token":          master + "?token=abc.def",
			"segment without token":  base + "/hls/" + v.ID + "/240p/index.m3u8",
			"poster, token of other": base + "/hls/" + v.ID + "/poster.jpg?token=" + wrong,
		} {
			if resp, _ := httpGet(t, url); resp.StatusCode != http.StatusForbidden {
				t.Errorf("%s at %s: status %d, want 403", name, base, resp.StatusCode)
			}
		}
		resp, body := httpGet(t, master+"?token="+good)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "index.m3u8?token="+good) {
			t.Fatalf("valid token at %s: %d, children do not carry the token:\n%s", base, resp.StatusCode, body)
		}
		if d := probeDuration(t, master+"?token="+good); d < 5.5 || d > 6.5 {
			t.Fatalf("ffprobe with a valid token at %s: %.3f s", base, d)
		}
	}
	// The public route hands the token on.
	if r := n.route(v.ID, "?token="+good); !strings.HasPrefix(r.URL, e.url) || !strings.HasSuffix(r.URL, "?token="+good) {
		t.Fatalf("route of a signed video: %+v", r)
	}
}

// TestNewBroadcastThroughAnEdge: an edge caches a broadcast's ended
// playlist (for a minute); when the next broadcast of the stream starts,
// the origin tells the edges at once, and the edge serves the new live
// playlist within a few heartbeats instead of the old ENDLIST.
func TestNewBroadcastThroughAnEdge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream("twice")
	pub := publish(t, clip(t, 4), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	if err := pub.Wait(); err != nil {
		t.Fatalf("first broadcast: %v", err)
	}
	n.waitFor("the first broadcast's ENDLIST", 20*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
	playlist := e.url + "/hls/" + ls.ID + "/source/index.m3u8"
	if resp, body := httpGet(t, playlist); resp.StatusCode != 200 || !strings.Contains(string(body), "#EXT-X-ENDLIST") {
		t.Fatalf("the edge's copy of the ended playlist: %d\n%s", resp.StatusCode, body)
	}
	second := publish(t, clip(t, 30), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer second.Process.Kill()
	n.waitFor("the second broadcast live", 15*time.Second, func() bool { return n.status(ls.ID) == "live" })
	// Well under the minute an ended playlist is cached for.
	n.waitFor("the edge serving the new broadcast", 15*time.Second, func() bool {
		resp, body := httpGet(t, playlist)
		return resp.StatusCode == 200 && !strings.Contains(string(body), "#EXT-X-ENDLIST") && strings.Contains(string(body), "#EXTINF")
	})
}
