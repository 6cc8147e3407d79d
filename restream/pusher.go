package restream

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync/atomic"
	"time"

	"github.com/bluenviron/gortmplib"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// Why a session ended without the target failing.
var (
	// errStreamEnded: the source publication ended; the pusher is done.
	errStreamEnded = errors.New("the stream ended")
	// errRenditionEnded: the rung the pusher sent ended while the stream
	// may still be live; it subscribes again.
	errRenditionEnded = errors.New("the rendition ended")
	// errTracksChanged: a restarted publisher's tracks differ; the pusher
	// reconnects at once with the new ones.
	errTracksChanged = errors.New("the publisher restarted with different tracks")
)

// pusher sends one live stream to one target, reconnecting until the stream
// ends or the target is removed.
type pusher struct {
	m  *Manager
	ls *liveStream
	t  Target

	bytes atomic.Int64 // sent over every connection of this broadcast
	state State        // guarded by Manager.mu

	log     *slog.Logger
	failLog *logx.Limiter
	detail  string
	// waited is set once the pusher waited for its rung to be published;
	// later connections do not wait again.
	waited bool
	// wasLive is set once the target received media; until then it
	// starts from the stream's start buffer.
	wasLive bool
	// carried is the subscription a session that ended on a publisher
	// restart with new tracks hands to the next one, with those tracks.
	carried       *stream.Subscriber
	carriedTracks []media.Track
}

// run is the pusher's life. ctx ends it at once (target removed, manager
// stopping); soft is also done when the stream ended, which stops dialing
// and waiting but lets a connected session send what it holds and
// unpublish.
func (p *pusher) run(ctx, soft context.Context) {
	p.log = p.m.log.With("stream", p.ls.id, "target", p.t.ID, "target_name", p.t.Name, "url", RedactURL(p.t.URL))
	p.failLog = logx.NewLimiter(30 * time.Second)
	defer p.m.setState(p, State{State: StateIdle})
	defer func() {
		if p.carried != nil {
			p.carried.Close()
			p.carried = nil
		}
	}()

	tgt, err := parseTarget(p.t.URL)
	if err != nil {
		p.fail(fmt.Errorf("invalid target URL: %w", err))
		<-soft.Done() // nothing to retry until the target is changed
		return
	}
	bo := newBackoff(p.m.cfg)
	for {
		if soft.Err() != nil {
			return
		}
		p.m.setState(p, State{State: StateConnecting, Detail: p.detail})
		liveFor, err := p.session(ctx, soft, tgt)
		if liveFor >= p.m.cfg.StableAfter {
			bo.reset()
		}
		var delay time.Duration
		switch {
		case soft.Err() != nil, errors.Is(err, errStreamEnded):
			return
		case errors.Is(err, errTracksChanged):
			p.log.Info("publisher restarted with different tracks; reconnecting the target")
			continue
		case errors.Is(err, errRenditionEnded):
			delay = p.m.cfg.BackoffMin
		default:
			msg := p.fail(err)
			delay = bo.next()
			if ok, n := p.failLog.Allow(); ok {
				p.log.Warn("restream target failed; reconnecting", "err", msg, "retry_in", delay, "suppressed_since_last", n)
			}
		}
		t := time.NewTimer(delay)
		select {
		case <-soft.Done():
			t.Stop()
			return
		case <-t.C:
		}
	}
}

// maxErrorText bounds a failure's reason (a server's description may be
// long).
const maxErrorText = 300

// fail reports a failed connection and returns the redacted reason.
func (p *pusher) fail(err error) string {
	msg := scrub(err.Error(), p.t.URL)
	if len(msg) > maxErrorText {
		msg = strings.ToValidUTF8(msg[:maxErrorText], "") + "..."
	}
	p.m.failures.Inc()
	p.m.setState(p, State{State: StateFailed, Error: msg, Detail: p.detail})
	return msg
}

// subscribe subscribes to what the target asked for: its rung when it is
// published (waiting for it once, a while, after the stream started),
// else the source.
func (p *pusher) subscribe(soft context.Context) (*stream.Subscriber, error) {
	hub := p.m.deps.Hub
	source := media.StreamKey{Name: p.ls.id, Rendition: media.RenditionSource}
	if p.t.Rendition == "" || p.t.Rendition == media.RenditionSource {
		p.detail = ""
		return subscribeSource(hub, source)
	}
	rung := media.StreamKey{Name: p.ls.id, Rendition: p.t.Rendition}
	started, stop := p.m.waitStart(rung)
	sub, err := hub.Subscribe(rung)
	if err != nil && !p.waited && p.m.cfg.RenditionWait > 0 {
		p.waited = true
		t := time.NewTimer(p.m.cfg.RenditionWait)
		select {
		case <-started:
		case <-t.C:
		case <-soft.Done():
		}
		t.Stop()
		sub, err = hub.Subscribe(rung)
	}
	stop()
	if err == nil {
		p.detail = ""
		return sub, nil
	}
	p.detail = fmt.Sprintf("rendition %q is not published; sending the source", p.t.Rendition)
	return subscribeSource(hub, source)
}

// subscribeSource subscribes to the source. When it is not published, the
// stream has just ended (the manager is about to stop the pusher; a new
// publication gets new pushers): errStreamEnded.
func subscribeSource(hub Hub, source media.StreamKey) (*stream.Subscriber, error) {
	sub, err := hub.Subscribe(source)
	if err != nil {
		return nil, errStreamEnded
	}
	return sub, nil
}

