package remote

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"runtime"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/transcode"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// LiveConfig configures the origin's side of remote live ladders.
type LiveConfig struct {
	// Region is the origin's: a worker of the same region is preferred.
	Region string
	// PollWait bounds a worker's claim (long poll); 0: 20 s.
	PollWait time.Duration
	// QueueLen bounds the source access units queued for a worker; a
	// worker that lets more pile up is replaced. 0: 1200.
	QueueLen int
	// TickEvery is how often an idle source body carries a tick; 0: 1 s.
	TickEvery time.Duration
	// VerifyFraction is the share of each rung's segments (cells of the
	// keyframe grid) the origin re-checks (livecheck.go); 0: none.
	VerifyFraction float64
	// VerifyConcurrency bounds the checks under way at once (picks wait
	// for one, up to four times as many; more are skipped); 0: a quarter
	// of the CPUs, at least 1.
	VerifyConcurrency int
}

// LiveDeps are the origin's collaborators for remote live ladders.
type LiveDeps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Queue, when set, counts a worker's checked and failed cells and
	// its transcoded pixels in its record, and quarantines it at
	// QuarantineAfter failed checks (*routing.Store implements it).
	Queue interface {
		AddWorkerFigures(ctx context.Context, id string, deltas map[string]int64) (map[string]int64, error)
		QuarantineNode(ctx context.Context, id, reason string) error
	}
	// Figures, when set, adds to a node's figures of the current
	// accounting epoch: a worker's transcoded pixels and verified cells,
	// when its assignment ends with no failed check.
	Figures func(ctx context.Context, node string, deltas map[string]int64) error
}

// LiveOrigin hands live ladders to remote workers: the transcoder
// reserves a worker for a stream (Reserve, transcode.RemoteLadders), the
// worker learns of it at its claim (ClaimLive, a long poll), reads the
// source body (ServeSource) and posts the renditions body
// (ReceiveRenditions), which the transcoder publishes into the hub.
type LiveOrigin struct {
	cfg     LiveConfig
	log     *slog.Logger
	now     func() time.Time
	queue   figureQueue
	figures func(ctx context.Context, node string, deltas map[string]int64) error

	// The sampled checks: the key of their seeds (drawn at start, never
	// sent), their concurrency, outcomes and durations.
	seedKey          []byte
	checkSem         chan struct{}
	checkQueued      atomic.Int64 // checks waiting for checkSem
	checking         sync.WaitGroup
	liveChecks       *prometheus.CounterVec
	liveCheckSeconds prometheus.Histogram
	liveLatency      prometheus.Histogram

	mu      sync.Mutex
	workers map[string]*liveWorker
	assigns map[string]*liveAssignment
}

// liveWorker is a worker that claims live ladders.
type liveWorker struct {
	info     nodeproto.LiveWorker
	polling  int       // claims waiting now
	polled   time.Time // when its latest claim ended
	assigned int       // assignments it holds
	queue    []*liveAssignment
	wake     chan struct{}
	// latency is its measured latency (latencyEWMA), 0 until measured.
	latency time.Duration
}

// The latency of a worker is how long a segment takes through it: from
// the origin sending the source frame that starts a cell of the keyframe
// grid to its first rung's keyframe for that cell coming back (network
// both ways, queueing, decoding and the encoders' delay). Each cell is a
// sample; the worker's figure is their moving average, over its
// assignments, weighted latencyWeight to the newest.
const latencyWeight = 0.2

// latencyMargin: two workers whose latencies are within this share of
// each other are as fast (placement goes on to the heartbeats).
const latencyMargin = 0.2

