package playerapi

import (
	"context"
	"fmt"
	"regexp"

	"github.com/gin-gonic/gin"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// P2PStatsStore keeps the bytes players reported through the P2P
// trackers, per live stream or video.
type P2PStatsStore interface {
	AddP2PStats(ctx context.Context, source, batch string, deltas map[string]routing.P2PBytes) (routing.P2PBytes, bool, error)
	P2PStats(ctx context.Context, idList []string) (map[string]routing.P2PBytes, error)
}

// p2pStatsJSON is the "p2p_stats" of a live stream or video: the bytes
// its players reported downloading over HTTP and from other peers, summed
// over every node's tracker, and the share from peers.
type p2pStatsJSON struct {
	HTTPBytes int64   `json:"http_bytes"`
	P2PBytes  int64   `json:"p2p_bytes"`
	Offload   float64 `json:"offload"`
}

func p2pStatsOf(b routing.P2PBytes) *p2pStatsJSON {
	return &p2pStatsJSON{HTTPBytes: b.HTTP, P2PBytes: b.P2P, Offload: b.Offload()}
}

// p2pStats reads the P2P stats of idList; on failure it has answered.
func (a *API) p2pStats(c *gin.Context, idList []string, notFound string) (map[string]routing.P2PBytes, bool) {
	st, err := a.store.P2PStats(c.Request.Context(), idList)
	if err != nil {
		a.fail(c, err, notFound)
		return nil, false
	}
	return st, true
}

func newP2PReported() *prometheus.CounterVec {
	v := prometheus.NewCounterVec(prometheus.CounterOpts{
		Name: "shoal_p2p_reported_bytes_total",
		Help: "Media bytes players reported downloading through the P2P trackers of the whole network (edges' heartbeats and this origin's own tracker), as this origin added them to the live streams' and videos' p2p_stats, by source (http or p2p).",
	}, []string{"source"})
	v.WithLabelValues("http")
	v.WithLabelValues("p2p")
	return v
}

// RecordP2PStats adds a batch of per-id P2P stats reported through the
// tracker of source (a node id, or an origin's own name): once per batch
// name (see routing.Store.AddP2PStats), only for live streams and videos
// that exist, and counted in shoal_p2p_reported_bytes_total.
func (a *API) RecordP2PStats(ctx context.Context, source, batch string, deltas map[string]routing.P2PBytes) error {
	added, _, err := a.store.AddP2PStats(ctx, source, batch, deltas)
	if err != nil {
		return err
	}
	a.p2pReported.WithLabelValues("http").Add(float64(added.HTTP))
	a.p2pReported.WithLabelValues("p2p").Add(float64(added.P2P))
	return nil
}

// batchRe is the shape of a heartbeat's p2p_batch.
var batchRe = regexp.MustCompile(`^[A-Za-z0-9_-]{1,64}$`)

// checkP2PStats validates a heartbeat's P2P stats: at most
// nodeproto.MaxP2PStreams ids, each a valid id, counts between 0 and
// maxCount, and a batch name when there are any.
func checkP2PStats(hb nodeproto.Heartbeat) string {
	if len(hb.P2PStreamBytes) == 0 {
		if hb.P2PBatch != "" && !batchRe.MatchString(hb.P2PBatch) {
			return `"p2p_batch" must be 1 to 64 characters of [A-Za-z0-9_-]`
		}
		return ""
	}
	if len(hb.P2PStreamBytes) > nodeproto.MaxP2PStreams {
		return fmt.Sprintf(`"p2p_stream_bytes" may hold at most %d ids (the biggest; send the rest with the next heartbeat), got %d`,
			nodeproto.MaxP2PStreams, len(hb.P2PStreamBytes))
	}
	if !batchRe.MatchString(hb.P2PBatch) {
		return `"p2p_batch" (1 to 64 characters of [A-Za-z0-9_-]) is required with "p2p_stream_bytes"`
	}
	for k, v := range hb.P2PStreamBytes {
		if !ids.Valid(k) {
			return fmt.Sprintf(`"p2p_stream_bytes" has %q, not a live stream or video id`, clipString(k, 40))
		}
		if v.HTTP < 0 || v.HTTP > maxCount || v.P2P < 0 || v.P2P > maxCount {
			return fmt.Sprintf(`"p2p_stream_bytes" of %q: "http" and "p2p" must be between 0 and %d`, k, int64(maxCount))
		}
	}
	return ""
}

// p2pDeltas converts a heartbeat's P2P stats for the store.
func p2pDeltas(in map[string]nodeproto.P2PBytes) map[string]routing.P2PBytes {
	out := make(map[string]routing.P2PBytes, len(in))
	for k, v := range in {
		out[k] = routing.P2PBytes{HTTP: v.HTTP, P2P: v.P2P}
	}
	return out
}
