// Package rtsp is the RTSP ingest: encoders and cameras publish with
// ANNOUNCE/RECORD to rtsp://HOST:8554/live/<stream_key>, over TCP
// (interleaved) or UDP. Each accepted publisher becomes a publication of the
// stream's "source" rendition in the stream hub, exactly as an RTMP one
// does, so transcoding, packaging, recording and webhooks behave the same.
//
// Only publishing is offered: DESCRIBE and PLAY are refused (viewers watch
// over HLS). H.264, H.265 and AAC (RFC 3640) tracks are carried; others are
// skipped with a warning, and a session with none of them is refused.
package rtsp

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"strconv"
	"sync"
	"time"

	"github.com/bluenviron/gortsplib/v4"
	"github.com/bluenviron/gortsplib/v4/pkg/base"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// Config configures the RTSP server.
type Config struct {
	// Addr is the RTSP (TCP) address, e.g. ":8554".
	Addr string
	// UDPPort is the UDP port of RTP (RTCP uses the next one); it must be
	// even. 0 offers TCP transport only.
	UDPPort int
	// ReadTimeout closes a publisher that sends nothing for this long.
	ReadTimeout time.Duration
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

// Server accepts RTSP publishers.
type Server struct {
	cfg  Config
	deps Deps
	srv  *gortsplib.Server
	ln   net.Listener
	m    ingest.Metrics

	refusedLog *logx.Limiter

	mu       sync.Mutex
	sessions map[*gortsplib.ServerSession]*session
	releases map[*gortsplib.ServerConn]func() // connection -> its slot in Deps.Limits
}

// New validates cfg and opens the listening sockets (so a busy port is
// reported before anything starts); Run serves them.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Auth == nil || deps.Hub == nil {
		return nil, errors.New("rtsp ingest: Auth and Hub are required")
	}
	if cfg.ReadTimeout <= 0 {
		return nil, fmt.Errorf("rtsp ingest: read timeout must be positive, got %s", cfg.ReadTimeout)
	}
	if cfg.UDPPort < 0 || cfg.UDPPort > 65534 || cfg.UDPPort%2 != 0 {
		return nil, fmt.Errorf("rtsp ingest: the UDP port must be even, from 2 to 65534 (RTCP uses the next one), or 0 for TCP only; got %d", cfg.UDPPort)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	s := &Server{
		cfg: cfg, deps: deps,
		refusedLog: logx.NewLimiter(10 * time.Second),
		sessions:   map[*gortsplib.ServerSession]*session{},
		releases:   map[*gortsplib.ServerConn]func(){},
	}
	m, err := ingest.NewMetrics("rtsp", deps.Registerer)
	if err != nil {
		return nil, err
	}
	s.m = m
	s.srv = &gortsplib.Server{
		Handler:      s,
		RTSPAddress:  cfg.Addr,
		ReadTimeout:  cfg.ReadTimeout,
		WriteTimeout: 10 * time.Second,
		// Keep the listener, to tell the port an ":0" address got.
		Listen: func(network, address string) (net.Listener, error) {
			ln, err := net.Listen(network, address)
			s.ln = ln
			return ln, err
		},
	}
	if cfg.UDPPort != 0 {
		host, _, err := net.SplitHostPort(cfg.Addr)
		if err != nil {
			return nil, fmt.Errorf("rtsp ingest: address %q: %w", cfg.Addr, err)
		}
		s.srv.UDPRTPAddress = net.JoinHostPort(host, strconv.Itoa(cfg.UDPPort))
		s.srv.UDPRTCPAddress = net.JoinHostPort(host, strconv.Itoa(cfg.UDPPort+1))
	}
	if err := s.srv.Start(); err != nil {
		return nil, fmt.Errorf("rtsp ingest: listen on %s: %w", cfg.Addr, err)
	}
	return s, nil
}

// Run serves publishers until ctx is done, then closes every session and
// returns once the server has stopped.
func (s *Server) Run(ctx context.Context) error {
	s.deps.Log.Info("rtsp ingest listening", "addr", s.Addr().String(), "udp_rtp_port", s.cfg.UDPPort)
	errc := make(chan error, 1)
	go func() { errc <- s.srv.Wait() }()
	select {
	case <-ctx.Done():
		s.srv.Close()
		<-errc
		return nil
	case err := <-errc:
		return fmt.Errorf("rtsp ingest: %w", err)
	}
}

// Addr is the RTSP address the server listens on.
func (s *Server) Addr() net.Addr { return s.ln.Addr() }

