package nodeproto

import (
	"bufio"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/media"
)

// Live framing: a remote live ladder moves access units over long-lived
// HTTP bodies, the source from the origin to the worker and the encoded
// rungs back. Both bodies are a sequence of frames:
//
//	kind   uint8   (LiveKindSource, LiveKindRenditions, LiveKindAU, LiveKindTick)
//	length uint32  big-endian, the body's size (at most MaxLiveFrameBytes)
//	body   length bytes
//
// The first frame of a body is its header: a LiveSource (JSON) from the
// origin, a LiveRenditions (JSON) from the worker. The access units that
// follow are binary:
//
//	track    uint8   the source track, or the rung's index in LiveRenditions
//	flags    uint8   bit 0 keyframe, bit 1 an NTP time follows
//	pts, dts int64   big-endian, in the track's clock
//	ntp      int64   Unix nanoseconds (only with flag bit 1)
//	count    uint16  NAL units (or 1 for an audio frame), at most MaxLiveNALUs
//	count times: uint32 length, then the bytes
//
// A tick (empty body) says that the sender is alive while it has nothing
// to send. A frame that breaks a bound ends the stream with an error.

// Frame kinds of the live framing.
const (
	LiveKindSource     byte = 1
	LiveKindRenditions byte = 2
	LiveKindAU         byte = 3
	LiveKindTick       byte = 4
)

// Bounds of the live framing.
const (
	// MaxLiveFrameBytes bounds one frame (a 4K intra frame at a high
	// bitrate stays well below it).
	MaxLiveFrameBytes = 16 << 20
	// MaxLiveNALUs bounds the NAL units of one access unit.
	MaxLiveNALUs = 1024
	// MaxLiveHeaderBytes bounds a header frame.
	MaxLiveHeaderBytes = 64 << 10
	// MaxLiveTracks bounds the source's tracks.
	MaxLiveTracks = 8
	// MaxLiveTimestamp bounds the magnitude of a timestamp, so that sums
	// and differences of two never overflow.
	MaxLiveTimestamp = int64(1) << 60
)

// LiveTrack is a media.Track on the wire.
type LiveTrack struct {
	Codec       media.Codec `json:"codec"`
	ClockRate   int         `json:"clock_rate"`
	VPS         []byte      `json:"vps,omitempty"`
	SPS         []byte      `json:"sps,omitempty"`
	PPS         []byte      `json:"pps,omitempty"`
	Width       int         `json:"width,omitempty"`
	Height      int         `json:"height,omitempty"`
	AudioConfig []byte      `json:"audio_config,omitempty"`
	SampleRate  int         `json:"sample_rate,omitempty"`
	Channels    int         `json:"channels,omitempty"`
}

// LiveTrackOf converts t for the wire.
func LiveTrackOf(t media.Track) LiveTrack {
	return LiveTrack{Codec: t.Codec, ClockRate: t.ClockRate, VPS: t.VPS, SPS: t.SPS, PPS: t.PPS,
		Width: t.Width, Height: t.Height, AudioConfig: t.AudioConfig, SampleRate: t.SampleRate, Channels: t.Channels}
}

// Track is the media.Track lt describes.
func (lt LiveTrack) Track() media.Track {
	return media.Track{Codec: lt.Codec, ClockRate: lt.ClockRate, VPS: lt.VPS, SPS: lt.SPS, PPS: lt.PPS,
		Width: lt.Width, Height: lt.Height, AudioConfig: lt.AudioConfig, SampleRate: lt.SampleRate, Channels: lt.Channels}
}

func (lt LiveTrack) check() error {
	switch lt.Codec {
	case media.CodecH264, media.CodecH265, media.CodecAAC:
	default:
		return fmt.Errorf("codec %q is not h264, h265 or aac", clipMessage(string(lt.Codec)))
	}
	switch {
	case lt.ClockRate < 1 || lt.ClockRate > 1_000_000:
		return errors.New(`"clock_rate" must be between 1 and 1000000`)
	case lt.Width < 0 || lt.Width > 8192 || lt.Height < 0 || lt.Height > 8192:
		return errors.New(`"width" and "height" must be between 0 and 8192`)
	case lt.SampleRate < 0 || lt.SampleRate > 384000 || lt.Channels < 0 || lt.Channels > 64:
		return errors.New(`"sample_rate" or "channels" out of range`)
	}
	return nil
}

