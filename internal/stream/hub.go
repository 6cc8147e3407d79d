// Package stream is the in-process hub that connects pipeline stages.
//
// Ingest publishes a source under a media.StreamKey; the transcoder and the
// packager subscribe. Each subscriber has its own bounded queue: a slow reader
// never blocks the publisher, it loses access units instead, from the first
// one that does not fit until the next video keyframe, and every loss is
// counted in metrics.
//
// A publisher that goes away does not end its publication at once: the
// publication waits for the reconnect grace period, and a publisher that
// comes back on the same key within it continues the same publication. Its
// subscribers see an Event with Restart set (a discontinuity) and keep
// reading. When the grace period passes with no publisher, subscribers read
// io.EOF.
package stream

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
)

// ErrBusy is returned by Publish when the key already has an active publisher.
var ErrBusy = errors.New("stream is already being published")

// ErrClosed is returned once the hub has shut down.
var ErrClosed = errors.New("stream hub is closed")

// Config tunes the hub.
type Config struct {
	// QueueSize is how many access units a subscriber may fall behind.
	QueueSize int
	// Grace is how long a publication outlives its publisher waiting for a
	// reconnect. Zero ends publications as soon as the publisher leaves.
	Grace time.Duration
	// Lossless makes Publisher.Write wait for room in a full subscriber
	// queue instead of dropping. It is for private hubs that connect stages
	// working through a file (VOD jobs), where the producer must slow down
	// to the pace of the slowest reader; live hubs never set it.
	Lossless bool
}

// Deps are the hub's collaborators.
type Deps struct {
	Log        *slog.Logger
	Registerer prometheus.Registerer
	// Now is the wall clock access units are stamped with (AccessUnit.NTP;
	// time.Now when nil).
	Now func() time.Time
}

// Event is what a subscriber reads: either the track list of a (re)started
// publisher or one access unit.
type Event struct {
	// Tracks is set when a publisher starts; the access units that follow
	// index into it.
	Tracks []media.Track
	// Restart is set with Tracks when a publisher reconnected within the
	// grace period: timestamps start over, the output needs a discontinuity.
	Restart bool
	// AU is one access unit.
	AU *media.AccessUnit
}

// Hub routes access units from publishers to subscribers.
type Hub struct {
	cfg Config
	log *slog.Logger
	now func() time.Time

	dropped   *prometheus.CounterVec
	published *prometheus.GaugeVec

	mu       sync.Mutex
	closed   bool
	streams  map[media.StreamKey]*publication
	watchers []*Watcher // in registration order: Publish asks them in this order

	// onLosslessWait, when set (by tests, before publishing), is called
	// each time a lossless Write starts waiting for room in a full queue.
	onLosslessWait func()
}

// New validates cfg and allocates a hub.
func New(cfg Config, deps Deps) (*Hub, error) {
	if cfg.QueueSize < 1 {
		return nil, fmt.Errorf("stream hub: queue size must be positive, got %d", cfg.QueueSize)
	}
	if cfg.Grace < 0 {
		return nil, fmt.Errorf("stream hub: negative grace period %s", cfg.Grace)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	if deps.Now == nil {
		deps.Now = time.Now
	}
	h := &Hub{
		cfg:     cfg,
		log:     deps.Log,
		now:     deps.Now,
		streams: map[media.StreamKey]*publication{},
		dropped: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "shoal_hub_dropped_access_units_total",
			Help: "Access units dropped because a subscriber fell behind (dropped until the next keyframe).",
		}, []string{"rendition"}),
		published: prometheus.NewGaugeVec(prometheus.GaugeOpts{
			Name: "shoal_hub_publications",
			Help: "Publications in the hub by rendition (source = live streams being ingested).",
		}, []string{"rendition"}),
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{h.dropped, h.published} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("stream hub: register metrics: %w", err)
			}
		}
	}
	return h, nil
}

// Run blocks until ctx is done, then ends every publication (subscribers read
// io.EOF after draining) and refuses new ones.
func (h *Hub) Run(ctx context.Context) error {
	<-ctx.Done()
	h.mu.Lock()
	h.closed = true
	pubs := make([]*publication, 0, len(h.streams))
	for _, p := range h.streams {
		pubs = append(pubs, p)
	}
	watchers := h.watchers
	h.watchers = nil
	h.mu.Unlock()
	for _, p := range pubs {
		h.end(p)
	}
	for _, w := range watchers {
		w.close()
	}
	return nil
}

// IsLive reports whether name's source is being published or waits for its
// publisher to reconnect.
func (h *Hub) IsLive(name string) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	_, ok := h.streams[media.StreamKey{Name: name, Rendition: media.RenditionSource}]
	return ok
}

