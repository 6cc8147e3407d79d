package app

import (
	"bytes"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"fmt"
	"math"
	"net/http"
	"strconv"
	"testing"
	"time"

	playerapi "github.com/shoal-video/shoal/player-api"
)

// Operator accounting end to end: an origin auditing its edges every
// second, with 10-second epochs, and two real edges, one of which lies in
// its heartbeats (it claims 3 times the bytes it served). Nobody views:
// what the edges served is what this test fetched through them, plus the
// origin's audits.

// fetchBytes GETs every object of a video from base (an edge) and returns
// the body bytes received.
func fetchBytes(t *testing.T, base, id string) int64 {
	t.Helper()
	var n int64
	walkHLS(t, base, id, func(_ string, body []byte) { n += int64(len(body)) })
	return n
}

// contentKey is the origin's content key, as GET /v1/keys publishes it.
func (n *node) contentKey() ed25519.PublicKey {
	n.t.Helper()
	keys := n.contentKeys()
	if len(keys) == 0 {
		n.t.Fatal("GET /v1/keys: no content key")
	}
	return keys[0]
}

// signedGet GETs path with key and checks its signature with pub.
func (n *node) signedGet(path, key string, pub ed25519.PublicKey) []byte {
	n.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, n.http+path, nil)
	req.Header.Set("Authorization", "Bearer "+key)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		n.t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	_, _ = b.ReadFrom(resp.Body)
	if resp.StatusCode != http.StatusOK {
		n.t.Fatalf("GET %s: %d %s", path, resp.StatusCode, b.Bytes())
	}
	if err := playerapi.VerifyReport(pub, b.Bytes(), resp.Header.Get(playerapi.ReportSignatureHeader)); err != nil {
		n.t.Fatalf("GET %s: %v", path, err)
	}
	return b.Bytes()
}

// usageRow is a row of GET /v1/nodes/{id}/usage.
type usageRow struct {
	Epoch string `json:"epoch"`
	Final bool   `json:"final"`
	playerapi.EpochRow
}

// usageTotals sums a node's rows over every epoch it has figures in.
type usageTotals struct {
	claimed, viewer, audit, credited, passed, failed int64
	rows                                             []usageRow
}

func (n *node) usage(id, key string, pub ed25519.PublicKey) usageTotals {
	n.t.Helper()
	var u struct {
		NodeID string     `json:"node_id"`
		Epochs []usageRow `json:"epochs"`
	}
	if err := json.Unmarshal(n.signedGet("/v1/nodes/"+id+"/usage?limit=200", key, pub), &u); err != nil || u.NodeID != id {
		n.t.Fatalf("usage of %s: %+v %v", id, u, err)
	}
	var s usageTotals
	for _, r := range u.Epochs {
		s.claimed += r.ClaimedBytes
		s.viewer += r.ViewerBytes
		s.audit += r.AuditBytes
		s.credited += r.CreditedBytes
		s.passed += r.AuditsPassed
		s.failed += r.AuditsFailed
	}
	s.rows = u.Epochs
	return s
}

// within tells whether got is within frac of want.
func within(got, want int64, frac float64) bool {
	return math.Abs(float64(got-want)) <= frac*float64(want)
}

