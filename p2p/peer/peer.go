// Package peer is a Go peer of Shoal's peer-assisted delivery: it joins a
// swarm on a tracker (package p2p/tracker), fetches segments from other
// peers over WebRTC data channels, checks every byte against the origin's
// signed manifest (package manifest) and falls back to HTTP, and serves the
// segments it verified to others. It speaks the protocol the browser
// loader speaks; tests and the swarm benchmark use it, and an edge
// operator may run it as a seeding peer.
//
// # Data-channel protocol
//
// One data channel per peer pair, label "shoal-p2p", ordered and reliable.
// A request is the text message {"type":"get","id":<n>,"segment":"<name>"};
// the answer is {"type":"data","id":<n>,"size":<bytes>} followed by binary
// messages of at most 64 KiB carrying exactly size bytes, or
// {"type":"none","id":<n>} when the peer does not hold the segment. Sizes
// over 64 MiB are refused. A peer serves only segments it verified.
//
// Signaling goes through the tracker's signal messages; their data is a
// WebRTC session description ({"type":"offer"|"answer","sdp":...}) with
// every candidate in it (no trickle ICE).
package peer

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"net/http"
	"net/url"
	"sync"
	"sync/atomic"
	"time"

	"github.com/coder/websocket"
	"github.com/pion/ice/v4"
	"github.com/pion/webrtc/v4"
	"golang.org/x/time/rate"

	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/p2p/tracker"
)

// Label is the data channel's label.
const Label = "shoal-p2p"

// ChunkBytes is the largest binary message of an answer.
const ChunkBytes = 64 << 10

// MaxSegmentBytes is the largest segment a peer accepts or serves.
const MaxSegmentBytes = 64 << 20

// Source says where Fetch got a segment's bytes.
type Source string

// Sources.
const (
	SourceP2P  Source = "p2p"
	SourceHTTP Source = "http"
)

// Config is a peer's settings.
type Config struct {
	// Tracker is the tracker's WebSocket URL with the swarm (and a playback
	// token for signed content): ws://host/p2p/ws?swarm=<id>/<rendition>.
	Tracker string
	// HTTP is the rendition's directory over HTTP, ending in "/":
	// http://edge/hls/<id>/<rendition>/ (a token in its query is kept).
	HTTP string
	// ContentKeys are the origin's content keys (GET /v1/keys).
	ContentKeys []ed25519.PublicKey
	// HTTPClient fetches the manifest and segments. Default: a client
	// with a 30 s timeout.
	HTTPClient *http.Client
	// MaxUploadBytesPerSec bounds what the peer serves; 0: unlimited.
	MaxUploadBytesPerSec int
	// MaxPeers caps the peer connections open at once. Default 8.
	MaxPeers int
	// MaxHeldBytes bounds the bytes of the verified segments a peer keeps
	// (to serve and to play again); the oldest go first, the newest is
	// always kept. Default 64 MiB (and at most 256 segments, what a have
	// message lists).
	MaxHeldBytes int64
	// MaxUploads caps the segments this peer uploads at once; a request
	// beyond it is answered none at once, so that the asker tries another
	// holder instead of queueing behind a slow upload. Default 1: with an
	// upload rate bound, one upload at a time finishes soonest and makes
	// a new holder soonest.
	MaxUploads int
	// Loopback includes loopback ICE candidates (peers on one machine).
	Loopback bool
	// ICEServers are STUN/TURN servers; none by default.
	ICEServers []webrtc.ICEServer
	// PeerTimeout bounds one try of a segment from one peer, connecting
	// included; a Fetch gives peers twice that in all, then goes to HTTP.
	// Default 3 s.
	PeerTimeout time.Duration
	// SeedWindow, when set, lets FetchBy seed a segment nobody holds
	// yet: when the tracker offers no peer for it, the peer waits a
	// random time below SeedWindow, asks again, and if there is still no
	// one to ask fetches it over HTTP at once instead of waiting for
	// httpAt. In a swarm whose players see a live segment at about the
	// same time, the first to wake seeds it and the others get it from
	// peers. 0: no seeding (HTTP only at httpAt).
	SeedWindow time.Duration
	// StatsInterval is how often Stats go to the tracker. Default 10 s.
	StatsInterval time.Duration
	// Mutate, for benchmarks and tests only, alters every segment this peer
	// serves: a malicious peer.
	Mutate func([]byte) []byte
	Log    *slog.Logger
}

