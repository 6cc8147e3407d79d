package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/p2p/peer"
	"github.com/shoal-video/shoal/p2p/tracker"
)

// statsClient is a viewer on a real tracker that reports stats.
type statsClient struct {
	t  *testing.T
	ws *websocket.Conn
}

func dialStats(t *testing.T, base, swarm string) *statsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(base, "http")+tracker.Path+"?swarm="+swarm, nil)
	if err != nil {
		t.Fatalf("dial %s: %v", swarm, err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	c := &statsClient{t: t, ws: ws}
	if m := c.next(); m.Type != tracker.TypeWelcome {
		t.Fatalf("first message %+v", m)
	}
	return c
}

func (c *statsClient) next() tracker.Message {
	c.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	_, b, err := c.ws.Read(ctx)
	if err != nil {
		c.t.Fatal(err)
	}
	m, err := tracker.ParseServerMessage(b)
	if err != nil {
		c.t.Fatal(err)
	}
	return m
}

// report sends cumulative stats and waits until the tracker handled them.
func (c *statsClient) report(httpBytes, p2pBytes uint64) {
	c.t.Helper()
	for _, m := range []tracker.Message{{Type: tracker.TypeStats, HTTP: &httpBytes, P2P: &p2pBytes}, {Type: tracker.TypePing}} {
		b, _ := json.Marshal(m)
		if err := c.ws.Write(context.Background(), websocket.MessageText, b); err != nil {
			c.t.Fatal(err)
		}
	}
	if m := c.next(); m.Type != tracker.TypePong {
		c.t.Fatalf("got %+v, want pong", m)
	}
}

// TestOriginP2PStatsBatches: an origin adds its own tracker's stats at
// each tick (an injected ticker) to the store; a batch whose write failed
// (Redis down) or whose answer was lost is sent again, under its name,
// and counted once.
func TestOriginP2PStatsBatches(t *testing.T) {
	t.Parallel()
	store, _ := newTestStore(t)
	ctx := t.Context()
	// A store whose Redis is unreachable (nothing listens on its port).
	dead, err := routing.NewStore("redis://127.0.0.1:" + strconv.Itoa(freePort(t)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = dead.Close() })
	ls, err := store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "live"})
	if err != nil {
		t.Fatal(err)
	}
	tr, err := tracker.New(tracker.Config{})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(tr)
	t.Cleanup(func() { tr.Close(); srv.Close() })
	a := dialStats(t, srv.URL, ls.ID+"/source")
	b := dialStats(t, srv.URL, ls.ID+"/360p")

	var mu sync.Mutex
	var sent []string // batch names, in order
	loseAnswer := false
	cur := store
	record := func(ctx context.Context, source, batch string, d map[string]routing.P2PBytes) error {
		mu.Lock()
		sent = append(sent, batch)
		lose := loseAnswer
		loseAnswer = false
		s := cur
		mu.Unlock()
		if _, _, err := s.AddP2PStats(ctx, source, batch, d); err != nil {
			return err
		}
		if lose {
			return errors.New("the answer was lost")
		}
		return nil
	}
	tick := make(chan time.Time)
	runCtx, stop := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		runP2PStats(runCtx, tick, newP2PBatcher(tr.TakeStats), "origin-test", record, slog.New(slog.DiscardHandler))
	}()
	// A tick is taken once the flush of the one before ended.
	ticks := func(n int) {
		for range n {
			tick <- time.Time{}
		}
	}
	stats := func() routing.P2PBytes {
		t.Helper()
		st, err := store.P2PStats(ctx, []string{ls.ID})
		if err != nil {
			t.Fatal(err)
		}
		return st[ls.ID]
	}
	batches := func() []string {
		mu.Lock()
		defer mu.Unlock()
		return append([]string(nil), sent...)
	}

	a.report(100, 300)
	b.report(50, 0)
	ticks(2)
	if got := stats(); got != (routing.P2PBytes{HTTP: 150, P2P: 300}) {
		t.Fatalf("after a tick: %+v, want the renditions summed {150 300}", got)
	}
	// Nothing new: nothing sent.
	n := len(batches())
	ticks(2)
	if len(batches()) != n {
		t.Fatalf("batches sent without figures: %v", batches())
	}

	// Redis down: the batch fails and waits; figures reported meanwhile
	// go in a later batch.
	a.report(110, 300)
	mu.Lock()
	cur = dead
	mu.Unlock()
	ticks(3) // the third is taken once the second flush ended
	a.report(111, 300)
	failed := batches()
	if len(failed) < n+2 || failed[len(failed)-1] != failed[len(failed)-2] {
		t.Fatalf("batches while Redis was down: %v want the same one sent again", failed[n:])
	}
	mu.Lock()
	cur = store
	mu.Unlock()
	ticks(3) // the resent batch, then the next one, both flushed
	if got := stats(); got != (routing.P2PBytes{HTTP: 161, P2P: 300}) {
		t.Fatalf("after Redis came back: %+v, want {161 300}", got)
	}

	// The answer of a write is lost: the same batch again, counted once.
	// (Ticks are taken when the flush before ended, but the last one may
	// still be running: its sending is waited for.)
	b.report(60, 5)
	mu.Lock()
	loseAnswer = true
	mu.Unlock()
	ticks(3)
	deadline := time.Now().Add(10 * time.Second)
	got := batches()
	for ; got[len(got)-1] != got[len(got)-2]; got = batches() {
		if time.Now().After(deadline) {
			t.Fatalf("after a lost answer: %v, want the batch sent again", got)
		}
		ticks(1)
	}
	ticks(1) // taken once the resending flush ended
	if got := stats(); got != (routing.P2PBytes{HTTP: 171, P2P: 305}) {
		t.Fatalf("after a lost answer: %+v, want {171 305} (counted once)", got)
	}

	// What is left is added when the origin stops.
	a.report(211, 300)
	stop()
	<-done
	if got := stats(); got != (routing.P2PBytes{HTTP: 271, P2P: 305}) {
		t.Fatalf("after the stop: %+v, want {271 305}", got)
	}
}

