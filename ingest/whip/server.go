// Package whip is the WebRTC ingest (WHIP, RFC 9725): OBS 30+ and browsers
// publish with an SDP offer POSTed to /v1/whip, authorized by the stream
// key as a bearer token, or, with /v1/whip?stream=<id>, by another
// credential for that stream (an API key: Deps.StreamAuth). Each session becomes a publication of the
// stream's "source" rendition in the stream hub, exactly as an RTMP one
// does, so transcoding, packaging, recording and webhooks behave the same.
//
// The hub carries only what every HLS player can play, so what WebRTC
// brings is converted on the way in: Opus audio to AAC, and VP8 or VP9
// video to H.264 (H.264 goes through untouched, and is preferred in the
// answer whenever the offer has it). The conversions are Deps.Convert,
// which the app backs with FFmpeg.
//
// RTP is reassembled with a jitter buffer that reorders and waits a little
// for retransmissions (NACK); a frame still missing is skipped, and the
// video resumes at the next keyframe, which the session asks for with PLI.
// Media flows over one muxed UDP port (Config.UDPAddr) or per-session
// ephemeral ports; public IPs (NAT 1:1) and STUN servers are configurable.
package whip

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"mime"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/rtcutil"
)

// ResourcePath is where session resources live: ResourcePath + session id.
const ResourcePath = "/v1/whip/"

// maxOffer bounds an SDP offer.
const maxOffer = 64 << 10

// Config configures the WHIP ingest.
type Config struct {
	// UDPAddr is the one UDP address every session's media uses (ICE
	// muxing), e.g. ":8189". Empty gives each session ephemeral ports in
	// PortMin..PortMax (any port when both are 0).
	UDPAddr          string
	PortMin, PortMax uint16
	// PublicIPs are announced as host candidates in place of the local
	// ones (a server behind 1:1 NAT).
	PublicIPs []string
	// STUNServers ("stun:host:port") let the server learn its public
	// address when PublicIPs is not set.
	STUNServers []string
	// MaxSessions bounds sessions in total, MaxPerIP per remote address
	// (both counted before authentication).
	MaxSessions, MaxPerIP int
	// ConnectTimeout ends a session whose peer has not connected in time;
	// ReadTimeout one that sends no media for this long.
	ConnectTimeout, ReadTimeout time.Duration
	// KeyframeInterval, when positive, is how often H.264 that goes
	// through as it came should have a keyframe (the segment duration):
	// the publisher is asked for one (PLI) when it is overdue, since
	// browsers send keyframes rarely and segments are cut at keyframes.
	KeyframeInterval time.Duration
}

// AudioConverter converts a WebRTC audio track to AAC.
type AudioConverter interface {
	Track() media.Track
	Push(au *media.AccessUnit, emit func(*media.AccessUnit)) error
	Flush(emit func(*media.AccessUnit)) error
	Close()
}

// VideoConverter converts a WebRTC video track (VP8, VP9) to H.264.
type VideoConverter interface {
	Push(au *media.AccessUnit, emit func(*media.AccessUnit)) error
	Flush(emit func(*media.AccessUnit)) error
	// Track describes the H.264 output, from its first keyframe.
	Track(keyframe *media.AccessUnit) media.Track
	Close()
}

// Converters make the converters of a session.
type Converters interface {
	Audio(src media.Track) (AudioConverter, error)
	Video(src media.Track) (VideoConverter, error)
}

// Deps are the server's collaborators.
type Deps struct {
	Log  *slog.Logger
	Auth ingest.Authorizer
	// StreamAuth, when set, checks the bearer of an offer that names its
	// stream (?stream=<id>) instead of giving the stream key; without it
	// such offers are refused.
	StreamAuth ingest.StreamAuthorizer
	Hub        ingest.Hub
	Convert    Converters
	Registerer prometheus.Registerer
	// Net, when set, replaces the host's network (pion's vnet in tests);
	// Config.UDPAddr is then ignored.
	Net transport.Net
	// ClientIP, when set, finds a publisher's address for the per-IP
	// limit (trusted proxies); the default is the TCP peer.
	ClientIP func(*http.Request) string
}

