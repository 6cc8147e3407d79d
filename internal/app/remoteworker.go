package app

import (
	"context"
	"crypto/ed25519"
	"errors"
	"fmt"
	"log/slog"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/originset"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/transcode"
	"github.com/shoal-video/shoal/transcode/remote"
)

// capacityDeadline bounds a remote worker's self-benchmark at start.
const capacityDeadline = 30 * time.Second

// runRemoteWorker runs the worker role on a machine of its own
// (SHOAL_ORIGIN_URL set): it joins the origin with role "worker", its node
// token and its ed25519 identity (node.key in its data dir), heartbeats
// with what it transcodes with, and does VOD jobs through the worker
// protocol (transcode/remote), vod.workers at once. It never opens Redis or
// the media store: sources come from the origin over HTTP and outputs go
// back to it; its data dir holds its key and each job's scratch files
// while the job runs. With transcode.max_ladders -1 (the default), it
// measures its capacity (the self-benchmark) once joined, before it takes
// a job.
func runRemoteWorker(ctx context.Context, cfg config.Config, log *slog.Logger, opts testOptions) error {
	if cfg.NodeToken == "" {
		return errors.New("SHOAL_NODE_TOKEN (node_token) is required for a worker that joins an origin (SHOAL_ORIGIN_URL): POST /v1/node-tokens on the origin issues one")
	}
	key, err := playback.LoadOrCreateKey(filepath.Join(cfg.DataDir, "node.key"))
	if err != nil {
		return fmt.Errorf("node identity: %w", err)
	}
	id := nodeproto.NodeID(key.Public().(ed25519.PublicKey))
	origins, err := originset.New(cfg.OriginURLs(), time.Now)
	if err != nil {
		return fmt.Errorf("origin_url (SHOAL_ORIGIN_URL): %w", err)
	}
	ladder, err := media.ParseLadder(cfg.Transcode.Ladder)
	if err != nil {
		return fmt.Errorf("transcode.ladder: %w", err)
	}
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	vlog := log.With("component", "vod")
	accel, err := transcode.PickAccel(cfg.Transcode.HWAccel, vlog)
	if err != nil {
		return err
	}
	reg.MustRegister(transcode.NewAccelCollector(accel))
	measure := cfg.Transcode.MaxLadders == -1
	self := &remoteNode{ready: make(chan struct{}), joinedCh: make(chan struct{})}
	if measure {
		self.setCaps(accel.Capabilities(cfg.VOD.Workers, "default"))
	} else {
		self.setCaps(accel.Capabilities(cfg.VOD.Workers, "configured"))
	}
	client := &nodeproto.Client{Origins: origins, Token: cfg.NodeToken, Key: key, MaxSourceBytes: cfg.MaxUploadBytes}
	// VOD jobs and live ladders share the ladders the worker advertises.
	budget := newLadderBudget(func() int { return self.caps.Load().Ladders })
	w, err := remote.NewWorker(remote.WorkerConfig{
		WorkDir: filepath.Join(cfg.DataDir, "work"), Concurrency: cfg.VOD.Workers, Backend: accel.Backend, GPUs: accel.GPUs,
	}, remote.WorkerDeps{Client: client, NewPackager: vodPackager, Log: vlog, Registerer: reg, Ready: self.ready, Gate: budget.acquireVOD})
	if err != nil {
		return err
	}
	httpSrv, err := newHTTPServer(httpConfig{Addr: cfg.HTTPAddr, MetricsToken: cfg.MetricsToken},
		httpDeps{Log: log.With("component", "http"), Ready: self, Registry: reg})
	if err != nil {
		return err
	}
	defer httpSrv.close()
	log.Info("shoal worker starting (remote: no Redis, no shared disk)", "version", Version, "node", id,
		"origins", cfg.OriginURL, "region", cfg.Region, "config", fmt.Sprintf("%+v", cfg.Redacted()))
	g, gctx := errgroup.WithContext(ctx)
	g.Go(func() error { return w.Run(gctx) })
	g.Go(func() error { return httpSrv.run(gctx) })
	g.Go(func() error {
		return self.heartbeats(gctx, client, nodeproto.JoinRequest{Role: nodeproto.RoleWorker, Region: cfg.Region}, origins, log.With("component", "node"))
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-self.ready:
		}
		live := &remoteLive{client: client, origins: origins, accel: accel, preset: cfg.Transcode.Preset, log: log.With("component", "live"), budget: budget}
		if opts.liveCheat {
			live.cheat = quarterBitrates
		}
		return live.run(gctx, self.caps.Load().Ladders)
	})
	g.Go(func() error {
		select {
		case <-gctx.Done():
			return nil
		case <-self.joinedCh:
		}
		if measure {
			self.measure(gctx, accel, transcode.CapacityConfig{
				Ladder: ladder, Preset: cfg.Transcode.Preset, KeyframeInterval: cfg.HLS.SegmentDuration.Std(),
				Deadline: capacityDeadline, Log: vlog,
			}, cfg.VOD.Workers, vlog)
		}
		close(self.ready)
		return nil
	})
	err = g.Wait()
	log.Info("shoal worker stopped")
	if errors.Is(err, context.Canceled) {
		return nil
	}
	return err
}