// TestP2PBatcherSplits: a batch holds at most nodeproto.MaxP2PStreams ids,
// the biggest; the rest go in the next batches, added to what comes
// meanwhile; an unacknowledged batch is offered again unchanged.
func TestP2PBatcherSplits(t *testing.T) {
	var mu sync.Mutex
	pending := map[string]tracker.Bytes{}
	for i := range nodeproto.MaxP2PStreams + 20 {
		pending[fmt.Sprintf("s%04d", i)] = tracker.Bytes{HTTP: uint64(i + 1)}
	}
	take := func() map[string]tracker.Bytes {
		mu.Lock()
		defer mu.Unlock()
		out := pending
		pending = map[string]tracker.Bytes{}
		return out
	}
	b := newP2PBatcher(take)
	name, first := b.next()
	if name == "" || len(first) != nodeproto.MaxP2PStreams {
		t.Fatalf("first batch %q of %d ids", name, len(first))
	}
	for i := range 20 {
		if _, ok := first[fmt.Sprintf("s%04d", i)]; ok {
			t.Fatalf("the smallest id s%04d is in the first batch", i)
		}
	}
	mu.Lock()
	pending["s0000"] = tracker.Bytes{P2P: 5}
	mu.Unlock()
	if again, batch := b.next(); again != name || len(batch) != len(first) {
		t.Fatalf("unacknowledged: got %q (%d ids), want %q again", again, len(batch), name)
	}
	b.ack("someotherbatch")
	if again, _ := b.next(); again != name {
		t.Fatal("another batch's ack acknowledged this one")
	}
	b.ack(name)
	name2, second := b.next()
	if name2 == "" || name2 == name || len(second) != 20 || second["s0000"] != (tracker.Bytes{HTTP: 1, P2P: 5}) {
		t.Fatalf("second batch %q: %v", name2, second)
	}
	b.ack(name2)
	if name3, rest := b.next(); name3 != "" || rest != nil {
		t.Fatalf("third batch %q: %v, want none", name3, rest)
	}
	// The figures a heartbeat carries stay within what the origin takes.
	if f := heartbeatFigures(map[string]tracker.Bytes{"x": {HTTP: 1 << 60}}); f["x"].HTTP != tracker.MaxStatBytes {
		t.Fatalf("heartbeat figure %d", f["x"].HTTP)
	}
}

