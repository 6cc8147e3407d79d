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
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"io/fs"
	"log/slog"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"runtime/debug"
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
	"github.com/shoal-video/shoal/transcode/verify"
	"github.com/shoal-video/shoal/transcode/vod"
)

// Queue is the job queue and the records the origin's side works with;
// *routing.Store implements it.
type Queue interface {
	vod.Jobs
	JobHolder(ctx context.Context, id string) (routing.JobHolder, error)
	GetVideo(ctx context.Context, id string) (routing.Video, error)
	VideoFields(ctx context.Context, id string) (map[string]string, error)
	AddWorkerOutcome(ctx context.Context, id, outcome, reason string) error
	AddWorkerFigures(ctx context.Context, id string, deltas map[string]int64) (map[string]int64, error)
	QuarantineNode(ctx context.Context, id, reason string) error
	// PlacementSecret keys the sampling of segments to re-check.
	PlacementSecret(ctx context.Context) ([]byte, error)
	AvoidWorker(ctx context.Context, id, node string, avoidFor time.Duration) error
	AvoidedWorkers(ctx context.Context, id string) (map[string]time.Time, error)
	DeferJob(ctx context.Context, job routing.Job) (bool, error)
	// The limits of a node's jobs: its record, its published outputs,
	// the jobs it holds and starts, and the distinct nodes that failed a
	// video's job.
	GetNode(ctx context.Context, id string) (routing.Node, error)
	WorkerStats(ctx context.Context, ids []string) (map[string]routing.WorkerStats, error)
	WorkerJobsHeld(ctx context.Context, consumer string, idle time.Duration, limit int) (int, error)
	CountWorkerClaim(ctx context.Context, node string, add int64, window time.Duration) (int64, error)
	AddJobFailure(ctx context.Context, id, node string) (int, error)
	ListNodes(ctx context.Context) ([]routing.Node, error)
	AnnouncedNodes(ctx context.Context) ([]routing.AnnouncedNode, error)
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
	// VerifyFraction is the share of each output's segments (per
	// rendition, at least one) the origin transcodes again and compares
	// before it publishes the output (verifying.go); 0: none.
	VerifyFraction float64
	// VerifyConcurrency bounds the segment checks running at once on this
	// origin, all outputs together; 0: half the CPUs, at least 1.
	VerifyConcurrency int
	// LocalWorkers: this origin runs VOD workers of its own on the queue,
	// so a job refused from a remote worker always has another worker.
	LocalWorkers bool
	// CompleteWait is how long a completion request waits for the
	// output's checks before it answers that they go on (Complete); 0:
	// 20 s, well within a reverse proxy's usual 60 s.
	CompleteWait time.Duration
}

// AvoidFor is how long after a worker's output of a video was refused the
// video's job goes to other workers first: while one is available (a
// joined worker, neither quarantined nor refused for this video, or a
// worker that reads the queue itself), the refused worker is not handed
// the job again.
const AvoidFor = 10 * time.Minute

// Limits of one node's jobs. A node holds at most one job until an output
// of its was published, then as many as the live ladders it says it runs
// at once (its heartbeat's transcode.ladders), at most MaxJobsPerNode. It
// starts at most ClaimsPerWindow jobs per ClaimWindow.
const (
	MaxJobsPerNode  = 4
	ClaimsPerWindow = 10
	ClaimWindow     = time.Minute
)

// A job's time on a remote worker: at most JobTimeBase plus
// JobTimePerSource times the source's duration (a day when it is
// unknown), and its progress must advance at least every StallAfter;
// otherwise the origin ends the attempt as failed by the worker.
const (
	JobTimeBase      = 30 * time.Minute
	JobTimePerSource = 20
	StallAfter       = 20 * time.Minute
)

// A video fails for good only once FailersNeeded distinct workers (at
// most MaxAttempts) failed its job, or once its attempts reach
// MaxAttempts times AttemptsCapFactor whoever failed them (a worker alone
// in the pool that fails everything).
const (
	FailersNeeded     = 2
	AttemptsCapFactor = 4
)

// failedPublic is what a video whose job a remote worker failed says: never
// the worker's own words (those are logged).
const failedPublic = "a remote worker could not transcode the video"

// StagingDir is the directory below Files.WorkDir where the outputs of
// remote jobs arrive, one directory per attempt.
const StagingDir = "remote"

// PublishingDir is the directory below Files.WorkDir where an output
// that passed its checks is laid out to be published (publish), one
// directory per attempt: the staged files hard-linked (copied where links
// cannot be made) and the origin's playlists, so that the staged files
// stay as the worker signed them.
const PublishingDir = "remote-publishing"

// Deps are the origin side's collaborators.
type Deps struct {
	Queue      Queue
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Figures, when set, adds to a node's figures of the current
	// accounting epoch (routing.Figure* names): a worker's published
	// pixels and verified segments are credited there.
	Figures func(ctx context.Context, node string, deltas map[string]int64) error
}

// Origin is the origin's side of remote VOD jobs. Its methods take the id
// of the node that asks, which the caller authenticated (a joined worker,
// its request signed with its key): a node may act only on the jobs it
// claimed.
type Origin struct {
	cfg     Config
	queue   Queue
	log     *slog.Logger
	figures func(ctx context.Context, node string, deltas map[string]int64) error
	jobs    *prometheus.CounterVec
	// The sampled re-check: its concurrency, outcomes and durations, and
	// the key of its seeds (derived once from the placement secret).
	verifySem     chan struct{}
	verifyResults *prometheus.CounterVec
	verifySeconds prometheus.Histogram
	seedMu        sync.Mutex
	seedKey       []byte

	ensureMu sync.Mutex
	ensured  bool // the job queue's consumer group exists
	mu       sync.Mutex
	staged   map[string]*staged // by JobRef
	// completions: the completions running and the answers kept, by
	// JobRef; completionSem: the turns of those checking (MaxCompletions).
	completions   map[string]*completion
	completionSem chan struct{}
	// claiming: nodes with a claim running on this origin; running: the
	// time limits of the attempts claimed through it, by JobRef.
	claiming map[string]bool
	running  map[string]*runState
	now      func() time.Time
	// beforeChecks, when set, runs as a completion starts its checks
	// (tests hold it there).
	beforeChecks func()
}