// LiveSource is the header of the source body: what the worker encodes,
// and how.
type LiveSource struct {
	// Stream is the live stream's id.
	Stream string `json:"stream"`
	// Tracks are the source's tracks; Video is the index of the one to
	// encode (the access units of the others are not sent).
	Tracks []LiveTrack `json:"tracks"`
	Video  int         `json:"video"`
	// Ladder is the ladder to encode (media.ParseLadder's form), before
	// Ladder.For the source's height.
	Ladder string `json:"ladder"`
	// Preset is the x264 preset.
	Preset string `json:"preset"`
	// SegmentMillis spaces the forced keyframes.
	SegmentMillis int64 `json:"segment_ms"`
	// KeyframeAnchor is the grid's origin, in 90 kHz ticks: keyframes are
	// forced at KeyframeAnchor + k*SegmentMillis, whoever encodes.
	KeyframeAnchor int64 `json:"keyframe_anchor"`
}

// Segment is the keyframe interval.
func (s LiveSource) Segment() time.Duration { return time.Duration(s.SegmentMillis) * time.Millisecond }

// ParsedLadder returns the ladder to encode, checked.
func (s LiveSource) ParsedLadder() (media.Ladder, error) { return media.ParseLadder(s.Ladder) }

// Check checks a source header's bounds.
func (s LiveSource) Check() error {
	if !ids.Valid(s.Stream) {
		return errors.New(`"stream" must be a stream id`)
	}
	if len(s.Tracks) == 0 || len(s.Tracks) > MaxLiveTracks {
		return fmt.Errorf(`"tracks" must list 1 to %d tracks`, MaxLiveTracks)
	}
	for i, t := range s.Tracks {
		if err := t.check(); err != nil {
			return fmt.Errorf("tracks[%d]: %w", i, err)
		}
	}
	if s.Video < 0 || s.Video >= len(s.Tracks) || !s.Tracks[s.Video].Codec.IsVideo() {
		return errors.New(`"video" must be the index of a video track`)
	}
	if _, err := s.ParsedLadder(); err != nil {
		return fmt.Errorf(`"ladder": %w`, err)
	}
	if len(s.Preset) == 0 || len(s.Preset) > 32 || !ids.Valid(s.Preset) {
		return errors.New(`"preset" must be an x264 preset name`)
	}
	if s.SegmentMillis < 100 || s.SegmentMillis > 60_000 {
		return errors.New(`"segment_ms" must be between 100 and 60000`)
	}
	if s.KeyframeAnchor < -MaxLiveTimestamp || s.KeyframeAnchor > MaxLiveTimestamp {
		return errors.New(`"keyframe_anchor" out of range`)
	}
	return nil
}

// LiveRung is one rung a worker encodes, as its encoder opened it.
type LiveRung struct {
	Name    string `json:"name"`
	Width   int    `json:"width"`
	Height  int    `json:"height"`
	Bitrate int    `json:"bitrate"`
}

// LiveRenditions is the header of the renditions body: the rungs, whose
// indexes the access units name.
type LiveRenditions struct {
	Stream string     `json:"stream"`
	Rungs  []LiveRung `json:"rungs"`
}

// Check checks a renditions header's bounds.
func (r LiveRenditions) Check() error {
	if !ids.Valid(r.Stream) {
		return errors.New(`"stream" must be a stream id`)
	}
	if len(r.Rungs) == 0 || len(r.Rungs) > media.MaxRungs {
		return fmt.Errorf(`"rungs" must list 1 to %d rungs`, media.MaxRungs)
	}
	names := map[string]bool{}
	for i, g := range r.Rungs {
		switch {
		case !ids.Valid(g.Name) || names[g.Name]:
			return fmt.Errorf(`rungs[%d]: "name" must be a distinct rendition name`, i)
		case g.Width < 2 || g.Width > 8192 || g.Height < 2 || g.Height > 8192:
			return fmt.Errorf(`rungs[%d]: "width" and "height" must be between 2 and 8192`, i)
		case g.Bitrate < 1 || g.Bitrate > 1_000_000_000:
			return fmt.Errorf(`rungs[%d]: "bitrate" must be between 1 and 1000000000`, i)
		}
		names[g.Name] = true
	}
	return nil
}

