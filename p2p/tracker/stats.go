package tracker

import (
	"math"
	"sort"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// Bytes is what the peers of one stream or video reported downloading, by
// source.
type Bytes struct {
	HTTP uint64 `json:"http"`
	P2P  uint64 `json:"p2p"`
}

// Add returns b + o, each saturated at MaxStatBytes.
func (b Bytes) Add(o Bytes) Bytes {
	return Bytes{HTTP: min(b.HTTP+o.HTTP, MaxStatBytes), P2P: min(b.P2P+o.P2P, MaxStatBytes)}
}

// Total is HTTP + P2P.
func (b Bytes) Total() uint64 { return b.HTTP + b.P2P }

// DefaultMaxStatsRate is how many bytes a second one socket's stats may
// add (HTTP and P2P together): a player downloading faster than 1 GiB/s
// is not a player.
const DefaultMaxStatsRate = 1 << 30

// statsState is a socket's stats budget; guarded by Tracker.mu.
type statsState struct {
	budget float64   // bytes its next report may add
	at     time.Time // when budget was last refilled
	init   bool
}

// countStats takes a stats message of c: the growth of its cumulative
// counts since its last report, clamped to what a player can download in
// the time since (Config.MaxStatsRate, with a burst of one second's
// worth), is added to the swarm's totals, the metrics and the deltas
// TakeStats hands out. Viewers' figures are claims: clamping bounds what
// one socket can make up, it does not make them true. False: the socket
// was closed (counts that decreased).
func (t *Tracker) countStats(c *conn, m Message) bool {
	sw := c.sw
	t.mu.Lock()
	if *m.HTTP < c.httpBytes || *m.P2P < c.p2pBytes {
		t.mu.Unlock()
		t.violation(c, "stats are cumulative: they never decrease", "message")
		return false
	}
	dh, dp := *m.HTTP-c.httpBytes, *m.P2P-c.p2pBytes
	c.httpBytes, c.p2pBytes = *m.HTTP, *m.P2P
	dh, dp, clamped := c.stats.clamp(dh, dp, t.cfg.Now(), float64(t.maxStatsRate()))
	sw.httpBytes += dh
	sw.p2pBytes += dp
	if dh+dp > 0 {
		t.addPendingLocked(c.mediaID, Bytes{HTTP: dh, P2P: dp})
	}
	t.mu.Unlock()
	if clamped {
		t.statsRefused.WithLabelValues("clamped").Inc()
	}
	t.bytes.WithLabelValues("http").Add(float64(dh))
	t.bytes.WithLabelValues("p2p").Add(float64(dp))
	return true
}

func (t *Tracker) maxStatsRate() int64 {
	if t.cfg.MaxStatsRate > 0 {
		return t.cfg.MaxStatsRate
	}
	return DefaultMaxStatsRate
}

// clamp refills the budget for the time since the last report (at most
// one second's worth is kept) and scales dh and dp down together, so their
// ratio is kept, when they exceed it.
func (s *statsState) clamp(dh, dp uint64, now time.Time, rate float64) (uint64, uint64, bool) {
	if !s.init {
		s.init, s.budget, s.at = true, rate, now
	} else if d := now.Sub(s.at); d > 0 {
		s.budget = math.Min(rate, s.budget+d.Seconds()*rate)
		s.at = now
	}
	total := float64(dh) + float64(dp)
	if total <= s.budget {
		s.budget -= total
		return dh, dp, false
	}
	keep := uint64(s.budget)
	h := uint64(float64(keep) * (float64(dh) / total))
	h = min(h, keep, dh)
	p := min(keep-h, dp)
	s.budget = 0
	return h, p, true
}

// addPendingLocked adds b to the deltas of media id; under t.mu. The map
// holds at most MaxSwarms ids: beyond, a new id's bytes are dropped (and
// counted in shoal_p2p_stats_refused_total{reason="dropped"}).
func (t *Tracker) addPendingLocked(id string, b Bytes) {
	if t.pending == nil {
		t.pending = map[string]Bytes{}
	}
	cur, ok := t.pending[id]
	if !ok && len(t.pending) >= t.cfg.MaxSwarms {
		t.statsRefused.WithLabelValues("dropped").Inc()
		return
	}
	t.pending[id] = cur.Add(b)
}

// TakeStats returns the bytes the peers reported since the last
// TakeStats, per stream or video id (the renditions of one summed), and
// starts over. It holds at most Config.MaxSwarms ids. What the peers
// report is not verified: a player may lie within the rate clamp.
func (t *Tracker) TakeStats() map[string]Bytes {
	t.mu.Lock()
	defer t.mu.Unlock()
	out := t.pending
	t.pending = nil
	if out == nil {
		out = map[string]Bytes{}
	}
	return out
}

// TopStats splits deltas into the n ids with the most bytes (ties by id)
// and the rest.
func TopStats(deltas map[string]Bytes, n int) (top, rest map[string]Bytes) {
	if len(deltas) <= n {
		return deltas, nil
	}
	keys := make([]string, 0, len(deltas))
	for k := range deltas {
		keys = append(keys, k)
	}
	sort.Slice(keys, func(i, j int) bool {
		a, b := deltas[keys[i]].Total(), deltas[keys[j]].Total()
		if a != b {
			return a > b
		}
		return keys[i] < keys[j]
	})
	top, rest = make(map[string]Bytes, n), make(map[string]Bytes, len(keys)-n)
	for i, k := range keys {
		if i < n {
			top[k] = deltas[k]
		} else {
			rest[k] = deltas[k]
		}
	}
	return top, rest
}

func newStatsRefused() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_p2p_stats_refused_total",
		Help: "Peers' stats reports cut down: clamped to the most a player can download in the time since its last report, or dropped because the tracker already holds deltas of MaxSwarms ids."},
		[]string{"reason"})
	v.WithLabelValues("clamped")
	v.WithLabelValues("dropped")
	return v
}
