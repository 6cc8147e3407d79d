package app

import (
	"context"
	"log/slog"
	"strconv"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/p2p/tracker"
)

// p2pFlushEvery is how often an origin adds its own tracker's P2P stats
// to the live streams' and videos' counters (edges send theirs with each
// heartbeat).
const p2pFlushEvery = 10 * time.Second

// maxP2PWaiting bounds the ids whose P2P stats wait to be sent (beyond the
// nodeproto.MaxP2PStreams of a batch): a new id beyond is dropped.
const maxP2PWaiting = 10_000

// p2pBatcher turns what a tracker hands out (TakeStats) into named
// batches of at most nodeproto.MaxP2PStreams ids, the biggest first. A
// batch is offered again, under its name, until it is acknowledged, and
// the origin adds a batch once: figures are neither lost when a send
// fails nor counted twice when only its answer was lost.
type p2pBatcher struct {
	take func() map[string]tracker.Bytes

	mu sync.Mutex
	// Batches are named <boot>-<seq>: boot is random per process, seq
	// grows, so the origin adds each once even when an old one arrives
	// late (see routing.Store.AddP2PStats).
	boot    string
	seq     uint64
	name    string                   // the batch in flight; "" when none
	batch   map[string]tracker.Bytes // its figures
	waiting map[string]tracker.Bytes // taken, not in a batch yet
}

func newP2PBatcher(take func() map[string]tracker.Bytes) *p2pBatcher {
	return &p2pBatcher{take: take, waiting: map[string]tracker.Bytes{}}
}

// next returns the batch to send: the one not acknowledged yet, else a
// new one of what the tracker has (nil when there is nothing).
func (b *p2pBatcher) next() (string, map[string]tracker.Bytes) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if b.name != "" {
		return b.name, b.batch
	}
	for id, d := range b.take() {
		cur, ok := b.waiting[id]
		if !ok && len(b.waiting) >= maxP2PWaiting {
			continue
		}
		b.waiting[id] = cur.Add(d)
	}
	if len(b.waiting) == 0 {
		return "", nil
	}
	top, rest := tracker.TopStats(b.waiting, nodeproto.MaxP2PStreams)
	if rest == nil {
		rest = map[string]tracker.Bytes{}
	}
	if b.boot == "" {
		b.boot = ids.New()
	}
	b.seq++
	b.name, b.batch, b.waiting = b.boot+"-"+strconv.FormatUint(b.seq, 10), top, rest
	return b.name, b.batch
}

// ack marks batch name as added: the next batch is a new one.
func (b *p2pBatcher) ack(name string) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if name != "" && name == b.name {
		b.name, b.batch = "", nil
	}
}

// heartbeatFigures is a batch as a heartbeat carries it.
func heartbeatFigures(batch map[string]tracker.Bytes) map[string]nodeproto.P2PBytes {
	if len(batch) == 0 {
		return nil
	}
	out := make(map[string]nodeproto.P2PBytes, len(batch))
	for id, d := range batch {
		out[id] = nodeproto.P2PBytes{HTTP: int64(min(d.HTTP, tracker.MaxStatBytes)), P2P: int64(min(d.P2P, tracker.MaxStatBytes))}
	}
	return out
}

// storeFigures is a batch as the store adds it.
func storeFigures(batch map[string]tracker.Bytes) map[string]routing.P2PBytes {
	out := make(map[string]routing.P2PBytes, len(batch))
	for id, d := range batch {
		out[id] = routing.P2PBytes{HTTP: int64(min(d.HTTP, tracker.MaxStatBytes)), P2P: int64(min(d.P2P, tracker.MaxStatBytes))}
	}
	return out
}

// runP2PStats adds an origin's own tracker's P2P stats at every tick
// (and once more when ctx ends) through record, as source (this origin's
// name in the batch log). A batch that record failed is sent again at
// the next tick.
func runP2PStats(ctx context.Context, tick <-chan time.Time, b *p2pBatcher, source string,
	record func(ctx context.Context, source, batch string, d map[string]routing.P2PBytes) error, log *slog.Logger) {
	flush := func(ctx context.Context) {
		for {
			name, batch := b.next()
			if name == "" {
				return
			}
			if err := record(ctx, source, name, storeFigures(batch)); err != nil {
				log.Warn("cannot add the P2P stats of this origin's tracker; retrying later", "err", err)
				return
			}
			b.ack(name)
		}
	}
	for {
		select {
		case <-ctx.Done():
			fctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
			flush(fctx)
			cancel()
			return
		case <-tick:
			flush(ctx)
		}
	}
}
