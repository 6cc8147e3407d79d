// Package remote runs VOD jobs on remote workers: machines that strangers
// may run, which join the origin with a node token and an ed25519 identity
// (like edges) and never touch Redis or the origin's disk (the worker
// protocol, internal/nodeproto's worker.go).
//
// Origin is the origin's side: it claims jobs from the Redis job queue on
// a worker's behalf, serves the source, keeps the job alive while the
// worker reports progress, receives the output files into a staging
// directory of its own, and publishes them only once they pass its checks
// (checks.go), exactly as a local VOD worker publishes. Worker is the
// worker's side: claim, download, transcode locally with vod.Transcode,
// upload, complete.
package remote

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/vod"
)

// Queue is the job queue and the records the origin's side works with;
// *routing.Store implements it.
type Queue interface {
	EnsureJobQueue(ctx context.Context) error
	NextJob(ctx context.Context, consumer string, block, minIdle time.Duration) (routing.Job, bool, error)
	StartJob(ctx context.Context, job routing.Job, consumer string, maxAttempts int) (routing.JobStart, error)
	TouchJob(ctx context.Context, job routing.Job, consumer string, attempt, progress int) error
	FinishJob(ctx context.Context, job routing.Job, attempt int, out routing.JobOutcome) error
	FailJob(ctx context.Context, job routing.Job, attempt int, msg string, permanent bool, maxAttempts int) (bool, error)
	JobHolder(ctx context.Context, id string) (routing.JobHolder, error)
	GetVideo(ctx context.Context, id string) (routing.Video, error)
	VideoFields(ctx context.Context, id string) (map[string]string, error)
	AddWorkerOutcome(ctx context.Context, id, outcome, reason string) error
}

// Config configures the origin's side.
type Config struct {
	// Files are the media store (sources, published HLS), the record
	// copies and the work directory, below which the outputs being
	// uploaded are staged (StagingDir).
	Files vod.Files
	// Ladder is the default ladder (a video may have its own), Preset the
	// x264 preset and SegmentDuration the HLS segment length the workers
	// are told to use.
	Ladder          media.Ladder
	Preset          string
	SegmentDuration time.Duration
	// IdleTimeout is the job queue's: a job not touched for so long goes
	// to another worker. MaxAttempts bounds the attempts at one job.
	IdleTimeout time.Duration
	MaxAttempts int
	// PresignTTL is how long a presigned source URL lasts, where the media
	// store makes them (storage.Presigner); 0: 6 hours.
	PresignTTL time.Duration
}

// StagingDir is the directory below Files.WorkDir where the outputs of
// remote jobs arrive, one directory per attempt.
const StagingDir = "remote"

// Deps are the origin side's collaborators.
type Deps struct {
	Queue      Queue
	Log        *slog.Logger
	Registerer prometheus.Registerer
}

// Origin is the origin's side of remote VOD jobs. Its methods take the id
// of the node that asks, which the caller authenticated (a joined worker,
// its request signed with its key): a node may act only on the jobs it
// claimed.
type Origin struct {
	cfg   Config
	queue Queue
	log   *slog.Logger
	jobs  *prometheus.CounterVec

	ensureMu sync.Mutex
	ensured  bool // the job queue's consumer group exists
	mu       sync.Mutex
	staged   map[string]*staged // by JobRef
	swept    time.Time
}

// staged is what one attempt has uploaded so far.
type staged struct {
	dir    string
	budget int64
	used   int64
	files  map[string]int64 // path -> size
	busy   map[string]bool  // paths being written
	// sealed: a completion began, so the files are what it checks and
	// publishes: no upload may change them any more.
	sealed bool
	// completing: a completion is running (another waits its answer).
	completing bool
}

