package whip

import (
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/pion/rtcp"
	"github.com/pion/rtp"
	"github.com/pion/rtp/codecs"
	"github.com/pion/webrtc/v4"
	"github.com/pion/webrtc/v4/pkg/media/samplebuilder"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/rtcutil"
	"github.com/shoal-video/shoal/internal/stream"
)

// Codecs the server takes, in the order it prefers them: H.264 needs no
// conversion. Every H.264 profile a publisher may offer is listed, since
// answers match profiles (OBS sends High).
var (
	videoFeedback = []webrtc.RTCPFeedback{{Type: "goog-remb"}, {Type: "ccm", Parameter: "fir"}, {Type: "nack"}, {Type: "nack", Parameter: "pli"}}
	videoCodecs   = []webrtc.RTPCodecParameters{
		h264Codec(106, "42e01f"), h264Codec(102, "42001f"), h264Codec(127, "4d001f"), h264Codec(112, "64001f"),
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP8, ClockRate: 90000, RTCPFeedback: videoFeedback}, PayloadType: 96},
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeVP9, ClockRate: 90000, SDPFmtpLine: "profile-id=0", RTCPFeedback: videoFeedback}, PayloadType: 98},
	}
	audioCodecs = []webrtc.RTPCodecParameters{
		{RTPCodecCapability: webrtc.RTPCodecCapability{MimeType: webrtc.MimeTypeOpus, ClockRate: 48000, Channels: 2, SDPFmtpLine: "minptime=10;useinbandfec=1"}, PayloadType: 111},
	}
)

func h264Codec(pt webrtc.PayloadType, profile string) webrtc.RTPCodecParameters {
	return webrtc.RTPCodecParameters{RTPCodecCapability: webrtc.RTPCodecCapability{
		MimeType: webrtc.MimeTypeH264, ClockRate: 90000,
		SDPFmtpLine:  "level-asymmetry-allowed=1;packetization-mode=1;profile-level-id=" + profile,
		RTCPFeedback: videoFeedback,
	}, PayloadType: pt}
}

// rankOffered orders the codecs an offer has in common with the server
// (with the offer's payload types and parameters, which the answer must
// use) by the server's preference; codecs it does not take are dropped.
// Empty when the offer has none of them.
func rankOffered(offered, prefs []webrtc.RTPCodecParameters) []webrtc.RTPCodecParameters {
	rank := func(c webrtc.RTPCodecParameters) int {
		partial := -1
		for i, p := range prefs {
			if !strings.EqualFold(c.MimeType, p.MimeType) {
				continue
			}
			if !strings.EqualFold(c.MimeType, webrtc.MimeTypeH264) || h264Profile(c.SDPFmtpLine) == h264Profile(p.SDPFmtpLine) {
				return i
			}
			if partial < 0 {
				partial = len(prefs) + i // another H.264 profile: after the listed ones
			}
		}
		return partial
	}
	var out []webrtc.RTPCodecParameters
	var ranks []int
	for _, c := range offered {
		r := rank(c)
		if r < 0 {
			continue
		}
		i := len(out)
		for i > 0 && ranks[i-1] > r {
			i--
		}
		out = slices.Insert(out, i, c)
		ranks = slices.Insert(ranks, i, r)
	}
	return out
}

// h264Profile is the profile of an H.264 fmtp line (profile-level-id
// without its level), "" when it has none.
func h264Profile(fmtpLine string) string {
	for _, kv := range strings.Split(fmtpLine, ";") {
		k, v, _ := strings.Cut(strings.TrimSpace(kv), "=")
		if strings.EqualFold(k, "profile-level-id") && len(v) == 6 {
			return strings.ToLower(v[:4])
		}
	}
	return ""
}

// registerCodecs puts the codecs above in a media engine.
func registerCodecs(me *webrtc.MediaEngine) error {
	for _, c := range videoCodecs {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeVideo); err != nil {
			return err
		}
	}
	for _, c := range audioCodecs {
		if err := me.RegisterCodec(c, webrtc.RTPCodecTypeAudio); err != nil {
			return err
		}
	}
	return nil
}

