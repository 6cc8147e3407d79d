package playerapi

import (
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/playsession"
	"github.com/shoal-video/shoal/internal/routing"
)

// t0 is when the test sessions' pages loaded (the tokens' issue time).
// t0 is in the future: Redis expires the keys of epochs and analytics
// at times reckoned from it, on its own clock.
var t0 = time.Date(2030, 12, 5, 10, 0, 0, 0, time.UTC)

// beaconEnv is an API whose clock the test sets.
type beaconEnv struct {
	*env
	clock  time.Time
	secret []byte
	remote int // the last octet of the next beacon's address
}

func newBeaconEnv(t *testing.T) *beaconEnv {
	t.Helper()
	return newBeaconEnvWith(t, Accounting{})
}

// newBeaconEnvWith is newBeaconEnv with the accounting settings acct.
func newBeaconEnvWith(t *testing.T, acct Accounting) *beaconEnv {
	t.Helper()
	e := newEnv(t, Config{RegionHeader: "X-Region", Registerer: prometheus.NewRegistry(), Accounting: acct})
	b := &beaconEnv{env: e, clock: t0}
	e.a.now = func() time.Time { return b.clock }
	secret, err := e.store.SessionSecret(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b.secret = secret
	return b
}

// session mints a token for item id, issued at.
func (b *beaconEnv) session(t *testing.T, kind, id string, at time.Time) string {
	t.Helper()
	tok, err := playsession.Mint(b.secret, kind, id, at)
	if err != nil {
		t.Fatal(err)
	}
	return tok
}

// join joins an edge and returns its id.
func (b *beaconEnv) join(t *testing.T, n int) string {
	t.Helper()
	k := newKey(t)
	body := joinBody(k, "eu", time.Now())
	body.PublicURL = fmt.Sprintf("http://edge%d.test:8081", n)
	id := decode[nodeproto.JoinResponse](t, b.nodeReq(t, "/v1/nodes/join", testAdminKey, body, k).wantStatus(t, http.StatusCreated)).ID
	b.a.registry.Invalidate()
	return id
}

// route asks where session tok plays item id from and returns the nodes
// offered.
func (b *beaconEnv) route(t *testing.T, id, tok string) []string {
	t.Helper()
	r := decode[routeJSON](t, b.doJSON(t, "GET", "/v1/route/"+id+"?session="+url.QueryEscape(tok), "", "").wantStatus(t, http.StatusOK))
	var nodes []string
	for _, c := range r.Candidates {
		if c.NodeID != "" {
			nodes = append(nodes, c.NodeID)
		}
	}
	return nodes
}

// beacon is a beacon's body (beaconRequest with every field sent).
type beacon struct {
	Session    string           `json:"session"`
	Seq        int64            `json:"seq"`
	Final      bool             `json:"final,omitempty"`
	Viewer     string           `json:"viewer,omitempty"`
	WatchMs    int64            `json:"watch_ms"`
	StartupMs  int64            `json:"startup_ms,omitempty"`
	Rebuffers  int64            `json:"rebuffers"`
	RebufferMs int64            `json:"rebuffer_ms"`
	Switches   int64            `json:"switches"`
	Errors     int64            `json:"errors"`
	Verified   int64            `json:"verified"`
	Failed     int64            `json:"failed"`
	Bytes      map[string]int64 `json:"bytes,omitempty"`
}

// post sends a raw beacon body as navigator.sendBeacon does (text/plain),
// from the user agent and region given.
func (b *beaconEnv) post(t *testing.T, body, ua, region string) response {
	t.Helper()
	req := httptest.NewRequest("POST", "/v1/beacons", strings.NewReader(body))
	req.Header.Set("Content-Type", "text/plain;charset=UTF-8")
	req.Header.Set("User-Agent", ua)
	if region != "" {
		req.Header.Set("X-Region", region)
	}
	b.remote++
	req.RemoteAddr = fmt.Sprintf("198.51.%d.%d:5000", b.remote/250, b.remote%250)
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func (b *beaconEnv) send(t *testing.T, bc beacon, ua, region string) response {
	t.Helper()
	body, _ := json.Marshal(bc)
	return b.post(t, string(body), ua, region)
}

// accepted sends bc and checks the answer's "accepted".
func (b *beaconEnv) accepted(t *testing.T, bc beacon, want bool) {
	t.Helper()
	got := decode[beaconJSON](t, b.send(t, bc, uaDesktop, "").wantStatus(t, http.StatusAccepted))
	if got.Accepted != want {
		t.Fatalf("beacon %+v: accepted %v, want %v", bc, got.Accepted, want)
	}
}

// viewerBytes returns the viewer bytes of each node in the epoch of t0.
func (b *beaconEnv) viewerBytes(t *testing.T, at time.Time) map[string]int64 {
	t.Helper()
	figs, err := b.store.EpochFigures(t.Context(), routing.EpochStart(at, DefaultEpoch))
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for n, f := range figs {
		out[n] = f[routing.FigureViewerBytes]
	}
	return out
}

func (b *beaconEnv) analyticsOf(t *testing.T, path, query string) analyticsJSON {
	t.Helper()
	if query == "" {
		query = "from=" + t0.Format(time.RFC3339) + "&to=" + t0.Add(2*time.Hour).Format(time.RFC3339)
	}
	return decode[analyticsJSON](t, b.doJSON(t, "GET", path+"?"+query, testAdminKey, "").wantStatus(t, http.StatusOK))
}

const (
	uaDesktop = "Mozilla/5.0 (Windows NT 10.0; Win64; x64) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
	uaIPhone  = "Mozilla/5.0 (iPhone; CPU iPhone OS 18_1 like Mac OS X) AppleWebKit/605.1.15 (KHTML, like Gecko) Version/18.1 Mobile/15E148 Safari/604.1"
	uaTablet  = "Mozilla/5.0 (Linux; Android 13; SM-X700) AppleWebKit/537.36 (KHTML, like Gecko) Chrome/131.0.0.0 Safari/537.36"
)

// TestForgedBeaconsChangeNoFigure: beacons for sessions the origin did
// not issue, expired, replayed, oversized, naming nodes not offered to
// the session, or using another item's session, credit no node and count
// nothing.
func TestForgedBeaconsChangeNoFigure(t *testing.T) {
	t.Parallel()
	b := newBeaconEnv(t)
	v := b.createVideo(t, `{"title":"watched"}`)
	other := b.createVideo(t, `{"title":"other"}`)
	n1 := b.join(t, 1)
	tok := b.session(t, playsession.KindVideo, v.ID, t0)
	if got := b.route(t, v.ID, tok); len(got) != 1 || got[0] != n1 {
		t.Fatalf("offered %v", got)
	}
	// n2 joins after the route: it was never offered to the session.
	n2 := b.join(t, 2)
	otherTok := b.session(t, playsession.KindVideo, other.ID, t0)
	// A route for v with other's session records nothing for it.
	b.route(t, v.ID, otherTok)
	b.clock = t0.Add(time.Minute)

	snapshot := func() string {
		a := b.analyticsOf(t, "/v1/analytics", "")
		j, _ := json.Marshal(struct {
			Bytes map[string]int64
			A     analyticsJSON
		}{b.viewerBytes(t, t0), a})
		return string(j)
	}
	before := snapshot()
	bytes := map[string]int64{n1: 1000, n2: 2000}
	good := beacon{Session: tok, Seq: 1, WatchMs: 1000, StartupMs: 500, Bytes: bytes}
	forged, _ := playsession.Mint([]byte("not the origin's secret, 32 byte"), playsession.KindVideo, v.ID, t0)
	garbled := tok[:len(tok)-3] + "abc"
	expired := b.session(t, playsession.KindVideo, v.ID, t0.Add(-playsession.StartWindow))
	for name, c := range map[string]struct {
		body   string
		status int
		code   string
	}{
		"unknown session": {mustJSON(beacon{Session: forged, Seq: 1, WatchMs: 1000, Bytes: bytes}), http.StatusUnauthorized, codeUnauthorized},
		"garbled session": {mustJSON(beacon{Session: garbled, Seq: 1, WatchMs: 1000, Bytes: bytes}), http.StatusUnauthorized, codeUnauthorized},
		"no session":      {mustJSON(beacon{Seq: 1, WatchMs: 1000, Bytes: bytes}), http.StatusBadRequest, codeInvalidRequest},
		"expired":         {mustJSON(beacon{Session: expired, Seq: 1, WatchMs: 1000, Bytes: bytes}), http.StatusForbidden, codeForbidden},
		"oversized":       {strings.Replace(mustJSON(good), `"session"`, `"pad":"`+strings.Repeat("x", maxBeaconBody)+`","session"`, 1), http.StatusRequestEntityTooLarge, codePayloadTooLarge},
		"unknown field":   {strings.Replace(mustJSON(good), `"session"`, `"node_bytes":5,"session"`, 1), http.StatusBadRequest, codeInvalidRequest},
		"bad source":      {mustJSON(beacon{Session: tok, Seq: 1, Bytes: map[string]int64{"cdn": 5}}), http.StatusBadRequest, codeInvalidRequest},
		"negative":        {mustJSON(beacon{Session: tok, Seq: 1, WatchMs: -5}), http.StatusBadRequest, codeInvalidRequest},
		"seq 0":           {mustJSON(beacon{Session: tok, Seq: 0, WatchMs: 5}), http.StatusBadRequest, codeInvalidRequest},
		"bad viewer":      {mustJSON(beacon{Session: tok, Seq: 1, Viewer: "short"}), http.StatusBadRequest, codeInvalidRequest},
		"not JSON":        {"seq=1", http.StatusBadRequest, codeInvalidRequest},
	} {
		if r := b.post(t, c.body, uaDesktop, ""); r.status != c.status {
			t.Errorf("%s: status %d, want %d: %s", name, r.status, c.status, r.body)
		} else {
			checkErrorBody(t, r.header, r.body, c.code)
		}
	}
	if snapshot() != before {
		t.Fatal("refused beacons changed the figures")
	}
	// Another item's session, naming the node offered for this one:
	// accepted (it is a session of that item) but credits no node.
	b.accepted(t, beacon{Session: otherTok, Seq: 1, WatchMs: 1000, Bytes: map[string]int64{n1: 5000}}, true)
	if got := b.viewerBytes(t, t0); got[n1] != 0 || got[n2] != 0 {
		t.Fatalf("forged beacons credited %v", got)
	}
	// A form post's type is refused too.
	req := httptest.NewRequest("POST", "/v1/beacons", strings.NewReader(mustJSON(good)))
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	rec := httptest.NewRecorder()
	b.h.ServeHTTP(rec, req)
	if rec.Code != http.StatusBadRequest {
		t.Fatalf("form post: %d", rec.Code)
	}
	other0 := b.analyticsOf(t, "/v1/analytics/videos/"+other.ID, "")
	if other0.Totals.Views != 1 {
		t.Fatalf("the other item's session was not counted for it: %+v", other0.Totals)
	}
	before = snapshot()

	// The genuine beacon counts, for n1 only: n2 was not offered.
	b.accepted(t, good, true)
	if got := b.viewerBytes(t, t0); got[n1] != 1000 || got[n2] != 0 {
		t.Fatalf("viewer bytes %v", got)
	}
	afterGood := snapshot()
	if afterGood == before {
		t.Fatal("the genuine beacon changed nothing")
	}
	// Replays (same seq, lower seq) are ignored: 202, not accepted.
	b.clock = b.clock.Add(10 * time.Second)
	good.WatchMs, good.Bytes = 5000, map[string]int64{n1: 9000}
	b.accepted(t, good, false)
	good.Seq = 0
	if r := b.send(t, good, uaDesktop, ""); r.status != http.StatusBadRequest {
		t.Fatalf("seq 0: %d", r.status)
	}
	if snapshot() != afterGood {
		t.Fatal("a replayed beacon changed the figures")
	}
	// A later routing of n2 to the session makes its bytes count.
	b.a.registry.Invalidate()
	b.route(t, v.ID, tok)
	b.accepted(t, beacon{Session: tok, Seq: 2, WatchMs: 2000, Bytes: map[string]int64{n1: 1500, n2: 2500}}, true)
	if got := b.viewerBytes(t, t0); got[n1] != 1500 || got[n2] != 2500 {
		t.Fatalf("viewer bytes after the second route %v", got)
	}
	// A final beacon does not end the session (the viewer plays again:
	// a replay, back from the page cache), but its replay is ignored.
	final := beacon{Session: tok, Seq: 3, Final: true, WatchMs: 2500, Bytes: map[string]int64{n1: 1600, n2: 2500}}
	b.accepted(t, final, true)
	b.accepted(t, final, false)
	b.accepted(t, beacon{Session: tok, Seq: 4, WatchMs: 3000, Bytes: map[string]int64{n1: 1700, n2: 2500}}, true)
	if got := b.viewerBytes(t, t0); got[n1] != 1700 || got[n2] != 2500 {
		t.Fatalf("viewer bytes after the final beacon and a replay of the video %v", got)
	}
	// A session past its lifetime is refused even though it started.
	b.clock = t0.Add(playsession.MaxLifetime)
	b.send(t, beacon{Session: tok, Seq: 6, WatchMs: 9000}, uaDesktop, "").wantError(t, http.StatusForbidden, codeForbidden)

	m := b.a.beaconMetrics
	for r, want := range map[string]float64{beaconAccepted: 5, beaconIgnored: 2, beaconBadToken: 2, beaconExpired: 2,
		beaconTooLarge: 1, beaconInvalid: 9} {
		if got := promtest.ToFloat64(m.beacons.WithLabelValues(r)); got != want {
			t.Errorf("shoal_beacons_total{result=%q} = %v, want %v", r, got, want)
		}
	}
	if got := promtest.ToFloat64(m.viewerBytes.WithLabelValues("edge")); got != 1700+2500 {
		t.Errorf("shoal_viewer_bytes_total{source=edge} = %v", got)
	}
	if got := promtest.ToFloat64(m.sessions); got != 2 {
		t.Errorf("shoal_playback_sessions_total = %v", got)
	}
}

// TestBeaconCollusionBounds: what a node's operator, acting as viewers,
// can confirm for its own node is bounded. Sessions routed with a region
// the client picked (?region=) are offered nothing; however many sessions
// one network opens, it confirms a node at most maxNetworkBitrate bytes a
// second of the epoch; a page that only buffered is no view.
func TestBeaconCollusionBounds(t *testing.T) {
	t.Parallel()
	b := newBeaconEnvWith(t, Accounting{Epoch: 10 * time.Second, ViewerNetworkMbps: 40})
	v := b.createVideo(t, `{"title":"colluded"}`)
	n1 := b.join(t, 1)
	credited := func() int64 {
		t.Helper()
		figs, err := b.store.EpochFigures(t.Context(), t0)
		if err != nil {
			t.Fatal(err)
		}
		return figs[n1][routing.FigureViewerBytes]
	}

	// A region the client chose: n1 is routed to but not offered.
	picked := b.session(t, playsession.KindVideo, v.ID, t0)
	b.doJSON(t, "GET", "/v1/route/"+v.ID+"?region=eu&session="+url.QueryEscape(picked), "", "").wantStatus(t, http.StatusOK)
	b.clock = t0.Add(9 * time.Second)
	b.accepted(t, beacon{Session: picked, Seq: 1, WatchMs: 8000, StartupMs: 300, Bytes: map[string]int64{n1: 1_000_000}}, true)
	if got := credited(); got != 0 {
		t.Fatalf("a session routed with ?region= confirmed %d bytes", got)
	}

	// Three sessions from one network each claim 30 MB in a 10 s epoch:
	// the network confirms at most 50 MB (40 Mbit/s). A fourth session
	// started there confirms nothing more from another network.
	b.clock = t0
	var toks []string
	for range 4 {
		tok := b.session(t, playsession.KindVideo, v.ID, t0)
		if got := b.route(t, v.ID, tok); len(got) != 1 || got[0] != n1 {
			t.Fatalf("route offered %v", got)
		}
		toks = append(toks, tok)
	}
	b.clock = t0.Add(9 * time.Second)
	b.accepted(t, beacon{Session: toks[3], Seq: 1, WatchMs: 1000}, true)
	for _, tok := range toks[:3] {
		b.accepted(t, beacon{Session: tok, Seq: 1, WatchMs: 8000, StartupMs: 300, Bytes: map[string]int64{n1: 30_000_000}}, true)
	}
	const netCap = 10 * 40 * 125_000
	if got := credited(); got != netCap {
		t.Fatalf("one network confirmed %d bytes in a 10 s epoch, want the cap %d", got, netCap)
	}
	b.remote = 1000 // 198.51.4.x: another /24
	b.accepted(t, beacon{Session: toks[3], Seq: 2, WatchMs: 8000, Bytes: map[string]int64{n1: 30_000_000}}, true)
	if got := credited(); got != netCap {
		t.Fatalf("a session that moved networks confirmed %d more bytes", got-netCap)
	}
	if got := promtest.ToFloat64(b.a.beaconMetrics.capped); got != 4*30_000_000-netCap {
		t.Errorf("shoal_viewer_bytes_capped_total = %v, want %d", got, 4*30_000_000-netCap)
	}

	// A page that only buffered is no view; once it plays, it is one.
	views := func() int64 { return b.analyticsOf(t, "/v1/analytics/videos/"+v.ID, "").Totals.Views }
	before := views()
	idle := b.session(t, playsession.KindVideo, v.ID, t0)
	b.accepted(t, beacon{Session: idle, Seq: 1, Bytes: map[string]int64{"origin": 900_000}}, true)
	if got := views(); got != before {
		t.Fatalf("a session that never played counted as a view (%d -> %d)", before, got)
	}
	b.accepted(t, beacon{Session: idle, Seq: 2, WatchMs: 1000, Bytes: map[string]int64{"origin": 1_000_000}}, true)
	if got := views(); got != before+1 {
		t.Fatalf("a session that played: %d views, want %d", got, before+1)
	}
}

func mustJSON(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// TestBeaconClamping: deltas are bounded by the wall time since the page
// load (time), a rate (counts) and a bitrate (bytes); counters that go
// down add nothing and do not let a later beacon add them twice.
func TestBeaconClamping(t *testing.T) {
	t.Parallel()
	b := newBeaconEnv(t)
	v := b.createVideo(t, `{"title":"clamped"}`)
	n1 := b.join(t, 1)
	tok := b.session(t, playsession.KindVideo, v.ID, t0)
	b.route(t, v.ID, tok)
	b.clock = t0.Add(10 * time.Second)
	// 10 s after the page load: at most 11 s of watch and rebuffer time,
	// 10*20+100 events, and (10+10) s at 25 MB/s of bytes, shared in
	// proportion.
	b.accepted(t, beacon{Session: tok, Seq: 1, WatchMs: 3_600_000, RebufferMs: 50_000, Rebuffers: 10_000, Switches: 5,
		Errors: 1 << 40, Verified: 20, Bytes: map[string]int64{n1: 1_500_000_000, "origin": 500_000_000}}, true)
	a := b.analyticsOf(t, "/v1/analytics/videos/"+v.ID, "")
	tot := a.Totals
	if tot.WatchSeconds != 11 || tot.RebufferSeconds != 11 || tot.Rebuffers != 300 || tot.Errors != 300 ||
		tot.Switches != 5 || tot.Verified != 20 {
		t.Fatalf("clamped totals %+v", tot)
	}
	if got := b.viewerBytes(t, t0)[n1]; got != 375_000_000 {
		t.Fatalf("n1 credited %d bytes, want 3/4 of 500 MB", got)
	}
	// The counters go down (a player bug, or a forger): nothing added;
	// back up to the first beacon's values: still nothing.
	b.clock = t0.Add(20 * time.Second)
	b.accepted(t, beacon{Session: tok, Seq: 2, WatchMs: 1000, Switches: 1, Bytes: map[string]int64{n1: 10}}, true)
	b.accepted(t, beacon{Session: tok, Seq: 3, WatchMs: 11_000, Switches: 5, Bytes: map[string]int64{n1: 1_500_000_000}}, true)
	if got := b.analyticsOf(t, "/v1/analytics/videos/"+v.ID, "").Totals; got.WatchSeconds != 11 || got.Switches != 5 {
		t.Fatalf("totals after counters went down %+v", got)
	}
	if got := b.viewerBytes(t, t0)[n1]; got != 375_000_000 {
		t.Fatalf("n1 credited %d after a repeated figure", got)
	}
	// Later, honest growth counts in full.
	b.clock = t0.Add(60 * time.Second)
	b.accepted(t, beacon{Session: tok, Seq: 4, WatchMs: 40_000, Switches: 6, Bytes: map[string]int64{n1: 1_510_000_000}}, true)
	if got := b.analyticsOf(t, "/v1/analytics/videos/"+v.ID, "").Totals; got.WatchSeconds != 40 || got.Switches != 6 {
		t.Fatalf("totals after honest growth %+v", got)
	}
	if got := b.viewerBytes(t, t0)[n1]; got != 385_000_000 {
		t.Fatalf("n1 credited %d after honest growth", got)
	}
}

func near(p *float64, want float64) bool { return p != nil && math.Abs(*p-want) < 1e-9 }

// TestAnalyticsFromBeacons: the analytics API's figures from a known
// sequence of beacons, exactly.
func TestAnalyticsFromBeacons(t *testing.T) {
	t.Parallel()
	b := newBeaconEnv(t)
	v := b.createVideo(t, `{"title":"analysed"}`)
	ls := b.createLiveStream(t, `{"name":"show"}`)
	n1 := b.join(t, 1)
	s1 := b.session(t, playsession.KindVideo, v.ID, t0)
	s2 := b.session(t, playsession.KindVideo, v.ID, t0)
	s3 := b.session(t, playsession.KindVideo, v.ID, t0)
	s4 := b.session(t, playsession.KindLive, ls.ID, t0)
	for _, s := range []string{s1, s3} {
		b.route(t, v.ID, s)
	}
	const viewer = "viewer_aaaaaaaaaaaa"
	b.clock = t0.Add(5 * time.Minute)
	// s1: desktop in eu, from n1, starts in 600 ms; its last beacon comes
	// in the next hour.
	b.send(t, beacon{Session: s1, Seq: 1, Viewer: viewer, WatchMs: 30_000, StartupMs: 600, Verified: 10,
		Bytes: map[string]int64{n1: 500_000, "origin": 1000}}, uaDesktop, "eu").wantStatus(t, http.StatusAccepted)
	// s2: the same viewer on an iPhone in us, from the origin, rebuffers
	// (ratio 3/33, in (0.05, 0.1]) on its second beacon.
	b.send(t, beacon{Session: s2, Seq: 1, Viewer: viewer, WatchMs: 20_000, StartupMs: 1200,
		Bytes: map[string]int64{"origin": 300_000}}, uaIPhone, "us").wantStatus(t, http.StatusAccepted)
	b.send(t, beacon{Session: s2, Seq: 2, Viewer: viewer, WatchMs: 30_000, StartupMs: 1200, Rebuffers: 2, RebufferMs: 3000,
		Bytes: map[string]int64{"origin": 400_000}}, uaIPhone, "us").wantStatus(t, http.StatusAccepted)
	// s3: an anonymous Android tablet with no region, from n1.
	b.send(t, beacon{Session: s3, Seq: 1, WatchMs: 10_000, StartupMs: 5000, Errors: 1, Switches: 3, Failed: 1,
		Bytes: map[string]int64{n1: 200_000}}, uaTablet, "").wantStatus(t, http.StatusAccepted)
	// s4: the live stream, 5 s.
	b.send(t, beacon{Session: s4, Seq: 1, WatchMs: 5000, StartupMs: 900, Bytes: map[string]int64{"p2p": 100}}, uaDesktop, "eu").wantStatus(t, http.StatusAccepted)
	// s3's next beacon, 15 s into the next epoch, brings 300 000 bytes
	// fetched over the last 45 s (its previous beacon is older): 30 s
	// of them in the first epoch, which is not sealed yet.
	b.clock = t0.Add(time.Hour + 15*time.Second)
	b.send(t, beacon{Session: s3, Seq: 2, WatchMs: 10_000, StartupMs: 5000, Errors: 1, Switches: 3, Failed: 1,
		Bytes: map[string]int64{n1: 500_000}}, uaTablet, "").wantStatus(t, http.StatusAccepted)
	b.clock = t0.Add(70 * time.Minute)
	b.send(t, beacon{Session: s1, Seq: 2, Final: true, Viewer: viewer, WatchMs: 60_000, StartupMs: 600, Verified: 20,
		Bytes: map[string]int64{n1: 1_000_000, "origin": 1000}}, uaDesktop, "eu").wantStatus(t, http.StatusAccepted)

	a := b.analyticsOf(t, "/v1/analytics/videos/"+v.ID, "")
	tot := a.Totals
	if a.ID != v.ID || a.Kind != "video" || a.Bucket != "hour" || !a.From.Equal(t0) || !a.To.Equal(t0.Add(2*time.Hour)) {
		t.Fatalf("answer %+v", a)
	}
	if tot.Views != 3 || tot.UniqueViewers != 2 || tot.WatchSeconds != 100 || tot.Rebuffers != 2 || tot.RebufferSeconds != 3 ||
		tot.Errors != 1 || tot.Switches != 3 || tot.Verified != 20 || tot.Failed != 1 {
		t.Fatalf("totals %+v", tot)
	}
	// Startup 600, 1200, 5000 ms in buckets [500,750), [1000,1500),
	// [4000,6000): p50 at rank 1.5 is 1000+500*0.5, p95 at rank 2.85 is
	// 4000+2000*0.85. Rebuffer ratios 0, 0, 0.0909: p50 0, p95
	// 0.05+0.05*0.85.
	if !near(tot.StartupMs.P50, 1250) || !near(tot.StartupMs.P95, 5700) || !near(tot.RebufferRatio.P50, 0) ||
		!near(tot.RebufferRatio.P95, 0.0925) {
		t.Fatalf("percentiles %+v %+v", tot.StartupMs, tot.RebufferRatio)
	}
	if len(a.Series) != 2 || !a.Series[0].Start.Equal(t0) || !a.Series[1].Start.Equal(t0.Add(time.Hour)) ||
		a.Series[0].Views != 3 || a.Series[0].WatchSeconds != 70 || a.Series[0].UniqueViewers != 2 ||
		a.Series[1].Views != 0 || a.Series[1].WatchSeconds != 30 || a.Series[1].UniqueViewers != 0 || a.Series[1].Verified != 10 {
		t.Fatalf("series %+v", a.Series)
	}
	want := map[string]string{
		"country": "eu:1:60 us:1:30 unknown:1:10",
		"device":  "desktop:1:60 mobile:1:30 tablet:1:10",
		"os":      "windows:1:60 ios:1:30 android:1:10",
		"browser": "chrome:2:70 safari:1:30",
	}
	for dim, w := range want {
		var got []string
		for _, r := range a.Breakdown[dim] {
			got = append(got, fmt.Sprintf("%s:%d:%g", r.Value, r.Views, r.WatchSeconds))
		}
		if strings.Join(got, " ") != w {
			t.Errorf("breakdown %s: %v, want %s", dim, got, w)
		}
	}
	// Per day: one bucket holding everything.
	d := b.analyticsOf(t, "/v1/analytics/videos/"+v.ID, "from="+t0.Format(time.RFC3339)+"&to="+t0.Add(2*time.Hour).Format(time.RFC3339)+"&bucket=day")
	if len(d.Series) != 1 || !d.Series[0].Start.Equal(time.Date(2030, 12, 5, 0, 0, 0, 0, time.UTC)) || d.Series[0].Views != 3 ||
		d.Series[0].WatchSeconds != 100 || d.Series[0].UniqueViewers != 2 {
		t.Fatalf("daily series %+v", d.Series)
	}
	// The node served s1 and s3.
	nd := b.analyticsOf(t, "/v1/analytics/nodes/"+n1, "")
	if nd.Kind != "node" || nd.Totals.Views != 2 || nd.Totals.WatchSeconds != 70 || !near(nd.Totals.StartupMs.P50, 750) {
		t.Fatalf("node QoE %+v", nd.Totals)
	}
	// The live stream, and everything with the items by views.
	l := b.analyticsOf(t, "/v1/analytics/live-streams/"+ls.ID, "")
	if l.Kind != "live" || l.Totals.Views != 1 || l.Totals.WatchSeconds != 5 || l.Totals.UniqueViewers != 1 {
		t.Fatalf("live %+v", l.Totals)
	}
	all := b.analyticsOf(t, "/v1/analytics", "")
	if all.Kind != "all" || all.Totals.Views != 4 || all.Totals.UniqueViewers != 3 || all.Totals.WatchSeconds != 105 || all.Items == nil {
		t.Fatalf("all %+v", all)
	}
	if items := *all.Items; len(items) != 2 || items[0] != (analyticsItemJSON{ID: v.ID, Kind: "video", Views: 3, WatchSeconds: 100}) ||
		items[1] != (analyticsItemJSON{ID: ls.ID, Kind: "live", Views: 1, WatchSeconds: 5}) {
		t.Fatalf("items %+v", items)
	}
	// Outside the range: nothing; the epoch figures hold n1's bytes.
	empty := b.analyticsOf(t, "/v1/analytics/videos/"+v.ID, "from="+t0.Add(-5*time.Hour).Format(time.RFC3339)+"&to="+t0.Format(time.RFC3339))
	if empty.Totals.Views != 0 || empty.Totals.StartupMs.P50 != nil || len(empty.Series) != 5 {
		t.Fatalf("before any beacon %+v", empty)
	}
	// s3's second beacon is shared between the epochs by time, as
	// heartbeats' claims are; s1's, after a long gap, counts its last 45 s,
	// all in the second epoch.
	if got := b.viewerBytes(t, t0)[n1]; got != 500_000+200_000+200_000 {
		t.Fatalf("n1 epoch %s viewer bytes %d", routing.EpochID(t0), got)
	}
	if got := b.viewerBytes(t, t0.Add(time.Hour))[n1]; got != 100_000+500_000 {
		t.Fatalf("n1 next epoch viewer bytes %d", got)
	}
	m := b.a.beaconMetrics
	if promtest.ToFloat64(m.watch) != 105 || promtest.ToFloat64(m.rebuffer) != 3 || promtest.ToFloat64(m.sessions) != 4 ||
		promtest.ToFloat64(m.viewerBytes.WithLabelValues("origin")) != 401_000 || promtest.ToFloat64(m.viewerBytes.WithLabelValues("p2p")) != 100 {
		t.Fatal("metrics disagree with the beacons")
	}
}

func TestAnalyticsQueries(t *testing.T) {
	t.Parallel()
	b := newBeaconEnv(t)
	v := b.createVideo(t, `{"title":"q"}`)
	for _, q := range []string{"from=yesterday", "to=now", "bucket=week", "from=2026-12-05T10:00:00Z&to=2026-12-05T09:00:00Z",
		"from=2026-01-01T00:00:00Z&to=2026-12-05T09:00:00Z"} {
		b.doJSON(t, "GET", "/v1/analytics/videos/"+v.ID+"?"+q, testAdminKey, "").wantError(t, http.StatusBadRequest, codeInvalidRequest)
	}
	b.doJSON(t, "GET", "/v1/analytics/videos/nosuchvideo", testAdminKey, "").wantError(t, http.StatusNotFound, codeNotFound)
	b.doJSON(t, "GET", "/v1/analytics/live-streams/"+v.ID, testAdminKey, "").wantError(t, http.StatusNotFound, codeNotFound)
	b.doJSON(t, "GET", "/v1/analytics/nodes/NOPE", testAdminKey, "").wantError(t, http.StatusNotFound, codeNotFound)
	b.doJSON(t, "GET", "/v1/analytics", "", "").wantError(t, http.StatusUnauthorized, codeUnauthorized)
	// The default: the last 24 hours, by hour.
	a := decode[analyticsJSON](t, b.doJSON(t, "GET", "/v1/analytics", testAdminKey, "").wantStatus(t, http.StatusOK))
	if !a.To.Equal(t0) || !a.From.Equal(t0.Add(-24*time.Hour)) || len(a.Series) != 24 || a.Items == nil || len(*a.Items) != 0 ||
		len(a.Breakdown) != 4 {
		t.Fatalf("default range %+v", a)
	}
}

// TestSessionTokenIssued: NewSession mints tokens the beacon endpoint
// takes.
func TestSessionTokenIssued(t *testing.T) {
	t.Parallel()
	b := newBeaconEnv(t)
	v := b.createVideo(t, `{"title":"issued"}`)
	tok, err := b.a.NewSession(t.Context(), playsession.KindVideo, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	b.clock = time.Now()
	b.accepted(t, beacon{Session: tok, Seq: 1, WatchMs: 10}, true)
}

// TestBeaconRateLimit: a network gets a burst of beacons, then 4 a second.
func TestBeaconRateLimit(t *testing.T) {
	t.Parallel()
	b := newBeaconEnv(t)
	send := func(remote string) int {
		req := httptest.NewRequest("POST", "/v1/beacons", strings.NewReader(`{"seq":1}`))
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		b.h.ServeHTTP(rec, req)
		return rec.Code
	}
	for i := range beaconBurst {
		// Other addresses of the same /24 share the budget.
		if code := send(fmt.Sprintf("203.0.113.%d:4000", i%200)); code != http.StatusBadRequest {
			t.Fatalf("beacon %d: %d", i, code)
		}
	}
	if code := send("203.0.113.7:4000"); code != http.StatusTooManyRequests {
		t.Fatalf("past the burst: %d", code)
	}
	if code := send("203.0.114.7:4000"); code != http.StatusBadRequest {
		t.Fatalf("another network: %d", code)
	}
	b.clock = b.clock.Add(time.Second)
	for range int(beaconRate) {
		if code := send("203.0.113.9:4000"); code != http.StatusBadRequest {
			t.Fatalf("after a second: %d", code)
		}
	}
	if code := send("203.0.113.9:4000"); code != http.StatusTooManyRequests {
		t.Fatalf("past the rate: %d", code)
	}
	if got := promtest.ToFloat64(b.a.beaconMetrics.beacons.WithLabelValues(beaconLimited)); got != 2 {
		t.Fatalf("rate_limited %v", got)
	}
}

// FuzzBeacon sends arbitrary bodies to POST /v1/beacons (public): the
// answer is a 202 or a JSON 400, 401, 403, 413 or 429, never a server
// error, and a node never offered to the session is never credited.
func FuzzBeacon(f *testing.F) {
	e := newEnv(f, Config{})
	secret, err := e.store.SessionSecret(f.Context())
	if err != nil {
		f.Fatal(err)
	}
	tok, _ := playsession.Mint(secret, playsession.KindVideo, "abc", time.Now())
	const stranger = "aaaaaaaaaaaaaaaaaaaa"
	for _, seed := range []string{
		`{"session":"` + tok + `","seq":1,"watch_ms":1000,"startup_ms":700,"bytes":{"origin":100,"` + stranger + `":5}}`,
		`{"session":"` + tok + `","seq":2,"final":true,"viewer":"abcdefghijklmnopq","rebuffers":1,"rebuffer_ms":99}`,
		`{"session":"` + tok + `","seq":1e3}`,
		`{"session":"` + tok + `","seq":3,"bytes":{"p2p":1125899906842624}}`,
		`{"session":"s1.vabc.AAAAAAAAAAAAAAAAAAAAAA.1.AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA","seq":1}`,
		`{}`, `[`, `null`, ``,
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, body []byte) {
		e.a.beaconLimits.mu.Lock()
		e.a.beaconLimits.buckets = nil // the rate limit is tested apart
		e.a.beaconLimits.mu.Unlock()
		req := httptest.NewRequest("POST", "/v1/beacons", strings.NewReader(string(body)))
		req.Header.Set("Content-Type", "text/plain")
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		switch rec.Code {
		case http.StatusAccepted:
			var out beaconJSON
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("202 with %s", rec.Body.Bytes())
			}
		case http.StatusBadRequest, http.StatusUnauthorized, http.StatusForbidden, http.StatusRequestEntityTooLarge, http.StatusTooManyRequests:
			var eb errorBody
			if err := json.Unmarshal(rec.Body.Bytes(), &eb); err != nil || eb.Error.Code == "" {
				t.Fatalf("%d without a JSON error: %s", rec.Code, rec.Body.Bytes())
			}
		default:
			t.Fatalf("status %d: %s", rec.Code, rec.Body.Bytes())
		}
		figs, err := e.store.EpochFigures(t.Context(), routing.EpochStart(time.Now(), DefaultEpoch))
		if err != nil {
			t.Fatal(err)
		}
		if len(figs) != 0 {
			t.Fatalf("a node was credited: %v", figs)
		}
	})
}

// TestAnalyticsRangeWithinRetention: no analytics range is longer than
// accounting.retention (figures are not kept longer), whatever the
// bucket; without "from" the range is the last 24 hours, or the retention
// when it is shorter.
func TestAnalyticsRangeWithinRetention(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{Accounting: Accounting{Retention: 48 * time.Hour}})
	e.a.now = func() time.Time { return t0 }
	q := func(from time.Time, bucket string) string {
		return "/v1/analytics?from=" + from.Format(time.RFC3339) + "&to=" + t0.Format(time.RFC3339) + "&bucket=" + bucket
	}
	// A range reaching past the retention starts at it (nothing older
	// is kept), so the dashboard's 30 days work under a shorter one.
	for _, bucket := range []string{"hour", "day"} {
		for _, back := range []time.Duration{48 * time.Hour, 30 * 24 * time.Hour} {
			a := decode[analyticsJSON](t, e.doJSON(t, "GET", q(t0.Add(-back), bucket), testAdminKey, "").wantStatus(t, http.StatusOK))
			if !a.From.Equal(t0.Add(-48 * time.Hour)) {
				t.Errorf("bucket=%s, %s back: from %s, want the retention's start %s", bucket, back, a.From, t0.Add(-48*time.Hour))
			}
		}
	}
	// The bucket's own bound still holds under a longer retention.
	e2 := newEnvOn(t, Config{Accounting: Accounting{Retention: 90 * 24 * time.Hour}}, e.redis)
	e2.a.now = func() time.Time { return t0 }
	d := e2.doJSON(t, "GET", q(t0.Add(-32*24*time.Hour), "hour"), testAdminKey, "").wantError(t, http.StatusBadRequest, "invalid_request")
	if want := "the range is too long: at most 31 days with bucket=hour"; d.Message != want {
		t.Errorf("32 days of hours: %q, want %q", d.Message, want)
	}
	e2.doJSON(t, "GET", q(t0.Add(-60*24*time.Hour), "day"), testAdminKey, "").wantStatus(t, http.StatusOK)
	// Default range under a short retention.
	e3 := newEnvOn(t, Config{Accounting: Accounting{Retention: 2 * time.Hour}}, e.redis)
	e3.a.now = func() time.Time { return t0 }
	a := decode[analyticsJSON](t, e3.doJSON(t, "GET", "/v1/analytics", testAdminKey, "").wantStatus(t, http.StatusOK))
	if !a.From.Equal(t0.Add(-2*time.Hour)) || !a.To.Equal(t0) {
		t.Errorf("default range %s..%s, want the 2h retention up to %s", a.From, a.To, t0)
	}
}

// Times far out of range are refused: a "to" past 2262 overflowed the hour
// arithmetic and one request of a read-only key walked five million hours
// back and asked Redis for each. (Found by a review helper.)
func TestAnalyticsRefusesTimesOutOfRange(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	e.a.now = func() time.Time { return t0 }
	for _, q := range []string{"to=2300-01-01T00:00:00Z", "from=1900-01-01T00:00:00Z&to=1900-01-02T00:00:00Z", "to=" + t0.Add(2*366*24*time.Hour).Format(time.RFC3339)} {
		d := e.doJSON(t, "GET", "/v1/analytics?"+q, testAdminKey, "").wantError(t, http.StatusBadRequest, "invalid_request")
		if !strings.Contains(d.Message, "between 1970 and a year from now") {
			t.Errorf("%s: %q", q, d.Message)
		}
	}
	e.doJSON(t, "GET", "/v1/analytics?to="+t0.Add(time.Hour).Format(time.RFC3339), testAdminKey, "").wantStatus(t, http.StatusOK)
}

// TestBeaconLimiterEvictsLeastRecent: with as many networks tracked as it
// may, a new network is not refused: it takes the place of the one seen
// least recently, whose budget starts over; the others keep theirs.
func TestBeaconLimiterEvictsLeastRecent(t *testing.T) {
	t.Parallel()
	l := &beaconLimiter{max: 3}
	for range beaconBurst {
		if !l.allow("a", t0) {
			t.Fatal("a refused within its burst")
		}
	}
	if l.allow("a", t0) {
		t.Fatal("a allowed past its burst")
	}
	for _, n := range []string{"b", "c"} {
		if !l.allow(n, t0) {
			t.Fatalf("%s refused", n)
		}
	}
	if l.allow("a", t0) { // a is seen again: c, a... b is the least recent
		t.Fatal("a allowed past its burst")
	}
	// Full, within a second: a new network still gets its burst.
	for i := range beaconBurst {
		if !l.allow("d", t0) {
			t.Fatalf("new network d refused at beacon %d with the table full", i)
		}
	}
	if len(l.buckets) != 3 || l.order.Len() != 3 {
		t.Fatalf("%d networks tracked (%d in order), want 3", len(l.buckets), l.order.Len())
	}
	if _, ok := l.buckets["b"]; ok {
		t.Fatal("b, the least recently seen, is still tracked")
	}
	// a kept its empty bucket; d evicts nothing more by being seen again.
	if l.allow("a", t0) || l.allow("d", t0) {
		t.Fatal("a or d allowed past its burst")
	}
	// b comes back: it evicts c (the least recent now) and starts afresh.
	if !l.allow("b", t0) {
		t.Fatal("b refused")
	}
	if _, ok := l.buckets["c"]; ok {
		t.Fatal("c is still tracked")
	}
	if l.allow("a", t0) {
		t.Fatal("a's budget was reset")
	}
}