// runState is the time limit of an attempt and the progress it made.
type runState struct {
	deadline time.Time
	progress int
	advanced time.Time // when progress last went up
}

// staged is what one attempt has uploaded so far.
type staged struct {
	dir      string
	budget   int64
	used     int64
	maxFiles int              // files the output may have (its segments, playlists and stills)
	files    map[string]int64 // path -> size
	busy     map[string]bool  // paths being written
	// sealed: a completion began, so the files are what it checks and
	// publishes: no upload may change them any more.
	sealed bool
	// completing: a completion is running (another waits its answer).
	completing bool
	// passed: what the checks found, once they passed (finish).
	passed *passedChecks
}

// passedChecks is what the checks of a staged output found for the
// manifest whose JSON has the SHA-256 digest manifest.
type passedChecks struct {
	manifest [sha256.Size]byte
	out      checked
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
	if !(cfg.VerifyFraction >= 0 && cfg.VerifyFraction <= 1) {
		errs = append(errs, fmt.Errorf("remote: the verified fraction must be within 0..1, got %v", cfg.VerifyFraction))
	}
	if cfg.VerifyConcurrency < 0 {
		errs = append(errs, fmt.Errorf("remote: the verify concurrency must not be negative, got %d", cfg.VerifyConcurrency))
	}
	if len(errs) > 0 {
		return nil, errors.Join(errs...)
	}
	if cfg.PresignTTL <= 0 {
		cfg.PresignTTL = 6 * time.Hour
	}
	if cfg.CompleteWait <= 0 {
		cfg.CompleteWait = 20 * time.Second
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if cfg.VerifyConcurrency == 0 {
		cfg.VerifyConcurrency = max(runtime.NumCPU()/2, 1)
	}
	o := &Origin{cfg: cfg, queue: deps.Queue, log: deps.Log, figures: deps.Figures, staged: map[string]*staged{},
		completions: map[string]*completion{}, completionSem: make(chan struct{}, MaxCompletions),
		claiming: map[string]bool{}, running: map[string]*runState{}, now: time.Now,
		jobs: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_vod_remote_jobs_total",
			Help: "VOD job attempts of remote workers by outcome: claimed, ready, rejected (the output failed the origin's checks), failed (the worker reported a failure), lost (taken away meanwhile), unverified (the origin could not make its re-check: retried, nobody blamed), deferred (handed back for another worker than the one whose output of it was refused).",
		}, []string{"outcome"}),
		verifySem: make(chan struct{}, cfg.VerifyConcurrency),
		verifyResults: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_vod_verify_segments_total",
			Help: "Segments of remote workers' outputs the origin transcoded again and compared (transcode/verify), by result: passed, failed (the output was refused), error (the check could not be made).",
		}, []string{"result"}),
		verifySeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_vod_verify_seconds",
			Help:    "Time one segment's re-check took (decoding, the reference encode, the comparison), checks that were made.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32, 64},
		}),
	}
	for _, outcome := range []string{"claimed", "ready", "rejected", "failed", "lost", "unverified", "deferred"} {
		o.jobs.WithLabelValues(outcome)
	}
	for _, r := range []string{"passed", "failed", "error"} {
		o.verifyResults.WithLabelValues(r)
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{o.jobs, o.verifyResults, o.verifySeconds} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("remote: register metrics: %w", err)
			}
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
	// One claim of a node at a time (on this origin), within its limits.
	o.mu.Lock()
	if o.claiming[node] {
		o.mu.Unlock()
		return nodeproto.WorkerJob{}, false, nil
	}
	o.claiming[node] = true
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		delete(o.claiming, node)
		o.mu.Unlock()
	}()
	if room, err := o.mayClaim(ctx, node); err != nil || !room {
		return nodeproto.WorkerJob{}, false, err
	}
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
		if j.Reclaimed && j.From != "" {
			// Its worker stopped touching it: that counts as a failure
			// of that worker's (taken over, the attempt is lost).
			o.blame(ctx, j.VideoID, j.From, log)
		}
		switch deferred, err := o.deferJob(ctx, j, node, log); {
		case err != nil:
			return nodeproto.WorkerJob{}, false, err
		case deferred:
			// The node backs off; another worker takes the job.
			return nodeproto.WorkerJob{}, false, nil
		}
		st, err := o.queue.StartJob(ctx, j, c, o.cfg.MaxAttempts*AttemptsCapFactor)
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
		if _, err := o.queue.CountWorkerClaim(ctx, node, 1, ClaimWindow); err != nil {
			log.Warn("counting a worker's claim", "err", err)
		}
		o.startRun(ref, st.Video.Duration)
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

