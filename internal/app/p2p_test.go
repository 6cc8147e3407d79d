package app

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/p2p/peer"
	"github.com/shoal-video/shoal/p2p/tracker"
)

func (n *node) contentKeys() []ed25519.PublicKey {
	n.t.Helper()
	code, body := n.get("/v1/keys", "")
	if code != http.StatusOK {
		n.t.Fatalf("GET /v1/keys: %d %s", code, body)
	}
	var keys struct {
		ContentKeys []struct {
			PublicKey string `json:"public_key"`
		} `json:"content_keys"`
	}
	if err := json.Unmarshal(body, &keys); err != nil {
		n.t.Fatal(err)
	}
	var out []ed25519.PublicKey
	for _, k := range keys.ContentKeys {
		b, err := base64.RawURLEncoding.DecodeString(k.PublicKey)
		if err != nil || len(b) != ed25519.PublicKeySize {
			n.t.Fatalf("content key %q", k.PublicKey)
		}
		out = append(out, ed25519.PublicKey(b))
	}
	return out
}

// lastSegment is the newest segment of a live rendition's playlist on the
// origin.
func (n *node) lastSegment(id, rendition, query string) string {
	n.t.Helper()
	code, body := n.get("/hls/"+id+"/"+rendition+"/index.m3u8"+query, "")
	if code != http.StatusOK {
		n.t.Fatalf("playlist: %d", code)
	}
	objs, _, _ := manifest.PlaylistObjects(body)
	last := ""
	for _, o := range objs {
		if o.Kind == manifest.KindSegment {
			last, _, _ = strings.Cut(o.URI, "?") // a signed playlist's URIs carry the token
		}
	}
	if last == "" {
		n.t.Fatalf("no segment in\n%s", body)
	}
	return last
}

// peerConfig is a Go peer's configuration for the swarm of id's
// rendition on node base (the origin or an edge), over loopback.
func peerConfig(base, id, rendition string, keys []ed25519.PublicKey) peer.Config {
	return peer.Config{
		Tracker: "ws" + strings.TrimPrefix(base, "http") + tracker.Path + "?swarm=" + id + "/" + rendition,
		HTTP:    base + "/hls/" + id + "/" + rendition + "/", ContentKeys: keys, Loopback: true,
	}
}

