// Package srt is the SRT ingest: encoders (OBS, ffmpeg, hardware
// encoders) publish MPEG-TS over SRT to
// srt://HOST:8890?streamid=publish:<stream_key>, or with the SRT
// access-control stream id #!::r=live/<stream_key>,m=publish. Each accepted
// publisher becomes a publication of the stream's "source" rendition in the
// stream hub, exactly as an RTMP or RTSP one does, so transcoding,
// packaging, recording and webhooks behave the same.
//
// Only publishing is offered: a caller that asks to read (m=request, play:)
// is refused during the SRT handshake, as are unknown stream keys and
// streams that already have a publisher, each with an SRT rejection reason
// the caller can show. H.264, H.265 and AAC tracks are carried; others are
// skipped with a warning, and a stream with none of them is refused. The
// publication starts once the video's parameter sets have been seen, at
// its first keyframe.
//
// The SRT protocol itself is github.com/datarhei/gosrt; the MPEG-TS
// demuxer is mediacommon's.
package srt

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"sync"
	"time"

	gosrt "github.com/datarhei/gosrt"
	"github.com/prometheus/client_golang/prometheus"
	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

const (
	// authTimeout bounds a stream-key lookup; SRT callers give up on a
	// handshake after about 3 s.
	authTimeout = 2 * time.Second
	// maxPendingHandshakes bounds the handshakes being decided at once;
	// more are refused as overload.
	maxPendingHandshakes = 64
	// startTimeout is how long a publisher has, once connected, to send its
	// tracks and the video's parameter sets and first keyframe.
	startTimeout = 30 * time.Second
	// repeatWindow is how long after admitting a connection a handshake
	// from the same address is taken for a repeat of the one admitted (SRT
	// callers repeat theirs every 250 ms for about 3 s until answered).
	repeatWindow = 5 * time.Second
	// maxLatency is the most SRT can carry (milliseconds in 16 bits).
	maxLatency = 65535 * time.Millisecond
)

// Config configures the SRT server.
type Config struct {
	// Addr is the SRT (UDP) address, e.g. ":8890".
	Addr string
	// Latency is the SRT receiver latency (TSBPD delay) this server asks
	// for: how long packets are held to wait for retransmissions. The
	// larger of it and the publisher's own wins. 1 ms to 65.535 s.
	Latency time.Duration
	// ReadTimeout closes a publisher that sends no data for this long (SRT
	// keepalives do not count).
	ReadTimeout time.Duration
	// Passphrase, when set, makes encryption mandatory: publishers must use
	// the same passphrase (10 to 79 characters). Empty refuses encrypted
	// publishers.
	Passphrase string
}

// Deps are the server's collaborators.
type Deps struct {
	Log        *slog.Logger
	Auth       ingest.Authorizer
	Hub        ingest.Hub
	Registerer prometheus.Registerer
	// Limits, when set, bounds connections in total and per address
	// (shared with the other ingest protocols).
	Limits *ingest.ConnLimiter
}

// Server accepts SRT publishers.
type Server struct {
	cfg  Config
	deps Deps
	ln   gosrt.Listener
	m    ingest.Metrics

	refusedLog *logx.Limiter
	skipLog    *logx.Limiter
	pending    chan struct{} // a slot per handshake being decided

	mu         sync.Mutex
	closed     bool
	conns      map[*conn]struct{}
	publishers map[string]*conn     // stream id -> the connection that holds it
	remotes    map[string]time.Time // remote address of an admitted connection -> when
}

// New validates cfg and opens the listening socket (so a busy port is
// reported before anything starts); Run serves it.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Auth == nil || deps.Hub == nil {
		return nil, errors.New("srt ingest: Auth and Hub are required")
	}
	if cfg.Addr == "" {
		return nil, errors.New("srt ingest: an address is required, e.g. \":8890\"")
	}
	if cfg.ReadTimeout <= 0 {
		return nil, fmt.Errorf("srt ingest: read timeout must be positive, got %s", cfg.ReadTimeout)
	}
	if cfg.Latency < time.Millisecond || cfg.Latency > maxLatency {
		return nil, fmt.Errorf("srt ingest: latency must be from 1ms to %s, got %s", maxLatency, cfg.Latency)
	}
	if n := len(cfg.Passphrase); n != 0 && (n < 10 || n > 79) {
		return nil, fmt.Errorf("srt ingest: the passphrase must be 10 to 79 characters long, got %d", n)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	m, err := ingest.NewMetrics("srt", deps.Registerer)
	if err != nil {
		return nil, err
	}
	sc := gosrt.DefaultConfig()
	sc.Latency = cfg.Latency
	sc.PeerIdleTimeout = cfg.ReadTimeout
	// The passphrase is checked per connection request (SetPassphrase), so
	// that a mismatch is refused with a reason instead of timing out.
	addr, err := freeUDPAddr(cfg.Addr)
	if err != nil {
		return nil, fmt.Errorf("srt ingest: listen on %s: %w", cfg.Addr, err)
	}
	ln, err := gosrt.Listen("srt", addr, sc)
	if err != nil {
		return nil, fmt.Errorf("srt ingest: listen on %s: %w", cfg.Addr, err)
	}
	return &Server{
		cfg: cfg, deps: deps, ln: ln, m: m,
		refusedLog: logx.NewLimiter(10 * time.Second),
		skipLog:    logx.NewLimiter(10 * time.Second),
		pending:    make(chan struct{}, maxPendingHandshakes),
		conns:      map[*conn]struct{}{},
		publishers: map[string]*conn{},
		remotes:    map[string]time.Time{},
	}, nil
}