// Stats are a peer's counters since Join.
type Stats struct {
	HTTPBytes     int64 // downloaded over HTTP (verified)
	P2PBytes      int64 // downloaded from peers (verified)
	UploadedBytes int64 // served to peers
	DroppedPeers  int64 // peers dropped for bytes that failed verification
	EvictedLinks  int64 // idle links closed to make room under MaxPeers
	BusyRefusals  int64 // requests answered none because MaxUploads were under way
}

// Peer is a member of a swarm.
type Peer struct {
	cfg     Config
	keys    map[string]ed25519.PublicKey
	swarmID string
	id      string
	ws      *websocket.Conn
	api     *webrtc.API
	upload  *rate.Limiter
	// sends paces what goes to the tracker below its limit (20 a second,
	// a burst of 50: over it, the socket is closed).
	sends *rate.Limiter

	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	httpBytes, p2pBytes, uploaded, dropped, evicted, refused atomic.Int64
	uploading                                                atomic.Int32 // uploads in progress

	mu    sync.Mutex
	store map[string]held
	order []string // store's names, oldest first
	// heldBytes: the bytes of store's segments.
	heldBytes int64
	links     map[string]*link
	banned    map[string]bool
	// resting: peers that failed a try (silent, no such segment, gone),
	// not asked again until then.
	resting  map[string]time.Time
	wants    map[string][]chan []string
	manifest *manifest.Manifest
	closed   bool
	// waiting: Close is at wg.Wait; no goroutine is counted in wg any
	// more (a link closed after that, say a victim of eviction closed
	// after unlocking, closes its connection in the caller's goroutine).
	waiting bool

	// idleMin: a link unused for that long may be closed to make room
	// for another at the cap (MaxPeers).
	idleMin time.Duration
	// stallAfter: a link whose remote peer takes none of an answer's
	// bytes for that long (its receive window stays closed) is closed.
	stallAfter time.Duration

	trackerGone chan struct{}   // closed when the tracker socket ends
	pingMu      sync.Mutex      // orders pings and pong waiters
	pongs       []chan struct{} // guarded by mu
}

type held struct {
	data []byte
	from Source
}

// maxHeld is how many segments a peer keeps and announces (a have message
// lists at most tracker.MaxHave).
const maxHeld = tracker.MaxHave

