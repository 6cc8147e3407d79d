// Package vod runs VOD jobs: it takes uploaded sources from the Redis job
// queue, transcodes each into the HLS ladder with the same code as live
// streams (transcode/ffmpeg, the packager), adds a poster and a storyboard,
// and publishes the result next to the live streams' HLS.
//
// A job's source is read from the media store (in place on local disk,
// downloaded from S3), and its output is built in a local staging
// directory private to its attempt. Only a complete output is published
// into the store: what an earlier attempt left there is removed first, the
// media go in before the rendition playlists and the master playlist last,
// and the video is marked ready only after that, so a player never sees a
// half-written rendition, and an attempt that fails or is taken over
// publishes nothing. Workers
// touch the jobs they hold; a worker that dies stops touching its job and
// another one takes it over after Config.IdleTimeout (see routing's job
// queue).
package vod

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Jobs is the VOD job queue's life cycle: claim, start, keep alive,
// finish or fail a job. A local worker (Queue) and the origin's side of
// remote workers (transcode/remote) drive it.
type Jobs interface {
	EnsureJobQueue(ctx context.Context) error
	NextJob(ctx context.Context, consumer string, block, minIdle time.Duration) (routing.Job, bool, error)
	StartJob(ctx context.Context, job routing.Job, consumer string, maxAttempts int) (routing.JobStart, error)
	TouchJob(ctx context.Context, job routing.Job, consumer string, attempt, progress int) error
	FinishJob(ctx context.Context, job routing.Job, attempt int, out routing.JobOutcome) error
	FailJob(ctx context.Context, job routing.Job, attempt int, msg string, permanent bool, maxAttempts int) (bool, error)
}

// Queue is the job queue the worker reads; *routing.Store implements it.
type Queue interface {
	Jobs
	JobQueue(ctx context.Context) (routing.JobQueueStats, error)
	// VideoFields is the video's record as Redis holds it, for the copy
	// kept next to its source (Files.SaveRecord).
	VideoFields(ctx context.Context, id string) (map[string]string, error)
}

// Config configures a worker.
type Config struct {
	// Files are the media store (sources, published HLS trees), the
	// record copies and the local work directory, in which staging
	// directories are made (on the data dir's file system, publishing to
	// a local store is a rename).
	Files Files
	// Consumer names this worker in the queue; unique per process.
	Consumer string
	// IdleTimeout is how long a job may go untouched before another worker
	// takes it over. The worker touches its jobs every IdleTimeout/4 or
	// every second, whichever is more often.
	IdleTimeout time.Duration
	// MaxAttempts bounds the attempts at one job.
	MaxAttempts int
	// Concurrency is how many jobs run at once.
	Concurrency int
	// Ladder is the default ladder (a video may carry its own).
	Ladder media.Ladder
	// Backend is the encoder backend (ffmpeg.Backend*); when it is a
	// hardware one and fails, the job is retried at once with software.
	Backend string
	// GPUs are the NVIDIA GPUs that decode and scale (transcode.Accel.GPUs):
	// each job decodes on the least busy and, with the nvenc backend,
	// counts its NVENC sessions there.
	GPUs []*ffmpeg.GPU
	// Preset is the x264 preset.
	Preset string
	// SegmentDuration is the HLS segment length.
	SegmentDuration time.Duration
}

// StagingDir is the directory below Files.WorkDir where jobs build their
// output.
const StagingDir = "staging"

// Deps are the worker's collaborators.
type Deps struct {
	Queue      Queue
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// NewPackager makes the packager each job writes its HLS with.
	NewPackager NewPackager
}

// Worker processes VOD jobs.
type Worker struct {
	cfg         Config
	queue       Queue
	newPackager NewPackager
	log         *slog.Logger
	warn        *logx.Limiter

	jobs     *prometheus.CounterVec
	duration prometheus.Histogram
	depth    *prometheus.GaugeVec
	running  prometheus.Gauge
}

