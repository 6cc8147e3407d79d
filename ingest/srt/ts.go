package srt

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/shoal-video/shoal/internal/media"
)

// maxBadTimestamps is how many access units in a row may be dropped for
// timestamps that do not move forward before the publisher is ended: a few
// are skipped, a stream whose clock jumped back must reconnect (the hub
// then marks the discontinuity).
const maxBadTimestamps = 50

// aacFrameSamples is the number of samples of an AAC frame carried in ADTS
// (ADTS cannot signal 960-sample frames).
const aacFrameSamples = 1024

// errDemuxPanic is a panic of the MPEG-TS demuxer, recovered.
var errDemuxPanic = errors.New("the MPEG-TS demuxer failed on malformed input")

// setupError is a stream the publisher sent that cannot be published; the
// session is refused for reason.
type setupError struct {
	reason string
	err    error
}

func (e *setupError) Error() string { return e.err.Error() }
func (e *setupError) Unwrap() error { return e.err }

// demuxer turns the MPEG-TS byte stream of one publisher into a
// publication: it maps the H.264, H.265 and AAC tracks, waits until every
// video track's parameter sets are known, then calls start once and hands
// every access unit to what start returned.
type demuxer struct {
	// start publishes tracks and returns where access units go.
	start func(tracks []media.Track) (func(*media.AccessUnit), error)
	// warn reports a per-packet problem (rate-limited by the caller).
	warn func(msg string, err error)
	// skipped reports tracks of codecs that are not carried.
	skipped func(codecs []string)

	tracks []media.Track
	videos []*videoTrack
	out    func(*media.AccessUnit) // nil until started

	clock      mpegts.TimeDecoder // 33-bit 90 kHz timestamps to an unbounded timeline
	clockStart bool
	badRun     int
}

// videoTrack follows the parameter sets of one video track.
type videoTrack struct {
	idx   int
	codec media.Codec

	vps, sps, pps []byte // the latest seen in band
	started       bool   // a keyframe has been written
	lastDTS       int64
}

// audioTrack is one AAC track.
type audioTrack struct {
	idx     int
	rate    int64
	started bool
	last    int64
}

// run reads r until it fails (io.EOF at its end) or the stream cannot go on.
func (d *demuxer) run(r io.Reader) error {
	mr := &mpegts.Reader{R: r}
	if err := mr.Initialize(); err != nil {
		if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) {
			return err
		}
		return &setupError{"bad_stream", fmt.Errorf("no usable MPEG-TS program: %w", err)}
	}
	if err := d.setup(mr); err != nil {
		return err
	}
	mr.OnDecodeError(func(err error) { d.warn("skipping undecodable MPEG-TS data", err) })
	if len(d.videos) == 0 {
		// Audio only: nothing to wait for.
		if err := d.begin(); err != nil {
			return err
		}
	}
	for {
		if err := d.read(mr); err != nil {
			return err
		}
	}
}

// read reads one unit of the stream. The demuxer is third-party code fed
// with untrusted bytes: a panic there ends this publisher, not the server.
func (d *demuxer) read(mr *mpegts.Reader) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = &setupError{"bad_stream", fmt.Errorf("%w: %v", errDemuxPanic, p)}
		}
	}()
	return mr.Read()
}

// setup maps the program's tracks, skipping codecs that are not carried.
func (d *demuxer) setup(mr *mpegts.Reader) error {
	var skipped []string
	for _, t := range mr.Tracks() {
		idx := len(d.tracks)
		switch c := t.Codec.(type) {
		case *tscodecs.H264:
			v := &videoTrack{idx: idx, codec: media.CodecH264}
			d.videos = append(d.videos, v)
			d.tracks = append(d.tracks, media.Track{Codec: media.CodecH264, ClockRate: 90000})
			mr.OnDataH264(t, func(pts, dts int64, au [][]byte) error { return d.onVideo(v, pts, dts, au) })
		case *tscodecs.H265:
			v := &videoTrack{idx: idx, codec: media.CodecH265}
			d.videos = append(d.videos, v)
			d.tracks = append(d.tracks, media.Track{Codec: media.CodecH265, ClockRate: 90000})
			mr.OnDataH265(t, func(pts, dts int64, au [][]byte) error { return d.onVideo(v, pts, dts, au) })
		case *tscodecs.MPEG4Audio:
			rate := c.Config.SampleRate
			if rate <= 0 {
				skipped = append(skipped, "aac (no sample rate)")
				continue
			}
			cfg, err := c.Config.Marshal()
			if err != nil {
				skipped = append(skipped, "aac (bad config)")
				continue
			}
			ch := int(c.Config.ChannelConfig)
			if ch == 7 {
				ch = 8
			}
			a := &audioTrack{idx: idx, rate: int64(rate)}
			d.tracks = append(d.tracks, media.Track{Codec: media.CodecAAC, ClockRate: rate, AudioConfig: cfg, SampleRate: rate, Channels: ch})
			mr.OnDataMPEG4Audio(t, func(pts int64, aus [][]byte) error { return d.onAudio(a, pts, aus) })
		default:
			skipped = append(skipped, codecName(t.Codec))
		}
	}
	if len(skipped) > 0 {
		d.skipped(skipped)
	}
	if len(d.tracks) == 0 {
		return &setupError{"bad_tracks", errors.New("no H.264, H.265 or AAC track in the stream")}
	}
	return nil
}

// codecName names an MPEG-TS codec for logs: "MPEG1Audio".
func codecName(c tscodecs.Codec) string {
	s := fmt.Sprintf("%T", c)
	return s[strings.LastIndexAny(s, ".*")+1:]
}