// Jitter buffer: how long a missing packet is waited for (its
// retransmission) before the frame it belongs to is given up.
const (
	videoMaxLate = 400 * time.Millisecond
	audioMaxLate = 200 * time.Millisecond
	// pliInterval spaces keyframe requests while one is awaited.
	pliInterval = time.Second
)

// session is one WHIP publisher.
type session struct {
	s        *Server
	id       string
	streamID string
	log      *slog.Logger
	pc       *webrtc.PeerConnection
	created  time.Time

	done      chan struct{}
	stopc     chan string // asks watch to close the session (from a reader holding mu)
	closeOnce sync.Once
	warn      *logx.Limiter

	lastRTP   atomic.Int64 // unix nanoseconds of the last RTP packet
	connected atomic.Bool
	needKey   atomic.Bool
	bytes     atomic.Int64
	videoSSRC atomic.Uint32
	// passthrough is set for H.264 (published as it came); lastKey is
	// when its last keyframe arrived (unix nanoseconds).
	passthrough atomic.Bool
	lastKey     atomic.Int64
	readers     sync.WaitGroup // the track readers, which flush their converters as they end
	trickles    rtcutil.Trickle

	mu        sync.Mutex
	release   func() // frees the admission slot
	closed    bool
	wantVideo bool
	wantAudio bool
	audio     AudioConverter // set when the answer accepted audio
	pub       *stream.Publisher
	vIdx      int // track indexes in the publication, -1: none
	aIdx      int
	t0        time.Time // arrival of the first media of the session
	haveT0    bool
	// early is the AAC converted before the video's first keyframe
	// started the publication; it goes out then (bounded).
	early []*media.AccessUnit
}

// maxEarly bounds the audio kept while the video's first keyframe is
// awaited (about 5 s of AAC frames).
const maxEarly = 240

// newSession answers offer and registers the session for stream id.
// release frees the session's admission slot; it is called when the
// session ends, or at once when it cannot start (it may be called again).
func (s *Server) newSession(id, ip string, offer []byte, release func()) (*session, string, error) {
	ses := &session{
		s: s, id: rtcutil.NewSessionID(), streamID: id, created: time.Now(), release: release,
		done: make(chan struct{}), stopc: make(chan string, 1), warn: logx.NewLimiter(5 * time.Second),
		vIdx: -1, aIdx: -1,
	}
	ses.log = s.deps.Log.With("stream", id, "session", ses.id[:8], "remote", ip)
	s.mu.Lock()
	switch {
	case s.closed:
		s.mu.Unlock()
		return nil, "", errClosed
	case s.byStream[id] != nil:
		s.mu.Unlock()
		return nil, "", errBusy
	}
	s.sessions[ses.id] = ses
	s.byStream[id] = ses
	s.mu.Unlock()

	answer, err := ses.negotiate(offer)
	if err != nil {
		ses.close("")
		return nil, "", err
	}
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		ses.close("")
		return nil, "", errClosed
	}
	s.wg.Add(1)
	s.mu.Unlock()
	go func() {
		defer s.wg.Done()
		ses.watch()
	}()
	ses.log.Info("whip session started", "video", ses.wantVideo, "audio", ses.wantAudio)
	return ses, answer, nil
}

