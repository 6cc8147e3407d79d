// Package transcode runs ABR ladders: for every live source in the stream
// hub it decodes the video once, encodes each rung of the ladder
// (transcode/ffmpeg) and publishes every rung back to the hub as its own
// rendition ("720p", "480p", ...), where the packager picks them up. The
// source's AAC audio is not re-encoded: it rides along with every rung and
// the packager serves it once, as the master playlist's audio group.
//
// A node runs at most Config.MaxLadders ladders. A stream past that limit is
// not transcoded (Claim says so, and the packager then serves the source as
// it came), so no ladder ever falls behind live for lack of capacity. With
// MaxLadders -1 the node measures that limit itself (capacity.go), once, and
// keeps the figure in its data directory.
package transcode

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// HWAccel values.
const (
	HWAuto  = "auto"
	HWNone  = "none"
	HWNVENC = "nvenc"
	HWQSV   = "qsv"
)

// CopyRendition is the rendition a stream falls back to when its ladder
// cannot be encoded at all: the source, unchanged.
const CopyRendition = "copy"

// Hub is the part of the stream hub the transcoder uses.
type Hub interface {
	Watch(match func(media.StreamKey) bool) *stream.Watcher
	Publish(key media.StreamKey, tracks []media.Track) (*stream.Publisher, error)
}

// Config configures the transcoder.
type Config struct {
	// Ladder is the node's ladder; each source gets the rungs at or below
	// its height.
	Ladder media.Ladder
	// MaxLadders is how many ladders may run at once; 0 turns transcoding
	// off, a negative value has Run measure it (MeasureCapacity), with a
	// default from the hardware until then or if that fails.
	MaxLadders int
	// HWAccel is HWAuto, HWNone (HWSoftware), HWCUDA, HWNVENC or HWQSV.
	HWAccel string
	// Preset is the x264 preset (hardware encoders use the closest match).
	Preset string
	// SegmentDuration spaces the keyframes forced in every rung.
	SegmentDuration time.Duration
	// CacheDir, when set, is where the measured capacity is kept (the
	// data directory), so that a restart does not measure it again.
	CacheDir string
	// Remote is RemoteOff (""), RemotePrefer or RemoteOnly: whether a new
	// stream's ladder goes to a remote worker (Deps.Remote).
	Remote string
}

// LadderSource tells a stream's own ladder ("" when it uses the node's).
type LadderSource interface {
	StreamLadder(ctx context.Context, id string) (string, error)
}

// Deps are the transcoder's collaborators.
type Deps struct {
	Log        *slog.Logger
	Hub        Hub
	Registerer prometheus.Registerer
	// Ladders, when set, is asked for each stream's own ladder.
	Ladders LadderSource
	// Remote hands ladders to remote workers (Config.Remote).
	Remote RemoteLadders
}

// Transcoder runs the ladders of one node.
type Transcoder struct {
	cfg     Config
	log     *slog.Logger
	hub     Hub
	ladders LadderSource
	remote  RemoteLadders
	accel   Accel
	limit   int
	// limitFrom says where limit comes from ("configured", "default" or
	// "measured"; see nodeproto.Transcoding).
	limitFrom string
	// realtimeX is how many times faster than real time one ladder ran in
	// the self-benchmark (0 before it ran).
	realtimeX float64
	watcher   *stream.Watcher

	// measure tells Run to measure the capacity (MaxLadders -1 and
	// nothing cached); bench is what it measures.
	measure bool
	bench   CapacityConfig

	running   prometheus.Gauge
	limitG    prometheus.Gauge
	realtimeG prometheus.Gauge
	refused   prometheus.Counter
	fallbacks *prometheus.CounterVec
	behind    prometheus.Counter
	failovers *prometheus.CounterVec

	mu sync.Mutex
	// claims maps a stream id to the generation of the job holding its
	// slot: a new broadcast can start while the last one's job drains, and
	// only the newest job's end frees the slot.
	claims   map[string]uint64
	claimGen uint64
	// jobGens are the generations of the jobs claimed for stream ids and
	// not started yet, in the order the watcher delivers them: a job's
	// generation is its claim's, not what holds the slot when it starts
	// (a newer claim may have come meanwhile).
	jobGens  map[string][]uint64
	problems map[string]string   // stream id -> why its ladder failed
	rungs    map[string][]string // stream id -> the renditions its ladder publishes
	// reserved holds the remote worker reserved for a stream's next job;
	// remoteGen the generation of the jobs carried remotely, which do not
	// count against the node's own limit.
	reserved  map[string]RemoteLadder
	remoteGen map[string]uint64

	// onMetrics, when set (by tests, after New and before any source is
	// published), is called after the running, refused or dropped metrics
	// changed, so that tests wait for the change rather than poll.
	onMetrics func()
	// onJobEnd, when set (by tests, before Run), is called when a job has
	// ended and released its slot.
	onJobEnd func(id string, gen uint64)
	// onMeasured, when set (by tests, before Run), is called when a
	// capacity measurement ended, whatever its outcome.
	onMeasured func(Capacity, error)
}

