// Package restream pushes live streams to other RTMP(S) platforms (YouTube,
// Twitch, Facebook, another Shoal): the simulcast targets a creator attaches
// to a live stream.
//
// A Manager watches the stream hub for source publications. For each live
// stream it reads the stream's targets from a TargetSource and runs one
// pusher per target; Refresh re-reads them when the API adds or deletes
// one. A pusher subscribes to the stream's source, or to a transcoded rung
// such as "720p" (falling back to the source, said in State.Detail, when
// that rung is not published), connects and publishes to the target over
// RTMP or RTMPS (gortmplib's handshake, message and AMF0 packages), announces
// the H.264/H.265 and AAC tracks and writes access units with gortmplib's
// Writer, starting at a video keyframe. When a connection fails the pusher
// reports "failed" (through Deps.OnState, e.g. for a webhook) and
// reconnects with exponential backoff while the stream is live; a
// connection that stayed up for Config.StableAfter resets the backoff. When
// the stream ends, every pusher sends what its subscription still holds,
// unpublishes, disconnects and reports "idle".
//
// The start of a broadcast reaches the hub before any pusher can subscribe
// (the RTMP ingest publishes the seconds it analysed in one burst, and the
// targets are read after the publication started). Each stream therefore
// buffers its source's first seconds; a target that has received nothing
// yet starts from the beginning of the broadcast.
//
// A publisher that reconnects within the hub's grace period continues its
// publication with timestamps that start over (stream.Event.Restart). If its
// tracks have the same parameters, the pusher keeps the connection to the
// target and re-bases the new timestamps after the last ones it sent plus
// the wall-clock time the publisher was away, so the target sees one
// continuous broadcast with a pause, never a jump back; platforms that end a
// broadcast when their encoder disconnects (YouTube's auto-stop) keep it. If
// the tracks changed (codec parameters the target cannot decode with the
// sequence headers it was sent), the pusher unpublishes and reconnects at
// once, without backoff, continuing the same subscription so that nothing
// the new publisher sent meanwhile is lost.
//
// A slow target never slows the hub: each pusher reads through its own
// bounded hub subscription, which drops until the next keyframe when the
// pusher falls behind, and every write has a deadline.
//
// RTMP URLs embed the platform's stream key: everything this package logs,
// stores or returns shows URLs through RedactURL and scrubs the key from
// error texts.
package restream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// Target is one platform a live stream is pushed to.
type Target struct {
	// ID identifies the target within its live stream.
	ID string
	// Name is what the user called it ("YouTube").
	Name string
	// URL is rtmp:// or rtmps://host[:port]/app/stream-key.
	URL string
	// Rendition is "" or "source" for the stream as published, or the name
	// of a transcoded rung ("720p").
	Rendition string
}

// TargetSource reads a live stream's targets (the app backs it with Redis).
type TargetSource interface {
	Targets(ctx context.Context, streamID string) ([]Target, error)
}

// Hub is the part of the stream hub the manager reads (*stream.Hub).
type Hub interface {
	Watch(match func(media.StreamKey) bool) *stream.Watcher
	WatchStarts(match func(media.StreamKey) bool) *stream.Watcher
	Subscribe(key media.StreamKey) (*stream.Subscriber, error)
}

// Target states.
const (
	StateIdle       = "idle"
	StateConnecting = "connecting"
	StateLive       = "live"
	StateFailed     = "failed"
)

// State is where a target's pusher stands.
type State struct {
	// State is idle, connecting, live or failed.
	State string
	// Error is why the latest connection failed (credentials and stream
	// key redacted); set with "failed".
	Error string
	// Detail says what is sent when it is not what the target asked for,
	// e.g. the source because the chosen rung is not published.
	Detail string
	// Since is when State was entered.
	Since time.Time
	// BytesSent counts the bytes sent to the target during this broadcast,
	// over every connection.
	BytesSent int64
}

// Config tunes the manager. The caller applies defaults (DefaultConfig);
// New validates.
type Config struct {
	// BackoffMin is the first reconnect delay; each failure doubles it up
	// to BackoffMax (plus up to 20% jitter).
	BackoffMin, BackoffMax time.Duration
	// StableAfter resets the reconnect delay once a connection stayed live
	// this long.
	StableAfter time.Duration
	// DialTimeout bounds connecting: TCP, TLS, the RTMP handshake, connect
	// and publish.
	DialTimeout time.Duration
	// WriteTimeout bounds writing one message; a target that takes longer
	// has failed.
	WriteTimeout time.Duration
	// AllowPrivate lets targets be on loopback, private and link-local
	// addresses (another Shoal on the same network, tests); by default
	// only public addresses are dialed, so API users cannot reach into
	// the origin's network.
	AllowPrivate bool
	// RenditionWait is how long a pusher whose target chose a rung waits
	// for the rung to be published (the transcoder starts it shortly after
	// the source) before sending the source instead.
	RenditionWait time.Duration
}

