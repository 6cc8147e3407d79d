package playerapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// nodeReq sends a node-protocol request with body signed by signer. A join
// is bound to token, as nodeproto.Client binds it, unless already bound.
func (e *env) nodeReq(t *testing.T, path, token string, body any, signer ed25519.PrivateKey) response {
	t.Helper()
	if j, ok := body.(nodeproto.JoinRequest); ok && j.TokenSHA256 == "" {
		j.TokenSHA256 = nodeproto.TokenSHA256(token)
		body = j
	}
	b, _ := json.Marshal(body)
	req := httptest.NewRequest("POST", path, bytes.NewReader(b))
	req.Header.Set("Authorization", "Bearer "+token)
	req.Header.Set(nodeproto.SignatureHeader, nodeproto.Sign(signer, b))
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
}

func newKey(t *testing.T) ed25519.PrivateKey {
	_, k, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return k
}

func joinBody(k ed25519.PrivateKey, region string, at time.Time) nodeproto.JoinRequest {
	return nodeproto.JoinRequest{Role: "edge", Region: region, PublicURL: "http://edge.test:8081",
		PublicKey: base64.StdEncoding.EncodeToString(k.Public().(ed25519.PublicKey)), Time: at}
}

func TestNodeJoinHeartbeatAndIdentity(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	tok := decode[nodeTokenJSON](t, e.doJSON(t, "POST", "/v1/node-tokens", testAdminKey, `{"name":"eu"}`).wantStatus(t, http.StatusCreated))
	if !strings.HasPrefix(tok.Token, "nt_") {
		t.Fatalf("token %+v", tok)
	}
	a, b := newKey(t), newKey(t)
	now := time.Now()
	// A join signed by another key than the one it names is refused.
	e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(a, "eu", now), b).wantError(t, http.StatusForbidden, "forbidden")
	// So is a stale one, a wrong token, and a bad region.
	e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(a, "eu", now.Add(-5*time.Minute)), a).wantError(t, http.StatusForbidden, "forbidden")
	e.nodeReq(t, "/v1/nodes/join", "nt_wrongwrongwrongwrongwrongwrongwron", joinBody(a, "eu", now), a).wantError(t, http.StatusUnauthorized, codeUnauthorized)
	e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(a, "eu west!", now), a).wantError(t, http.StatusBadRequest, codeInvalidRequest)
	// A join made (and signed) for one token, replayed with another, is
	// refused: it cannot move a node to the replayer's token.
	replayed := joinBody(a, "eu", now)
	replayed.TokenSHA256 = nodeproto.TokenSHA256(testAdminKey)
	e.nodeReq(t, "/v1/nodes/join", tok.Token, replayed, a).wantError(t, http.StatusForbidden, "forbidden")

	ra := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(a, "eu", now), a).wantStatus(t, http.StatusCreated))
	if ra.ID != nodeproto.NodeID(a.Public().(ed25519.PublicKey)) || len(ra.Siblings) != 0 {
		t.Fatalf("join answer %+v", ra)
	}
	rb := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(b, "eu", now), b).wantStatus(t, http.StatusCreated))
	if len(rb.Siblings) != 1 || rb.Siblings[0].ID != ra.ID {
		t.Fatalf("second edge's siblings %+v", rb.Siblings)
	}
	// b cannot heartbeat for a, even with a's token.
	hb := nodeproto.Heartbeat{Time: now, Connections: 7, Hits: 3, Misses: 1, StreamBytes: map[string]int64{"abc": 100, "../x": 1}}
	e.nodeReq(t, "/v1/nodes/"+ra.ID+"/heartbeat", tok.Token, hb, b).wantError(t, http.StatusForbidden, "forbidden")
	e.nodeReq(t, "/v1/nodes/"+ra.ID+"/heartbeat", tok.Token, hb, a).wantStatus(t, http.StatusOK)
	e.nodeReq(t, "/v1/nodes/nosuchnode/heartbeat", tok.Token, hb, a).wantError(t, http.StatusNotFound, codeNotFound)

	list := decode[nodeListJSON](t, e.doJSON(t, "GET", "/v1/nodes", testAdminKey, "").wantStatus(t, http.StatusOK))
	var got nodeJSON
	for _, n := range list.Data {
		if n.ID == ra.ID {
			got = n
		}
	}
	if got.Connections != 7 || got.HitRatio != 0.75 || got.StreamBytes["abc"] != 100 || len(got.StreamBytes) != 1 || got.Region != "eu" {
		t.Fatalf("listed node %+v", got)
	}
	e.doJSON(t, "GET", "/v1/nodes", "", "").wantError(t, http.StatusUnauthorized, codeUnauthorized)

	// Revoking the token drops its node at the next heartbeat.
	e.doJSON(t, "DELETE", "/v1/node-tokens/"+tok.ID, testAdminKey, "").wantStatus(t, http.StatusNoContent)
	e.nodeReq(t, "/v1/nodes/"+ra.ID+"/heartbeat", tok.Token, hb, a).wantError(t, http.StatusUnauthorized, codeUnauthorized)
	e.doJSON(t, "DELETE", "/v1/node-tokens/"+tok.ID, testAdminKey, "").wantError(t, http.StatusNotFound, codeNotFound)
}