// Server accepts WHIP publishers.
type Server struct {
	cfg  Config
	deps Deps
	api  *webrtc.API
	mux  ice.UDPMux // nil without Config.UDPAddr
	m    ingest.Metrics

	refusedLog *logx.Limiter

	mu       sync.Mutex
	closed   bool
	sessions map[string]*session // by session id
	byStream map[string]*session // stream id -> its session
	limits   *ingest.ConnLimiter // sessions in total and per address
	wg       sync.WaitGroup      // every session's goroutines
}

// New validates cfg and opens the muxed UDP socket, so a busy port is
// reported before anything starts; Run serves it.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Auth == nil || deps.Hub == nil || deps.Convert == nil {
		return nil, errors.New("whip ingest: Auth, Hub and Convert are required")
	}
	if cfg.ConnectTimeout <= 0 || cfg.ReadTimeout <= 0 {
		return nil, fmt.Errorf("whip ingest: connect and read timeouts must be positive, got %s and %s", cfg.ConnectTimeout, cfg.ReadTimeout)
	}
	if cfg.MaxSessions < 1 || cfg.MaxPerIP < 1 {
		return nil, fmt.Errorf("whip ingest: session limits must be positive, got %d in total and %d per IP", cfg.MaxSessions, cfg.MaxPerIP)
	}
	if cfg.PortMin > cfg.PortMax {
		return nil, fmt.Errorf("whip ingest: UDP port range %d-%d is empty", cfg.PortMin, cfg.PortMax)
	}
	for _, ip := range cfg.PublicIPs {
		if net.ParseIP(ip) == nil {
			return nil, fmt.Errorf("whip ingest: public IP %q is not an IP address", ip)
		}
	}
	for _, u := range cfg.STUNServers {
		if !strings.HasPrefix(u, "stun:") && !strings.HasPrefix(u, "stuns:") {
			return nil, fmt.Errorf("whip ingest: STUN server %q must start with stun: or stuns:", u)
		}
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	s := &Server{
		cfg: cfg, deps: deps,
		refusedLog: logx.NewLimiter(10 * time.Second),
		sessions:   map[string]*session{},
		byStream:   map[string]*session{},
		limits:     ingest.NewConnLimiter(cfg.MaxSessions, cfg.MaxPerIP),
	}
	m, err := ingest.NewMetrics("whip", deps.Registerer)
	if err != nil {
		return nil, err
	}
	s.m = m

	me := &webrtc.MediaEngine{}
	if err := registerCodecs(me); err != nil {
		return nil, fmt.Errorf("whip ingest: codecs: %w", err)
	}
	ir := &interceptor.Registry{}
	if err := webrtc.RegisterDefaultInterceptors(me, ir); err != nil {
		return nil, fmt.Errorf("whip ingest: interceptors: %w", err)
	}
	network := rtcutil.Network{PublicIPs: cfg.PublicIPs, Net: deps.Net, PortMin: cfg.PortMin, PortMax: cfg.PortMax, Log: deps.Log}
	if deps.Net == nil && cfg.UDPAddr != "" {
		pc, err := net.ListenPacket("udp", cfg.UDPAddr)
		if err != nil {
			return nil, fmt.Errorf("whip ingest: listen on UDP %s: %w", cfg.UDPAddr, err)
		}
		s.mux = ice.NewUniversalUDPMuxDefault(ice.UniversalUDPMuxParams{UDPConn: pc})
		network.UDPMux = s.mux
	}
	se, err := rtcutil.SettingEngine(network)
	if err != nil {
		return nil, fmt.Errorf("whip ingest: %w", err)
	}
	s.api = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	return s, nil
}

// UDPMux is the muxed UDP socket, nil without one: WHEP sessions share it.
func (s *Server) UDPMux() ice.UDPMux { return s.mux }

// UDPAddr is the muxed UDP address, nil without one.
func (s *Server) UDPAddr() net.Addr {
	if s.mux == nil {
		return nil
	}
	addrs := s.mux.GetListenAddresses()
	if len(addrs) == 0 {
		return nil
	}
	return addrs[0]
}

// Run serves until ctx is done, then ends every session and returns once
// all their goroutines have exited.
func (s *Server) Run(ctx context.Context) error {
	s.deps.Log.Info("whip ingest ready", "path", "/v1/whip", "udp", fmt.Sprint(s.UDPAddr()))
	<-ctx.Done()
	s.mu.Lock()
	s.closed = true
	all := make([]*session, 0, len(s.sessions))
	for _, ses := range s.sessions {
		all = append(all, ses)
	}
	s.mu.Unlock()
	for _, ses := range all {
		ses.close("the server is shutting down")
	}
	s.wg.Wait()
	if s.mux != nil {
		return s.mux.Close()
	}
	return nil
}