// DefaultConfig returns the defaults.
func DefaultConfig() Config {
	return Config{
		BackoffMin:    time.Second,
		BackoffMax:    time.Minute,
		StableAfter:   time.Minute,
		DialTimeout:   10 * time.Second,
		WriteTimeout:  10 * time.Second,
		RenditionWait: 10 * time.Second,
	}
}

func (c Config) validate() error {
	switch {
	case c.BackoffMin <= 0:
		return fmt.Errorf("restream: backoff min must be positive, got %s", c.BackoffMin)
	case c.BackoffMax < c.BackoffMin:
		return fmt.Errorf("restream: backoff max %s is below backoff min %s", c.BackoffMax, c.BackoffMin)
	case c.StableAfter <= 0:
		return fmt.Errorf("restream: stable-after must be positive, got %s", c.StableAfter)
	case c.DialTimeout <= 0:
		return fmt.Errorf("restream: dial timeout must be positive, got %s", c.DialTimeout)
	case c.WriteTimeout <= 0:
		return fmt.Errorf("restream: write timeout must be positive, got %s", c.WriteTimeout)
	case c.RenditionWait < 0:
		return fmt.Errorf("restream: rendition wait must not be negative, got %s", c.RenditionWait)
	}
	return nil
}

// Deps are the manager's collaborators.
type Deps struct {
	Log     *slog.Logger
	Hub     Hub
	Targets TargetSource
	// OnState, when set, is called on every state change of a target (for
	// webhooks such as live_stream.restream.failed), from the target's
	// pusher goroutine: it must not block for long.
	OnState    func(streamID string, t Target, s State)
	Registerer prometheus.Registerer
	// Now is the clock of State.Since, of the stable-connection check, of
	// the start buffer's window and of re-basing timestamps after a
	// publisher restart; time.Now when nil. (Timers and socket deadlines
	// use the real clock.)
	Now func() time.Time
}

// targetsTimeout bounds one read of a stream's targets.
const targetsTimeout = 10 * time.Second

// Manager runs the pushers of every live stream.
type Manager struct {
	cfg  Config
	deps Deps
	log  *slog.Logger

	targetsGauge *prometheus.GaugeVec
	bytes        prometheus.Counter
	failures     prometheus.Counter
	targetsWarn  *logx.Limiter
	// sources hands over a subscriber of every source publication from its
	// first access unit; rungs announces every other publication.
	sources, rungs *stream.Watcher

	mu      sync.Mutex
	streams map[string]*liveStream
	// waiters are woken when a publication of their key starts (pushers
	// waiting for a rung).
	waiters map[media.StreamKey]map[chan struct{}]struct{}
}

// New validates cfg and deps, allocates a manager and starts watching the
// hub (so that no publication between New and Run is missed): Run must
// follow.
func New(cfg Config, deps Deps) (*Manager, error) {
	if err := cfg.validate(); err != nil {
		return nil, err
	}
	if deps.Hub == nil || deps.Targets == nil {
		return nil, errors.New("restream: Hub and Targets are required")
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	m := &Manager{
		cfg:  cfg,
		deps: deps,
		log:  deps.Log,
		targetsGauge: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_restream_targets",
			Help: "Restream targets of live streams by state (connecting, live, failed).",
		}, []string{"state"}),
		bytes: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_restream_bytes_total",
			Help: "Bytes sent to restream targets.",
		}),
		failures: prometheus.NewCounter(prometheus.CounterOpts{
			Name: "shoal_restream_failures_total",
			Help: "Failed restream connections (each is retried with backoff).",
		}),
		targetsWarn: logx.NewLimiter(10 * time.Second),
		streams:     map[string]*liveStream{},
		waiters:     map[media.StreamKey]map[chan struct{}]struct{}{},
	}
	// Watch from now on, so that no publication started between New and
	// Run is missed: sources start streams, rungs wake the pushers waiting
	// for them (control-only subscribers: no media).
	m.sources = deps.Hub.Watch(func(k media.StreamKey) bool { return k.Rendition == media.RenditionSource })
	m.rungs = deps.Hub.WatchStarts(func(k media.StreamKey) bool { return k.Rendition != media.RenditionSource })
	for _, s := range []string{StateConnecting, StateLive, StateFailed} {
		m.targetsGauge.WithLabelValues(s)
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{m.targetsGauge, m.bytes, m.failures} {
			if err := deps.Registerer.Register(c); err != nil {
				m.sources.Close()
				m.rungs.Close()
				return nil, fmt.Errorf("restream: register metrics: %w", err)
			}
		}
	}
	return m, nil
}

