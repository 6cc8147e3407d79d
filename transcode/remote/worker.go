package remote

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/vod"
)

// Client is the worker protocol as a worker speaks it; *nodeproto.Client
// implements it.
type Client interface {
	Claim(ctx context.Context) (job nodeproto.WorkerJob, origin string, ok bool, err error)
	FetchSource(ctx context.Context, origin string, job nodeproto.WorkerJob, dst string) error
	ReportProgress(ctx context.Context, origin, job string, progress int) error
	PutFile(ctx context.Context, origin, job, path, file, sum string) error
	Complete(ctx context.Context, origin string, m nodeproto.Complete) (nodeproto.Completed, error)
	ReportFailure(ctx context.Context, origin, job string, f nodeproto.Failure) (nodeproto.Failed, error)
}

// WorkerConfig configures the worker's side.
type WorkerConfig struct {
	// WorkDir is the worker's own scratch space (in its data dir): each
	// job downloads its source and builds its output in a directory of
	// its own below WorkDir/StagingDir, removed when the job ends.
	WorkDir string
	// Concurrency is how many jobs run at once.
	Concurrency int
	// Backend and GPUs are how this node transcodes (transcode.Accel); a
	// hardware failure retries the job on the CPU (vod.TranscodeJob).
	Backend string
	GPUs    []*ffmpeg.GPU
	// MinBackoff and MaxBackoff bound the wait before the next claim when
	// there was no job, the origin could not be reached or the last job
	// failed: it doubles from the first to the second. 0: 500 ms and 5 s.
	MinBackoff, MaxBackoff time.Duration
}

// WorkerDeps are the worker side's collaborators.
type WorkerDeps struct {
	Client Client
	// NewPackager makes the packager of a job's HLS (the live one).
	NewPackager vod.NewPackager
	Log         *slog.Logger
	Registerer  prometheus.Registerer
	// Ready, when set, is closed once the node may claim jobs (it has
	// joined the origin).
	Ready <-chan struct{}
	// BeforeManifest, when set, is called with a job's source file and
	// finished output tree (the video's directory) before the worker
	// describes it
	// (BuildManifest) and uploads it; an error fails the job. A test
	// hook: a test's cheating worker changes its output there, as a
	// dishonest operator's modified worker would, so that the hashes it
	// signs match what it uploads.
	BeforeManifest func(ctx context.Context, job nodeproto.WorkerJob, source, tree string) error
	// Gate, when set, is passed before each claim (it waits for a free
	// ladder: the worker's ladders are shared with its live ladders); the
	// worker calls hold(true) once it claimed a job (it runs) and
	// hold(false) when the ladder is free again (after the job, or at
	// once when none was claimed).
	Gate func(ctx context.Context) (hold func(running bool), err error)
}

// Worker claims VOD jobs from the origins and does them: download the
// source, transcode with vod.TranscodeJob, upload the output, complete.
type Worker struct {
	cfg   WorkerConfig
	deps  WorkerDeps
	log   *slog.Logger
	warn  *logx.Limiter
	jobs  *prometheus.CounterVec
	runng prometheus.Gauge
}

