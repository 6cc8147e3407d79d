package rtmp

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/amf0"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/gortmplib/pkg/message"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// preauthLimit bounds RTMP messages and chunks before the stream key is
// accepted: the handshake's commands (connect, createStream, publish) are a
// few hundred bytes.
const preauthLimit = 64 << 10

// maxConsecutiveErrors is how many undecodable messages in a row end a
// publisher: a few bad frames are skipped, a broken byte stream is not.
const maxConsecutiveErrors = 50

func (s *Server) handle(ctx context.Context, conn net.Conn) {
	log := s.deps.Log.With("remote", conn.RemoteAddr().String())
	err := s.publish(ctx, conn, log)
	switch {
	case err == nil, ctx.Err() != nil:
	case errors.Is(err, io.EOF), errors.Is(err, net.ErrClosed):
		log.Debug("rtmp connection closed", "err", err)
	default:
		log.Info("rtmp connection ended", "err", err)
	}
}

func (s *Server) refuse(log *slog.Logger, reason string, attrs ...any) {
	s.m.Refused.WithLabelValues(reason).Inc()
	if ok, suppressed := s.refusedLog.Allow(); ok {
		log.Warn("rtmp publish refused", append([]any{"reason", reason, "suppressed_since_last", suppressed}, attrs...)...)
	}
}

// reject answers the publish (or play) command with an error status whose
// code and description the encoder shows: "Server error: <description>"
// in ffmpeg and OBS's log. gortmplib's RejectAction always says
// "authentication failed", which misleads for a wrong path or a busy
// stream.
func reject(sc *gortmplib.ServerConn, code, description string) error {
	return sc.Write(&message.CommandAMF0{
		ChunkStreamID:   5,
		MessageStreamID: 0x1000000,
		Name:            "onStatus",
		Arguments: []any{
			nil,
			amf0.Object{
				{Key: "level", Value: "error"},
				{Key: "code", Value: code},
				{Key: "description", Value: description},
			},
		},
	})
}

func (s *Server) publish(ctx context.Context, conn net.Conn, log *slog.Logger) error {
	// Every read moves the deadline: a publisher is closed once it sends
	// nothing for ReadTimeout, also while its tracks are read (2 s of
	// media), and until its key is accepted within preauthTime at most.
	dl := newDeadlineReader(conn, s.cfg.ReadTimeout, preauthTime(s.cfg.ReadTimeout))
	dl.extend()

	// Until the stream key is accepted, no message or chunk may be larger
	// than preauthLimit (guard).
	g := newGuard(dl, preauthLimit)
	sc := &gortmplib.ServerConn{RW: struct {
		io.Reader
		io.Writer
	}{g, conn}}
	err := sc.Initialize()
	if err == nil {
		err = sc.AcceptConn()
	}
	if err != nil {
		if g.refused != nil {
			s.refuse(log, g.reason, "err", g.refused)
			return g.refused
		}
		return fmt.Errorf("handshake or connect: %w", err)
	}
	if !sc.Publish {
		s.refuse(log, "play_not_offered")
		const msg = "RTMP playback is not offered; watch over HLS"
		_ = reject(sc, "NetStream.Play.Failed", msg)
		return errors.New(msg)
	}
	key, err := streamKeyFromPath(sc.URL.Path)
	if err != nil {
		s.refuse(log, "bad_path", "err", err)
		_ = reject(sc, "NetStream.Publish.BadName", "wrong path: "+err.Error())
		return err
	}
	actx, cancel := context.WithTimeout(ingest.WithRemote(ctx, conn.RemoteAddr().String()), 5*time.Second)
	id, err := s.deps.Auth.Authorize(actx, key)
	cancel()
	if err != nil {
		reason, code, msg := "unknown_key", "NetStream.Publish.Unauthorized", "authentication failed: unknown stream key (copy it again from the dashboard, or reset it)"
		switch {
		case errors.Is(err, ingest.ErrKeyRateLimited):
			reason, msg = "too_many_failures", "authentication failed: "+err.Error()
		case errors.Is(err, ingest.ErrLiveElsewhere):
			reason, code, msg = "live_elsewhere", "NetStream.Publish.BadName", err.Error()
		case !errors.Is(err, ingest.ErrUnknownKey):
			reason, code, msg = "auth_unavailable", "NetStream.Publish.Failed", "the server cannot check stream keys now; try again shortly"
		}
		s.refuse(log, reason, "key_hash", keyHint(key), "err", err)
		_ = reject(sc, code, msg)
		return fmt.Errorf("refused: %w", err)
	}
	g.authorized()
	dl.authorized()
	dl.extend() // Authorize may have taken a while: the answer is written now
	log = log.With("stream", id)
	hubKey := media.StreamKey{Name: id, Rendition: media.RenditionSource}
	if s.deps.Hub.Publishing(hubKey) {
		s.refuse(log, "already_publishing")
		_ = reject(sc, "NetStream.Publish.BadName", "this stream is already live from another publisher; stop that one first")
		return stream.ErrBusy
	}

	// From the key's acceptance on, Disconnect (a key reset, a deleted
	// stream) reaches this connection, also while its tracks are read.
	s.mu.Lock()
	if s.publishers[id] == nil {
		s.publishers[id] = map[net.Conn]struct{}{}
	}
	s.publishers[id][conn] = struct{}{}
	s.mu.Unlock()
	defer func() {
		s.mu.Lock()
		delete(s.publishers[id], conn)
		if len(s.publishers[id]) == 0 {
			delete(s.publishers, id)
		}
		s.mu.Unlock()
	}()
	r := &gortmplib.Reader{Conn: sc}
	if err := r.Initialize(); err != nil {
		return fmt.Errorf("reading tracks: %w", err)
	}
	in := &input{log: log, s: s, stream: id}
	tracks, err := in.setup(r)
	if err != nil {
		return err
	}
	pub, err := s.deps.Hub.Publish(hubKey, tracks)
	if err != nil {
		s.refuse(log, "already_publishing")
		return err
	}
	in.pub = pub
	s.m.Publishers.Inc()
	log.Info("publisher connected", "tracks", ingest.Describe(tracks))
	defer func() {
		s.m.Publishers.Dec()
		s.m.Bitrate.DeleteLabelValues(id)
		pub.Close()
		log.Info("publisher disconnected")
	}()

	errLog := logx.NewLimiter(5 * time.Second)
	consecutive := 0
	for {
		err := r.Read()
		if err == nil {
			consecutive = 0
			in.tick()
			continue
		}
		if isConnError(err) || ctx.Err() != nil {
			return err
		}
		consecutive++
		if consecutive >= maxConsecutiveErrors {
			return fmt.Errorf("too many undecodable messages in a row, last: %w", err)
		}
		if ok, n := errLog.Allow(); ok {
			log.Warn("skipping undecodable RTMP message", "err", err, "suppressed_since_last", n)
		}
	}
}