// NewLiveOrigin validates cfg.
func NewLiveOrigin(cfg LiveConfig, deps LiveDeps) (*LiveOrigin, error) {
	if cfg.PollWait <= 0 {
		cfg.PollWait = 20 * time.Second
	}
	if cfg.QueueLen <= 0 {
		cfg.QueueLen = 1200
	}
	if cfg.TickEvery <= 0 {
		cfg.TickEvery = time.Second
	}
	if math.IsNaN(cfg.VerifyFraction) || cfg.VerifyFraction < 0 || cfg.VerifyFraction > 1 {
		return nil, fmt.Errorf("remote live: the verified fraction %v is not in [0, 1]", cfg.VerifyFraction)
	}
	if cfg.VerifyConcurrency <= 0 {
		cfg.VerifyConcurrency = max(1, runtime.NumCPU()/4)
	}
	log := deps.Log
	if log == nil {
		log = slog.Default()
	}
	o := &LiveOrigin{cfg: cfg, log: log, now: time.Now, figures: deps.Figures,
		workers: map[string]*liveWorker{}, assigns: map[string]*liveAssignment{},
		seedKey: make([]byte, 32), checkSem: make(chan struct{}, cfg.VerifyConcurrency),
		liveChecks: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_transcode_remote_live_checks_total",
			Help: "Re-checks of remote workers' live output, by outcome: sampled cells passed, failed, error (the origin could not check) or skipped (too many waited for a check, or the source kept did not reach back far enough); refused: output that broke the ladder's structure (rungs, sizes, keyframes, ahead of the source).",
		}, []string{"outcome"}),
		liveLatency: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_transcode_remote_live_latency_seconds",
			Help:    "Time a segment takes through a remote worker: from the source frame that starts a cell of the keyframe grid going out to the worker to its first rung's keyframe for that cell coming back.",
			Buckets: []float64{0.05, 0.1, 0.2, 0.35, 0.5, 0.75, 1, 1.5, 2, 3, 5},
		}),
		liveCheckSeconds: prometheus.NewHistogram(prometheus.HistogramOpts{
			Name:    "shoal_transcode_remote_live_check_seconds",
			Help:    "Time one sampled re-check of a remote worker's live output cell took.",
			Buckets: []float64{0.1, 0.25, 0.5, 1, 2, 4, 8, 16, 32},
		}),
	}
	if deps.Queue != nil {
		o.queue = deps.Queue
	}
	if _, err := rand.Read(o.seedKey); err != nil {
		return nil, fmt.Errorf("remote live: drawing the sampling key: %w", err)
	}
	for _, outcome := range []string{"passed", "failed", "refused", "error", "skipped"} {
		o.liveChecks.WithLabelValues(outcome)
	}
	if deps.Registerer != nil {
		if err := deps.Registerer.Register(o.liveChecks); err != nil {
			return nil, err
		}
		if err := deps.Registerer.Register(o.liveCheckSeconds); err != nil {
			return nil, err
		}
		if err := deps.Registerer.Register(o.liveLatency); err != nil {
			return nil, err
		}
	}
	return o, nil
}

// measured adds a latency sample of worker id's.
func (o *LiveOrigin) measured(id string, d time.Duration) {
	o.liveLatency.Observe(d.Seconds())
	o.mu.Lock()
	defer o.mu.Unlock()
	w := o.workers[id]
	if w == nil {
		return
	}
	if w.latency == 0 {
		w.latency = d
		return
	}
	w.latency = time.Duration(latencyWeight*float64(d) + (1-latencyWeight)*float64(w.latency))
}

// Latency is worker id's measured latency (0: not measured).
func (o *LiveOrigin) Latency(id string) time.Duration {
	o.mu.Lock()
	defer o.mu.Unlock()
	if w := o.workers[id]; w != nil {
		return w.latency
	}
	return 0
}

// WaitChecks waits for the checks and credits under way (tests: a
// process that stops drops those in flight, crediting nothing for them).
func (o *LiveOrigin) WaitChecks() { o.checking.Wait() }

// forget drops a worker that was quarantined: no ladder goes to it (its
// claims are refused from now on), and those it carries go to others.
func (o *LiveOrigin) forget(id string) {
	o.mu.Lock()
	delete(o.workers, id)
	var held []*liveAssignment
	for _, a := range o.assigns {
		if a.worker == id {
			held = append(held, a)
		}
	}
	o.mu.Unlock()
	for _, a := range held {
		a.fail(fmt.Errorf("worker %s was quarantined", id))
	}
}

