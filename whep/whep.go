// Package whep is real-time playback over WebRTC (WHEP, RFC 9725): a viewer
// POSTs an SDP offer to /v1/whep/<id> and receives the live stream's source
// with well under a second of delay, instead of HLS's several seconds.
//
// One feed per live stream reads the source from the stream hub and writes
// it to WebRTC tracks that every viewer of the stream shares: H.264 video
// as it came, and audio as Opus (an AAC source is converted once per
// stream, by Deps.Opus). A viewer that joins between keyframes sees video
// from the next one. The feed starts with the first viewer and stops with
// the last; when the broadcast ends, its viewers' sessions end.
package whep

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"mime"
	"net/http"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/ice/v4"
	"github.com/pion/interceptor"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/transport/v5"
	"github.com/pion/webrtc/v4"
	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/rtcutil"
	"github.com/shoal-video/shoal/internal/stream"
)

// maxOffer bounds an SDP offer.
const maxOffer = 64 << 10

// Errors an Authorizer returns.
var (
	ErrNotFound  = errors.New("no such live stream")
	ErrForbidden = errors.New("playback token missing, invalid or expired")
)

// Authorizer checks that token (the bearer, "" when none) may play live
// stream id from address ip: nil, ErrNotFound or ErrForbidden. expires is
// when the token stops being valid (zero: never); the session ends then.
type Authorizer func(ctx context.Context, id, token, ip string) (expires time.Time, err error)

// Hub is the part of the stream hub WHEP reads.
type Hub interface {
	Subscribe(key media.StreamKey) (*stream.Subscriber, error)
}

// AudioConverter converts a source's audio to Opus.
type AudioConverter interface {
	Track() media.Track
	Push(au *media.AccessUnit, emit func(*media.AccessUnit)) error
	Close()
}

// Config configures WHEP playback.
type Config struct {
	// PublicIPs and STUNServers as for the WHIP ingest.
	PublicIPs, STUNServers []string
	// MaxViewers bounds sessions in total, MaxPerIP per remote address.
	MaxViewers, MaxPerIP int
	// ConnectTimeout ends a session whose viewer has not connected in time.
	ConnectTimeout time.Duration
}

// Deps are the server's collaborators.
type Deps struct {
	Log       *slog.Logger
	Hub       Hub
	Authorize Authorizer
	// Opus makes the converter of an AAC source's audio.
	Opus       func(src media.Track) (AudioConverter, error)
	Registerer prometheus.Registerer
	// UDPMux, when set, carries the media (the WHIP ingest's port).
	UDPMux ice.UDPMux
	// Net, when set, replaces the host's network (pion's vnet in tests).
	Net transport.Net
	// ClientIP, when set, finds a viewer's address (trusted proxies);
	// the default is the TCP peer.
	ClientIP func(*http.Request) string
}

// Server serves WHEP viewers.
type Server struct {
	cfg  Config
	deps Deps
	api  *webrtc.API

	viewersG prometheus.Gauge
	refused  *prometheus.CounterVec

	mu       sync.Mutex
	closed   bool
	feeds    map[string]*feed
	sessions map[string]*viewer
	limits   *ingest.ConnLimiter // viewers in total and per address
	wg       sync.WaitGroup
}