// Join connects to the tracker and returns the peer; Close ends it.
func Join(ctx context.Context, cfg Config) (*Peer, error) {
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if cfg.MaxPeers <= 0 {
		cfg.MaxPeers = 8
	}
	if cfg.PeerTimeout <= 0 {
		cfg.PeerTimeout = 3 * time.Second
	}
	if cfg.MaxHeldBytes <= 0 {
		cfg.MaxHeldBytes = 64 << 20
	}
	if cfg.MaxUploads <= 0 {
		cfg.MaxUploads = 1
	}
	if cfg.StatsInterval <= 0 {
		cfg.StatsInterval = 10 * time.Second
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.DiscardHandler)
	}
	if len(cfg.ContentKeys) == 0 {
		return nil, errors.New("peer: ContentKeys are required: every segment is verified")
	}
	tu, err := url.Parse(cfg.Tracker)
	if err != nil || (tu.Scheme != "ws" && tu.Scheme != "wss") {
		return nil, fmt.Errorf("peer: tracker URL %q: want ws:// or wss://", cfg.Tracker)
	}
	swarmID := tu.Query().Get("swarm")
	if _, _, ok := tracker.ParseSwarm(swarmID); !ok {
		return nil, fmt.Errorf("peer: tracker URL: bad swarm %q", swarmID)
	}
	hu, err := url.Parse(cfg.HTTP)
	if err != nil || (hu.Scheme != "http" && hu.Scheme != "https") || len(hu.Path) == 0 || hu.Path[len(hu.Path)-1] != '/' {
		return nil, fmt.Errorf("peer: HTTP %q: want the rendition's http(s) URL ending in /", cfg.HTTP)
	}
	keys := map[string]ed25519.PublicKey{}
	for _, k := range cfg.ContentKeys {
		keys[manifest.KeyID(k)] = k
	}
	se := webrtc.SettingEngine{}
	se.SetIncludeLoopbackCandidate(cfg.Loopback)
	se.SetICEMulticastDNSMode(ice.MulticastDNSModeDisabled)
	se.SetICETimeouts(5*time.Second, 10*time.Second, 2*time.Second)
	p := &Peer{cfg: cfg, keys: keys, swarmID: swarmID, api: webrtc.NewAPI(webrtc.WithSettingEngine(se)),
		store: map[string]held{}, links: map[string]*link{}, banned: map[string]bool{}, resting: map[string]time.Time{}, wants: map[string][]chan []string{}}
	p.sends = rate.NewLimiter(sendRate, sendBurst)
	p.idleMin = linkIdleMin
	p.stallAfter = stallAfter
	if cfg.MaxUploadBytesPerSec > 0 {
		p.upload = rate.NewLimiter(rate.Limit(cfg.MaxUploadBytesPerSec), max(cfg.MaxUploadBytesPerSec, ChunkBytes))
	}
	ws, resp, err := websocket.Dial(ctx, cfg.Tracker, &websocket.DialOptions{HTTPClient: cfg.HTTPClient})
	if err != nil {
		if resp != nil {
			return nil, fmt.Errorf("peer: tracker refused the join: %s", resp.Status)
		}
		return nil, fmt.Errorf("peer: tracker: %w", err)
	}
	ws.SetReadLimit(tracker.MaxMessageBytes)
	p.ws = ws
	_, b, err := ws.Read(ctx)
	if err != nil {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("peer: tracker: %w", err)
	}
	m, err := tracker.ParseServerMessage(b)
	if err != nil || m.Type != tracker.TypeWelcome {
		_ = ws.CloseNow()
		return nil, fmt.Errorf("peer: tracker: expected a welcome, got %.100s", b)
	}
	p.id = m.Peer
	p.trackerGone = make(chan struct{})
	p.ctx, p.cancel = context.WithCancel(context.Background())
	p.wg.Add(2)
	go p.readTracker()
	go p.keepAlive()
	return p, nil
}

// ID is the peer's id in its swarm.
func (p *Peer) ID() string { return p.id }

// Stats returns the peer's counters.
func (p *Peer) Stats() Stats {
	return Stats{HTTPBytes: p.httpBytes.Load(), P2PBytes: p.p2pBytes.Load(), UploadedBytes: p.uploaded.Load(), DroppedPeers: p.dropped.Load(), EvictedLinks: p.evicted.Load(), BusyRefusals: p.refused.Load()}
}

// Close leaves the swarm and waits for the peer's goroutines.
func (p *Peer) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	links := make([]*link, 0, len(p.links))
	for _, l := range p.links {
		links = append(links, l)
	}
	p.mu.Unlock()
	p.sendStats()
	for _, l := range links {
		l.close()
	}
	// The close handshake ends readTracker; then the rest.
	_ = p.ws.Close(websocket.StatusNormalClosure, "")
	p.cancel()
	p.mu.Lock()
	p.waiting = true
	p.mu.Unlock()
	p.wg.Wait()
	return nil
}

func (p *Peer) send(m tracker.Message) error {
	b, err := json.Marshal(m)
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := p.sends.Wait(ctx); err != nil {
		return err
	}
	return p.ws.Write(ctx, websocket.MessageText, b)
}

// A peer that failed a try rests restAfterFailure before it is asked
// again; at most maxResting are remembered.
const (
	restAfterFailure = 30 * time.Second
	// restAfterNone: a peer that answered none (busy uploading, or it
	// dropped the segment) is asked again after this.
	restAfterNone = time.Second
	maxResting    = 1024
)