// New validates cfg.
func New(cfg Config, deps Deps) (*Origin, error) {
	var errs []error
	if deps.Queue == nil {
		errs = append(errs, errors.New("remote: a Queue is required"))
	}
	if cfg.Files.Store == nil || cfg.Files.WorkDir == "" || cfg.Files.RecordDir == "" {
		errs = append(errs, errors.New("remote: Files.Store, Files.WorkDir and Files.RecordDir are required"))
	}
	if len(cfg.Ladder) == 0 {
		errs = append(errs, errors.New("remote: an empty default ladder"))
	}
	if cfg.SegmentDuration <= 0 {
		errs = append(errs, errors.New("remote: the segment duration must be positive"))
	}
	if cfg.IdleTimeout < time.Second {
		errs = append(errs, fmt.Errorf("remote: the idle timeout must be at least 1s, got %s", cfg.IdleTimeout))
	}
	if cfg.MaxAttempts < 1 {
		errs = append(errs, fmt.Errorf("remote: max attempts must be at least 1, got %d", cfg.MaxAttempts))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.PresignTTL <= 0 {
		cfg.PresignTTL = 6 * time.Hour
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	o := &Origin{cfg: cfg, queue: deps.Queue, log: deps.Log, staged: map[string]*staged{},
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_vod_remote_jobs_total",
			Help: "VOD job attempts of remote workers by outcome: claimed, ready, rejected (the output failed the origin's checks), failed (the worker reported a failure), lost (taken away meanwhile).",
		}, []string{"outcome"}),
	}
	for _, outcome := range []string{"claimed", "ready", "rejected", "failed", "lost"} {
		o.jobs.WithLabelValues(outcome)
	}
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(o.jobs); err != nil {
			return nil, fmt.Errorf("remote: register metrics: %w", err)
		}
	}
	return o, nil
}

// protoError is an answer of the worker protocol other than success.
func protoError(status int, code, format string, args ...any) error {
	return &nodeproto.WorkerError{Status: status, Code: code, Message: fmt.Sprintf(format, args...)}
}

func gone(why string) error {
	return protoError(http.StatusGone, nodeproto.CodeJobGone, "this job is no longer yours: %s; drop it", why)
}

// consumer is the job queue consumer a node claims as: its id.
func consumer(node string) string { return node }

// progressInterval is how often workers report progress: as often as
// local workers touch their jobs.
func (o *Origin) progressInterval() time.Duration { return min(o.cfg.IdleTimeout/4, time.Second) }

// Claim claims a job for node from the queue, or reports none (ok false)
// without waiting. A job taken over from a worker that stopped touching it
// is claimed before new ones.
func (o *Origin) Claim(ctx context.Context, node string) (job nodeproto.WorkerJob, ok bool, err error) {
	if err := o.ensureQueue(ctx); err != nil {
		return nodeproto.WorkerJob{}, false, err
	}
	o.sweep(ctx)
	c := consumer(node)
	// A few entries may be skipped (deleted videos, duplicates): more are
	// left for the next claim.
	for range 8 {
		// No BLOCK (negative): a claim never holds a Redis connection
		// waiting; the worker backs off.
		j, ok, err := o.queue.NextJob(ctx, c, -1, o.cfg.IdleTimeout)
		if err != nil || !ok {
			return nodeproto.WorkerJob{}, false, err
		}
		log := o.log.With("video", j.VideoID, "job", j.EntryID, "node", node)
		if !ids.Valid(j.VideoID) {
			log.Warn("dropping a job with an invalid video id")
			_, _ = o.queue.StartJob(ctx, j, c, 0)
			continue
		}
		st, err := o.queue.StartJob(ctx, j, c, o.cfg.MaxAttempts)
		if err != nil {
			return nodeproto.WorkerJob{}, false, err
		}
		if st.Skip != "" {
			log.Info("job skipped", "reason", st.Skip)
			continue
		}
		ref := nodeproto.JobRef{VideoID: j.VideoID, Attempt: st.Attempt, Entry: j.EntryID}
		ladder, err := o.ladderOf(st.Video)
		if err != nil {
			// As a local worker does: the video's own ladder is unusable.
			_, _ = o.queue.FailJob(ctx, j, st.Attempt, fmt.Sprintf("%s: the video's ladder: %v", ffmpeg.ErrNotVideo, err), true, o.cfg.MaxAttempts)
			continue
		}
		size := st.Video.SourceBytes
		if size <= 0 {
			if size, err = o.cfg.Files.SourceSize(ctx, j.VideoID); err != nil {
				_, _ = o.queue.FailJob(ctx, j, st.Attempt, "reading the uploaded source: "+err.Error(), false, o.cfg.MaxAttempts)
				return nodeproto.WorkerJob{}, false, err
			}
		}
		if j.Reclaimed {
			log.Warn("a remote worker took over a job from a worker that stopped", "from", j.From, "attempt", st.Attempt)
		} else {
			log.Info("a remote worker claimed a job", "attempt", st.Attempt)
		}
		o.jobs.WithLabelValues("claimed").Inc()
		out := nodeproto.WorkerJob{
			Job: ref.String(), VideoID: ref.VideoID, Attempt: ref.Attempt,
			Ladder: ladder.String(), Preset: o.cfg.Preset, SegmentDurationSeconds: o.cfg.SegmentDuration.Seconds(),
			SourceBytes: size, SourceURL: nodeproto.WorkerPrefix + "/jobs/" + ref.String() + "/source",
			ProgressIntervalSeconds: o.progressInterval().Seconds(),
			MaxFileBytes:            nodeproto.MaxOutputFileBytes, MaxOutputBytes: o.budget(st.Video, ladder),
		}
		if p, ok := o.cfg.Files.Store.(storage.Presigner); ok {
			if u, err := p.PresignGet(ctx, vod.SourceKey(ref.VideoID), o.cfg.PresignTTL); err == nil {
				out.SourcePresignedURL = u
			} else {
				log.Debug("no presigned URL for the source; the origin serves it", "err", err)
			}
		}
		return out, true, nil
	}
	return nodeproto.WorkerJob{}, false, nil
}