// mayClaim tells whether node may start another job now: it started
// fewer than ClaimsPerWindow within the window, and holds fewer than its
// limit (jobLimit).
func (o *Origin) mayClaim(ctx context.Context, node string) (bool, error) {
	started, err := o.queue.CountWorkerClaim(ctx, node, 0, ClaimWindow)
	if err != nil {
		return false, err
	}
	if started >= ClaimsPerWindow {
		o.log.Debug("a worker's claim refused: it started too many jobs lately", "node", node, "started", started)
		return false, nil
	}
	limit, err := o.jobLimit(ctx, node)
	if err != nil {
		return false, err
	}
	held, err := o.queue.WorkerJobsHeld(ctx, consumer(node), o.cfg.IdleTimeout, limit)
	if err != nil {
		return false, err
	}
	if held >= limit {
		o.log.Debug("a worker's claim refused: it holds as many jobs as it may", "node", node, "held", held, "limit", limit)
		return false, nil
	}
	return true, nil
}

// jobLimit is how many jobs node may hold at once: one until an output
// of its was published, then the live ladders it says it runs at once,
// within 1..MaxJobsPerNode.
func (o *Origin) jobLimit(ctx context.Context, node string) (int, error) {
	stats, err := o.queue.WorkerStats(ctx, []string{node})
	if err != nil {
		return 0, err
	}
	if stats[node].Done == 0 {
		return 1, nil
	}
	n, err := o.queue.GetNode(ctx, node)
	if errors.Is(err, routing.ErrNotFound) {
		return 1, nil
	}
	if err != nil {
		return 0, err
	}
	ladders := 1
	if n.Load.Transcode != nil {
		ladders = n.Load.Transcode.Ladders
	}
	return min(max(ladders, 1), MaxJobsPerNode), nil
}

// startRun starts the clock of an attempt just claimed, at most
// JobTimeBase + JobTimePerSource x the source's duration (a day when it
// is unknown).
func (o *Origin) startRun(ref nodeproto.JobRef, source time.Duration) {
	limit := 24 * time.Hour
	if source > 0 {
		limit = JobTimeBase + JobTimePerSource*source
	}
	now := o.now()
	o.mu.Lock()
	o.running[ref.String()] = &runState{deadline: now.Add(limit), advanced: now}
	o.mu.Unlock()
}

// overdue records progress of ref and tells why its attempt must end
// ("": it may go on): past its time limit, or no progress for StallAfter.
// An attempt this origin did not start (claimed through another, or
// before a restart) starts its clock here.
func (o *Origin) overdue(ctx context.Context, ref nodeproto.JobRef, progress int) string {
	o.mu.Lock()
	st := o.running[ref.String()]
	o.mu.Unlock()
	if st == nil {
		var d time.Duration
		if v, err := o.queue.GetVideo(ctx, ref.VideoID); err == nil {
			d = v.Duration
		}
		o.startRun(ref, d)
		o.mu.Lock()
		st = o.running[ref.String()]
		o.mu.Unlock()
	}
	now := o.now()
	o.mu.Lock()
	defer o.mu.Unlock()
	if progress > st.progress {
		st.progress, st.advanced = progress, now
	}
	switch {
	case now.After(st.deadline):
		return "it ran past its time limit"
	case now.Sub(st.advanced) > StallAfter:
		return fmt.Sprintf("its progress did not advance for %s", StallAfter)
	}
	return ""
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

// maxFiles bounds the files of one output of v: per rendition (the rungs
// and audio) twice its segments over the source's duration (a day when
// unknown) and 16, and 2000 for the master, stills and sprites.
func (o *Origin) maxFiles(v routing.Video, ladder media.Ladder) int {
	d := v.Duration
	if d <= 0 {
		d = 24 * time.Hour
	}
	segs := int(d/o.cfg.SegmentDuration) + 1
	return (len(ladder.For(v.SourceHeight))+1)*(2*segs+16) + 2000
}

// MinFreeBytes is the free space the staging's file system keeps: an
// upload that would leave less is refused (503) before its body is read.
const MinFreeBytes = 2 << 30

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
	if why := o.overdue(ctx, ref, progress); why != "" {
		o.log.Warn("ending a remote worker's attempt", "node", node, "video", ref.VideoID, "attempt", ref.Attempt, "why", why)
		if _, err := o.failAttempt(ctx, node, ref, job, "a remote worker's attempt ended: "+why); err != nil && !errors.Is(err, routing.ErrJobLost) {
			return err
		}
		o.jobs.WithLabelValues("failed").Inc()
		if err := o.queue.AddWorkerOutcome(ctx, node, routing.WorkFailed, ""); err != nil {
			o.log.Warn("counting a worker's failure", "node", node, "err", err)
		}
		return gone(why)
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
	s = &staged{dir: o.stagingDir(ref), budget: o.budget(v, ladder), maxFiles: o.maxFiles(v, ladder),
		files: map[string]int64{}, busy: map[string]bool{}}
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
	delete(o.running, ref.String())
	o.mu.Unlock()
	if err := os.RemoveAll(o.stagingDir(ref)); err != nil {
		o.log.Warn("removing a remote job's staging", "job", ref.String(), "err", err)
	}
	if err := os.RemoveAll(o.publishingDir(ref)); err != nil {
		o.log.Warn("removing a remote job's publication", "job", ref.String(), "err", err)
	}
}

// publishingDir is where ref's checked output is laid out to be
// published.
func (o *Origin) publishingDir(ref nodeproto.JobRef) string {
	return filepath.Join(o.cfg.Files.WorkDir, PublishingDir, ref.String())
}

// publish publishes ref's checked output as a local worker does
// (vod.Publish: media, rendition playlists, master), with the playlists
// the origin wrote from what it checked (rewrite.go) in place of the
// worker's. The staged files are not moved or changed: publish lays them
// out in publishingDir, hard-linked (copied where a link cannot be made),
// with the origin's playlists, and publishes that; a publication that
// failed midway is made again whole from the staged files.
func (o *Origin) publish(ctx context.Context, ref nodeproto.JobRef, out checked) error {
	src, dst := o.stagingDir(ref), o.publishingDir(ref)
	defer func() { _ = os.RemoveAll(dst) }()
	if err := os.RemoveAll(dst); err != nil {
		return fmt.Errorf("laying out the output: %w", err)
	}
	err := filepath.WalkDir(src, func(p string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, err := filepath.Rel(src, p)
		if err != nil {
			return err
		}
		if strings.HasSuffix(rel, ".m3u8") {
			return nil // the worker's playlists: the origin writes its own
		}
		return linkOrCopy(p, filepath.Join(dst, rel))
	})
	if err != nil {
		return fmt.Errorf("laying out the output: %w", err)
	}
	for rel, b := range out.playlists {
		p := filepath.Join(dst, filepath.FromSlash(rel))
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			return fmt.Errorf("writing the checked playlists: %w", err)
		}
		if err := os.WriteFile(p, b, 0o644); err != nil {
			return fmt.Errorf("writing the checked playlists: %w", err)
		}
	}
	return vod.Publish(ctx, o.cfg.Files.HLS(), ref.VideoID, dst)
}