// freeUDPAddr checks that addr can be bound. gosrt binds with
// SO_REUSEADDR, which on Linux lets a second UDP socket share a port
// another one already holds, so a busy port would go unnoticed without
// this bind first. An ephemeral port (":0") is left to gosrt: the kernel
// gives it a free one, where a port learned here and bound again later
// could be taken in between.
func freeUDPAddr(addr string) (string, error) {
	if _, port, err := net.SplitHostPort(addr); err == nil && port == "0" {
		return addr, nil
	}
	pc, err := net.ListenPacket("udp", addr)
	if err != nil {
		return "", err
	}
	bound := pc.LocalAddr().String()
	if err := pc.Close(); err != nil {
		return "", err
	}
	return bound, nil
}

// Addr is the UDP address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close closes the listening socket and every connection (Run does it too
// when ctx ends).
func (s *Server) Close() { s.ln.Close() }

// Run serves publishers until ctx is done, then closes every connection
// and returns once each of them has finished.
func (s *Server) Run(ctx context.Context) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	g, ctx := errgroup.WithContext(ctx)
	g.Go(func() error {
		<-ctx.Done()
		s.mu.Lock()
		s.closed = true
		conns := make([]*conn, 0, len(s.conns))
		for c := range s.conns {
			conns = append(conns, c)
		}
		s.mu.Unlock()
		s.ln.Close()
		for _, c := range conns {
			c.stop(errShutdown)
		}
		return nil
	})
	s.deps.Log.Info("srt ingest listening", "addr", s.Addr().String(), "latency", s.cfg.Latency, "encrypted", s.cfg.Passphrase != "")
	var runErr error
	for {
		req, err := s.ln.Accept2()
		if err != nil {
			if ctx.Err() == nil && !errors.Is(err, gosrt.ErrListenerClosed) {
				runErr = fmt.Errorf("srt ingest: %w", err)
			}
			break
		}
		select {
		case s.pending <- struct{}{}:
		default:
			s.refuse(s.deps.Log.With("remote", req.RemoteAddr().String()), req, "overload", gosrt.REJX_OVERLOAD)
			continue
		}
		g.Go(func() error {
			s.handle(ctx, req)
			return nil
		})
	}
	cancel()
	_ = g.Wait()
	return runErr
}

// Disconnect closes the connection of stream id's publisher, if one is
// connected, and reports whether there was one.
func (s *Server) Disconnect(id string) bool {
	s.mu.Lock()
	c, ok := s.publishers[id]
	s.mu.Unlock()
	if ok {
		c.stop(errDisconnected)
	}
	return ok
}

// rejectNames are the SRT rejection reasons the server answers with.
var rejectNames = map[gosrt.RejectionReason]string{
	gosrt.REJ_CLOSE:         "REJ_CLOSE",
	gosrt.REJ_BADSECRET:     "REJ_BADSECRET",
	gosrt.REJ_UNSECURE:      "REJ_UNSECURE",
	gosrt.REJX_BAD_REQUEST:  "REJX_BAD_REQUEST",
	gosrt.REJX_UNAUTHORIZED: "REJX_UNAUTHORIZED",
	gosrt.REJX_OVERLOAD:     "REJX_OVERLOAD",
	gosrt.REJX_BAD_MODE:     "REJX_BAD_MODE",
	gosrt.REJX_CONFLICT:     "REJX_CONFLICT",
	gosrt.REJX_DOWN:         "REJX_DOWN",
}

// refuse rejects a connection request with code, counts it under reason
// and logs it (rate-limited).
func (s *Server) refuse(log *slog.Logger, req gosrt.ConnRequest, reason string, code gosrt.RejectionReason, attrs ...any) {
	req.Reject(code)
	s.refused(log, reason, append([]any{"srt_reject", rejectNames[code]}, attrs...)...)
}

// refused counts and logs (rate-limited) a refused publisher.
func (s *Server) refused(log *slog.Logger, reason string, attrs ...any) {
	s.m.Refused.WithLabelValues(reason).Inc()
	if ok, suppressed := s.refusedLog.Allow(); ok {
		log.Warn("srt publish refused", append([]any{"reason", reason, "suppressed_since_last", suppressed}, attrs...)...)
	}
}