func TestRouteAndPlay(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	v := e.createVideo(t, `{"title":"routed"}`)
	// No edge: the origin serves.
	r := decode[routeJSON](t, e.doJSON(t, "GET", "/v1/route/"+v.ID, "", "").wantStatus(t, http.StatusOK))
	if r.URL != testPublicURL+"/hls/"+v.ID+"/master.m3u8" || r.NodeID != "" || r.Reason == "" {
		t.Fatalf("route without edges: %+v", r)
	}
	k := newKey(t)
	e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k, "eu", time.Now()), k).wantStatus(t, http.StatusCreated)
	res := e.doJSON(t, "GET", "/play/"+v.ID+"?region=eu&token=abc", "", "").wantStatus(t, http.StatusFound)
	if loc := res.header.Get("Location"); loc != "http://edge.test:8081/hls/"+v.ID+"/master.m3u8?token=abc" {
		t.Fatalf("/play Location %q", loc)
	}
	e.doJSON(t, "GET", "/play/nosuchvideo", "", "").wantError(t, http.StatusNotFound, codeNotFound)
	e.doJSON(t, "GET", "/v1/route/NOT-AN-ID", "", "").wantError(t, http.StatusNotFound, codeNotFound)
}

func TestRouteCandidatesAndLimits(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{MaxNodesPerToken: 2})
	v := e.createVideo(t, `{"title":"routed"}`)
	tok := decode[nodeTokenJSON](t, e.doJSON(t, "POST", "/v1/node-tokens", testAdminKey, `{"name":"eu"}`).wantStatus(t, http.StatusCreated))
	var ids []string
	for i := range 3 {
		k := newKey(t)
		body := joinBody(k, "eu", time.Now())
		body.PublicURL = fmt.Sprintf("http://edge%d.test:8081", i)
		res := e.nodeReq(t, "/v1/nodes/join", tok.Token, body, k)
		if i == 2 {
			// One token cannot hold a third identity.
			res.wantError(t, http.StatusForbidden, "too_many_identities")
			continue
		}
		ids = append(ids, decode[nodeproto.JoinResponse](t, res.wantStatus(t, http.StatusCreated)).ID)
		// Absurd figures are refused.
		for _, hb := range []nodeproto.Heartbeat{{Connections: -1}, {EgressBytesPerSec: -5}, {Viewers: 1 << 62},
			{StreamBytes: map[string]int64{"abc": -1}}} {
			hb.Time = time.Now()
			e.nodeReq(t, "/v1/nodes/"+ids[i]+"/heartbeat", tok.Token, hb, k).wantError(t, http.StatusBadRequest, codeInvalidRequest)
		}
		e.nodeReq(t, "/v1/nodes/"+ids[i]+"/heartbeat", tok.Token, nodeproto.Heartbeat{Time: time.Now(), Viewers: 3, MaxViewers: 100}, k).wantStatus(t, http.StatusOK)
	}
	r := decode[routeJSON](t, e.doJSON(t, "GET", "/v1/route/"+v.ID+"?token=t1", "", "").wantStatus(t, http.StatusOK))
	if len(r.Candidates) != 3 || r.Candidates[0].URL != r.URL || r.NodeID != r.Candidates[0].NodeID ||
		r.Candidates[2].NodeID != "" || r.Candidates[2].URL != testPublicURL+"/hls/"+v.ID+"/master.m3u8?token=t1" {
		t.Fatalf("route %+v", r)
	}
	// A quarantined edge is not offered; releasing it brings it back.
	if err := e.store.QuarantineNode(t.Context(), r.NodeID, "test"); err != nil {
		t.Fatal(err)
	}
	e.doJSON(t, "POST", "/v1/nodes/"+r.NodeID+"/release", testAdminKey, "").wantStatus(t, http.StatusNoContent)
	e.doJSON(t, "POST", "/v1/nodes/"+r.NodeID+"/release", testAdminKey, "").wantError(t, http.StatusNotFound, codeNotFound)
	if err := e.store.QuarantineNode(t.Context(), r.NodeID, "served bad bytes"); err != nil {
		t.Fatal(err)
	}
	e.doJSON(t, "POST", "/v1/nodes/"+r.NodeID+"/release", "", "").wantError(t, http.StatusUnauthorized, codeUnauthorized)
	e.api().registry.Invalidate()
	r2 := decode[routeJSON](t, e.doJSON(t, "GET", "/v1/route/"+v.ID, "", "").wantStatus(t, http.StatusOK))
	if len(r2.Candidates) != 2 || r2.NodeID == r.NodeID {
		t.Fatalf("route after quarantine %+v", r2)
	}
	list := decode[nodeListJSON](t, e.doJSON(t, "GET", "/v1/nodes", testAdminKey, "").wantStatus(t, http.StatusOK))
	states := map[string]string{}
	for _, n := range list.Data {
		states[n.ID] = n.State + ":" + n.QuarantineReason
	}
	if states[r.NodeID] != "quarantined:served bad bytes" || states[r2.NodeID] != "active:" {
		t.Fatalf("states %v", states)
	}
}