// linkIdleMin is how long a link must have gone unused (no request
// either way) before it may be closed to make room for another: in a
// live swarm the holders of the next segment change every segment, so a
// peer at its cap must let go of old links to reach them.
const linkIdleMin = time.Second

// stallAfter is how long a peer may take nothing of an answer it asked
// for before its link ends: a peer that stops reading must not hold an
// upload slot (MaxUploads) and a link for ever.
const stallAfter = 10 * time.Second

// connectingInLocked counts the links another peer offered that are not
// open yet; p.mu is held.
func (p *Peer) connectingInLocked() int {
	n := 0
	for _, l := range p.links {
		l.mu.Lock()
		offerer := l.offerer
		l.mu.Unlock()
		if offerer {
			continue
		}
		select {
		case <-l.open:
		default:
			n++
		}
	}
	return n
}

// evictableLocked returns the least recently used link idle for at least
// idleMin, nil if none; p.mu is held.
func (p *Peer) evictableLocked() *link {
	var victim *link
	var oldest int64
	cutoff := time.Now().Add(-p.idleMin).UnixNano()
	for _, l := range p.links {
		if l.busy.Load() > 0 {
			continue
		}
		select {
		case <-l.open:
		default:
			continue // still connecting: not idle
		}
		if u := l.lastUsed.Load(); u <= cutoff && (victim == nil || u < oldest) {
			victim, oldest = l, u
		}
	}
	return victim
}

// makeRoomLocked frees a slot under the cap when an idle link can go: it
// takes the link out of p.links and returns it for the caller to close
// once p.mu is released. ok is false when every slot is taken by a link
// in use.
func (p *Peer) makeRoomLocked() (victim *link, ok bool) {
	if len(p.links) < p.cfg.MaxPeers {
		return nil, true
	}
	victim = p.evictableLocked()
	if victim == nil {
		return nil, false
	}
	delete(p.links, victim.remote)
	p.evicted.Add(1)
	return victim, true
}

// Pace of messages to the tracker: under its limit of 20 a second with a
// burst of 50.
const (
	sendRate  = 15
	sendBurst = 40
)

func (p *Peer) sendStats() {
	h, q := uint64(p.httpBytes.Load()), uint64(p.p2pBytes.Load())
	_ = p.send(tracker.Message{Type: tracker.TypeStats, HTTP: &h, P2P: &q})
}

// keepAlive pings the tracker (its idle timeout) and sends stats.
func (p *Peer) keepAlive() {
	defer p.wg.Done()
	ping := time.NewTicker(20 * time.Second)
	defer ping.Stop()
	stats := time.NewTicker(p.cfg.StatsInterval)
	defer stats.Stop()
	for {
		select {
		case <-p.ctx.Done():
			return
		case <-ping.C:
			_, _ = p.ping()
		case <-stats.C:
			p.sendStats()
		}
	}
}

// readTracker dispatches the tracker's messages until the socket ends.
func (p *Peer) readTracker() {
	defer p.wg.Done()
	defer close(p.trackerGone)
	for {
		_, b, err := p.ws.Read(p.ctx)
		if err != nil {
			if p.ctx.Err() == nil {
				p.cfg.Log.Warn("p2p tracker socket ended", "err", err)
			}
			return
		}
		m, err := tracker.ParseServerMessage(b)
		if err != nil {
			p.cfg.Log.Warn("p2p tracker sent a bad message", "err", err)
			continue
		}
		switch m.Type {
		case tracker.TypePeers:
			p.mu.Lock()
			if q := p.wants[m.Segment]; len(q) > 0 {
				q[0] <- m.Peers
				p.wants[m.Segment] = q[1:]
				if len(q) == 1 {
					delete(p.wants, m.Segment)
				}
			}
			p.mu.Unlock()
		case tracker.TypePong:
			p.mu.Lock()
			if len(p.pongs) > 0 {
				close(p.pongs[0])
				p.pongs = p.pongs[1:]
			}
			p.mu.Unlock()
		case tracker.TypeSignal:
			p.signal(m.From, m.Data)
		case tracker.TypeGone:
			p.mu.Lock()
			l := p.links[m.Peer]
			p.mu.Unlock()
			if l != nil {
				l.close()
			}
		}
	}
}

