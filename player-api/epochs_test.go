package playerapi

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/csv"
	"encoding/json"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

func TestRewardPoints(t *testing.T) {
	t.Parallel()
	row := func(id string, credited, passed, failed int64) EpochRow {
		return EpochRow{NodeID: id, CreditedBytes: credited, AuditsPassed: passed, AuditsFailed: failed}
	}
	for _, c := range []struct {
		name string
		rows []EpochRow
		pool int64
		want []int64
	}{
		// Equal weights: the pool's remainder goes by node id.
		{"largest remainder, ties by id", []EpochRow{row("c", 5, 0, 0), row("a", 5, 0, 0), row("b", 5, 0, 0)}, 1000, []int64{333, 334, 333}},
		// 1/6, 2/6, 3/6 of 10: 1.67, 3.33, 5: the largest remainder (.67) gets the point.
		{"largest remainder", []EpochRow{row("a", 1, 0, 0), row("b", 2, 0, 0), row("c", 3, 0, 0)}, 10, []int64{2, 3, 5}},
		// Same credited bytes; b passed half its audits: weights 100 and 50.
		{"weighted by pass rate", []EpochRow{row("a", 100, 4, 0), row("b", 100, 1, 1)}, 3, []int64{2, 1}},
		// A node that failed every audit earns nothing, whatever it was credited.
		{"failed every audit", []EpochRow{row("a", 100, 0, 3), row("b", 1, 1, 0)}, 1000, []int64{0, 1000}},
		{"zero pool", []EpochRow{row("a", 100, 0, 0)}, 0, []int64{0}},
		{"nobody credited", []EpochRow{row("a", 0, 5, 0), row("b", 0, 0, 0)}, 1000, []int64{0, 0}},
		{"no weight at all", []EpochRow{row("a", 7, 0, 1)}, 1000, []int64{0}},
		{"no rows", nil, 1000, nil},
		// Quarantined for a quarter of its uptime: weights 75 and 100.
		{"weighted by time not quarantined", []EpochRow{quarantined(row("a", 100, 0, 0), 4000, 1000), row("b", 100, 0, 0)}, 7, []int64{3, 4}},
		// Quarantined all epoch (not audited then): nothing, however much
		// viewers sent to it before confirmed.
		{"quarantined all epoch", []EpochRow{quarantined(row("a", 100, 0, 0), 4000, 4000), row("b", 1, 9, 1)}, 1000, []int64{0, 1000}},
		{"quarantined, no uptime counted", []EpochRow{quarantined(row("a", 100, 0, 0), 0, 1000), row("b", 1, 0, 0)}, 1000, []int64{0, 1000}},
		// Huge figures: 2^50 bytes against 1 byte (a share of 0.0009 point).
		{"exact with big figures", []EpochRow{row("a", 1<<50, 0, 0), row("b", 1, 0, 0)}, 1_000_000_000_000, []int64{1_000_000_000_000, 0}},
	} {
		rewardPoints(c.rows, c.pool)
		var sum int64
		for i, r := range c.rows {
			sum += r.RewardPoints
			if r.RewardPoints != c.want[i] {
				t.Errorf("%s: %s got %d points, want %d", c.name, r.NodeID, r.RewardPoints, c.want[i])
			}
		}
		var wantSum int64
		for _, w := range c.want {
			wantSum += w
		}
		if sum != wantSum {
			t.Errorf("%s: %d points given, want %d", c.name, sum, wantSum)
		}
	}
}

func quarantined(r EpochRow, uptimeMs, quarantineMs int64) EpochRow {
	r.uptimeMs, r.quarantineMs = uptimeMs, quarantineMs
	return r
}