var _ transcode.RemoteLadders = (*LiveOrigin)(nil)

// available reports whether w may be handed a ladder now: it claims, or
// claimed within two poll waits (between two claims).
func (o *LiveOrigin) available(w *liveWorker, now time.Time) bool {
	return w.polling > 0 || now.Sub(w.polled) < 2*o.cfg.PollWait
}

// Available is how many workers could be handed a ladder now (claiming,
// with room).
func (o *LiveOrigin) Available() int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n, now := 0, o.now()
	for _, w := range o.workers {
		if o.available(w, now) && w.room() > 0 {
			n++
		}
	}
	return n
}

// Reserve picks, among the workers claiming now and not in exclude, those
// with the most room (their advertised ladders minus those they carry),
// then of those the ones of the origin's region if any, then leaves out
// those slower than the fastest by more than latencyMargin (their measured
// latencies; a worker not measured yet stays), and takes the one with the
// latest heartbeat, the smallest id on a tie. Each step narrows the set,
// so the pick does not depend on the order the workers are looked at.
func (o *LiveOrigin) Reserve(stream string, exclude []string) (transcode.RemoteLadder, bool) {
	o.mu.Lock()
	defer o.mu.Unlock()
	now := o.now()
	var set []*liveWorker
	for _, w := range o.workers {
		if o.available(w, now) && w.room() > 0 && !slices.Contains(exclude, w.info.ID) {
			set = append(set, w)
		}
	}
	best := choose(set, o.cfg.Region)
	if best == nil {
		return nil, false
	}
	best.assigned++
	a := &liveAssignment{
		o: o, id: ids.New(), stream: stream, worker: best.info.ID,
		src: make(chan *media.AccessUnit, o.cfg.QueueLen), srcEnd: make(chan struct{}),
		frames: make(chan nodeproto.LiveFrame), bodyDone: make(chan struct{}), done: make(chan struct{}),
	}
	o.assigns[a.id] = a
	return a, true
}

// room is how many more ladders w may take: those it advertised, less
// those it carries and those its VOD jobs take (its latest claim says).
func (w *liveWorker) room() int { return w.info.Ladders - w.assigned - w.info.VODBusy }

// choose is Reserve's choice among set (nil when it is empty).
func choose(set []*liveWorker, region string) *liveWorker {
	keep := func(f func(*liveWorker) bool) {
		var out []*liveWorker
		for _, w := range set {
			if f(w) {
				out = append(out, w)
			}
		}
		if len(out) > 0 {
			set = out
		}
	}
	most := 0
	for _, w := range set {
		most = max(most, w.room())
	}
	keep(func(w *liveWorker) bool { return w.room() == most })
	keep(func(w *liveWorker) bool { return w.info.Region == region })
	var fastest time.Duration
	for _, w := range set {
		if w.latency > 0 && (fastest == 0 || w.latency < fastest) {
			fastest = w.latency
		}
	}
	keep(func(w *liveWorker) bool {
		return w.latency == 0 || float64(fastest) >= float64(w.latency)*(1-latencyMargin)
	})
	var best *liveWorker
	for _, w := range set {
		if best == nil || w.info.LastSeen.After(best.info.LastSeen) ||
			w.info.LastSeen.Equal(best.info.LastSeen) && w.info.ID < best.info.ID {
			best = w
		}
	}
	return best
}