// startLiveOnEdge starts a node and an edge and publishes a live stream
// named name (the ffmpeg CLI over RTMP, killed at the end of the test).
func startLiveOnEdge(t *testing.T, name string) (*node, *edgeProc, liveStream) {
	t.Helper()
	n := startNode(t)
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream(name)
	pub := publish(t, clip(t, 60), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	t.Cleanup(func() { _ = pub.Process.Kill() })
	return n, e, ls
}

// TestP2PSwarmsOnOriginAndEdge: the tracker on the origin and on an edge
// refuses deleted ids (404) and signed streams without a valid token (403)
// before the upgrade, and on each node a Go peer gets a live segment from
// another over a data channel, verified against the origin's signed
// manifest.
func TestP2PSwarmsOnOriginAndEdge(t *testing.T) {
	t.Parallel()
	n, e, ls := startLiveOnEdge(t, "swarm")
	members := n.createStream("members")
	if code, b := n.do(http.MethodPatch, "/v1/live-streams/"+members.ID, testAdminKey, map[string]string{"playback_policy": "signed"}); code != http.StatusOK {
		t.Fatalf("PATCH: %d %s", code, b)
	}
	deleted := n.createStream("deleted")
	if code, b := n.do(http.MethodDelete, "/v1/live-streams/"+deleted.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, b)
	}
	n.firstSegment(ls.ID, "source")
	keys := n.contentKeys()

	for _, base := range []string{n.http, e.url} {
		for query, want := range map[string]int{
			deleted.ID + "/source": http.StatusNotFound,
			// As HLS: an id that never existed is taken as signed (fails closed).
			"nosuchid1/source":                    http.StatusForbidden,
			members.ID + "/source":                http.StatusForbidden,
			members.ID + "/source&token=abc.def":  http.StatusForbidden,
			ls.ID + "/source/x":                   http.StatusBadRequest,
			ls.ID + "/source&token=" + "a.b.c.d.": http.StatusUpgradeRequired, // public: the token is not looked at; a plain GET is no WebSocket
		} {
			resp, body := httpGet(t, base+"/p2p/ws?swarm="+query)
			if resp.StatusCode != want {
				t.Errorf("%s /p2p/ws?swarm=%s: %d %s, want %d", base, query, resp.StatusCode, body, want)
			}
			if want != http.StatusUpgradeRequired && !bytes.Contains(body, []byte(`"error":{"code":`)) {
				t.Errorf("%s /p2p/ws?swarm=%s: body %s, want a JSON error", base, query, body)
			}
		}
		join := func() *peer.Peer {
			t.Helper()
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			cfg := peerConfig(base, ls.ID, "source", keys)
			// ICE, DTLS and SCTP under -race on a loaded machine: room
			// enough that the segment does not fall back to HTTP.
			cfg.PeerTimeout = 20 * time.Second
			p, err := peer.Join(ctx, cfg)
			if err != nil {
				t.Fatalf("join at %s: %v", base, err)
			}
			t.Cleanup(func() { _ = p.Close() })
			return p
		}
		a, b := join(), join()
		ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
		defer cancel()
		var seg string
		var data []byte
		// The node's manifest may be a moment behind its playlist.
		n.waitFor("a live segment over HTTP at "+base, 20*time.Second, func() bool {
			seg = n.lastSegment(ls.ID, "source", "")
			var err error
			var from peer.Source
			data, from, err = a.Fetch(ctx, seg)
			if err != nil {
				t.Logf("fetch %s at %s: %v", seg, base, err)
				return false
			}
			if from != peer.SourceHTTP {
				t.Fatalf("a's first fetch came from %s", from)
			}
			return true
		})
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		got, from, err := b.Fetch(ctx, seg)
		if err != nil || from != peer.SourceP2P || !bytes.Equal(got, data) {
			t.Fatalf("b at %s: %s, %d bytes (a has %d), err %v; want a's segment from a peer", base, from, len(got), len(data), err)
		}
		if s := b.Stats(); s.P2PBytes != int64(len(data)) || s.HTTPBytes != 0 {
			t.Fatalf("b's stats at %s: %+v", base, s)
		}
	}
	code, body := n.get("/metrics", "")
	if code != http.StatusOK || !strings.Contains(string(body), "shoal_p2p_peers 2") {
		t.Fatalf("origin /metrics: %d, want shoal_p2p_peers 2", code)
	}

	// The stream turns signed: joins need a valid token, on the origin
	// at once and on the edge once its invalidation feed tells it.
	if code, b := n.do(http.MethodPatch, "/v1/live-streams/"+ls.ID, testAdminKey, map[string]string{"playback_policy": "signed"}); code != http.StatusOK {
		t.Fatalf("PATCH: %d %s", code, b)
	}
	good := n.playbackToken(ls.ID, 600)
	for _, base := range []string{n.http, e.url} {
		u := base + "/p2p/ws?swarm=" + ls.ID + "/source"
		n.waitFor("joins without a token refused at "+base, 20*time.Second, func() bool {
			resp, _ := httpGet(t, u)
			return resp.StatusCode == http.StatusForbidden
		})
		if resp, _ := httpGet(t, u+"&token="+n.playbackToken(members.ID, 600)); resp.StatusCode != http.StatusForbidden {
			t.Fatalf("a token of another stream at %s: %d", base, resp.StatusCode)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		p, err := peer.Join(ctx, peer.Config{Tracker: "ws" + strings.TrimPrefix(u, "http") + "&token=" + good,
			HTTP: base + "/hls/" + ls.ID + "/source/?token=" + good, ContentKeys: keys, Loopback: true})
		if err != nil {
			cancel()
			t.Fatalf("join with a valid token at %s: %v", base, err)
		}
		// The token goes with the HTTP requests too.
		n.waitFor("a signed live segment over HTTP at "+base, 20*time.Second, func() bool {
			_, from, err := p.Fetch(ctx, n.lastSegment(ls.ID, "source", "?token="+good))
			if err != nil {
				t.Logf("signed fetch at %s: %v", base, err)
			}
			return err == nil && from == peer.SourceHTTP
		})
		cancel()
		_ = p.Close()
	}
	// The owner turns P2P off: joins get 409 p2p_disabled on the origin
	// and, once its invalidation feed tells it, on the edge; HLS goes on.
	if code, b := n.do(http.MethodPatch, "/v1/live-streams/"+ls.ID, testAdminKey, map[string]any{"p2p": false}); code != http.StatusOK || !bytes.Contains(b, []byte(`"p2p":false`)) {
		t.Fatalf("PATCH p2p: %d %s", code, b)
	}
	for _, base := range []string{n.http, e.url} {
		u := base + "/p2p/ws?swarm=" + ls.ID + "/source&token=" + good
		var body []byte
		n.waitFor("joins refused with P2P off at "+base, 20*time.Second, func() bool {
			var resp *http.Response
			resp, body = httpGet(t, u)
			return resp.StatusCode == http.StatusConflict
		})
		if !bytes.Contains(body, []byte(`"code":"p2p_disabled"`)) {
			t.Fatalf("%s: %s, want p2p_disabled", base, body)
		}
		if resp, _ := httpGet(t, base+"/hls/"+ls.ID+"/source/index.m3u8?token="+good); resp.StatusCode != http.StatusOK || resp.Header.Get("Shoal-P2P") != "off" {
			t.Fatalf("%s: playlist %d, Shoal-P2P %q", base, resp.StatusCode, resp.Header.Get("Shoal-P2P"))
		}
	}
}
