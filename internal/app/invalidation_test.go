package app

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/routing"
)

// diskHas reports whether the edge cache under cacheDir holds an object
// whose key ends with suffix.
func diskHas(cacheDir, suffix string) bool {
	found := false
	_ = filepath.WalkDir(filepath.Join(cacheDir, "objects"), func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || found {
			return nil
		}
		b, err := os.ReadFile(p)
		if err != nil || len(b) < 12 || string(b[:8]) != "SHOALEC1" {
			return nil
		}
		hl := int(b[8])<<24 | int(b[9])<<16 | int(b[10])<<8 | int(b[11])
		if 12+hl > len(b) {
			return nil
		}
		var m struct {
			Key string `json:"key"`
		}
		if json.Unmarshal(b[12:12+hl], &m) == nil && strings.HasSuffix(m.Key, suffix) {
			found = true
		}
		return nil
	})
	return found
}

// fillInvalidationFeed appends count unrelated invalidations (deletions of
// ids that do not exist: what deletions, policy changes and new broadcasts
// of other streams append), more than the feed keeps when count is over
// routing.MaxInvalidations.
func fillInvalidationFeed(t *testing.T, n *node, count int) {
	t.Helper()
	s, err := routing.NewStore(n.redis.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	for i := range count {
		if err := s.DeleteVideo(t.Context(), fmt.Sprintf("other%05d", i)); err != nil && !errors.Is(err, routing.ErrNotFound) {
			t.Fatal(err)
		}
	}
}

// edgeMetric reads a metric of an edge's /metrics (-1 when unreachable).
func edgeMetric(e *edgeProc, name string) float64 {
	resp, err := http.Get(e.url + "/metrics")
	if err != nil {
		return -1
	}
	defer resp.Body.Close()
	var b strings.Builder
	buf := make([]byte, 32<<10)
	for {
		k, err := resp.Body.Read(buf)
		b.Write(buf[:k])
		if err != nil {
			break
		}
	}
	if resp.StatusCode != http.StatusOK {
		return -1
	}
	return metric([]byte(b.String()), name, "")
}

// waitCaughtUp waits until the edge has applied every invalidation the
// origin has (its disk tier is served from then on).
func waitCaughtUp(t *testing.T, n *node, e *edgeProc) {
	t.Helper()
	n.waitFor("the edge to catch up with the invalidation feed", 40*time.Second, func() bool {
		return edgeMetric(e, "shoal_edge_invalidations_caught_up") == 1
	})
}

// TestEdgeRestartAfterTrimmedFeedDropsDeleted: an edge caches a public
// video's segment on disk and stops; the video is deleted; more changes
// than the origin's invalidation feed keeps happen (other deletions,
// broadcasts starting); the edge restarts on the same data dir: it must
// not serve the deleted video's segment from its disk copy (cached for a
// year).
func TestEdgeRestartAfterTrimmedFeedDropsDeleted(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	v := readyVideo(t, n, map[string]string{"title": "deleted while the edge was away"})
	token := n.nodeToken()
	port, dir := freePort(t), t.TempDir()
	e := startEdgeAt(t, n, token, port, dir)
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	waitCaughtUp(t, n, e)
	seg := n.firstSegment(v.ID, "240p")
	for range 2 {
		if resp, _ := httpGet(t, e.url+seg); resp.StatusCode != http.StatusOK {
			t.Fatalf("through the edge: %d", resp.StatusCode)
		}
	}
	cacheDir := filepath.Join(dir, "edgecache")
	n.waitFor("the segment on the edge's disk", 10*time.Second, func() bool { return diskHas(cacheDir, seg) })
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	_ = e.cmd.Wait()
	if _, err := os.Stat(filepath.Join(cacheDir, cursorFileName)); err != nil {
		t.Fatalf("the edge kept no invalidation cursor: %v", err)
	}

	if code, b := n.do(http.MethodDelete, "/v1/videos/"+v.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("delete: %d %s", code, b)
	}
	if code, _ := n.get(seg, ""); code != http.StatusNotFound {
		t.Fatalf("origin still serves the deleted segment: %d", code)
	}
	fillInvalidationFeed(t, n, routing.MaxInvalidations+500)

	e = startEdgeAt(t, n, token, port, dir)
	waitCaughtUp(t, n, e)
	if resp, b := httpGet(t, e.url+seg); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the restarted edge serves the deleted video's segment: %d (%d bytes, Cache-Status %q)",
			resp.StatusCode, len(b), resp.Header.Get("Cache-Status"))
	}
	if got := edgeMetric(e, "shoal_edge_invalidation_resets_total"); got != 1 {
		t.Errorf("shoal_edge_invalidation_resets_total = %v, want 1 (the origin's reset)", got)
	}
	n.waitFor("the segment gone from the edge's disk", 10*time.Second, func() bool { return !diskHas(cacheDir, seg) })
}