func (t *Transcoder) metricsChanged() {
	if t.onMetrics != nil {
		t.onMetrics()
	}
}

// New validates cfg, picks the encoder backend (probing the hardware for
// HWAuto) and starts watching the hub, so no source published after New is
// missed.
func New(cfg Config, deps Deps) (*Transcoder, error) {
	if deps.Hub == nil {
		return nil, errors.New("transcode: Hub is required")
	}
	if len(cfg.Ladder) == 0 {
		return nil, errors.New("transcode: the ladder is empty")
	}
	if cfg.SegmentDuration <= 0 {
		return nil, errors.New("transcode: segment duration must be positive")
	}
	switch cfg.Remote {
	case "", RemoteOff:
		cfg.Remote = RemoteOff
	case RemotePrefer, RemoteOnly:
		if deps.Remote == nil {
			return nil, fmt.Errorf("transcode: remote %q needs Deps.Remote", cfg.Remote)
		}
	default:
		return nil, fmt.Errorf("transcode: remote must be off, prefer or only, not %q", cfg.Remote)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	ffmpeg.SetLogger(deps.Log)
	accel, err := PickAccel(cfg.HWAccel, deps.Log)
	if err != nil {
		return nil, err
	}
	limit, limitFrom := cfg.MaxLadders, "configured"
	if limit < 0 {
		limit, limitFrom = defaultLimit(accel.Backend), "default"
	}
	t := &Transcoder{
		cfg: cfg, log: deps.Log, hub: deps.Hub, ladders: deps.Ladders, remote: deps.Remote, accel: accel,
		reserved: map[string]RemoteLadder{}, remoteGen: map[string]uint64{},
		limit: limit, limitFrom: limitFrom,
		bench:  CapacityConfig{Ladder: cfg.Ladder, Preset: cfg.Preset, KeyframeInterval: cfg.SegmentDuration, Log: deps.Log},
		claims: map[string]uint64{}, jobGens: map[string][]uint64{}, problems: map[string]string{}, rungs: map[string][]string{},
		running: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_transcode_ladders_running", Help: "ABR ladders this node is encoding now.",
		}),
		limitG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_transcode_ladders_limit", Help: "ABR ladders this node runs at most.",
		}),
		realtimeG: prometheus.NewGauge(prometheus.GaugeOpts{
			Name: "shoal_transcode_ladder_realtime_factor",
			Help: "How many times faster than real time one ladder of this node's ladder ran alone in its capacity self-benchmark (0 when it did not run).",
		}),
		refused: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_transcode_refused_total", Help: "Sources not transcoded because the node was at its limit (served as they came).",
		}),
		behind: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_transcode_dropped_source_access_units_total",
			Help: "Source access units a ladder lost because it could not keep up with live (use a faster preset, a smaller ladder or a GPU).",
		}),
		failovers: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_transcode_remote_failovers_total",
			Help: "Live ladders taken over from a remote worker that died, stopped or fell behind, by another worker or by this node's CPU.",
		}, []string{"to"}),
		fallbacks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_transcode_fallbacks_total", Help: "Ladders that failed and fell back to the software encoder or to copying the source.",
		}, []string{"to"}),
	}
	if cfg.MaxLadders < 0 {
		t.measure = !t.useCachedCapacity()
	}
	t.limitG.Set(float64(t.limit))
	t.realtimeG.Set(t.realtimeX)
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{t.running, t.limitG, t.realtimeG, t.refused, t.fallbacks, t.failovers, t.behind, NewAccelCollector(accel)} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("transcode: register metrics: %w", err)
			}
		}
	}
	deps.Log.Info("transcoding", "backend", accel.Backend, "decode", accel.Decode(), "max_ladders", t.limit, "from", t.limitFrom, "ladder", cfg.Ladder.String())
	t.watcher = deps.Hub.Watch(func(k media.StreamKey) bool {
		return k.Rendition == media.RenditionSource && t.claimJob(k.Name)
	})
	return t, nil
}

