package app

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
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

func dialStats(t *testing.T, srv *httptest.Server, swarm string) *statsClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	ws, _, err := websocket.Dial(ctx, "ws"+strings.TrimPrefix(srv.URL, "http")+tracker.Path+"?swarm="+swarm, nil)
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
	a := dialStats(t, srv, ls.ID+"/source")
	b := dialStats(t, srv, ls.ID+"/360p")

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
	ticks(2)
	a.report(111, 300)
	failed := batches()
	if len(failed) < n+2 || failed[len(failed)-1] != failed[len(failed)-2] {
		t.Fatalf("batches while Redis was down: %v want the same one sent again", failed[n:])
	}
	mu.Lock()
	cur = store
	mu.Unlock()
	ticks(2)
	if got := stats(); got != (routing.P2PBytes{HTTP: 161, P2P: 300}) {
		t.Fatalf("after Redis came back: %+v, want {161 300}", got)
	}

	// The answer of a write is lost: the same batch again, counted once.
	b.report(60, 5)
	mu.Lock()
	loseAnswer = true
	mu.Unlock()
	ticks(3)
	got := batches()
	if got[len(got)-1] != got[len(got)-2] {
		t.Fatalf("after a lost answer: %v, want the batch sent again", got)
	}
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
	n := startNode(t)
	e := startEdge(t, n, n.nodeToken(), "")
	n.waitFor("the edge to join", 20*time.Second, func() bool { return len(n.nodes()) == 1 })
	ls := n.createStream("offload")
	pub := publish(t, clip(t, 60), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.firstSegment(ls.ID, "source")
	keys := n.contentKeys()
	if got := n.p2pStats(ls.ID); got != (p2pStatsJSON{}) {
		t.Fatalf("p2p_stats before any viewer: %+v", got)
	}

	join := func(base string) *peer.Peer {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		p, err := peer.Join(ctx, peer.Config{
			Tracker: "ws" + strings.TrimPrefix(base, "http") + "/p2p/ws?swarm=" + ls.ID + "/source",
			HTTP:    base + "/hls/" + ls.ID + "/source/", ContentKeys: keys, Loopback: true,
			PeerTimeout: 20 * time.Second, StatsInterval: 100 * time.Millisecond})
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
