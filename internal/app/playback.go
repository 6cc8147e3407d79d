package app

import (
	"cmp"
	"context"
	"errors"
	"net/http"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/packager/origin"
)

// policyCache answers "does id need a playback token?" for the origin's HLS
// handler from Redis, asking again after a few seconds. When Redis cannot
// tell, the last known answer stands (streams this node ingests are known
// from their start, see remember), or the policy kept on disk (below), or
// "signed" when there is none: it fails closed. A failed lookup is not retried for the TTL, so an outage
// does not slow every request down.
//
// Every policy Redis tells is also kept on disk (dir/<id>: "signed" or
// "public"), so that files whose record Redis lost (restarted empty) are
// served as they were: public ones stay playable, signed ones still need
// a token; an id with neither a record nor a kept policy needs one too.
type policyCache struct {
	store *routing.Store
	ttl   time.Duration
	dir   string // kept policies; "" keeps none

	mu      sync.Mutex
	entries map[string]policyEntry
	kept    map[string]bool // the policies on disk this process wrote or read: id -> signed
}

type policyEntry struct {
	signed bool
	// unknown: the id was deleted (a tombstone): its files are not
	// served.
	unknown bool
	// p2pOff: peer-assisted delivery is turned off for the id (not kept
	// on disk: without a record, P2P is on, and segments are verified
	// all the same).
	p2pOff bool
	at     time.Time
}

const maxPolicyEntries = 100_000

func newPolicyCache(store *routing.Store, dir string) *policyCache {
	return &policyCache{store: store, ttl: 3 * time.Second, dir: dir, entries: map[string]policyEntry{}, kept: map[string]bool{}}
}

const (
	keptSigned = "signed"
	keptPublic = "public"
)

// keep writes id's policy to disk if it is not there already.
func (p *policyCache) keep(id string, signed bool) {
	if p.dir == "" || !ids.Valid(id) {
		return
	}
	p.mu.Lock()
	was, ok := p.kept[id]
	p.mu.Unlock()
	if ok && was == signed {
		return
	}
	val := keptPublic
	if signed {
		val = keptSigned
	}
	path := filepath.Join(p.dir, id)
	if b, err := os.ReadFile(path); err != nil || string(b) != val {
		if err := os.MkdirAll(p.dir, 0o755); err != nil {
			return
		}
		// A temporary file of its own: lookups of one id may run at once.
		f, err := os.CreateTemp(p.dir, id+".*.tmp")
		if err != nil {
			return
		}
		_, err = f.WriteString(val)
		if cerr := f.Close(); err == nil {
			err = cerr
		}
		if err == nil {
			err = os.Rename(f.Name(), path)
		}
		if err != nil {
			_ = os.Remove(f.Name())
			return
		}
	}
	p.mu.Lock()
	if len(p.kept) >= maxPolicyEntries {
		clear(p.kept)
	}
	p.kept[id] = signed
	p.mu.Unlock()
}

// keptPolicy is id's policy as kept on disk: signed unless it was kept as
// public (fail closed).
func (p *policyCache) keptPolicy(id string) (signed bool) {
	if p.dir == "" || !ids.Valid(id) {
		return true
	}
	b, err := os.ReadFile(filepath.Join(p.dir, id))
	return err != nil || string(b) != keptPublic
}

// forget removes id's kept policy (the id was deleted).
func (p *policyCache) forget(id string) {
	if p.dir == "" || !ids.Valid(id) {
		return
	}
	_ = os.Remove(filepath.Join(p.dir, id))
	p.mu.Lock()
	delete(p.kept, id)
	p.mu.Unlock()
}

func (p *policyCache) signed(id string) bool {
	return p.entry(id).signed
}

// p2pOff reports whether peer-assisted delivery is turned off for id.
func (p *policyCache) p2pOff(id string) bool {
	return p.entry(id).p2pOff
}

// known reports whether id is a live stream or a video; when Redis cannot
// tell, it is taken as known (the files are served, under the policy above).
func (p *policyCache) known(id string) bool {
	return !p.entry(id).unknown
}

func (p *policyCache) entry(id string) policyEntry {
	p.mu.Lock()
	e, ok := p.entries[id]
	p.mu.Unlock()
	if ok && time.Since(e.at) < p.ttl {
		return e
	}
	got, err := p.lookup(id)
	if err != nil {
		// Redis can't tell: the last answer, or the policy kept on disk.
		got = e
		if !ok {
			got = policyEntry{signed: p.keptPolicy(id)}
		}
	}
	return p.put(id, got)
}