// ensureQueue makes the job queue's consumer group, once.
func (o *Origin) ensureQueue(ctx context.Context) error {
	o.ensureMu.Lock()
	defer o.ensureMu.Unlock()
	if o.ensured {
		return nil
	}
	if err := o.queue.EnsureJobQueue(ctx); err != nil {
		return err
	}
	o.ensured = true
	return nil
}

// ladderOf is the ladder video v is transcoded to: its own, or the
// default.
func (o *Origin) ladderOf(v routing.Video) (media.Ladder, error) {
	if v.Ladder == "" {
		return o.cfg.Ladder, nil
	}
	return media.ParseLadder(v.Ladder)
}

// budget bounds the bytes one output of v may take in staging: four times
// what its rungs and an audio track make at their bitrates over the
// source's duration, and 64 MiB for playlists and stills.
func (o *Origin) budget(v routing.Video, ladder media.Ladder) int64 {
	bps := 256_000
	for _, r := range ladder.For(v.SourceHeight) {
		bps += r.Bitrate
	}
	d := max(v.Duration, time.Minute)
	return int64(float64(bps)/8*d.Seconds())*4 + 64<<20
}

// hold checks that node holds attempt ref of the job, and returns the job.
func (o *Origin) hold(ctx context.Context, node string, ref nodeproto.JobRef) (routing.Job, error) {
	h, err := o.queue.JobHolder(ctx, ref.VideoID)
	if errors.Is(err, routing.ErrNotFound) {
		return routing.Job{}, gone("the video was deleted")
	}
	if err != nil {
		return routing.Job{}, err
	}
	if h.Status != routing.VideoProcessing || h.Attempt != ref.Attempt || h.Entry != ref.Entry {
		return routing.Job{}, gone(fmt.Sprintf("the video is %s, at attempt %d", h.Status, h.Attempt))
	}
	if h.Worker != consumer(node) {
		return routing.Job{}, protoError(http.StatusForbidden, nodeproto.CodeNotYourJob, "another worker holds this job")
	}
	return routing.Job{EntryID: ref.Entry, VideoID: ref.VideoID}, nil
}