func TestDeliveryReports(t *testing.T) {
	t.Parallel()
	var audits []string
	at := time.Now()
	e := newEnv(t, Config{QuarantineReports: 2, ContentKeys: []ed25519.PublicKey{testPlaybackPub},
		Accounting: Accounting{Now: func() time.Time { return at }},
		Audit: func(_ context.Context, n routing.Node, path, kind string) Audit {
			audits = append(audits, path)
			return Audit{Confirmed: strings.Contains(path, "bad"), Refuted: strings.Contains(path, "good"), Finding: "audited " + path}
		}})
	k := newKey(t)
	id := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k, "eu", time.Now()), k).wantStatus(t, http.StatusCreated)).ID
	v := e.createVideo(t, `{"title":"reported"}`)
	// route asks where to play from remote's address: the origin then
	// counts that network's reports about the nodes it offered.
	route := func(remote string) {
		req := httptest.NewRequest("GET", "/v1/route/"+v.ID, nil)
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusOK {
			t.Fatalf("route: %d", rec.Code)
		}
		e.api().registry.Invalidate()
	}
	report := func(remote, body string) response {
		req := httptest.NewRequest("POST", "/v1/delivery-reports", strings.NewReader(body))
		req.RemoteAddr = remote
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		return response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}
	}
	seg := "http://edge.test:8081/hls/abc/720p/s-0-1.m4s"
	good := `{"node_id":"` + id + `","url":"` + seg + `","kind":"hash_mismatch","expected_sha256":"` + strings.Repeat("a", 64) + `","received_sha256":"` + strings.Repeat("b", 64) + `"}`
	for _, bad := range []string{
		`{"node_id":"` + id + `","url":"` + seg + `","kind":"mystery"}`,
		`{"node_id":"` + id + `","url":"http://edge.test:8081/etc/passwd","kind":"timeout"}`,
		`{"node_id":"` + id + `","url":"` + seg + `","kind":"hash_mismatch","expected_sha256":"xyz"}`,
		`{"node_id":"NOTANODE","url":"` + seg + `","kind":"timeout"}`,
		`{"node_id":"` + id + `","url":"` + seg + `","kind":"timeout","extra":1}`,
		`not json`,
	} {
		report("198.51.100.7:1000", bad).wantError(t, http.StatusBadRequest, codeInvalidRequest)
	}
	report("198.51.100.7:1000", `{"node_id":"`+id+`","url":"http://elsewhere.test/hls/abc/720p/s-0-1.m4s","kind":"timeout"}`).wantError(t, http.StatusBadRequest, codeInvalidRequest)
	report("198.51.100.7:1000", `{"node_id":"aaaaaaaaaaaaaaaaaaaa","url":"`+seg+`","kind":"timeout"}`).wantError(t, http.StatusNotFound, codeNotFound)
	report("198.51.100.7:1000", strings.Repeat(" ", 5000)+good).wantError(t, http.StatusRequestEntityTooLarge, codePayloadTooLarge)

	// Networks the origin never sent to this node do not count.
	for _, remote := range []string{"100.64.1.1:1", "100.64.2.1:1", "100.64.3.1:1"} {
		if res := decode[deliveryReportJSON](t, report(remote, good).wantStatus(t, http.StatusAccepted)); res.Quarantined {
			t.Fatalf("reports from networks never offered the node quarantined it: %+v", res)
		}
	}
	// Nor do reports the audit refuted.
	refuted := strings.Replace(good, "720p/s-0-1.m4s", "good/s-0-1.m4s", 1)
	for _, remote := range []string{"100.64.4.1:1", "100.64.5.1:1", "100.64.6.1:1"} {
		route(remote)
		if res := decode[deliveryReportJSON](t, report(remote, refuted).wantStatus(t, http.StatusAccepted)); res.Quarantined {
			t.Fatalf("refuted reports quarantined: %+v", res)
		}
	}
	// One offered network: counted, not quarantined.
	route("198.51.100.7:1000")
	route("198.51.100.9:1000")
	route("203.0.113.5:1000")
	res := decode[deliveryReportJSON](t, report("198.51.100.7:1000", good).wantStatus(t, http.StatusAccepted))
	if !res.Accepted || res.Confirmed || res.Quarantined {
		t.Fatalf("first report %+v", res)
	}
	// Another address of the same /24 counts once; another /24 makes two
	// networks: quarantined.
	res = decode[deliveryReportJSON](t, report("198.51.100.9:1000", good).wantStatus(t, http.StatusAccepted))
	if res.Quarantined {
		t.Fatalf("two reports from one /24 quarantined: %+v", res)
	}
	res = decode[deliveryReportJSON](t, report("203.0.113.5:1000", good).wantStatus(t, http.StatusAccepted))
	if !res.Quarantined || len(audits) != 2 {
		t.Fatalf("third report %+v, audits %v", res, audits)
	}
	n, err := e.store.GetNode(t.Context(), id)
	if err != nil || n.Quarantine == nil || !strings.Contains(n.Quarantine.Reason, "2 viewer networks") {
		t.Fatalf("node %+v %v", n, err)
	}
	// An audit that confirms quarantines at once.
	k2 := newKey(t)
	id2 := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k2, "eu", time.Now()), k2).wantStatus(t, http.StatusCreated)).ID
	res = decode[deliveryReportJSON](t, report("192.0.2.1:1", `{"node_id":"`+id2+`","url":"http://edge.test:8081/hls/abc/bad/s-0-1.m4s","kind":"hash_mismatch"}`).wantStatus(t, http.StatusAccepted))
	if !res.Confirmed || !res.Quarantined {
		t.Fatalf("confirmed report %+v", res)
	}
	// Timeouts are kept but never quarantine, and the rate is bounded.
	k3 := newKey(t)
	id3 := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k3, "eu", time.Now()), k3).wantStatus(t, http.StatusCreated)).ID
	limited := false
	for i := range 40 {
		r := report(fmt.Sprintf("192.0.2.%d:1", 50), `{"node_id":"`+id3+`","url":"`+seg+`","kind":"timeout"}`)
		if r.status == http.StatusTooManyRequests {
			limited = i >= 19
			break
		}
		if d := decode[deliveryReportJSON](t, r.wantStatus(t, http.StatusAccepted)); d.Quarantined {
			t.Fatal("timeouts quarantined a node")
		}
	}
	if !limited {
		t.Fatal("40 reports from one network were not rate-limited after the burst")
	}
	list := decode[nodeListJSON](t, e.doJSON(t, "GET", "/v1/nodes", testAdminKey, "").wantStatus(t, http.StatusOK))
	for _, n := range list.Data {
		if n.ID == id && (len(n.DeliveryReports) != 5 || n.DeliveryReports[0].Reporter != "203.0.113.0/24" || !n.DeliveryReports[0].Offered) {
			t.Fatalf("listed reports %+v", n.DeliveryReports)
		}
	}
	keys := decode[keysJSON](t, e.doJSON(t, "GET", "/v1/keys", "", "").wantStatus(t, http.StatusOK))
	if len(keys.ContentKeys) != 1 || keys.ContentKeys[0].ID != manifest.KeyID(testPlaybackPub) {
		t.Fatalf("keys %+v", keys)
	}
	// The epoch's verification failures: the three offered networks' and
	// the confirmed one; not the unoffered, refuted or timeout reports.
	f, err := e.store.EpochFigures(t.Context(), routing.EpochStart(at, DefaultEpoch))
	if err != nil {
		t.Fatal(err)
	}
	if f[id][routing.FigureVerifyFailures] != 3 || f[id2][routing.FigureVerifyFailures] != 1 || f[id3][routing.FigureVerifyFailures] != 0 {
		t.Fatalf("verification failures in the epoch: %v", f)
	}
}

