package peer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/coder/websocket"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/p2p/tracker"
)

const swarm = "stream1/720p"

type world struct {
	t        *testing.T
	key      ed25519.PrivateKey
	segments map[string][]byte
	tracker  *tracker.Tracker
	reg      *prometheus.Registry
	trackURL string
	httpURL  string

	mu   sync.Mutex
	gets map[string]int // HTTP GETs by file name
	// lagging: the next lagging manifest GETs get an older manifest,
	// without seg-2 (a node's manifest a moment behind its playlist).
	lagging int
}

func randomBytes(seed uint64, n int) []byte {
	r := rand.New(rand.NewPCG(seed, 7))
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(r.Uint32())
	}
	return b
}

// newWorld starts a tracker and an origin-like HTTP server serving a
// signed manifest and the segments; "corrupt.m4s" is served with bytes
// other than the manifest's.
func newWorld(t *testing.T) *world {
	t.Helper()
	w := &world{t: t, key: ed25519.NewKeyFromSeed(bytes.Repeat([]byte{3}, ed25519.SeedSize)), gets: map[string]int{},
		segments: map[string][]byte{
			"init.mp4":    randomBytes(1, 900),
			"seg-1.m4s":   randomBytes(2, 100<<10),
			"seg-2.m4s":   randomBytes(3, 300<<10), // crosses in 5 chunks
			"corrupt.m4s": randomBytes(4, 5000),
			"big.m4s":     randomBytes(5, 6<<20), // over what a stalled reader's windows take
		}}
	m := manifest.Manifest{ID: "stream1", Rendition: "720p", Seq: 3, Time: time.UnixMilli(1_780_000_000_000), Ended: true}
	for _, name := range []string{"init.mp4", "seg-1.m4s", "seg-2.m4s", "corrupt.m4s", "big.m4s"} {
		data := w.segments[name]
		e := manifest.Entry{Kind: manifest.KindSegment, URI: name, Size: int64(len(data)), SHA256: sha256.Sum256(data), Duration: 2 * time.Second}
		if name == "init.mp4" {
			e.Kind, e.Duration = manifest.KindInit, 0
		}
		m.Entries = append(m.Entries, e)
	}
	signed, err := manifest.Sign(m, w.key)
	if err != nil {
		t.Fatal(err)
	}
	// What a node serves a moment before seg-2 is out (see lagging).
	older := m
	older.Seq, older.Ended, older.Entries = 2, false, nil
	for _, e := range m.Entries {
		if e.URI != "seg-2.m4s" {
			older.Entries = append(older.Entries, e)
		}
	}
	signedOlder, err := manifest.Sign(older, w.key)
	if err != nil {
		t.Fatal(err)
	}
	w.segments["corrupt.m4s"] = append([]byte(nil), w.segments["corrupt.m4s"]...)
	w.segments["corrupt.m4s"][10] ^= 1
	origin := httptest.NewServer(http.HandlerFunc(func(rw http.ResponseWriter, r *http.Request) {
		name, ok := strings.CutPrefix(r.URL.Path, "/hls/stream1/720p/")
		if !ok {
			http.NotFound(rw, r)
			return
		}
		w.mu.Lock()
		w.gets[name]++
		w.mu.Unlock()
		if name == manifest.FileName {
			w.mu.Lock()
			lag := w.lagging > 0
			if lag {
				w.lagging--
			}
			w.mu.Unlock()
			if lag {
				_, _ = rw.Write(signedOlder)
				return
			}
			_, _ = rw.Write(signed)
			return
		}
		data, ok := w.segments[name]
		if !ok {
			http.NotFound(rw, r)
			return
		}
		_, _ = rw.Write(data)
	}))
	t.Cleanup(origin.Close)
	w.reg = prometheus.NewRegistry()
	tr, err := tracker.New(tracker.Config{Registerer: w.reg})
	if err != nil {
		t.Fatal(err)
	}
	mux := http.NewServeMux()
	mux.Handle(tracker.Path, tr)
	ts := httptest.NewServer(mux)
	t.Cleanup(func() {
		tr.Close()
		ts.Close()
	})
	w.tracker = tr
	w.trackURL = "ws" + strings.TrimPrefix(ts.URL, "http") + tracker.Path + "?swarm=" + swarm
	w.httpURL = origin.URL + "/hls/stream1/720p/"
	return w
}

func (w *world) join(mutate func([]byte) []byte) *Peer {
	w.t.Helper()
	return w.joinWith(Config{Mutate: mutate})
}

func (w *world) joinWith(cfg Config) *Peer {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	cfg.Tracker, cfg.HTTP, cfg.ContentKeys = w.trackURL, w.httpURL, []ed25519.PublicKey{w.key.Public().(ed25519.PublicKey)}
	cfg.Loopback = true
	if cfg.PeerTimeout == 0 {
		// Room for ICE, DTLS and SCTP under -race on a loaded machine
		// (and for a transfer held to an upload rate).
		cfg.PeerTimeout = 30 * time.Second
	}
	p, err := Join(ctx, cfg)
	if err != nil {
		w.t.Fatal(err)
	}
	w.t.Cleanup(func() { _ = p.Close() })
	return p
}