// NewWorker validates cfg.
func NewWorker(cfg WorkerConfig, deps WorkerDeps) (*Worker, error) {
	var errs []error
	if deps.Client == nil {
		errs = append(errs, errors.New("remote: a Client is required"))
	}
	if deps.NewPackager == nil {
		errs = append(errs, errors.New("remote: NewPackager is required"))
	}
	if cfg.WorkDir == "" {
		errs = append(errs, errors.New("remote: WorkDir is required"))
	}
	if cfg.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("remote: concurrency must be at least 1, got %d", cfg.Concurrency))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.MinBackoff <= 0 {
		cfg.MinBackoff = 500 * time.Millisecond
	}
	if cfg.MaxBackoff < cfg.MinBackoff {
		cfg.MaxBackoff = max(5*time.Second, cfg.MinBackoff)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	w := &Worker{cfg: cfg, deps: deps, log: deps.Log, warn: logx.NewLimiter(10 * time.Second),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_vod_jobs_total",
			Help: "VOD job attempts by outcome: ready, retry (reported failed), rejected (the origin refused the output), lost (taken away meanwhile).",
		}, []string{"outcome"}),
		runng: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_vod_jobs_running", Help: "VOD jobs this worker is running."}),
	}
	for _, o := range []string{"ready", "retry", "rejected", "lost"} {
		w.jobs.WithLabelValues(o)
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{w.jobs, w.runng} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("remote: register metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Run does jobs until ctx is done, or until the origin refuses this node
// (a revoked token: ErrRefused is returned). A job interrupted by the
// shutdown is left to the origin, which gives it to another worker after
// its idle timeout.
func (w *Worker) Run(ctx context.Context) error {
	// What a worker killed mid-job left: nothing will finish it.
	if err := os.RemoveAll(filepath.Join(w.cfg.WorkDir, StagingDir)); err != nil {
		return fmt.Errorf("remote: clearing the work directory: %w", err)
	}
	if w.deps.Ready != nil {
		select {
		case <-ctx.Done():
			return nil
		case <-w.deps.Ready:
		}
	}
	g, ctx := errgroup.WithContext(ctx)
	for range w.cfg.Concurrency {
		g.Go(func() error { return w.loop(ctx) })
	}
	w.log.Info("remote VOD worker started", "concurrency", w.cfg.Concurrency, "backend", w.cfg.Backend)
	err := g.Wait()
	if ctx.Err() != nil && !errors.Is(err, nodeproto.ErrRefused) {
		return nil
	}
	return err
}

func (w *Worker) loop(ctx context.Context) error {
	backoff := w.cfg.MinBackoff
	for ctx.Err() == nil {
		hold := func(bool) {}
		if w.deps.Gate != nil {
			h, err := w.deps.Gate(ctx)
			if err != nil {
				return nil // ctx ended
			}
			hold = h
		}
		job, origin, ok, err := w.deps.Client.Claim(ctx)
		hold(err == nil && ok)
		if err != nil || !ok {
			hold(false)
		}
		if errors.Is(err, nodeproto.ErrRefused) {
			return fmt.Errorf("remote: %w: claiming a job: %w", nodeproto.ErrRefused, err)
		}
		if err != nil || !ok {
			if err != nil && ctx.Err() == nil {
				if allow, n := w.warn.Allow(); allow {
					w.log.Warn("cannot claim a job; retrying", "err", err, "in", backoff, "suppressed_since_last", n)
				}
			}
			// Jitter spreads the claims of many workers.
			wait := backoff/2 + rand.N(backoff/2+1)
			select {
			case <-ctx.Done():
			case <-time.After(wait):
			}
			backoff = min(2*backoff, w.cfg.MaxBackoff)
			continue
		}
		done := w.run(ctx, origin, job)
		hold(false)
		if done {
			backoff = w.cfg.MinBackoff
			continue
		}
		// A failed job: a wait before the next claim, growing while jobs
		// keep failing (a worker that fails every job fast would
		// otherwise claim, and fail, the queue's jobs in a loop).
		wait := backoff/2 + rand.N(backoff/2+1)
		select {
		case <-ctx.Done():
		case <-time.After(wait):
		}
		backoff = min(2*backoff, w.cfg.MaxBackoff)
	}
	return nil
}

// retries is how many times a transfer is tried before the job is given
// up.
const retries = 3

// run does one job; it tells whether it did not fail (done, taken away
// or interrupted by the shutdown).
func (w *Worker) run(ctx context.Context, origin string, job nodeproto.WorkerJob) bool {
	log := w.log.With("video", job.VideoID, "attempt", job.Attempt, "origin", origin)
	// Files are named after the job and its video: nothing else than a
	// job the origin may hand out (nodeproto.Client.Claim checks it too).
	if err := job.Check(); err != nil {
		w.jobs.WithLabelValues("retry").Inc()
		log.Error("refusing an unusable job", "err", err)
		return false
	}
	log.Info("processing video", "source_bytes", job.SourceBytes, "ladder", job.Ladder)
	w.runng.Inc()
	defer w.runng.Dec()
	began := time.Now()
	dir := filepath.Join(w.cfg.WorkDir, StagingDir, job.Job)
	defer func() {
		if err := os.RemoveAll(dir); err != nil {
			log.Warn("removing the job's scratch files", "err", err)
		}
	}()

	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var progress atomic.Int64
	var g errgroup.Group
	g.Go(func() error { w.keepAlive(jobCtx, cancel, origin, job, &progress); return nil })
	defer func() { _ = g.Wait() }()
	defer cancel(nil)

	m, err := w.transcode(jobCtx, origin, job, dir, &progress, log)
	if err == nil {
		err = w.upload(jobCtx, origin, job, dir, m)
	}
	if err == nil {
		_, err = w.complete(jobCtx, origin, m)
	}
	lost := context.Cause(jobCtx)
	if lost == nil || errors.Is(lost, context.Canceled) {
		lost = nil
	}
	var werr *nodeproto.WorkerError
	ok := false
	switch {
	case errors.Is(err, nodeproto.ErrJobGone) || errors.Is(lost, nodeproto.ErrJobGone):
		ok = true
		w.jobs.WithLabelValues("lost").Inc()
		log.Warn("the origin took the job away; its work is dropped", "reason", cmpErr(lost, err))
	case err == nil:
		ok = true
		w.jobs.WithLabelValues("ready").Inc()
		log.Info("video ready", "renditions", len(m.Renditions), "took", time.Since(began).Round(time.Millisecond))
	case ctx.Err() != nil:
		ok = true
		log.Info("shutting down: the origin gives the job to another worker")
	case errors.As(err, &werr) && werr.Code == nodeproto.CodeOutputRejected:
		w.jobs.WithLabelValues("rejected").Inc()
		log.Error("the origin refused the output", "err", err)
	default:
		w.jobs.WithLabelValues("retry").Inc()
		f := nodeproto.Failure{Error: failureMessage(err), Permanent: errors.Is(err, ffmpeg.ErrNotVideo)}
		if _, ferr := w.deps.Client.ReportFailure(context.WithoutCancel(ctx), origin, job.Job, f); ferr != nil {
			log.Warn("reporting the failure (the origin gives the job to another worker after its idle timeout)", "err", ferr)
		}
		log.Warn("job failed", "err", err)
	}
	return ok
}

func cmpErr(a, b error) error {
	if a != nil {
		return a
	}
	return b
}

// failureMessage is err as the video's "error" field shows it.
func failureMessage(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ffmpeg.ErrNotVideo.Error()); i > 0 {
		msg = msg[i:]
	}
	if len(msg) > nodeproto.MaxFailureMessage {
		msg = msg[:nodeproto.MaxFailureMessage]
	}
	return strings.ToValidUTF8(msg, "?")
}

// keepAlive reports the job's progress every interval the origin asked
// for; when the origin says the job is gone, or refuses the node, it
// cancels the job.
func (w *Worker) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, origin string, job nodeproto.WorkerJob, progress *atomic.Int64) {
	every := time.Duration(job.ProgressIntervalSeconds * float64(time.Second))
	if every <= 0 || every > time.Minute {
		every = time.Second
	}
	t := time.NewTicker(every)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := w.deps.Client.ReportProgress(ctx, origin, job.Job, int(progress.Load()))
		switch {
		case errors.Is(err, nodeproto.ErrJobGone), errors.Is(err, nodeproto.ErrRefused):
			cancel(fmt.Errorf("%w: %w", nodeproto.ErrJobGone, err))
			return
		case err != nil && ctx.Err() == nil:
			if ok, n := w.warn.Allow(); ok {
				w.log.Warn("could not report progress; retrying", "video", job.VideoID, "err", err, "suppressed_since_last", n)
			}
		}
	}
}