// TestPlayShareOfALiar: five honest edges report the viewers they serve;
// a sixth reports none and claims room for millions. Its share of /play
// answers for a popular stream stays within the bounded-load bound.
func TestPlayShareOfALiar(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	v := e.createVideo(t, `{"title":"popular"}`)
	type edge struct {
		id   string
		key  ed25519.PrivateKey
		got  int64
		liar bool
	}
	var edges []*edge
	for i := range 6 {
		k := newKey(t)
		body := joinBody(k, "", time.Now())
		body.PublicURL = fmt.Sprintf("http://edge%d.test:8081", i)
		id := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, body, k).wantStatus(t, http.StatusCreated)).ID
		edges = append(edges, &edge{id: id, key: k, liar: i == 0})
	}
	byID := map[string]*edge{}
	for _, ed := range edges {
		byID[ed.id] = ed
	}
	noRedirect := func(path string) string {
		req := httptest.NewRequest("GET", path, nil)
		rec := httptest.NewRecorder()
		e.h.ServeHTTP(rec, req)
		if rec.Code != http.StatusFound {
			t.Fatalf("/play: %d", rec.Code)
		}
		return rec.Header().Get("Location")
	}
	// Each round of heartbeats stands for one every HeartbeatInterval.
	var clock atomic.Int64
	e.api().heartbeats.now = func() time.Time { return time.Unix(0, clock.Load()) }
	const plays = 600
	for i := range plays {
		loc := noRedirect("/play/" + v.ID)
		for _, ed := range edges {
			if strings.HasPrefix(loc, fmt.Sprintf("http://edge%d.test:8081/", slicesIndex(edges, ed))) {
				ed.got++
			}
		}
		if i%50 == 49 {
			// Heartbeats: honest edges report what they got, the liar nothing.
			for _, ed := range edges {
				hb := nodeproto.Heartbeat{Time: time.Now(), Viewers: ed.got}
				if ed.liar {
					hb.Viewers, hb.MaxViewers = 0, 10_000_000
				}
				e.nodeReq(t, "/v1/nodes/"+ed.id+"/heartbeat", testAdminKey, hb, ed.key).wantStatus(t, http.StatusOK)
			}
			e.api().registry.Invalidate()
			clock.Add(int64(nodeproto.HeartbeatInterval))
		}
	}
	bound := (1+routing.LoadSlack)*plays/6 + routing.MinBound
	for _, ed := range edges {
		if float64(ed.got) > bound {
			t.Errorf("edge (liar=%v) got %d of %d plays, more than the bound %.0f", ed.liar, ed.got, plays, bound)
		}
	}
	t.Logf("the liar got %d of %d plays (fair share %d, bound %.0f)", edges[0].got, plays, plays/6, bound)
}

