package edgecache

import (
	"fmt"
	"math"

	"github.com/prometheus/client_golang/prometheus"
)

type metrics struct {
	hit, miss, collapsed, negative prometheus.Counter
	bytesServed                    prometheus.Counter
	originFetches                  prometheus.Counter
	originFailovers                prometheus.Counter
	siblingOK, siblingFailed       prometheus.Counter
	corrupt, stale, spooled        prometheus.Counter
	spoolFailed                    prometheus.Counter
	streamsEvicted                 prometheus.Counter
}

// newMetrics makes the cache's collectors and registers them on reg (when
// not nil). The hit ratio is requests_total{cache="hit"} over the sum.
func newMetrics(reg prometheus.Registerer, c *Cache) (*metrics, error) {
	requests := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_edge_requests_total",
		Help: "Requests answered by the edge cache, by outcome: hit, miss (this request fetched), collapsed (waited on another request's fetch), negative (a remembered 404).",
	}, []string{"cache"})
	bytesServed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_edge_bytes_served_total",
		Help: "Body bytes the edge cache sent to clients.",
	})
	originFetches := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_edge_origin_fetches_total",
		Help: "GET requests the edge cache sent to the origin.",
	})
	originFailovers := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_edge_origin_failovers_total",
		Help: "Requests the edge cache sent again to the next origin because the preferred one failed (a connection error, a stall, or 502/503/504).",
	})
	sibling := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_edge_sibling_fetches_total",
		Help: "Objects the edge cache fetched from a sibling edge, by outcome (failed: error, timeout, digest mismatch, or refusals in a row of objects the origin has; the origin was used).",
	}, []string{"outcome"})
	corrupt := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_edge_disk_corrupt_objects_total",
		Help: "Disk cache objects dropped because their body no longer matched the SHA-256 written with them.",
	})
	stale := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_edge_stale_served_total",
		Help: "Times the origin failed and the edge answered with its last copy instead (stale-if-error).",
	})
	spooled := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_edge_spooled_bodies_total",
		Help: "Bodies spooled to disk on their way from the origin because the memory held by misses in flight was at its cap.",
	})
	spoolFailed := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_edge_spool_failures_total",
		Help: "Bodies the disk could not take on their way from the origin (no spool file could be made, or a write to it failed): held in memory instead, past the cap on memory in flight.",
	})
	streamsEvicted := prometheus.NewCounter(prometheus.CounterOpts{
		Name: "shoal_edge_streams_evicted_total",
		Help: "Streams whose per-stream bookkeeping the edge forgot because it tracked too many at once (the least served first).",
	})
	tier := func(name string, f func() int64) prometheus.Collector {
		return prometheus.NewGaugeFunc(prometheus.GaugeOpts{
			Name:        "shoal_edge_cache_bytes",
			Help:        "Bytes held by each tier of the edge cache.",
			ConstLabels: prometheus.Labels{"tier": name},
		}, func() float64 { return float64(f()) })
	}
	if reg != nil {
		for _, col := range []prometheus.Collector{requests, bytesServed, originFetches, originFailovers, sibling, corrupt, stale, spooled, spoolFailed, streamsEvicted,
			tier("memory", c.mem.bytes), tier("disk", c.disk.bytes)} {
			if err := reg.Register(col); err != nil {
				return nil, fmt.Errorf("edgecache: registering metrics: %w", err)
			}
		}
	}
	return &metrics{
		hit:             requests.WithLabelValues("hit"),
		miss:            requests.WithLabelValues("miss"),
		collapsed:       requests.WithLabelValues("collapsed"),
		negative:        requests.WithLabelValues("negative"),
		bytesServed:     bytesServed,
		originFetches:   originFetches,
		originFailovers: originFailovers,
		siblingOK:       sibling.WithLabelValues("ok"),
		siblingFailed:   sibling.WithLabelValues("failed"),
		corrupt:         corrupt,
		stale:           stale,
		spooled:         spooled,
		spoolFailed:     spoolFailed,
		streamsEvicted:  streamsEvicted,
	}, nil
}

func (c *Cache) setEgress(v float64) { c.egress.Store(math.Float64bits(v)) }

func (c *Cache) egressRate() float64 { return math.Float64frombits(c.egress.Load()) }