// ClaimLive is a worker's claim: it waits (at most PollWait, or ctx) for a
// ladder handed to the worker and returns it, ok false when none came.
func (o *LiveOrigin) ClaimLive(ctx context.Context, w nodeproto.LiveWorker) (nodeproto.LiveAssignment, bool, error) {
	o.mu.Lock()
	lw := o.workers[w.ID]
	if lw == nil {
		lw = &liveWorker{wake: make(chan struct{}, 1)}
		o.workers[w.ID] = lw
		o.log.Info("a remote worker waits for live ladders", "node", w.ID, "region", w.Region, "ladders", w.Ladders)
	}
	lw.info = w
	lw.polling++
	o.mu.Unlock()
	defer func() {
		o.mu.Lock()
		lw.polling--
		lw.polled = o.now()
		o.mu.Unlock()
	}()
	t := time.NewTimer(o.cfg.PollWait)
	defer t.Stop()
	for {
		o.mu.Lock()
		for len(lw.queue) > 0 {
			a := lw.queue[0]
			lw.queue = lw.queue[1:]
			if a.closed() {
				continue
			}
			o.mu.Unlock()
			return nodeproto.LiveAssignment{Assignment: a.id, Stream: a.stream}, true, nil
		}
		o.mu.Unlock()
		select {
		case <-ctx.Done():
			return nodeproto.LiveAssignment{}, false, nil
		case <-t.C:
			return nodeproto.LiveAssignment{}, false, nil
		case <-lw.wake:
		}
	}
}

// assignment returns the node's assignment id, or a protocol error.
func (o *LiveOrigin) assignment(node, id string) (*liveAssignment, error) {
	o.mu.Lock()
	defer o.mu.Unlock()
	a := o.assigns[id]
	switch {
	case a == nil || a.closed():
		return nil, &nodeproto.WorkerError{Status: http.StatusGone, Code: "assignment_gone", Message: "no such live assignment (it ended, or went to another worker)"}
	case a.worker != node:
		return nil, &nodeproto.WorkerError{Status: http.StatusForbidden, Code: nodeproto.CodeNotYourJob, Message: "this live assignment is another worker's"}
	}
	return a, nil
}

// ServeSource writes the assignment's source body to out: its header, the
// source video from the GOP the assignment started at, ticks while the
// source is idle; it returns nil when the source ended, an error when the
// worker went away (which fails the assignment) or it was closed.
func (o *LiveOrigin) ServeSource(ctx context.Context, node, id string, start func(), out *nodeproto.LiveWriter) error {
	a, err := o.assignment(node, id)
	if err != nil {
		return err
	}
	a.mu.Lock()
	if a.srcOpened {
		a.mu.Unlock()
		return &nodeproto.WorkerError{Status: http.StatusConflict, Code: "conflict", Message: "the source of this assignment is already being read"}
	}
	a.srcOpened = true
	a.mu.Unlock()
	start()
	fail := func(err error) error {
		a.fail(fmt.Errorf("the source body to worker %s broke: %w", node, err))
		return err
	}
	if err := out.WriteSource(a.hdr); err != nil {
		return fail(err)
	}
	tick := time.NewTicker(o.cfg.TickEvery)
	defer tick.Stop()
	for {
		select {
		case au := <-a.src:
			if err := out.WriteAU(au); err != nil {
				return fail(err)
			}
			continue
		default:
		}
		select {
		case au := <-a.src:
			if err := out.WriteAU(au); err != nil {
				return fail(err)
			}
		case <-a.srcEnd:
			if len(a.src) > 0 {
				continue
			}
			return nil
		case <-tick.C:
			if err := out.WriteTick(); err != nil {
				return fail(err)
			}
		case <-a.done:
			return errors.New("the assignment was closed")
		case <-ctx.Done():
			return fail(ctx.Err())
		}
	}
}