func slicesIndex[T comparable](s []T, v T) int {
	for i, x := range s {
		if x == v {
			return i
		}
	}
	return -1
}

// Heartbeats are limited per node: a burst, then one a second, the excess
// answered 429 with Retry-After and counted; heartbeats not signed by the
// node's key do not use up its budget; bodies are bounded, with room for
// the most per-stream figures a heartbeat carries.
func TestHeartbeatLimits(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	e := newEnv(t, Config{Registerer: reg})
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC).UnixNano())
	e.a.heartbeats.now = func() time.Time { return time.Unix(0, clock.Load()) }
	advance := func(d time.Duration) { clock.Add(int64(d)) }
	limited := func(reason string) float64 {
		return promtest.ToFloat64(e.a.heartbeatsLimited.WithLabelValues(reason))
	}

	a, b := newKey(t), newKey(t)
	ra := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(a, "eu", time.Now()), a).wantStatus(t, http.StatusCreated))
	rb := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(b, "eu", time.Now()), b).wantStatus(t, http.StatusCreated))
	beat := func(id string, signer ed25519.PrivateKey) response {
		return e.nodeReq(t, "/v1/nodes/"+id+"/heartbeat", testAdminKey, nodeproto.Heartbeat{Time: time.Now(), Connections: 1}, signer)
	}

	// Forged heartbeats for a (signed by b) are refused before the limit:
	// they do not use up a's budget.
	for range 10 {
		beat(ra.ID, b).wantError(t, http.StatusForbidden, "forbidden")
	}
	for i := range heartbeatBurst {
		if r := beat(ra.ID, a); r.status != http.StatusOK {
			t.Fatalf("heartbeat %d of the burst: %d %s", i, r.status, r.body)
		}
	}
	r := beat(ra.ID, a)
	r.wantError(t, http.StatusTooManyRequests, "rate_limited")
	if got := r.header.Get("Retry-After"); got != "1" {
		t.Fatalf("Retry-After %q, want 1", got)
	}
	if limited("rate") != 1 {
		t.Fatalf("shoal_node_heartbeats_limited_total{reason=rate} = %v, want 1", limited("rate"))
	}
	// Another node is not affected.
	beat(rb.ID, b).wantStatus(t, http.StatusOK)
	// One a second after that.
	advance(500 * time.Millisecond)
	beat(ra.ID, a).wantError(t, http.StatusTooManyRequests, "rate_limited")
	advance(500 * time.Millisecond)
	beat(ra.ID, a).wantStatus(t, http.StatusOK)
	beat(ra.ID, a).wantError(t, http.StatusTooManyRequests, "rate_limited")
	// A node that kept to the pace has its burst again.
	advance(time.Minute)
	for range heartbeatBurst {
		beat(ra.ID, a).wantStatus(t, http.StatusOK)
	}
	if limited("rate") != 3 {
		t.Fatalf("shoal_node_heartbeats_limited_total{reason=rate} = %v, want 3", limited("rate"))
	}

	// The most per-stream figures, at their longest, fit; a bigger body
	// is refused.
	advance(time.Minute)
	const most = maxCount
	full := nodeproto.Heartbeat{Time: time.Now(), Connections: most, BytesServed: most, Hits: most, Misses: most,
		OriginFetches: most, CacheBytes: most, Viewers: most, MaxViewers: most, EgressBytesPerSec: maxEgress - 0.5,
		MaxEgressBytesPerSec: maxEgress - 0.5, InvalidationCursor: "1767225600000-99999",
		StreamBytes: map[string]int64{}}
	for len(full.StreamBytes) < maxStreamKeys {
		full.StreamBytes[ids.New()] = most
	}
	// And the most P2P stats, their ids and batch name at their longest.
	full.P2PStreamBytes, full.P2PBatch = map[string]nodeproto.P2PBytes{}, strings.Repeat("b", 64)
	for len(full.P2PStreamBytes) < nodeproto.MaxP2PStreams {
		full.P2PStreamBytes[(ids.New() + strings.Repeat("0", 64))[:64]] = nodeproto.P2PBytes{HTTP: most, P2P: most}
	}
	if b, _ := json.Marshal(full); len(b) > maxNodeBody*3/4 {
		t.Fatalf("the fullest heartbeat is %d bytes: keep a margin under the %d-byte limit", len(b), maxNodeBody)
	}
	e.nodeReq(t, "/v1/nodes/"+ra.ID+"/heartbeat", testAdminKey, full, a).wantStatus(t, http.StatusOK)
	big := []byte(`{"time":"` + time.Now().UTC().Format(time.RFC3339) + `","invalidation_cursor":"` + strings.Repeat("1", maxNodeBody) + `"}`)
	req := httptest.NewRequest("POST", "/v1/nodes/"+ra.ID+"/heartbeat", bytes.NewReader(big))
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	req.Header.Set(nodeproto.SignatureHeader, nodeproto.Sign(a, big))
	rec := httptest.NewRecorder()
	e.h.ServeHTTP(rec, req)
	response{status: rec.Code, header: rec.Header(), body: rec.Body.Bytes()}.wantError(t, http.StatusRequestEntityTooLarge, codePayloadTooLarge)
	if limited("size") != 1 {
		t.Fatalf("shoal_node_heartbeats_limited_total{reason=size} = %v, want 1", limited("size"))
	}
	if n, err := promtest.GatherAndCount(reg, "shoal_node_heartbeats_limited_total"); err != nil || n != 2 {
		t.Fatalf("registered series: %d, %v", n, err)
	}
}

