// Package tracker is the P2P tracker and signaling server of peer-assisted
// delivery: viewers of one stream rendition (a swarm) join over a
// WebSocket, announce the segments they hold and verified, ask who holds a
// segment, and exchange WebRTC offers, answers and candidates through it.
// The tracker never sees media; peers check every byte they receive from
// another peer against the origin's signed manifest, and report a peer
// whose bytes failed (after 3 distinct reporters the tracker drops it).
//
// The protocol (JSON text frames of at most 16 KiB) is described on
// Message and in the README ("Peer-assisted delivery").
package tracker

import (
	"context"
	"encoding/json"
	"io"
	"log/slog"
	"math/rand/v2"
	"net"
	"net/http"
	"sort"
	"sync"
	"time"

	"github.com/coder/websocket"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/time/rate"

	"github.com/shoal-video/shoal/internal/ids"
)

// Path is where origins and edges mount the tracker.
const Path = "/p2p/ws"

// BanReporters is how many reporters, from distinct network addresses,
// must report a peer's bytes as bad before the tracker stops offering it
// to anyone and closes its socket. A report counts only from a peer the
// reported one sent a signal to (they were connected, or about to be), and
// a reporter is never offered the peer it reported again.
const BanReporters = 3

// Config is the tracker's settings; zero values take the defaults.
type Config struct {
	// Authorize decides whether r may join the swarms of stream or video
	// id: 0 or 200 lets it in, any other status is the answer (404 for an
	// unknown id, 403 for a missing or bad token, 409 when P2P is turned
	// off for the id). Nil lets everyone in.
	Authorize func(r *http.Request, id string) (status int)
	// ReauthorizeEvery is how often a joined socket's access is checked
	// again with Authorize (a token that expired, a stream made signed or
	// deleted: the socket is closed). Default 30 s.
	ReauthorizeEvery time.Duration
	// ClientIP is the network address a request comes from (reporters
	// are counted by address). Default: the connection's host.
	ClientIP func(r *http.Request) string
	// MaxPeersPerSwarm: joins beyond get 503. Default 500.
	MaxPeersPerSwarm int
	// MaxSwarms: joins that would open another swarm get 503. Default 10,000.
	MaxSwarms int
	// MaxPeers bounds the sockets of the whole node, MaxPeersPerAddr those
	// from one network address (ClientIP): joins beyond get 503. Default
	// 20,000 and 8.
	MaxPeers        int
	MaxPeersPerAddr int
	// MessageRate and MessageBurst bound what one socket sends (over:
	// closed). Default 20/s with a burst of 50.
	MessageRate  float64
	MessageBurst int
	// IdleTimeout closes a socket that sent nothing for that long.
	// Default 60 s.
	IdleTimeout time.Duration
	// WriteTimeout bounds one write to a socket. Default 5 s.
	WriteTimeout time.Duration
	// Now is the clock of rates and idle times (tests inject one).
	// Default time.Now.
	Now func() time.Time
	// MaxStatsRate bounds what one socket's stats reports may add, in
	// bytes a second (HTTP and P2P together, with a burst of one second's
	// worth): more is clamped. Default DefaultMaxStatsRate (1 GiB/s).
	MaxStatsRate int64
	// Sweep ticks trigger the idle check (tests inject a channel). Default
	// a ticker every IdleTimeout/4.
	Sweep <-chan time.Time

	Log        *slog.Logger
	Registerer prometheus.Registerer
}