// New validates cfg and sets up the WebRTC stack.
func New(cfg Config, deps Deps) (*Server, error) {
	if deps.Hub == nil || deps.Authorize == nil || deps.Opus == nil {
		return nil, errors.New("whep: Hub, Authorize and Opus are required")
	}
	if cfg.MaxViewers < 1 || cfg.MaxPerIP < 1 || cfg.ConnectTimeout <= 0 {
		return nil, fmt.Errorf("whep: limits and the connect timeout must be positive, got %d, %d and %s", cfg.MaxViewers, cfg.MaxPerIP, cfg.ConnectTimeout)
	}
	if deps.Log == nil {
		deps.Log = slog.Default()
	}
	s := &Server{cfg: cfg, deps: deps, feeds: map[string]*feed{}, sessions: map[string]*viewer{},
		limits:   ingest.NewConnLimiter(cfg.MaxViewers, cfg.MaxPerIP),
		viewersG: prometheus.NewGauge(prometheus.GaugeOpts{Name: "shoal_whep_viewers", Help: "WebRTC (WHEP) viewers connected now."}),
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{Name: "shoal_whep_refused_total",
			Help: "WHEP sessions refused, by reason."}, []string{"reason"}),
	}
	if deps.Registerer != nil {
		for _, c := range []prometheus.Collector{s.viewersG, s.refused} {
			if err := deps.Registerer.Register(c); err != nil {
				return nil, fmt.Errorf("whep: register metrics: %w", err)
			}
		}
	}
	me := &webrtc.MediaEngine{}
	fb := []webrtc.RTCPFeedback{{Type: "nack"}, {Type: "nack", Parameter: "pli"}, {Type: "ccm", Parameter: "fir"}}
	for i, profile := range []string{"42e01f", "42001f", "4d001f", "64001f"} {
		if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
			MimeType: webrtc.MimeTypeH264, ClockRate: 90000, RTCPFeedback: fb,
			SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profile,
		}, PayloadType: webrtc.PayloadType(102 + 2*i)}, webrtc.RTPCodecTypeVideo); err != nil {
			return nil, err
		}
	}
	if err := me.RegisterCodec(webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1",
	}, PayloadType: 111}, webrtc.RTPCodecTypeAudio); err != nil {
		return nil, err
	}
	ir := &interceptor.Registry{}
	if err := webrtc.ConfigureNack(me, ir); err != nil {
		return nil, err
	}
	if err := webrtc.ConfigureRTCPReports(ir); err != nil {
		return nil, err
	}
	se, err := rtcutil.SettingEngine(rtcutil.Network{PublicIPs: cfg.PublicIPs, Net: deps.Net, UDPMux: deps.UDPMux, Log: deps.Log})
	if err != nil {
		return nil, fmt.Errorf("whep: %w", err)
	}
	s.api = webrtc.NewAPI(webrtc.WithMediaEngine(me), webrtc.WithInterceptorRegistry(ir), webrtc.WithSettingEngine(se))
	return s, nil
}

// Run serves until ctx is done, then ends every session and feed and
// returns once all their goroutines have exited.
func (s *Server) Run(ctx context.Context) error {
	<-ctx.Done()
	s.mu.Lock()
	s.closed = true
	var all []*viewer
	for _, v := range s.sessions {
		all = append(all, v)
	}
	s.mu.Unlock()
	for _, v := range all {
		v.close("the server is shutting down")
	}
	s.wg.Wait()
	return nil
}

func (s *Server) refuse(w http.ResponseWriter, status int, code, reason, msg string) {
	s.refused.WithLabelValues(reason).Inc()
	rtcutil.WriteError(w, status, code, msg)
}

// ServeOptions answers a CORS preflight.
func (s *Server) ServeOptions(w http.ResponseWriter, _ *http.Request) {
	rtcutil.CORS(w)
	w.Header().Set("Accept-Post", "application/sdp")
	w.WriteHeader(http.StatusNoContent)
}

// ServeOffer handles POST /v1/whep/<id>.
func (s *Server) ServeOffer(w http.ResponseWriter, r *http.Request, id string) {
	rtcutil.CORS(w)
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/sdp" {
		s.refuse(w, http.StatusUnsupportedMediaType, "unsupported_media_type", "content_type", "send the SDP offer with Content-Type: application/sdp")
		return
	}
	body, err := rtcutil.ReadOffer(w, r, maxOffer)
	if errors.Is(err, rtcutil.ErrOfferTooLarge) {
		s.refuse(w, http.StatusRequestEntityTooLarge, "too_large", "too_large", fmt.Sprintf("the SDP offer is larger than %d bytes", maxOffer))
		return
	}
	if err != nil {
		rtcutil.WriteError(w, http.StatusBadRequest, "bad_request", "reading the offer: "+err.Error())
		return
	}
	ip := rtcutil.RemoteIP(r)
	if s.deps.ClientIP != nil {
		ip = s.deps.ClientIP(r)
	}
	expires, err := s.deps.Authorize(r.Context(), id, rtcutil.Bearer(r), ip)
	switch {
	case errors.Is(err, ErrNotFound):
		s.refuse(w, http.StatusNotFound, "not_found", "not_found", "no such live stream")
		return
	case errors.Is(err, ErrForbidden):
		s.refuse(w, http.StatusForbidden, "forbidden", "forbidden",
			"this stream needs a playback token: send it as Authorization: Bearer <token>")
		return
	case err != nil:
		s.deps.Log.Error("whep: authorizing a viewer", "stream", id, "err", err)
		rtcutil.WriteError(w, http.StatusServiceUnavailable, "unavailable", "cannot check playback now; try again")
		return
	}
	release, ok := s.limits.Acquire(ip)
	if !ok {
		s.refuse(w, http.StatusServiceUnavailable, "too_many_sessions", "limit", "too many WebRTC viewers on this server or from your address; try again later")
		return
	}
	v, answer, err := s.newViewer(r.Context(), id, ip, body, expires, release) // frees the admission on failure
	if err != nil {
		var bad badRequest
		switch {
		case errors.As(err, &bad):
			s.refuse(w, bad.status, bad.code, bad.code, bad.msg)
		case errors.Is(err, errClosed):
			rtcutil.WriteError(w, http.StatusServiceUnavailable, "unavailable", "the server is shutting down")
		default:
			s.deps.Log.Error("whep: starting a session", "stream", id, "err", err)
			rtcutil.WriteError(w, http.StatusInternalServerError, "internal", "could not start the WebRTC session")
		}
		return
	}
	w.Header().Set("Location", "/v1/whep/"+id+"/"+v.id)
	w.Header().Set("ETag", `"`+v.id+`"`)
	w.Header().Set("Accept-Patch", "application/trickle-ice-sdpfrag")
	w.Header().Set("Content-Type", "application/sdp")
	w.WriteHeader(http.StatusCreated)
	_, _ = io.WriteString(w, answer)
}