// negotiate sets up the peer connection and returns the SDP answer, with
// every candidate in it (the server does not trickle).
func (ses *session) negotiate(offer []byte) (string, error) {
	var ice []webrtc.ICEServer
	if len(ses.s.cfg.STUNServers) > 0 {
		ice = []webrtc.ICEServer{{URLs: ses.s.cfg.STUNServers}}
	}
	pc, err := ses.s.api.NewPeerConnection(webrtc.Configuration{ICEServers: ice})
	if err != nil {
		return "", fmt.Errorf("peer connection: %w", err)
	}
	ses.mu.Lock()
	ses.pc = pc
	ses.mu.Unlock()
	pc.OnConnectionStateChange(func(st webrtc.PeerConnectionState) {
		switch st {
		case webrtc.PeerConnectionStateConnected:
			ses.connected.Store(true)
			ses.log.Info("whip peer connected")
		case webrtc.PeerConnectionStateFailed:
			ses.stop("the connection to the publisher failed (ICE or DTLS)")
		case webrtc.PeerConnectionStateClosed:
			ses.stop("the publisher closed the connection")
		}
	})
	pc.OnTrack(func(tr *webrtc.TrackRemote, _ *webrtc.RTPReceiver) {
		// A reader starts only while neither the server nor the session
		// is closing: finish waits for the readers once the session is
		// closed, and Run for the server's goroutines.
		ses.s.mu.Lock()
		ses.mu.Lock()
		closing := ses.s.closed || ses.closed
		if !closing {
			ses.s.wg.Add(1)
			ses.readers.Add(1)
		}
		ses.mu.Unlock()
		ses.s.mu.Unlock()
		if closing {
			return
		}
		go func() {
			defer ses.s.wg.Done()
			defer ses.readers.Done()
			ses.readTrack(tr)
		}()
	})
	if err := ses.trickles.Offer(offer); err != nil {
		return "", badOffer{err.Error()}
	}
	if err := pc.SetRemoteDescription(webrtc.SessionDescription{Type: webrtc.SDPTypeOffer, SDP: string(offer)}); err != nil {
		return "", badOffer{"malformed or unusable SDP offer: " + err.Error()}
	}
	for _, t := range pc.GetTransceivers() {
		prefs := videoCodecs
		if t.Kind() == webrtc.RTPCodecTypeAudio {
			prefs = audioCodecs
		}
		ranked := rankOffered(t.Receiver().GetParameters().Codecs, prefs)
		if len(ranked) == 0 {
			err = errors.New("no codec in common")
		} else {
			err = t.SetCodecPreferences(ranked)
		}
		if err != nil {
			return "", badOffer{"the offer has no codec this server takes (H.264, VP8 or VP9 video; Opus audio)"}
		}
	}
	answer, err := pc.CreateAnswer(nil)
	if err != nil {
		return "", badOffer{"cannot answer the offer: " + err.Error()}
	}
	gathered := webrtc.GatheringCompletePromise(pc)
	if err := pc.SetLocalDescription(answer); err != nil {
		return "", badOffer{"cannot answer the offer: " + err.Error()}
	}
	select {
	case <-gathered:
	case <-time.After(5 * time.Second):
		ses.log.Warn("whip: gathering ICE candidates took more than 5 s; answering with those found")
	}
	if err := ses.accepted(pc); err != nil {
		return "", err
	}
	return pc.LocalDescription().SDP, nil
}

// accepted records which media the answer accepted and opens the audio
// converter, so that the publication's tracks are known before media flows.
func (ses *session) accepted(pc *webrtc.PeerConnection) error {
	for _, t := range pc.GetTransceivers() {
		r := t.Receiver()
		if r == nil || t.Direction() == webrtc.RTPTransceiverDirectionInactive || t.Mid() == "" {
			continue
		}
		params := r.GetParameters()
		if len(params.Codecs) == 0 {
			continue
		}
		switch t.Kind() {
		case webrtc.RTPCodecTypeVideo:
			ses.wantVideo = true
		case webrtc.RTPCodecTypeAudio:
			ses.wantAudio = true
		}
	}
	if !ses.wantVideo && !ses.wantAudio {
		return badOffer{"the offer sends no media this server takes (H.264, VP8 or VP9 video; Opus audio)"}
	}
	if ses.wantAudio {
		conv, err := ses.s.deps.Convert.Audio(media.Track{Codec: media.CodecOpus, ClockRate: 48000, SampleRate: 48000, Channels: 2})
		if err != nil {
			return fmt.Errorf("opening the audio converter: %w", err)
		}
		ses.mu.Lock()
		ses.audio = conv
		ses.mu.Unlock()
	}
	return nil
}