// Backend names the encoder backend in use.
func (t *Transcoder) Backend() string { return t.accel.Backend }

// Limit is how many ladders this node runs at most.
func (t *Transcoder) Limit() int {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.limit
}

// Accel is what the hardware probe found at New.
func (t *Transcoder) Accel() Accel { return t.accel }

// Capabilities is what this node's live transcoding can do, for its entry
// in /v1/nodes.
func (t *Transcoder) Capabilities() nodeproto.Transcoding {
	t.mu.Lock()
	defer t.mu.Unlock()
	c := t.accel.Capabilities(t.limit, t.limitFrom)
	c.RealtimeX = t.realtimeX
	return c
}

func defaultLimit(backend string) int {
	if backend != ffmpeg.BackendSoftware {
		return 8
	}
	return max(1, runtime.NumCPU()/2)
}

// Claimed reports whether this node transcodes stream id. The transcoder's
// own watcher decides when a source starts (Claim); the hub asks watchers in
// registration order, so a watcher registered after New (the packager's)
// that calls Claimed for the same publication sees that decision.
func (t *Transcoder) Claimed(id string) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	_, ok := t.claims[id]
	return ok
}

// Claim reports whether this node transcodes stream id, taking one of its
// ladder slots the first time it is asked.
func (t *Transcoder) Claim(id string) bool {
	return t.claim(id, false)
}

// claim takes stream id's slot; forJob gives the slot to a new job even
// when an older job of the same id still holds it.
func (t *Transcoder) claim(id string, forJob bool) bool {
	t.mu.Lock()
	defer t.mu.Unlock()
	if _, ok := t.claims[id]; ok {
		if forJob {
			t.claimGen++
			t.claims[id] = t.claimGen
			t.reserveLocked(id)
		}
		return true
	}
	if t.reserveLocked(id) {
		t.claimGen++
		t.claims[id] = t.claimGen
		t.running.Set(float64(len(t.claims)))
		t.metricsChanged()
		return true
	}
	if t.cfg.Remote == RemoteOnly {
		t.refused.Inc()
		t.metricsChanged()
		t.log.Warn("no remote worker has room for the ladder; the source is served as it came", "stream", id)
		return false
	}
	if len(t.claims)-len(t.remoteGen) >= t.limit {
		if t.limit > 0 {
			t.refused.Inc()
			t.metricsChanged()
			t.log.Warn("transcoding capacity reached; the source is served as it came", "stream", id, "max_ladders", t.limit)
		}
		return false
	}
	t.claimGen++
	t.claims[id] = t.claimGen
	t.running.Set(float64(len(t.claims)))
	t.metricsChanged()
	return true
}

// claimJob claims id's slot for a new job (the watcher delivers its
// subscription), noting the job's generation for startedJob.
func (t *Transcoder) claimJob(id string) bool {
	if !t.claim(id, true) {
		return false
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	t.jobGens[id] = append(t.jobGens[id], t.claims[id])
	return true
}

// startedJob returns the generation of the job of id the watcher delivered
// (the oldest claimed and not started).
func (t *Transcoder) startedJob(id string) uint64 {
	t.mu.Lock()
	defer t.mu.Unlock()
	q := t.jobGens[id]
	if len(q) == 0 {
		return t.claims[id]
	}
	if len(q) == 1 {
		delete(t.jobGens, id)
	} else {
		t.jobGens[id] = q[1:]
	}
	return q[0]
}

// Rungs names the renditions stream id's running ladder publishes (nil
// when none runs), for the packager's master playlist.
func (t *Transcoder) Rungs(id string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.rungs[id]
}

// setRungs records the renditions of stream id's ladder, as the job of
// generation gen runs it: a job that ends after a newer one of the same id
// started (a publisher back at once) leaves the newer one's alone.
func (t *Transcoder) setRungs(id string, gen uint64, names []string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claims[id] != gen {
		return
	}
	if names == nil {
		delete(t.rungs, id)
	} else {
		t.rungs[id] = names
	}
}

// Problem says why stream id is not being transcoded as asked ("" when it
// is fine): the reason its ladder fell back to copying the source.
func (t *Transcoder) Problem(id string) string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return t.problems[id]
}

