package rtsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
)

// Source is a live stream the origin pulls from an RTSP server (a camera).
type Source struct {
	ID  string // the live stream
	URL string // rtsp:// or rtsps://, credentials included
}

// Pull states, as the API shows them.
const (
	PullConnecting = "connecting" // connecting, or waiting for the first frames
	PullLive       = "live"       // publishing into the hub
	PullRetrying   = "retrying"   // the last attempt failed; trying again after a backoff
)

// PullStatus is the state of one pull.
type PullStatus struct {
	State     string
	LastError string
	Since     time.Time
}

// PullConfig configures a Puller.
type PullConfig struct {
	// Refresh is how often the list of sources is read (default 2 s).
	Refresh time.Duration
	// ReadTimeout ends a pull that receives nothing for this long.
	ReadTimeout time.Duration
	// MaxBackoff bounds the wait between attempts (default 30 s); it starts
	// at a second and doubles.
	MaxBackoff time.Duration
	// SetupTimeout bounds an attempt's set-up, from the first connection
	// to PLAY's answer, redirects and authentication included (default
	// 30 s).
	SetupTimeout time.Duration
	// AllowPrivate lets sources be on loopback, private, link-local and
	// CGNAT addresses; off, every address dialed (after name resolution,
	// redirects included) must be public (netguard).
	AllowPrivate bool
}

// PullDeps are a Puller's collaborators.
type PullDeps struct {
	Log        *slog.Logger
	Hub        ingest.Hub
	Registerer prometheus.Registerer
	// Sources lists the live streams to pull, every Refresh.
	Sources func(ctx context.Context) ([]Source, error)
}

// Puller pulls the live streams that have an RTSP source URL: each is read
// with DESCRIBE/SETUP/PLAY and published into the hub as the stream's
// source, like a publisher's, and reconnected with a growing backoff when
// it fails. A stream that loses its URL, or is deleted, stops being pulled.
type Puller struct {
	cfg    PullConfig
	deps   PullDeps
	m      ingest.Metrics
	errLog *logx.Limiter

	mu      sync.Mutex
	pulls   map[string]*pull
	stopped map[string]time.Time // ids Stop ended: not started again for a while
}

type pull struct {
	url    string
	cancel context.CancelFunc
	done   chan struct{}

	mu     sync.Mutex // guards status and changed
	status PullStatus
	// changed is closed (and replaced) when status changes.
	changed chan struct{}
}

// stoppedFor is how long a stream Stop ended is not pulled again (it was
// deleted; the list of sources may still show it for a refresh).
const stoppedFor = time.Minute