// OpenSource opens the bytes rng of the source of ref's video, for node.
func (o *Origin) OpenSource(ctx context.Context, node string, ref nodeproto.JobRef, rng storage.Range) (io.ReadCloser, storage.Info, error) {
	if _, err := o.hold(ctx, node, ref); err != nil {
		return nil, storage.Info{}, err
	}
	return o.cfg.Files.Store.Get(ctx, vod.SourceKey(ref.VideoID), rng)
}

// Progress records node's progress (0 to 100) on ref and keeps the job
// from going to another worker.
func (o *Origin) Progress(ctx context.Context, node string, ref nodeproto.JobRef, progress int) error {
	job, err := o.hold(ctx, node, ref)
	if err != nil {
		return err
	}
	// The last percent is publishing's.
	return o.touch(ctx, job, node, ref.Attempt, min(progress, 99))
}

func (o *Origin) touch(ctx context.Context, job routing.Job, node string, attempt, progress int) error {
	err := o.queue.TouchJob(ctx, job, consumer(node), attempt, progress)
	if errors.Is(err, routing.ErrJobLost) {
		return gone(err.Error())
	}
	return err
}

// stagingDir is where ref's output arrives.
func (o *Origin) stagingDir(ref nodeproto.JobRef) string {
	return filepath.Join(o.cfg.Files.WorkDir, StagingDir, ref.String())
}

// stage returns what ref has uploaded so far, reading the staging
// directory when this process has not seen it (a restart).
func (o *Origin) stage(ctx context.Context, ref nodeproto.JobRef) (*staged, error) {
	key := ref.String()
	o.mu.Lock()
	s := o.staged[key]
	o.mu.Unlock()
	if s != nil {
		return s, nil
	}
	v, err := o.queue.GetVideo(ctx, ref.VideoID)
	if err != nil {
		return nil, err
	}
	ladder, err := o.ladderOf(v)
	if err != nil {
		return nil, err
	}
	s = &staged{dir: o.stagingDir(ref), budget: o.budget(v, ladder), files: map[string]int64{}, busy: map[string]bool{}}
	_ = filepath.WalkDir(s.dir, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return nil
		}
		rel, _ := filepath.Rel(s.dir, p)
		rel = filepath.ToSlash(rel)
		if nodeproto.CheckOutputPath(rel) != nil {
			_ = os.Remove(p) // a temporary file of an interrupted upload
			return nil
		}
		if info, err := d.Info(); err == nil {
			s.files[rel] = info.Size()
			s.used += info.Size()
		}
		return nil
	})
	o.mu.Lock()
	defer o.mu.Unlock()
	if cur := o.staged[key]; cur != nil {
		return cur, nil
	}
	o.staged[key] = s
	return s, nil
}

// drop forgets and removes ref's staging.
func (o *Origin) drop(ref nodeproto.JobRef) {
	o.mu.Lock()
	delete(o.staged, ref.String())
	o.mu.Unlock()
	if err := os.RemoveAll(o.stagingDir(ref)); err != nil {
		o.log.Warn("removing a remote job's staging", "job", ref.String(), "err", err)
	}
}