// New validates cfg.
func New(cfg Config, deps Deps) (*Worker, error) {
	var errs []error
	if deps.Queue == nil {
		errs = append(errs, errors.New("vod: a Queue is required"))
	}
	if deps.NewPackager == nil {
		errs = append(errs, errors.New("vod: NewPackager is required"))
	}
	if cfg.Files.Store == nil || cfg.Files.RecordDir == "" || cfg.Files.WorkDir == "" {
		errs = append(errs, errors.New("vod: Files.Store, Files.RecordDir and Files.WorkDir are required"))
	}
	if cfg.Consumer == "" {
		errs = append(errs, errors.New("vod: Consumer is required"))
	}
	if cfg.IdleTimeout < time.Second {
		errs = append(errs, fmt.Errorf("vod: idle timeout must be at least 1s, got %s", cfg.IdleTimeout))
	}
	if cfg.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("vod: max attempts must be at least 1, got %d", cfg.MaxAttempts))
	}
	if cfg.Concurrency < 1 {
		errs = append(errs, fmt.Errorf("vod: concurrency must be at least 1, got %d", cfg.Concurrency))
	}
	if len(cfg.Ladder) == 0 {
		errs = append(errs, errors.New("vod: an empty default ladder"))
	}
	if cfg.SegmentDuration <= 0 {
		errs = append(errs, errors.New("vod: segment duration must be positive"))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	w := &Worker{
		cfg: cfg, queue: deps.Queue, newPackager: deps.NewPackager, log: deps.Log.With("worker", cfg.Consumer), warn: logx.NewLimiter(10 * time.Second),
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_vod_jobs_total",
			Help: "VOD job attempts by outcome: ready, retry, failed (for good), lost (taken over or deleted meanwhile), skipped.",
		}, []string{"outcome"}),
		duration: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name: "shoal_vod_job_duration_seconds", Help: "Wall time of VOD job attempts that made a video ready.",
			Buckets: prometheus.ExponentialBuckets(1, 2, 14),
		}),
		depth: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_vod_queue_jobs", Help: "VOD jobs in the queue: waiting for a worker, or running (handed out, not finished).",
		}, []string{"state"}),
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_vod_jobs_running", Help: "VOD jobs this worker is running.",
		}),
	}
	// Both series exist from the start (0 until the queue is first read),
	// not only once Redis has answered.
	w.depth.WithLabelValues("waiting")
	w.depth.WithLabelValues("running")
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{w.jobs, w.duration, w.depth, w.running} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("vod: register metrics: %w", err)
			}
		}
	}
	return w, nil
}

// Run processes jobs until ctx is done. A job interrupted by the shutdown
// stays in the queue and is taken over by a worker after the idle timeout.
func (w *Worker) Run(ctx context.Context) error {
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error { w.watchQueue(ctx); return nil })
	for i := range w.cfg.Concurrency {
		consumer := w.cfg.Consumer
		if i > 0 {
			consumer += "-" + strconv.Itoa(i)
		}
		g.Go(func() error { w.loop(ctx, consumer); return nil })
	}
	w.log.Info("VOD worker started", "concurrency", w.cfg.Concurrency, "backend", w.cfg.Backend)
	return g.Wait()
}

// pause is how long the loop waits after Redis failed.
const pause = time.Second

func (w *Worker) loop(ctx context.Context, consumer string) {
	ready := false
	for ctx.Err() == nil {
		if !ready {
			if err := w.queue.EnsureJobQueue(ctx); err != nil {
				w.redisDown(ctx, err)
				continue
			}
			ready = true
		}
		job, ok, err := w.queue.NextJob(ctx, consumer, 2*time.Second, w.cfg.IdleTimeout)
		if err != nil {
			if ctx.Err() == nil {
				w.redisDown(ctx, err)
				ready = false
			}
			continue
		}
		if ok {
			w.run(ctx, consumer, job)
		}
	}
}

func (w *Worker) redisDown(ctx context.Context, err error) {
	if ok, n := w.warn.Allow(); ok {
		w.log.Warn("job queue unavailable; retrying", "err", err, "suppressed_since_last", n)
	}
	select {
	case <-ctx.Done():
	case <-time.After(pause):
	}
}

// watchQueue keeps the queue-depth gauges current.
func (w *Worker) watchQueue(ctx context.Context) {
	t := time.NewTicker(5 * time.Second)
	defer t.Stop()
	for {
		if st, err := w.queue.JobQueue(ctx); err == nil {
			w.depth.WithLabelValues("waiting").Set(float64(st.Waiting))
			w.depth.WithLabelValues("running").Set(float64(st.Running))
		}
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
	}
}