// linkOrCopy makes dst (its directory too) the same file as src: a hard
// link, or a copy where one cannot be made.
func linkOrCopy(src, dst string) error {
	if err := os.MkdirAll(filepath.Dir(dst), 0o755); err != nil {
		return err
	}
	if os.Link(src, dst) == nil {
		return nil
	}
	in, err := os.Open(src)
	if err != nil {
		return err
	}
	defer in.Close()
	f, err := os.OpenFile(dst, os.O_WRONLY|os.O_CREATE|os.O_TRUNC, 0o644)
	if err != nil {
		return err
	}
	if _, err := io.Copy(f, in); err != nil {
		_ = f.Close()
		return err
	}
	return f.Close()
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
	old, had := s.files[path]
	if !had && len(s.files)+len(s.busy) >= s.maxFiles {
		o.mu.Unlock()
		return protoError(http.StatusRequestEntityTooLarge, nodeproto.CodeTooLarge,
			"this output would have more than the %d files it may (its renditions' segments over the source's duration, with a margin)", s.maxFiles)
	}
	if s.used-old+size > s.budget {
		o.mu.Unlock()
		return protoError(http.StatusRequestEntityTooLarge, nodeproto.CodeTooLarge,
			"this output would take more than the %d bytes it may (its ladder's bitrates over the source's duration, with a margin)", s.budget)
	}
	if free, err := storage.FreeBytes(o.cfg.Files.WorkDir); err == nil && free-size < MinFreeBytes {
		o.mu.Unlock()
		o.log.Warn("refusing a remote worker's upload: the staging disk is nearly full", "free_bytes", free, "size", size)
		return protoError(http.StatusServiceUnavailable, "unavailable", "the origin is short of disk space; send the file again later")
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
		return o.stagingTrouble(ref, path, err)
	}
	f, err := os.CreateTemp(filepath.Dir(dst), ".upload-*")
	if err != nil {
		return o.stagingTrouble(ref, path, err)
	}
	defer os.Remove(f.Name()) // after the rename, a no-op
	h := sha256.New()
	in := &bodyReader{r: io.LimitReader(body, size+1)}
	n, err := io.Copy(io.MultiWriter(f, h), in)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if in.err != nil {
		// The worker's connection broke off: its business, not the
		// origin's trouble.
		return protoError(http.StatusBadRequest, "invalid_request", "receiving %s: the body broke off: %v", path, in.err)
	}
	if err != nil {
		return o.stagingTrouble(ref, path, err)
	}
	if n != size {
		return protoError(http.StatusBadRequest, nodeproto.CodeHashMismatch, "%s: the body has %d bytes, %d were declared", path, n, size)
	}
	if got := hex.EncodeToString(h.Sum(nil)); got != sum {
		return protoError(http.StatusBadRequest, nodeproto.CodeHashMismatch, "%s: the body's SHA-256 is %s, %s was declared", path, got, sum)
	}
	if err := os.Rename(f.Name(), dst); err != nil {
		return o.stagingTrouble(ref, path, err)
	}
	ok = true
	return nil
}

// bodyReader remembers the error of reading an upload's body, to tell it
// from the origin's own trouble writing it.
type bodyReader struct {
	r   io.Reader
	err error
}

func (b *bodyReader) Read(p []byte) (int, error) {
	n, err := b.r.Read(p)
	if err != nil && !errors.Is(err, io.EOF) {
		b.err = err
	}
	return n, err
}

// stagingTrouble is the origin's own failure to stage a file (a full
// disk): logged with its path, answered 503 without it.
func (o *Origin) stagingTrouble(ref nodeproto.JobRef, path string, err error) error {
	o.log.Error("staging a remote worker's file", "job", ref.String(), "file", path, "err", err)
	return protoError(http.StatusServiceUnavailable, "unavailable", "the origin cannot store %s now; send it again later", path)
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
	o.mu.Lock()
	s := o.staged[ref.String()]
	busy := s != nil && s.completing
	o.mu.Unlock()
	if busy {
		return nodeproto.Failed{}, protoError(http.StatusConflict, "conflict", "this job is being completed: wait for the completion's answer")
	}
	defer o.drop(ref)
	retry, err := o.failAttempt(ctx, node, ref, job, failedPublic)
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
		"permanent", f.Permanent, "retry", retry, "err", clip(strings.TrimSpace(f.Error), 300))
	return nodeproto.Failed{Retry: retry}, nil
}