// PutFile receives the file path of ref's output from node: size bytes
// of body whose hex SHA-256 is sum (both declared, and signed, before the
// body). The file is kept only if the bytes match; one sent again
// replaces the earlier.
func (o *Origin) PutFile(ctx context.Context, node string, ref nodeproto.JobRef, path string, size int64, sum string, body io.Reader) error {
	if err := nodeproto.CheckOutputPath(path); err != nil {
		return protoError(http.StatusBadRequest, nodeproto.CodeBadOutputPath, "%s", err.Error())
	}
	if limit := nodeproto.MaxFileBytes(path); size > limit {
		return protoError(http.StatusRequestEntityTooLarge, nodeproto.CodeTooLarge, "%s is %d bytes: a file of this kind may have at most %d", path, size, limit)
	}
	if !nodeproto.ValidSHA256(sum) {
		return protoError(http.StatusBadRequest, "invalid_request", "%s must be the body's SHA-256 in lower-case hex", nodeproto.ContentSHA256Header)
	}
	if _, err := o.hold(ctx, node, ref); err != nil {
		return err
	}
	s, err := o.stage(ctx, ref)
	if err != nil {
		return err
	}
	// Reserve the room first: uploads of one job run side by side.
	o.mu.Lock()
	if s.sealed {
		o.mu.Unlock()
		return protoError(http.StatusConflict, "conflict", "this job's output is being completed: its files can no longer change")
	}
	if s.busy[path] {
		o.mu.Unlock()
		return protoError(http.StatusConflict, "conflict", "%s is being uploaded already", path)
	}
	old := s.files[path]
	if s.used-old+size > s.budget {
		o.mu.Unlock()
		return protoError(http.StatusRequestEntityTooLarge, nodeproto.CodeTooLarge,
			"this output would take more than the %d bytes it may (its ladder's bitrates over the source's duration, with a margin)", s.budget)
	}
	s.busy[path] = true
	s.used += size
	o.mu.Unlock()
	ok := false
	defer func() {
		o.mu.Lock()
		delete(s.busy, path)
		if ok {
			s.used -= old
			s.files[path] = size
		} else {
			s.used -= size
		}
		o.mu.Unlock()
	}()
	dst := filepath.Join(s.dir, filepath.FromSlash(path))
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		return err
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	h := sha256.New()
	n, err := io.Copy(io.MultiWriter(f, h), io.LimitReader(body, size+1))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		// The worker's connection broke off: its business, not the
		// origin's trouble.
		return protoError(http.StatusBadRequest, "invalid_request", "receiving %s: %v", path, err)
	}
	if n != size {
		return protoError(http.StatusBadRequest, nodeproto.CodeHashMismatch, "%s: the body has %d bytes, %d were declared", path, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return protoError(http.StatusBadRequest, nodeproto.CodeHashMismatch, "%s: the body's SHA-256 is %s, %s was declared", path, got, sum)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return err
	}
	ok = true
	return nil
}

// Fail ends node's attempt ref with f. A worker is not trusted to fail a
// video for good on its own word: a permanent failure ("not a video") is
// retried like any other, and the video fails with its message once the
// attempts run out (a source the origin's probe accepted at upload is
// rarely beyond every worker).
func (o *Origin) Fail(ctx context.Context, node string, ref nodeproto.JobRef, f nodeproto.Failure) (nodeproto.Failed, error) {
	job, err := o.hold(ctx, node, ref)
	if err != nil {
		return nodeproto.Failed{}, err
	}
	defer o.drop(ref)
	retry, err := o.queue.FailJob(ctx, job, ref.Attempt, strings.TrimSpace(f.Error), false, o.cfg.MaxAttempts)
	if errors.Is(err, routing.ErrJobLost) {
		return nodeproto.Failed{}, gone(err.Error())
	}
	if err != nil {
		return nodeproto.Failed{}, err
	}
	o.jobs.WithLabelValues("failed").Inc()
	if err := o.queue.AddWorkerOutcome(ctx, node, routing.WorkFailed, ""); err != nil {
		o.log.Warn("counting a worker's failure", "node", node, "err", err)
	}
	o.log.Warn("a remote worker reported a failure", "node", node, "video", ref.VideoID, "attempt", ref.Attempt,
		"permanent", f.Permanent, "retry", retry, "err", f.Error)
	return nodeproto.Failed{Retry: retry}, nil
}