func (c *Config) defaults() {
	if c.MaxPeersPerSwarm <= 0 {
		c.MaxPeersPerSwarm = 500
	}
	if c.MaxSwarms <= 0 {
		c.MaxSwarms = 10000
	}
	if c.MaxPeers <= 0 {
		c.MaxPeers = 20000
	}
	if c.MaxPeersPerAddr <= 0 {
		c.MaxPeersPerAddr = 8
	}
	if c.MessageRate <= 0 {
		c.MessageRate = 20
	}
	if c.MessageBurst <= 0 {
		c.MessageBurst = 50
	}
	if c.IdleTimeout <= 0 {
		c.IdleTimeout = 60 * time.Second
	}
	if c.WriteTimeout <= 0 {
		c.WriteTimeout = 5 * time.Second
	}
	if c.ReauthorizeEvery <= 0 {
		c.ReauthorizeEvery = 30 * time.Second
	}
	if c.ClientIP == nil {
		c.ClientIP = func(r *http.Request) string {
			host, _, err := net.SplitHostPort(r.RemoteAddr)
			if err != nil {
				return r.RemoteAddr
			}
			return host
		}
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
}

// Tracker is the tracker; it is an http.Handler for Path.
type Tracker struct {
	cfg    Config
	ctx    context.Context
	cancel context.CancelFunc
	wg     sync.WaitGroup

	mu     sync.Mutex
	swarms map[string]*swarm
	total  int            // sockets and admitted joins, all swarms
	byAddr map[string]int // the same, per network address
	closed bool

	peers      prometheus.Gauge
	bytes      *prometheus.CounterVec
	badReports prometheus.Counter
	closes     *prometheus.CounterVec

	pending      map[string]Bytes // per stream or video id, since TakeStats; guarded by mu
	statsRefused *prometheus.CounterVec
}

type swarm struct {
	id       string
	peers    map[string]*conn
	reserved int // joins admitted, not yet upgraded
	offerSeq uint64
	reports  map[string]map[string]bool // reported peer -> reporters' addresses
	// holders indexes the peers' have sets: segment -> peers announcing
	// it, so that a want costs the holders, not the swarm.
	holders   map[string]map[*conn]struct{}
	banned    map[string]bool
	httpBytes uint64
	p2pBytes  uint64
}

type conn struct {
	id      string
	sw      *swarm
	ws      *websocket.Conn
	out     chan []byte
	done    chan struct{}
	wdone   chan struct{} // closed when the writer stops (the socket broke or ended)
	limiter *rate.Limiter

	addr    string        // the client's network address (Config.ClientIP)
	req     *http.Request // the join request, for Authorize again
	mediaID string        // the stream or video id of its swarm

	// Guarded by Tracker.mu.
	// Peers that sent this one a signal and peers it reported: all in its
	// swarm (a peer leaving is taken out of the others', so that strangers
	// joining and leaving do not grow them).
	heard       map[string]bool
	reported    map[string]bool
	authorized  time.Time // when its access was last checked
	have        map[string]bool
	lastOffered uint64
	lastSeen    time.Time
	httpBytes   uint64
	p2pBytes    uint64
	stats       statsState
	closing     bool
}

// New returns a tracker; Close ends it.
func New(cfg Config) (*Tracker, error) {
	cfg.defaults()
	ctx, cancel := context.WithCancel(context.Background())
	t := &Tracker{cfg: cfg, ctx: ctx, cancel: cancel, swarms: map[string]*swarm{}, byAddr: map[string]int{},
		peers: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_p2p_peers", Help: "Peers connected to this node's P2P tracker."}),
		bytes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_p2p_bytes_total",
			Help: "Media bytes the tracker's peers reported downloading, by source (http or p2p)."}, []string{"source"}),
		badReports: prometheus.NewCounter(prometheus.CounterOpts{Name: "shoal_p2p_bad_reports_total",
			Help: "Reports by peers of another peer's bytes failing verification."}),
		closes: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_p2p_violations_total",
			Help: "Tracker sockets closed for breaking the protocol or its limits, by reason."}, []string{"reason"}),
		statsRefused: newStatsRefused(),
	}
	t.bytes.WithLabelValues("http")
	t.bytes.WithLabelValues("p2p")
	if cfg.Registerer != nil {
		for _, c := range []prometheus.Collector{t.peers, t.bytes, t.badReports, t.closes, t.statsRefused} {
			if err := cfg.Registerer.Register(c); err != nil {
				cancel()
				return nil, err
			}
		}
	}
	sweep := cfg.Sweep
	var ticker *time.Ticker
	if sweep == nil {
		ticker = time.NewTicker(max(cfg.IdleTimeout/4, time.Second))
		sweep = ticker.C
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		if ticker != nil {
			defer ticker.Stop()
		}
		for {
			select {
			case <-ctx.Done():
				return
			case <-sweep:
				t.sweepIdle()
			}
		}
	}()
	return t, nil
}