// ServeResource handles PATCH (trickle ICE), DELETE and OPTIONS on a
// viewer's session.
func (s *Server) ServeResource(w http.ResponseWriter, r *http.Request, id, sid string) {
	rtcutil.CORS(w)
	if r.Method == http.MethodOptions {
		w.Header().Set("Accept-Patch", "application/trickle-ice-sdpfrag")
		w.WriteHeader(http.StatusNoContent)
		return
	}
	s.mu.Lock()
	v := s.sessions[sid]
	s.mu.Unlock()
	if v == nil || v.feed.id != id {
		rtcutil.WriteError(w, http.StatusNotFound, "not_found", "no such WHEP session (it ended, or never existed)")
		return
	}
	switch r.Method {
	case http.MethodDelete:
		v.close("the viewer ended the session")
		w.WriteHeader(http.StatusOK)
	case http.MethodPatch:
		v.mu.Lock()
		pc := v.pc
		v.mu.Unlock()
		rtcutil.ServePatch(w, r, pc, &v.trickles)
	default:
		w.Header().Set("Allow", "PATCH, DELETE, OPTIONS")
		rtcutil.WriteError(w, http.StatusMethodNotAllowed, "method_not_allowed", "a WHEP session takes PATCH, DELETE or OPTIONS")
	}
}

var errClosed = errors.New("server closed")

// badRequest is a refusal whose text goes to the viewer.
type badRequest struct {
	status    int
	code, msg string
}

func (b badRequest) Error() string { return b.msg }

// feed is one live stream's source written to tracks its viewers share.
type feed struct {
	s       *Server
	id      string
	log     *slog.Logger
	sub     *stream.Subscriber
	video   *webrtc.TrackLocalStaticRTP // nil: no H.264 video
	audio   *webrtc.TrackLocalStaticRTP // nil: no audio
	viewers map[*viewer]struct{}        // under s.mu
	stop    context.CancelFunc
	warn    *logx.Limiter
}

// rtpMTU is the largest RTP packet the feed writes (pion's own default).
const rtpMTU = 1200