// A node quarantined for the whole epoch (the shopper no longer audits it,
// so it has no audits in the epoch) does not share the reward pool as if it
// had passed every audit; before, it earned more per credited byte than an
// honest edge that passed 9 audits of 10.
func TestQuarantinedNodeEarnsNoReward(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	start := routing.EpochStart(time.Now(), time.Minute)
	clock := &testClock{t: start.Add(10 * time.Second)}
	e := newEnv(t, Config{Accounting: Accounting{Epoch: time.Minute, RewardPool: 1000, Key: key, Now: clock.Now}})
	cheatKey, honestKey := newKey(t), newKey(t)
	cheat := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(cheatKey, "eu", time.Now()), cheatKey).wantStatus(t, http.StatusCreated)).ID
	honest := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(honestKey, "eu", time.Now()), honestKey).wantStatus(t, http.StatusCreated)).ID
	ctx := t.Context()
	// Caught serving altered bytes before this epoch began.
	if err := e.store.QuarantineNode(ctx, cheat, "failed 2 of its last 2 audits"); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	for i, b := range []int64{0, 1_000_000} {
		clock.set(start.Add(time.Duration(10+2*i) * time.Second))
		sent = sent.Add(time.Millisecond)
		e.nodeReq(t, "/v1/nodes/"+cheat+"/heartbeat", testAdminKey, nodeproto.Heartbeat{Time: sent, BytesServed: b}, cheatKey).wantStatus(t, http.StatusOK)
		e.nodeReq(t, "/v1/nodes/"+honest+"/heartbeat", testAdminKey, nodeproto.Heartbeat{Time: sent, BytesServed: b}, honestKey).wantStatus(t, http.StatusOK)
	}
	// Viewers sent to the cheat before its quarantine go on playing from
	// it and confirm its bytes; the honest edge is confirmed as much, and
	// passed 9 audits of 10.
	if err := e.a.AddFigures(ctx, cheat, map[string]int64{routing.FigureViewerBytes: 1_000_000}); err != nil {
		t.Fatal(err)
	}
	if err := e.a.AddFigures(ctx, honest, map[string]int64{routing.FigureViewerBytes: 900_000, routing.FigureAuditBytes: 100_000,
		routing.FigureAuditsPassed: 9, routing.FigureAuditsFailed: 1}); err != nil {
		t.Fatal(err)
	}
	clock.set(start.Add(3 * time.Minute))
	rep, _, err := e.a.report(ctx, start)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rep.Nodes {
		if r.NodeID == cheat && (r.State != "quarantined" || r.QuarantineSeconds == 0 || r.RewardPoints != 0) {
			t.Errorf("a node quarantined all epoch: state %s, %v s quarantined, %d of %d reward points (audit pass rate %v)",
				r.State, r.QuarantineSeconds, r.RewardPoints, rep.RewardPool, r.AuditPassRate)
		}
		if r.NodeID == honest && r.RewardPoints != rep.RewardPool {
			t.Errorf("the honest edge got %d of %d points", r.RewardPoints, rep.RewardPool)
		}
	}
}

func TestEpochRows(t *testing.T) {
	t.Parallel()
	rows := epochRows(map[string]map[string]int64{
		"liar": {routing.FigureClaimedBytes: 3000, routing.FigureAuditBytes: 600, routing.FigureViewerBytes: 400, routing.FigureAuditsPassed: 3, routing.FigureAuditsFailed: 1},
		"honest": {routing.FigureClaimedBytes: 900, routing.FigureAuditBytes: 600, routing.FigureViewerBytes: 400, routing.FigureUptimeMs: 1500, routing.FigureQuarantineMs: 250,
			routing.FigureTranscodedPixels: 7_000_000, routing.FigureSegmentsVerified: 5},
		"silent": {routing.FigureViewerBytes: 400},
	})
	if len(rows) != 3 || rows[0].NodeID != "honest" || rows[1].NodeID != "liar" || rows[2].NodeID != "silent" {
		t.Fatalf("rows %+v", rows)
	}
	if rows[0].CreditedBytes != 900 || rows[0].AuditPassRate != 1 || rows[0].UptimeSeconds != 1.5 || rows[0].QuarantineSeconds != 0.25 ||
		rows[0].TranscodedPixels != 7_000_000 || rows[0].SegmentsVerified != 5 {
		t.Errorf("honest: %+v (credited at most its claim)", rows[0])
	}
	if rows[1].CreditedBytes != 1000 || rows[1].AuditPassRate != 0.75 {
		t.Errorf("liar: %+v (credited what was confirmed, not its claim)", rows[1])
	}
	if rows[2].CreditedBytes != 0 {
		t.Errorf("silent: %+v (nothing claimed, nothing credited)", rows[2])
	}
}

func TestVerifyReport(t *testing.T) {
	t.Parallel()
	k := newKey(t)
	pub := k.Public().(ed25519.PublicKey)
	a := &API{acct: Accounting{Key: k}.withDefaults()}
	body := []byte(`{"epoch":"20261205T070000Z"}`)
	s := a.sign(body)
	if !strings.HasPrefix(s.sig, "keyid="+manifest.KeyID(pub)+", sig=") {
		t.Fatalf("header %q", s.sig)
	}
	if err := VerifyReport(pub, body, s.sig); err != nil {
		t.Fatal(err)
	}
	other := newKey(t).Public().(ed25519.PublicKey)
	sig := strings.SplitN(s.sig, "sig=", 2)[1]
	// The same signature bytes with other unused trailing bits: one
	// signature has one encoding.
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_"
	last := strings.IndexByte(alphabet, sig[len(sig)-1])
	malleated := sig[:len(sig)-1] + string(alphabet[last^1])
	for name, c := range map[string]struct {
		pub    ed25519.PublicKey
		body   []byte
		header string
	}{
		"tampered body":   {pub, []byte(`{"epoch":"20261205T080000Z"}`), s.sig},
		"another key":     {other, body, s.sig},
		"key id swapped":  {other, body, "keyid=" + manifest.KeyID(other) + ", sig=" + sig},
		"no key id":       {pub, body, "sig=" + sig},
		"repeated":        {pub, body, s.sig + ", sig=" + sig},
		"not base64url":   {pub, body, "keyid=" + manifest.KeyID(pub) + ", sig=***"},
		"short signature": {pub, body, "keyid=" + manifest.KeyID(pub) + ", sig=AAAA"},
		"garbage":         {pub, body, "nonsense"},
		"other encoding":  {pub, body, "keyid=" + manifest.KeyID(pub) + ", sig=" + malleated},
		"empty":           {pub, body, ""},
		"bad key":         {pub[:5], body, s.sig},
	} {
		if err := VerifyReport(c.pub, c.body, c.header); err == nil {
			t.Errorf("%s: verified", name)
		}
	}
}

