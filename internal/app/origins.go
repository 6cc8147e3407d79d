package app

import (
	"context"
	"log/slog"
	"time"

	"github.com/shoal-video/shoal/internal/routing"
)

// announceOrigin keeps this origin in the list of origins (edges learn the
// others from it) every third of routing.DefaultOriginTTL until ctx is
// done, then withdraws it.
func announceOrigin(ctx context.Context, store *routing.Store, publicURL string, log *slog.Logger) {
	t := time.NewTicker(routing.DefaultOriginTTL / 3)
	defer t.Stop()
	for {
		if err := store.AnnounceOrigin(ctx, publicURL, routing.DefaultOriginTTL); err != nil && ctx.Err() == nil {
			log.Debug("could not announce this origin; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			wctx, cancel := context.WithTimeout(context.Background(), time.Second)
			_ = store.WithdrawOrigin(wctx, publicURL)
			cancel()
			return
		case <-t.C:
		}
	}
}
