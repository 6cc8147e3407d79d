package tracker

import (
	"fmt"
	"maps"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func u64(v uint64) *uint64 { return &v }

// TestTakeStats: the deltas are per stream or video (renditions summed),
// since the last take, and a take starts over.
func TestTakeStats(t *testing.T) {
	e := newEnv(t, Config{})
	a, b, c := e.dial("stream1/720p"), e.dial("stream1/360p"), e.dial("video2/720p")
	e.clock.Add(time.Second) // the sockets' stats budgets fill from their joins
	if got := e.tr.TakeStats(); len(got) != 0 {
		t.Fatalf("deltas before any stats: %v", got)
	}
	a.send(Message{Type: TypeStats, HTTP: u64(100), P2P: u64(50)})
	a.send(Message{Type: TypeStats, HTTP: u64(150), P2P: u64(300)})
	b.send(Message{Type: TypeStats, HTTP: u64(10), P2P: u64(0)})
	c.send(Message{Type: TypeStats, HTTP: u64(0), P2P: u64(7)})
	a.sync()
	b.sync()
	c.sync()
	want := map[string]Bytes{"stream1": {HTTP: 160, P2P: 300}, "video2": {HTTP: 0, P2P: 7}}
	if got := e.tr.TakeStats(); !maps.Equal(got, want) {
		t.Fatalf("TakeStats = %v, want %v", got, want)
	}
	if got := e.tr.TakeStats(); len(got) != 0 {
		t.Fatalf("second take = %v, want nothing new", got)
	}
	// Only the growth of the cumulative counts counts; a report without
	// growth adds no entry.
	a.send(Message{Type: TypeStats, HTTP: u64(150), P2P: u64(300)})
	a.send(Message{Type: TypeStats, HTTP: u64(151), P2P: u64(305)})
	c.send(Message{Type: TypeStats, HTTP: u64(0), P2P: u64(7)})
	a.sync()
	c.sync()
	want = map[string]Bytes{"stream1": {HTTP: 1, P2P: 5}}
	if got := e.tr.TakeStats(); !maps.Equal(got, want) {
		t.Fatalf("TakeStats = %v, want %v", got, want)
	}
	// Deltas outlive the swarm: a viewer that reports and leaves is
	// still counted.
	c.send(Message{Type: TypeStats, HTTP: u64(3), P2P: u64(7)})
	c.sync()
	_ = c.ws.CloseNow()
	waitUntil(t, "video2's swarm to end", func() bool { n, _, _ := e.tr.SwarmStats("video2/720p"); return n == 0 })
	want = map[string]Bytes{"video2": {HTTP: 3}}
	if got := e.tr.TakeStats(); !maps.Equal(got, want) {
		t.Fatalf("TakeStats = %v, want %v", got, want)
	}
}

// TestStatsClamped: one socket adds at most MaxStatsRate bytes a second
// from its join on (at most one second's worth saved up), by the injected
// clock; what is over is dropped, not carried, and HTTP and P2P are cut
// in proportion. Reconnecting gains nothing.
func TestStatsClamped(t *testing.T) {
	e := newEnv(t, Config{MaxStatsRate: 1000})
	const sw = "stream1/720p"
	// A socket that reports at once has nothing to add yet, however often
	// it reconnects.
	for range 3 {
		r := e.dial(sw)
		r.send(Message{Type: TypeStats, HTTP: u64(0), P2P: u64(1000)})
		r.sync()
		if got := e.tr.TakeStats(); len(got) != 0 {
			t.Fatalf("a report right after the join: %v, want nothing", got)
		}
		_ = r.ws.CloseNow()
		waitUntil(t, "the socket to leave", func() bool { n, _, _ := e.tr.SwarmStats(sw); return n == 0 })
	}
	if got := testutil.ToFloat64(e.tr.statsRefused.WithLabelValues("clamped")); got != 3 {
		t.Fatalf("shoal_p2p_stats_refused_total{clamped} = %v, want 3", got)
	}
	a := e.dial(sw)
	e.clock.Add(time.Second)
	// A second's worth passes.
	a.send(Message{Type: TypeStats, HTTP: u64(600), P2P: u64(400)})
	a.sync()
	if got := e.tr.TakeStats()["stream1"]; got != (Bytes{HTTP: 600, P2P: 400}) {
		t.Fatalf("within the burst: %v", got)
	}
	// No time passed: nothing more may be added.
	a.send(Message{Type: TypeStats, HTTP: u64(700), P2P: u64(400)})
	a.sync()
	if got := e.tr.TakeStats(); len(got) != 0 {
		t.Fatalf("over the budget with no time passed: %v, want nothing", got)
	}
	// Half a second: 500 bytes, HTTP and P2P cut in proportion (1:3 of
	// 8000 claimed).
	e.clock.Add(500 * time.Millisecond)
	a.send(Message{Type: TypeStats, HTTP: u64(2700), P2P: u64(6400)})
	a.sync()
	if got := e.tr.TakeStats()["stream1"]; got != (Bytes{HTTP: 125, P2P: 375}) {
		t.Fatalf("clamped to half a second: %v, want {125 375}", got)
	}
	// The excess was not carried: an hour later, only the new growth.
	e.clock.Add(time.Hour)
	a.send(Message{Type: TypeStats, HTTP: u64(2710), P2P: u64(6400)})
	a.sync()
	if got := e.tr.TakeStats()["stream1"]; got != (Bytes{HTTP: 10}) {
		t.Fatalf("after an hour: %v, want {10 0}", got)
	}
	// The budget refills up to one second's worth, not an hour's.
	a.send(Message{Type: TypeStats, HTTP: u64(1_002_710), P2P: u64(6400)})
	a.sync()
	if got := e.tr.TakeStats()["stream1"]; got != (Bytes{HTTP: 990}) {
		t.Fatalf("after an idle hour: %v, want {990 0} (one second's worth less the 10 already taken)", got)
	}
	if n, h, p := e.tr.SwarmStats(sw); n != 1 || h != 600+125+10+990 || p != 400+375 {
		t.Fatalf("swarm stats %d %d %d", n, h, p)
	}
	if h, p := testutil.ToFloat64(e.tr.bytes.WithLabelValues("http")), testutil.ToFloat64(e.tr.bytes.WithLabelValues("p2p")); h != 1725 || p != 775 {
		t.Fatalf("shoal_p2p_bytes_total http=%v p2p=%v, want the clamped figures", h, p)
	}
	if got := testutil.ToFloat64(e.tr.statsRefused.WithLabelValues("clamped")); got != 6 {
		t.Fatalf("shoal_p2p_stats_refused_total{clamped} = %v, want 6", got)
	}
	// Sockets have budgets of their own.
	b := e.dial(sw)
	e.clock.Add(time.Second)
	b.send(Message{Type: TypeStats, HTTP: u64(1000), P2P: u64(0)})
	b.sync()
	if got := e.tr.TakeStats()["stream1"]; got != (Bytes{HTTP: 1000}) {
		t.Fatalf("another socket: %v", got)
	}
}

// TestTakeStatsBounded: the deltas hold at most MaxSwarms ids; a new id
// beyond is dropped and counted, ids already held keep growing.
func TestTakeStatsBounded(t *testing.T) {
	e := newEnv(t, Config{MaxSwarms: 2})
	a := e.dial("stream1/720p")
	b := e.dial("stream2/720p")
	e.clock.Add(time.Second)
	a.send(Message{Type: TypeStats, HTTP: u64(1), P2P: u64(0)})
	b.send(Message{Type: TypeStats, HTTP: u64(2), P2P: u64(0)})
	a.sync()
	b.sync()
	_ = b.ws.CloseNow()
	waitUntil(t, "stream2's swarm to end", func() bool { n, _, _ := e.tr.SwarmStats("stream2/720p"); return n == 0 })
	c := e.dial("stream3/720p")
	e.clock.Add(time.Second)
	c.send(Message{Type: TypeStats, HTTP: u64(3), P2P: u64(0)})
	c.sync()
	a.send(Message{Type: TypeStats, HTTP: u64(5), P2P: u64(0)})
	a.sync()
	want := map[string]Bytes{"stream1": {HTTP: 5}, "stream2": {HTTP: 2}}
	if got := e.tr.TakeStats(); !maps.Equal(got, want) {
		t.Fatalf("TakeStats = %v, want %v", got, want)
	}
	if got := testutil.ToFloat64(e.tr.statsRefused.WithLabelValues("dropped")); got != 1 {
		t.Fatalf("shoal_p2p_stats_refused_total{dropped} = %v, want 1", got)
	}
	c.send(Message{Type: TypeStats, HTTP: u64(4), P2P: u64(0)})
	c.sync()
	if got := e.tr.TakeStats(); !maps.Equal(got, map[string]Bytes{"stream3": {HTTP: 1}}) {
		t.Fatalf("after the take: %v", got)
	}
}

func TestTopStats(t *testing.T) {
	d := map[string]Bytes{}
	for i := range 10 {
		d[fmt.Sprintf("s%d", i)] = Bytes{HTTP: uint64(i), P2P: uint64(i)}
	}
	top, rest := TopStats(d, 3)
	if !maps.Equal(top, map[string]Bytes{"s9": d["s9"], "s8": d["s8"], "s7": d["s7"]}) || len(rest) != 7 || rest["s6"] != d["s6"] || rest["s0"] != d["s0"] {
		t.Fatalf("top %v rest %v", top, rest)
	}
	if top, rest := TopStats(d, 10); len(top) != 10 || rest != nil {
		t.Fatalf("all fit: top %d rest %v", len(top), rest)
	}
}