// remember records the policy of id (known from elsewhere, e.g. a live
// stream starting on this node).
func (p *policyCache) remember(ls routing.LiveStream) {
	signed := ls.PlaybackPolicy == routing.PlaybackSigned
	p.put(ls.ID, policyEntry{signed: signed, p2pOff: ls.P2POff})
	p.keep(ls.ID, signed)
}

func (p *policyCache) put(id string, e policyEntry) policyEntry {
	p.mu.Lock()
	defer p.mu.Unlock()
	if len(p.entries) >= maxPolicyEntries {
		clear(p.entries)
	}
	e.at = time.Now()
	p.entries[id] = e
	return e
}

// lookup asks Redis whether id is signed, whether it exists at all and
// whether P2P is off for it.
func (p *policyCache) lookup(id string) (policyEntry, error) {
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	ls, err := p.store.GetLiveStream(ctx, id)
	if err == nil {
		signed := ls.PlaybackPolicy == routing.PlaybackSigned
		p.keep(id, signed)
		return policyEntry{signed: signed, p2pOff: ls.P2POff}, nil
	}
	if !errors.Is(err, routing.ErrNotFound) {
		return policyEntry{}, err
	}
	v, err := p.store.GetVideo(ctx, id)
	if err == nil {
		signed := v.PlaybackPolicy == routing.PlaybackSigned
		p.keep(id, signed)
		return policyEntry{signed: signed, p2pOff: v.P2POff}, nil
	}
	if !errors.Is(err, routing.ErrNotFound) {
		return policyEntry{}, err
	}
	// No record: a deleted id's files are not served; files without a
	// record for another reason (Redis lost its data) still are, under
	// the policy kept on disk (signed when none was).
	deleted, err := p.store.WasDeleted(ctx, id)
	if err != nil {
		return policyEntry{}, err
	}
	if deleted {
		p.forget(id)
		return policyEntry{unknown: true}, nil
	}
	return policyEntry{signed: p.keptPolicy(id)}, nil
}

// nodeMetrics exports, on the origin, what every edge reports in its
// heartbeats, plus how often edges fetch each segment from the origin.
type nodeMetrics struct {
	served      *prometheus.GaugeVec
	hitRatio    *prometheus.GaugeVec
	fetches     *prometheus.GaugeVec
	streamBytes *prometheus.GaugeVec

	failures *prometheus.CounterVec

	segFetches prometheus.Counter
	segments   prometheus.Counter
	viewerSegs prometheus.Counter
	mu         sync.Mutex
	seen       map[string]struct{}

	// The per-node series are bounded: each node's streams (its top
	// maxNodeStreams by bytes, the rest summed as "_other"), and every
	// series of a node that stopped reporting is deleted.
	now     func() time.Time
	nodesMu sync.Mutex
	nodes   map[string]*nodeSeries
}

// nodeSeries is what nodeMetrics exported for one node.
type nodeSeries struct {
	region  string
	streams map[string]bool
	seen    time.Time
}

// maxNodeStreams is how many streams a node's bytes are shown for; the
// rest are summed under otherStreams.
const (
	maxNodeStreams = 20
	otherStreams   = "_other"
	// nodeSeriesTTL: a node silent this long left; its series go.
	nodeSeriesTTL = 5 * time.Minute
)

func newNodeMetrics(reg prometheus.Registerer) *nodeMetrics {
	m := &nodeMetrics{
		served: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_node_bytes_served", Help: "Bytes an edge has served to viewers since it started (from its heartbeats).",
		}, []string{"node", "region"}),
		hitRatio: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_node_cache_hit_ratio", Help: "An edge's cache hit ratio since it started (from its heartbeats).",
		}, []string{"node", "region"}),
		fetches: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_node_origin_fetches", Help: "Objects an edge has fetched from the origin since it started.",
		}, []string{"node", "region"}),
		streamBytes: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_node_stream_bytes_served", Help: "Bytes an edge has served per stream or video.",
		}, []string{"node", "stream"}),
		segFetches: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_edge_segment_fetches_total", Help: "Segment GETs edges made to this origin; divided by shoal_origin_edge_segments_total: origin fetches per segment.",
		}),
		segments: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_edge_segments_total", Help: "Distinct segments edges fetched from this origin (recently seen ones counted once).",
		}),
		failures: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_delivery_verification_failures_total",
			Help: "Objects viewers' players reported as failing verification against the signed manifests, per node that served them.",
		}, []string{"node"}),
		viewerSegs: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_origin_viewer_segment_requests_total", Help: "Segment GETs viewers made to this origin directly (not through an edge).",
		}),
		seen:  map[string]struct{}{},
		now:   time.Now,
		nodes: map[string]*nodeSeries{},
	}
	reg.MustRegister(m.served, m.hitRatio, m.fetches, m.streamBytes, m.failures, m.segFetches, m.segments, m.viewerSegs)
	return m
}