// Run follows the hub's source publications until ctx is done or the hub
// closes, and returns once every stream and pusher it started has finished.
// Publications that started before New are not pushed.
func (m *Manager) Run(ctx context.Context) error {
	defer m.sources.Close()
	defer m.rungs.Close()
	var g errgroup.Group
	g.Go(func() error {
		for {
			sub, err := m.rungs.Next(ctx)
			if err != nil {
				return nil
			}
			m.notifyStart(sub.Key())
			sub.Close()
		}
	})
	for {
		sub, err := m.sources.Next(ctx)
		if err != nil {
			break // ctx done or the hub closed: streams end with it
		}
		ls := m.newStream(ctx, sub.Key().Name)
		g.Go(func() error { ls.run(sub); return nil })
	}
	return g.Wait()
}

// Refresh re-reads a live stream's targets: new ones start, removed or
// changed ones stop at once. It does not block; a stream that is not live
// is ignored.
func (m *Manager) Refresh(streamID string) {
	m.mu.Lock()
	ls := m.streams[streamID]
	m.mu.Unlock()
	if ls != nil {
		select {
		case ls.refresh <- struct{}{}:
		default:
		}
	}
}

// States returns the state of every running target of a live stream by
// target id; nil when there is none (the stream is not live: its targets
// are all idle).
func (m *Manager) States(streamID string) map[string]State {
	m.mu.Lock()
	defer m.mu.Unlock()
	ls := m.streams[streamID]
	if ls == nil || len(ls.states) == 0 {
		return nil
	}
	out := make(map[string]State, len(ls.states))
	for id, p := range ls.states {
		st := p.state
		st.BytesSent = p.bytes.Load()
		out[id] = st
	}
	return out
}

// setState records p's new state and reports it. Since is set when State
// changes; a report that changes nothing is dropped.
func (m *Manager) setState(p *pusher, st State) {
	m.mu.Lock()
	old := p.state
	if old.State == st.State && old.Error == st.Error && old.Detail == st.Detail {
		m.mu.Unlock()
		return
	}
	st.Since = old.Since
	if old.State != st.State {
		st.Since = m.deps.Now()
	}
	st.BytesSent = p.bytes.Load()
	p.state = st
	if old.State != st.State {
		if old.State != "" && old.State != StateIdle {
			m.targetsGauge.WithLabelValues(old.State).Dec()
		}
		if st.State != StateIdle {
			m.targetsGauge.WithLabelValues(st.State).Inc()
		}
	}
	if st.State == StateIdle {
		if p.ls.states[p.t.ID] == p {
			delete(p.ls.states, p.t.ID)
		}
	} else {
		p.ls.states[p.t.ID] = p
	}
	m.mu.Unlock()
	if m.deps.OnState != nil {
		m.deps.OnState(p.ls.id, p.t, st)
	}
}

// waitStart returns a channel closed when a publication of key starts from
// now on, and a function to stop waiting.
func (m *Manager) waitStart(key media.StreamKey) (<-chan struct{}, func()) {
	ch := make(chan struct{})
	m.mu.Lock()
	if m.waiters[key] == nil {
		m.waiters[key] = map[chan struct{}]struct{}{}
	}
	m.waiters[key][ch] = struct{}{}
	m.mu.Unlock()
	return ch, func() {
		m.mu.Lock()
		defer m.mu.Unlock()
		if ws := m.waiters[key]; ws != nil {
			delete(ws, ch)
			if len(ws) == 0 {
				delete(m.waiters, key)
			}
		}
	}
}

func (m *Manager) notifyStart(key media.StreamKey) {
	m.mu.Lock()
	defer m.mu.Unlock()
	for ch := range m.waiters[key] {
		close(ch)
	}
	delete(m.waiters, key)
}

// liveStream is one live stream's set of pushers. Its run goroutine owns
// pushers; states is guarded by Manager.mu.
type liveStream struct {
	m  *Manager
	id string
	// ctx is canceled when the manager stops; ended when the source
	// publication ends (or ctx is done).
	ctx     context.Context
	ended   context.Context
	endNow  context.CancelFunc
	refresh chan struct{}
	done    chan struct{}
	prev    *liveStream // a previous publication of the same id, still ending
	pushers map[string]*pusherRun
	states  map[string]*pusher
	start   *startBuffer
}

type pusherRun struct {
	p      *pusher
	cancel context.CancelFunc
	done   chan struct{}
}