// ReceiveRenditions reads the worker's renditions body and hands its
// frames to the transcoder's job. The body must start with its header.
func (o *LiveOrigin) ReceiveRenditions(ctx context.Context, node, id string, body io.Reader) error {
	a, err := o.assignment(node, id)
	if err != nil {
		return err
	}
	a.mu.Lock()
	if a.outOpened {
		a.mu.Unlock()
		return &nodeproto.WorkerError{Status: http.StatusConflict, Code: "conflict", Message: "the renditions of this assignment are already being received"}
	}
	a.outOpened = true
	a.mu.Unlock()
	r := nodeproto.NewLiveReader(body)
	first := true
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			a.endBody(nil)
			return nil
		}
		if err == nil && first && f.Renditions == nil && f.Kind != nodeproto.LiveKindTick {
			err = errors.New("the renditions body must start with its header")
		}
		if err == nil && f.Source != nil {
			err = errors.New("a source header in a renditions body")
		}
		if err != nil {
			err = fmt.Errorf("the renditions body of worker %s: %w", node, err)
			a.endBody(err)
			return &nodeproto.WorkerError{Status: http.StatusBadRequest, Code: "invalid_request", Message: err.Error()}
		}
		if f.Kind == nodeproto.LiveKindTick {
			continue
		}
		first = false
		select {
		case a.frames <- f:
		case <-a.done:
			return &nodeproto.WorkerError{Status: http.StatusGone, Code: "assignment_gone", Message: "the assignment ended (another worker or the origin took over)"}
		case <-ctx.Done():
			a.endBody(ctx.Err())
			return ctx.Err()
		}
	}
}

// liveAssignment is one stream's ladder on one worker.
type liveAssignment struct {
	o                      *LiveOrigin
	id, stream, worker     string
	hdr                    nodeproto.LiveSource
	src                    chan *media.AccessUnit
	srcEnd                 chan struct{} // closed by End
	frames                 chan nodeproto.LiveFrame
	bodyDone               chan struct{} // closed when the renditions body ended
	done                   chan struct{} // closed by Close or a failure
	sampler                *liveSampler  // nil: not checked
	lat                    latencyProbe
	mu                     sync.Mutex
	srcOpened, outOpened   bool
	ended, closing, bodyOK bool
	err                    error
}

func (a *liveAssignment) Worker() string { return a.worker }

func (a *liveAssignment) closed() bool {
	select {
	case <-a.done:
		return true
	default:
		return false
	}
}

// Start queues the assignment for the worker's claim.
func (a *liveAssignment) Start(hdr nodeproto.LiveSource) {
	a.hdr = hdr
	o := a.o
	a.lat.start(hdr)
	a.sampler = o.newLiveSampler(a, hdr)
	o.mu.Lock()
	defer o.mu.Unlock()
	if w := o.workers[a.worker]; w != nil {
		w.queue = append(w.queue, a)
		select {
		case w.wake <- struct{}{}:
		default:
		}
	}
}

func (a *liveAssignment) Send(au *media.AccessUnit) bool {
	if a.closed() {
		return false
	}
	if a.sampler != nil {
		// Before the worker can have it: its output is checked against
		// what it was sent.
		if err := a.sampler.onSource(au); err != nil {
			a.fail(fmt.Errorf("worker %s: %w", a.worker, err))
			return false
		}
	}
	a.lat.sent(au, a.o.now())
	select {
	case a.src <- au:
		return true
	default:
		a.fail(fmt.Errorf("worker %s let %d source access units pile up", a.worker, cap(a.src)))
		return false
	}
}

func (a *liveAssignment) End() {
	a.mu.Lock()
	defer a.mu.Unlock()
	if !a.ended {
		a.ended = true
		close(a.srcEnd)
	}
}

func (a *liveAssignment) endBody(err error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	select {
	case <-a.bodyDone:
		return
	default:
	}
	if err == nil && !a.ended {
		err = errors.New("the worker ended its renditions before the source ended")
	}
	if a.err == nil {
		a.err = err
	}
	a.bodyOK = err == nil
	close(a.bodyDone)
}

