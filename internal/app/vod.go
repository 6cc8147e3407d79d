package app

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/transcode"
	"github.com/shoal-video/shoal/transcode/remote"
	"github.com/shoal-video/shoal/transcode/vod"
)

// uploadDir keeps tus uploads until they complete.
func uploadDir(cfg config.Config) string { return filepath.Join(cfg.DataDir, "uploads") }

// newVODWorker builds a VOD worker reading the job queue in store as
// consumer (consumerName), transcoding with accel, what the hardware probe
// already found on this node.
func newVODWorker(cfg config.Config, store *routing.Store, objects storage.Store, accel transcode.Accel, consumer string, log *slog.Logger, reg prometheus.Registerer) (*vod.Worker, error) {
	ladder, err := media.ParseLadder(cfg.Transcode.Ladder)
	if err != nil {
		return nil, fmt.Errorf("transcode.ladder: %w", err)
	}
	return vod.New(vod.Config{
		Files: videoFiles(cfg, objects), Consumer: consumer,
		IdleTimeout: cfg.VOD.IdleTimeout.Std(), MaxAttempts: cfg.VOD.MaxAttempts, Concurrency: max(cfg.VOD.Workers, 1),
		Ladder: ladder, Backend: accel.Backend, GPUs: accel.GPUs, Preset: cfg.Transcode.Preset, SegmentDuration: cfg.HLS.SegmentDuration.Std(),
	}, vod.Deps{Queue: store, Log: log, Registerer: reg, NewPackager: vodPackager})
}

// newRemoteJobs is the origin's side of remote VOD workers' jobs: the same
// queue, ladder, preset, segment duration, idle timeout and attempts as its
// local workers, the share of segments re-checked before publishing
// (transcode.verify_fraction); localWorkers says this origin runs VOD
// workers of its own, and credit adds a worker's published work to the
// accounting epoch.
func newRemoteJobs(cfg config.Config, store *routing.Store, files vod.Files, localWorkers bool,
	credit func(ctx context.Context, node string, deltas map[string]int64) error, log *slog.Logger, reg prometheus.Registerer) (*remote.Origin, error) {
	ladder, err := media.ParseLadder(cfg.Transcode.Ladder)
	if err != nil {
		return nil, fmt.Errorf("transcode.ladder: %w", err)
	}
	return remote.New(remote.Config{
		Files: files, Ladder: ladder, Preset: cfg.Transcode.Preset, SegmentDuration: cfg.HLS.SegmentDuration.Std(),
		IdleTimeout: cfg.VOD.IdleTimeout.Std(), MaxAttempts: cfg.VOD.MaxAttempts,
		VerifyFraction: cfg.Transcode.VerifyFraction, LocalWorkers: localWorkers,
	}, remote.Deps{Queue: store, Log: log, Registerer: reg, Figures: credit})
}

// vodPackager is the live packager writing a VOD job's HLS (the live
// window does not matter: an ended rendition's playlist lists everything).
func vodPackager(dir string, hub *stream.Hub, segment time.Duration, log *slog.Logger) (vod.Packager, error) {
	return packager.New(packager.Config{Dir: dir, SegmentDuration: segment, LiveWindow: 3, Format: packager.FormatFMP4},
		packager.Deps{Log: log, Hub: hub})
}

// consumerName names this process in the job queue: host, pid and a random
// part, so that a restarted worker never inherits a dead one's name.
func consumerName() string {
	host, err := os.Hostname()
	if err != nil || host == "" {
		host = "worker"
	}
	return host + "-" + strconv.Itoa(os.Getpid()) + "-" + ids.New()[:4]
}