// Disconnect ends stream id's WHIP session, if it has one, and reports
// whether there was one.
func (s *Server) Disconnect(id string) bool {
	s.mu.Lock()
	ses := s.byStream[id]
	s.mu.Unlock()
	if ses != nil {
		ses.close("disconnected by the API")
	}
	return ses != nil
}

func (s *Server) refuse(w http.ResponseWriter, status int, code, reason, msg string) {
	s.m.Refused.WithLabelValues(reason).Inc()
	if ok, suppressed := s.refusedLog.Allow(); ok {
		s.deps.Log.Warn("whip publish refused", "reason", reason, "suppressed_since_last", suppressed)
	}
	rtcutil.WriteError(w, status, code, msg)
}

// ServeOptions answers a CORS preflight or a client asking what it may send.
func (s *Server) ServeOptions(w http.ResponseWriter, _ *http.Request) {
	rtcutil.CORS(w)
	w.Header().Set("Accept-Post", "application/sdp")
	w.WriteHeader(http.StatusNoContent)
}

// ServeOffer handles POST /v1/whip: it authorizes the stream key (or, with
// ?stream=<id>, the bearer for that stream), answers the offer and starts
// the session.
func (s *Server) ServeOffer(w http.ResponseWriter, r *http.Request) {
	rtcutil.CORS(w)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/sdp" {
		s.refuse(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "content_type",
			"send the SDP offer with Content-Type: application/sdp")
		return
	}
	key := rtcutil.Bearer(r)
	named, byStream := r.URL.Query()["stream"]
	if byStream && (len(named) != 1 || named[0] == "") {
		s.refuse(w, http.StatusBadRequest, "bad_request", "bad_stream",
			"give one live stream id: /v1/whip?stream=<id>")
		return
	}
	if byStream && s.deps.StreamAuth == nil {
		s.refuse(w, http.StatusBadRequest, "bad_request", "bad_stream",
			"this server takes the stream key as the bearer token, not ?stream=")
		return
	}
	if key == "" {
		w.Header().Set("WWW-Authenticate", `Bearer realm="whip"`)
		msg := "send the stream key as Authorization: Bearer <stream_key>"
		if byStream {
			msg = "send an API key as Authorization: Bearer <api key>"
		}
		s.refuse(w, http.StatusUnauthorized, "unauthorized", "no_key", msg)
		return
	}
	ip := rtcutil.RemoteIP(r)
	if s.deps.ClientIP != nil {
		ip = s.deps.ClientIP(r)
	}
	// The offer is read (within a deadline) and the key checked before a
	// session slot is taken: a client without a key, or one sending its
	// body slowly, must hold none.
	body, err := rtcutil.ReadOffer(w, r, maxOffer)
	if errors.Is(err, rtcutil.ErrOfferTooLarge) {
		s.refuse(w, http.StatusRequestEntityTooLarge, "too_large", "too_large", fmt.Sprintf("the SDP offer is larger than %d bytes", maxOffer))
		return
	}
	if err != nil {
		rtcutil.WriteError(w, http.StatusBadRequest, "bad_request", "reading the offer: "+err.Error())
		return
	}
	id, err := s.authorize(ingest.WithRemote(r.Context(), ip), key, named)
	var limited *ingest.ErrTooManyFailures
	if errors.As(err, &limited) {
		w.Header().Set("Retry-After", strconv.Itoa(int(math.Ceil(limited.RetryAfter.Seconds()))))
		s.refuse(w, http.StatusTooManyRequests, "too_many_requests", "too_many_failures", limited.Error())
		return
	}
	if errors.Is(err, ingest.ErrUnknownStream) {
		s.refuse(w, http.StatusNotFound, "not_found", "unknown_stream", "no such live stream")
		return
	}
	if errors.Is(err, ingest.ErrLiveElsewhere) {
		s.refuse(w, http.StatusConflict, "conflict", "live_elsewhere", err.Error())
		return
	}
	if errors.Is(err, ingest.ErrNotPermitted) {
		s.refuse(w, http.StatusForbidden, "forbidden", "forbidden", err.Error())
		return
	}
	if errors.Is(err, ingest.ErrUnknownKey) && byStream {
		w.Header().Set("WWW-Authenticate", `Bearer realm="whip", error="invalid_token"`)
		s.refuse(w, http.StatusUnauthorized, "unauthorized", "unknown_key", "invalid API key")
		return
	}
	if errors.Is(err, ingest.ErrUnknownKey) {
		w.Header().Set("WWW-Authenticate", `Bearer realm="whip", error="invalid_token"`)
		s.refuse(w, http.StatusUnauthorized, "unauthorized", "unknown_key", "unknown stream key")
		return
	}
	if err != nil {
		s.deps.Log.Error("whip: checking a stream key", "err", err)
		rtcutil.WriteError(w, http.StatusServiceUnavailable, "unavailable", "cannot check the stream key now; try again")
		return
	}
	release, ok := s.limits.Acquire(ip)
	if !ok {
		s.refuse(w, http.StatusServiceUnavailable, "too_many_sessions", "limit",
			"too many WebRTC sessions on this server or from your address; try again later")
		return
	}
	admitted := false
	defer func() {
		if !admitted {
			release()
		}
	}()
	skey := media.StreamKey{Name: id, Rendition: media.RenditionSource}
	if s.deps.Hub.Publishing(skey) || s.streamBusy(id) {
		s.refuse(w, http.StatusConflict, "conflict", "already_publishing",
			"this stream is already live from another publisher; stop that one first")
		return
	}
	ses, answer, err := s.newSession(id, ip, body, release)
	if err != nil {
		var bad badOffer
		if errors.As(err, &bad) {
			s.refuse(w, http.StatusBadRequest, "bad_offer", "bad_offer", bad.Error())
			return
		}
		if errors.Is(err, errBusy) {
			s.refuse(w, http.StatusConflict, "conflict", "already_publishing",
				"this stream is already live from another publisher; stop that one first")
			return
		}
		if errors.Is(err, errClosed) {
			rtcutil.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the server is shutting down")
			return
		}
		s.deps.Log.Error("whip: starting a session", "stream", id, "err", err)
		rtcutil.WriteError(w, http.StatusInternalServerError, "internal", "could not start the WebRTC session")
		return
	}
	admitted = true
	loc := ResourcePath + ses.id
	w.Header().Set("Location", loc)
	w.Header().Set("ETag", `"`+ses.id+`"`)
	w.Header().Set("Accept-Patch", "application/trickle-ice-sdpfrag")
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// authorize returns the stream an offer publishes to: the stream key's,
// or, when the offer names one (stream), that one if the bearer may
// publish to it.
func (s *Server) authorize(ctx context.Context, bearer string, stream []string) (string, error) {
	if len(stream) == 0 {
		return s.deps.Auth.Authorize(ctx, bearer)
	}
	if err := s.deps.StreamAuth.AuthorizeStream(ctx, stream[0], bearer); err != nil {
		return "", err
	}
	return stream[0], nil
}