// LiveFrame is one frame read from a live body: Kind says which field is
// set (none for a tick).
type LiveFrame struct {
	Kind       byte
	Source     *LiveSource
	Renditions *LiveRenditions
	AU         *media.AccessUnit
}

// LiveWriter writes frames to a live body, flushing after each when the
// writer can (an http.ResponseWriter, an io.Pipe feeding a request).
type LiveWriter struct {
	w     io.Writer
	flush func() error
	buf   []byte
}

// NewLiveWriter writes frames to w; flush, when not nil, is called after
// each frame.
func NewLiveWriter(w io.Writer, flush func() error) *LiveWriter {
	return &LiveWriter{w: w, flush: flush}
}

func (lw *LiveWriter) frame(kind byte, body []byte) error {
	if len(body) > MaxLiveFrameBytes {
		return fmt.Errorf("live frame of %d bytes: at most %d", len(body), MaxLiveFrameBytes)
	}
	var hdr [5]byte
	hdr[0] = kind
	binary.BigEndian.PutUint32(hdr[1:], uint32(len(body)))
	if _, err := lw.w.Write(hdr[:]); err != nil {
		return err
	}
	if len(body) > 0 {
		if _, err := lw.w.Write(body); err != nil {
			return err
		}
	}
	if lw.flush != nil {
		return lw.flush()
	}
	return nil
}

// WriteSource writes the source header.
func (lw *LiveWriter) WriteSource(s LiveSource) error {
	if err := s.Check(); err != nil {
		return fmt.Errorf("live source header: %w", err)
	}
	return lw.frame(LiveKindSource, mustJSON(s))
}

// WriteRenditions writes the renditions header.
func (lw *LiveWriter) WriteRenditions(r LiveRenditions) error {
	if err := r.Check(); err != nil {
		return fmt.Errorf("live renditions header: %w", err)
	}
	return lw.frame(LiveKindRenditions, mustJSON(r))
}

// WriteTick writes a tick.
func (lw *LiveWriter) WriteTick() error { return lw.frame(LiveKindTick, nil) }

// WriteAU writes an access unit.
func (lw *LiveWriter) WriteAU(au *media.AccessUnit) error {
	if au.Track < 0 || au.Track > 255 {
		return fmt.Errorf("live access unit: track %d out of range", au.Track)
	}
	if len(au.Payload) > MaxLiveNALUs {
		return fmt.Errorf("live access unit: %d NAL units, at most %d", len(au.Payload), MaxLiveNALUs)
	}
	b := lw.buf[:0]
	var flags byte
	if au.Keyframe {
		flags |= 1
	}
	if !au.NTP.IsZero() {
		flags |= 2
	}
	b = append(b, byte(au.Track), flags)
	b = binary.BigEndian.AppendUint64(b, uint64(au.PTS))
	b = binary.BigEndian.AppendUint64(b, uint64(au.DTS))
	if flags&2 != 0 {
		b = binary.BigEndian.AppendUint64(b, uint64(au.NTP.UnixNano()))
	}
	b = binary.BigEndian.AppendUint16(b, uint16(len(au.Payload)))
	for _, n := range au.Payload {
		b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
		b = append(b, n...)
	}
	lw.buf = b
	return lw.frame(LiveKindAU, b)
}

// LiveReader reads frames from a live body.
type LiveReader struct {
	r *bufio.Reader
}

// NewLiveReader reads frames from r.
func NewLiveReader(r io.Reader) *LiveReader {
	return &LiveReader{r: bufio.NewReaderSize(r, 64<<10)}
}

// Next reads the next frame: io.EOF at a clean end between frames,
// io.ErrUnexpectedEOF within one, another error for a frame that breaks
// the framing's rules.
func (lr *LiveReader) Next() (LiveFrame, error) {
	var hdr [5]byte
	if _, err := io.ReadFull(lr.r, hdr[:]); err != nil {
		return LiveFrame{}, err
	}
	kind, n := hdr[0], binary.BigEndian.Uint32(hdr[1:])
	limit := uint32(MaxLiveFrameBytes)
	switch kind {
	case LiveKindSource, LiveKindRenditions:
		limit = MaxLiveHeaderBytes
	case LiveKindTick:
		limit = 0
	case LiveKindAU:
	default:
		return LiveFrame{}, fmt.Errorf("live frame of unknown kind %d", kind)
	}
	if n > limit {
		return LiveFrame{}, fmt.Errorf("live frame of kind %d and %d bytes: at most %d", kind, n, limit)
	}
	body := make([]byte, n)
	if _, err := io.ReadFull(lr.r, body); err != nil {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return LiveFrame{}, err
	}
	return DecodeLiveFrame(kind, body)
}