// preauthTime is how long a connection may take to have its stream key
// accepted (handshake, connect, publish), however it trickles its bytes:
// ReadTimeout, or 10 s when that is shorter.
func preauthTime(readTimeout time.Duration) time.Duration {
	return max(readTimeout, 10*time.Second)
}

// deadlineReader moves conn's deadline (reads and writes) to timeout from
// now before each read, and before authorized no later than preauth after
// it was made.
type deadlineReader struct {
	conn    net.Conn
	timeout time.Duration
	cap     time.Time // zero: none
	now     func() time.Time
}

func newDeadlineReader(conn net.Conn, timeout, preauth time.Duration) *deadlineReader {
	return newDeadlineReaderAt(conn, timeout, preauth, time.Now)
}

// newDeadlineReaderAt is newDeadlineReader on the clock now.
func newDeadlineReaderAt(conn net.Conn, timeout, preauth time.Duration, now func() time.Time) *deadlineReader {
	return &deadlineReader{conn: conn, timeout: timeout, cap: now().Add(preauth), now: now}
}

// authorized lifts the pre-authorization cap.
func (d *deadlineReader) authorized() { d.cap = time.Time{} }

func (d *deadlineReader) extend() {
	t := d.now().Add(d.timeout)
	if !d.cap.IsZero() && t.After(d.cap) {
		t = d.cap
	}
	_ = d.conn.SetDeadline(t)
}

func (d *deadlineReader) Read(p []byte) (int, error) {
	d.extend()
	return d.conn.Read(p)
}

func isConnError(err error) bool {
	var ne net.Error
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, net.ErrClosed) ||
		errors.Is(err, os.ErrDeadlineExceeded) || errors.As(err, &ne)
}

// input converts gortmplib callbacks into access units for one publisher.
type input struct {
	log    *slog.Logger
	s      *Server
	stream string
	pub    *stream.Publisher

	windowStart time.Time
	windowBytes int
}

func (in *input) write(au *media.AccessUnit) {
	n := au.Size()
	in.windowBytes += n
	in.s.m.Bytes.Add(float64(n))
	if in.pub != nil {
		in.pub.Write(au)
	}
}

// tick updates the per-stream bitrate gauge about once a second.
func (in *input) tick() {
	now := time.Now()
	if in.windowStart.IsZero() {
		in.windowStart = now
		return
	}
	if el := now.Sub(in.windowStart); el >= time.Second {
		in.s.m.Bitrate.WithLabelValues(in.stream).Set(float64(in.windowBytes*8) / el.Seconds())
		in.windowStart, in.windowBytes = now, 0
	}
}

