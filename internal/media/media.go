// Package media holds the types every pipeline stage shares: tracks, access
// units and stream keys. It is a leaf package: it imports no other stage.
package media

import (
	"fmt"
	"time"
)

// Codec names a media codec.
type Codec string

// Codecs Shoal carries through its pipeline.
const (
	CodecH264 Codec = "h264"
	CodecH265 Codec = "h265"
	CodecAAC  Codec = "aac"

	// WebRTC codecs. They exist only between the WHIP ingest and its
	// converter: the hub carries H.264, H.265 and AAC alone, so that every
	// later stage (and every HLS player) can use what it reads.
	CodecVP8  Codec = "vp8"
	CodecVP9  Codec = "vp9"
	CodecOpus Codec = "opus"
)

// IsVideo reports whether c is a video codec.
func (c Codec) IsVideo() bool {
	return c == CodecH264 || c == CodecH265 || c == CodecVP8 || c == CodecVP9
}

// Track describes one elementary stream of a publication.
type Track struct {
	// Codec of the elementary stream.
	Codec Codec
	// ClockRate is the number of timestamp ticks per second
	// (90000 for video, the sample rate for audio).
	ClockRate int

	// Video parameter sets (H.264: SPS and PPS; H.265: VPS, SPS and PPS).
	VPS, SPS, PPS []byte
	// Width and Height of the video in pixels, when known.
	Width, Height int

	// AudioConfig is the MPEG-4 AudioSpecificConfig for AAC.
	AudioConfig []byte
	// SampleRate and Channels of an audio track.
	SampleRate, Channels int
}

// IsVideo reports whether the track carries video.
func (t Track) IsVideo() bool { return t.Codec.IsVideo() }

// AccessUnit is one decodable unit (a video frame or an audio frame) of a
// track. Timestamps are integers in the track's clock (Track.ClockRate).
type AccessUnit struct {
	// Track is the index of the track in the publication's track list.
	Track int
	// PTS and DTS in track clock ticks.
	PTS, DTS int64
	// Keyframe is true for a video random access point (IDR) and for every
	// audio frame.
	Keyframe bool
	// Payload holds the NAL units of a video frame (without start codes or
	// length prefixes) or the single raw frame of an audio access unit.
	Payload [][]byte
	// NTP is the wall-clock time this access unit arrived at ingest (the
	// hub stamps what publishers leave zero). Renditions made from it
	// carry the source's time, so that EXT-X-PROGRAM-DATE-TIME says when
	// an instant was ingested, not when an encoder let it out.
	NTP time.Time
}

// Size returns the payload size in bytes.
func (au *AccessUnit) Size() int {
	n := 0
	for _, p := range au.Payload {
		n += len(p)
	}
	return n
}

// StreamKey names one publication in the hub: the stream (a live stream or
// video id) and its rendition ("source" for what ingest received).
type StreamKey struct {
	Name      string
	Rendition string
}

// RenditionSource is the rendition name of what an ingest protocol received.
const RenditionSource = "source"

func (k StreamKey) String() string { return fmt.Sprintf("%s/%s", k.Name, k.Rendition) }

// Ticks converts a duration to ticks of a clock of the given rate.
func Ticks(d time.Duration, rate int) int64 {
	sec := int64(d / time.Second)
	rem := int64(d % time.Second)
	return sec*int64(rate) + rem*int64(rate)/int64(time.Second)
}

// Duration converts ticks of a clock of the given rate to a duration.
func Duration(ticks int64, rate int) time.Duration {
	if rate <= 0 {
		return 0
	}
	sec := ticks / int64(rate)
	rem := ticks % int64(rate)
	return time.Duration(sec)*time.Second + time.Duration(rem)*time.Second/time.Duration(rate)
}