func (w *world) httpGets(name string) int {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.gets[name]
}

// fetch fetches name and checks the bytes are the origin's and came
// from src; it syncs the peer with the tracker after (its have).
func (w *world) fetch(p *Peer, name string, src Source) {
	w.t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data, from, err := p.Fetch(ctx, name)
	if err != nil {
		w.t.Fatalf("fetch %s: %v", name, err)
	}
	if !bytes.Equal(data, w.segments[name]) {
		w.t.Fatalf("fetch %s: %d bytes that are not the origin's", name, len(data))
	}
	if from != src {
		w.t.Fatalf("fetch %s: from %s, want %s", name, from, src)
	}
	if err := p.Sync(ctx); err != nil {
		w.t.Fatal(err)
	}
}

func TestSegmentFromPeer(t *testing.T) {
	w := newWorld(t)
	a := w.join(nil)
	w.fetch(a, "init.mp4", SourceHTTP)
	w.fetch(a, "seg-1.m4s", SourceHTTP)
	w.fetch(a, "seg-2.m4s", SourceHTTP)
	b := w.join(nil)
	w.fetch(b, "init.mp4", SourceP2P)
	w.fetch(b, "seg-1.m4s", SourceP2P)
	w.fetch(b, "seg-2.m4s", SourceP2P) // 300 KiB: 5 chunks of at most 64 KiB
	if got := w.httpGets("seg-2.m4s"); got != 1 {
		t.Fatalf("seg-2 fetched %d times over HTTP, want once (by a)", got)
	}
	total := int64(900 + 100<<10 + 300<<10)
	if s := b.Stats(); s.P2PBytes != total || s.HTTPBytes != 0 || s.DroppedPeers != 0 {
		t.Fatalf("b's stats %+v, want %d P2P bytes", s, total)
	}
	if s := a.Stats(); s.UploadedBytes != total || s.HTTPBytes != total {
		t.Fatalf("a's stats %+v, want %d uploaded", s, total)
	}
	// A third peer gets it from a or b; the segment is held now by both.
	c := w.join(nil)
	w.fetch(c, "seg-2.m4s", SourceP2P)
	// Stats reach the tracker.
	_ = b.Close()
	waitUntil(t, "b's stats", func() bool {
		return testutil.ToFloat64(metric(t, w.reg, "shoal_p2p_bytes_total", "p2p")) >= float64(total)
	})
}

func TestTamperingPeerIsDropped(t *testing.T) {
	w := newWorld(t)
	flip := func(b []byte) []byte {
		b[len(b)/2] ^= 0x40
		return b
	}
	h := w.join(nil)
	w.fetch(h, "seg-1.m4s", SourceHTTP)
	// Someone else is offered h once, so that the malicious peer, offered
	// less recently, comes first below.
	x := w.join(nil)
	w.fetch(x, "seg-1.m4s", SourceP2P)
	_ = x.Close()
	mal := w.join(flip)
	w.fetch(mal, "seg-1.m4s", SourceP2P) // its own fetch is verified; what it serves is not
	// c is offered mal first: its bytes fail, mal is dropped and
	// reported, and the fetch goes on to h.
	c := w.join(nil)
	w.fetch(c, "seg-1.m4s", SourceP2P)
	if s := c.Stats(); s.DroppedPeers != 1 || s.P2PBytes != 100<<10 {
		t.Fatalf("c's stats %+v, want one peer dropped and the segment from a peer", s)
	}
	if mal.Stats().UploadedBytes == 0 {
		t.Fatal("the malicious peer served nothing: the test did not exercise it")
	}
	// Only mal holds seg-2: after its bytes fail, HTTP.
	w.fetch(mal, "seg-2.m4s", SourceHTTP)
	d := w.join(nil)
	w.fetch(d, "seg-2.m4s", SourceHTTP)
	if s := d.Stats(); s.DroppedPeers != 1 || s.HTTPBytes != 300<<10 {
		t.Fatalf("d's stats %+v", s)
	}
	// c no longer asks mal: it gets seg-2 from d, never from mal.
	before := mal.Stats().UploadedBytes
	w.fetch(c, "seg-2.m4s", SourceP2P)
	if mal.Stats().UploadedBytes != before {
		t.Fatal("c asked the peer it dropped again")
	}
	if got := testutil.ToFloat64(metric(t, w.reg, "shoal_p2p_bad_reports_total", "")); got != 2 {
		t.Fatalf("bad reports %v, want 2", got)
	}
	// A third reporter: the tracker drops mal. Only mal holds init.mp4.
	w.fetch(mal, "init.mp4", SourceHTTP)
	e := w.join(nil)
	w.fetch(e, "init.mp4", SourceHTTP)
	if s := e.Stats(); s.DroppedPeers != 1 {
		t.Fatalf("e's stats %+v", s)
	}
	if got := testutil.ToFloat64(metric(t, w.reg, "shoal_p2p_bad_reports_total", "")); got != 3 {
		t.Fatalf("bad reports %v, want 3", got)
	}
	// The three reporters share one address (loopback): the tracker drops
	// a peer for everyone only on reports from three addresses (see the
	// tracker's tests), so mal stays, offered to none of its reporters.
	if n, _, _ := w.tracker.SwarmStats(swarm); n != 5 {
		t.Fatalf("%d peers in the swarm, want 5 (mal kept)", n)
	}
}