// TestEdgeRestartAfterTrimmedFeedRefusesSigned: an edge caches a public
// live stream's segment on disk and stops; the stream is PATCHed to
// signed; more changes than the feed keeps happen; the edge restarts on
// the same data dir: a viewer without a token must be refused.
func TestEdgeRestartAfterTrimmedFeedRefusesSigned(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	token := n.nodeToken()
	port, dir := freePort(t), t.TempDir()
	e := startEdgeAt(t, n, token, port, dir)
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream("signed while the edge was away")
	pub := publish(t, clip(t, 30), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	seg := n.firstSegment(ls.ID, "source")
	waitCaughtUp(t, n, e)
	if resp, _ := httpGet(t, e.url+seg); resp.StatusCode != http.StatusOK {
		t.Fatalf("live segment through the edge: %d", resp.StatusCode)
	}
	cacheDir := filepath.Join(dir, "edgecache")
	n.waitFor("the segment on the edge's disk", 10*time.Second, func() bool { return diskHas(cacheDir, seg) })
	_ = e.cmd.Process.Signal(syscall.SIGTERM)
	_ = e.cmd.Wait()

	if code, b := n.do(http.MethodPatch, "/v1/live-streams/"+ls.ID, testAdminKey, map[string]string{"playback_policy": "signed"}); code != http.StatusOK {
		t.Fatalf("patch: %d %s", code, b)
	}
	n.waitFor("the origin to refuse the segment without a token", 10*time.Second, func() bool {
		code, _ := n.get(seg, "")
		return code == http.StatusForbidden
	})
	fillInvalidationFeed(t, n, routing.MaxInvalidations+500)

	e = startEdgeAt(t, n, token, port, dir)
	waitCaughtUp(t, n, e)
	if resp, b := httpGet(t, e.url+seg); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("the restarted edge serves the now-signed stream's segment without a token: %d (%d bytes, Cache-Status %q)",
			resp.StatusCode, len(b), resp.Header.Get("Cache-Status"))
	}
}

// TestEdgeAwayPastFeedDropsDeleted: no restart: a running edge holding a
// video's segment is cut off from the origin (here: paused) while the
// video is deleted and more changes than the feed keeps happen; once back
// it must not go on serving the deleted video.
func TestEdgeAwayPastFeedDropsDeleted(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	v := readyVideo(t, n, map[string]string{"title": "deleted while the edge was cut off"})
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	waitCaughtUp(t, n, e)
	resets := edgeMetric(e, "shoal_edge_invalidation_resets_total") // its first start's, without a cursor
	seg := n.firstSegment(v.ID, "240p")
	for range 2 {
		if resp, _ := httpGet(t, e.url+seg); resp.StatusCode != http.StatusOK {
			t.Fatalf("through the edge: %d", resp.StatusCode)
		}
	}
	_ = e.cmd.Process.Signal(syscall.SIGSTOP)
	if code, b := n.do(http.MethodDelete, "/v1/videos/"+v.ID, testAdminKey, nil); code != http.StatusNoContent {
		_ = e.cmd.Process.Signal(syscall.SIGCONT)
		t.Fatalf("delete: %d %s", code, b)
	}
	fillInvalidationFeed(t, n, routing.MaxInvalidations+500)
	_ = e.cmd.Process.Signal(syscall.SIGCONT)
	n.waitFor("the edge to learn it missed invalidations", 30*time.Second, func() bool {
		return edgeMetric(e, "shoal_edge_invalidation_resets_total") > resets
	})
	waitCaughtUp(t, n, e)
	if resp, b := httpGet(t, e.url+seg); resp.StatusCode != http.StatusNotFound {
		t.Fatalf("the edge back from its outage serves the deleted video's segment: %d (%d bytes, Cache-Status %q)",
			resp.StatusCode, len(b), resp.Header.Get("Cache-Status"))
	}
}