// Publishing reports whether key has a connected publisher right now (a
// publication waiting for a reconnect has none).
func (h *Hub) Publishing(key media.StreamKey) bool {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.streams[key]
	if p == nil {
		return false
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.publisher != nil
}

// Publish starts publishing key with the given tracks. If key waits for a
// reconnect, the publication continues and its subscribers see a restart.
func (h *Hub) Publish(key media.StreamKey, tracks []media.Track) (*Publisher, error) {
	if len(tracks) == 0 {
		return nil, errors.New("stream hub: a publication needs at least one track")
	}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		return nil, ErrClosed
	}
	p := h.streams[key]
	restart := p != nil
	if p == nil {
		p = &publication{key: key, subs: map[*Subscriber]struct{}{}}
		h.streams[key] = p
		h.published.WithLabelValues(key.Rendition).Inc()
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.publisher != nil {
		return nil, ErrBusy
	}
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	pub := &Publisher{hub: h, pub: p}
	p.publisher = pub
	p.last = pub
	p.tracks = tracks
	p.hasVideo = false
	for _, t := range tracks {
		if t.IsVideo() {
			p.hasVideo = true
		}
	}
	for s := range p.subs {
		s.push(Event{Tracks: tracks, Restart: restart})
	}
	if !restart {
		for _, w := range h.watchers {
			if w.match(key) {
				s := h.newSubscriber(p)
				s.controlOnly = w.controlOnly
				s.push(Event{Tracks: tracks})
				w.push(s)
			}
		}
	}
	return pub, nil
}

// End ends key's publication now, without waiting for a reconnect: its
// publisher's writes are ignored from here on and subscribers read io.EOF.
// It reports whether there was a publication.
func (h *Hub) End(key media.StreamKey) bool {
	return h.EndAll(func(k media.StreamKey) bool { return k == key }) > 0
}

// EndAll ends, as End does, every publication whose key satisfies match,
// and returns how many it ended.
func (h *Hub) EndAll(match func(media.StreamKey) bool) int {
	h.mu.Lock()
	defer h.mu.Unlock()
	n := 0
	for k, p := range h.streams {
		if match(k) {
			p.mu.Lock()
			h.endLocked(p)
			p.mu.Unlock()
			n++
		}
	}
	return n
}

// Subscribe attaches to a publication that is already running. Most
// consumers use Watch instead, which cannot miss the first access units.
func (h *Hub) Subscribe(key media.StreamKey) (*Subscriber, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p := h.streams[key]
	if p == nil {
		return nil, fmt.Errorf("stream %s is not published", key)
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	s := h.newSubscriber(p)
	s.push(Event{Tracks: p.tracks})
	return s, nil
}

// newSubscriber must be called with p.mu held.
func (h *Hub) newSubscriber(p *publication) *Subscriber {
	s := &Subscriber{
		hub:      h,
		pub:      p,
		max:      h.cfg.QueueSize,
		lossless: h.cfg.Lossless,
		notify:   make(chan struct{}, 1),
		space:    make(chan struct{}, 1),
		dropped:  h.dropped.WithLabelValues(p.key.Rendition),
		hasVideo: p.hasVideo,
	}
	p.subs[s] = struct{}{}
	return s
}

func (h *Hub) publisherGone(pub *Publisher) {
	p := pub.pub
	h.mu.Lock()
	p.mu.Lock()
	if p.publisher != pub {
		p.mu.Unlock()
		h.mu.Unlock()
		return
	}
	p.publisher = nil
	if h.cfg.Grace > 0 && !h.closed {
		p.graceGen++
		gen := p.graceGen
		p.timer = time.AfterFunc(h.cfg.Grace, func() { h.graceOver(p, gen) })
		p.mu.Unlock()
		h.mu.Unlock()
		h.log.Info("publisher left, waiting for a reconnect", "stream", p.key.String(), "grace", h.cfg.Grace)
		return
	}
	h.endLocked(p)
	p.mu.Unlock()
	h.mu.Unlock()
}

// graceOver ends p when gen is still its current grace period: a timer that
// fired just as a publisher came back (and maybe left again, starting a new
// grace period) must not end the publication.
func (h *Hub) graceOver(p *publication, gen uint64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.publisher != nil || p.timer == nil || p.graceGen != gen {
		return // a publisher came back, or the publication already ended
	}
	h.log.Info("no reconnect within the grace period, stream ended", "stream", p.key.String())
	h.endLocked(p)
}

// end removes p and closes its subscribers' queues.
func (h *Hub) end(p *publication) {
	h.mu.Lock()
	defer h.mu.Unlock()
	p.mu.Lock()
	defer p.mu.Unlock()
	h.endLocked(p)
}

// endLocked must be called with h.mu and p.mu held (in that order).
func (h *Hub) endLocked(p *publication) {
	if h.streams[p.key] == p {
		delete(h.streams, p.key)
		h.published.WithLabelValues(p.key.Rendition).Dec()
	}
	if p.timer != nil {
		p.timer.Stop()
		p.timer = nil
	}
	p.publisher = nil
	for s := range p.subs {
		s.closeQueue()
	}
	p.subs = map[*Subscriber]struct{}{}
}

type publication struct {
	key media.StreamKey

	mu        sync.Mutex
	publisher *Publisher
	tracks    []media.Track
	hasVideo  bool
	subs      map[*Subscriber]struct{}
	timer     *time.Timer
	graceGen  uint64     // counts grace periods; a timer acts only on its own
	last      *Publisher // the latest publisher, connected or waited for
}

// Publisher writes access units into one publication.
type Publisher struct {
	hub  *Hub
	pub  *publication
	once sync.Once
}

// stamp sets au.NTP to now: when it reached the hub, which is when it
// arrived (ingest writes what it receives at once).
func (p *Publisher) stamp(au *media.AccessUnit) {
	au.NTP = p.hub.now()
}

// Write delivers au to every subscriber without blocking (with
// Config.Lossless, it waits while a subscriber's queue is full). The hub
// and its subscribers treat au as immutable from now on.
func (p *Publisher) Write(au *media.AccessUnit) {
	p.pub.mu.Lock()
	defer p.pub.mu.Unlock()
	if p.pub.publisher != p {
		return
	}
	if au.NTP.IsZero() {
		p.stamp(au)
	}
	for s := range p.pub.subs {
		s.pushAU(au, p.pub.tracks)
	}
}

// End ends the publication now, without a reconnect grace, if p is still
// its latest publisher: a publication that another publisher has taken over
// since (or a new publication of the same key) is left alone.
func (p *Publisher) End() {
	h := p.hub
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.streams[p.pub.key] != p.pub {
		return
	}
	p.pub.mu.Lock()
	defer p.pub.mu.Unlock()
	if p.pub.last == p {
		h.endLocked(p.pub)
	}
}

// Close tells the hub the publisher is gone; the publication waits for a
// reconnect during the grace period, then ends.
func (p *Publisher) Close() {
	p.once.Do(func() { p.hub.publisherGone(p) })
}

// Watch returns a watcher that hands over a new subscriber for every
// publication started from now on whose key satisfies match. Publish calls
// the match functions under the hub's lock, in the order the watchers were
// registered, so a later watcher's match may rely on what an earlier one
// decided for the same publication.
func (h *Hub) Watch(match func(media.StreamKey) bool) *Watcher {
	w := &Watcher{hub: h, match: match, notify: make(chan struct{}, 1)}
	h.mu.Lock()
	defer h.mu.Unlock()
	if h.closed {
		w.closed = true
	} else {
		h.watchers = append(h.watchers, w)
	}
	return w
}

// WatchStarts is Watch for a watcher that only follows publications: its
// subscribers read the track lists and then io.EOF when the publication
// ends, and no access unit is ever queued for them (announcements, not
// media).
func (h *Hub) WatchStarts(match func(media.StreamKey) bool) *Watcher {
	w := h.Watch(match)
	h.mu.Lock()
	w.controlOnly = true
	h.mu.Unlock()
	return w
}

// Watcher delivers subscribers for new publications.
type Watcher struct {
	hub   *Hub
	match func(media.StreamKey) bool
	// controlOnly subscribers get track lists and the end, never access
	// units (WatchStarts).
	controlOnly bool
	notify      chan struct{}

	mu     sync.Mutex
	queue  []*Subscriber
	closed bool
}

func (w *Watcher) push(s *Subscriber) {
	w.mu.Lock()
	w.queue = append(w.queue, s)
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

func (w *Watcher) close() {
	w.mu.Lock()
	w.closed = true
	w.mu.Unlock()
	select {
	case w.notify <- struct{}{}:
	default:
	}
}

// Next waits for the next publication. It returns ErrClosed after the hub
// shut down and ctx.Err() when ctx is done.
func (w *Watcher) Next(ctx context.Context) (*Subscriber, error) {
	for {
		w.mu.Lock()
		if len(w.queue) > 0 {
			s := w.queue[0]
			w.queue = w.queue[1:]
			w.mu.Unlock()
			return s, nil
		}
		closed := w.closed
		w.mu.Unlock()
		if closed {
			return nil, ErrClosed
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-w.notify:
		}
	}
}

// Close stops the watcher; subscribers not yet taken are closed.
func (w *Watcher) Close() {
	w.hub.mu.Lock()
	w.hub.watchers = slices.DeleteFunc(w.hub.watchers, func(x *Watcher) bool { return x == w })
	w.hub.mu.Unlock()
	w.mu.Lock()
	pending := w.queue
	w.queue = nil
	w.closed = true
	w.mu.Unlock()
	for _, s := range pending {
		s.Close()
	}
}