func TestConnectionCapAndUploadRate(t *testing.T) {
	w := newWorld(t)
	a := w.joinWith(Config{MaxUploadBytesPerSec: 100 << 10})
	w.fetch(a, "seg-2.m4s", SourceHTTP)
	b := w.join(nil)
	w.fetch(b, "seg-1.m4s", SourceHTTP)
	c := w.joinWith(Config{MaxPeers: 1})
	c.mu.Lock()           // makeRoomLocked reads it under c.mu
	c.idleMin = time.Hour // its one link never counts as idle here
	c.mu.Unlock()
	start := time.Now()
	w.fetch(c, "seg-2.m4s", SourceP2P)
	// 300 KiB at 100 KiB/s with a burst of 100 KiB: at least 2 s.
	if d := time.Since(start); d < 1900*time.Millisecond {
		t.Fatalf("300 KiB served in %v by a peer limited to 100 KiB/s", d)
	}
	// c holds a connection to a, its cap: b's segment comes over HTTP.
	w.fetch(c, "seg-1.m4s", SourceHTTP)
}

// TestBothWays: two peers fetch from each other at the same moment, so
// both may offer at once (glare); both get their segment from the other.
func TestBothWays(t *testing.T) {
	for range 3 {
		w := newWorld(t)
		a, b := w.join(nil), w.join(nil)
		w.fetch(a, "seg-1.m4s", SourceHTTP)
		w.fetch(b, "seg-2.m4s", SourceHTTP)
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		type res struct {
			name string
			data []byte
			from Source
			err  error
		}
		out := make(chan res, 2)
		for _, x := range []struct {
			p    *Peer
			name string
		}{{a, "seg-2.m4s"}, {b, "seg-1.m4s"}} {
			go func() {
				data, from, err := x.p.Fetch(ctx, x.name)
				out <- res{x.name, data, from, err}
			}()
		}
		for range 2 {
			r := <-out
			if r.err != nil || r.from != SourceP2P || !bytes.Equal(r.data, w.segments[r.name]) {
				t.Fatalf("%s: from %s, err %v, %d bytes", r.name, r.from, r.err, len(r.data))
			}
		}
	}
}

// TestSilentPeer: a peer that announces a segment and never answers
// (here a bare tracker client) costs one PeerTimeout, then HTTP; its slot
// is freed.
func TestSilentPeer(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	ws := silentPeer(ctx, t, w, `"seg-1.m4s","seg-2.m4s"`)
	p := w.joinWith(Config{PeerTimeout: time.Second})
	start := time.Now()
	w.fetch(p, "seg-1.m4s", SourceHTTP)
	if d := time.Since(start); d < time.Second {
		t.Fatalf("HTTP after %v: the silent peer was not tried", d)
	}
	// The offer reached the silent peer.
	_, b, err := ws.Read(ctx)
	if err != nil || !strings.Contains(string(b), `"type":"signal"`) || !strings.Contains(string(b), `"offer"`) {
		t.Fatalf("the silent peer got %s, %v; want an offer", b, err)
	}
	p.mu.Lock()
	n := len(p.links)
	p.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d links left after the silent peer timed out", n)
	}
	// It rests: the next segment it announced comes over HTTP without
	// asking it (no offer reaches it before the pong of a later ping).
	w.fetch(p, "seg-2.m4s", SourceHTTP)
	if n := signalsBeforePong(ctx, t, ws); n != 0 {
		t.Fatalf("the resting peer was asked again (%d signals)", n)
	}
}