// p2pStatsOf reads a live stream's p2p_stats from the API.
type p2pStatsJSON struct {
	HTTPBytes int64   `json:"http_bytes"`
	P2PBytes  int64   `json:"p2p_bytes"`
	Offload   float64 `json:"offload"`
}

func (n *node) p2pStats(id string) p2pStatsJSON {
	n.t.Helper()
	code, body := n.get("/v1/live-streams/"+id, testAdminKey)
	if code != http.StatusOK {
		n.t.Fatalf("GET /v1/live-streams/%s: %d %s", id, code, body)
	}
	var ls struct {
		P2PStats *p2pStatsJSON `json:"p2p_stats"`
	}
	if err := json.Unmarshal(body, &ls); err != nil || ls.P2PStats == nil {
		n.t.Fatalf("no p2p_stats in %s (%v)", body, err)
	}
	return *ls.P2PStats
}

// metric reads a sample of the origin's /metrics.
func (n *node) metric(series string) float64 {
	n.t.Helper()
	code, body := n.get("/metrics", "")
	if code != http.StatusOK {
		n.t.Fatalf("/metrics: %d", code)
	}
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(series) + ` (\S+)$`).FindSubmatch(body)
	if m == nil {
		return 0
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// TestP2PStatsReachTheAPI: two Go peers on an edge share a live segment;
// the stats they report reach the origin with the edge's heartbeats, and
// GET /v1/live-streams/{id} shows them (and the offload), as does the
// origin's /metrics; a peer on the origin's own tracker is counted too.
func TestP2PStatsReachTheAPI(t *testing.T) {
	t.Parallel()
	n, e, ls := startLiveOnEdge(t, "offload")
	n.firstSegment(ls.ID, "source")
	keys := n.contentKeys()
	if got := n.p2pStats(ls.ID); got != (p2pStatsJSON{}) {
		t.Fatalf("p2p_stats before any viewer: %+v", got)
	}

	join := func(base string) *peer.Peer {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		cfg := peerConfig(base, ls.ID, "source", keys)
		cfg.PeerTimeout, cfg.StatsInterval = 20*time.Second, 100*time.Millisecond
		p, err := peer.Join(ctx, cfg)
		if err != nil {
			t.Fatalf("join at %s: %v", base, err)
		}
		t.Cleanup(func() { _ = p.Close() })
		return p
	}
	a, b := join(e.url), join(e.url)
	ctx, cancel := context.WithTimeout(context.Background(), 90*time.Second)
	defer cancel()
	var seg string
	var data []byte
	n.waitFor("a live segment over HTTP at the edge", 20*time.Second, func() bool {
		seg = n.lastSegment(ls.ID, "source", "")
		var err error
		data, _, err = a.Fetch(ctx, seg)
		if err != nil {
			t.Logf("fetch %s: %v", seg, err)
		}
		return err == nil
	})
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	got, from, err := b.Fetch(ctx, seg)
	if err != nil || from != peer.SourceP2P || !bytes.Equal(got, data) {
		t.Fatalf("b: %s, %d bytes (a has %d), err %v; want a's segment from a peer", from, len(got), len(data), err)
	}
	sa, sb := a.Stats(), b.Stats()
	wantHTTP, wantP2P := sa.HTTPBytes+sb.HTTPBytes, sa.P2PBytes+sb.P2PBytes
	if wantHTTP == 0 || wantP2P != int64(len(data)) {
		t.Fatalf("peers' stats %+v %+v", sa, sb)
	}
	// The peers report every 100 ms, the edge heartbeats every 2 s.
	var st p2pStatsJSON
	n.waitFor("the peers' stats in the API", 30*time.Second, func() bool {
		st = n.p2pStats(ls.ID)
		return st.HTTPBytes >= wantHTTP && st.P2PBytes >= wantP2P
	})
	if st.HTTPBytes != wantHTTP || st.P2PBytes != wantP2P {
		t.Fatalf("p2p_stats %+v, want http %d p2p %d (what the peers downloaded, counted once)", st, wantHTTP, wantP2P)
	}
	if want := float64(wantP2P) / float64(wantHTTP+wantP2P); st.Offload <= 0 || st.Offload >= 1 || st.Offload != want {
		t.Fatalf("offload %v, want %v", st.Offload, want)
	}
	// The list shows it too.
	code, body := n.get("/v1/live-streams", testAdminKey)
	var list struct {
		Data []struct {
			ID       string       `json:"id"`
			P2PStats p2pStatsJSON `json:"p2p_stats"`
		} `json:"data"`
	}
	err = json.Unmarshal(body, &list)
	listed := false
	for _, l := range list.Data {
		listed = listed || l.ID == ls.ID && l.P2PStats == st
	}
	if code != http.StatusOK || err != nil || !listed {
		t.Fatalf("list: %d %s, want the stream with %+v", code, body, st)
	}
	if h, p := n.metric(`shoal_p2p_reported_bytes_total{source="http"}`), n.metric(`shoal_p2p_reported_bytes_total{source="p2p"}`); h != float64(wantHTTP) || p != float64(wantP2P) {
		t.Fatalf("origin /metrics shoal_p2p_reported_bytes_total http=%v p2p=%v, want %d %d", h, p, wantHTTP, wantP2P)
	}

	// A viewer of the origin's own tracker: added within its 10 s flush.
	c := join(n.http)
	n.waitFor("a live segment over HTTP at the origin", 20*time.Second, func() bool {
		_, _, err := c.Fetch(ctx, n.lastSegment(ls.ID, "source", ""))
		return err == nil
	})
	wantHTTP += c.Stats().HTTPBytes
	n.waitFor("the origin's own viewer in the API", 30*time.Second, func() bool {
		st = n.p2pStats(ls.ID)
		return st.HTTPBytes >= wantHTTP
	})
	if st.HTTPBytes != wantHTTP || st.P2PBytes != wantP2P {
		t.Fatalf("p2p_stats %+v, want http %d p2p %d", st, wantHTTP, wantP2P)
	}

	// Deleting the stream deletes its stats.
	if code, b := n.do(http.MethodDelete, "/v1/live-streams/"+ls.ID, testAdminKey, nil); code != http.StatusNoContent {
		t.Fatalf("DELETE: %d %s", code, b)
	}
}

// heartbeatFaults sits between an edge and its origin and breaks the
// heartbeats that carry P2P stats: refused (the origin never sees them)
// or forwarded with the answer lost.
type heartbeatFaults struct {
	proxy *httputil.ReverseProxy

	mu      sync.Mutex
	mode    string   // "", "refuse" or "lose" (the next one only)
	batches []string // p2p_batch of each heartbeat with stats, and what became of it
}

func newHeartbeatFaults(t *testing.T, origin string) (*heartbeatFaults, *httptest.Server) {
	u, err := url.Parse(origin)
	if err != nil {
		t.Fatal(err)
	}
	f := &heartbeatFaults{proxy: httputil.NewSingleHostReverseProxy(u)}
	// The edge knows its origin through this proxy only: the origins the
	// answers list (the origin's own URL) are left out, or the edge would
	// fail over to it round the faults.
	f.proxy.ModifyResponse = func(resp *http.Response) error {
		if resp.Request.Method != http.MethodPost || !strings.HasPrefix(resp.Request.URL.Path, "/v1/nodes") {
			return nil
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		if err != nil {
			return err
		}
		var m map[string]json.RawMessage
		if json.Unmarshal(b, &m) == nil {
			delete(m, "origins")
			b, _ = json.Marshal(m)
		}
		resp.Body = io.NopCloser(bytes.NewReader(b))
		resp.ContentLength = int64(len(b))
		resp.Header.Set("Content-Length", strconv.Itoa(len(b)))
		return nil
	}
	srv := httptest.NewServer(f)
	t.Cleanup(srv.Close)
	return f, srv
}

func (f *heartbeatFaults) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost || !strings.HasSuffix(r.URL.Path, "/heartbeat") {
		f.proxy.ServeHTTP(w, r)
		return
	}
	body, err := io.ReadAll(r.Body)
	if err != nil {
		http.Error(w, err.Error(), http.StatusBadGateway)
		return
	}
	r.Body = io.NopCloser(bytes.NewReader(body))
	var hb nodeproto.Heartbeat
	_ = json.Unmarshal(body, &hb)
	if hb.P2PBatch == "" {
		f.proxy.ServeHTTP(w, r)
		return
	}
	f.mu.Lock()
	mode := f.mode
	if mode == "lose" {
		f.mode = ""
	}
	f.mu.Unlock()
	switch mode {
	case "refuse":
		f.record(hb.P2PBatch + " refused")
		http.Error(w, "origin unreachable", http.StatusBadGateway)
	case "lose":
		rec := httptest.NewRecorder()
		f.proxy.ServeHTTP(rec, r)
		f.record(fmt.Sprintf("%s lost (%d)", hb.P2PBatch, rec.Code))
		http.Error(w, "the answer was lost", http.StatusBadGateway)
	default:
		rec := httptest.NewRecorder()
		f.proxy.ServeHTTP(rec, r)
		f.record(fmt.Sprintf("%s %d", hb.P2PBatch, rec.Code))
		for k, v := range rec.Header() {
			w.Header()[k] = v
		}
		w.WriteHeader(rec.Code)
		_, _ = w.Write(rec.Body.Bytes())
	}
}

func (f *heartbeatFaults) record(s string) {
	f.mu.Lock()
	f.batches = append(f.batches, s)
	f.mu.Unlock()
}

func (f *heartbeatFaults) set(mode string) {
	f.mu.Lock()
	f.mode = mode
	f.mu.Unlock()
}

func (f *heartbeatFaults) seen() []string {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]string(nil), f.batches...)
}