// ping pings the tracker; the channel closes at its pong.
func (p *Peer) ping() (chan struct{}, error) {
	p.pingMu.Lock()
	defer p.pingMu.Unlock()
	ch := make(chan struct{})
	p.mu.Lock()
	p.pongs = append(p.pongs, ch)
	p.mu.Unlock()
	return ch, p.send(tracker.Message{Type: tracker.TypePing})
}

// Sync waits until the tracker handled every message this peer sent it
// before (its have announcements, its reports).
func (p *Peer) Sync(ctx context.Context) error {
	ch, err := p.ping()
	if err != nil {
		return err
	}
	select {
	case <-ch:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	case <-p.trackerGone:
		return errors.New("peer: the tracker socket ended")
	}
}

// want asks the tracker who holds name.
func (p *Peer) want(ctx context.Context, name string) []string {
	ch := make(chan []string, 1)
	p.mu.Lock()
	p.wants[name] = append(p.wants[name], ch)
	p.mu.Unlock()
	if err := p.send(tracker.Message{Type: tracker.TypeWant, Segment: name}); err != nil {
		p.unwant(name, ch)
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PeerTimeout)
	defer cancel()
	select {
	case peers := <-ch:
		return peers
	case <-ctx.Done():
		// Not waited for any more: a late answer goes to the next asker
		// of the name (or nowhere), and nothing is left behind.
		p.unwant(name, ch)
		return nil
	case <-p.trackerGone:
		p.unwant(name, ch)
		return nil
	}
}

// unwant takes ch out of name's waiters, if it is still there.
func (p *Peer) unwant(name string, ch chan []string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	q := p.wants[name]
	for i, c := range q {
		if c == ch {
			q = append(q[:i:i], q[i+1:]...)
			break
		}
	}
	if len(q) == 0 {
		delete(p.wants, name)
	} else {
		p.wants[name] = q
	}
}

// entry returns name's manifest entry, fetching the manifest again when
// the one held does not list it (a live stream's newer segment).
func (p *Peer) entry(ctx context.Context, name string) (manifest.Entry, error) {
	p.mu.Lock()
	m := p.manifest
	p.mu.Unlock()
	if m != nil {
		if e, ok := m.Lookup(name); ok {
			return e, nil
		}
	}
	for try := 1; ; try++ {
		e, err := p.freshEntry(ctx, name)
		if !errors.Is(err, errNotListed) || try == manifestTries {
			return e, err
		}
		// The node's manifest may be a moment behind its playlist.
		t := time.NewTimer(manifestRetry)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return manifest.Entry{}, err
		}
	}
}

// A segment a fresh manifest does not list is looked up manifestTries
// times in all, manifestRetry apart.
const (
	manifestTries = 4
	manifestRetry = 250 * time.Millisecond
)

var errNotListed = errors.New("not in the rendition's manifest")

// freshEntry fetches the manifest and looks name up in it.
func (p *Peer) freshEntry(ctx context.Context, name string) (manifest.Entry, error) {
	data, err := p.get(ctx, manifest.FileName, manifest.MaxBytes)
	if err != nil {
		return manifest.Entry{}, err
	}
	nm, err := manifest.Verify(data, p.keys)
	if err != nil {
		return manifest.Entry{}, fmt.Errorf("peer: manifest: %w", err)
	}
	if nm.ID+"/"+nm.Rendition != p.swarmID {
		return manifest.Entry{}, fmt.Errorf("peer: the manifest is %s/%s's, not the swarm's (%s)", nm.ID, nm.Rendition, p.swarmID)
	}
	p.mu.Lock()
	if p.manifest == nil || nm.Seq > p.manifest.Seq || nm.Time.After(p.manifest.Time) {
		p.manifest = &nm
	}
	p.mu.Unlock()
	e, ok := nm.Lookup(name)
	if !ok {
		if nm.Ended {
			return manifest.Entry{}, fmt.Errorf("peer: %s is not in the rendition's manifest (ended)", name)
		}
		return manifest.Entry{}, fmt.Errorf("peer: %s is %w", name, errNotListed)
	}
	if e.Kind == manifest.KindGap {
		return manifest.Entry{}, fmt.Errorf("peer: %s is a gap: it has no bytes", name)
	}
	return e, nil
}

