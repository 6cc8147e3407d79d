package app

import (
	"encoding/json"
	"net/http"
	"regexp"
	"testing"
)

// TestWatchPageSessionBeacons: the origin's watch page carries a playback
// session that its own API takes: a beacon for it counts a view in the
// analytics and in the metrics.
func TestWatchPageSessionBeacons(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("beaconed")
	code, page := n.get("/watch/"+ls.ID, "")
	if code != http.StatusOK {
		t.Fatalf("watch page: %d", code)
	}
	m := regexp.MustCompile(`(?s)<script id="shoal-state" type="application/json">(.*?)</script>`).FindSubmatch(page)
	if m == nil {
		t.Fatal("no state in the watch page")
	}
	var st struct {
		Session   string `json:"session"`
		BeaconURL string `json:"beacon_url"`
	}
	if err := json.Unmarshal(m[1], &st); err != nil || st.Session == "" || st.BeaconURL != "/v1/beacons" {
		t.Fatalf("state %s (%v)", m[1], err)
	}
	if code, body := n.get("/v1/route/"+ls.ID+"?session="+st.Session, ""); code != http.StatusOK {
		t.Fatalf("route: %d %s", code, body)
	}
	beacon := map[string]any{"session": st.Session, "seq": 1, "watch_ms": 100, "startup_ms": 300,
		"bytes": map[string]int64{"origin": 1000}}
	if code, body := n.do(http.MethodPost, st.BeaconURL, "", beacon); code != http.StatusAccepted || string(body) != `{"accepted":true}` {
		t.Fatalf("beacon: %d %s", code, body)
	}
	code, body := n.get("/v1/analytics/live-streams/"+ls.ID, testAdminKey)
	var a struct {
		Totals struct {
			Views        int64   `json:"views"`
			WatchSeconds float64 `json:"watch_seconds"`
		} `json:"totals"`
	}
	if err := json.Unmarshal(body, &a); code != http.StatusOK || err != nil || a.Totals.Views != 1 || a.Totals.WatchSeconds != 0.1 {
		t.Fatalf("analytics: %d %s", code, body)
	}
	if got := n.metric(`shoal_beacons_total{result="accepted"}`); got != 1 {
		t.Fatalf("shoal_beacons_total accepted = %v", got)
	}
	if got := n.metric(`shoal_viewer_bytes_total{source="origin"}`); got != 1000 {
		t.Fatalf("shoal_viewer_bytes_total origin = %v", got)
	}
}
