package app

import (
	"context"
	"errors"
	"log/slog"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/stream"
)

// liveAnnouncer publishes live_stream.started and live_stream.ended (for
// webhooks) when a live stream's source publication starts and ends. A
// reconnect within the grace period continues the publication: no events.
type liveAnnouncer struct {
	w     *stream.Watcher
	store *routing.Store
	log   *slog.Logger
	warn  *logx.Limiter
	// seen, when set, is told the record of every stream that starts.
	seen func(routing.LiveStream)
}

func newLiveAnnouncer(hub *stream.Hub, store *routing.Store, log *slog.Logger, seen func(routing.LiveStream)) *liveAnnouncer {
	return &liveAnnouncer{
		w:     hub.WatchStarts(func(k media.StreamKey) bool { return k.Rendition == media.RenditionSource }),
		store: store, log: log, warn: logx.NewLimiter(10 * time.Second), seen: seen,
	}
}

// Run follows publications until ctx is done or the hub closes, and returns
// once every ended publication has been announced.
func (a *liveAnnouncer) Run(ctx context.Context) error {
	defer a.w.Close()
	var g errgroup.Group
	for {
		sub, err := a.w.Next(ctx)
		if err != nil {
			break
		}
		g.Go(func() error { a.follow(ctx, sub); return nil })
	}
	return g.Wait()
}

func (a *liveAnnouncer) follow(ctx context.Context, sub *stream.Subscriber) {
	defer sub.Close()
	id := sub.Key().Name
	a.announce(id, routing.EventLiveStreamStarted)
	_ = sub.Each(ctx, func([]media.Track, bool) {}, func(*media.AccessUnit) {})
	a.announce(id, routing.EventLiveStreamEnded)
}

func (a *liveAnnouncer) announce(id, typ string) {
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
	defer cancel()
	data := map[string]string{"id": id}
	if ls, err := a.store.GetLiveStream(ctx, id); err == nil {
		data["name"] = ls.Name
		if a.seen != nil {
			a.seen(ls)
		}
		if typ == routing.EventLiveStreamStarted {
			// Edges drop the last broadcast's playlists now, not when
			// their minute of caching is up.
			// The entry carries the policy the stream has when it is
			// appended (read in that transaction), not ls's: a PATCH since
			// must not be undone.
			if err := a.store.InvalidateCached(ctx, id); err != nil && !errors.Is(err, routing.ErrNotFound) {
				if ok, n := a.warn.Allow(); ok {
					a.log.Warn("could not tell edges a new broadcast started; they may serve the last one's playlists for a minute",
						"stream", id, "err", err, "suppressed_since_last", n)
				}
			}
		}
	}
	if err := a.store.PublishEvent(ctx, typ, data); err != nil {
		if ok, n := a.warn.Allow(); ok {
			a.log.Warn("could not announce a live stream event; webhooks will miss it", "event", typ, "stream", id, "err", err, "suppressed_since_last", n)
		}
	}
}