// testClock is a clock tests move.
type testClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *testClock) Now() time.Time {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.t
}

func (c *testClock) set(t time.Time) {
	c.mu.Lock()
	c.t = t
	c.mu.Unlock()
}

// signedGet GETs target with key and checks the answer's signature.
func (e *env) signedGet(t *testing.T, target, key string, pub ed25519.PublicKey) response {
	t.Helper()
	r := e.doJSON(t, "GET", target, key, "").wantStatus(t, http.StatusOK)
	if err := VerifyReport(pub, r.body, r.header.Get(ReportSignatureHeader)); err != nil {
		t.Fatalf("GET %s: %v", target, err)
	}
	return r
}

// csvRows parses CSV into maps by column name.
func csvRows(t *testing.T, b []byte) []map[string]string {
	t.Helper()
	recs, err := csv.NewReader(bytes.NewReader(b)).ReadAll()
	if err != nil || len(recs) == 0 {
		t.Fatalf("CSV %q: %v", b, err)
	}
	var out []map[string]string
	for _, rec := range recs[1:] {
		m := map[string]string{}
		for i, col := range recs[0] {
			m[col] = rec[i]
		}
		out = append(out, m)
	}
	return out
}

// sameRow checks that a CSV row says what a JSON row does.
func sameRow(t *testing.T, c map[string]string, r EpochRow) {
	t.Helper()
	var m map[string]any
	b, _ := json.Marshal(r)
	_ = json.Unmarshal(b, &m)
	for _, col := range rowColumns {
		want, _ := m[col]
		switch w := want.(type) {
		case float64:
			got, err := strconv.ParseFloat(c[col], 64)
			if err != nil || got != w {
				t.Errorf("%s: CSV %q, JSON %v", col, c[col], w)
			}
		case nil:
			if c[col] != "" {
				t.Errorf("%s: CSV %q, JSON absent", col, c[col])
			}
		default:
			if c[col] != w {
				t.Errorf("%s: CSV %q, JSON %v", col, c[col], w)
			}
		}
	}
}

// sameEpoch checks that a CSV row names the epoch its JSON does.
func sameEpoch(t *testing.T, c map[string]string, epoch string, start, end time.Time, final bool) {
	t.Helper()
	want := map[string]string{"epoch": epoch, "start": start.Format(time.RFC3339), "end": end.Format(time.RFC3339),
		"final": strconv.FormatBool(final)}
	for col, w := range want {
		if c[col] != w {
			t.Errorf("%s: CSV %q, JSON %q", col, c[col], w)
		}
	}
}