// Close closes every socket and waits for the tracker's goroutines.
func (t *Tracker) Close() {
	t.mu.Lock()
	t.closed = true
	var all []*conn
	for _, sw := range t.swarms {
		for _, c := range sw.peers {
			all = append(all, c)
		}
	}
	t.mu.Unlock()
	for _, c := range all {
		t.kick(c, websocket.StatusGoingAway, "tracker shutting down", "")
	}
	t.cancel()
	t.wg.Wait()
}

// SwarmStats returns a swarm's peers and the HTTP and P2P bytes its
// peers reported (totals of the swarm while it has peers).
func (t *Tracker) SwarmStats(swarmID string) (peers int, httpBytes, p2pBytes uint64) {
	t.mu.Lock()
	defer t.mu.Unlock()
	sw := t.swarms[swarmID]
	if sw == nil {
		return 0, 0, 0
	}
	return len(sw.peers), sw.httpBytes, sw.p2pBytes
}

func writeError(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(status)
	b, _ := json.Marshal(map[string]any{"error": map[string]string{"code": code, "message": msg}})
	_, _ = w.Write(b)
}

// ServeHTTP admits a peer to the swarm its query names and serves its
// socket.
func (t *Tracker) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet {
		w.Header().Set("Allow", http.MethodGet)
		writeError(w, http.StatusMethodNotAllowed, "method_not_allowed", "the tracker is a WebSocket: GET only")
		return
	}
	swarmID := r.URL.Query().Get("swarm")
	id, _, ok := ParseSwarm(swarmID)
	if !ok {
		writeError(w, http.StatusBadRequest, "bad_request", "swarm must be <stream or video id>/<rendition>")
		return
	}
	if t.cfg.Authorize != nil {
		switch st := t.cfg.Authorize(r, id); st {
		case 0, http.StatusOK:
		case http.StatusNotFound:
			writeError(w, st, "not_found", "no such stream or video")
			return
		case http.StatusForbidden, http.StatusUnauthorized:
			writeError(w, st, "forbidden", "a valid playback token is required")
			return
		case http.StatusConflict:
			writeError(w, st, "p2p_disabled", "peer-assisted delivery is turned off for this stream or video: fetch over HTTP")
			return
		default:
			writeError(w, st, "unavailable", http.StatusText(st))
			return
		}
	}
	addr := t.cfg.ClientIP(r)
	sw, status := t.reserve(swarmID, addr)
	if status != 0 {
		writeError(w, status, "unavailable", "the tracker is full (or this address has too many peers); fetch over HTTP")
		return
	}
	// Tokens travel in the query, not in cookies, so a page on any origin
	// may join: there is no ambient credential to protect.
	ws, err := websocket.Accept(w, r, &websocket.AcceptOptions{OriginPatterns: []string{"*"}})
	if err != nil {
		t.unreserve(sw, addr)
		return
	}
	ws.SetReadLimit(MaxMessageBytes + 1)
	c := &conn{id: ids.New(), sw: sw, ws: ws, out: make(chan []byte, 64), done: make(chan struct{}), wdone: make(chan struct{}),
		limiter: rate.NewLimiter(rate.Limit(t.cfg.MessageRate), t.cfg.MessageBurst), have: map[string]bool{},
		addr: addr, req: r.Clone(context.Background()), mediaID: id,
		heard: map[string]bool{}, reported: map[string]bool{}}
	t.mu.Lock()
	sw.reserved--
	if t.closed {
		t.release(addr)
		t.mu.Unlock()
		t.dropSwarmIfEmpty(sw)
		_ = ws.Close(websocket.StatusGoingAway, "tracker shutting down")
		return
	}
	c.lastSeen = t.cfg.Now()
	c.authorized = c.lastSeen
	// The stats budget fills from the join on: a socket that reconnects
	// gets nothing for the time before it joined.
	c.stats = statsState{init: true, at: c.lastSeen}
	sw.peers[c.id] = c
	t.wg.Add(1) // under mu, before Close sees closed: Close's Wait covers this socket
	t.mu.Unlock()
	defer t.wg.Done()
	t.peers.Inc()
	t.wg.Add(1)
	go t.writer(c)
	t.send(c, Message{Type: TypeWelcome, Peer: c.id, Swarm: swarmID})
	t.read(c)
	t.leave(c)
	close(c.done)
}