// begin publishes the tracks, once every video track has its parameter sets.
func (d *demuxer) begin() error {
	tracks := slices.Clone(d.tracks)
	for _, v := range d.videos {
		tracks[v.idx] = v.track()
	}
	out, err := d.start(tracks)
	if err != nil {
		return err
	}
	d.out = out
	return nil
}

// ts maps a 33-bit MPEG-TS timestamp onto the publication's timeline, which
// starts at 0 with the first timestamp mapped and goes on across
// wraparounds.
func (d *demuxer) ts(raw int64) int64 {
	d.clockStart = true
	return d.clock.Decode(raw)
}

func (d *demuxer) badTimestamp(what string, err error) error {
	d.badRun++
	d.warn("dropping "+what+" whose timestamps do not move forward", err)
	if d.badRun >= maxBadTimestamps {
		return fmt.Errorf("%d access units in a row with timestamps that do not move forward; reconnect to restart the timeline", d.badRun)
	}
	return nil
}

func (d *demuxer) onVideo(v *videoTrack, pts, dts int64, au [][]byte) error {
	au = slices.DeleteFunc(au, func(n []byte) bool { return len(n) == 0 })
	if len(au) == 0 {
		return nil
	}
	v.scan(au)
	if d.out == nil {
		for _, o := range d.videos {
			if !o.ready() {
				return nil // parameter sets still unknown: nothing to publish yet
			}
		}
		if err := d.begin(); err != nil {
			return err
		}
	}
	key := v.isKey(au)
	if !v.started && !key {
		return nil // a decoder starts at a keyframe
	}
	de, pe := d.ts(dts), d.ts(pts)
	if de < 0 && !v.started {
		return nil // before the start of the publication
	}
	if (v.started && de <= v.lastDTS) || pe < de {
		return d.badTimestamp("a video frame", fmt.Errorf("DTS %d after %d, PTS %d", de, v.lastDTS, pe))
	}
	if key {
		au = v.withParams(au)
	}
	v.started, v.lastDTS, d.badRun = true, de, 0
	d.out(&media.AccessUnit{Track: v.idx, PTS: pe, DTS: de, Keyframe: key, Payload: au})
	return nil
}

func (d *demuxer) onAudio(a *audioTrack, pts int64, aus [][]byte) error {
	if d.out == nil {
		return nil
	}
	if !d.clockStart && len(d.videos) > 0 {
		return nil // the timeline starts at the first video keyframe
	}
	p := d.ts(pts)
	if p < 0 && !a.started {
		return nil // before the start of the publication
	}
	base := p * a.rate / 90000
	for i, frame := range aus {
		if len(frame) == 0 {
			continue
		}
		ts := base + int64(i)*aacFrameSamples
		if a.started && ts <= a.last || ts < 0 {
			if err := d.badTimestamp("an AAC frame", fmt.Errorf("timestamp %d after %d", ts, a.last)); err != nil {
				return err
			}
			continue
		}
		a.started, a.last, d.badRun = true, ts, 0
		d.out(&media.AccessUnit{Track: a.idx, PTS: ts, DTS: ts, Keyframe: true, Payload: [][]byte{frame}})
	}
	return nil
}

// scan remembers the parameter sets an access unit carries.
func (v *videoTrack) scan(au [][]byte) {
	for _, n := range au {
		if v.codec == media.CodecH264 {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				v.sps = keep(v.sps, n)
			case h264.NALUTypePPS:
				v.pps = keep(v.pps, n)
			}
			continue
		}
		switch h265.NALUType((n[0] >> 1) & 0x3f) {
		case h265.NALUType_VPS_NUT:
			v.vps = keep(v.vps, n)
		case h265.NALUType_SPS_NUT:
			v.sps = keep(v.sps, n)
		case h265.NALUType_PPS_NUT:
			v.pps = keep(v.pps, n)
		}
	}
}

// keep returns old when n holds the same bytes, else a copy of n (a
// parameter set repeated before every keyframe is kept once, and without
// holding on to the keyframe's buffer).
func keep(old, n []byte) []byte {
	if bytes.Equal(old, n) {
		return old
	}
	return bytes.Clone(n)
}

func (v *videoTrack) ready() bool {
	return len(v.sps) > 0 && len(v.pps) > 0 && (v.codec == media.CodecH264 || len(v.vps) > 0)
}

func (v *videoTrack) isKey(au [][]byte) bool {
	if v.codec == media.CodecH264 {
		return h264.IsRandomAccess(au)
	}
	return h265.IsRandomAccess(au)
}

// track describes the video track with its current parameter sets.
func (v *videoTrack) track() media.Track {
	t := media.Track{Codec: v.codec, ClockRate: 90000, VPS: v.vps, SPS: v.sps, PPS: v.pps}
	if v.codec == media.CodecH264 {
		var sps h264.SPS
		if err := sps.Unmarshal(v.sps); err == nil {
			t.Width, t.Height = sps.Width(), sps.Height()
		}
	} else {
		var sps h265.SPS
		if err := sps.Unmarshal(v.sps); err == nil {
			t.Width, t.Height = sps.Width(), sps.Height()
		}
	}
	return t
}

// withParams puts the latest parameter sets in front of a keyframe that
// does not carry its own, so that every keyframe can start a decoder.
func (v *videoTrack) withParams(au [][]byte) [][]byte {
	for _, n := range au {
		if v.codec == media.CodecH264 && h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS ||
			v.codec == media.CodecH265 && h265.NALUType((n[0]>>1)&0x3f) == h265.NALUType_SPS_NUT {
			return au
		}
	}
	out := make([][]byte, 0, 3+len(au))
	for _, p := range [][]byte{v.vps, v.sps, v.pps} {
		if len(p) > 0 {
			out = append(out, p)
		}
	}
	return append(out, au...)
}