// TestEpochReports: heartbeats through the API become the claimed bytes
// and uptime of the current epoch; audits and viewers add the confirmed
// bytes; the report is signed, its CSV agrees with its JSON, and once the
// epoch is over it is sealed: byte-identical whatever arrives later.
func TestEpochReports(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	start := routing.EpochStart(time.Now(), time.Minute)
	clock := &testClock{t: start.Add(10 * time.Second)}
	e := newEnv(t, Config{Accounting: Accounting{Epoch: time.Minute, RewardPool: 1000, Key: key, Now: clock.Now}})
	tok := decode[nodeTokenJSON](t, e.doJSON(t, "POST", "/v1/node-tokens", testAdminKey, `{"name":"ops"}`).wantStatus(t, http.StatusCreated))
	otherTok := decode[nodeTokenJSON](t, e.doJSON(t, "POST", "/v1/node-tokens", testAdminKey, `{"name":"others"}`).wantStatus(t, http.StatusCreated))
	liarKey, honestKey := newKey(t), newKey(t)
	liar := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", tok.Token, joinBody(liarKey, "eu", time.Now()), liarKey).wantStatus(t, http.StatusCreated)).ID
	honest := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", otherTok.Token, joinBody(honestKey, "us", time.Now()), honestKey).wantStatus(t, http.StatusCreated)).ID
	sent := time.Now()
	beat := func(node string, token string, k ed25519.PrivateKey, bytes int64) {
		t.Helper()
		sent = sent.Add(time.Millisecond)
		e.nodeReq(t, "/v1/nodes/"+node+"/heartbeat", token, nodeproto.Heartbeat{Time: sent, BytesServed: bytes}, k).wantStatus(t, http.StatusOK)
	}
	// The liar says it served 3 MB, the honest edge 1 MB (with a
	// restart: 600 kB, then 400 kB from zero), 2 s apart.
	beat(liar, tok.Token, liarKey, 1_000_000)
	beat(honest, otherTok.Token, honestKey, 600_000)
	clock.set(start.Add(12 * time.Second))
	beat(liar, tok.Token, liarKey, 3_000_000)
	beat(honest, otherTok.Token, honestKey, 400_000)
	ctx := t.Context()
	for node, f := range map[string]map[string]int64{
		liar:   {routing.FigureAuditBytes: 900_000, routing.FigureAuditsPassed: 9, routing.FigureViewerBytes: 100_000},
		honest: {routing.FigureAuditBytes: 500_000, routing.FigureAuditsPassed: 4, routing.FigureAuditsFailed: 1, routing.FigureViewerBytes: 400_000},
	} {
		if err := e.a.AddFigures(ctx, node, f); err != nil {
			t.Fatal(err)
		}
	}
	id := routing.EpochID(start)
	r := e.signedGet(t, "/v1/operators/epochs/"+id, testAdminKey, pub)
	rep := decode[EpochReport](t, r)
	if rep.Final || rep.Epoch != id || !rep.Start.Equal(start) || !rep.End.Equal(start.Add(time.Minute)) || rep.RewardPool != 1000 ||
		rep.KeyID != manifest.KeyID(pub) || len(rep.Nodes) != 2 {
		t.Fatalf("report %s", r.body)
	}
	rows := map[string]EpochRow{}
	for _, row := range rep.Nodes {
		rows[row.NodeID] = row
	}
	l, h := rows[liar], rows[honest]
	if l.ClaimedBytes != 3_000_000 || l.CreditedBytes != 1_000_000 || l.UptimeSeconds != 2 || l.Region != "eu" || l.State != "active" || l.Role != "edge" {
		t.Errorf("liar %+v", l)
	}
	if h.ClaimedBytes != 1_000_000 || h.CreditedBytes != 900_000 || h.AuditPassRate != 0.8 || h.Region != "us" {
		t.Errorf("honest %+v", h)
	}
	// Weights 1 000 000 x 1 and 900 000 x 0.8 = 720 000.
	if l.RewardPoints != 581 || h.RewardPoints != 419 {
		t.Errorf("points: liar %d, honest %d", l.RewardPoints, h.RewardPoints)
	}
	// CSV: the same rows.
	rc := e.signedGet(t, "/v1/operators/epochs/"+id+"?format=csv", testAdminKey, pub)
	if ct := rc.header.Get("Content-Type"); !strings.HasPrefix(ct, "text/csv") {
		t.Fatalf("content type %q", ct)
	}
	crows := csvRows(t, rc.body)
	if len(crows) != 2 {
		t.Fatalf("CSV %s", rc.body)
	}
	for i, c := range crows {
		sameRow(t, c, rep.Nodes[i])
		sameEpoch(t, c, rep.Epoch, rep.Start, rep.End, rep.Final)
	}

	// The epoch ends; within the grace it is not final yet.
	clock.set(start.Add(time.Minute + 30*time.Second))
	if rep := decode[EpochReport](t, e.signedGet(t, "/v1/operators/epochs/"+id, testAdminKey, pub)); rep.Final {
		t.Fatal("final within the grace")
	}
	clock.set(start.Add(2*time.Minute + time.Second))
	sealed := e.signedGet(t, "/v1/operators/epochs/"+id, testAdminKey, pub)
	if rep := decode[EpochReport](t, sealed); !rep.Final || len(rep.Nodes) != 2 {
		t.Fatalf("sealed %s", sealed.body)
	}
	// Its CSV says, on every row, which epoch it is and that it is sealed.
	sealedRep := decode[EpochReport](t, sealed)
	sc := csvRows(t, e.signedGet(t, "/v1/operators/epochs/"+id+"?format=csv", testAdminKey, pub).body)
	if len(sc) != 2 {
		t.Fatalf("sealed CSV %v", sc)
	}
	for i, c := range sc {
		sameRow(t, c, sealedRep.Nodes[i])
		sameEpoch(t, c, id, start, start.Add(time.Minute), true)
	}
	// Figures arriving late change nothing: the sealed report is served
	// byte for byte, signature included.
	if err := e.store.AddEpochFigures(ctx, start, liar, map[string]int64{routing.FigureViewerBytes: 5_000_000}, time.Hour); err != nil {
		t.Fatal(err)
	}
	clock.set(start.Add(5 * time.Minute))
	again := e.signedGet(t, "/v1/operators/epochs/"+id, testAdminKey, pub)
	if !bytes.Equal(again.body, sealed.body) || again.header.Get(ReportSignatureHeader) != sealed.header.Get(ReportSignatureHeader) {
		t.Fatalf("a sealed report changed:\n%s\n%s", sealed.body, again.body)
	}
	if err := VerifyReport(pub, bytes.Replace(again.body, []byte(`"claimed_bytes":3000000`), []byte(`"claimed_bytes":3000001`), 1),
		again.header.Get(ReportSignatureHeader)); err == nil {
		t.Fatal("a tampered report verified")
	}

	// A later epoch: a heartbeat in it (its 7 s, the most one counts, all
	// in that epoch).
	clock.set(start.Add(5*time.Minute + 10*time.Second))
	beat(liar, tok.Token, liarKey, 3_500_000)
	list := decode[epochListJSON](t, e.signedGet(t, "/v1/operators/epochs", testAdminKey, pub)).Data
	if len(list) != 2 || list[0].Epoch != routing.EpochID(start.Add(5*time.Minute)) || list[0].Final || list[0].Nodes != 1 || list[0].CreditedBytes != 0 ||
		list[1].Epoch != id || !list[1].Final || list[1].Nodes != 2 || list[1].CreditedBytes != 1_900_000 {
		t.Fatalf("epochs %+v", list)
	}
	if got := decode[epochListJSON](t, e.signedGet(t, "/v1/operators/epochs?limit=1", testAdminKey, pub)).Data; len(got) != 1 {
		t.Fatalf("limit 1: %+v", got)
	}

	// The liar's operator reads its usage with its own node token; the
	// other operator's token may not.
	u := decode[nodeUsage](t, e.signedGet(t, "/v1/nodes/"+liar+"/usage", tok.Token, pub))
	if u.NodeID != liar || len(u.Epochs) != 2 || u.Epochs[1].Epoch != id || u.Epochs[1].ClaimedBytes != 3_000_000 || u.Epochs[1].CreditedBytes != 1_000_000 ||
		u.Epochs[1].RewardPoints != 581 || !u.Epochs[1].Final || u.Epochs[0].ClaimedBytes != 500_000 {
		t.Fatalf("usage %+v", u)
	}
	uc := csvRows(t, e.signedGet(t, "/v1/nodes/"+liar+"/usage?format=csv", tok.Token, pub).body)
	if len(uc) != 2 || uc[1]["epoch"] != id || uc[1]["final"] != "true" || uc[1]["start"] != start.Format(time.RFC3339) {
		t.Fatalf("usage CSV %v", uc)
	}
	for i, ue := range u.Epochs {
		sameRow(t, uc[i], ue.EpochRow)
		sameEpoch(t, uc[i], ue.Epoch, ue.Start, ue.End, ue.Final)
	}
	e.doJSON(t, "GET", "/v1/nodes/"+liar+"/usage", otherTok.Token, "").wantError(t, http.StatusForbidden, codeForbidden)
	e.doJSON(t, "GET", "/v1/nodes/"+liar+"/usage", "nt_wrongwrongwrongwrongwrongwrongwron", "").wantError(t, http.StatusUnauthorized, codeUnauthorized)
	e.doJSON(t, "GET", "/v1/nodes/"+liar+"/usage", "", "").wantError(t, http.StatusUnauthorized, codeUnauthorized)
	e.signedGet(t, "/v1/nodes/"+honest+"/usage", otherTok.Token, pub)
	e.signedGet(t, "/v1/nodes/"+honest+"/usage", e.newKey(t, `["read-only"]`).Key, pub)
	e.doJSON(t, "GET", "/v1/nodes/"+honest+"/usage", e.newKey(t, `["videos"]`).Key, "").wantError(t, http.StatusForbidden, codeForbidden)
	e.doJSON(t, "GET", "/v1/operators/epochs", e.newKey(t, `["streams"]`).Key, "").wantError(t, http.StatusForbidden, codeForbidden)
	e.doJSON(t, "GET", "/v1/nodes/NOTANODE/usage", testAdminKey, "").wantError(t, http.StatusNotFound, codeNotFound)

	// Bad requests.
	for target, status := range map[string]int{
		"/v1/operators/epochs/yesterday":                                        http.StatusBadRequest,
		"/v1/operators/epochs/" + routing.EpochID(start.Add(time.Second)):       http.StatusNotFound, // not an epoch start
		"/v1/operators/epochs/" + routing.EpochID(start.Add(time.Hour)):         http.StatusNotFound, // not started
		"/v1/operators/epochs/" + routing.EpochID(start.Add(-24*time.Hour*200)): http.StatusNotFound, // past the retention
		"/v1/operators/epochs/" + routing.EpochID(start.Add(2*time.Minute)):     http.StatusNotFound, // over, and empty
		"/v1/operators/epochs/" + id + "?format=xml":                            http.StatusBadRequest,
		"/v1/operators/epochs?limit=0":                                          http.StatusBadRequest,
		"/v1/operators/epochs?limit=abc":                                        http.StatusBadRequest,
	} {
		code := codeInvalidRequest
		if status == http.StatusNotFound {
			code = codeNotFound
		}
		e.doJSON(t, "GET", target, testAdminKey, "").wantError(t, status, code)
	}
	// Without a signing key there are no reports.
	bare := newEnv(t, Config{})
	bare.doJSON(t, "GET", "/v1/operators/epochs", testAdminKey, "").wantError(t, http.StatusServiceUnavailable, codeUnavailable)
}

