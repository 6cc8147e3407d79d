package playerapi

import (
	"net/http"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// TestHeartbeatP2PStats: the P2P stats edges send with their heartbeats
// are checked, added once per batch to the live streams' and videos'
// p2p_stats (GET one and the list), skipped for unknown ids, and counted
// in shoal_p2p_reported_bytes_total.
func TestHeartbeatP2PStats(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := newEnv(t, Config{Registerer: reg})
	ls := e.createLiveStream(t, `{"name":"show"}`)
	v := e.createVideo(t, `{"title":"vod"}`)
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	e.a.heartbeats.now = func() time.Time { return time.Unix(0, clock.Load()) }
	a := newKey(t)
	ra := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(a, "eu", time.Now()), a).wantStatus(t, http.StatusCreated))
	beat := func(batch string, stats map[string]nodeproto.P2PBytes) response {
		t.Helper()
		clock.Add(int64(time.Second)) // within the heartbeat rate limit
		return e.nodeReq(t, "/v1/nodes/"+ra.ID+"/heartbeat", testAdminKey,
			nodeproto.Heartbeat{Time: time.Now(), P2PStreamBytes: stats, P2PBatch: batch}, a)
	}
	stats := func() (live, vod *p2pStatsJSON) {
		t.Helper()
		return decode[liveStreamJSON](t, e.doJSON(t, "GET", "/v1/live-streams/"+ls.ID, testAdminKey, "").wantStatus(t, http.StatusOK)).P2PStats,
			decode[videoJSON](t, e.doJSON(t, "GET", "/v1/videos/"+v.ID, testAdminKey, "").wantStatus(t, http.StatusOK)).P2PStats
	}
	// Nothing yet: zeros, offload 0.
	if l, vd := stats(); l == nil || vd == nil || *l != (p2pStatsJSON{}) || *vd != (p2pStatsJSON{}) {
		t.Fatalf("before any report: %+v %+v", l, vd)
	}
	reported := func(source string) float64 {
		return promtest.ToFloat64(e.a.p2pReported.WithLabelValues(source))
	}

	// Bad figures are refused with a clear error, and nothing is added.
	most := int64(maxCount)
	tooMany := map[string]nodeproto.P2PBytes{}
	for len(tooMany) <= nodeproto.MaxP2PStreams {
		tooMany[ids.New()] = nodeproto.P2PBytes{HTTP: 1}
	}
	for name, bad := range map[string]struct {
		batch string
		stats map[string]nodeproto.P2PBytes
		msg   string
	}{
		"no batch":    {"", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 1}}, "p2p_batch"},
		"bad batch":   {"a b", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 1}}, "p2p_batch"},
		"long batch":  {strings.Repeat("a", 65), map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 1}}, "p2p_batch"},
		"bad id":      {"b0", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 1}, "../x": {HTTP: 1}}, "not a live stream or video id"},
		"negative":    {"b0", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 1, P2P: -1}}, "between 0 and"},
		"too big":     {"b0", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: most + 1}}, "between 0 and"},
		"too many":    {"b0", tooMany, "at most 500"},
		"batch alone": {"a/b", nil, "p2p_batch"},
	} {
		d := beat(bad.batch, bad.stats).wantError(t, http.StatusBadRequest, codeInvalidRequest)
		if !strings.Contains(d.Message, bad.msg) {
			t.Fatalf("%s: message %q, want it to mention %q", name, d.Message, bad.msg)
		}
	}
	if l, vd := stats(); *l != (p2pStatsJSON{}) || *vd != (p2pStatsJSON{}) {
		t.Fatalf("after refused heartbeats: %+v %+v", l, vd)
	}

	// Added; an unknown id is skipped (not counted).
	beat("b1", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 100, P2P: 300}, v.ID: {HTTP: 50}, "nosuchstream": {HTTP: 7, P2P: 7}}).wantStatus(t, http.StatusOK)
	// The same batch again (the node did not get the answer): not twice.
	beat("b1", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 100, P2P: 300}, v.ID: {HTTP: 50}, "nosuchstream": {HTTP: 7, P2P: 7}}).wantStatus(t, http.StatusOK)
	// A heartbeat without stats changes nothing.
	beat("", nil).wantStatus(t, http.StatusOK)
	beat("b2", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 0, P2P: 100}}).wantStatus(t, http.StatusOK)
	l, vd := stats()
	if *l != (p2pStatsJSON{HTTPBytes: 100, P2PBytes: 400, Offload: 0.8}) || *vd != (p2pStatsJSON{HTTPBytes: 50}) {
		t.Fatalf("p2p_stats %+v %+v, want {100 400 0.8} {50 0 0}", l, vd)
	}
	// The lists show them too.
	lsList := decode[liveStreamListJSON](t, e.doJSON(t, "GET", "/v1/live-streams", testAdminKey, "").wantStatus(t, http.StatusOK))
	vList := decode[videoListJSON](t, e.doJSON(t, "GET", "/v1/videos", testAdminKey, "").wantStatus(t, http.StatusOK))
	if len(lsList.Data) != 1 || lsList.Data[0].P2PStats == nil || *lsList.Data[0].P2PStats != *l {
		t.Fatalf("live stream list %+v", lsList.Data)
	}
	if len(vList.Data) != 1 || vList.Data[0].P2PStats == nil || *vList.Data[0].P2PStats != *vd {
		t.Fatalf("video list %+v", vList.Data)
	}
	if reported("http") != 150 || reported("p2p") != 400 {
		t.Fatalf("shoal_p2p_reported_bytes_total http=%v p2p=%v, want 150 400", reported("http"), reported("p2p"))
	}
	if n, err := promtest.GatherAndCount(reg, "shoal_p2p_reported_bytes_total"); err != nil || n != 2 {
		t.Fatalf("registered series: %d, %v (want the two sources only)", n, err)
	}

	// The origin's own tracker's figures go through RecordP2PStats.
	if err := e.a.RecordP2PStats(t.Context(), "origin-x", "o1", map[string]routing.P2PBytes{v.ID: {P2P: 150}}); err != nil {
		t.Fatal(err)
	}
	if _, vd := stats(); *vd != (p2pStatsJSON{HTTPBytes: 50, P2PBytes: 150, Offload: 0.75}) {
		t.Fatalf("after the origin's own: %+v", vd)
	}

	// With Redis down the heartbeat is not answered 200: the node keeps
	// its batch.
	e.redis.Kill()
	beat("b3", map[string]nodeproto.P2PBytes{ls.ID: {HTTP: 1}}).wantError(t, http.StatusServiceUnavailable, codeUnavailable)
}