// Complete checks the output node uploaded for ref against its manifest
// m and the origin's own knowledge of the source (checks.go), then
// publishes it as a local worker does (media, rendition playlists,
// master, then the video is ready) and ends the job. An output that fails
// a check is refused (422): the attempt fails (retried by the queue's
// rules, by this worker or another) and the node's record counts it.
func (o *Origin) Complete(ctx context.Context, node string, ref nodeproto.JobRef, m nodeproto.Complete) error {
	if m.Job != ref.String() {
		return protoError(http.StatusBadRequest, "invalid_request", `the manifest's "job" is %q, not the job it is sent for`, m.Job)
	}
	job, err := o.hold(ctx, node, ref)
	if err != nil {
		return err
	}
	log := o.log.With("video", ref.VideoID, "attempt", ref.Attempt, "node", node)
	v, err := o.queue.GetVideo(ctx, ref.VideoID)
	if err != nil {
		return err
	}
	// From now on the staged files are what is checked and published: no
	// upload may replace one between its check and its publication, and
	// one completion runs at a time.
	s, err := o.stage(ctx, ref)
	if err != nil {
		return err
	}
	o.mu.Lock()
	switch {
	case s.completing:
		o.mu.Unlock()
		return protoError(http.StatusConflict, "conflict", "this job is being completed already")
	case len(s.busy) > 0:
		o.mu.Unlock()
		return protoError(http.StatusConflict, "conflict", "files of this job are still being uploaded: complete once every upload is answered")
	}
	s.sealed, s.completing = true, true
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		s.completing = false
		o.mu.Unlock()
	}()
	if err := o.touch(ctx, job, node, ref.Attempt, 99); err != nil {
		return err
	}
	// The job is kept alive while the output is checked and published
	// (hashing and a long upload to S3 must not let it go elsewhere), and
	// only while this attempt holds it.
	jobCtx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	var wg sync.WaitGroup
	wg.Add(1)
	go func() { defer wg.Done(); o.keepAlive(jobCtx, cancel, job, node, ref.Attempt) }()
	defer wg.Wait()
	defer cancel(nil)

	out, err := o.check(jobCtx, ref, v, m)
	if lost := context.Cause(jobCtx); lost != nil && errors.Is(lost, routing.ErrJobLost) {
		o.jobs.WithLabelValues("lost").Inc()
		o.drop(ref)
		return gone(lost.Error())
	}
	var rej *rejection
	if errors.As(err, &rej) {
		return o.reject(ctx, node, ref, job, rej.reason, log)
	}
	if err != nil {
		return err // the store or Redis: the worker may complete again
	}
	if err := vod.Publish(jobCtx, o.cfg.Files.HLS(), ref.VideoID, o.stagingDir(ref)); err != nil {
		if lost := context.Cause(jobCtx); errors.Is(lost, routing.ErrJobLost) {
			o.jobs.WithLabelValues("lost").Inc()
			o.drop(ref)
			if errors.Is(lost, routing.ErrVideoDeleted) {
				_ = o.cfg.Files.HLS().DeletePrefix(ctx, ref.VideoID+"/")
			}
			return gone(lost.Error())
		}
		log.Error("publishing a remote worker's output", "err", err)
		return fmt.Errorf("publishing the output: %w", err)
	}
	cancel(nil)
	wg.Wait()
	if err := o.queue.FinishJob(ctx, job, ref.Attempt, out); err != nil {
		if errors.Is(err, routing.ErrJobLost) {
			if errors.Is(err, routing.ErrVideoDeleted) {
				_ = o.cfg.Files.HLS().DeletePrefix(ctx, ref.VideoID+"/")
			}
			o.jobs.WithLabelValues("lost").Inc()
			o.drop(ref)
			return gone(err.Error())
		}
		return err
	}
	o.drop(ref)
	vod.KeepRecord(ctx, o.cfg.Files, o.queue, ref.VideoID, log)
	o.jobs.WithLabelValues("ready").Inc()
	if err := o.queue.AddWorkerOutcome(ctx, node, routing.WorkDone, ""); err != nil {
		log.Warn("counting a worker's job", "err", err)
	}
	log.Info("video ready (remote worker)", "duration", out.Duration, "renditions", len(out.Renditions))
	return nil
}