// TestSealedOnceAcrossOrigins: two origins on one Redis seal an epoch at
// once with different clocks (different generated_at): both serve the one
// stored first.
func TestSealedOnceAcrossOrigins(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	start := routing.EpochStart(time.Now(), time.Minute).Add(-time.Hour)
	c1, c2 := &testClock{t: start.Add(3 * time.Minute)}, &testClock{t: start.Add(4 * time.Minute)}
	e1 := newEnv(t, Config{Accounting: Accounting{Epoch: time.Minute, RewardPool: 10, Key: key, Now: c1.Now}})
	e2 := newEnvOn(t, Config{Accounting: Accounting{Epoch: time.Minute, RewardPool: 10, Key: key, Now: c2.Now}}, e1.redis)
	if err := e1.store.AddEpochFigures(t.Context(), start, "nodea", map[string]int64{routing.FigureClaimedBytes: 5, routing.FigureAuditBytes: 9}, time.Hour); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	got := make([][]byte, 2)
	for i, e := range []*env{e1, e2} {
		wg.Add(1)
		go func() {
			defer wg.Done()
			got[i] = e.doJSON(t, "GET", "/v1/operators/epochs/"+routing.EpochID(start), testAdminKey, "").body
		}()
	}
	wg.Wait()
	if !bytes.Equal(got[0], got[1]) {
		t.Fatalf("two origins serve two reports:\n%s\n%s", got[0], got[1])
	}
	rep := decode[EpochReport](t, e2.signedGet(t, "/v1/operators/epochs/"+routing.EpochID(start), testAdminKey, pub))
	if !rep.Final || len(rep.Nodes) != 1 || rep.Nodes[0].CreditedBytes != 5 || rep.Nodes[0].RewardPoints != 10 {
		t.Fatalf("report %+v", rep)
	}
}