// get fetches a file of the rendition over HTTP, at most limit bytes.
func (p *Peer) get(ctx context.Context, name string, limit int64) ([]byte, error) {
	u, err := url.Parse(p.cfg.HTTP)
	if err != nil {
		return nil, err
	}
	u.Path += name
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u.String(), nil)
	if err != nil {
		return nil, err
	}
	resp, err := p.cfg.HTTPClient.Do(req)
	if err != nil {
		return nil, fmt.Errorf("peer: GET %s: %w", name, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("peer: GET %s: %s", name, resp.Status)
	}
	data, err := io.ReadAll(io.LimitReader(resp.Body, limit+1))
	if err != nil {
		return nil, fmt.Errorf("peer: GET %s: %w", name, err)
	}
	if int64(len(data)) > limit {
		return nil, fmt.Errorf("peer: GET %s: over %d bytes", name, limit)
	}
	return data, nil
}

// Fetch returns segment (or init section) name's bytes, verified against
// the signed manifest: from peers of the swarm first, then over HTTP. A
// peer whose bytes fail verification is dropped, reported to the tracker
// and never asked again. Bytes that fail verification are never returned.
// Peers get two PeerTimeouts in all, then HTTP.
func (p *Peer) Fetch(ctx context.Context, name string) ([]byte, Source, error) {
	return p.FetchBy(ctx, name, time.Time{})
}

// holderPoll is how often FetchBy asks the tracker again while no peer
// holds the segment.
const holderPoll = 300 * time.Millisecond

// FetchBy is Fetch for a segment needed later (ahead of a player's
// playhead): while no peer has delivered it, it asks the tracker again
// every holderPoll for peers that hold it, until httpAt; then it goes
// over HTTP. A player sets httpAt where its buffer would run low. The
// zero httpAt is Fetch's budget (two PeerTimeouts); a past one goes to
// HTTP at once.
func (p *Peer) FetchBy(ctx context.Context, name string, httpAt time.Time) ([]byte, Source, error) {
	if !tracker.ValidSegment(name) {
		return nil, "", fmt.Errorf("peer: bad segment name %q", name)
	}
	p.mu.Lock()
	h, ok := p.store[name]
	p.mu.Unlock()
	if ok {
		// A copy: what the caller does with it must not change what
		// this peer serves.
		return bytes.Clone(h.data), h.from, nil
	}
	e, err := p.entry(ctx, name)
	if err != nil {
		return nil, "", err
	}
	if e.Size > MaxSegmentBytes {
		return nil, "", fmt.Errorf("peer: %s is over %d bytes", name, MaxSegmentBytes)
	}
	// Peers get two PeerTimeouts in all (or until httpAt), then HTTP: a
	// player can't wait on a row of silent peers.
	wait := !httpAt.IsZero()
	if !wait {
		httpAt = time.Now().Add(2 * p.cfg.PeerTimeout)
	}
	pctx, cancel := context.WithDeadline(ctx, httpAt)
	defer cancel()
	seeding := wait && p.cfg.SeedWindow > 0
	for round := 0; pctx.Err() == nil; round++ {
		data, ok, tried := p.fromPeers(ctx, pctx, name, e)
		if ok {
			return data, SourceP2P, nil
		}
		if ctx.Err() != nil {
			return nil, "", ctx.Err()
		}
		if !wait || (seeding && round == 1 && tried == 0) {
			// Still nobody to ask after the random wait: this peer
			// seeds the swarm over HTTP now.
			break
		}
		d := holderPoll
		if seeding && round == 0 && tried == 0 {
			d = rand.N(p.cfg.SeedWindow) // who wakes first seeds
		}
		t := time.NewTimer(d)
		select {
		case <-t.C:
		case <-pctx.Done():
		}
		t.Stop()
	}
	if ctx.Err() != nil {
		return nil, "", ctx.Err()
	}
	data, err := p.get(ctx, name, e.Size)
	if err != nil {
		return nil, "", err
	}
	if err := e.Check(data); err != nil {
		return nil, "", fmt.Errorf("peer: over HTTP: %w", err)
	}
	p.httpBytes.Add(int64(len(data)))
	// The store keeps its own copy: what the caller does with data must
	// not change what this peer serves.
	p.keep(name, bytes.Clone(data), SourceHTTP)
	return data, SourceHTTP, nil
}

