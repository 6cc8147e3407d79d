package app

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"time"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode"
)

// selfAnnouncer keeps this process in Redis while it runs, every third of
// routing.DefaultOriginTTL: an origin in the list of origins (edges learn
// the others from it), and an origin or a worker as an announced node
// (GET /v1/nodes lists it, with what it transcodes with). It withdraws
// both when it stops.
type selfAnnouncer struct {
	store *routing.Store
	// originURL is the origin's public URL, "" for a worker (not in the
	// origins list).
	originURL string
	node      routing.AnnouncedNode
	// transcode is read at every announcement (a self-benchmark may
	// change the figures after start); nil: the node does not transcode.
	transcode func() *nodeproto.Transcoding
	log       *slog.Logger
}

// newOriginAnnouncer announces the origin cfg describes; its id is
// originNodeID of its public URL (stable across restarts: a restarted
// origin replaces its record).
func newOriginAnnouncer(store *routing.Store, cfg config.Config, transcode func() *nodeproto.Transcoding, log *slog.Logger) selfAnnouncer {
	return selfAnnouncer{store: store, originURL: cfg.PublicURL, transcode: transcode, log: log,
		node: routing.AnnouncedNode{ID: originNodeID(cfg.PublicURL), Role: routing.RoleOrigin, Region: cfg.Region,
			PublicURL: cfg.PublicURL, StartedAt: time.Now()}}
}

// newWorkerAnnouncer announces the `shoal worker` whose VOD worker is named
// consumer in the job queue (the worker field of the videos it processes):
// its id is workerNodeID of that name (new at every start), and it
// transcodes with accel, vod.workers jobs at once.
func newWorkerAnnouncer(store *routing.Store, cfg config.Config, consumer string, accel transcode.Accel, log *slog.Logger) selfAnnouncer {
	caps := vodCapabilities(cfg, accel)
	return selfAnnouncer{store: store, transcode: func() *nodeproto.Transcoding { return caps }, log: log,
		node: routing.AnnouncedNode{ID: workerNodeID(consumer), Role: routing.RoleWorker, Region: cfg.Region, StartedAt: time.Now()}}
}

// workerNodeID is the announced node id of the worker named consumer in
// the job queue: "worker-" and the name, any character but ASCII letters,
// digits, '.', '_' and '-' (a host name has none) replaced by '-', at
// most 100 of them.
func workerNodeID(consumer string) string {
	b := []byte(consumer)
	for i, c := range b {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') && (c < '0' || c > '9') && c != '.' && c != '_' && c != '-' {
			b[i] = '-'
		}
	}
	if len(b) > 100 {
		b = b[len(b)-100:] // the pid and random part are at the end
	}
	return "worker-" + string(b)
}

// vodCapabilities is what a VOD worker transcoding with accel can do: as
// many ladders at once as it runs jobs.
func vodCapabilities(cfg config.Config, accel transcode.Accel) *nodeproto.Transcoding {
	c := accel.Capabilities(max(cfg.VOD.Workers, 1), "configured")
	return &c
}

// originNodeID is the announced node id of the origin at publicURL:
// "origin-" and 16 hex digits of the SHA-256 of the URL.
func originNodeID(publicURL string) string {
	sum := sha256.Sum256([]byte(publicURL))
	return "origin-" + hex.EncodeToString(sum[:8])
}

// run announces until ctx is done, then withdraws.
func (a selfAnnouncer) run(ctx context.Context) {
	t := time.NewTicker(routing.DefaultOriginTTL / 3)
	defer t.Stop()
	for {
		if err := a.announce(ctx); err != nil && ctx.Err() == nil {
			a.log.Debug("could not announce this node; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
			wctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), time.Second)
			if a.originURL != "" {
				_ = a.store.WithdrawOrigin(wctx, a.originURL)
			}
			_ = a.store.WithdrawNode(wctx, a.node.ID)
			cancel()
			return
		case <-t.C:
		}
	}
}

func (a selfAnnouncer) announce(ctx context.Context) error {
	var originErr error
	if a.originURL != "" {
		originErr = a.store.AnnounceOrigin(ctx, a.originURL, routing.DefaultOriginTTL)
	}
	n := a.node
	if a.transcode != nil {
		n.Transcode = a.transcode()
	}
	if err := a.store.AnnounceNode(ctx, n, routing.DefaultOriginTTL); err != nil {
		return err
	}
	return originErr
}