// TestP2PStatsSurviveFailedHeartbeats: an edge whose heartbeats with P2P
// stats fail keeps the batch and sends it again, under its name, until one
// is answered; a batch whose answer was lost is sent again and counted
// once.
func TestP2PStatsSurviveFailedHeartbeats(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	faults, proxy := newHeartbeatFaults(t, n.http)
	e := startEdge(t, n, n.nodeToken(), "", "SHOAL_ORIGIN_URL="+proxy.URL)
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream("faults")
	pub := publish(t, clip(t, 60), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.firstSegment(ls.ID, "source")
	var v *statsClient
	n.waitFor("a viewer to join the edge's swarm", 20*time.Second, func() bool {
		resp, _ := httpGet(t, e.url+"/hls/"+ls.ID+"/source/index.m3u8")
		if resp.StatusCode != http.StatusOK {
			return false
		}
		v = dialStats(t, e.url, ls.ID+"/source")
		return true
	})

	// Refused twice: nothing is added, the batch waits.
	faults.set("refuse")
	v.report(1000, 3000)
	n.waitFor("two refused heartbeats", 30*time.Second, func() bool { return len(faults.seen()) >= 2 })
	if st := n.p2pStats(ls.ID); st != (p2pStatsJSON{}) {
		t.Fatalf("p2p_stats %+v while the heartbeats failed", st)
	}
	// Reported meanwhile: a later batch.
	v.report(1500, 3000)
	// The next one reaches the origin but its answer is lost; the batch
	// is sent again and counted once.
	faults.set("lose")
	n.waitFor("the batch added", 30*time.Second, func() bool {
		s := faults.seen()
		return strings.HasSuffix(s[len(s)-1], " 200")
	})
	n.waitFor("the later batch added", 30*time.Second, func() bool { return n.p2pStats(ls.ID).HTTPBytes >= 1500 })
	seen := faults.seen()
	first, _, _ := strings.Cut(seen[0], " ")
	i := 0
	for i < len(seen) && seen[i] == first+" refused" {
		i++
	}
	if i < 2 || i+1 >= len(seen) || seen[i] != first+" lost (200)" || seen[i+1] != first+" 200" {
		t.Fatalf("heartbeats with stats: %q, want the batch %s refused (twice or more), lost, then sent again", seen, first)
	}
	if st := n.p2pStats(ls.ID); st != (p2pStatsJSON{HTTPBytes: 1500, P2PBytes: 3000, Offload: 2.0 / 3}) {
		t.Fatalf("p2p_stats %+v, want {1500 3000 0.667}: nothing lost, nothing twice (heartbeats %q)", st, faults.seen())
	}
}