func (t *Tracker) reserve(swarmID, addr string) (*swarm, int) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if t.closed || t.total >= t.cfg.MaxPeers || t.byAddr[addr] >= t.cfg.MaxPeersPerAddr {
		return nil, http.StatusServiceUnavailable
	}
	sw := t.swarms[swarmID]
	if sw == nil {
		if len(t.swarms) >= t.cfg.MaxSwarms {
			return nil, http.StatusServiceUnavailable
		}
		sw = &swarm{id: swarmID, peers: map[string]*conn{}, reports: map[string]map[string]bool{}, banned: map[string]bool{},
			holders: map[string]map[*conn]struct{}{}}
		t.swarms[swarmID] = sw
	}
	if len(sw.peers)+sw.reserved >= t.cfg.MaxPeersPerSwarm {
		return nil, http.StatusServiceUnavailable
	}
	sw.reserved++
	t.total++
	t.byAddr[addr]++
	return sw, 0
}

// release counts a socket (or admitted join) of addr out; under t.mu.
func (t *Tracker) release(addr string) {
	t.total--
	if t.byAddr[addr]--; t.byAddr[addr] <= 0 {
		delete(t.byAddr, addr)
	}
}

// index adds c's have set to the swarm's index; under Tracker.mu.
func (sw *swarm) index(c *conn) {
	for s := range c.have {
		h := sw.holders[s]
		if h == nil {
			h = map[*conn]struct{}{}
			sw.holders[s] = h
		}
		h[c] = struct{}{}
	}
}

// unindex removes c's have set from the index; under Tracker.mu.
func (sw *swarm) unindex(c *conn) {
	for s := range c.have {
		if h := sw.holders[s]; h != nil {
			delete(h, c)
			if len(h) == 0 {
				delete(sw.holders, s)
			}
		}
	}
}

func (t *Tracker) unreserve(sw *swarm, addr string) {
	t.mu.Lock()
	sw.reserved--
	t.release(addr)
	t.mu.Unlock()
	t.dropSwarmIfEmpty(sw)
}

func (t *Tracker) dropSwarmIfEmpty(sw *swarm) {
	t.mu.Lock()
	defer t.mu.Unlock()
	if len(sw.peers) == 0 && sw.reserved == 0 && t.swarms[sw.id] == sw {
		delete(t.swarms, sw.id)
	}
}

func (t *Tracker) leave(c *conn) {
	t.mu.Lock()
	sw := c.sw
	delete(sw.peers, c.id)
	delete(sw.reports, c.id)
	delete(sw.banned, c.id)
	for _, p := range sw.peers { // at most MaxPeersPerSwarm
		delete(p.heard, c.id)
		delete(p.reported, c.id)
	}
	sw.unindex(c)
	t.release(c.addr)
	t.mu.Unlock()
	t.dropSwarmIfEmpty(sw)
	t.peers.Dec()
}

// writer sends c's queued messages until the socket ends.
func (t *Tracker) writer(c *conn) {
	defer t.wg.Done()
	defer close(c.wdone)
	for {
		select {
		case <-c.done:
			return
		case b := <-c.out:
			// Not t.ctx: Close sends close frames, which canceling would
			// cut short.
			ctx, cancel := context.WithTimeout(context.Background(), t.cfg.WriteTimeout)
			err := c.ws.Write(ctx, websocket.MessageText, b)
			cancel()
			if err != nil {
				_ = c.ws.CloseNow()
				return
			}
		}
	}
}

