package app

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/routing"
)

// liveRecords keeps the record of every live stream this origin ingests,
// as Redis had it when the broadcast started, and writes it back when
// Redis loses it (restarted empty) while the stream is still live: the
// publisher can reconnect with the same key, and the API, the webhooks and
// the playback policy know the stream again, within one check (every
// interval).
type liveRecords struct {
	store    *routing.Store
	isLive   func(id string) bool
	log      *slog.Logger
	interval time.Duration
	// checked, when set, is called after every pass (tests).
	checked func()

	mu      sync.Mutex
	records map[string]routing.LiveStream
}

func newLiveRecords(store *routing.Store, isLive func(string) bool, log *slog.Logger) *liveRecords {
	return &liveRecords{store: store, isLive: isLive, log: log, interval: 2 * time.Second, records: map[string]routing.LiveStream{}}
}

// seen notes the record of a stream that started (or ended) here.
func (r *liveRecords) seen(ls routing.LiveStream) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.records[ls.ID] = ls
}

// Run checks the live streams' records every interval until ctx ends.
func (r *liveRecords) Run(ctx context.Context) error {
	tick := time.NewTicker(r.interval)
	defer tick.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-tick.C:
		}
		r.check(ctx)
		if r.checked != nil {
			r.checked()
		}
	}
}

// check restores the records Redis lost of streams live here, and forgets
// the streams no longer live.
func (r *liveRecords) check(ctx context.Context) {
	r.mu.Lock()
	var live []routing.LiveStream
	for id, ls := range r.records {
		if r.isLive(id) {
			live = append(live, ls)
		} else {
			delete(r.records, id)
		}
	}
	r.mu.Unlock()
	for _, ls := range live {
		cctx, cancel := context.WithTimeout(ctx, 2*time.Second)
		_, err := r.store.GetLiveStream(cctx, ls.ID)
		if errors.Is(err, routing.ErrNotFound) {
			var ok bool
			if ok, err = r.store.RestoreLiveStream(cctx, ls); ok {
				r.log.Warn("redis lost the record of a live stream (restarted empty?): restored it as it was when the broadcast started",
					"stream", ls.ID, "name", ls.Name)
			}
		}
		cancel()
		if err != nil && !errors.Is(err, routing.ErrUnavailable) && ctx.Err() == nil {
			r.log.Warn("checking a live stream's record", "stream", ls.ID, "err", err)
		}
	}
}