// session is one connection: subscribe, connect, announce the tracks, send
// from the next keyframe until something ends it. It returns how long the
// connection was live.
func (p *pusher) session(ctx, soft context.Context, tgt *target) (time.Duration, error) {
	sub, tracks := p.carried, p.carriedTracks
	p.carried, p.carriedTracks = nil, nil
	if sub == nil {
		var err error
		sub, err = p.subscribe(soft)
		if soft.Err() != nil {
			if sub != nil {
				sub.Close()
			}
			return 0, soft.Err()
		}
		if err != nil {
			return 0, err
		}
		ev, err := sub.Next(ctx)
		if err != nil {
			sub.Close()
			return 0, p.subEnd(sub, err)
		}
		tracks = ev.Tracks
	}
	carry := false
	defer func() {
		if !carry {
			sub.Close()
		}
	}()
	p.m.setState(p, State{State: StateConnecting, Detail: p.detail})
	out, err := newOutput(tracks)
	if err != nil {
		return 0, err
	}

	conn, err := p.dial(soft, tgt)
	if err != nil {
		return 0, err
	}
	defer conn.close()
	conn.start()
	// A removed target stops at once, even in the middle of a write.
	stopInterrupt := context.AfterFunc(ctx, conn.interrupt)
	defer stopInterrupt()
	var counted uint64
	sent := func() {
		n := conn.BytesSent()
		if d := int64(n - counted); d > 0 {
			counted = n
			p.bytes.Add(d)
			p.m.bytes.Add(float64(d))
		}
	}
	defer sent()

	w := &gortmplib.Writer{Conn: conn, Tracks: out.tracks()}
	if err := w.Initialize(); err != nil {
		return 0, fmt.Errorf("announcing tracks: %w", conn.cause(err))
	}
	var liveAt time.Time
	liveFor := func() time.Duration {
		if liveAt.IsZero() {
			return 0
		}
		return p.m.deps.Now().Sub(liveAt)
	}
	// A target that has received nothing yet starts from the beginning
	// of the broadcast, while the stream's start buffer has it.
	var queued []stream.Event
	var queuedErr error
	if !p.wasLive && sub.Key().Rendition == media.RenditionSource {
		ev, err := sub.Next(ctx)
		if err == nil && ev.AU != nil {
			for _, au := range p.ls.start.before(ctx, ev.AU) {
				queued = append(queued, stream.Event{AU: au})
			}
		}
		if err == nil {
			queued = append(queued, ev)
		}
		queuedErr = err
	}
	for {
		var ev stream.Event
		var err error
		switch {
		case len(queued) > 0:
			ev, queued = queued[0], queued[1:]
		case queuedErr != nil:
			err, queuedErr = queuedErr, nil
		default:
			ev, err = sub.Next(ctx)
		}
		if err != nil {
			err = p.subEnd(sub, err)
			if errors.Is(err, errStreamEnded) || errors.Is(err, errRenditionEnded) || errors.Is(err, context.Canceled) {
				conn.unpublish(tgt.key)
			}
			return liveFor(), err
		}
		if ev.Tracks != nil {
			if !out.sameAs(ev.Tracks) {
				// The next connection continues this subscription:
				// what the new publisher sends meanwhile is kept.
				conn.unpublish(tgt.key)
				carry = true
				p.carried, p.carriedTracks = sub, ev.Tracks
				return liveFor(), errTracksChanged
			}
			out.restart()
			continue
		}
		au := ev.AU
		pts, dts, ok := out.place(au, p.m.deps.Now())
		if !ok {
			continue
		}
		switch {
		case au.Track != out.video:
			err = w.WriteMPEG4Audio(out.aTrack, pts, au.Payload[0])
		case out.vSrc.Codec == media.CodecH265:
			err = w.WriteH265(out.vTrack, pts, dts, au.Payload)
		default:
			err = w.WriteH264(out.vTrack, pts, dts, au.Payload)
		}
		sent()
		if err != nil {
			return liveFor(), fmt.Errorf("sending: %w", conn.cause(err))
		}
		if liveAt.IsZero() {
			liveAt = p.m.deps.Now()
			p.wasLive = true
			p.m.setState(p, State{State: StateLive, Detail: p.detail})
			p.log.Info("restream target live", "detail", p.detail)
		}
	}
}

// subEnd tells why the subscription ended.
func (p *pusher) subEnd(sub *stream.Subscriber, err error) error {
	if !errors.Is(err, io.EOF) {
		return err
	}
	if sub.Key().Rendition == media.RenditionSource {
		return errStreamEnded
	}
	return errRenditionEnded
}

// dial connects and publishes within the dial timeout.
func (p *pusher) dial(soft context.Context, tgt *target) (*rtmpConn, error) {
	ctx, cancel := context.WithTimeout(soft, p.m.cfg.DialTimeout)
	defer cancel()
	c, err := dialPublish(ctx, tgt, p.m.cfg.WriteTimeout, p.m.cfg.AllowPrivate)
	if err != nil {
		if soft.Err() != nil {
			return nil, soft.Err()
		}
		if ctx.Err() != nil {
			return nil, fmt.Errorf("connect: no answer within %s", p.m.cfg.DialTimeout)
		}
		return nil, fmt.Errorf("connect: %w", err)
	}
	return c, nil
}

// backoff is an exponential reconnect delay with jitter.
type backoff struct {
	min, max, cur time.Duration
}

func newBackoff(cfg Config) *backoff { return &backoff{min: cfg.BackoffMin, max: cfg.BackoffMax} }

func (b *backoff) next() time.Duration {
	if b.cur == 0 {
		b.cur = b.min
	} else {
		b.cur = min(b.cur*2, b.max)
	}
	return b.cur + rand.N(b.cur/5+1)
}

func (b *backoff) reset() { b.cur = 0 }
