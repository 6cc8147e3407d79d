package app

import (
	"fmt"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/routing"
)

// A node's per-stream series are its top 20 streams plus "_other", ids only;
// a node silent for five minutes loses every series.
func TestNodeMetricsAreBounded(t *testing.T) {
	t.Parallel()
	reg := prometheus.NewRegistry()
	m := newNodeMetrics(reg)
	clock := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	m.now = func() time.Time { return clock }
	streams := map[string]int64{"../x": 1, "NOT AN ID": 2}
	for i := range 1000 {
		streams[fmt.Sprintf("stream%04d", i)] = int64(i)
	}
	m.heartbeat(routing.Node{ID: "edgeone", Region: "eu"}, routing.NodeLoad{BytesServed: 10, StreamBytes: streams})
	if n := testutil.CollectAndCount(m.streamBytes); n != maxNodeStreams+1 {
		t.Fatalf("%d stream series for one node, want %d", n, maxNodeStreams+1)
	}
	if got := testutil.ToFloat64(m.streamBytes.WithLabelValues("edgeone", "stream0999")); got != 999 {
		t.Errorf("the top stream: %v", got)
	}
	var rest int64
	for i := range 1000 - maxNodeStreams {
		rest += int64(i)
	}
	if got := testutil.ToFloat64(m.streamBytes.WithLabelValues("edgeone", otherStreams)); got != float64(rest) {
		t.Errorf("_other = %v, want %d", got, rest)
	}
	// A heartbeat with fewer streams drops the ones gone.
	m.heartbeat(routing.Node{ID: "edgeone", Region: "eu"}, routing.NodeLoad{StreamBytes: map[string]int64{"abc": 5}})
	if n := testutil.CollectAndCount(m.streamBytes); n != 1 {
		t.Fatalf("%d stream series after the node reported one stream", n)
	}
	// Another node reports six minutes later: the first one is gone.
	clock = clock.Add(6 * time.Minute)
	m.heartbeat(routing.Node{ID: "edgetwo", Region: "us"}, routing.NodeLoad{StreamBytes: map[string]int64{"def": 7}})
	if n := testutil.CollectAndCount(m.served); n != 1 {
		t.Errorf("%d bytes-served series, want only edgetwo's", n)
	}
	if n := testutil.CollectAndCount(m.streamBytes); n != 1 {
		t.Errorf("%d stream series, want only edgetwo's", n)
	}
}