// feedForLocked returns the running feed of id, starting one (and its
// goroutine) for the first viewer. Under s.mu, with s.closed false.
func (s *Server) feedForLocked(ctx context.Context, id string) (*feed, error) {
	if f := s.feeds[id]; f != nil {
		return f, nil
	}
	sub, err := s.deps.Hub.Subscribe(media.StreamKey{Name: id, Rendition: media.RenditionSource})
	if err != nil {
		return nil, badRequest{http.StatusNotFound, "not_live", "the stream is not live now"}
	}
	// Subscribe queued the track list: a done context still reads it.
	done, cancel := context.WithCancel(ctx)
	cancel()
	ev, err := sub.Next(done)
	if err != nil || ev.Tracks == nil {
		sub.Close()
		return nil, badRequest{http.StatusNotFound, "not_live", "the stream is not live now"}
	}
	f := &feed{s: s, id: id, log: s.deps.Log.With("stream", id), sub: sub, viewers: map[*viewer]struct{}{},
		warn: logx.NewLimiter(10 * time.Second)}
	var conv AudioConverter
	vIdx, aIdx := -1, -1
	for i, t := range ev.Tracks {
		switch {
		case t.Codec == media.CodecH264 && vIdx < 0 && media.Unplayable(t) == "":
			// (Video browsers cannot decode is left out: audio only.)
			vIdx = i
			f.video, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
				SDPFmtpLine: "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profileLevelID(t.SPS)}, "video", "shoal")
		case !t.IsVideo() && aIdx < 0:
			if conv, err = s.deps.Opus(t); err != nil {
				f.log.Warn("whep: the audio cannot be converted to Opus; video only", "err", err)
				err = nil
				continue
			}
			aIdx = i
			f.audio, err = webrtc.NewTrackLocalStaticRTP(webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2}, "audio", "shoal")
		}
		if err != nil {
			break
		}
	}
	if err != nil || (f.video == nil && f.audio == nil) {
		if conv != nil {
			conv.Close()
		}
		sub.Close()
		if err != nil {
			return nil, err
		}
		return nil, badRequest{http.StatusUnsupportedMediaType, "unsupported_codec", "real-time playback needs H.264 video browsers decode, or audio; this stream has neither"}
	}
	// The feed outlives the request that started it; stop ends it.
	fctx, stop := context.WithCancel(context.WithoutCancel(ctx))
	f.stop = stop
	s.feeds[id] = f
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f.run(fctx, ev.Tracks, vIdx, aIdx, conv)
	}()
	return f, nil
}

// profileLevelID is the SDP profile-level-id of an SPS, or Constrained
// Baseline 3.1 when it is too short.
func profileLevelID(sps []byte) string {
	if len(sps) < 4 {
		return "42e01f"
	}
	return fmt.Sprintf("%02x%02x%02x", sps[1], sps[2], sps[3])
}

// sameTracks tells whether a restarted publisher's tracks are what the
// feed's tracks were negotiated for: the same codecs in the same places,
// the same H.264 profile and the same audio configuration.
func sameTracks(a, b []media.Track) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i].Codec != b[i].Codec || !bytes.Equal(a[i].AudioConfig, b[i].AudioConfig) ||
			profileLevelID(a[i].SPS)[:2] != profileLevelID(b[i].SPS)[:2] {
			return false
		}
	}
	return true
}

// rtpWriter packetizes one track's frames with RTP timestamps taken from
// their own times, kept going forward across publisher restarts.
type rtpWriter struct {
	track *webrtc.TrackLocalStaticRTP
	pack  rtp.Packetizer
	// off is added to a frame's time to make its RTP timestamp; last is
	// the last timestamp written, step the usual gap between frames.
	off, last, step int64
	rebase, started bool
}

func newRTPWriter(track *webrtc.TrackLocalStaticRTP, payloader rtp.Payloader, clock uint32, step int64) *rtpWriter {
	if track == nil {
		return nil
	}
	return &rtpWriter{track: track, step: step,
		pack: rtp.NewPacketizer(rtpMTU, 0, 0, payloader, rtp.NewRandomSequencer(), clock)}
}

// write sends a frame at time t (in the track's clock).
func (w *rtpWriter) write(payload []byte, t int64) error {
	if !w.started || w.rebase {
		if w.started {
			w.off = w.last + w.step - t // continue one frame after the last
		} else {
			w.off = -t
		}
		w.started, w.rebase = true, false
	}
	ts := t + w.off
	if ts <= w.last && w.last != 0 {
		ts = w.last + 1 // never back: a timestamp identifies a frame
	}
	w.last = ts
	for _, p := range w.pack.Packetize(payload, 0) {
		p.Timestamp = uint32(ts)
		if err := w.track.WriteRTP(p); err != nil && !errors.Is(err, io.ErrClosedPipe) {
			return err
		}
	}
	return nil
}