// TestOpenAPIEpochAnswers checks the accounting routes' answers against
// openapi.yaml.
func TestOpenAPIEpochAnswers(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	start := routing.EpochStart(time.Now(), time.Minute)
	clock := &testClock{t: start.Add(30 * time.Second)}
	e := newEnv(t, Config{Accounting: Accounting{Epoch: time.Minute, RewardPool: 100, Key: key, Now: clock.Now}})
	sc := &schemaChecker{doc: parseSpec(t, openAPISpec)}
	call := func(path, target, key string) response {
		t.Helper()
		r := e.doJSON(t, "GET", target, key, "")
		sc.check(t, path, "GET", r)
		return r
	}
	k := newKey(t)
	node := decode[nodeproto.JoinResponse](t, e.nodeReq(t, "/v1/nodes/join", testAdminKey, joinBody(k, "eu", time.Now()), k).wantStatus(t, http.StatusCreated)).ID
	e.nodeReq(t, "/v1/nodes/"+node+"/heartbeat", testAdminKey, nodeproto.Heartbeat{Time: time.Now(), BytesServed: 1000}, k).wantStatus(t, http.StatusOK)
	if err := e.a.AddFigures(t.Context(), node, map[string]int64{routing.FigureAuditBytes: 400, routing.FigureAuditsPassed: 1, routing.FigureAuditsFailed: 1,
		routing.FigureTranscodedPixels: 1 << 40, routing.FigureSegmentsVerified: 3}); err != nil {
		t.Fatal(err)
	}
	past := start.Add(-time.Hour)
	if err := e.store.AddEpochFigures(t.Context(), past, "aaaaaaaaaaaaaaaaaaaa", map[string]int64{routing.FigureClaimedBytes: 7}, time.Hour); err != nil {
		t.Fatal(err)
	}
	id := routing.EpochID(start)
	call("/v1/operators/epochs", "/v1/operators/epochs", testAdminKey).wantStatus(t, http.StatusOK)
	call("/v1/operators/epochs", "/v1/operators/epochs?limit=900", testAdminKey).wantStatus(t, http.StatusBadRequest)
	call("/v1/operators/epochs", "/v1/operators/epochs", "").wantStatus(t, http.StatusUnauthorized)
	call("/v1/operators/epochs", "/v1/operators/epochs", e.newKey(t, `["videos"]`).Key).wantStatus(t, http.StatusForbidden)
	for _, ep := range []string{id, routing.EpochID(past)} {
		call("/v1/operators/epochs/{epoch}", "/v1/operators/epochs/"+ep, testAdminKey).wantStatus(t, http.StatusOK)
		call("/v1/operators/epochs/{epoch}", "/v1/operators/epochs/"+ep+"?format=csv", testAdminKey).wantStatus(t, http.StatusOK)
	}
	call("/v1/operators/epochs/{epoch}", "/v1/operators/epochs/x", testAdminKey).wantStatus(t, http.StatusBadRequest)
	call("/v1/operators/epochs/{epoch}", "/v1/operators/epochs/"+routing.EpochID(start.Add(time.Hour)), testAdminKey).wantStatus(t, http.StatusNotFound)
	call("/v1/nodes/{id}/usage", "/v1/nodes/"+node+"/usage", testAdminKey).wantStatus(t, http.StatusOK)
	call("/v1/nodes/{id}/usage", "/v1/nodes/"+node+"/usage?format=csv", testAdminKey).wantStatus(t, http.StatusOK)
	call("/v1/nodes/{id}/usage", "/v1/nodes/"+node+"/usage?format=pdf", testAdminKey).wantStatus(t, http.StatusBadRequest)
	call("/v1/nodes/{id}/usage", "/v1/nodes/x/usage", testAdminKey).wantStatus(t, http.StatusNotFound)
	tok := decode[nodeTokenJSON](t, e.doJSON(t, "POST", "/v1/node-tokens", testAdminKey, `{"name":"x"}`).wantStatus(t, http.StatusCreated))
	call("/v1/nodes/{id}/usage", "/v1/nodes/"+node+"/usage", tok.Token).wantStatus(t, http.StatusForbidden)
	call("/v1/nodes/{id}/usage", "/v1/nodes/"+node+"/usage", "").wantStatus(t, http.StatusUnauthorized)
	bare := newEnv(t, Config{})
	sc.check(t, "/v1/operators/epochs", "GET", bare.doJSON(t, "GET", "/v1/operators/epochs", testAdminKey, "").wantStatus(t, http.StatusServiceUnavailable))
}

