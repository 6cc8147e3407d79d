package app

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/vod"
)

// liveRecords gives a Redis that lost its data (restarted empty) back what
// this origin knows, within one check (every interval):
//   - the record of every live stream it ingests, as Redis had it at the
//     last check (a key reset or a policy changed during the broadcast
//     included): the publisher can reconnect with its key, and the API,
//     the webhooks and the playback policy know the stream again;
//   - the records of videos, from the copies kept next to their sources
//     (vod.Files.SaveRecord), the videos being processed queued again.
type liveRecords struct {
	store    *routing.Store
	isLive   func(id string) bool
	videos   vod.Files
	log      *slog.Logger
	interval time.Duration
	// checked, when set, is called after every pass (tests).
	checked func()

	// epochFile keeps the mark of the Redis whose data this origin last
	// checked (routing.Store.Epoch): a mark that is gone or changed, even
	// while the origin was down, means the records are to be restored.
	epochFile string
	epoch     string

	mu      sync.Mutex
	records map[string]routing.LiveStream
}

func newLiveRecords(store *routing.Store, isLive func(string) bool, videos vod.Files, epochFile string, log *slog.Logger) *liveRecords {
	r := &liveRecords{store: store, isLive: isLive, videos: videos, epochFile: epochFile, log: log, interval: 2 * time.Second,
		records: map[string]routing.LiveStream{}}
	if b, err := os.ReadFile(epochFile); err == nil {
		r.epoch = strings.TrimSpace(string(b))
	}
	return r
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
	if cur, err := r.store.Epoch(ctx); err == nil && (cur == "" || cur != r.epoch) {
		// Marked only once every copy was restored: a pass cut short
		// (Redis down again, a restart) runs again.
		if r.restoreVideos(ctx) == nil {
			if mark, err := r.store.MarkEpoch(ctx); err == nil {
				r.epoch = mark
				if err := os.WriteFile(r.epochFile, []byte(mark+"\n"), 0o644); err != nil {
					r.log.Warn("keeping the Redis mark", "err", err)
				}
			}
		}
	}
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
		got, err := r.store.GetLiveStream(cctx, ls.ID)
		if err == nil {
			// The copy follows the record (a key reset, a policy
			// changed during the broadcast): at most one check old.
			r.mu.Lock()
			if _, ok := r.records[ls.ID]; ok {
				r.records[ls.ID] = got
			}
			r.mu.Unlock()
		}
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

// restoreVideos writes back the video records Redis lacks from their
// copies on disk, the videos being processed queued again. It fails when
// Redis did not answer (the pass is to run again).
func (r *liveRecords) restoreVideos(ctx context.Context) error {
	restored, queued := 0, 0
	err := r.videos.Records(func(id string, fields map[string]string) error {
		ok, q, err := r.store.RestoreVideo(ctx, id, fields)
		if err != nil {
			if errors.Is(err, routing.ErrUnavailable) {
				return err
			}
			r.log.Warn("a video's record copy could not be restored", "video", id, "err", err)
			return nil
		}
		if ok {
			restored++
		}
		if q {
			queued++
		}
		return nil
	})
	if restored > 0 {
		r.log.Warn("redis had lost video records (restarted empty?): restored them from their copies", "videos", restored, "queued_again", queued)
	}
	if err != nil {
		r.log.Warn("restoring video records", "err", err)
	}
	return err
}