func TestHTTPBytesAreVerifiedToo(t *testing.T) {
	w := newWorld(t)
	p := w.join(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	data, _, err := p.Fetch(ctx, "corrupt.m4s")
	if err == nil || data != nil {
		t.Fatalf("a segment the origin serves wrong: %d bytes, err %v; want an error", len(data), err)
	}
	if _, _, err := p.Fetch(ctx, "seg-9.m4s"); err == nil || !strings.Contains(err.Error(), "not in the rendition's manifest") {
		t.Fatalf("a segment not in the manifest: %v", err)
	}
	// Nothing failed verification is served: another peer gets it over HTTP (and fails).
	q := w.join(nil)
	if err := p.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	if _, _, err := q.Fetch(ctx, "corrupt.m4s"); err == nil {
		t.Fatal("corrupt segment fetched")
	}
	if got := w.httpGets("corrupt.m4s"); got != 2 {
		t.Fatalf("corrupt.m4s fetched %d times over HTTP, want 2 (no peer offers it)", got)
	}
}

func TestJoinRefusals(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	keys := []ed25519.PublicKey{w.key.Public().(ed25519.PublicKey)}
	for _, cfg := range []Config{
		{Tracker: w.trackURL, HTTP: w.httpURL},
		{Tracker: "http://x/p2p/ws?swarm=" + swarm, HTTP: w.httpURL, ContentKeys: keys},
		{Tracker: strings.Replace(w.trackURL, swarm, "bad", 1), HTTP: w.httpURL, ContentKeys: keys},
		{Tracker: w.trackURL, HTTP: strings.TrimSuffix(w.httpURL, "/"), ContentKeys: keys},
	} {
		if p, err := Join(ctx, cfg); err == nil {
			_ = p.Close()
			t.Fatalf("%+v joined", cfg)
		}
	}
	// A manifest of another swarm is refused.
	p, err := Join(ctx, Config{Tracker: strings.Replace(w.trackURL, swarm, "stream1/480p", 1), HTTP: w.httpURL, ContentKeys: keys, Loopback: true})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	if _, _, err := p.Fetch(ctx, "seg-1.m4s"); err == nil || !strings.Contains(err.Error(), "not the swarm's") {
		t.Fatalf("manifest of another rendition: %v", err)
	}
}

func metric(t *testing.T, reg *prometheus.Registry, name, source string) prometheus.Collector {
	t.Helper()
	return gathered{reg: reg, name: name, source: source}
}

// gathered is one metric's value read from a registry.
type gathered struct {
	reg          *prometheus.Registry
	name, source string
}

func (g gathered) Describe(ch chan<- *prometheus.Desc) {}
func (g gathered) Collect(ch chan<- prometheus.Metric) {
	mfs, err := g.reg.Gather()
	if err != nil {
		return
	}
	for _, mf := range mfs {
		if mf.GetName() != g.name {
			continue
		}
		for _, m := range mf.GetMetric() {
			ok := g.source == ""
			for _, l := range m.GetLabel() {
				if l.GetName() == "source" && l.GetValue() == g.source {
					ok = true
				}
			}
			if ok {
				ch <- prometheus.MustNewConstMetric(prometheus.NewDesc(g.name, "", nil, nil), prometheus.UntypedValue, m.GetCounter().GetValue())
			}
		}
	}
}

func waitUntil(t *testing.T, what string, cond func() bool) {
	t.Helper()
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(20 * time.Second)
	for !cond() {
		select {
		case <-tick.C:
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		}
	}
}

// TestCloseEndsEverything: after peers (and the servers) close, the
// goroutines of the test are gone.
func TestCloseEndsEverything(t *testing.T) {
	before := runtime.NumGoroutine()
	t.Run("swarm", func(t *testing.T) {
		w := newWorld(t)
		a, b := w.join(nil), w.join(nil)
		w.fetch(a, "seg-2.m4s", SourceHTTP)
		w.fetch(b, "seg-2.m4s", SourceP2P)
		_ = a.Close()
		_ = b.Close()
	})
	http.DefaultTransport.(*http.Transport).CloseIdleConnections()
	var after int
	waitUntil(t, "goroutines to end", func() bool {
		after = runtime.NumGoroutine()
		return after <= before
	})
}

// TestSendsArePaced: a burst of messages to the tracker (a player catching
// up fetches many segments at once) is paced under the tracker's limit
// instead of getting the socket closed.
func TestSendsArePaced(t *testing.T) {
	w := newWorld(t)
	p := w.join(nil)
	for range 80 {
		if err := p.send(tracker.Message{Type: tracker.TypeHave, Segments: []string{"seg-1.m4s"}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if err := p.Sync(ctx); err != nil {
		t.Fatalf("the tracker socket after a burst: %v", err)
	}
}

// TestPeersHaveABudget: a row of silent peers costs at most two
// PeerTimeouts before HTTP: the third is never asked.
func TestPeersHaveABudget(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	var silent []*websocket.Conn
	for range 3 {
		silent = append(silent, silentPeer(ctx, t, w, `"seg-1.m4s"`))
	}
	p := w.joinWith(Config{PeerTimeout: time.Second})
	w.fetch(p, "seg-1.m4s", SourceHTTP)
	asked := 0
	for _, ws := range silent {
		asked += signalsBeforePong(ctx, t, ws)
	}
	if asked == 0 || asked > 2 {
		t.Fatalf("%d of 3 silent peers were asked, want 1 or 2 (two PeerTimeouts in all)", asked)
	}
}

// silentPeer is a bare tracker client of w's swarm that announces have (a
// JSON list's elements) and never answers a peer; it returns once the
// tracker has the announcement.
func silentPeer(ctx context.Context, t *testing.T, w *world, have string) *websocket.Conn {
	t.Helper()
	ws, _, err := websocket.Dial(ctx, w.trackURL, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = ws.CloseNow() })
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"have","segments":[`+have+`]}`)); err != nil {
		t.Fatal(err)
	}
	signalsBeforePong(ctx, t, ws) // welcome, then pong: the tracker has the have
	return ws
}

// signalsBeforePong pings the tracker from ws and counts the signals ws
// received before the pong.
func signalsBeforePong(ctx context.Context, t *testing.T, ws *websocket.Conn) int {
	t.Helper()
	if err := ws.Write(ctx, websocket.MessageText, []byte(`{"type":"ping"}`)); err != nil {
		t.Fatal(err)
	}
	n := 0
	for {
		_, b, err := ws.Read(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(string(b), `"signal"`) {
			n++
		}
		if strings.Contains(string(b), `"pong"`) {
			return n
		}
	}
}

// TestFetchByWaitsForAHolder: a segment needed later is not taken over
// HTTP while there is time: the peer asks the tracker again until a peer
// holds it (here one that fetched it over HTTP meanwhile), and without a
// holder goes over HTTP at httpAt, not before.
func TestFetchByWaitsForAHolder(t *testing.T) {
	w := newWorld(t)
	a, b := w.join(nil), w.join(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	type res struct {
		data []byte
		from Source
		err  error
	}
	out := make(chan res, 1)
	go func() {
		data, from, err := b.FetchBy(ctx, "seg-1.m4s", time.Now().Add(40*time.Second))
		out <- res{data, from, err}
	}()
	// b has the manifest: it is past its first look for holders, or at it.
	waitUntil(t, "b's manifest", func() bool { return w.httpGets(manifest.FileName) >= 1 })
	w.fetch(a, "seg-1.m4s", SourceHTTP)
	r := <-out
	if r.err != nil || r.from != SourceP2P || !bytes.Equal(r.data, w.segments["seg-1.m4s"]) {
		t.Fatalf("b: from %s, err %v, %d bytes; want a's segment from a peer", r.from, r.err, len(r.data))
	}
	if n := w.httpGets("seg-1.m4s"); n != 1 {
		t.Fatalf("seg-1 fetched %d times over HTTP, want once (by a)", n)
	}
	// No holder: HTTP at httpAt, not before.
	start := time.Now()
	data, from, err := b.FetchBy(ctx, "seg-2.m4s", start.Add(time.Second))
	if err != nil || from != SourceHTTP || !bytes.Equal(data, w.segments["seg-2.m4s"]) {
		t.Fatalf("seg-2: from %s, err %v", from, err)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("seg-2 went over HTTP after %v, before httpAt (1 s)", d)
	}
	// A past httpAt: HTTP at once, no peer asked.
	data, from, err = b.FetchBy(ctx, "init.mp4", time.Now().Add(-time.Second))
	if err != nil || from != SourceHTTP || !bytes.Equal(data, w.segments["init.mp4"]) {
		t.Fatalf("init: from %s, err %v", from, err)
	}
}

// TestIdleLinkMakesRoom: a peer at its cap on connections closes an idle
// link to reach the one peer that holds what it needs, instead of going
// over HTTP; a link in use is never closed for it.
func TestIdleLinkMakesRoom(t *testing.T) {
	w := newWorld(t)
	a, b := w.join(nil), w.join(nil)
	w.fetch(a, "seg-1.m4s", SourceHTTP)
	w.fetch(b, "seg-2.m4s", SourceHTTP)
	c := w.joinWith(Config{MaxPeers: 1})
	c.mu.Lock() // makeRoomLocked reads it under c.mu
	c.idleMin = 0
	c.mu.Unlock()
	w.fetch(c, "seg-1.m4s", SourceP2P) // linked to a, its cap
	w.fetch(c, "seg-2.m4s", SourceP2P) // a's link idle: closed for b's
	if s := c.Stats(); s.EvictedLinks != 1 {
		t.Fatalf("c's stats %+v, want one evicted link", s)
	}
	c.mu.Lock()
	_, toA := c.links[a.ID()]
	_, toB := c.links[b.ID()]
	c.mu.Unlock()
	if toA || !toB {
		t.Fatalf("c's links: to a %v, to b %v; want b's only", toA, toB)
	}
	// A link in use is not idle: busy, it is kept and the cap holds.
	c.mu.Lock()
	l := c.links[b.ID()]
	c.mu.Unlock()
	done := l.use()
	defer done()
	c.mu.Lock()
	victim, ok := c.makeRoomLocked()
	c.mu.Unlock()
	if victim != nil || ok {
		t.Fatalf("a busy link was taken for eviction (%v, %v)", victim, ok)
	}
}

// TestFetchBySeeds: with a SeedWindow, a segment nobody holds is fetched
// over HTTP after a short random wait (the peer seeds the swarm), not at
// the player's far httpAt; the next peer gets it from the seed.
func TestFetchBySeeds(t *testing.T) {
	w := newWorld(t)
	a := w.joinWith(Config{SeedWindow: 200 * time.Millisecond})
	b := w.joinWith(Config{SeedWindow: 200 * time.Millisecond})
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	far := time.Now().Add(time.Hour)
	data, from, err := a.FetchBy(ctx, "seg-1.m4s", far)
	if err != nil || from != SourceHTTP || !bytes.Equal(data, w.segments["seg-1.m4s"]) {
		t.Fatalf("a: from %s, err %v; want a seed over HTTP well before httpAt", from, err)
	}
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	data, from, err = b.FetchBy(ctx, "seg-1.m4s", far)
	if err != nil || from != SourceP2P || !bytes.Equal(data, w.segments["seg-1.m4s"]) {
		t.Fatalf("b: from %s, err %v; want a's segment from a peer", from, err)
	}
	if n := w.httpGets("seg-1.m4s"); n != 1 {
		t.Fatalf("seg-1 fetched %d times over HTTP, want once (a's seed)", n)
	}
}

// TestManifestBehindPlaylist: a segment the node's manifest does not list
// yet (its playlist is a moment ahead) is looked up again in a fresh
// manifest shortly after, instead of failing the fetch.
func TestManifestBehindPlaylist(t *testing.T) {
	w := newWorld(t)
	w.mu.Lock()
	w.lagging = 2
	w.mu.Unlock()
	p := w.join(nil)
	w.fetch(p, "seg-2.m4s", SourceHTTP)
	if n := w.httpGets(manifest.FileName); n != 3 {
		t.Fatalf("%d manifest GETs, want 3 (two behind, then the one listing seg-2)", n)
	}
	// A name that never comes fails after a few looks.
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if _, _, err := p.Fetch(ctx, "seg-9.m4s"); err == nil || !strings.Contains(err.Error(), "not in the rendition's manifest") {
		t.Fatalf("seg-9: %v, want not in the manifest", err)
	}
}

// TestBusyPeerSaysNone: a peer already uploading its MaxUploads answers
// none at once, so the asker goes on (here to HTTP) instead of queueing
// behind a slow upload; the busy peer is asked again soon after.
func TestBusyPeerSaysNone(t *testing.T) {
	w := newWorld(t)
	// 300 KiB at 20 KiB/s: about 15 s, ample for c to connect (ICE,
	// DTLS, SCTP) and ask under -race on a loaded machine.
	a := w.joinWith(Config{MaxUploadBytesPerSec: 20 << 10})
	w.fetch(a, "seg-2.m4s", SourceHTTP)
	b, c := w.join(nil), w.join(nil)
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	slow := make(chan error, 1)
	go func() {
		_, from, err := b.Fetch(ctx, "seg-2.m4s")
		if err == nil && from != SourceP2P {
			err = fmt.Errorf("b got it from %s", from)
		}
		slow <- err
	}()
	waitUntil(t, "a's upload to b", func() bool { return a.Stats().UploadedBytes > 0 })
	w.fetch(c, "seg-2.m4s", SourceHTTP)
	if s := a.Stats(); s.BusyRefusals != 1 {
		t.Fatalf("a's stats %+v, want one busy refusal", s)
	}
	if err := <-slow; err != nil {
		t.Fatal(err)
	}
	// a said none: c rests it for restAfterNone only.
	c.mu.Lock()
	until := c.resting[a.ID()]
	c.mu.Unlock()
	if d := time.Until(until); d > restAfterNone {
		t.Fatalf("a rests %v for c, want at most %v", d, restAfterNone)
	}
}

// TestHeldBytesAreBounded: a peer keeps at most MaxHeldBytes of segments,
// the oldest going first (and no longer announced), the newest always.
func TestHeldBytesAreBounded(t *testing.T) {
	w := newWorld(t)
	a := w.joinWith(Config{MaxHeldBytes: 200 << 10})
	w.fetch(a, "init.mp4", SourceHTTP)
	w.fetch(a, "seg-1.m4s", SourceHTTP) // 100 KiB + 900 B: both kept
	a.mu.Lock()
	n := len(a.store)
	a.mu.Unlock()
	if n != 2 {
		t.Fatalf("%d segments held, want 2", n)
	}
	w.fetch(a, "seg-2.m4s", SourceHTTP) // 300 KiB: over the bound alone
	a.mu.Lock()
	names, held := append([]string(nil), a.order...), a.heldBytes
	a.mu.Unlock()
	if len(names) != 1 || names[0] != "seg-2.m4s" || held != 300<<10 {
		t.Fatalf("held %v (%d bytes), want seg-2 only", names, held)
	}
	// What went is no longer served: b gets seg-1 over HTTP.
	b := w.join(nil)
	w.fetch(b, "seg-1.m4s", SourceHTTP)
}

// TestWantsLeaveNothingBehind: a want that gets no answer (the tracker is
// gone, or the answer is late) leaves no waiter behind: the peer's
// memory does not grow with unanswered wants, and a want ends at once
// when the tracker socket has.
func TestWantsLeaveNothingBehind(t *testing.T) {
	w := newWorld(t)
	p := w.join(nil)
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if peers := p.want(ctx, "seg-1.m4s"); peers != nil {
		// The answer may win the race with the cancelled context.
		t.Logf("answered before the cancel: %v", peers)
	}
	w.tracker.Close()
	<-p.trackerGone
	for i := range 20 {
		if peers := p.want(context.Background(), fmt.Sprintf("seg-%d.m4s", i)); peers != nil {
			t.Fatalf("peers %v from a closed tracker", peers)
		}
	}
	p.mu.Lock()
	n := len(p.wants)
	p.mu.Unlock()
	if n != 0 {
		t.Fatalf("%d names still have waiters", n)
	}
}

// TestFetchedBytesAreTheCallers: what a caller does with the bytes
// Fetch returned (from HTTP or from a peer) does not change what the
// peer serves others.
func TestFetchedBytesAreTheCallers(t *testing.T) {
	w := newWorld(t)
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	a := w.join(nil)
	data, from, err := a.Fetch(ctx, "seg-1.m4s")
	if err != nil || from != SourceHTTP {
		t.Fatalf("a: from %s, err %v", from, err)
	}
	clear(data) // the caller's to use (a player's buffer, say)
	if err := a.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	b := w.join(nil)
	data, from, err = b.Fetch(ctx, "seg-1.m4s")
	if err != nil || from != SourceP2P || !bytes.Equal(data, w.segments["seg-1.m4s"]) {
		t.Fatalf("b: from %s, err %v, the origin's bytes %v", from, err, bytes.Equal(data, w.segments["seg-1.m4s"]))
	}
	clear(data)
	if err := b.Sync(ctx); err != nil {
		t.Fatal(err)
	}
	// a leaves: c gets the segment from b, whose copy came from a peer.
	_ = a.Close()
	c := w.join(nil)
	w.fetch(c, "seg-1.m4s", SourceP2P)
	if s := b.Stats(); s.UploadedBytes != 100<<10 {
		t.Fatalf("b's stats %+v: c's segment did not come from b", s)
	}
}

// TestGetFlood: gets that come while a link answers a big segment are
// answered in order after it (none past serveDepth), never between its
// chunks; past maxQueuedGets outstanding, the link ends.
func TestGetFlood(t *testing.T) {
	for _, tc := range []struct {
		gets  int
		ended bool
	}{{serveDepth + 14, false}, {maxQueuedGets + 10, true}} {
		t.Run(fmt.Sprint(tc.gets), func(t *testing.T) {
			w := newWorld(t)
			a := w.joinWith(Config{MaxUploadBytesPerSec: 50 << 10}) // 300 KiB: about 5 s
			w.fetch(a, "seg-2.m4s", SourceHTTP)
			b := w.join(nil)
			ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
			defer cancel()
			big := make(chan error, 1)
			go func() {
				data, from, err := b.Fetch(ctx, "seg-2.m4s")
				if err == nil && (from != SourceP2P || !bytes.Equal(data, w.segments["seg-2.m4s"])) {
					err = fmt.Errorf("b got it from %s", from)
				}
				big <- err
			}()
			waitUntil(t, "a's upload to b", func() bool { return a.Stats().UploadedBytes > 0 })
			b.mu.Lock()
			l := b.links[a.ID()]
			b.mu.Unlock()
			if l == nil {
				t.Fatal("b has no link to a")
			}
			// a does not hold seg-1: each get is answered none.
			errs := make(chan error, tc.gets)
			for range tc.gets {
				go func() {
					_, err := l.request(ctx, "seg-1.m4s", 100<<10)
					errs <- err
				}()
			}
			for range tc.gets {
				err := <-errs
				if tc.ended && (err == nil || errors.Is(err, errNotHeld)) {
					t.Fatalf("a get of a flood: %v, want the link ended", err)
				}
				if !tc.ended && !errors.Is(err, errNotHeld) {
					t.Fatalf("a get: %v, want none", err)
				}
			}
			err := <-big
			if tc.ended {
				waitUntil(t, "a's link to b ended", func() bool {
					a.mu.Lock()
					defer a.mu.Unlock()
					return a.links[b.ID()] == nil
				})
				return
			}
			if err != nil {
				t.Fatalf("the big answer: %v", err)
			}
			if s := a.Stats(); s.UploadedBytes != 300<<10 {
				t.Fatalf("a's stats %+v", s)
			}
		})
	}
}

// TestStalledReaderLosesItsLink: a peer that asks for a segment and then
// reads nothing (its receive window closes, the answer cannot drain)
// loses its link after stallAfter, and the upload slot it held
// (MaxUploads, 1) serves the next peer.
func TestStalledReaderLosesItsLink(t *testing.T) {
	w := newWorld(t)
	a := w.join(nil)
	a.mu.Lock()
	a.stallAfter = 500 * time.Millisecond
	a.mu.Unlock()
	for _, name := range []string{"big.m4s", "seg-1.m4s", "seg-2.m4s"} {
		w.fetch(a, name, SourceHTTP)
	}
	b := w.join(nil)
	w.fetch(b, "seg-1.m4s", SourceP2P) // b's link to a is open
	b.mu.Lock()
	l := b.links[a.ID()]
	b.mu.Unlock()
	if l == nil {
		t.Fatal("b has no link to a")
	}
	l.mu.Lock()
	dc := l.dc
	l.mu.Unlock()
	// From now on b reads nothing: its channel's handler blocks (until
	// the test ends, before the peers close).
	release := make(chan struct{})
	t.Cleanup(func() { close(release) })
	dc.OnMessage(func(webrtc.DataChannelMessage) { <-release })
	if err := l.sendText(dcMsg{Type: "get", ID: 1000, Segment: "big.m4s"}); err != nil {
		t.Fatal(err)
	}
	waitUntil(t, "a serving b the big segment", func() bool { return a.Stats().UploadedBytes > 0 })
	waitUntil(t, "a's link to the stalled b to end", func() bool {
		a.mu.Lock()
		defer a.mu.Unlock()
		return a.links[b.ID()] == nil
	})
	if up := a.Stats().UploadedBytes; up >= int64(len(w.segments["big.m4s"])) {
		t.Fatalf("a uploaded %d bytes to a peer that read nothing", up)
	}
	// a's one upload slot is free: c gets seg-2 (only a holds it) from a.
	c := w.join(nil)
	w.fetch(c, "seg-2.m4s", SourceP2P)
}

// deadOffer is a data-channel offer whose connection is closed: whoever
// answers it never connects.
func deadOffer(t *testing.T) []byte {
	t.Helper()
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(true)
	pc, err := webrtc.NewAPI(webrtc.WithSettingEngine(se)).NewPeerConnection(webrtc.Configuration{})
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if _, err := pc.CreateDataChannel(Label, nil); err != nil {
		t.Fatal(err)
	}
	o, err := pc.CreateOffer(nil)
	if err != nil {
		t.Fatal(err)
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(o); err != nil {
		t.Fatal(err)
	}
	<-gathered
	b, err := json.Marshal(pc.LocalDescription())
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// TestOffersThatNeverConnect: offers from strangers that never connect
// (renewed as fast as they are dropped, they would hold every place)
// take at most half of a peer's places: its own link to a holder opens.
func TestOffersThatNeverConnect(t *testing.T) {
	w := newWorld(t)
	b := w.join(nil)
	w.fetch(b, "seg-1.m4s", SourceHTTP)
	a := w.joinWith(Config{MaxPeers: 2})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	offer := deadOffer(t)
	for range 2 {
		s := w.join(nil)
		if err := s.send(trackerSignal(a.ID(), offer)); err != nil {
			t.Fatal(err)
		}
		// The tracker passed the offer on to a before s's pong, and a
		// handled it before its own pong.
		if err := s.Sync(ctx); err != nil {
			t.Fatal(err)
		}
		if err := a.Sync(ctx); err != nil {
			t.Fatal(err)
		}
	}
	a.mu.Lock()
	n := len(a.links)
	a.mu.Unlock()
	if n != 1 {
		t.Fatalf("a answered %d offers that never connect, want 1 (half its places)", n)
	}
	w.fetch(a, "seg-1.m4s", SourceP2P)
}

// TestLinkClosedAfterClose: a link closed once Close is at its Wait (a
// victim of eviction closed after unlocking, say) closes its connection
// before close returns, not in a goroutine that Close no longer waits for.
func TestLinkClosedAfterClose(t *testing.T) {
	w := newWorld(t)
	p := w.join(nil)
	l := p.newLink("late", true)
	pc, err := l.newPC()
	if err != nil {
		t.Fatal(err)
	}
	l.mu.Lock()
	l.pc = pc
	l.mu.Unlock()
	if err := p.Close(); err != nil {
		t.Fatal(err)
	}
	l.close()
	if s := pc.ConnectionState(); s != webrtc.PeerConnectionStateClosed {
		t.Fatalf("the late link's connection is %s after close returned, want closed", s)
	}
}

// FuzzDCMessage: whatever a remote peer sends as a text message, the parser
// never panics, and what it accepts is a get of a valid name, a data or a
// none, within 1 KiB.
func FuzzDCMessage(f *testing.F) {
	for _, s := range []string{
		`{"type":"get","id":1,"segment":"s-1-0.m4s"}`,
		`{"type":"data","id":1,"size":300000}`,
		`{"type":"none","id":7}`,
		`{"type":"get","id":1,"segment":"../x"}`,
		`{"type":"data","id":1,"size":-1}`,
		`{"type":"hello"}`,
		`[]`, `{"id":18446744073709551615}`, ``,
	} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseDCMsg(b)
		if err != nil {
			return
		}
		if len(b) > maxDCText {
			t.Fatalf("accepted %d bytes", len(b))
		}
		switch m.Type {
		case "get":
			if !validName(m.Segment) {
				t.Fatalf("accepted a get of %q", m.Segment)
			}
		case "data", "none":
		default:
			t.Fatalf("accepted type %q", m.Type)
		}
	})
}
