package app

import (
	"encoding/json"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
	"github.com/shoal-video/shoal/internal/testutil/s3test"
)

// An edge configured with origin A alone learns origin B (same Redis,
// same bucket) from its heartbeat answers; when A stops, the edge still
// serves a video's segments it had not cached (from B) and still
// heartbeats (through B).
func TestEdgeLearnsOriginsAndFailsOver(t *testing.T) {
	t.Parallel()
	srv := s3test.Shared(t)
	rs := redistest.Start(t)
	const bucket = "shoal-edge-origins"
	// No mystery-shopper audits: one through the edge would cache a
	// segment of the second half before A stops.
	env := append(s3Env(srv, bucket), "SHOAL_ROUTE_AUDIT_INTERVAL=0")
	a := startNodeOn(t, rs, env...)
	b := startNodeOn(t, rs, env...)
	e := startEdge(t, a, a.nodeToken(), "")
	a.waitFor("the edge to join", 20*time.Second, func() bool { return len(a.nodes()) == 1 })
	a.waitFor("the edge to learn B", 20*time.Second, func() bool {
		for _, line := range strings.Split(e.stderr.String(), "\n") {
			if strings.Contains(line, `msg="origins changed"`) && strings.Contains(line, b.http) && strings.Contains(line, a.http) {
				return true
			}
		}
		return false
	})

	v := a.createVideo("through a failing origin")
	if code, body := putFile(t, v.Upload.DirectURL, testAdminKey, testutil.MakeMP4(t, 426, 240, 6)); code != http.StatusAccepted {
		t.Fatalf("PUT source at A: %d %s", code, body)
	}
	if v = a.waitVideo(v.ID, 90*time.Second); v.Status != "ready" {
		t.Fatalf("video: %+v", v)
	}
	base := e.url + "/hls/" + v.ID + "/"
	if resp, master := httpGet(t, base+"master.m3u8"); resp.StatusCode != 200 || !strings.Contains(string(master), "240p/index.m3u8") {
		t.Fatalf("master through the edge: %d\n%s", resp.StatusCode, master)
	}
	resp, idx := httpGet(t, base+"240p/index.m3u8")
	if resp.StatusCode != 200 {
		t.Fatalf("playlist through the edge: %d", resp.StatusCode)
	}
	var segs []string
	for _, line := range strings.Split(string(idx), "\n") {
		if strings.HasSuffix(line, ".m4s") {
			segs = append(segs, line)
		}
	}
	if len(segs) < 2 {
		t.Fatalf("want at least two segments:\n%s", idx)
	}
	// The first half plays through the edge (fetched from A).
	half := len(segs) / 2
	for _, s := range segs[:half] {
		resp, got := httpGet(t, base+"240p/"+s)
		_, want := a.get("/hls/"+v.ID+"/240p/"+s, "")
		if resp.StatusCode != 200 || string(got) != string(want) {
			t.Fatalf("%s through the edge: %d, %d bytes (A has %d)", s, resp.StatusCode, len(got), len(want))
		}
	}

	// A stops.
	a.stop()
	code := <-a.done
	a.done <- code // for the cleanup
	stopped := time.Now()

	// The second half, never fetched by the edge, comes from B.
	for _, s := range segs[half:] {
		resp, got := httpGet(t, base+"240p/"+s)
		_, want := b.get("/hls/"+v.ID+"/240p/"+s, "")
		if resp.StatusCode != 200 || string(got) != string(want) || len(want) == 0 {
			t.Fatalf("%s through the edge with A stopped: %d %q, %d bytes (B has %d)", s, resp.StatusCode, resp.Header.Get("Cache-Status"), len(got), len(want))
		}
		if cs := resp.Header.Get("Cache-Status"); !strings.Contains(cs, "fwd=miss") {
			t.Fatalf("%s: Cache-Status %q, want a miss fetched with A stopped", s, cs)
		}
	}
	if d := probeDuration(t, base+"master.m3u8"); d < 5.5 || d > 6.5 {
		t.Fatalf("ffprobe through the edge with A stopped: %.3f s, want 6", d)
	}

	// Its heartbeats reach B: the registry sees them after A stopped.
	b.waitFor("a heartbeat of the edge after A stopped", 15*time.Second, func() bool {
		code, body := b.get("/v1/nodes", testAdminKey)
		if code != http.StatusOK {
			return false
		}
		var out struct {
			Data []struct {
				Role          string    `json:"role"`
				PublicURL     string    `json:"public_url"`
				LastHeartbeat time.Time `json:"last_heartbeat"`
			} `json:"data"`
		}
		_ = json.Unmarshal(body, &out)
		// The edge first; B itself is listed after it (role origin).
		return len(out.Data) >= 1 && out.Data[0].Role == "edge" && (len(out.Data) == 1 || out.Data[1].Role != "edge") &&
			out.Data[0].PublicURL == e.url && out.Data[0].LastHeartbeat.After(stopped.Add(nodeproto.HeartbeatInterval))
	})
}