// stop asks for the session to end without waiting (safe with mu held).
func (ses *session) stop(reason string) {
	select {
	case ses.stopc <- reason:
	default:
	}
}

// close ends the session once: the publication waits for a reconnect (the
// hub's grace period), the peer connection closes, the slot is freed.
func (ses *session) close(reason string) {
	ses.closeOnce.Do(func() {
		close(ses.done)
		s := ses.s
		s.mu.Lock()
		delete(s.sessions, ses.id)
		if s.byStream[ses.streamID] == ses {
			delete(s.byStream, ses.streamID)
		}
		s.mu.Unlock()
		ses.mu.Lock()
		pc, release := ses.pc, ses.release
		ses.closed = true
		ses.mu.Unlock()
		if pc != nil {
			_ = pc.Close() // ends the track readers
		}
		if release != nil {
			release()
		}
		if reason != "" {
			ses.log.Info("whip session ended", "reason", reason)
		}
	})
}

// watch runs for the life of the session: it ends a session that never
// connects or goes silent, asks for keyframes while one is awaited and
// keeps the bitrate gauge, then flushes and ends the publication.
func (ses *session) watch() {
	t := time.NewTicker(250 * time.Millisecond)
	defer t.Stop()
	var lastPLI time.Time
	var lastBytes int64
	lastRate := time.Now()
	for {
		select {
		case <-ses.done:
			ses.finish()
			return
		case reason := <-ses.stopc:
			ses.close(reason)
		case now := <-t.C:
			switch {
			case !ses.connected.Load() && now.Sub(ses.created) > ses.s.cfg.ConnectTimeout:
				ses.close(fmt.Sprintf("the publisher did not connect within %s", ses.s.cfg.ConnectTimeout))
				continue
			case ses.connected.Load():
				last := ses.lastRTP.Load()
				if last == 0 {
					last = ses.created.UnixNano()
				}
				if now.Sub(time.Unix(0, last)) > ses.s.cfg.ReadTimeout {
					ses.close(fmt.Sprintf("no media for %s", ses.s.cfg.ReadTimeout))
					continue
				}
			}
			// A keyframe is asked for a little before it is due (the
			// request takes a round trip and an encode), so that segments
			// are cut close to the segment duration.
			overdue, every := false, pliInterval
			if ki := ses.s.cfg.KeyframeInterval; ki > 0 && ses.passthrough.Load() {
				early := min(300*time.Millisecond, ki/4)
				if lk := ses.lastKey.Load(); lk != 0 && now.Sub(time.Unix(0, lk)) >= ki-early {
					overdue = true
				}
				every = min(pliInterval, ki/2)
			}
			if (ses.needKey.Load() || overdue) && now.Sub(lastPLI) >= every {
				if ssrc := ses.videoSSRC.Load(); ssrc != 0 {
					lastPLI = now
					_ = ses.pc.WriteRTCP([]rtcp.Packet{&rtcp.PictureLossIndication{MediaSSRC: ssrc}})
				}
			}
			if d := now.Sub(lastRate); d >= 2*time.Second {
				b := ses.bytes.Load()
				ses.mu.Lock()
				live := ses.pub != nil
				ses.mu.Unlock()
				if live {
					ses.s.m.Bitrate.WithLabelValues(ses.streamID).Set(float64(b-lastBytes) * 8 / d.Seconds())
				}
				lastBytes, lastRate = b, now
			}
		}
	}
}