// run makes one attempt at job.
func (w *Worker) run(ctx context.Context, consumer string, job routing.Job) {
	log := w.log.With("video", job.VideoID, "job", job.EntryID)
	if !ids.Valid(job.VideoID) {
		// Not something Shoal queued; drop it.
		log.Warn("dropping a job with an invalid video id")
		_, _ = w.queue.StartJob(ctx, job, consumer, 0)
		return
	}
	st, err := w.queue.StartJob(ctx, job, consumer, w.cfg.MaxAttempts)
	if err != nil {
		w.redisDown(ctx, err)
		return
	}
	if st.Skip != "" {
		w.jobs.WithLabelValues("skipped").Inc()
		log.Info("job skipped", "reason", st.Skip)
		return
	}
	if job.Reclaimed {
		log.Warn("took over a job from a worker that stopped", "from", job.From, "attempt", st.Attempt)
	}
	w.running.Inc()
	defer w.running.Dec()
	began := time.Now()
	log = log.With("attempt", st.Attempt)
	log.Info("processing video", "title", st.Video.Title, "source_bytes", st.Video.SourceBytes)

	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var progress atomic.Int64
	var g errgroup.Group
	g.Go(func() error { w.keepAlive(jobCtx, cancel, consumer, job, st.Attempt, &progress); return nil })
	out, staging, err := w.process(jobCtx, job.VideoID, st, func(f float64) { progress.Store(int64(f * 99)) })
	defer os.RemoveAll(staging)
	// The output is published while the job is still touched (a long
	// upload to S3 must not let another worker take the job over), and
	// only while this attempt holds it.
	var perr error
	if err == nil && jobCtx.Err() == nil {
		perr = w.publish(jobCtx, job, st.Attempt, consumer, filepath.Join(staging, job.VideoID))
	}
	lost := context.Cause(jobCtx)
	cancel(nil)
	_ = g.Wait()

	if lost == nil && errors.Is(perr, routing.ErrJobLost) {
		lost = perr
	}
	switch {
	case errors.Is(lost, routing.ErrJobLost):
		if errors.Is(lost, routing.ErrVideoDeleted) {
			// Deleted while its output went up: what went up goes too.
			_ = w.cfg.Files.HLS().DeletePrefix(ctx, job.VideoID+"/")
		}
		w.jobs.WithLabelValues("lost").Inc()
		log.Warn("job lost (taken over or deleted); output discarded", "reason", lost)
		return
	case ctx.Err() != nil:
		log.Info("shutting down: the job stays queued for another worker")
		return
	case err != nil:
		permanent := errors.Is(err, ffmpeg.ErrNotVideo)
		retry, ferr := w.queue.FailJob(ctx, job, st.Attempt, describe(err), permanent, w.cfg.MaxAttempts)
		if ferr != nil {
			log.Error("recording a failed job", "err", ferr, "job_err", err)
			return
		}
		if retry {
			w.jobs.WithLabelValues("retry").Inc()
			log.Warn("job failed; queued again", "err", err)
		} else {
			w.jobs.WithLabelValues("failed").Inc()
			log.Warn("video failed", "err", err)
			w.keepRecord(ctx, job.VideoID, log)
		}
		return
	}
	if perr != nil {
		_, _ = w.queue.FailJob(ctx, job, st.Attempt, "publishing the output failed: "+perr.Error(), false, w.cfg.MaxAttempts)
		w.jobs.WithLabelValues("retry").Inc()
		log.Error("publishing the output", "err", perr)
		return
	}
	if err := w.queue.FinishJob(ctx, job, st.Attempt, out); err != nil {
		if errors.Is(err, routing.ErrJobLost) {
			// Deleted meanwhile: take the files back. (Taken over: the
			// other attempt's output, identical, replaces this one.)
			if errors.Is(err, routing.ErrVideoDeleted) {
				_ = w.cfg.Files.HLS().DeletePrefix(ctx, job.VideoID+"/")
			}
			w.jobs.WithLabelValues("lost").Inc()
			log.Warn("job lost before it could finish", "err", err)
			return
		}
		log.Error("recording a finished job; it will be retried", "err", err)
		return
	}
	w.keepRecord(ctx, job.VideoID, log)
	w.jobs.WithLabelValues("ready").Inc()
	w.duration.Observe(time.Since(began).Seconds())
	log.Info("video ready", "duration", out.Duration, "renditions", len(out.Renditions), "took", time.Since(began).Round(time.Millisecond))
}