// The answers to a join and to a heartbeat list the origins announced in
// the registry (edges learn them and fail over to them); none announced,
// the field is absent (the edge keeps what it knows).
func TestNodeAnswersListTheOrigins(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	k := newKey(t)
	now := time.Now()
	first := e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k, "eu", now), k).wantStatus(t, http.StatusCreated)
	if strings.Contains(string(first.body), `"origins"`) {
		t.Fatalf("no origin announced, the join answer lists some: %s", first.body)
	}
	ctx := context.Background()
	for _, u := range []string{"https://origin-b.example", "https://origin-a.example"} {
		if err := e.store.AnnounceOrigin(ctx, u, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	want := []string{"https://origin-a.example", "https://origin-b.example"}
	rj := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k, "eu", now), k).wantStatus(t, http.StatusCreated))
	if fmt.Sprint(rj.Origins) != fmt.Sprint(want) {
		t.Fatalf("join answer origins %q, want %q", rj.Origins, want)
	}
	hb := nodeproto.Heartbeat{Time: now}
	rh := decode[nodeproto.HeartbeatResponse](t, e.nodeReq(t, "/v1/nodes/"+rj.ID+"/heartbeat", testAdminKey, hb, k).wantStatus(t, http.StatusOK))
	if fmt.Sprint(rh.Origins) != fmt.Sprint(want) {
		t.Fatalf("heartbeat answer origins %q, want %q", rh.Origins, want)
	}
	// A withdrawn origin is no longer listed.
	if err := e.store.WithdrawOrigin(ctx, "https://origin-a.example"); err != nil {
		t.Fatal(err)
	}
	rh = decode[nodeproto.HeartbeatResponse](t, e.nodeReq(t, "/v1/nodes/"+rj.ID+"/heartbeat", testAdminKey, hb, k).wantStatus(t, http.StatusOK))
	if fmt.Sprint(rh.Origins) != "[https://origin-b.example]" {
		t.Fatalf("heartbeat answer origins after a withdrawal %q", rh.Origins)
	}
}

