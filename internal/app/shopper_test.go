package app

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"path"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// walkHLS GETs a video's master playlist, its media playlists, inits and
// segments from base (an edge), as a player would, and tells got of each
// (its path and body).
func walkHLS(t *testing.T, base, id string, got func(p string, body []byte)) {
	t.Helper()
	var walk func(p string)
	walk = func(p string) {
		resp, body := httpGet(t, base+p)
		if resp.StatusCode != http.StatusOK {
			t.Fatalf("%s%s: %d", base, p, resp.StatusCode)
		}
		got(p, body)
		if !strings.HasSuffix(p, ".m3u8") {
			return
		}
		sc := bufio.NewScanner(bytes.NewReader(body))
		for sc.Scan() {
			l := strings.TrimSpace(sc.Text())
			if l == "" || strings.HasPrefix(l, "#") {
				if i := strings.Index(l, `URI="`); i >= 0 {
					u := l[i+5:]
					walk(path.Join(path.Dir(p), u[:strings.IndexByte(u, '"')]))
				}
				continue
			}
			walk(path.Join(path.Dir(p), l))
		}
	}
	walk("/hls/" + id + "/master.m3u8")
}

// fetchAll GETs every object of a video from base (an edge), so that the
// edge caches them and reports the video among the streams it served, and
// returns how many were not playlists.
func fetchAll(t *testing.T, base, id string) int {
	t.Helper()
	n := 0
	walkHLS(t, base, id, func(p string, _ []byte) {
		if !strings.HasSuffix(p, ".m3u8") {
			n++
		}
	})
	return n
}

// nodeAudits is what GET /v1/nodes says of an edge's audits.
func (n *node) nodeAudits(id string) (passed, failed int64, finding string) {
	n.t.Helper()
	_, b := n.get("/v1/nodes", testAdminKey)
	var out struct {
		Data []struct {
			ID     string `json:"id"`
			Audits *struct {
				Passed, Failed int64
				LastFinding    string  `json:"last_finding"`
				TTFB           int64   `json:"ttfb_ms"`
				BytesPerSec    float64 `json:"bytes_per_sec"`
			} `json:"audits"`
		} `json:"data"`
	}
	_ = json.Unmarshal(b, &out)
	for _, d := range out.Data {
		if d.ID == id && d.Audits != nil {
			return d.Audits.Passed, d.Audits.Failed, d.Audits.LastFinding
		}
	}
	return 0, 0, ""
}

// TestMysteryShopper: the origin audits edges as a viewer would, with no
// viewer reporting anything. An edge whose cached segments were altered
// while it was stopped, and that reports serving nothing, fails its audits
// and is quarantined; an honest edge under the same audits passes every
// one and stays active.
func TestMysteryShopper(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_ROUTE_AUDIT_INTERVAL=1s", "SHOAL_ROUTE_QUARANTINE_AUDITS=2")
	v := readyVideo(t, n, map[string]string{"title": "audited"})
	token := n.nodeToken()
	honestPort, honestDir := freePort(t), t.TempDir()
	badPort, badDir := freePort(t), t.TempDir()
	honest := startEdgeAt(t, n, token, honestPort, honestDir)
	bad := startEdgeAt(t, n, token, badPort, badDir)
	n.waitFor("both edges in /v1/nodes", 20*time.Second, func() bool { return len(n.nodes()) == 2 })
	ids := map[string]string{}
	for _, ni := range n.nodes() {
		ids[ni.PublicURL] = ni.ID
	}
	if got := fetchAll(t, bad.url, v.ID); got < 2 {
		t.Fatalf("the video has %d segments", got)
	}
	fetchAll(t, honest.url, v.ID)

	// The bad edge's operator alters its cached segments while it is
	// stopped, and it comes back as the same node.
	_ = bad.cmd.Process.Signal(syscall.SIGTERM)
	_ = bad.cmd.Wait()
	if k := tamperSegments(t, filepath.Join(badDir, "edgecache")); k == 0 {
		t.Fatal("no cached segment to alter")
	}
	bad = startEdgeAt(t, n, token, badPort, badDir)
	n.waitFor("the altered edge back", 20*time.Second, func() bool {
		resp, err := http.Get(bad.url + "/readyz")
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	})
	// Back, it has served nothing and says so in its heartbeats: the
	// origin picks what to audit from what it published, not from what the
	// edge reports. Nobody fetches from it or reports anything.
	n.waitFor("the altered edge quarantined by audits", 60*time.Second, func() bool {
		state, _ := n.nodeState(ids[bad.url])
		return state == "quarantined"
	})
	_, reason := n.nodeState(ids[bad.url])
	if !strings.Contains(reason, "audits") {
		t.Fatalf("quarantine reason %q, want the audits'", reason)
	}
	_, failed, finding := n.nodeAudits(ids[bad.url])
	if failed < 2 || !strings.Contains(finding, "SHA-256") {
		t.Fatalf("the altered edge's audits: %d failed, latest %q", failed, finding)
	}
	t.Logf("quarantined: %s", reason)
	if _, b := n.get("/v1/nodes", testAdminKey); !bytes.Contains(b, []byte(`"delivery_reports":[]`)) || bytes.Contains(b, []byte(`"kind"`)) {
		t.Fatalf("a viewer report was made: %s", b)
	}

	// The honest edge, audited as often, passes them all.
	n.waitFor("the honest edge passing 10 audits", 60*time.Second, func() bool {
		passed, _, _ := n.nodeAudits(ids[honest.url])
		return passed >= 10
	})
	if passed, failed, finding := n.nodeAudits(ids[honest.url]); failed != 0 {
		t.Fatalf("the honest edge failed %d of %d audits: %s", failed, passed+failed, finding)
	}
	if state, reason := n.nodeState(ids[honest.url]); state != "active" {
		t.Fatalf("the honest edge is %s: %s", state, reason)
	}
	_, om := n.get("/metrics", "")
	if metric(om, "shoal_edge_audits_total", `result="fail"`) < 2 || metric(om, "shoal_edge_audits_total", `result="pass"`) < 10 {
		t.Fatal("shoal_edge_audits_total does not count the audits")
	}
}