// run writes the source to the tracks until it ends, its tracks change or
// the last viewer leaves; then every viewer left is disconnected.
func (f *feed) run(ctx context.Context, tracks []media.Track, vIdx, aIdx int, conv AudioConverter) {
	defer f.sub.Close()
	defer func() {
		if conv != nil {
			conv.Close()
		}
	}()
	video := newRTPWriter(f.video, &codecs.H264Payloader{}, 90000, 3000)
	audio := newRTPWriter(f.audio, &codecs.OpusPayloader{}, 48000, 960)
	reason := "the broadcast ended"
	for {
		ev, err := f.sub.Next(ctx)
		if err != nil {
			break
		}
		if ev.Tracks != nil {
			if !sameTracks(tracks, ev.Tracks) {
				reason = "the publisher came back with other tracks: start again"
				break
			}
			tracks = ev.Tracks // a reconnect: timestamps start over
			if video != nil {
				video.rebase = true
			}
			continue
		}
		au := ev.AU
		switch au.Track {
		case vIdx:
			if video == nil {
				continue
			}
			data, err := annexB(tracks[vIdx], au)
			if err != nil {
				continue
			}
			if err := video.write(data, au.DTS); err != nil {
				f.warnf("writing video", err)
			}
		case aIdx:
			if audio == nil || conv == nil {
				continue
			}
			// The converter keeps its own output timeline going forward
			// across restarts.
			if err := conv.Push(au, func(out *media.AccessUnit) {
				if len(out.Payload) == 0 {
					return
				}
				if err := audio.write(out.Payload[0], out.PTS); err != nil {
					f.warnf("writing audio", err)
				}
			}); err != nil {
				f.warnf("converting audio", err)
			}
		}
	}
	f.s.mu.Lock()
	if f.s.feeds[f.id] == f {
		delete(f.s.feeds, f.id)
	}
	var left []*viewer
	for v := range f.viewers {
		left = append(left, v)
	}
	f.s.mu.Unlock()
	for _, v := range left {
		v.close(reason)
	}
}

func (f *feed) warnf(msg string, err error) {
	if ok, n := f.warn.Allow(); ok {
		f.log.Warn("whep: "+msg, "err", err, "suppressed_since_last", n)
	}
}

// annexB is an access unit with start codes, the track's parameter sets
// first on keyframes that lack them.
func annexB(t media.Track, au *media.AccessUnit) ([]byte, error) {
	nalus := au.Payload
	if au.Keyframe {
		hasSPS := false
		for _, n := range nalus {
			if len(n) > 0 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
				hasSPS = true
			}
		}
		if !hasSPS && len(t.SPS) > 0 && len(t.PPS) > 0 {
			nalus = append([][]byte{t.SPS, t.PPS}, nalus...)
		}
	}
	return h264.AnnexB(nalus).Marshal()
}

// viewer is one WHEP session.
type viewer struct {
	s       *Server
	id      string
	feed    *feed
	log     *slog.Logger
	created time.Time
	// expires ends the session when the viewer's playback token expires
	// (zero: never).
	expires time.Time
	release func() // frees the viewer's admission slot

	once      sync.Once
	done      chan struct{}
	stopc     chan string // asks watch to end the session
	connected chan struct{}
	connOnce  sync.Once
	trickles  rtcutil.Trickle

	mu     sync.Mutex
	pc     *webrtc.PeerConnection
	closed bool
}

// goLocked starts f as one of the server's goroutines unless the server is
// shutting down (then it reports false).
func (s *Server) goLocked(f func()) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return false
	}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		f()
	}()
	return true
}

// newViewer answers offer with the feed's tracks. The viewer's admission
// slot (release) is freed on failure, or when the session ends.
func (s *Server) newViewer(ctx context.Context, id, ip string, offer []byte, expires time.Time, release func()) (*viewer, string, error) {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		release()
		return nil, "", errClosed
	}
	f, err := s.feedForLocked(ctx, id)
	if err != nil {
		s.mu.Unlock()
		release()
		return nil, "", err
	}
	v := &viewer{s: s, id: rtcutil.NewSessionID(), feed: f, created: time.Now(), expires: expires, release: release,
		done: make(chan struct{}), stopc: make(chan string, 1), connected: make(chan struct{})}
	v.log = f.log.With("session", v.id[:8], "remote", ip)
	f.viewers[v] = struct{}{}
	s.sessions[v.id] = v
	s.viewersG.Inc() // close decrements it, whatever happens next
	s.mu.Unlock()

	answer, err := v.negotiate(ctx, offer)
	v.mu.Lock()
	ended := v.closed
	v.mu.Unlock()
	if ended {
		// The feed ended while negotiating (the broadcast ended): whatever
		// negotiate said, the stream is not live.
		err = badRequest{http.StatusNotFound, "not_live", "the stream is not live now"}
	}
	if err == nil && !s.goLocked(v.watch) {
		err = errClosed
	}
	if err != nil {
		v.close("")
		return nil, "", err
	}
	v.log.Info("whep viewer joined")
	return v, answer, nil
}