// finish runs after close: once the track readers have ended (flushing the
// video converter), the audio converter flushes too, and the publication
// then waits for a reconnect.
func (ses *session) finish() {
	ses.readers.Wait()
	ses.mu.Lock()
	defer ses.mu.Unlock()
	if ses.audio != nil {
		if ses.pub != nil && ses.aIdx >= 0 {
			_ = ses.audio.Flush(ses.writeAudioLocked)
		}
		ses.audio.Close()
		ses.audio = nil
	}
	if ses.pub != nil {
		ses.pub.Close()
		ses.pub = nil
		ses.s.m.Publishers.Dec()
		ses.s.m.Bitrate.DeleteLabelValues(ses.streamID)
	}
}

// readTrack reassembles one remote track's RTP into access units until the
// track ends.
func (ses *session) readTrack(tr *webrtc.TrackRemote) {
	mime := strings.ToLower(tr.Codec().MimeType)
	clock := tr.Codec().ClockRate
	var depack rtp.Depacketizer
	maxLate := videoMaxLate
	var codec media.Codec
	switch mime {
	case strings.ToLower(webrtc.MimeTypeH264):
		depack, codec = &codecs.H264Packet{}, media.CodecH264
	case strings.ToLower(webrtc.MimeTypeVP8):
		depack, codec = &codecs.VP8Packet{}, media.CodecVP8
	case strings.ToLower(webrtc.MimeTypeVP9):
		depack, codec = &codecs.VP9Packet{}, media.CodecVP9
	case strings.ToLower(webrtc.MimeTypeOpus):
		depack, codec, maxLate = &codecs.OpusPacket{}, media.CodecOpus, audioMaxLate
	default:
		ses.warnf("a track of an unexpected codec is ignored", errors.New(mime))
		return
	}
	if codec.IsVideo() {
		ses.videoSSRC.Store(uint32(tr.SSRC()))
		ses.needKey.Store(true)
		ses.passthrough.Store(codec == media.CodecH264)
	}
	sb := samplebuilder.New(1024, depack, clock, samplebuilder.WithMaxTimeDelay(maxLate))
	tl := timeline{clock: int64(clock)}
	var conv VideoConverter
	defer func() {
		if conv != nil {
			ses.mu.Lock()
			if ses.pub != nil {
				_ = conv.Flush(ses.writeVideoLocked)
			}
			ses.mu.Unlock()
			conv.Close()
		}
	}()
	for {
		pkt, _, err := tr.ReadRTP()
		if err != nil {
			// The connection closed. The jitter buffer still holds the
			// last frame, which no next packet completed; it is dropped:
			// pion's SampleBuilder.Flush can spin for a second on
			// crafted sequence numbers (found by FuzzRTPToFrames).
			return
		}
		ses.lastRTP.Store(time.Now().UnixNano())
		ses.bytes.Add(int64(len(pkt.Payload)))
		ses.s.m.Bytes.Add(float64(len(pkt.Payload)))
		sb.Push(pkt)
		for smp := sb.Pop(); smp != nil; smp = sb.Pop() {
			var arrival time.Duration // only the first sample's is used
			if !tl.started {
				arrival = ses.arrival()
			}
			pts := tl.pts(smp.PacketTimestamp, arrival)
			switch codec {
			case media.CodecOpus:
				ses.onAudio(pts, smp.Data)
			case media.CodecH264:
				ses.onH264(pts, smp.Data, smp.PrevDroppedPackets > 0)
			default:
				conv = ses.onVP(codec, conv, pts, smp.Data, smp.PrevDroppedPackets > 0)
			}
		}
	}
}

// arrival is the time since the session's first media, which anchors each
// track's RTP clock on one timeline.
func (ses *session) arrival() time.Duration {
	ses.mu.Lock()
	defer ses.mu.Unlock()
	now := time.Now()
	if !ses.haveT0 {
		ses.t0, ses.haveT0 = now, true
	}
	return now.Sub(ses.t0)
}

// timeline maps a track's 32-bit RTP timestamps to PTS on the session's
// timeline: the first sample is placed at its arrival, later ones follow
// their RTP clock (unwrapped).
type timeline struct {
	clock   int64
	started bool
	last    uint32
	ext     int64 // unwrapped timestamp of last
	offset  int64 // PTS of ext == 0
}