// TestNodeAnswersTellMissedInvalidations: a join carries the edge's kept
// cursor and is answered with what follows it; a cursor the feed no
// longer holds is answered invalidations_reset; a malformed one is
// refused.
func TestNodeAnswersTellMissedInvalidations(t *testing.T) {
	t.Parallel()
	e := newEnv(t, Config{})
	k := newKey(t)
	now := time.Now()
	ctx := context.Background()
	for range 3 {
		if err := e.store.DeleteVideo(ctx, ids.New()); err != nil && !errors.Is(err, routing.ErrNotFound) {
			t.Fatal(err)
		}
	}
	rj := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k, "eu", now), k).wantStatus(t, http.StatusCreated))
	if len(rj.Invalidations) != 3 || rj.InvalidationsReset || rj.InvalidationsMore || rj.InvalidationCursor == "" {
		t.Fatalf("join without a cursor: %+v", rj)
	}
	again := joinBody(k, "eu", now)
	again.InvalidationCursor = rj.InvalidationCursor
	r := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, again, k).wantStatus(t, http.StatusCreated))
	if len(r.Invalidations) != 0 || r.InvalidationsReset || r.InvalidationCursor != rj.InvalidationCursor {
		t.Fatalf("join with the last cursor: %+v", r)
	}
	again.InvalidationCursor = "1-0" // trimmed long ago
	r = decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, again, k).wantStatus(t, http.StatusCreated))
	if len(r.Invalidations) != 3 || !r.InvalidationsReset {
		t.Fatalf("join with a cursor the feed no longer holds: %+v", r)
	}
	hb := nodeproto.Heartbeat{Time: now, InvalidationCursor: "1-0"}
	rh := decode[nodeproto.HeartbeatResponse](t, e.nodeReq(t, "/v1/nodes/"+rj.ID+"/heartbeat", testAdminKey, hb, k).wantStatus(t, http.StatusOK))
	if !rh.InvalidationsReset || rh.InvalidationCursor != rj.InvalidationCursor {
		t.Fatalf("heartbeat with a cursor the feed no longer holds: %+v", rh)
	}
	again.InvalidationCursor = "nope"
	e.nodeReq(t, "/v1/nodes/join", testAdminKey, again, k).wantError(t, http.StatusBadRequest, codeInvalidRequest)
}