func (t *Transcoder) setProblem(id string, gen uint64, msg string) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claims[id] != gen {
		return // an older job's: the newer one's broadcast is not its
	}
	if msg == "" {
		delete(t.problems, id)
	} else {
		t.problems[id] = msg
	}
}

// release frees id's slot if the job of generation gen still holds it.
func (t *Transcoder) release(id string, gen uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.claims[id] == gen {
		delete(t.claims, id)
	}
	if t.remoteGen[id] == gen {
		delete(t.remoteGen, id)
	}
	t.running.Set(float64(len(t.claims)))
	t.metricsChanged()
}

// ladderFor returns stream id's own ladder, or the node's when it has none
// or it cannot be looked up (Redis down: the stream still gets a ladder).
func (t *Transcoder) ladderFor(ctx context.Context, id string) media.Ladder {
	if t.ladders == nil {
		return t.cfg.Ladder
	}
	lctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	s, err := t.ladders.StreamLadder(lctx, id)
	if err != nil {
		t.log.Warn("could not look up the stream's ladder; using the node's", "stream", id, "err", err)
		return t.cfg.Ladder
	}
	if s == "" {
		return t.cfg.Ladder
	}
	l, err := media.ParseLadder(s)
	if err != nil {
		t.log.Warn("the stream's ladder is invalid; using the node's", "stream", id, "err", err)
		return t.cfg.Ladder
	}
	return l
}

// Run transcodes claimed sources until ctx is done or the hub closes, and
// returns once every ladder has finished. Ladders already running when ctx
// is done go on until their source ends (end it in the hub), so that they
// flush their encoders and end their renditions properly.
//
// With MaxLadders -1 and no figure cached, Run first measures the node's
// capacity in the background (MeasureCapacity) while streams are already
// taken with the default limit, and replaces that limit with the figure.
func (t *Transcoder) Run(ctx context.Context) error {
	defer t.watcher.Close()
	var g errgroup.Group
	mctx, stopMeasuring := context.WithCancel(ctx)
	defer stopMeasuring()
	if t.measure {
		g.Go(func() error {
			t.measureCapacity(mctx)
			return nil
		})
	}
	for {
		sub, err := t.watcher.Next(ctx)
		if err != nil {
			break
		}
		gen := t.startedJob(sub.Key().Name)
		g.Go(func() error {
			if t.onJobEnd != nil {
				defer t.onJobEnd(sub.Key().Name, gen)
			}
			defer t.release(sub.Key().Name, gen)
			id := sub.Key().Name
			j := &job{t: t, id: id, gen: gen, log: t.log.With("stream", id), ladder: t.ladderFor(ctx, id)}
			j.pending = t.takeReserved(id, gen)
			j.remoteJob = j.pending != nil
			j.run(context.WithoutCancel(ctx), sub)
			return nil
		})
	}
	stopMeasuring() // nothing more to serve
	return g.Wait()
}

// reserveLocked reserves a remote worker for id's next job, when remote
// transcoding is on and none is reserved yet; it reports whether one is.
// Called with t.mu held.
func (t *Transcoder) reserveLocked(id string) bool {
	if t.cfg.Remote == RemoteOff {
		return false
	}
	if _, ok := t.reserved[id]; ok {
		return true
	}
	rl, ok := t.remote.Reserve(id, nil)
	if ok {
		t.reserved[id] = rl
	}
	return ok
}

// takeReserved hands id's reserved remote worker to the job of generation
// gen (nil when none is reserved: the job encodes here).
func (t *Transcoder) takeReserved(id string, gen uint64) RemoteLadder {
	t.mu.Lock()
	defer t.mu.Unlock()
	rl := t.reserved[id]
	delete(t.reserved, id)
	if rl != nil {
		t.remoteGen[id] = gen
	}
	return rl
}

// reserve reserves a remote worker for a running job of id (a failover,
// a reconnect), none of exclude.
func (t *Transcoder) reserve(id string, exclude []string) (RemoteLadder, bool) {
	if t.cfg.Remote == RemoteOff {
		return nil, false
	}
	return t.remote.Reserve(id, exclude)
}
