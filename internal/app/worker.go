package app

import (
	"context"
	"fmt"
	"log/slog"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode"
)

// runWorker runs the worker role: VOD jobs from the Redis queue, plus the
// operations endpoints (/healthz, /readyz, /metrics) on SHOAL_HTTP_ADDR.
// It announces itself in Redis while it runs (GET /v1/nodes lists it).
// Sources and outputs are read and written in the media store: with the
// fs backend, SHOAL_DATA_DIR, which the worker shares with the origin (same
// machine or a shared file system); with s3, the bucket, and the data dir
// is the worker's own scratch space. With SHOAL_ORIGIN_URL set, it is a
// remote worker instead (runRemoteWorker): no Redis, no shared disk.
func runWorker(ctx context.Context, cfg config.Config, log *slog.Logger, opts testOptions) error {
	if cfg.VOD.Workers < 1 {
		return fmt.Errorf("vod.workers (SHOAL_VOD_WORKERS) is %d: a worker needs at least 1", cfg.VOD.Workers)
	}
	if cfg.OriginURL != "" {
		return runRemoteWorker(ctx, cfg, log, opts)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	store, err := routing.NewStore(cfg.RedisURL)
	if err != nil {
		return err
	}
	defer store.Close()
	objects, err := openMediaStore(ctx, cfg, log.With("component", "storage"))
	if err != nil {
		return fmt.Errorf("media store: %w", err)
	}
	vlog := log.With("component", "vod")
	accel, err := transcode.PickAccel(cfg.Transcode.HWAccel, vlog)
	if err != nil {
		return err
	}
	reg.MustRegister(transcode.NewAccelCollector(accel))
	consumer := consumerName()
	w, err := newVODWorker(cfg, store, objects, accel, consumer, vlog, reg)
	if err != nil {
		return err
	}
	self := newWorkerAnnouncer(store, cfg, consumer, accel, log.With("component", "announce"))
	httpSrv, err := newHTTPServer(httpConfig{Addr: cfg.HTTPAddr, MetricsToken: cfg.MetricsToken},
		httpDeps{Log: log.With("component", "http"), Ready: store, Registry: reg})
	if err != nil {
		return err
	}
	defer httpSrv.close()
	log.Info("shoal worker starting", "version", Version, "media_store", describeStore(cfg), "config", fmt.Sprintf("%+v", cfg.Redacted()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return httpSrv.run(gctx) })
	g.Go(func() error { self.run(gctx); return nil })
	err = g.Wait()
	log.Info("shoal worker stopped")
	return err
}
