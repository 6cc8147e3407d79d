package app

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/routing"
)

// getWith GETs url with the headers h (key, value pairs).
func getWith(t *testing.T, url string, h ...string) (*http.Response, []byte) {
	t.Helper()
	req, err := http.NewRequest(http.MethodGet, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; i+1 < len(h); i += 2 {
		req.Header.Set(h[i], h[i+1])
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("GET %s: %v", url, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp, b
}

// TestIPBoundTokenThroughAnEdge: a playback token bound to the viewer's
// address works through an edge: the edge takes the viewer's address from
// its trusted front proxy's X-Forwarded-For, checks the token with it, and
// vouches for it to the origin with its node key; the origin believes the
// vouch of a joined edge only. Forged, stale or altered vouches, and
// X-Forwarded-For from a peer that is not a trusted proxy, are not
// believed.
func TestIPBoundTokenThroughAnEdge(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	v := readyVideo(t, n, map[string]string{"title": "bound", "playback_policy": "signed"})
	edgeDir := t.TempDir()
	e := startEdge(t, n, n.nodeToken(), "", "SHOAL_TRUSTED_PROXIES=127.0.0.1/32", "SHOAL_DATA_DIR="+edgeDir)
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })

	const viewer = "203.0.113.7"
	code, b := n.do(http.MethodPost, "/v1/playback-tokens", testAdminKey, map[string]any{"id": v.ID, "ttl_seconds": 600, "ip": viewer})
	if code != http.StatusCreated {
		t.Fatalf("playback token: %d %s", code, b)
	}
	var tk struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal(b, &tk)
	tok := tk.Token
	master := "/hls/" + v.ID + "/master.m3u8?token=" + tok
	index := "/hls/" + v.ID + "/240p/index.m3u8?token=" + tok

	// Through the edge, from the viewer's address behind the edge's
	// trusted proxy: the misses go to the origin, which believes the
	// edge's vouch.
	for _, p := range []string{master, index} {
		resp, body := getWith(t, e.url+p, "X-Forwarded-For", viewer)
		if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=miss") {
			t.Fatalf("edge %s for the bound viewer: %d %q\n%s", p, resp.StatusCode, resp.Header.Get("Cache-Status"), body)
		}
		if p == index {
			var seg string
			for _, line := range strings.Split(string(body), "\n") {
				if strings.Contains(line, ".m4s?token=") {
					seg = line
					break
				}
			}
			if seg == "" {
				t.Fatalf("no segment with the token in\n%s", body)
			}
			resp, _ := getWith(t, e.url+"/hls/"+v.ID+"/240p/"+seg, "X-Forwarded-For", viewer)
			if resp.StatusCode != http.StatusOK || !strings.Contains(resp.Header.Get("Cache-Status"), "fwd=miss") {
				t.Fatalf("edge segment for the bound viewer: %d %q", resp.StatusCode, resp.Header.Get("Cache-Status"))
			}
		}
	}
	// What the edge cached is served to another address only if the
	// token allows it: the edge checks every request itself.
	if resp, _ := getWith(t, e.url+master, "X-Forwarded-For", "198.51.100.1"); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("edge, cached master, token of another address: %d, want 403", resp.StatusCode)
	}
	if resp, _ := getWith(t, e.url+master); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("edge, the proxy's own address: %d, want 403", resp.StatusCode)
	}

	// The origin trusts no proxy: X-Forwarded-For from its peer is ignored.
	if resp, _ := getWith(t, n.http+master, "X-Forwarded-For", viewer); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("origin with X-Forwarded-For from an untrusted peer: %d, want 403", resp.StatusCode)
	}

	// Vouches made here: with the edge's own key (read from its data
	// directory), with another key, stale, or altered.
	edgeKey, err := playback.LoadOrCreateKey(filepath.Join(edgeDir, "node.key"))
	if err != nil {
		t.Fatal(err)
	}
	edgeID := nodeproto.NodeID(edgeKey.Public().(ed25519.PublicKey))
	_, strangerKey, _ := ed25519.GenerateKey(nil)
	vouched := func(key ed25519.PrivateKey, id, ip string, at time.Time, edit func(http.Header)) int {
		req, _ := http.NewRequest(http.MethodGet, n.http+master, nil)
		req.Header.Set("Shoal-Edge", "1")
		nodeproto.Vouch(req, key, id, master, ip, at)
		if edit != nil {
			edit(req.Header)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if c := vouched(edgeKey, edgeID, viewer, time.Now(), nil); c != http.StatusOK {
		t.Fatalf("a fresh vouch of the joined edge: %d, want 200", c)
	}
	for name, c := range map[string]int{
		"unknown node":          vouched(strangerKey, nodeproto.NodeID(strangerKey.Public().(ed25519.PublicKey)), viewer, time.Now(), nil),
		"another key, edge id":  vouched(strangerKey, edgeID, viewer, time.Now(), nil),
		"stale":                 vouched(edgeKey, edgeID, viewer, time.Now().Add(-2*time.Minute), nil),
		"from the future":       vouched(edgeKey, edgeID, viewer, time.Now().Add(2*time.Minute), nil),
		"replayed, IP changed":  vouched(edgeKey, edgeID, "198.51.100.1", time.Now(), func(h http.Header) { h.Set(nodeproto.ViewerIPHeader, viewer) }),
		"no signature":          vouched(edgeKey, edgeID, viewer, time.Now(), func(h http.Header) { h.Del(nodeproto.VouchHeader) }),
		"garbage signature":     vouched(edgeKey, edgeID, viewer, time.Now(), func(h http.Header) { h.Set(nodeproto.VouchHeader, edgeID+" 1 AAAA") }),
		"trusted XFF, no vouch": vouched(edgeKey, edgeID, viewer, time.Now(), func(h http.Header) { h.Del(nodeproto.VouchHeader); h.Set("X-Forwarded-For", viewer) }),
	} {
		if c != http.StatusForbidden {
			t.Errorf("origin, %s: %d, want 403", name, c)
		}
	}
	// A vouch counts for HLS only: a joined edge can't spread WHIP key
	// guesses over made-up addresses (the default allows 10 a minute per
	// address; the 11th is refused whatever the vouch says).
	whipStatus := make([]int, 0, 11)
	for i := range 11 {
		req, _ := http.NewRequest(http.MethodPost, n.http+"/v1/whip", strings.NewReader("v=0\r\n"))
		req.Header.Set("Content-Type", "application/sdp")
		req.Header.Set("Authorization", "Bearer sk_wrongwrongwrongwrongwrongwrongwr")
		req.Header.Set("Shoal-Edge", "1")
		nodeproto.Vouch(req, edgeKey, edgeID, "/v1/whip", fmt.Sprintf("203.0.113.%d", 100+i), time.Now())
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		whipStatus = append(whipStatus, resp.StatusCode)
	}
	if whipStatus[10] != http.StatusTooManyRequests {
		t.Errorf("WHIP with wrong keys under vouches for 11 addresses: %v, want the 11th refused with 429", whipStatus)
	}
	_, metrics := n.get("/metrics", "")
	for _, want := range []string{`shoal_vouch_rejected_total{reason="unknown_node"} 1`, `shoal_vouch_rejected_total{reason="signature"} 2`,
		`shoal_vouch_rejected_total{reason="stale"} 2`, `shoal_vouch_rejected_total{reason="malformed"} 3`} {
		if !strings.Contains(string(metrics), want) {
			t.Errorf("origin /metrics lacks %s", want)
		}
	}
	if !strings.Contains(string(metrics), "shoal_vouch_accepted_total") || strings.Contains(string(metrics), "shoal_vouch_accepted_total 0\n") {
		t.Errorf("origin /metrics counts no accepted vouch")
	}
}

// TestIPBoundTokenBehindATrustedProxy: an origin behind a front proxy it
// trusts (SHOAL_TRUSTED_PROXIES) checks IP-bound tokens against the
// rightmost X-Forwarded-For address that is not a trusted proxy.
func TestIPBoundTokenBehindATrustedProxy(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_TRUSTED_PROXIES=127.0.0.1/32, 10.0.0.0/8")
	v := readyVideo(t, n, map[string]string{"title": "proxied", "playback_policy": "signed"})
	code, b := n.do(http.MethodPost, "/v1/playback-tokens", testAdminKey, map[string]any{"id": v.ID, "ttl_seconds": 600, "ip": "203.0.113.0/24"})
	if code != http.StatusCreated {
		t.Fatalf("playback token: %d %s", code, b)
	}
	var tk struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal(b, &tk)
	master := n.http + "/hls/" + v.ID + "/master.m3u8?token=" + tk.Token
	for xff, want := range map[string]int{
		"203.0.113.7":                         http.StatusOK,
		"198.51.100.1, 203.0.113.7, 10.1.2.3": http.StatusOK,        // a spoofed left part changes nothing
		"203.0.113.7, 198.51.100.1":           http.StatusForbidden, // the viewer is the rightmost untrusted
		"":                                    http.StatusForbidden, // the proxy itself
	} {
		var resp *http.Response
		if xff == "" {
			resp, _ = getWith(t, master)
		} else {
			resp, _ = getWith(t, master, "X-Forwarded-For", xff)
		}
		if resp.StatusCode != want {
			t.Errorf("X-Forwarded-For %q: %d, want %d", xff, resp.StatusCode, want)
		}
	}
}

// TestIPBoundTokenThroughSiblingEdges: two edges of a region share their
// cache (each object is fetched from the origin by the edge that owns it);
// an edge asking its sibling for a viewer with an IP-bound token vouches
// for the viewer's address, and the sibling, knowing its key from the
// origin, believes it: every object reaches the viewer through a sibling
// once instead of each edge falling back to the origin.
func TestIPBoundTokenThroughSiblingEdges(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	v := readyVideo(t, n, map[string]string{"title": "bound, shared", "playback_policy": "signed"})
	token := n.nodeToken()
	a := startEdge(t, n, token, "eu", "SHOAL_TRUSTED_PROXIES=127.0.0.1/32")
	n.waitFor("the first edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	b := startEdge(t, n, token, "eu", "SHOAL_TRUSTED_PROXIES=127.0.0.1/32")
	// The first edge learns its sibling with a heartbeat answered after
	// the second joined (the origin's node list is at most 1 s old).
	n.waitFor("the first edge to hear of its sibling", 20*time.Second, func() bool {
		code, body := n.get("/v1/nodes", testAdminKey)
		type entry struct {
			Role          string    `json:"role"`
			PublicURL     string    `json:"public_url"`
			JoinedAt      time.Time `json:"joined_at"`
			LastHeartbeat time.Time `json:"last_heartbeat"`
		}
		var out struct {
			Data []entry `json:"data"`
		}
		if code != http.StatusOK || json.Unmarshal(body, &out) != nil {
			return false
		}
		// The edges (the origin is listed after them).
		out.Data = slices.DeleteFunc(out.Data, func(d entry) bool { return d.Role != "edge" })
		if len(out.Data) != 2 {
			return false
		}
		var aBeat, bJoined time.Time
		for _, d := range out.Data {
			switch d.PublicURL {
			case a.url:
				aBeat = d.LastHeartbeat
			case b.url:
				bJoined = d.JoinedAt
			}
		}
		return !bJoined.IsZero() && aBeat.After(bJoined.Add(1100*time.Millisecond))
	})

	const viewer = "203.0.113.7"
	code, body := n.do(http.MethodPost, "/v1/playback-tokens", testAdminKey, map[string]any{"id": v.ID, "ttl_seconds": 600, "ip": viewer})
	if code != http.StatusCreated {
		t.Fatalf("playback token: %d %s", code, body)
	}
	var tk struct {
		Token string `json:"token"`
	}
	_ = json.Unmarshal(body, &tk)
	resp, idx := getWith(t, a.url+"/hls/"+v.ID+"/240p/index.m3u8?token="+tk.Token, "X-Forwarded-For", viewer)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("index through the edge: %d", resp.StatusCode)
	}
	var objects []string
	for _, line := range strings.Split(string(idx), "\n") {
		if strings.Contains(line, ".m4s?token=") {
			objects = append(objects, line)
		}
		if _, rest, ok := strings.Cut(line, `URI="`); ok && strings.Contains(rest, ".mp4?token=") {
			objects = append(objects, rest[:strings.IndexByte(rest, '"')])
		}
	}
	if len(objects) < 2 {
		t.Fatalf("objects in the playlist: %q\n%s", objects, idx)
	}
	// Each object through both edges: the one that does not own it asks
	// its sibling.
	fromSibling := 0
	for _, o := range objects {
		for _, e := range []*edgeProc{a, b} {
			resp, _ := getWith(t, e.url+"/hls/"+v.ID+"/240p/"+o, "X-Forwarded-For", viewer)
			cs := resp.Header.Get("Cache-Status")
			if resp.StatusCode != http.StatusOK {
				t.Fatalf("%s at %s: %d %q", o, e.url, resp.StatusCode, cs)
			}
			if strings.Contains(cs, "detail=sibling-") {
				fromSibling++
			}
		}
	}
	if fromSibling != len(objects) {
		t.Fatalf("%d of %d objects came through a sibling, want all", fromSibling, len(objects))
	}
}

// TestEdgeKeysUnderMadeUpIDs: requests naming made-up node ids neither
// load the registry beyond the lookup budget nor push a joined edge's key
// out of memory.
func TestEdgeKeysUnderMadeUpIDs(t *testing.T) {
	t.Parallel()
	now := time.Unix(1_800_000_000, 0)
	_, edgePriv, _ := ed25519.GenerateKey(nil)
	edgePub := edgePriv.Public().(ed25519.PublicKey)
	edgeID := nodeproto.NodeID(edgePub)
	_, newPriv, _ := ed25519.GenerateKey(nil)
	newPub := newPriv.Public().(ed25519.PublicKey)
	newID := nodeproto.NodeID(newPub)
	var lookups atomic.Int32
	k := newEdgeKeys(nil)
	k.now = func() time.Time { return now }
	k.node = func(_ context.Context, id string) (routing.Node, error) {
		lookups.Add(1)
		if id == edgeID {
			return routing.Node{ID: id, Role: "edge", PublicKey: base64.StdEncoding.EncodeToString(edgePub)}, nil
		}
		if id == newID {
			return routing.Node{ID: id, Role: "edge", PublicKey: base64.StdEncoding.EncodeToString(newPub)}, nil
		}
		return routing.Node{}, routing.ErrNotFound
	}
	if !edgePub.Equal(k.key(t.Context(), edgeID)) {
		t.Fatal("the joined edge's key is not found")
	}
	attacker := withPeer(t.Context(), "198.51.100.9:40000")
	for i := range 20_000 {
		if k.key(attacker, fmt.Sprintf("madeup%06d", i)) != nil {
			t.Fatal("a made-up id has a key")
		}
	}
	if n := lookups.Load(); n > nodeKeyLookups+1 {
		t.Fatalf("%d registry lookups for made-up ids in an instant, want at most %d", n-1, nodeKeyLookups)
	}
	before := lookups.Load()
	if !edgePub.Equal(k.key(t.Context(), edgeID)) || lookups.Load() != before {
		t.Fatal("the joined edge's key was pushed out by made-up ids")
	}
	// An edge that just joined, asking from its own address, is looked up
	// although the attacker spent its budget.
	if !newPub.Equal(k.key(withPeer(t.Context(), "192.0.2.1:5000"), newID)) {
		t.Fatal("a new edge is not found while another host floods made-up ids")
	}
}