// unwrapper extends a track's RTMP timestamps (32-bit milliseconds, which
// wrap after 49.7 days, or soon after start for an encoder that begins
// high) into a timeline that keeps going forward: the hub and the
// packager drop frames whose time goes back.
type unwrapper struct {
	have bool
	last uint32 // the last timestamp, as sent
	ext  int64  // its extended value, milliseconds
}

// shift is what to add to a time t of the track (its timestamp, in
// milliseconds, as gortmplib gives it) to put it on the extended timeline.
// A step from the top quarter of the 32-bit range to the bottom one is the
// wrap; any other step is taken as it comes (a jump forward, a step back).
func (u *unwrapper) shift(t time.Duration) time.Duration {
	ms := uint32(int64(t / time.Millisecond))
	switch {
	case !u.have:
		u.have, u.ext = true, int64(ms)
	case u.last >= 3<<30 && ms < 1<<30:
		u.ext += int64(ms) + 1<<32 - int64(u.last)
	default:
		u.ext += int64(ms) - int64(u.last)
	}
	u.last = ms
	return time.Duration(u.ext)*time.Millisecond - t.Truncate(time.Millisecond)
}

// onVideo returns the callback of video track idx.
func (in *input) onVideo(idx int, isKey func([][]byte) bool) gortmplib.OnDataH26xFunc {
	var u unwrapper
	return func(pts, dts time.Duration, au [][]byte) {
		d := u.shift(dts)
		in.write(&media.AccessUnit{
			Track: idx, PTS: media.Ticks(pts+d, 90000), DTS: media.Ticks(dts+d, 90000),
			Keyframe: isKey(au), Payload: au,
		})
	}
}

// setup maps the publisher's tracks to media tracks and registers callbacks.
// Tracks of codecs Shoal does not carry are skipped with a warning.
func (in *input) setup(r *gortmplib.Reader) ([]media.Track, error) {
	var tracks []media.Track
	for _, t := range r.Tracks() {
		idx := len(tracks)
		switch c := t.Codec.(type) {
		case *codecs.H264:
			mt := media.Track{Codec: media.CodecH264, ClockRate: 90000, SPS: c.SPS, PPS: c.PPS}
			var sps h264.SPS
			if err := sps.Unmarshal(c.SPS); err == nil {
				mt.Width, mt.Height = sps.Width(), sps.Height()
			}
			tracks = append(tracks, mt)
			r.OnDataH264(t, in.onVideo(idx, h264.IsRandomAccess))
		case *codecs.H265:
			mt := media.Track{Codec: media.CodecH265, ClockRate: 90000, VPS: c.VPS, SPS: c.SPS, PPS: c.PPS}
			var sps h265.SPS
			if err := sps.Unmarshal(c.SPS); err == nil {
				mt.Width, mt.Height = sps.Width(), sps.Height()
			}
			tracks = append(tracks, mt)
			r.OnDataH265(t, in.onVideo(idx, h265.IsRandomAccess))
		case *codecs.MPEG4Audio:
			cfg, err := c.Config.Marshal()
			if err != nil {
				return nil, fmt.Errorf("AAC config: %w", err)
			}
			rate := c.Config.SampleRate
			if rate <= 0 {
				return nil, fmt.Errorf("AAC config: bad sample rate %d", rate)
			}
			ch := int(c.Config.ChannelConfig)
			if ch == 7 {
				ch = 8
			}
			tracks = append(tracks, media.Track{
				Codec: media.CodecAAC, ClockRate: rate, AudioConfig: cfg, SampleRate: rate, Channels: ch,
			})
			// FLV times are in milliseconds: frames are timed by their
			// sample count instead (ingest.AACClock).
			samples := 1024
			if c.Config.FrameLengthFlag {
				samples = 960
			}
			clock := ingest.NewAACClock(samples)
			var u unwrapper
			r.OnDataMPEG4Audio(t, func(pts time.Duration, au []byte) {
				ts, ok := clock.Time(media.Ticks(pts+u.shift(pts), rate))
				if !ok {
					return
				}
				in.write(&media.AccessUnit{Track: idx, PTS: ts, DTS: ts, Keyframe: true, Payload: [][]byte{au}})
			})
		default:
			in.log.Warn("ignoring a track of an unsupported codec", "codec", fmt.Sprintf("%T", t.Codec))
		}
	}
	if len(tracks) == 0 {
		return nil, errors.New("no H.264, H.265 or AAC track in the stream")
	}
	return tracks, nil
}