func (m *Manager) newStream(ctx context.Context, id string) *liveStream {
	ended, endNow := context.WithCancel(ctx)
	ls := &liveStream{
		m: m, id: id, ctx: ctx, ended: ended, endNow: endNow,
		refresh: make(chan struct{}, 1),
		done:    make(chan struct{}),
		pushers: map[string]*pusherRun{},
		states:  map[string]*pusher{},
		start:   newStartBuffer(m.deps.Now()),
	}
	m.mu.Lock()
	ls.prev = m.streams[id]
	m.streams[id] = ls
	m.mu.Unlock()
	return ls
}

// run pushes the stream until its source publication (read through sub,
// which fills the start buffer) ends or the manager stops.
func (ls *liveStream) run(sub *stream.Subscriber) {
	defer close(ls.done)
	defer func() {
		ls.m.mu.Lock()
		if ls.m.streams[ls.id] == ls {
			delete(ls.m.streams, ls.id)
		}
		ls.m.mu.Unlock()
	}()
	defer ls.endNow()

	var wg sync.WaitGroup
	defer wg.Wait()
	wg.Go(func() {
		defer sub.Close()
		defer ls.endNow()
		defer ls.start.close()
		for {
			ev, err := sub.Next(ls.ctx)
			switch {
			case err != nil:
				return // io.EOF: the stream ended
			case ev.Restart:
				ls.start.close() // a new timeline: the start is history
			case ev.AU != nil:
				ls.start.add(ev.AU, ls.m.deps.Now())
			}
		}
	})
	if ls.prev != nil {
		// The same stream id published again before the previous
		// publication's pushers finished: let them finish first, so that
		// one target never has two connections.
		select {
		case <-ls.prev.done:
		case <-ls.ended.Done():
		}
		ls.prev = nil
	}

	bo := newBackoff(ls.m.cfg)
	var retry <-chan time.Time
	var retryTimer *time.Timer
	load := func() {
		if retryTimer != nil {
			retryTimer.Stop()
			retry = nil
		}
		if err := ls.reload(); err != nil {
			d := bo.next()
			if ok, n := ls.m.targetsWarn.Allow(); ok {
				ls.m.log.Warn("could not read a live stream's restream targets; retrying", "stream", ls.id,
					"retry_in", d, "err", err, "suppressed_since_last", n)
			}
			retryTimer = time.NewTimer(d)
			retry = retryTimer.C
			return
		}
		bo.reset()
	}
	load()
	if retry == nil && len(ls.pushers) == 0 {
		// No targets when the broadcast started: nobody will want its
		// start (a target added later joins live), so it is not kept.
		ls.start.close()
	}
	for {
		select {
		case <-ls.ended.Done():
			if retryTimer != nil {
				retryTimer.Stop()
			}
			ls.stopAll()
			return
		case <-ls.refresh:
			load()
		case <-retry:
			retry = nil
			load()
		}
	}
}

// reload reads the targets and starts, stops or restarts pushers to match.
func (ls *liveStream) reload() error {
	ctx, cancel := context.WithTimeout(ls.ended, targetsTimeout)
	targets, err := ls.m.deps.Targets.Targets(ctx, ls.id)
	cancel()
	if err != nil {
		if ls.ended.Err() != nil {
			return nil
		}
		return err
	}
	want := make(map[string]Target, len(targets))
	for _, t := range targets {
		if t.ID == "" {
			continue
		}
		want[t.ID] = t
	}
	for id, r := range ls.pushers {
		if t, ok := want[id]; !ok || t != r.p.t {
			r.cancel()
			<-r.done
			delete(ls.pushers, id)
		}
	}
	for id, t := range want {
		if _, ok := ls.pushers[id]; ok {
			continue
		}
		p := &pusher{m: ls.m, ls: ls, t: t}
		ctx, cancel := context.WithCancel(ls.ctx)
		soft, softCancel := context.WithCancel(ctx)
		stop := context.AfterFunc(ls.ended, softCancel)
		r := &pusherRun{p: p, cancel: cancel, done: make(chan struct{})}
		ls.pushers[id] = r
		go func() {
			defer close(r.done)
			defer softCancel()
			defer stop()
			p.run(ctx, soft)
		}()
	}
	return nil
}

// stopAll ends the pushers after the stream ended: those connected finish
// sending what their subscription holds, then unpublish; whatever is not
// done within the write timeout is stopped.
func (ls *liveStream) stopAll() {
	timer := time.NewTimer(ls.m.cfg.WriteTimeout)
	defer timer.Stop()
	for _, r := range ls.pushers {
		select {
		case <-r.done:
		case <-timer.C:
			for _, r := range ls.pushers {
				r.cancel()
			}
		}
	}
	for id, r := range ls.pushers {
		r.cancel()
		<-r.done
		delete(ls.pushers, id)
	}
}