// ServeResource handles PATCH (trickle ICE), DELETE (end) and OPTIONS on
// the session resource sid. The session URL is the credential: no bearer
// is needed, so whatever authorized the offer (stream key or API key) may
// end it.
func (s *Server) ServeResource(w http.ResponseWriter, r *http.Request, sid string) {
	rtcutil.CORS(w)
	if r.Method == http.MethodOptions {
		w.Header().Set("Accept-Patch", "application/trickle-ice-sdpfrag")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.mu.Lock()
	ses := s.sessions[sid]
	s.mu.Unlock()
	if ses == nil {
		rtcutil.WriteError(w, http.StatusNotFound, "not_found", "no such WHIP session (it ended, or never existed)")
		return
	}
	switch r.Method {
	case http.MethodDelete:
		ses.close("the publisher ended the session")
		w.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		ses.mu.Lock()
		pc := ses.pc
		ses.mu.Unlock()
		rtcutil.ServePatch(w, r, pc, &ses.trickles)
	default:
		w.Header().Set("Allow", "PATCH, DELETE, OPTIONS")
		rtcutil.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "a WHIP session takes PATCH, DELETE or OPTIONS")
	}
}

func (s *Server) streamBusy(id string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.byStream[id] != nil
}

var (
	errBusy   = errors.New("stream busy")
	errClosed = errors.New("server closed")
)

// badOffer is an offer the server cannot take; its text goes to the client.
type badOffer struct{ msg string }

func (b badOffer) Error() string { return b.msg }