func (t *timeline) pts(ts uint32, arrival time.Duration) int64 {
	if !t.started {
		t.started, t.last = true, ts
		t.offset = media.Ticks(arrival, int(t.clock))
		return t.offset
	}
	t.ext += int64(int32(ts - t.last)) // forward or (reordered) backward, across wraps
	t.last = ts
	return t.offset + t.ext
}

func (ses *session) warnf(msg string, err error) {
	if ok, n := ses.warn.Allow(); ok {
		ses.log.Warn("whip: "+msg, "err", err, "suppressed_since_last", n)
	}
}

// lost handles a video frame the jitter buffer gave up on: the video
// resumes at the next keyframe, which is asked for now.
func (ses *session) lost() {
	if !ses.needKey.Swap(true) {
		ses.warnf("video packets lost; waiting for a keyframe", errors.New("frame incomplete"))
	}
}

// parseH264Frame splits a depacketized H.264 frame (Annex-B) into NAL
// units and finds whether it is a keyframe and its parameter sets.
func parseH264Frame(data []byte) (nalus h264.AnnexB, key bool, sps, pps []byte, err error) {
	if err := nalus.Unmarshal(data); err != nil {
		return nil, false, nil, nil, err
	}
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeIDR:
			key = true
		case h264.NALUTypeSPS:
			sps = n
		case h264.NALUTypePPS:
			pps = n
		}
	}
	return nalus, key, sps, pps, nil
}

// onH264 publishes an H.264 frame as it came (Annex-B from the
// depacketizer).
func (ses *session) onH264(pts int64, data []byte, dropped bool) {
	nalus, key, sps, pps, err := parseH264Frame(data)
	if err != nil {
		ses.warnf("undecodable H.264 frame", err)
		ses.lost()
		return
	}
	if dropped {
		ses.lost()
	}
	if key {
		ses.lastKey.Store(time.Now().UnixNano())
	}
	if ses.needKey.Load() {
		if !key {
			return
		}
		ses.needKey.Store(false)
	}
	au := &media.AccessUnit{PTS: pts, DTS: pts, Keyframe: key, Payload: nalus}
	ses.mu.Lock()
	defer ses.mu.Unlock()
	if ses.pub == nil {
		if !key || sps == nil || pps == nil {
			ses.needKey.Store(true)
			return
		}
		tr := media.Track{Codec: media.CodecH264, ClockRate: 90000, SPS: sps, PPS: pps}
		var info h264.SPS
		if err := info.Unmarshal(sps); err == nil {
			tr.Width, tr.Height = info.Width(), info.Height()
		}
		if !ses.publishLocked(&tr, au.PTS) {
			return
		}
	}
	ses.writeVideoLocked(au)
}

// onVP converts a VP8 or VP9 frame to H.264, opening the converter at the
// first keyframe (which gives the picture size).
func (ses *session) onVP(codec media.Codec, conv VideoConverter, pts int64, frame []byte, dropped bool) VideoConverter {
	if len(frame) == 0 {
		return conv
	}
	if dropped {
		ses.lost()
	}
	var key bool
	var w, h int
	if codec == media.CodecVP8 {
		var err error
		if key, w, h, err = vp8Keyframe(frame); err != nil {
			ses.warnf("undecodable VP8 frame", err)
			ses.lost()
			return conv
		}
	} else {
		// VP9 (draft-ietf-payload-vp9): a keyframe has profile bits then
		// frame_type 0; the decoder learns the size itself.
		key = len(frame) > 0 && frame[0]&0xc0 == 0x80 && frame[0]&0x04 == 0
	}
	if ses.needKey.Load() {
		if !key {
			return conv
		}
		ses.needKey.Store(false)
	}
	if conv == nil {
		c, err := ses.s.deps.Convert.Video(media.Track{Codec: codec, ClockRate: 90000, Width: w, Height: h})
		if err != nil {
			ses.log.Error("whip: opening the video converter; the session ends", "err", err)
			ses.stop("the video could not be converted")
			return nil
		}
		conv = c
	}
	au := &media.AccessUnit{PTS: pts, DTS: pts, Keyframe: key, Payload: [][]byte{frame}}
	ses.mu.Lock()
	defer ses.mu.Unlock()
	err := conv.Push(au, func(out *media.AccessUnit) {
		if ses.pub == nil {
			if !out.Keyframe {
				return
			}
			tr := conv.Track(out)
			if !ses.publishLocked(&tr, out.PTS) {
				return
			}
		}
		ses.writeVideoLocked(out)
	})
	if err != nil {
		ses.log.Error("whip: converting the video failed; the session ends", "err", err)
		ses.stop("the video could not be converted")
	}
	return conv
}