func (v *viewer) negotiate(ctx context.Context, offer []byte) (string, error) {
	var iceServers []webrtc.ICEServer
	if len(v.s.cfg.STUNServers) > 0 {
		iceServers = []webrtc.ICEServer{{URLs: v.s.cfg.STUNServers}}
	}
	pc, err := v.s.api.NewPeerConnection(webrtc.Configuration{ICEServers: iceServers})
	if err != nil {
		return "", err
	}
	v.mu.Lock()
	if v.closed { // the feed ended meanwhile
		v.mu.Unlock()
		_ = pc.Close()
		return "", badRequest{http.StatusNotFound, "not_live", "the stream is not live now"}
	}
	v.pc = pc
	v.mu.Unlock()
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			v.connOnce.Do(func() { close(v.connected) })
		case webrtc.PeerConnectionStateFailed, webrtc.PeerConnectionStateClosed:
			select {
			case v.stopc <- "the connection to the viewer ended":
			default:
			}
		}
	})
	if err := v.trickles.Offer(offer); err != nil {
		return "", badRequest{http.StatusBadRequest, "bad_offer", err.Error()}
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		return "", badRequest{http.StatusBadRequest, "bad_offer", "malformed or unusable SDP offer: " + err.Error()}
	}
	for _, t := range []*webrtc.TrackLocalStaticRTP{v.feed.video, v.feed.audio} {
		if t == nil {
			continue
		}
		sender, err := pc.AddTrack(t)
		if err != nil {
			return "", badRequest{http.StatusBadRequest, "bad_offer", "the offer cannot receive this stream: " + err.Error()}
		}
		// RTCP from the viewer (NACK, receiver reports) until the session
		// ends.
		if !v.s.goLocked(func() {
			buf := make([]byte, 1500)
			for {
				if _, _, err := sender.Read(buf); err != nil {
					return
				}
			}
		}) {
			return "", errClosed
		}
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", badRequest{http.StatusBadRequest, "bad_offer", "cannot answer the offer (it must receive H.264 video and/or Opus audio): " + err.Error()}
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", badRequest{http.StatusBadRequest, "bad_offer", "cannot answer the offer: " + err.Error()}
	}
	select {
	case <-gathered:
	case <-ctx.Done():
		return "", ctx.Err()
	case <-time.After(5 * time.Second):
	}
	return pc.LocalDescription().SDP, nil
}

// watch ends a session whose viewer never connects, whose connection
// failed or whose playback token expired.
func (v *viewer) watch() {
	t := time.NewTimer(v.s.cfg.ConnectTimeout)
	defer t.Stop()
	var expiry <-chan time.Time
	if !v.expires.IsZero() {
		et := time.NewTimer(time.Until(v.expires))
		defer et.Stop()
		expiry = et.C
	}
	connected := v.connected
	for {
		select {
		case <-v.done:
			return
		case reason := <-v.stopc:
			v.close(reason)
		case <-connected:
			connected = nil
			t.Stop()
		case <-t.C:
			v.close(fmt.Sprintf("the viewer did not connect within %s", v.s.cfg.ConnectTimeout))
		case <-expiry:
			v.close("the playback token expired")
		}
	}
}

// close ends the session once; the feed stops with its last viewer.
func (v *viewer) close(reason string) {
	v.once.Do(func() {
		close(v.done)
		s := v.s
		s.mu.Lock()
		delete(s.sessions, v.id)
		delete(v.feed.viewers, v)
		last := len(v.feed.viewers) == 0
		if last && s.feeds[v.feed.id] == v.feed {
			delete(s.feeds, v.feed.id)
		}
		s.viewersG.Dec()
		s.mu.Unlock()
		v.release()
		if last {
			v.feed.stop()
		}
		v.mu.Lock()
		v.closed = true
		pc := v.pc
		v.mu.Unlock()
		if pc != nil {
			_ = pc.Close()
		}
		if reason != "" {
			v.log.Info("whep viewer left", "reason", reason)
		}
	})
}