// NewPuller validates cfg.
func NewPuller(cfg PullConfig, deps PullDeps) (*Puller, error) {
	if deps.Hub == nil || deps.Sources == nil {
		return nil, errors.New("rtsp pull: Hub and Sources are required")
	}
	if cfg.Refresh <= 0 {
		cfg.Refresh = 2 * time.Second
	}
	if cfg.MaxBackoff <= 0 {
		cfg.MaxBackoff = 30 * time.Second
	}
	if cfg.ReadTimeout <= 0 {
		cfg.ReadTimeout = 10 * time.Second
	}
	if cfg.SetupTimeout <= 0 {
		cfg.SetupTimeout = 30 * time.Second
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	m, err := ingest.NewMetrics("rtsp_pull", deps.Registerer)
	if err != nil {
		return nil, err
	}
	return &Puller{cfg: cfg, deps: deps, m: m, errLog: logx.NewLimiter(time.Minute),
		pulls: map[string]*pull{}, stopped: map[string]time.Time{}}, nil
}

// Status returns the state of live stream id's pull, if it is pulled.
func (p *Puller) Status(id string) (PullStatus, bool) {
	st, _, ok := p.watch(id)
	return st, ok
}

func (pl *pull) set(state, lastErr string) {
	pl.mu.Lock()
	defer pl.mu.Unlock()
	pl.status = PullStatus{State: state, LastError: lastErr, Since: time.Now().UTC()}
	close(pl.changed)
	pl.changed = make(chan struct{})
}

// watch returns the status of live stream id's pull and a channel closed
// at its next change (nil, false when it is not pulled).
func (p *Puller) watch(id string) (PullStatus, <-chan struct{}, bool) {
	p.mu.Lock()
	pl := p.pulls[id]
	p.mu.Unlock()
	if pl == nil {
		return PullStatus{}, nil, false
	}
	pl.mu.Lock()
	defer pl.mu.Unlock()
	return pl.status, pl.changed, true
}

// Stop ends the pull of live stream id, if any, and returns once it has
// ended (its publication closed); the stream is not pulled again for a
// minute, whatever the list of sources says meanwhile. For a deleted stream.
func (p *Puller) Stop(id string) {
	p.mu.Lock()
	pl := p.pulls[id]
	delete(p.pulls, id)
	p.stopped[id] = time.Now()
	p.mu.Unlock()
	if pl != nil {
		pl.cancel()
		<-pl.done
	}
}

// Run pulls the sources until ctx is done; every pull has ended when it
// returns.
func (p *Puller) Run(ctx context.Context) error {
	g, gctx := errgroup.WithContext(ctx)
	t := time.NewTicker(p.cfg.Refresh)
	defer t.Stop()
	for {
		p.refresh(gctx, g)
		select {
		case <-gctx.Done():
			p.mu.Lock()
			for _, pl := range p.pulls {
				pl.cancel()
			}
			p.mu.Unlock()
			return g.Wait()
		case <-t.C:
		}
	}
}

// refresh starts the pulls of new sources and stops those of sources gone
// (or whose URL changed), waiting for a stopped pull to end before its
// replacement starts.
func (p *Puller) refresh(ctx context.Context, g *errgroup.Group) {
	sctx, cancel := context.WithTimeout(ctx, p.cfg.Refresh)
	sources, err := p.deps.Sources(sctx)
	cancel()
	if err != nil {
		// Redis down: the pulls running go on; nothing starts or stops.
		if ok, n := p.errLog.Allow(); ok {
			p.deps.Log.Warn("rtsp pull: cannot read the live streams to pull; pulls running go on", "err", err, "suppressed_since_last", n)
		}
		return
	}
	want := map[string]string{}
	for _, s := range sources {
		want[s.ID] = s.URL
	}
	var ending []*pull
	p.mu.Lock()
	now := time.Now()
	for id, at := range p.stopped {
		if now.Sub(at) > stoppedFor {
			delete(p.stopped, id)
		}
	}
	for id, pl := range p.pulls {
		if url, ok := want[id]; !ok || url != pl.url {
			pl.cancel()
			delete(p.pulls, id)
			ending = append(ending, pl)
		}
	}
	p.mu.Unlock()
	for _, pl := range ending {
		<-pl.done
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	for id, url := range want {
		if _, ok := p.pulls[id]; ok {
			continue
		}
		if _, ok := p.stopped[id]; ok {
			continue
		}
		pctx, cancel := context.WithCancel(ctx)
		pl := &pull{url: url, cancel: cancel, done: make(chan struct{}), changed: make(chan struct{}),
			status: PullStatus{State: PullConnecting, Since: time.Now().UTC()}}
		p.pulls[id] = pl
		g.Go(func() error {
			defer close(pl.done)
			p.loop(pctx, pl, id, url)
			return nil
		})
	}
}

// loop pulls one source until ctx ends, with a backoff between attempts.
func (p *Puller) loop(ctx context.Context, pl *pull, id, url string) {
	log := p.deps.Log.With("stream", id, "source", ids.RedactURL(url))
	backoff := time.Second
	for ctx.Err() == nil {
		pl.set(PullConnecting, "")
		started := time.Now()
		err := p.once(ctx, pl, id, url, log)
		if ctx.Err() != nil {
			return
		}
		if time.Since(started) > p.cfg.MaxBackoff {
			backoff = time.Second // it ran a while: start over
		}
		msg := "the source ended the stream"
		if err != nil {
			msg = err.Error()
		}
		pl.set(PullRetrying, msg)
		log.Warn("rtsp pull failed; retrying", "err", msg, "in", backoff)
		select {
		case <-ctx.Done():
			return
		case <-time.After(backoff):
		}
		backoff = min(backoff*2, p.cfg.MaxBackoff)
	}
}

// once runs one pull session to its end. Its set-up (connection, DESCRIBE
// with its redirects, SETUP, PLAY) ends with an error after
// cfg.SetupTimeout, and after maxRedirects redirects.
func (p *Puller) once(ctx context.Context, pl *pull, id, url string, log *slog.Logger) error {
	u, err := base.ParseURL(url)
	if err != nil {
		return fmt.Errorf("bad source URL: %w", err)
	}
	at := newAttempt(u, p.cfg.AllowPrivate)
	ses := &session{m: &p.m, log: log, id: id, errLog: logx.NewLimiter(5 * time.Second)}
	c := &gortsplib.Client{ReadTimeout: p.cfg.ReadTimeout, WriteTimeout: p.cfg.ReadTimeout,
		DialContext:       at.dial,
		OnRequest:         at.onRequest,
		OnResponse:        at.onResponse,
		OnTransportSwitch: func(err error) { log.Debug("rtsp pull: switching transport", "reason", err) },
		OnPacketsLost:     func(lost uint64) { ses.warn("RTP packets lost", fmt.Errorf("%d lost", lost)) },
		OnDecodeError:     func(err error) { ses.warn("undecodable RTP/RTCP packet", err) },
	}
	if err := c.Start(u.Scheme, u.Host); err != nil {
		return fmt.Errorf("connecting: %w", err)
	}
	defer c.Close()
	end := func() { at.abort(); c.Close() }
	stop := context.AfterFunc(ctx, end)
	defer stop()
	var late atomic.Bool
	deadline := time.AfterFunc(p.cfg.SetupTimeout, func() { late.Store(true); end() })
	defer deadline.Stop()
	tooLong := func(step string) error {
		return fmt.Errorf("%s: the source was not playing after %s", step, p.cfg.SetupTimeout)
	}
	failed := func(step string, err error) error {
		if late.Load() {
			return tooLong(step)
		}
		return fmt.Errorf("%s: %w", step, err)
	}
	desc, _, err := c.Describe(u)
	if err != nil {
		return failed("DESCRIBE", err)
	}
	tracks, err := ses.setup(desc, log)
	if err != nil {
		return err
	}
	ses.tracks = tracks
	seen := map[any]bool{}
	for _, f := range ses.feeds {
		if seen[f.medi] {
			continue
		}
		seen[f.medi] = true
		if _, err := c.Setup(desc.BaseURL, f.medi, 0, 0); err != nil {
			return failed("SETUP", err)
		}
	}
	pub, err := p.deps.Hub.Publish(media.StreamKey{Name: id, Rendition: media.RenditionSource}, tracks)
	if err != nil {
		return fmt.Errorf("publishing into the hub: %w", err)
	}
	p.m.Publishers.Inc()
	ses.start(pub, c)
	defer ses.end(nil)
	if _, err := c.Play(nil); err != nil {
		return failed("PLAY", err)
	}
	if !deadline.Stop() {
		return tooLong("PLAY")
	}
	pl.set(PullLive, "")
	log.Info("pulling", "tracks", ingest.Describe(tracks))
	return c.Wait()
}