// fromPeers asks the tracker who holds name and tries them in turn
// within pctx; true with the verified bytes of the first that delivers.
func (p *Peer) fromPeers(ctx, pctx context.Context, name string, e manifest.Entry) (data []byte, ok bool, tried int) {
	for _, remote := range p.want(pctx, name) {
		if pctx.Err() != nil {
			return nil, false, tried
		}
		p.mu.Lock()
		until, resting := p.resting[remote]
		p.mu.Unlock()
		if resting && time.Now().Before(until) {
			continue
		}
		tried++
		data, err := p.fromPeer(pctx, remote, name, e.Size)
		if err != nil {
			p.cfg.Log.Debug("p2p fetch from a peer failed", "peer", remote, "segment", name, "err", err)
			rest := restAfterFailure
			if errors.Is(err, errNotHeld) {
				// Busy with other uploads, or it let the segment go: asked
				// again soon.
				rest = restAfterNone
			}
			// Not for our own budget ending (pctx) or a cap of ours.
			if !errors.Is(err, errCapacity) && pctx.Err() == nil {
				// Silent, without the segment it announced, or gone:
				// not asked again for a while.
				p.mu.Lock()
				if len(p.resting) >= maxResting {
					clear(p.resting)
				}
				p.resting[remote] = time.Now().Add(rest)
				p.mu.Unlock()
			}
			continue
		}
		if err := e.Check(data); err != nil {
			p.drop(remote, name, err)
			continue
		}
		p.p2pBytes.Add(int64(len(data)))
		p.keep(name, bytes.Clone(data), SourceP2P) // its own copy, as above
		return data, true, tried
	}
	return nil, false, tried
}

// drop stops using a peer whose bytes failed verification and reports it.
func (p *Peer) drop(remote, name string, why error) {
	p.cfg.Log.Warn("p2p peer dropped: its bytes failed verification", "peer", remote, "segment", name, "err", why)
	p.dropped.Add(1)
	p.mu.Lock()
	p.banned[remote] = true
	l := p.links[remote]
	p.mu.Unlock()
	if l != nil {
		l.close()
	}
	_ = p.send(tracker.Message{Type: tracker.TypeBad, Peer: remote, Segment: name})
}

// keep stores a verified segment and announces what the peer holds.
func (p *Peer) keep(name string, data []byte, from Source) {
	p.mu.Lock()
	if _, ok := p.store[name]; !ok {
		p.store[name] = held{data: data, from: from}
		p.order = append(p.order, name)
		p.heldBytes += int64(len(data))
		// The oldest go first; the newest is always kept.
		for len(p.order) > maxHeld || (len(p.order) > 1 && p.heldBytes > p.cfg.MaxHeldBytes) {
			p.heldBytes -= int64(len(p.store[p.order[0]].data))
			delete(p.store, p.order[0])
			p.order = p.order[1:]
		}
	}
	names := append([]string(nil), p.order...)
	p.mu.Unlock()
	_ = p.send(tracker.Message{Type: tracker.TypeHave, Segments: names})
}