// remoteNode is a remote worker's standing with the origin.
type remoteNode struct {
	caps     atomic.Pointer[nodeproto.Transcoding]
	joined   atomic.Bool
	joinOnce sync.Once
	joinedCh chan struct{} // closed at the first join
	ready    chan struct{} // closed once jobs may be claimed
}

func (n *remoteNode) setCaps(t nodeproto.Transcoding) { n.caps.Store(&t) }

// Ping is the worker's readiness (/readyz): joined to an origin.
func (n *remoteNode) Ping(context.Context) error {
	if !n.joined.Load() {
		return errors.New("not joined to the origin yet")
	}
	return nil
}

// measure runs the capacity self-benchmark and advertises its figure; on
// failure the configured concurrency stays.
func (n *remoteNode) measure(ctx context.Context, accel transcode.Accel, cfg transcode.CapacityConfig, workers int, log *slog.Logger) {
	c, err := transcode.MeasureCapacity(ctx, accel, cfg)
	if err != nil {
		if ctx.Err() == nil {
			log.Warn("the transcoding capacity could not be measured; advertising vod.workers", "err", err)
		}
		n.setCaps(accel.Capabilities(workers, "configured"))
		return
	}
	caps := accel.Capabilities(c.Ladders, "measured")
	caps.RealtimeX = c.RealtimeX
	n.setCaps(caps)
	log.Info(fmt.Sprintf("transcoding capacity measured: %s of %s in real time, one at %.1fx real time (%.1f s)",
		plural(c.Ladders, "ladder"), cfg.Ladder, c.RealtimeX, c.Took.Seconds()))
}

// heartbeats joins, then heartbeats every nodeproto.HeartbeatInterval with
// what the node transcodes with, joining again when the origin forgot the
// node. A refusal (a bad or revoked token) stops the worker.
func (n *remoteNode) heartbeats(ctx context.Context, c *nodeproto.Client, join nodeproto.JoinRequest, origins *originset.Set, log *slog.Logger) error {
	var retry heartbeatRetry
	var id string
	for {
		var r nodeproto.JoinResponse
		var err error
		if id == "" {
			join.Transcode = n.caps.Load()
			if r, err = c.Join(ctx, join); err == nil {
				id = r.ID
				n.joined.Store(true)
				n.joinOnce.Do(func() { close(n.joinedCh) })
				log.Info("joined the origin", "node", r.ID)
			}
		} else {
			r, err = c.Heartbeat(ctx, id, nodeproto.Heartbeat{Transcode: n.caps.Load()})
			if errors.Is(err, nodeproto.ErrUnknownNode) {
				log.Warn("the origin forgot this worker (missed heartbeats?): joining again")
				id = ""
				n.joined.Store(false)
				continue
			}
		}
		if errors.Is(err, nodeproto.ErrRefused) {
			return fmt.Errorf("worker: %w", err)
		}
		if err == nil && r.Origins != nil && origins.Learn(workerOrigins(r.Origins, log)) {
			log.Info("origins changed", "origins", strings.Join(origins.All(), ","))
		}
		if err != nil && ctx.Err() != nil {
			return nil
		}
		wait := retry.next(err, log)
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// plural is n and the noun, with an s unless n is 1.
func plural(n int, noun string) string {
	if n == 1 {
		return "1 " + noun
	}
	return fmt.Sprintf("%d %ss", n, noun)
}

// workerOrigins is the origins a join or heartbeat answer lists that a
// worker may talk to (nodeproto.CheckWorkerOrigin): the others are left
// out, logged.
func workerOrigins(urls []string, log *slog.Logger) []string {
	out := make([]string, 0, len(urls))
	for _, u := range urls {
		if err := nodeproto.CheckWorkerOrigin(strings.TrimSpace(u)); err != nil {
			log.Debug("an origin the answer lists is left out", "err", err)
			continue
		}
		out = append(out, u)
	}
	return out
}