// Recv returns the worker's next frame.
func (a *liveAssignment) Recv() (nodeproto.LiveFrame, error) {
	select {
	case f := <-a.frames:
		if d, ok := a.lat.received(f, a.o.now()); ok {
			a.o.measured(a.worker, d)
		}
		if a.sampler != nil {
			if err := a.sampler.onOutput(f); err != nil {
				err = fmt.Errorf("worker %s: %w", a.worker, err)
				a.fail(err)
				return nodeproto.LiveFrame{}, err
			}
		}
		return f, nil
	case <-a.bodyDone:
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.bodyOK {
			return nodeproto.LiveFrame{}, io.EOF
		}
		return nodeproto.LiveFrame{}, a.err
	case <-a.done:
		a.mu.Lock()
		defer a.mu.Unlock()
		if a.err != nil {
			return nodeproto.LiveFrame{}, a.err
		}
		return nodeproto.LiveFrame{}, errors.New("the assignment was closed")
	}
}

// fail ends the assignment with err (the worker went away).
func (a *liveAssignment) fail(err error) {
	a.mu.Lock()
	if a.err == nil {
		a.err = err
	}
	a.mu.Unlock()
	a.Close()
}

// Close ends the assignment and frees the worker's slot.
func (a *liveAssignment) Close() {
	a.mu.Lock()
	if a.closing {
		a.mu.Unlock()
		return
	}
	a.closing = true
	close(a.done)
	a.mu.Unlock()
	if a.sampler != nil {
		a.sampler.closed()
	}
	o := a.o
	o.mu.Lock()
	defer o.mu.Unlock()
	delete(o.assigns, a.id)
	if w := o.workers[a.worker]; w != nil {
		w.assigned--
	}
}

// latencyProbe times an assignment's cells: when the source frame that
// starts each went out, and when the first rung's keyframe for it came
// back. Send and Recv run on different goroutines: it has its own lock.
type latencyProbe struct {
	mu     sync.Mutex
	rate   int64 // the source video's clock rate
	anchor int64 // the grid, 90 kHz
	step   int64
	tol    int64 // half an encoder tick, 90 kHz
	last   int64 // the cell of the latest source frame sent
	began  bool
	live   bool                // the worker's output began: cells are timed from then
	sentAt map[int64]time.Time // by cell, while its keyframe may come
}

func (p *latencyProbe) start(hdr nodeproto.LiveSource) {
	if hdr.Video < 0 || hdr.Video >= len(hdr.Tracks) || hdr.Tracks[hdr.Video].ClockRate <= 0 || hdr.SegmentMillis <= 0 {
		return
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	p.rate, p.anchor = int64(hdr.Tracks[hdr.Video].ClockRate), hdr.KeyframeAnchor
	p.step = media.Ticks(time.Duration(hdr.SegmentMillis)*time.Millisecond, 90000)
	p.tol = ffmpeg.EncoderTick(hdr.Tracks[hdr.Video].Track())/2 + 1
	p.sentAt = map[int64]time.Time{}
}

func (p *latencyProbe) cellOf(pts int64) int64 { return floorDiv(pts-p.anchor, p.step) }

// sent notes a source frame going out at now: the first of a cell starts
// its timing, once the worker's output began (before, what it is sent is
// the replay of the current GOP, in a burst, and its start-up: claim,
// bodies, encoders opening).
func (p *latencyProbe) sent(au *media.AccessUnit, now time.Time) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sentAt == nil {
		return
	}
	k := p.cellOf(au.PTS * 90000 / p.rate)
	if p.began && k > p.last && p.live {
		p.sentAt[k] = now
		for c := range p.sentAt {
			if c < k-8 {
				delete(p.sentAt, c)
			}
		}
	}
	if !p.began || k > p.last {
		p.last, p.began = k, true
	}
}

// received notes a frame of the worker's coming back at now: the first
// rung's keyframe of a timed cell ends its timing.
func (p *latencyProbe) received(f nodeproto.LiveFrame, now time.Time) (time.Duration, bool) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.sentAt == nil {
		return 0, false
	}
	p.live = true
	if f.AU == nil || !f.AU.Keyframe || f.AU.Track != 0 {
		return 0, false
	}
	k := p.cellOf(f.AU.PTS + p.tol)
	at, ok := p.sentAt[k]
	if !ok {
		return 0, false
	}
	delete(p.sentAt, k)
	return now.Sub(at), true
}