// send queues m for c; a peer too slow to take its messages is closed.
func (t *Tracker) send(c *conn, m Message) {
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	select {
	case c.out <- b:
	default:
		t.kick(c, websocket.StatusPolicyViolation, "too slow to read its messages", "slow")
	}
}

// reply queues m, an answer to a message of c's own, from c's reader: it
// waits for room in c's queue (up to the write timeout), so a peer that
// sends faster than its answers can be written is slowed down, not closed
// as too slow, while it reads what it is sent.
func (t *Tracker) reply(c *conn, m Message) {
	b, err := json.Marshal(m)
	if err != nil {
		return
	}
	select {
	case c.out <- b:
		return
	default:
	}
	timer := time.NewTimer(t.cfg.WriteTimeout)
	defer timer.Stop()
	select {
	case c.out <- b:
	case <-c.wdone: // the socket broke: nothing is written any more
	case <-timer.C:
		t.kick(c, websocket.StatusPolicyViolation, "too slow to read its messages", "slow")
	}
}

// kick closes c's socket with code and reason, from any goroutine.
func (t *Tracker) kick(c *conn, code websocket.StatusCode, reason, metric string) {
	t.mu.Lock()
	if c.closing {
		t.mu.Unlock()
		return
	}
	c.closing = true
	t.mu.Unlock()
	if metric != "" {
		t.closes.WithLabelValues(metric).Inc()
	}
	t.wg.Add(1)
	go func() {
		defer t.wg.Done()
		_ = c.ws.Close(code, reason)
	}()
}

func (t *Tracker) sweepIdle() {
	now := t.cfg.Now()
	var idle, recheck []*conn
	t.mu.Lock()
	for _, sw := range t.swarms {
		for _, c := range sw.peers {
			switch {
			case c.closing:
			case now.Sub(c.lastSeen) >= t.cfg.IdleTimeout:
				idle = append(idle, c)
			case t.cfg.Authorize != nil && now.Sub(c.authorized) >= t.cfg.ReauthorizeEvery:
				c.authorized = now
				recheck = append(recheck, c)
			}
		}
	}
	t.mu.Unlock()
	for _, c := range idle {
		t.kick(c, websocket.StatusPolicyViolation, "idle: send a ping at least every "+t.cfg.IdleTimeout.String(), "idle")
	}
	// Access is not for ever: a token that expired, a stream made signed
	// or deleted closes the sockets that joined with what no longer
	// passes.
	for _, c := range recheck {
		switch st := t.cfg.Authorize(c.req, c.mediaID); {
		case st == http.StatusConflict:
			t.kick(c, websocket.StatusPolicyViolation, "peer-assisted delivery was turned off for this stream: fetch over HTTP", "p2p_disabled")
		case st != 0 && st != http.StatusOK && st < 500:
			t.kick(c, websocket.StatusPolicyViolation, "access to this stream was revoked (a token expired, or the stream changed)", "revoked")
		}
	}
}

// read serves c's messages until its socket ends or breaks the protocol.
func (t *Tracker) read(c *conn) {
	for {
		// Sockets end by their close handshake (kick), not by a context.
		typ, r, err := c.ws.Reader(context.Background())
		if err != nil {
			return
		}
		if typ != websocket.MessageText {
			t.violation(c, "binary frames are not part of the protocol", "binary")
			return
		}
		b, err := io.ReadAll(io.LimitReader(r, MaxMessageBytes+1))
		if err != nil {
			return
		}
		if len(b) > MaxMessageBytes {
			t.violation(c, "message over 16 KiB", "size")
			return
		}
		now := t.cfg.Now()
		if !c.limiter.AllowN(now, 1) {
			t.violation(c, "over 20 messages a second", "rate")
			return
		}
		m, err := ParseMessage(b)
		if err != nil {
			t.violation(c, truncate("bad message: "+err.Error()), "message")
			return
		}
		t.mu.Lock()
		c.lastSeen = now
		t.mu.Unlock()
		if !t.handle(c, m) {
			return
		}
	}
}