// keepRecord saves a copy of the video's record next to its source, for a
// Redis that loses its data (Files.SaveRecord); best effort.
func (w *Worker) keepRecord(ctx context.Context, id string, log *slog.Logger) {
	KeepRecord(ctx, w.cfg.Files, w.queue, id, log)
}

// RecordSource reads a video's record as Redis holds it; *routing.Store
// implements it.
type RecordSource interface {
	VideoFields(ctx context.Context, id string) (map[string]string, error)
}

// KeepRecord saves a copy of video id's record, read from q, next to its
// source in files, for a Redis that loses its data (Files.SaveRecord);
// best effort: a failure is logged.
func KeepRecord(ctx context.Context, files Files, q RecordSource, id string, log *slog.Logger) {
	fields, err := q.VideoFields(ctx, id)
	if err == nil {
		err = files.SaveRecord(id, fields)
	}
	if err == nil {
		// Deleted while the copy was written: it must not outlive it.
		if _, err = q.VideoFields(ctx, id); errors.Is(err, routing.ErrNotFound) {
			err = files.DropRecord(id)
		}
	}
	if err != nil && !errors.Is(err, routing.ErrNotFound) {
		log.Warn("keeping a copy of the video's record", "video", id, "err", err)
	}
}

// keepAlive touches the job with its progress every IdleTimeout/4 (at most
// every second, so that uploaders see progress move); when the attempt no
// longer owns the job it cancels the job with ErrJobLost.
func (w *Worker) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, consumer string, job routing.Job, attempt int, progress *atomic.Int64) {
	t := time.NewTicker(min(w.cfg.IdleTimeout/4, time.Second))
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		err := w.queue.TouchJob(ctx, job, consumer, attempt, int(progress.Load()))
		if errors.Is(err, routing.ErrJobLost) {
			cancel(err)
			return
		}
		if err != nil && ctx.Err() == nil {
			if ok, n := w.warn.Allow(); ok {
				w.log.Warn("could not touch the job; retrying", "video", job.VideoID, "err", err, "suppressed_since_last", n)
			}
		}
	}
}

// process transcodes into a fresh staging directory, whose path it
// returns (the output is its subdirectory <id>; the caller removes what is
// left of it).
func (w *Worker) process(ctx context.Context, id string, st routing.JobStart, progress func(float64)) (routing.JobOutcome, string, error) {
	stagingRoot := filepath.Join(w.cfg.Files.WorkDir, StagingDir)
	removeStaleStaging(stagingRoot, id, st.Attempt, w.log)
	staging := filepath.Join(stagingRoot, fmt.Sprintf("%s-%d-%s", id, st.Attempt, ids.New()[:6]))
	if err := os.MkdirAll(staging, 0o755); err != nil {
		return routing.JobOutcome{}, staging, err
	}
	// A source missing from the store is retried like any other failure
	// (a store that is down, or a replica not there yet), never taken for
	// a file that is not a video: the attempts bound it.
	src, done, err := w.cfg.Files.FetchSource(ctx, id)
	if err != nil {
		return routing.JobOutcome{}, staging, fmt.Errorf("reading the uploaded source: %w", err)
	}
	defer done()
	ladder := w.cfg.Ladder
	if st.Video.Ladder != "" {
		l, err := media.ParseLadder(st.Video.Ladder)
		if err != nil {
			return routing.JobOutcome{}, staging, fmt.Errorf("%w: the video's ladder: %v", ffmpeg.ErrNotVideo, err)
		}
		ladder = l
	}
	s := Settings{Backend: w.cfg.Backend, Preset: w.cfg.Preset, SegmentDuration: w.cfg.SegmentDuration, NewPackager: w.newPackager,
		Log: w.log.With("video", id)}
	s.GPU = ffmpeg.LeastBusy(w.cfg.GPUs)
	out, err := TranscodeJob(ctx, s, id, src, staging, ladder, progress)
	return out, staging, err
}