// transcode downloads the source into dir and transcodes it there; it
// returns the output's manifest (its tree is dir/out/<video>).
func (w *Worker) transcode(ctx context.Context, origin string, job nodeproto.WorkerJob, dir string, progress *atomic.Int64, log *slog.Logger) (nodeproto.Complete, error) {
	ladder, err := media.ParseLadder(job.Ladder)
	if err != nil {
		return nodeproto.Complete{}, fmt.Errorf("the job's ladder %q: %w", job.Ladder, err)
	}
	seg := time.Duration(job.SegmentDurationSeconds * float64(time.Second))
	if seg <= 0 || seg > time.Minute {
		return nodeproto.Complete{}, fmt.Errorf("the job's segment duration %v s is not usable", job.SegmentDurationSeconds)
	}
	if err := os.MkdirAll(filepath.Join(dir, "out"), 0o755); err != nil {
		return nodeproto.Complete{}, err
	}
	src := filepath.Join(dir, "source")
	for i := range retries {
		if err = w.deps.Client.FetchSource(ctx, origin, job, src); err == nil || ctx.Err() != nil || errors.Is(err, nodeproto.ErrJobGone) {
			break
		}
		log.Warn("downloading the source; resuming", "err", err, "try", i+1)
	}
	if err != nil {
		return nodeproto.Complete{}, fmt.Errorf("downloading the source: %w", err)
	}
	s := vod.Settings{Backend: w.cfg.Backend, GPU: ffmpeg.LeastBusy(w.cfg.GPUs), Preset: job.Preset, SegmentDuration: seg,
		NewPackager: w.deps.NewPackager, Log: log}
	out, err := vod.TranscodeJob(ctx, s, job.VideoID, src, filepath.Join(dir, "out"), ladder,
		func(f float64) { progress.Store(int64(f * 99)) })
	if err != nil {
		return nodeproto.Complete{}, err
	}
	tree := filepath.Join(dir, "out", job.VideoID)
	if w.deps.BeforeManifest != nil {
		if err := w.deps.BeforeManifest(ctx, job, src, tree); err != nil {
			return nodeproto.Complete{}, err
		}
	}
	// The source is no longer needed: the room goes to the output.
	_ = os.Remove(src)
	progress.Store(99)
	return BuildManifest(tree, job.Job, out)
}