func (m *nodeMetrics) heartbeat(n routing.Node, load routing.NodeLoad) {
	now := m.now()
	m.nodesMu.Lock()
	defer m.nodesMu.Unlock()
	ns := m.nodes[n.ID]
	if ns == nil {
		ns = &nodeSeries{streams: map[string]bool{}}
		m.nodes[n.ID] = ns
	}
	if ns.region != n.Region && ns.region != "" {
		m.deleteNodeLocked(n.ID, ns, false)
	}
	ns.region, ns.seen = n.Region, now
	m.served.WithLabelValues(n.ID, n.Region).Set(float64(load.BytesServed))
	m.hitRatio.WithLabelValues(n.ID, n.Region).Set(load.HitRatio())
	m.fetches.WithLabelValues(n.ID, n.Region).Set(float64(load.OriginFetches))

	// The node's top streams by bytes, the rest summed.
	type sb struct {
		id string
		b  int64
	}
	var list []sb
	for s, b := range load.StreamBytes {
		if ids.Valid(s) {
			list = append(list, sb{s, b})
		}
	}
	slices.SortFunc(list, func(a, b sb) int {
		if a.b != b.b {
			return cmp.Compare(b.b, a.b)
		}
		return strings.Compare(a.id, b.id)
	})
	shown := map[string]bool{}
	var other int64
	for i, e := range list {
		if i < maxNodeStreams {
			shown[e.id] = true
			m.streamBytes.WithLabelValues(n.ID, e.id).Set(float64(e.b))
		} else {
			other += e.b
		}
	}
	if len(list) > maxNodeStreams {
		shown[otherStreams] = true
		m.streamBytes.WithLabelValues(n.ID, otherStreams).Set(float64(other))
	}
	for s := range ns.streams {
		if !shown[s] {
			m.streamBytes.DeleteLabelValues(n.ID, s)
		}
	}
	ns.streams = shown

	// Nodes that stopped reporting left.
	for id, other := range m.nodes {
		if now.Sub(other.seen) > nodeSeriesTTL {
			m.deleteNodeLocked(id, other, true)
		}
	}
}

// deleteNodeLocked deletes the series of node id (all, with gone; else
// those labelled with its old region).
func (m *nodeMetrics) deleteNodeLocked(id string, ns *nodeSeries, gone bool) {
	m.served.DeleteLabelValues(id, ns.region)
	m.hitRatio.DeleteLabelValues(id, ns.region)
	m.fetches.DeleteLabelValues(id, ns.region)
	if gone {
		for s := range ns.streams {
			m.streamBytes.DeleteLabelValues(id, s)
		}
		m.failures.DeleteLabelValues(id)
		delete(m.nodes, id)
	}
}

func (m *nodeMetrics) deliveryFailure(node, _ string) {
	m.failures.WithLabelValues(node).Inc()
}

// countEdgeFetches wraps the origin's HLS handler to count segment fetches
// by edges.
func (m *nodeMetrics) countEdgeFetches(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		segment := strings.HasSuffix(r.URL.Path, ".m4s") || strings.HasSuffix(r.URL.Path, ".ts")
		if r.Method == http.MethodGet && segment && r.Header.Get(origin.EdgeHeader) != "1" {
			m.viewerSegs.Inc()
		}
		if r.Method == http.MethodGet && r.Header.Get(origin.EdgeHeader) == "1" && segment {
			m.segFetches.Inc()
			m.mu.Lock()
			if _, ok := m.seen[r.URL.Path]; !ok {
				if len(m.seen) >= maxPolicyEntries {
					clear(m.seen)
				}
				m.seen[r.URL.Path] = struct{}{}
				m.segments.Inc()
			}
			m.mu.Unlock()
		}
		next.ServeHTTP(w, r)
	})
}