// TranscodeJob is Transcode as a VOD job runs it, into the empty
// directory staging: when a hardware backend or GPU fails on the file
// (and the file is a video), the job is done again on the CPU.
func TranscodeJob(ctx context.Context, s Settings, id, src, staging string, ladder media.Ladder, progress func(float64)) (routing.JobOutcome, error) {
	out, err := Transcode(ctx, s, id, src, staging, ladder, progress)
	if err != nil && (s.Backend != ffmpeg.BackendSoftware || s.GPU != nil) && ctx.Err() == nil && !errors.Is(err, ffmpeg.ErrNotVideo) {
		if s.Log != nil {
			s.Log.Warn("hardware transcoding failed; retrying the job on the CPU", "video", id, "backend", s.Backend, "err", err)
		}
		if err := os.RemoveAll(staging); err != nil {
			return routing.JobOutcome{}, err
		}
		if err := os.MkdirAll(staging, 0o755); err != nil {
			return routing.JobOutcome{}, err
		}
		s.Backend, s.GPU = ffmpeg.BackendSoftware, nil
		out, err = Transcode(ctx, s, id, src, staging, ladder, progress)
	}
	return out, err
}

// removeStaleStaging removes what earlier attempts at video id left in
// the staging area: they are fenced out (a worker that died, or one that
// lost its job), so nothing will finish them.
func removeStaleStaging(root, id string, attempt int, log *slog.Logger) {
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		rest, ok := strings.CutPrefix(e.Name(), id+"-")
		if !ok {
			continue
		}
		n, _, _ := strings.Cut(rest, "-")
		if a, err := strconv.Atoi(n); err == nil && a < attempt {
			if err := os.RemoveAll(filepath.Join(root, e.Name())); err == nil {
				log.Info("removed the output of an earlier attempt", "video", id, "dir", e.Name())
			}
		}
	}
}

// publishConcurrency bounds the uploads of one publish at once.
const publishConcurrency = 8

// publish puts the complete tree in dir into the store as video job's HLS
// (Publish), once the queue says this attempt still holds the job.
func (w *Worker) publish(ctx context.Context, job routing.Job, attempt int, consumer, dir string) error {
	if err := w.queue.TouchJob(ctx, job, consumer, attempt, 99); err != nil {
		return fmt.Errorf("before publishing: %w", err)
	}
	return Publish(ctx, w.cfg.Files.HLS(), job.VideoID, dir)
}

// Publish puts the complete HLS tree in dir into hls (the store's HLS
// part, Files.HLS) as video id's, replacing what an earlier attempt left:
// that is removed first, then the media files go in, then the rendition
// playlists, then the master playlist, so that a tree with a master
// playlist is whole. The caller checks first that its attempt still holds
// the job: a stale attempt must never delete a tree another one published.
func Publish(ctx context.Context, hls storage.Store, id, dir string) error {
	if err := hls.DeletePrefix(ctx, id+"/"); err != nil {
		return fmt.Errorf("removing an earlier attempt's output: %w", err)
	}
	var media, playlists []string
	var master string
	err := filepath.WalkDir(dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(dir, p)
		if err != nil {
			return err
		}
		switch rel = filepath.ToSlash(rel); {
		case rel == "master.m3u8":
			master = rel
		case strings.HasSuffix(rel, ".m3u8"):
			playlists = append(playlists, rel)
		default:
			media = append(media, rel)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if master == "" {
		return errors.New("the output has no master playlist")
	}
	for _, batch := range [][]string{media, playlists, {master}} {
		g, gctx := errgroup.WithContext(ctx)
		g.SetLimit(publishConcurrency)
		for _, rel := range batch {
			g.Go(func() error {
				_, err := storage.PutFile(gctx, hls, id+"/"+rel, filepath.Join(dir, filepath.FromSlash(rel)), true)
				return err
			})
		}
		if err := g.Wait(); err != nil {
			return err
		}
	}
	return nil
}

// describe turns an error into the message a person reads in the video's
// "error" field.
func describe(err error) string {
	msg := err.Error()
	if i := strings.Index(msg, ffmpeg.ErrNotVideo.Error()); i > 0 {
		msg = msg[i:]
	}
	return msg
}