// TestOperatorAccounting: a cheating edge (a real `shoal edge` whose
// heartbeats claim 3x what it served) is credited what the audits
// confirmed, never its claims; an honest edge's claims match what it
// served within 5%. The reports verify with the key of GET /v1/keys, CSV
// and JSON agree, and a sealed epoch is served byte-identical.
func TestOperatorAccounting(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_ROUTE_AUDIT_INTERVAL=1s", "SHOAL_ACCOUNTING_EPOCH=10s", "SHOAL_ACCOUNTING_RETENTION=24h", "SHOAL_ACCOUNTING_REWARD_POOL=1000")
	pub := n.contentKey()
	v := readyVideo(t, n, map[string]string{"title": "accounted"})
	token := n.nodeToken()
	// Two regions: the edges are not siblings (no edge fetches from the
	// other), so what each served is what was fetched from it.
	honest := startEdge(t, n, token, "eu")
	liar := startEdge(t, n, token, "us", claimFactorEnv+"=3")
	n.waitFor("both edges in /v1/nodes", 20*time.Second, func() bool { return len(n.nodes()) == 2 })
	ids := map[string]string{}
	for _, ni := range n.nodes() {
		ids[ni.PublicURL] = ni.ID
	}
	hid, lid := ids[honest.url], ids[liar.url]
	if hid == "" || lid == "" {
		t.Fatalf("edges %v", ids)
	}
	// What viewers would fetch, counted here.
	served := map[string]int64{}
	for range 30 {
		served[hid] += fetchBytes(t, honest.url, v.ID)
		served[lid] += fetchBytes(t, liar.url, v.ID)
	}
	// The audits go on; wait for 20 of each edge, and for the heartbeats
	// that carry this test's fetches.
	n.waitFor("audits and heartbeats accounted", 90*time.Second, func() bool {
		h, l := n.usage(hid, testAdminKey, pub), n.usage(lid, testAdminKey, pub)
		return h.passed >= 20 && l.passed >= 20 && h.claimed >= served[hid] && l.claimed >= 3*served[lid]
	})
	// Each edge's operator reads its figures with its node token.
	h, l := n.usage(hid, token, pub), n.usage(lid, token, pub)
	t.Logf("honest edge: served %d (fetched) + audits %d (%d passed, %d failed); claimed %d, credited %d",
		served[hid], h.audit, h.passed, h.failed, h.claimed, h.credited)
	t.Logf("cheating edge: served %d (fetched) + audits %d (%d passed, %d failed); claimed %d, credited %d",
		served[lid], l.audit, l.passed, l.failed, l.claimed, l.credited)
	if !within(h.claimed, served[hid]+h.audit, 0.05) {
		t.Errorf("the honest edge claimed %d, served %d: not within 5%%", h.claimed, served[hid]+h.audit)
	}
	if !within(l.claimed, 3*(served[lid]+l.audit), 0.05) {
		t.Errorf("the cheating edge claimed %d, 3x what it served is %d", l.claimed, 3*(served[lid]+l.audit))
	}
	// Nobody viewed: the audits are all that is confirmed, and all that is
	// credited, in every epoch.
	for _, u := range []usageTotals{h, l} {
		for _, r := range u.rows {
			if r.ViewerBytes != 0 || r.CreditedBytes != min(r.ClaimedBytes, r.ViewerBytes+r.AuditBytes) {
				t.Errorf("epoch %s, node %s: credited %d, claimed %d, confirmed %d+%d", r.Epoch, r.NodeID, r.CreditedBytes, r.ClaimedBytes, r.ViewerBytes, r.AuditBytes)
			}
		}
	}
	if h.failed != 0 || l.failed != 0 {
		t.Errorf("failed audits: honest %d, cheating %d (both serve the published bytes)", h.failed, l.failed)
	}
	// Credited is what each epoch's audits confirmed, up to its claims
	// (checked per epoch above): the latest audits' bytes may not be in
	// a heartbeat yet, so less than all the audits, never more.
	if l.credited > l.audit || l.credited < l.audit/2 {
		t.Errorf("the cheating edge was credited %d; the audits confirmed %d", l.credited, l.audit)
	}
	if l.credited*2 > l.claimed/3 {
		t.Errorf("the cheating edge was credited %d of the %d it claimed: its claims counted", l.credited, l.claimed)
	}

	// A sealed epoch with both edges: the same bytes at every GET, its CSV
	// the same rows, and a tampered copy does not verify.
	var sealed string
	n.waitFor("a sealed epoch with both edges", 30*time.Second, func() bool {
		var list struct {
			Data []struct {
				Epoch string `json:"epoch"`
				Final bool   `json:"final"`
				Nodes int    `json:"nodes"`
			} `json:"data"`
		}
		if err := json.Unmarshal(n.signedGet("/v1/operators/epochs", testAdminKey, pub), &list); err != nil {
			t.Fatal(err)
		}
		for _, e := range list.Data {
			if e.Final && e.Nodes == 2 {
				sealed = e.Epoch
				return true
			}
		}
		return false
	})
	first := n.signedGet("/v1/operators/epochs/"+sealed, testAdminKey, pub)
	second := n.signedGet("/v1/operators/epochs/"+sealed, testAdminKey, pub)
	if !bytes.Equal(first, second) {
		t.Fatalf("sealed epoch %s changed:\n%s\n%s", sealed, first, second)
	}
	tampered := bytes.Replace(first, []byte(`"audits_failed":0`), []byte(`"audits_failed":1`), 1)
	if bytes.Equal(tampered, first) {
		t.Fatalf("nothing to tamper with in %s", first)
	}
	req, _ := http.NewRequest(http.MethodGet, n.http+"/v1/operators/epochs/"+sealed, nil)
	req.Header.Set("Authorization", "Bearer "+testAdminKey)
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if err := playerapi.VerifyReport(pub, tampered, resp.Header.Get(playerapi.ReportSignatureHeader)); err == nil {
		t.Fatal("a tampered report verified")
	}
	var rep playerapi.EpochReport
	if err := json.Unmarshal(first, &rep); err != nil || !rep.Final || len(rep.Nodes) != 2 || rep.RewardPool != 1000 {
		t.Fatalf("report %s: %v", first, err)
	}
	var points, credited int64
	for _, r := range rep.Nodes {
		points += r.RewardPoints
		credited += r.CreditedBytes
	}
	if credited > 0 && points != 1000 {
		t.Errorf("the reward pool shared out %d points of 1000", points)
	}
	recs, err := csv.NewReader(bytes.NewReader(n.signedGet("/v1/operators/epochs/"+sealed+"?format=csv", testAdminKey, pub))).ReadAll()
	if err != nil || len(recs) != 3 {
		t.Fatalf("CSV: %v %v", recs, err)
	}
	for i, r := range rep.Nodes {
		row := map[string]string{}
		for j, col := range recs[0] {
			row[col] = recs[i+1][j]
		}
		for col, want := range map[string]string{
			"node_id": r.NodeID, "region": r.Region, "state": r.State, "claimed_bytes": fmt.Sprint(r.ClaimedBytes),
			"viewer_bytes": fmt.Sprint(r.ViewerBytes), "audit_bytes": fmt.Sprint(r.AuditBytes), "credited_bytes": fmt.Sprint(r.CreditedBytes),
			"audits_passed": fmt.Sprint(r.AuditsPassed), "audits_failed": fmt.Sprint(r.AuditsFailed), "reward_points": fmt.Sprint(r.RewardPoints),
			"verification_failures": fmt.Sprint(r.VerificationFailures),
			// Every row names its epoch: a signed CSV cannot pass for another
			// epoch's, nor an in-progress one for the sealed one.
			"epoch": rep.Epoch, "start": rep.Start.Format(time.RFC3339), "end": rep.End.Format(time.RFC3339),
			"final": strconv.FormatBool(rep.Final),
		} {
			if row[col] != want {
				t.Errorf("CSV %s of %s: %q, JSON %q", col, r.NodeID, row[col], want)
			}
		}
		for col, want := range map[string]float64{"audit_pass_rate": r.AuditPassRate, "uptime_seconds": r.UptimeSeconds, "quarantine_seconds": r.QuarantineSeconds} {
			if got, err := strconv.ParseFloat(row[col], 64); err != nil || got != want {
				t.Errorf("CSV %s of %s: %q, JSON %v", col, r.NodeID, row[col], want)
			}
		}
		if r.UptimeSeconds <= 0 || r.UptimeSeconds > 10 {
			t.Errorf("%s was up %gs in a 10 s epoch", r.NodeID, r.UptimeSeconds)
		}
	}
}