// uploadConcurrency bounds a job's uploads at once.
const uploadConcurrency = 4

// upload sends every file of the manifest.
func (w *Worker) upload(ctx context.Context, origin string, job nodeproto.WorkerJob, dir string, m nodeproto.Complete) error {
	tree := filepath.Join(dir, "out", job.VideoID)
	g, gctx := errgroup.WithContext(ctx)
	g.SetLimit(uploadConcurrency)
	for _, f := range m.Files {
		g.Go(func() error {
			var err error
			for range retries {
				err = w.deps.Client.PutFile(gctx, origin, job.Job, f.Path, filepath.Join(tree, filepath.FromSlash(f.Path)), f.SHA256)
				var werr *nodeproto.WorkerError
				if err == nil || gctx.Err() != nil || (errors.As(err, &werr) && werr.Permanent()) {
					break
				}
			}
			if err != nil {
				return fmt.Errorf("uploading %s: %w", f.Path, err)
			}
			return nil
		})
	}
	return g.Wait()
}

// completeRetryFor is how long a worker keeps sending a manifest the
// origin could not answer (an origin restarting, or one too busy to read
// it: 503), with a growing pause, before it gives the job up.
const completeRetryFor = 5 * time.Minute

// complete sends the manifest, again when the origin could not answer
// (Client.Complete itself waits while the origin checks the output).
func (w *Worker) complete(ctx context.Context, origin string, m nodeproto.Complete) (nodeproto.Completed, error) {
	start := time.Now()
	var err error
	for i := 0; ; i++ {
		var out nodeproto.Completed
		if out, err = w.deps.Client.Complete(ctx, origin, m); err == nil {
			return out, nil
		}
		// A completion still running at the origin (this one's, whose
		// answer was lost) is waited for.
		var werr *nodeproto.WorkerError
		if ctx.Err() != nil || (errors.As(err, &werr) && werr.Permanent() && werr.Status != http.StatusConflict) ||
			time.Since(start) > completeRetryFor {
			break
		}
		t := time.NewTimer(min(time.Second<<min(i, 4), 15*time.Second))
		select {
		case <-ctx.Done():
			t.Stop()
		case <-t.C:
		}
	}
	return nodeproto.Completed{}, err
}

// BuildManifest describes the output tree at dir (a video's directory) of
// job, whose transcode produced out: every file with its size and SHA-256,
// the duration and the renditions. Only what the worker may send is in
// it: a path of a VOD tree (nodeproto.CheckOutputPath) naming a regular
// file; anything else there (a symbolic link, a device, a file of another
// name) fails the job rather than being read and uploaded.
func BuildManifest(dir, job string, out routing.JobOutcome) (nodeproto.Complete, error) {
	m := nodeproto.Complete{Job: job, DurationSeconds: out.Duration.Seconds()}
	for _, r := range out.Renditions {
		m.Renditions = append(m.Renditions, nodeproto.Rendition{Name: r.Name, Width: r.Width, Height: r.Height, Bitrate: r.Bitrate})
	}
	if st, err := os.Lstat(dir); err != nil {
		return m, err
	} else if !st.IsDir() {
		return m, fmt.Errorf("the output %s is not a directory", dir)
	}
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		rel = filepath.ToSlash(rel)
		if d.IsDir() {
			// The video's directory and its renditions' directories.
			if p == dir || (!strings.Contains(rel, "/") && nodeproto.CheckOutputPath(rel+"/index.m3u8") == nil) {
				return nil
			}
			return fmt.Errorf("the output has a directory %q that is not a rendition's", rel)
		}
		if !d.Type().IsRegular() {
			return fmt.Errorf("the output's %q is not a regular file (%v)", rel, d.Type())
		}
		if err := nodeproto.CheckOutputPath(rel); err != nil {
			return fmt.Errorf("the output: %w", err)
		}
		size, sum, err := hashFile(p)
		if err != nil {
			return err
		}
		m.Files = append(m.Files, nodeproto.OutputFile{Path: rel, Size: size, SHA256: sum})
		return nil
	})
	return m, err
}