// Complete checks the output node uploaded for ref against its manifest
// m and the origin's own knowledge of the source (checks.go), then
// publishes it as a local worker does (media, rendition playlists,
// master, then the video is ready) and ends the job. An output that fails
// a check is refused (422): the attempt fails (retried by the queue's
// rules, by this worker or another) and the node's record counts it.
//
// The checks of a long video's output can take minutes, longer than a
// reverse proxy in front of the origin waits for an answer, so they run
// on their own, whatever becomes of the request: Complete waits for them
// up to CompleteWait, then answers nodeproto.ErrStillChecking (202), and
// the worker sends the same manifest again, which waits for the same run
// (another manifest is refused, 409). The final answer (published, or
// refused) stays for CompletionKept; a run that ends in the origin's own
// trouble (its store or Redis) is forgotten, so that sending it again
// starts another.
func (o *Origin) Complete(ctx context.Context, node string, ref nodeproto.JobRef, m nodeproto.Complete) error {
	if m.Job != ref.String() {
		return protoError(http.StatusBadRequest, "invalid_request", `the manifest's "job" is %q, not the job it is sent for`, m.Job)
	}
	manifest, err := json.Marshal(m)
	if err != nil {
		return err
	}
	digest := sha256.Sum256(manifest)
	o.mu.Lock()
	c := o.completions[ref.String()]
	o.mu.Unlock()
	if c == nil {
		if c, err = o.startCompletion(ctx, node, ref, m, digest); err != nil {
			return err
		}
	}
	switch {
	case c.node != node:
		return protoError(http.StatusForbidden, nodeproto.CodeNotYourJob, "another worker holds this job")
	case c.manifest != digest:
		return protoError(http.StatusConflict, "conflict", "this job is being completed, or was, with another manifest")
	}
	wait := time.NewTimer(o.cfg.CompleteWait)
	defer wait.Stop()
	select {
	case <-c.done:
		return c.err
	case <-wait.C:
		return nodeproto.ErrStillChecking
	case <-ctx.Done():
		return ctx.Err()
	}
}

// completion is one run of Complete's checks and publication of an
// attempt's output, and its answer once done is closed.
type completion struct {
	node     string
	manifest [sha256.Size]byte // of the manifest's JSON
	done     chan struct{}
	err      error
	ended    time.Time
}

// CompletionKept is how long the answer of a completion stays, for the
// worker's request that waits for it again.
const CompletionKept = 10 * time.Minute

// startCompletion checks that node holds ref and that its files may be
// sealed, seals them, and starts the completion's run, or returns the run
// another request started meanwhile.
func (o *Origin) startCompletion(ctx context.Context, node string, ref nodeproto.JobRef, m nodeproto.Complete, digest [sha256.Size]byte) (*completion, error) {
	job, err := o.hold(ctx, node, ref)
	if err != nil {
		return nil, err
	}
	log := o.log.With("video", ref.VideoID, "attempt", ref.Attempt, "node", node)
	v, err := o.queue.GetVideo(ctx, ref.VideoID)
	if err != nil {
		return nil, err
	}
	// From now on the staged files are what is checked and published: no
	// upload may replace one between its check and its publication, and
	// one completion runs at a time.
	s, err := o.stage(ctx, ref)
	if err != nil {
		return nil, err
	}
	key := ref.String()
	o.mu.Lock()
	switch c := o.completions[key]; {
	case c != nil:
		o.mu.Unlock()
		return c, nil
	case s.completing:
		o.mu.Unlock()
		return nil, protoError(http.StatusConflict, "conflict", "this job is being completed already")
	case len(s.busy) > 0:
		o.mu.Unlock()
		return nil, protoError(http.StatusConflict, "conflict", "files of this job are still being uploaded: complete once every upload is answered")
	}
	s.sealed, s.completing = true, true
	c := &completion{node: node, manifest: digest, done: make(chan struct{})}
	o.completions[key] = c
	o.mu.Unlock()
	go func() {
		// Detached from the request: a worker (or a proxy) that stops
		// waiting does not stop the checks of what it uploaded.
		err := o.runCompletion(context.WithoutCancel(ctx), node, ref, job, v, m, s, digest, log)
		var we *nodeproto.WorkerError
		o.mu.Lock()
		s.completing = false
		c.err, c.ended = err, o.now()
		if err != nil && !errors.As(err, &we) {
			delete(o.completions, key) // the origin's trouble: may be sent again
		}
		o.mu.Unlock()
		close(c.done)
	}()
	return c, nil
}

// MaxCompletions bounds the completions that check and publish at once
// on an origin; the others wait their turn (their requests answer 202
// meanwhile).
const MaxCompletions = 8

// runCompletion runs finish in its turn (MaxCompletions), within
// nodeproto.CompleteTimeout, and turns a panic in the checks (whose input
// is the worker's) into an error instead of the origin's end.
func (o *Origin) runCompletion(ctx context.Context, node string, ref nodeproto.JobRef, job routing.Job, v routing.Video, m nodeproto.Complete,
	s *staged, digest [sha256.Size]byte, log *slog.Logger) (err error) {
	ctx, cancel := context.WithTimeout(ctx, nodeproto.CompleteTimeout)
	defer cancel()
	select {
	case o.completionSem <- struct{}{}:
		defer func() { <-o.completionSem }()
	case <-ctx.Done():
		return fmt.Errorf("waiting for a turn to check the output: %w", ctx.Err())
	}
	defer func() {
		if p := recover(); p != nil {
			log.Error("checking a remote worker's output panicked", "panic", p, "stack", string(debug.Stack()))
			err = fmt.Errorf("checking the output failed: %v", p)
		}
	}()
	return o.finish(ctx, node, ref, job, v, m, s, digest, log)
}