// TestSealEpochs: the origin's periodic call seals the epochs that are
// over, and only those, without anybody asking for a report.
func TestSealEpochs(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	start := routing.EpochStart(time.Now(), time.Minute)
	clock := &testClock{t: start.Add(30 * time.Second)}
	e := newEnv(t, Config{Accounting: Accounting{Epoch: time.Minute, RewardPool: 10, Key: key, Now: clock.Now}})
	ctx := t.Context()
	for _, ep := range []time.Time{start.Add(-time.Minute), start} {
		if err := e.store.AddEpochFigures(ctx, ep, "nodea", map[string]int64{routing.FigureClaimedBytes: 5}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.a.SealEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	// The previous epoch ended 30 s ago (its grace is a minute): not yet.
	if _, err := e.store.SealedEpochReport(ctx, start.Add(-time.Minute)); err != routing.ErrNotFound {
		t.Fatalf("sealed within the grace: %v", err)
	}
	clock.set(start.Add(90 * time.Second))
	if err := e.a.SealEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	b, err := e.store.SealedEpochReport(ctx, start.Add(-time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	rep, _, err := parseSealed(b)
	if err != nil || !rep.Final || len(rep.Nodes) != 1 || !rep.GeneratedAt.Equal(start.Add(90*time.Second)) {
		t.Fatalf("sealed %s: %v", b, err)
	}
	if _, err := e.store.SealedEpochReport(ctx, start); err != routing.ErrNotFound {
		t.Fatalf("the current epoch was sealed: %v", err)
	}
	if got := e.a.SealEvery(); got != 30*time.Second {
		t.Fatalf("SealEvery %s", got)
	}
}

// countingStore is the real store, counting the reads of epoch figures and
// sealed reports.
type countingStore struct {
	Store
	sealedReads, figureReads atomic.Int64
}

func (s *countingStore) SealedEpochReport(ctx context.Context, start time.Time) ([]byte, error) {
	s.sealedReads.Add(1)
	return s.Store.SealedEpochReport(ctx, start)
}

func (s *countingStore) EpochFigures(ctx context.Context, start time.Time) (map[string]map[string]int64, error) {
	s.figureReads.Add(1)
	return s.Store.EpochFigures(ctx, start)
}

// TestSealedReportsCached: sealed reports never change, so an origin
// reads and parses each once: later listings, usage and seal rounds answer
// the same from memory, without reading Redis for them again.
func TestSealedReportsCached(t *testing.T) {
	t.Parallel()
	key := newKey(t)
	pub := key.Public().(ed25519.PublicKey)
	start := routing.EpochStart(time.Now(), time.Minute)
	clock := &testClock{t: start.Add(10 * time.Second)}
	cfg := Config{Accounting: Accounting{Epoch: time.Minute, RewardPool: 10, Key: key, Now: clock.Now}}
	e := newEnv(t, cfg)
	ctx := t.Context()
	node := ids.New()
	past := []time.Time{start.Add(-3 * time.Minute), start.Add(-4 * time.Minute), start.Add(-5 * time.Minute)}
	for i, ep := range append([]time.Time{start}, past...) {
		if err := e.store.AddEpochFigures(ctx, ep, node, map[string]int64{routing.FigureClaimedBytes: int64(10 + i), routing.FigureAuditBytes: 5}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	cs := &countingStore{Store: e.a.store}
	e.a.store = cs
	// The first round seals the three past epochs (each read once: not
	// sealed yet); the next reads none of them again.
	if err := e.a.SealEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	if got := cs.sealedReads.Load(); got != 3 {
		t.Fatalf("first seal round: %d sealed report reads, want 3", got)
	}
	cs.sealedReads.Store(0)
	cs.figureReads.Store(0)
	if err := e.a.SealEpochs(ctx); err != nil {
		t.Fatal(err)
	}
	usage := e.signedGet(t, "/v1/nodes/"+node+"/usage", testAdminKey, pub)
	list := e.signedGet(t, "/v1/operators/epochs", testAdminKey, pub)
	if got, figs := cs.sealedReads.Load(), cs.figureReads.Load(); got != 0 || figs != 2 {
		// The current epoch's figures are read for the usage and the list.
		t.Fatalf("after sealing: %d sealed report reads, %d figure reads (want 0 and 2)", got, figs)
	}
	u := decode[nodeUsage](t, usage)
	if len(u.Epochs) != 4 || u.Epochs[0].Final || !u.Epochs[1].Final || u.Epochs[1].Epoch != routing.EpochID(past[0]) ||
		u.Epochs[3].ClaimedBytes != 13 || u.Epochs[3].CreditedBytes != 5 {
		t.Fatalf("usage %+v", u)
	}
	if l := decode[epochListJSON](t, list).Data; len(l) != 4 || l[1].Epoch != routing.EpochID(past[0]) || !l[1].Final || l[1].CreditedBytes != 5 {
		t.Fatalf("list %+v", l)
	}

	// Another origin on the same Redis: its first usage call reads the
	// sealed reports, its second none.
	e2 := newEnvOn(t, cfg, e.redis)
	cs2 := &countingStore{Store: e2.a.store}
	e2.a.store = cs2
	first := e2.signedGet(t, "/v1/nodes/"+node+"/usage", testAdminKey, pub)
	if got := cs2.sealedReads.Load(); got != 3 {
		t.Fatalf("first usage: %d sealed report reads, want 3", got)
	}
	second := e2.signedGet(t, "/v1/nodes/"+node+"/usage", testAdminKey, pub)
	if got := cs2.sealedReads.Load(); got != 3 {
		t.Fatalf("second usage: %d sealed report reads in all, want 3 (none again)", got)
	}
	if !bytes.Equal(first.body, second.body) || !bytes.Equal(first.body, usage.body) {
		t.Fatalf("usage differs:\n%s\n%s\n%s", usage.body, first.body, second.body)
	}
	// A sealed report from memory is served byte for byte as stored.
	stored, err := e.store.SealedEpochReport(ctx, past[1])
	if err != nil {
		t.Fatal(err)
	}
	got := e2.signedGet(t, "/v1/operators/epochs/"+routing.EpochID(past[1]), testAdminKey, pub)
	if sig, body, _ := bytes.Cut(stored, []byte("\n")); !bytes.Equal(got.body, body) || got.header.Get(ReportSignatureHeader) != string(sig) {
		t.Fatalf("served %s, stored %s", got.body, stored)
	}
	if got := cs2.sealedReads.Load(); got != 3 {
		t.Fatalf("the report of a cached epoch was read again (%d reads)", got)
	}
}

// TestSealedCacheEvictsLeastRecent: the cache of sealed reports keeps at
// most its size, dropping the least recently used.
func TestSealedCacheEvictsLeastRecent(t *testing.T) {
	t.Parallel()
	c := &sealedCache{max: 2}
	c.put("a", EpochReport{Epoch: "a"}, signedReport{sig: "sa"})
	c.put("b", EpochReport{Epoch: "b"}, signedReport{sig: "sb"})
	if rep, s, ok := c.get("a"); !ok || rep.Epoch != "a" || s.sig != "sa" {
		t.Fatalf("a: %+v %+v %v", rep, s, ok)
	}
	c.put("c", EpochReport{Epoch: "c"}, signedReport{sig: "sc"}) // evicts b, the least recent
	if _, _, ok := c.get("b"); ok {
		t.Fatal("b is still cached")
	}
	for _, id := range []string{"a", "c"} {
		if rep, _, ok := c.get(id); !ok || rep.Epoch != id {
			t.Fatalf("%s not cached", id)
		}
	}
	if len(c.byID) != 2 || c.order.Len() != 2 {
		t.Fatalf("%d cached (%d in order), want 2", len(c.byID), c.order.Len())
	}
	// The default size holds a whole listing.
	if sealedCacheSize < maxEpochsListed {
		t.Fatalf("sealedCacheSize %d < maxEpochsListed %d", sealedCacheSize, maxEpochsListed)
	}
}