// Close stops the server (Run does it too when ctx ends).
func (s *Server) Close() { s.srv.Close() }

// Disconnect closes the sessions whose key for stream id was accepted
// (ANNOUNCE), recording or not yet (a key reset or a deleted stream must
// stop those too), and reports whether there was any.
func (s *Server) Disconnect(id string) bool {
	s.mu.Lock()
	var close []*gortsplib.ServerSession
	for ss, ses := range s.sessions {
		if ses.id == id {
			close = append(close, ss)
		}
	}
	s.mu.Unlock()
	for _, ss := range close {
		ss.Close()
	}
	return len(close) > 0
}

func (s *Server) refuse(log *slog.Logger, reason string, attrs ...any) {
	s.m.Refused.WithLabelValues(reason).Inc()
	if ok, suppressed := s.refusedLog.Allow(); ok {
		log.Warn("rtsp publish refused", append([]any{"reason", reason, "suppressed_since_last", suppressed}, attrs...)...)
	}
}

// OnConnOpen implements gortsplib.ServerHandlerOnConnOpen: a connection
// over the limits is closed at once.
func (s *Server) OnConnOpen(ctx *gortsplib.ServerHandlerOnConnOpenCtx) {
	remote := ctx.Conn.NetConn().RemoteAddr().String()
	release, ok := s.deps.Limits.Acquire(remote)
	if !ok {
		s.refuse(s.deps.Log.With("remote", remote), ingest.RefusedLimit)
		ctx.Conn.Close()
		return
	}
	s.mu.Lock()
	s.releases[ctx.Conn] = release
	s.mu.Unlock()
}

// OnConnClose implements gortsplib.ServerHandlerOnConnClose.
func (s *Server) OnConnClose(ctx *gortsplib.ServerHandlerOnConnCloseCtx) {
	s.mu.Lock()
	release := s.releases[ctx.Conn]
	delete(s.releases, ctx.Conn)
	s.mu.Unlock()
	if release != nil {
		release()
	}
}

// OnSessionOpen implements gortsplib.ServerHandlerOnSessionOpen.
func (s *Server) OnSessionOpen(ctx *gortsplib.ServerHandlerOnSessionOpenCtx) {
	s.mu.Lock()
	s.sessions[ctx.Session] = &session{m: &s.m, log: s.deps.Log.With("remote", ctx.Conn.NetConn().RemoteAddr().String()),
		errLog: logx.NewLimiter(5 * time.Second)}
	s.mu.Unlock()
}

// OnSessionClose implements gortsplib.ServerHandlerOnSessionClose: a
// publisher's publication ends with its session.
func (s *Server) OnSessionClose(ctx *gortsplib.ServerHandlerOnSessionCloseCtx) {
	s.mu.Lock()
	ses := s.sessions[ctx.Session]
	delete(s.sessions, ctx.Session)
	s.mu.Unlock()
	if ses != nil {
		ses.end(ctx.Error)
	}
}

func (s *Server) session(ss *gortsplib.ServerSession) *session {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.sessions[ss]
}

// OnPacketsLost implements gortsplib.ServerHandlerOnPacketsLost: losses
// (UDP) are logged, rate-limited, instead of gortsplib's default logging.
func (s *Server) OnPacketsLost(ctx *gortsplib.ServerHandlerOnPacketsLostCtx) {
	if ses := s.session(ctx.Session); ses != nil {
		ses.warn("RTP packets lost", fmt.Errorf("%d lost", ctx.Lost))
	}
}

// OnDecodeError implements gortsplib.ServerHandlerOnDecodeError.
func (s *Server) OnDecodeError(ctx *gortsplib.ServerHandlerOnDecodeErrorCtx) {
	if ses := s.session(ctx.Session); ses != nil {
		ses.warn("undecodable RTP/RTCP packet", ctx.Error)
	}
}

// OnStreamWriteError implements gortsplib.ServerHandlerOnStreamWriteError
// (never expected: nothing is played).
func (s *Server) OnStreamWriteError(ctx *gortsplib.ServerHandlerOnStreamWriteErrorCtx) {
	if ses := s.session(ctx.Session); ses != nil {
		ses.warn("RTSP write error", ctx.Error)
	}
}