// finish runs a completion: it checks and publishes node's output of ref
// (sealed, staged as s; m's JSON has the SHA-256 digest) and ends the job.
//
// Checks that passed are kept with s for the manifest: a completion sent
// again after the origin's own trouble past them (its store failing the
// publication, Redis failing to end the job) publishes what they found
// without checking again. The staged files stay as the worker signed them
// until the job ends (publish): checked again after a restart, they pass
// again.
func (o *Origin) finish(ctx context.Context, node string, ref nodeproto.JobRef, job routing.Job, v routing.Video, m nodeproto.Complete,
	s *staged, digest [sha256.Size]byte, log *slog.Logger) error {
	if o.beforeChecks != nil {
		o.beforeChecks()
	}
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

	o.mu.Lock()
	passed := s.passed
	o.mu.Unlock()
	var out checked
	var err error
	if passed != nil && passed.manifest == digest {
		out = passed.out
		log.Info("publishing a remote worker's output checked before", "segments_verified", out.verified)
	} else {
		out, err = o.check(jobCtx, ref, v, m)
	}
	if lost := context.Cause(jobCtx); lost != nil && errors.Is(lost, routing.ErrJobLost) {
		o.jobs.WithLabelValues("lost").Inc()
		o.drop(ref)
		return gone(lost.Error())
	}
	var rej *rejection
	if errors.As(err, &rej) {
		return o.reject(ctx, node, ref, job, rej, log)
	}
	if ce, ok := isCheckError(err); ok {
		return o.unverified(ctx, node, ref, job, ce, log)
	}
	if err != nil {
		return err // the store or Redis: the worker may complete again
	}
	o.mu.Lock()
	s.passed = &passedChecks{manifest: digest, out: out}
	o.mu.Unlock()
	// From here on, whatever fails is the origin's trouble: the worker
	// may complete again, and is never blamed.
	if err := o.publish(jobCtx, ref, out); err != nil {
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
	// The output is published: finishing the job and the bookkeeping must
	// not stop when the worker goes away (it may drop its request once a
	// progress report learns the video is ready).
	ctx, stop := context.WithTimeout(context.WithoutCancel(ctx), 30*time.Second)
	defer stop()
	if err := o.queue.FinishJob(ctx, job, ref.Attempt, out.JobOutcome); err != nil {
		if errors.Is(err, routing.ErrJobLost) {
			if errors.Is(err, routing.ErrVideoDeleted) {
				_ = o.cfg.Files.HLS().DeletePrefix(ctx, ref.VideoID+"/")
			}
			o.jobs.WithLabelValues("lost").Inc()
			o.drop(ref)
			return gone(err.Error())
		}
		log.Error("ending a remote worker's published job", "err", err)
		return fmt.Errorf("ending the job: %w", err)
	}
	o.drop(ref)
	vod.KeepRecord(ctx, o.cfg.Files, o.queue, ref.VideoID, log)
	o.jobs.WithLabelValues("ready").Inc()
	if err := o.queue.AddWorkerOutcome(ctx, node, routing.WorkDone, ""); err != nil {
		log.Warn("counting a worker's job", "err", err)
	}
	o.credit(ctx, node, out, log)
	log.Info("video ready (remote worker)", "duration", out.Duration, "renditions", len(out.Renditions),
		"segments_verified", out.verified, "pixels", out.pixels)
	return nil
}

// credit adds a published output's pixels and verified segments to its
// worker's figures and to its figures of the current accounting epoch.
func (o *Origin) credit(ctx context.Context, node string, out checked, log *slog.Logger) {
	if _, err := o.queue.AddWorkerFigures(ctx, node, map[string]int64{
		routing.WorkSegmentsVerified: int64(out.verified), routing.WorkPixels: out.pixels}); err != nil {
		log.Warn("counting a worker's published output", "err", err)
	}
	if o.figures == nil {
		return
	}
	if err := o.figures(ctx, node, map[string]int64{
		routing.FigureSegmentsVerified: int64(out.verified), routing.FigureTranscodedPixels: out.pixels}); err != nil {
		log.Warn("crediting a worker's published output to the accounting epoch", "err", err)
	}
}

// reject refuses an output: the attempt fails, the node's record notes it,
// and the job's next attempts go to other workers while one is available
// (deferJob). A segment that failed the sampled re-check also counts
// towards the node's quarantine: at QuarantineAfter, it takes no more
// jobs.
func (o *Origin) reject(ctx context.Context, node string, ref nodeproto.JobRef, job routing.Job, rej *rejection, log *slog.Logger) error {
	reason := rej.reason
	o.drop(ref)
	o.jobs.WithLabelValues("rejected").Inc()
	log.Warn("refused a remote worker's output", "reason", reason)
	if err := o.queue.AddWorkerOutcome(ctx, node, routing.WorkRejected, reason); err != nil {
		log.Warn("counting a worker's refused output", "err", err)
	}
	if rej.verify {
		o.verifyFailed(ctx, node, reason, log)
	}
	_, err := o.failAttempt(ctx, node, ref, job, "the output of a remote worker failed the origin's checks")
	if err != nil && !errors.Is(err, routing.ErrJobLost) {
		log.Error("recording a refused output's job", "err", err)
	}
	return protoError(http.StatusUnprocessableEntity, nodeproto.CodeOutputRejected, "the output was refused: %s", reason)
}

// failAttempt ends node's attempt ref at job as failed by node, with msg
// (the origin's words, never the worker's: the video shows it): the job's
// next attempts go to other workers while one is available, and the
// video fails for good only once FailersNeeded distinct workers failed it
// and its attempts ran out (or at MaxAttempts x AttemptsCapFactor).
func (o *Origin) failAttempt(ctx context.Context, node string, ref nodeproto.JobRef, job routing.Job, msg string) (bool, error) {
	distinct := o.blame(ctx, ref.VideoID, node, o.log.With("video", ref.VideoID, "node", node))
	limit := o.cfg.MaxAttempts
	if distinct < min(FailersNeeded, o.cfg.MaxAttempts) && ref.Attempt < o.cfg.MaxAttempts*AttemptsCapFactor {
		limit = max(limit, ref.Attempt+1)
	}
	return o.queue.FailJob(ctx, job, ref.Attempt, msg, false, limit)
}

// blame records that node failed an attempt at video id's job: the job
// avoids it for AvoidFor, and it counts among the video's distinct
// failing workers (returned; 0 when that could not be recorded).
func (o *Origin) blame(ctx context.Context, id, node string, log *slog.Logger) int {
	if err := o.queue.AvoidWorker(ctx, id, node, AvoidFor); err != nil {
		log.Warn("recording the worker the job should avoid", "err", err)
	}
	n, err := o.queue.AddJobFailure(ctx, id, node)
	if err != nil {
		log.Warn("recording a worker's failure of a job", "err", err)
	}
	return n
}

// verifyFailed counts a segment of node's that failed the re-check, and
// quarantines the node at QuarantineAfter.
func (o *Origin) verifyFailed(ctx context.Context, node, reason string, log *slog.Logger) {
	countVerifyFailure(ctx, o.queue, node, reason, log)
}

// figureQueue is what counting a worker's failed re-checks takes.
type figureQueue interface {
	AddWorkerFigures(ctx context.Context, id string, deltas map[string]int64) (map[string]int64, error)
	QuarantineNode(ctx context.Context, id, reason string) error
}

// countVerifyFailure counts a segment (VOD) or cell (live) of node's that
// failed the re-check, and quarantines the node at QuarantineAfter
// (true: it is quarantined now).
func countVerifyFailure(ctx context.Context, q figureQueue, node, reason string, log *slog.Logger) bool {
	tot, err := q.AddWorkerFigures(ctx, node, map[string]int64{routing.WorkVerifyFailed: 1})
	if err != nil {
		log.Warn("counting a worker's failed re-check", "err", err)
		return false
	}
	n := tot[routing.WorkVerifyFailed]
	if n < QuarantineAfter {
		return false
	}
	why := fmt.Sprintf("%d of its segments failed the origin's re-check of remote transcodes; the last: %s", n, clip(reason, 300))
	if err := q.QuarantineNode(ctx, node, why); err != nil {
		log.Error("quarantining a worker whose transcodes failed the re-check", "err", err)
		return false
	}
	log.Warn("quarantined a remote worker: its transcodes failed the re-check", "failed_segments", n)
	return true
}

// unverified ends an attempt whose output the origin could not re-check
// (its own trouble, ce): nothing is published, the attempt fails and the
// job is retried (by any worker, this one included), and the node is not
// blamed: its refusals and failures do not count it, only its
// verify_errors figure. The node is told the job is gone.
func (o *Origin) unverified(ctx context.Context, node string, ref nodeproto.JobRef, job routing.Job, ce *checkError, log *slog.Logger) error {
	o.drop(ref)
	o.jobs.WithLabelValues("unverified").Inc()
	log.Error("could not re-check a remote worker's output: the job is retried, the worker is not blamed", "err", ce.err)
	if _, err := o.queue.AddWorkerFigures(ctx, node, map[string]int64{routing.WorkVerifyErrors: 1}); err != nil {
		log.Warn("counting a check the origin could not make", "err", err)
	}
	msg := "the origin could not check the output of worker " + node + ": " + clip(ce.err.Error(), 300)
	if _, err := o.queue.FailJob(ctx, job, ref.Attempt, msg, false, o.cfg.MaxAttempts); err != nil && !errors.Is(err, routing.ErrJobLost) {
		log.Error("recording an unchecked output's job", "err", err)
	}
	return gone("the origin could not check its output (" + clip(ce.err.Error(), 200) + "); the job is retried")
}

// deferJob hands job back to the queue, unstarted, when node's output of
// its video was refused within AvoidFor and another worker is available
// (otherWorker): it reports whether it did (the node then gets no job
// this time). With no other worker, node is handed the job again.
func (o *Origin) deferJob(ctx context.Context, j routing.Job, node string, log *slog.Logger) (bool, error) {
	avoided, err := o.queue.AvoidedWorkers(ctx, j.VideoID)
	if err != nil {
		return false, err
	}
	if _, ok := avoided[node]; !ok {
		return false, nil
	}
	other, err := o.otherWorker(ctx, node, avoided)
	if err != nil {
		return false, err
	}
	if !other {
		log.Info("no other worker is available: the job goes again to the worker whose output of it was refused")
		return false, nil
	}
	if _, err := o.queue.DeferJob(ctx, j); err != nil {
		return false, err
	}
	o.jobs.WithLabelValues("deferred").Inc()
	// At every claim of the refused worker while it waits: counted, and
	// logged at debug level only.
	log.Debug("job deferred: it goes to another worker than the one whose output of it was refused")
	return true, nil
}

// otherWorker tells whether a worker other than node may take a job that
// avoids the nodes in avoided: a joined worker, neither quarantined nor
// avoided; a worker process on the queue itself (announced, role worker);
// or this origin's own VOD workers.
func (o *Origin) otherWorker(ctx context.Context, node string, avoided map[string]time.Time) (bool, error) {
	if o.cfg.LocalWorkers {
		return true, nil
	}
	nodes, err := o.queue.ListNodes(ctx)
	if err != nil {
		return false, err
	}
	for _, n := range nodes {
		if _, bad := avoided[n.ID]; n.Role == nodeproto.RoleWorker && n.ID != node && n.Quarantine == nil && !bad {
			return true, nil
		}
	}
	announced, err := o.queue.AnnouncedNodes(ctx)
	if err != nil {
		return false, err
	}
	for _, n := range announced {
		if n.Role == routing.RoleWorker {
			return true, nil
		}
	}
	return false, nil
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
// what they found.
func (o *Origin) check(ctx context.Context, ref nodeproto.JobRef, v routing.Video, m nodeproto.Complete) (checked, error) {
	ladder, err := o.ladderOf(v)
	if err != nil {
		return checked{}, err
	}
	w, h := v.SourceWidth, v.SourceHeight
	if h <= 0 {
		// Uploaded before the size was recorded: the origin probes it.
		if w, h, err = o.probeSize(ctx, ref.VideoID); err != nil {
			return checked{}, fmt.Errorf("probing the source: %w", err)
		}
	}
	out := output{
		dir: o.stagingDir(ref), manifest: m, rungs: ladder.For(h), sourceWidth: w, sourceHeight: h,
		source: v.Duration, segment: o.cfg.SegmentDuration, frameRate: v.SourceFrameRate,
	}
	if o.cfg.VerifyFraction > 0 {
		key, err := o.sampleKey(ctx)
		if err != nil {
			return checked{}, err
		}
		out.sample = &sampler{
			fraction: o.cfg.VerifyFraction,
			seed:     func(r string) []byte { return sampleSeed(key, ref.String(), r) },
			source: func(ctx context.Context) (string, func(), error) {
				// On local disk the stored file itself; from S3 a copy in
				// the origin's scratch, removed once the checks end.
				return o.cfg.Files.FetchSource(ctx, ref.VideoID)
			},
			settings: verify.Settings{Preset: o.cfg.Preset, SegmentDuration: o.cfg.SegmentDuration},
			check:    o.verifySegment,
			audio:    o.verifyAudio,
			limit:    o.cfg.VerifyConcurrency,
		}
	}
	return checkOutput(ctx, out)
}

// sampleKey returns the key of sampling seeds, derived from the placement
// secret (read once).
func (o *Origin) sampleKey(ctx context.Context) ([]byte, error) {
	o.seedMu.Lock()
	defer o.seedMu.Unlock()
	if o.seedKey != nil {
		return o.seedKey, nil
	}
	secret, err := o.queue.PlacementSecret(ctx)
	if err != nil {
		return nil, fmt.Errorf("the sampling secret: %w", err)
	}
	o.seedKey = seedKey(secret)
	return o.seedKey, nil
}

// verifySegment runs one segment's check once one of the origin's
// VerifyConcurrency slots is free, and counts it.
func (o *Origin) verifySegment(ctx context.Context, req verify.Request) (verify.Report, error) {
	select {
	case <-ctx.Done():
		return verify.Report{}, ctx.Err()
	case o.verifySem <- struct{}{}:
	}
	defer func() { <-o.verifySem }()
	began := time.Now()
	rep, err := verify.Check(ctx, req)
	switch {
	case ctx.Err() != nil:
		// Stopped: not a result.
	case err != nil:
		o.verifyResults.WithLabelValues("error").Inc()
	case rep.Passed:
		o.verifyResults.WithLabelValues("passed").Inc()
		o.verifySeconds.Observe(time.Since(began).Seconds())
	default:
		o.verifyResults.WithLabelValues("failed").Inc()
		o.verifySeconds.Observe(time.Since(began).Seconds())
	}
	return rep, err
}

// verifyAudio runs the check of an audio rendition's sampled segments
// once one of the origin's VerifyConcurrency slots is free.
func (o *Origin) verifyAudio(ctx context.Context, req verify.AudioRequest) (verify.AudioReport, error) {
	select {
	case <-ctx.Done():
		return verify.AudioReport{}, ctx.Err()
	case o.verifySem <- struct{}{}:
	}
	defer func() { <-o.verifySem }()
	return verify.CheckAudio(ctx, req)
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

// sweepEvery is how often Run looks for staging directories that no
// attempt will finish.
const sweepEvery = time.Minute

// Run sweeps the staging every sweepEvery (once at the start) until ctx
// ends; it starts no goroutine.
func (o *Origin) Run(ctx context.Context) error {
	t := time.NewTicker(sweepEvery)
	defer t.Stop()
	for {
		o.sweep(ctx)
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		}
	}
}

// sweep removes the staging of attempts that no longer hold their job (a
// worker that died, or whose job went elsewhere): nothing will complete
// them, and the layouts for publication no completion is using; and
// forgets the time limits of attempts long past them and the
// answers of completions past CompletionKept. Every entry is looked at.
func (o *Origin) sweep(ctx context.Context) {
	now := o.now()
	o.mu.Lock()
	for k, st := range o.running {
		if now.Sub(st.deadline) > time.Hour {
			delete(o.running, k)
		}
	}
	for k, c := range o.completions {
		if !c.ended.IsZero() && now.Sub(c.ended) > CompletionKept {
			delete(o.completions, k)
		}
	}
	o.mu.Unlock()
	// A layout for publication outlives its completion only when the
	// origin stopped during one.
	pub := filepath.Join(o.cfg.Files.WorkDir, PublishingDir)
	if ents, err := os.ReadDir(pub); err == nil {
		for _, e := range ents {
			o.mu.Lock()
			s := o.staged[e.Name()]
			busy := s != nil && s.completing
			o.mu.Unlock()
			if !busy {
				_ = os.RemoveAll(filepath.Join(pub, e.Name()))
			}
		}
	}
	root := filepath.Join(o.cfg.Files.WorkDir, StagingDir)
	ents, err := os.ReadDir(root)
	if err != nil {
		return
	}
	for _, e := range ents {
		if ctx.Err() != nil {
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
