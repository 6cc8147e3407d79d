package restream

import (
	"bytes"
	"errors"
	"fmt"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/shoal-video/shoal/internal/media"
)

// errNoTracks is returned when a publication has nothing RTMP can carry.
var errNoTracks = errors.New("the stream has no H.264, H.265 or AAC track to send")

// output converts one publication's access units to RTMP messages for one
// connection: it picks the tracks, starts at a video keyframe and keeps the
// outgoing timestamps monotonic across publisher restarts.
type output struct {
	// video and audio are the indexes of the sent tracks in the hub's track
	// list, -1 when there is none.
	video, audio int
	vSrc, aSrc   media.Track
	vTrack       *gortmplib.Track
	aTrack       *gortmplib.Track

	started bool          // a first keyframe set the timeline
	waitKey bool          // drop until the next keyframe (re)sets the base
	offset  time.Duration // added to every input timestamp
	lastDTS time.Duration // the latest timestamp written, any track
	lastV   time.Duration // the latest timestamp written per track
	lastA   time.Duration
	// lastWall is when the latest access unit was written, to re-base a
	// restarted publisher after the time it was away.
	lastWall time.Time
}

// newOutput picks the first video (H.264/H.265) and the first AAC track of
// tracks and checks their parameters, so that writing the RTMP sequence
// headers cannot fail on them.
func newOutput(tracks []media.Track) (*output, error) {
	o := &output{video: -1, audio: -1, waitKey: true}
	for i, t := range tracks {
		switch {
		case t.IsVideo() && o.video < 0:
			c, err := rtmpVideo(t)
			if err != nil {
				return nil, err
			}
			o.video, o.vSrc, o.vTrack = i, t, &gortmplib.Track{Codec: c}
		case t.Codec == media.CodecAAC && o.audio < 0:
			c, err := rtmpAudio(t)
			if err != nil {
				return nil, err
			}
			o.audio, o.aSrc, o.aTrack = i, t, &gortmplib.Track{Codec: c}
		}
	}
	if o.video < 0 && o.audio < 0 {
		return nil, errNoTracks
	}
	return o, nil
}

func rtmpVideo(t media.Track) (codecs.Codec, error) {
	if t.ClockRate <= 0 {
		return nil, fmt.Errorf("video track has clock rate %d", t.ClockRate)
	}
	if len(t.SPS) > 0xffff || len(t.PPS) > 0xffff || len(t.VPS) > 0xffff {
		return nil, errors.New("video parameter sets are too large")
	}
	switch t.Codec {
	case media.CodecH264:
		var sps h264.SPS
		if len(t.SPS) < 4 || len(t.PPS) == 0 || sps.Unmarshal(t.SPS) != nil {
			return nil, errors.New("the H.264 track has no usable SPS/PPS")
		}
		return &codecs.H264{SPS: t.SPS, PPS: t.PPS}, nil
	case media.CodecH265:
		var sps h265.SPS
		if len(t.VPS) == 0 || len(t.SPS) < 13 || len(t.PPS) == 0 || sps.Unmarshal(t.SPS) != nil {
			return nil, errors.New("the H.265 track has no usable VPS/SPS/PPS")
		}
		return &codecs.H265{VPS: t.VPS, SPS: t.SPS, PPS: t.PPS}, nil
	}
	return nil, fmt.Errorf("unsupported video codec %q", t.Codec)
}

func rtmpAudio(t media.Track) (codecs.Codec, error) {
	if t.ClockRate <= 0 {
		return nil, fmt.Errorf("audio track has clock rate %d", t.ClockRate)
	}
	var cfg mpeg4audio.AudioSpecificConfig
	if err := cfg.Unmarshal(t.AudioConfig); err != nil {
		return nil, fmt.Errorf("the AAC track's AudioSpecificConfig: %w", err)
	}
	return &codecs.MPEG4Audio{Config: &cfg}, nil
}

// tracks are the tracks to announce to the target.
func (o *output) tracks() []*gortmplib.Track {
	var ts []*gortmplib.Track
	if o.vTrack != nil {
		ts = append(ts, o.vTrack)
	}
	if o.aTrack != nil {
		ts = append(ts, o.aTrack)
	}
	return ts
}

// sameAs reports whether a restarted publisher's tracks can continue on the
// same connection: the same sent tracks with the same parameters (the
// target decodes with the sequence headers written when connecting).
func (o *output) sameAs(tracks []media.Track) bool {
	n, err := newOutput(tracks)
	if err != nil || (n.video < 0) != (o.video < 0) || (n.audio < 0) != (o.audio < 0) {
		return false
	}
	if o.video >= 0 && !sameTrack(o.vSrc, n.vSrc) || o.audio >= 0 && !sameTrack(o.aSrc, n.aSrc) {
		return false
	}
	o.video, o.audio = n.video, n.audio // the order may differ
	return true
}

func sameTrack(a, b media.Track) bool {
	return a.Codec == b.Codec && a.ClockRate == b.ClockRate &&
		bytes.Equal(a.VPS, b.VPS) && bytes.Equal(a.SPS, b.SPS) && bytes.Equal(a.PPS, b.PPS) &&
		bytes.Equal(a.AudioConfig, b.AudioConfig)
}

// restart makes the output wait for a keyframe of a restarted publisher,
// whose timestamps start over, and re-base them on it.
func (o *output) restart() { o.waitKey = true }

// minRebaseGap separates the last access unit of a publisher from the first
// of the one that replaced it, at least.
const minRebaseGap = time.Millisecond

// place decides whether au is sent and returns its outgoing timestamps. The
// first keyframe of a connection maps to 0; the first keyframe after a
// restart maps to the latest timestamp written plus the wall-clock time
// since it was written, so the outgoing timeline stays monotonic and in step
// with real time (the target sees a pause, not a jump back).
func (o *output) place(au *media.AccessUnit, now time.Time) (pts, dts time.Duration, ok bool) {
	if len(au.Payload) == 0 {
		return 0, 0, false
	}
	var rate int
	switch au.Track {
	case o.video:
		rate = o.vSrc.ClockRate
	case o.audio:
		rate = o.aSrc.ClockRate
	default:
		return 0, 0, false
	}
	inDTS := media.Duration(au.DTS, rate)
	if o.waitKey {
		key := au.Track == o.video && au.Keyframe || o.video < 0
		if !key {
			return 0, 0, false
		}
		if !o.started {
			o.offset = -inDTS
			o.started = true
			o.lastV, o.lastA = -1, -1
		} else {
			gap := max(now.Sub(o.lastWall), minRebaseGap)
			o.offset = o.lastDTS + gap - inDTS
		}
		o.waitKey = false
	}
	dts = inDTS + o.offset
	pts = media.Duration(au.PTS, rate) + o.offset
	if pts < dts {
		pts = dts
	}
	last := &o.lastA
	if au.Track == o.video {
		last = &o.lastV
	}
	// Audio that started before the first keyframe, or that overlaps the
	// previous publisher's after a restart, is dropped.
	if dts < 0 || dts < *last {
		return 0, 0, false
	}
	*last = dts
	o.lastDTS = max(o.lastDTS, dts)
	o.lastWall = now
	return pts, dts, true
}