// onAudio converts an Opus frame to AAC. Before the video's first keyframe
// (when there is video) audio has nowhere to go and is dropped.
func (ses *session) onAudio(pts int64, data []byte) {
	ses.mu.Lock()
	defer ses.mu.Unlock()
	if ses.audio == nil {
		return
	}
	err := ses.audio.Push(&media.AccessUnit{PTS: pts, DTS: pts, Keyframe: true, Payload: [][]byte{data}}, func(out *media.AccessUnit) {
		if ses.pub == nil && ses.wantVideo {
			if len(ses.early) >= maxEarly {
				ses.early = ses.early[1:]
			}
			ses.early = append(ses.early, out)
			return
		}
		if ses.pub == nil && !ses.publishLocked(nil, 0) {
			return
		}
		ses.writeAudioLocked(out)
	})
	if err != nil {
		ses.log.Error("whip: converting the audio failed; the session ends", "err", err)
		ses.stop("the audio could not be converted")
	}
}

// publishLocked starts the publication with video (nil: audio only) and
// the AAC track when audio was accepted; keyPTS is the video keyframe's
// time (90 kHz). A refusal (another publisher won
// the race) ends the session.
func (ses *session) publishLocked(video *media.Track, keyPTS int64) bool {
	if ses.closed {
		return false
	}
	var tracks []media.Track
	ses.vIdx, ses.aIdx = -1, -1
	if video != nil {
		ses.vIdx = len(tracks)
		tracks = append(tracks, *video)
	}
	if ses.audio != nil {
		ses.aIdx = len(tracks)
		tracks = append(tracks, ses.audio.Track())
	}
	pub, err := ses.s.deps.Hub.Publish(media.StreamKey{Name: ses.streamID, Rendition: media.RenditionSource}, tracks)
	if err != nil {
		if errors.Is(err, stream.ErrBusy) {
			ses.s.m.Refused.WithLabelValues("already_publishing").Inc()
		}
		ses.log.Warn("whip: publishing refused; the session ends", "err", err)
		ses.stop("publishing refused: " + err.Error())
		return false
	}
	ses.pub = pub
	ses.s.m.Publishers.Inc()
	ses.log.Info("whip publishing", "tracks", fmt.Sprint(ingest.Describe(tracks)))
	// The audio that came with the awaited keyframe goes out from the
	// keyframe's time on.
	if video != nil && ses.aIdx >= 0 {
		from := keyPTS * int64(ses.audio.Track().ClockRate) / 90000 // the keyframe's time in audio ticks
		for _, au := range ses.early {
			if au.PTS >= from {
				ses.writeAudioLocked(au)
			}
		}
	}
	ses.early = nil
	return true
}

func (ses *session) writeVideoLocked(au *media.AccessUnit) {
	if ses.pub == nil || ses.vIdx < 0 {
		return
	}
	au.Track = ses.vIdx
	ses.pub.Write(au)
}

func (ses *session) writeAudioLocked(au *media.AccessUnit) {
	if ses.pub == nil || ses.aIdx < 0 {
		return
	}
	au.Track = ses.aIdx
	ses.pub.Write(au)
}