// reject refuses an output: the attempt fails, the node's record notes it.
func (o *Origin) reject(ctx context.Context, node string, ref nodeproto.JobRef, job routing.Job, reason string, log *slog.Logger) error {
	o.drop(ref)
	o.jobs.WithLabelValues("rejected").Inc()
	log.Warn("refused a remote worker's output", "reason", reason)
	if err := o.queue.AddWorkerOutcome(ctx, node, routing.WorkRejected, reason); err != nil {
		log.Warn("counting a worker's refused output", "err", err)
	}
	_, err := o.queue.FailJob(ctx, job, ref.Attempt, "the output of worker "+node+" was refused: "+reason, false, o.cfg.MaxAttempts)
	if err != nil && !errors.Is(err, routing.ErrJobLost) {
		log.Error("recording a refused output's job", "err", err)
	}
	return protoError(http.StatusUnprocessableEntity, nodeproto.CodeOutputRejected, "the output was refused: %s", reason)
}

// keepAlive touches the job every progress interval until ctx is done;
// when the attempt no longer holds it, it cancels ctx with the reason.
func (o *Origin) keepAlive(ctx context.Context, cancel context.CancelCauseFunc, job routing.Job, node string, attempt int) {
	t := time.NewTicker(o.progressInterval())
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
		}
		if err := o.queue.TouchJob(ctx, job, consumer(node), attempt, 99); errors.Is(err, routing.ErrJobLost) {
			cancel(err)
			return
		}
	}
}

// check runs the checks on ref's staged output (checks.go) and returns
// what the finished job records.
func (o *Origin) check(ctx context.Context, ref nodeproto.JobRef, v routing.Video, m nodeproto.Complete) (routing.JobOutcome, error) {
	ladder, err := o.ladderOf(v)
	if err != nil {
		return routing.JobOutcome{}, err
	}
	w, h := v.SourceWidth, v.SourceHeight
	if h <= 0 {
		// Uploaded before the size was recorded: the origin probes it.
		if w, h, err = o.probeSize(ctx, ref.VideoID); err != nil {
			return routing.JobOutcome{}, fmt.Errorf("probing the source: %w", err)
		}
	}
	return checkOutput(ctx, output{
		dir: o.stagingDir(ref), manifest: m, rungs: ladder.For(h), sourceWidth: w, sourceHeight: h,
		source: v.Duration, segment: o.cfg.SegmentDuration,
	})
}

func (o *Origin) probeSize(ctx context.Context, id string) (int, int, error) {
	src, done, err := o.cfg.Files.FetchSource(ctx, id)
	if err != nil {
		return 0, 0, err
	}
	defer done()
	info, err := ffmpeg.ProbeFile(src)
	if err != nil {
		return 0, 0, err
	}
	return info.Width, info.Height, nil
}

// sweepEvery bounds how often a claim looks for staging directories that
// no attempt will finish.
const sweepEvery = time.Minute

// sweep removes the staging of attempts that no longer hold their job (a
// worker that died, or whose job went elsewhere): nothing will complete
// them.
func (o *Origin) sweep(ctx context.Context) {
	o.mu.Lock()
	if time.Since(o.swept) < sweepEvery {
		o.mu.Unlock()
		return
	}
	o.swept = time.Now()
	o.mu.Unlock()
	root := filepath.Join(o.cfg.Files.WorkDir, StagingDir)
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for i, e := range ents {
		if i >= 1000 || ctx.Err() != nil {
			return
		}
		ref, err := nodeproto.ParseJobRef(e.Name())
		if err != nil {
			_ = os.RemoveAll(filepath.Join(root, e.Name()))
			continue
		}
		h, err := o.queue.JobHolder(ctx, ref.VideoID)
		if errors.Is(err, routing.ErrNotFound) || (err == nil && (h.Status != routing.VideoProcessing || h.Attempt != ref.Attempt || h.Entry != ref.Entry)) {
			o.log.Info("removing the staging of a remote attempt that no longer holds its job", "job", ref.String())
			o.drop(ref)
		}
	}
}

// hashFile returns the size and hex SHA-256 of the file at p.
func hashFile(p string) (int64, string, error) {
	f, err := os.Open(p)
	if err != nil {
		return 0, "", err
	}
	defer f.Close()
	var h hash.Hash = sha256.New()
	n, err := io.Copy(h, f)
	if err != nil {
		return 0, "", err
	}
	return n, hex.EncodeToString(h.Sum(nil)), nil
}