// handle decides a connection request and serves the publisher it admits.
func (s *Server) handle(ctx context.Context, req gosrt.ConnRequest) {
	remote := req.RemoteAddr().String()
	c := &conn{s: s, log: s.deps.Log.With("remote", remote), remote: remote}
	rel, ok := s.deps.Limits.Acquire(remote)
	if !ok {
		<-s.pending
		s.refuse(c.log, req, ingest.RefusedLimit, gosrt.REJX_OVERLOAD)
		return
	}
	defer rel()
	ok = s.admit(ctx, req, c)
	<-s.pending
	if !ok {
		return
	}
	defer s.release(c)
	sc, err := req.Accept()
	if err != nil {
		c.log.Info("srt handshake failed", "err", err)
		return
	}
	defer sc.Close()
	c.attach(sc)
	c.serve()
}

// admit checks a connection request (stream id, encryption, stream key,
// whether the stream is free) and, when it passes, claims the stream for
// c. A request it refuses is rejected with an SRT reason.
func (s *Server) admit(ctx context.Context, req gosrt.ConnRequest, c *conn) bool {
	log := c.log
	s.mu.Lock()
	at, dup := s.remotes[c.remote]
	s.mu.Unlock()
	if dup && time.Since(at) < repeatWindow {
		// A handshake the caller repeated before our answer reached it,
		// from the address of a connection just admitted (or the same
		// conclusion replayed with other socket ids): rejected, not
		// counted as a refusal of a publisher that got in. Left
		// unanswered, gosrt would keep it for the listener's life (it
		// drops a request only when it is accepted or rejected); a
		// connected caller ignores the answer.
		log.Debug("rejecting a repeated SRT handshake")
		req.Reject(gosrt.REJ_CLOSE)
		return false
	}
	key, err := parseStreamID(req.StreamId())
	switch {
	case errors.Is(err, errNotPublish):
		s.refuse(log, req, "play_not_offered", gosrt.REJX_BAD_MODE, "err", err)
		return false
	case err != nil:
		// The stream id is not logged: it may hold a key.
		s.refuse(log, req, "bad_streamid", gosrt.REJX_BAD_REQUEST, "err", err, "streamid_len", len(req.StreamId()))
		return false
	}
	switch {
	case s.cfg.Passphrase == "" && req.IsEncrypted():
		s.refuse(log, req, "unexpected_encryption", gosrt.REJ_UNSECURE, "err", "the publisher encrypts, this server has no passphrase")
		return false
	case s.cfg.Passphrase != "" && !req.IsEncrypted():
		s.refuse(log, req, "encryption_required", gosrt.REJ_UNSECURE, "err", "this server requires a passphrase")
		return false
	case s.cfg.Passphrase != "":
		if err := req.SetPassphrase(s.cfg.Passphrase); err != nil {
			s.refuse(log, req, "bad_passphrase", gosrt.REJ_BADSECRET, "err", "wrong passphrase")
			return false
		}
	}
	actx, cancel := context.WithTimeout(ingest.WithRemote(ctx, req.RemoteAddr().String()), authTimeout)
	id, err := s.deps.Auth.Authorize(actx, key)
	cancel()
	if err != nil {
		if ctx.Err() != nil {
			req.Reject(gosrt.REJ_CLOSE)
			return false
		}
		reason, code := "unknown_key", gosrt.REJX_UNAUTHORIZED
		switch {
		case errors.Is(err, ingest.ErrKeyRateLimited):
			reason, code = "too_many_failures", gosrt.REJX_OVERLOAD
		case errors.Is(err, ingest.ErrLiveElsewhere):
			reason, code = "live_elsewhere", gosrt.REJX_CONFLICT
		case !errors.Is(err, ingest.ErrUnknownKey):
			reason, code = "auth_unavailable", gosrt.REJX_DOWN
		}
		s.refuse(log, req, reason, code, "key_hash", ids.Hash(key)[:8], "err", err)
		return false
	}
	c.id, c.log = id, log.With("stream", id)
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		req.Reject(gosrt.REJ_CLOSE)
		return false
	}
	if _, busy := s.publishers[id]; busy || s.deps.Hub.Publishing(media.StreamKey{Name: id, Rendition: media.RenditionSource}) {
		s.mu.Unlock()
		s.refuse(c.log, req, "already_publishing", gosrt.REJX_CONFLICT, "err", stream.ErrBusy)
		return false
	}
	s.publishers[id] = c
	s.conns[c] = struct{}{}
	c.admitted = time.Now()
	s.remotes[c.remote] = c.admitted
	s.mu.Unlock()
	return true
}

// release forgets c and its claim on its stream.
func (s *Server) release(c *conn) {
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.conns, c)
	if at, ok := s.remotes[c.remote]; ok && at.Equal(c.admitted) {
		delete(s.remotes, c.remote)
	}
	if s.publishers[c.id] == c {
		delete(s.publishers, c.id)
	}
}