// served returns a verified segment's bytes, as this peer serves them.
func (p *Peer) served(name string) ([]byte, bool) {
	p.mu.Lock()
	h, ok := p.store[name]
	p.mu.Unlock()
	if !ok {
		return nil, false
	}
	if p.cfg.Mutate != nil {
		return p.cfg.Mutate(append([]byte(nil), h.data...)), true
	}
	return h.data, true
}

func validName(s string) bool { return tracker.ValidSegment(s) }

func trackerSignal(to string, data []byte) tracker.Message {
	return tracker.Message{Type: tracker.TypeSignal, To: to, Data: data}
}

// fromPeer gets a segment of size bytes from remote, connecting to it if
// needed, within PeerTimeout. The bytes are not verified yet.
func (p *Peer) fromPeer(ctx context.Context, remote, name string, size int64) ([]byte, error) {
	ctx, cancel := context.WithTimeout(ctx, p.cfg.PeerTimeout)
	defer cancel()
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil, errLinkEnded
	}
	if p.banned[remote] || remote == p.id {
		p.mu.Unlock()
		return nil, errors.New("peer: a dropped peer")
	}
	l := p.links[remote]
	if l == nil {
		victim, ok := p.makeRoomLocked()
		if !ok {
			p.mu.Unlock()
			return nil, errCapacity
		}
		l = p.newLink(remote, true)
		p.links[remote] = l
		p.mu.Unlock()
		if victim != nil {
			victim.close()
		}
		if err := l.offer(ctx); err != nil {
			l.close()
			return nil, err
		}
	} else {
		p.mu.Unlock()
	}
	select {
	case <-l.open:
	case <-l.done:
		return nil, errLinkEnded
	case <-ctx.Done():
		l.close()
		return nil, ctx.Err()
	}
	data, err := l.request(ctx, name, size)
	if errors.Is(err, errTampered) {
		// A size other than the manifest's: verification fails.
		return make([]byte, 0), nil
	}
	return data, err
}

// signal handles a session description another peer sent through the
// tracker.
func (p *Peer) signal(from string, data []byte) {
	var desc webrtc.SessionDescription
	if err := json.Unmarshal(data, &desc); err != nil {
		return
	}
	p.mu.Lock()
	if p.closed || p.banned[from] {
		p.mu.Unlock()
		return
	}
	l := p.links[from]
	var victim *link
	switch desc.Type {
	case webrtc.SDPTypeAnswer:
		p.mu.Unlock()
		if l == nil {
			return
		}
		l.mu.Lock()
		pc, offerer := l.pc, l.offerer
		l.mu.Unlock()
		if offerer && pc != nil {
			if err := pc.SetRemoteDescription(desc); err != nil {
				l.close()
			}
		}
		return
	case webrtc.SDPTypeOffer:
	default:
		p.mu.Unlock()
		return
	}
	if l != nil {
		select {
		case <-l.open:
			// Connected already: renegotiation is not part of the protocol.
			p.mu.Unlock()
			return
		default:
		}
		l.mu.Lock()
		offerer := l.offerer
		l.mu.Unlock()
		// Both offered at once (glare): the peer with the smaller id keeps
		// its offer, the other answers.
		if !offerer || p.id < from {
			p.mu.Unlock()
			return
		}
	} else {
		// Offers that never connect, renewed as fast as they are
		// dropped, must not take every place: at most half of them
		// wait to connect.
		if p.connectingInLocked() >= max(1, p.cfg.MaxPeers/2) {
			p.mu.Unlock()
			return
		}
		v, ok := p.makeRoomLocked()
		if !ok {
			p.mu.Unlock()
			return
		}
		victim = v
		l = p.newLink(from, false)
		p.links[from] = l
	}
	p.mu.Unlock()
	if victim != nil {
		victim.close()
	}
	p.wg.Add(1)
	go func() {
		defer p.wg.Done()
		ctx, cancel := context.WithTimeout(p.ctx, 10*time.Second)
		defer cancel()
		if err := l.answer(ctx, desc); err != nil {
			l.close()
			return
		}
		// An offerer that never connects does not hold a slot.
		select {
		case <-l.open:
		case <-l.done:
		case <-ctx.Done():
			l.close()
		}
	}()
}