// OnDescribe implements gortsplib.ServerHandlerOnDescribe: playback is not
// offered.
func (s *Server) OnDescribe(ctx *gortsplib.ServerHandlerOnDescribeCtx) (*base.Response, *gortsplib.ServerStream, error) {
	s.refuse(s.deps.Log.With("remote", ctx.Conn.NetConn().RemoteAddr().String()), "play_not_offered")
	return &base.Response{StatusCode: base.StatusMethodNotAllowed}, nil, errors.New("RTSP playback is not offered; watch over HLS")
}

// OnAnnounce implements gortsplib.ServerHandlerOnAnnounce: the stream key
// is checked and the tracks are mapped before anything is published.
func (s *Server) OnAnnounce(ctx *gortsplib.ServerHandlerOnAnnounceCtx) (*base.Response, error) {
	ses := s.session(ctx.Session)
	if ses == nil {
		return &base.Response{StatusCode: base.StatusBadRequest}, errors.New("unknown session")
	}
	log := ses.log
	key, err := streamKeyFromPath(ctx.Path)
	if err != nil {
		s.refuse(log, "bad_path", "err", err)
		return &base.Response{StatusCode: base.StatusNotFound}, err
	}
	actx, cancel := context.WithTimeout(ingest.WithRemote(context.Background(), ctx.Conn.NetConn().RemoteAddr().String()), 5*time.Second)
	id, err := s.deps.Auth.Authorize(actx, key)
	cancel()
	if err != nil {
		reason, status := "unknown_key", base.StatusUnauthorized
		switch {
		case errors.Is(err, ingest.ErrKeyRateLimited):
			// RTSP has no 429: 453 Not Enough Bandwidth would mislead.
			reason, status = "too_many_failures", base.StatusForbidden
		case errors.Is(err, ingest.ErrLiveElsewhere):
			reason, status = "live_elsewhere", base.StatusForbidden
		case !errors.Is(err, ingest.ErrUnknownKey):
			reason, status = "auth_unavailable", base.StatusServiceUnavailable
		}
		s.refuse(log, reason, "key_hash", ids.Hash(key)[:8], "err", err)
		return &base.Response{StatusCode: status}, fmt.Errorf("refused: %w", err)
	}
	log = log.With("stream", id)
	if s.deps.Hub.Publishing(media.StreamKey{Name: id, Rendition: media.RenditionSource}) {
		s.refuse(log, "already_publishing")
		return &base.Response{StatusCode: base.StatusBadRequest}, stream.ErrBusy
	}
	tracks, err := ses.setup(ctx.Description, log)
	if err != nil {
		s.refuse(log, "bad_tracks", "err", err)
		return &base.Response{StatusCode: base.StatusUnsupportedMediaType}, err
	}
	s.mu.Lock() // Disconnect reads the id
	ses.id, ses.log, ses.tracks = id, log, tracks
	s.mu.Unlock()
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// OnSetup implements gortsplib.ServerHandlerOnSetup: only the publisher's
// own medias are set up.
func (s *Server) OnSetup(ctx *gortsplib.ServerHandlerOnSetupCtx) (*base.Response, *gortsplib.ServerStream, error) {
	if ctx.Session.State() != gortsplib.ServerSessionStatePreRecord {
		return &base.Response{StatusCode: base.StatusMethodNotAllowed}, nil, errors.New("RTSP playback is not offered; watch over HLS")
	}
	return &base.Response{StatusCode: base.StatusOK}, nil, nil
}

// OnRecord implements gortsplib.ServerHandlerOnRecord: the publication
// starts in the hub and the session's packets flow into it.
func (s *Server) OnRecord(ctx *gortsplib.ServerHandlerOnRecordCtx) (*base.Response, error) {
	ses := s.session(ctx.Session)
	if ses == nil || ses.id == "" {
		return &base.Response{StatusCode: base.StatusBadRequest}, errors.New("RECORD without ANNOUNCE")
	}
	pub, err := s.deps.Hub.Publish(media.StreamKey{Name: ses.id, Rendition: media.RenditionSource}, ses.tracks)
	if err != nil {
		s.refuse(ses.log, "already_publishing")
		return &base.Response{StatusCode: base.StatusBadRequest}, err
	}
	ses.start(pub, ctx.Session)
	s.m.Publishers.Inc()
	ses.log.Info("publisher connected", "protocol", "rtsp", "tracks", ingest.Describe(ses.tracks))
	return &base.Response{StatusCode: base.StatusOK}, nil
}

// streamKeyFromPath extracts KEY from "/live/KEY" (or "live/KEY"); query
// strings are not part of ctx.Path.
func streamKeyFromPath(path string) (string, error) { return ingest.StreamKeyFromPath("rtsp", path) }