// truncate keeps a close reason within what a close frame carries (123
// bytes).
func truncate(s string) string {
	if len(s) > 120 {
		return s[:120]
	}
	return s
}

func (t *Tracker) violation(c *conn, reason, metric string) {
	t.mu.Lock()
	already := c.closing
	c.closing = true
	t.mu.Unlock()
	if !already {
		t.closes.WithLabelValues(metric).Inc()
		_ = c.ws.Close(websocket.StatusPolicyViolation, reason)
	}
}

// handle acts on one valid message; false ends the socket.
func (t *Tracker) handle(c *conn, m Message) bool {
	sw := c.sw
	switch m.Type {
	case TypePing:
		t.reply(c, Message{Type: TypePong})
	case TypeHave:
		t.mu.Lock()
		sw.unindex(c)
		c.have = make(map[string]bool, len(m.Segments))
		for _, s := range m.Segments {
			c.have[s] = true
		}
		sw.index(c)
		t.mu.Unlock()
	case TypeWant:
		t.reply(c, Message{Type: TypePeers, Segment: m.Segment, Peers: t.offer(c, m.Segment)})
	case TypeSignal:
		t.mu.Lock()
		to := sw.peers[m.To]
		if to != nil && (to.closing || to == c) {
			to = nil
		}
		// A receiver whose queue is half full takes no more signals: a
		// flood of them must not get it closed as too slow.
		if to != nil && len(to.out) >= cap(to.out)/2 {
			to = nil
		}
		if to != nil {
			to.heard[c.id] = true
		}
		t.mu.Unlock()
		if to == nil {
			t.reply(c, Message{Type: TypeGone, Peer: m.To})
			return true
		}
		t.send(to, Message{Type: TypeSignal, From: c.id, Data: m.Data})
	case TypeBad:
		if m.Peer == c.id {
			t.violation(c, "a peer cannot report itself", "message")
			return false
		}
		var ban *conn
		t.mu.Lock()
		// Only a peer the reported one signaled can have had bytes from
		// it; it is never offered that peer again, and reporters from
		// BanReporters addresses drop it for everyone.
		if p := sw.peers[m.Peer]; p != nil && !sw.banned[m.Peer] && c.heard[m.Peer] && !c.reported[m.Peer] {
			t.badReports.Inc()
			c.reported[m.Peer] = true
			reporters := sw.reports[m.Peer]
			if reporters == nil {
				reporters = map[string]bool{}
				sw.reports[m.Peer] = reporters
			}
			reporters[c.addr] = true
			if len(reporters) >= BanReporters {
				sw.banned[m.Peer] = true
				ban = p
			}
		}
		t.mu.Unlock()
		if ban != nil {
			t.cfg.Log.Info("p2p peer dropped: reported for tampering", "swarm", sw.id, "peer", ban.id)
			t.kick(ban, websocket.StatusPolicyViolation, "reported by 3 peers for bytes that failed verification", "tampering")
		}
	case TypeStats:
		return t.countStats(c, m)
	}
	return true
}

// offer picks up to MaxPeersOffered other holders of segment: random
// among them, those offered least recently first, so load spreads.
func (t *Tracker) offer(asker *conn, segment string) []string {
	t.mu.Lock()
	defer t.mu.Unlock()
	sw := asker.sw
	var holders []*conn
	for p := range sw.holders[segment] {
		if p != asker && !p.closing && !sw.banned[p.id] && !asker.reported[p.id] {
			holders = append(holders, p)
		}
	}
	rand.Shuffle(len(holders), func(i, j int) { holders[i], holders[j] = holders[j], holders[i] })
	sort.SliceStable(holders, func(i, j int) bool { return holders[i].lastOffered < holders[j].lastOffered })
	if len(holders) > MaxPeersOffered {
		holders = holders[:MaxPeersOffered]
	}
	out := make([]string, 0, len(holders))
	for _, p := range holders {
		sw.offerSeq++
		p.lastOffered = sw.offerSeq
		out = append(out, p.id)
	}
	return out
}