// DecodeLiveFrame decodes the body of one frame of the given kind.
func DecodeLiveFrame(kind byte, body []byte) (LiveFrame, error) {
	f := LiveFrame{Kind: kind}
	switch kind {
	case LiveKindTick:
		if len(body) != 0 {
			return LiveFrame{}, errors.New("a live tick has no body")
		}
	case LiveKindSource:
		var s LiveSource
		if err := decodeStrict(body, &s, MaxLiveHeaderBytes); err != nil {
			return LiveFrame{}, fmt.Errorf("live source header: %w", err)
		}
		if err := s.Check(); err != nil {
			return LiveFrame{}, fmt.Errorf("live source header: %w", err)
		}
		f.Source = &s
	case LiveKindRenditions:
		var r LiveRenditions
		if err := decodeStrict(body, &r, MaxLiveHeaderBytes); err != nil {
			return LiveFrame{}, fmt.Errorf("live renditions header: %w", err)
		}
		if err := r.Check(); err != nil {
			return LiveFrame{}, fmt.Errorf("live renditions header: %w", err)
		}
		f.Renditions = &r
	case LiveKindAU:
		au, err := decodeLiveAU(body)
		if err != nil {
			return LiveFrame{}, fmt.Errorf("live access unit: %w", err)
		}
		f.AU = au
	default:
		return LiveFrame{}, fmt.Errorf("live frame of unknown kind %d", kind)
	}
	return f, nil
}

func decodeLiveAU(b []byte) (*media.AccessUnit, error) {
	if len(b) > MaxLiveFrameBytes {
		return nil, fmt.Errorf("%d bytes, at most %d", len(b), MaxLiveFrameBytes)
	}
	if len(b) < 2+16+2 {
		return nil, errors.New("truncated")
	}
	au := &media.AccessUnit{Track: int(b[0])}
	flags := b[1]
	if flags&^3 != 0 {
		return nil, fmt.Errorf("unknown flags %#x", flags)
	}
	au.Keyframe = flags&1 != 0
	au.PTS = int64(binary.BigEndian.Uint64(b[2:]))
	au.DTS = int64(binary.BigEndian.Uint64(b[10:]))
	for _, ts := range []int64{au.PTS, au.DTS} {
		if ts < -MaxLiveTimestamp || ts > MaxLiveTimestamp {
			return nil, errors.New("timestamp out of range")
		}
	}
	b = b[18:]
	if flags&2 != 0 {
		if len(b) < 8 {
			return nil, errors.New("truncated")
		}
		ns := int64(binary.BigEndian.Uint64(b))
		if ns <= 0 {
			return nil, errors.New("NTP time out of range")
		}
		au.NTP = time.Unix(0, ns)
		b = b[8:]
	}
	if len(b) < 2 {
		return nil, errors.New("truncated")
	}
	count := int(binary.BigEndian.Uint16(b))
	b = b[2:]
	if count == 0 || count > MaxLiveNALUs {
		return nil, fmt.Errorf("%d NAL units: 1 to %d", count, MaxLiveNALUs)
	}
	au.Payload = make([][]byte, 0, count)
	for range count {
		if len(b) < 4 {
			return nil, errors.New("truncated")
		}
		n := binary.BigEndian.Uint32(b)
		b = b[4:]
		if n == 0 || uint64(n) > uint64(len(b)) {
			return nil, errors.New("a NAL unit is empty or longer than the frame")
		}
		au.Payload = append(au.Payload, b[:n:n])
		b = b[n:]
	}
	if len(b) != 0 {
		return nil, fmt.Errorf("%d bytes after the last NAL unit", len(b))
	}
	return au, nil
}

// mustJSON marshals a header (plain structs: it cannot fail).
func mustJSON(v any) []byte {
	b, err := json.Marshal(v)
	if err != nil {
		panic(fmt.Sprintf("nodeproto: marshal %T: %v", v, err))
	}
	return b
}
