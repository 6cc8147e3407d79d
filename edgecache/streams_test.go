package edgecache

import (
	"fmt"
	"net/http"
	"testing"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/packager/origin"
)

// The per-stream table stays bounded however many streams pass: the least
// served are forgotten first, streams with an invalidation's state last;
// the total of bytes served stays exact, and the streams that served the
// most keep their figures.
func TestStreamTableBounded(t *testing.T) {
	t.Parallel()
	if maxStreams > 10_000 {
		t.Fatalf("maxStreams %d: a heartbeat walks the table, keep it at 10,000 or fewer", maxStreams)
	}
	o := newFakeOrigin(t)
	hot := map[string][]byte{"/hls/hot1/source/seg-0.m4s": segment(3000, 1), "/hls/hot2/source/seg-0.m4s": segment(2000, 2)}
	for p, b := range hot {
		o.put(p, b, origin.CacheImmutable)
	}
	reg := prometheus.NewRegistry()
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { d.Registerer = reg })
	c := e.c
	var total int64
	serve := func() {
		for p, b := range hot {
			wantBody(t, get(t, e.url+p), b)
			total += int64(len(b))
		}
	}
	serve()
	e.idle(t)
	c.Invalidate([]Invalidation{{ID: "gone", Deleted: true}, {ID: "locked", Signed: true}})

	// Many streams that served nothing (refused viewers, 404s) pass.
	for i := range maxStreams + 3*evictStreams {
		c.stream(fmt.Sprintf("cold%06d", i))
		if i%997 == 0 {
			serve()
		}
	}
	c.streamMu.Lock()
	n := len(c.streams)
	_, gone := c.streams["gone"]
	_, locked := c.streams["locked"]
	c.streamMu.Unlock()
	if n > maxStreams {
		t.Fatalf("%d streams tracked, more than %d", n, maxStreams)
	}
	if !gone || !locked || !c.stream("gone").deleted.Load() || c.stream("locked").forced.Load() != policySigned {
		t.Fatalf("invalidated streams forgotten: gone %v, locked %v", gone, locked)
	}
	if got := promtest.ToFloat64(c.m.streamsEvicted); got < float64(3*evictStreams) {
		t.Fatalf("shoal_edge_streams_evicted_total = %v, want at least %d", got, 3*evictStreams)
	}
	s := c.Stats()
	if s.TotalBytesServed != total {
		t.Fatalf("TotalBytesServed %d, want %d", s.TotalBytesServed, total)
	}
	for p, b := range hot {
		id := p[len("/hls/") : len(p)-len("/source/seg-0.m4s")]
		if want := total / 5000 * int64(len(b)); s.BytesServed[id] != want {
			t.Errorf("%s served %d bytes, Stats says %d", id, want, s.BytesServed[id])
		}
	}
	if a := get(t, e.url+"/hls/gone/source/seg-0.m4s"); a.code != http.StatusNotFound {
		t.Fatalf("a deleted stream after evictions: %d", a.code)
	}
}
