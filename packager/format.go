package packager

import (
	"bytes"
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4/seekablebuffer"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/shoal-video/shoal/internal/media"
)

// Segment formats.
const (
	FormatFMP4   = "fmp4"
	FormatMPEGTS = "mpegts"
)

// sample is one access unit on the output timeline, in track clock ticks.
type sample struct {
	dts      int64
	ptsOff   int32
	dur      int64
	key      bool
	payload  [][]byte // NAL units (video) or one raw frame (audio)
	byteSize int
	ntp      time.Time // its wall-clock time at ingest (zero: unknown)
}

// format turns samples into segment files.
type format interface {
	ext() string
	version() uint8
	// init returns the initialization section, or nil when the format has none.
	init(t media.Track) ([]byte, error)
	segment(t media.Track, seq uint32, samples []sample) ([]byte, error)
}

func newFormat(name string) (format, error) {
	switch name {
	case FormatFMP4:
		return fmp4Format{}, nil
	case FormatMPEGTS:
		return tsFormat{}, nil
	}
	return nil, fmt.Errorf("unknown HLS segment format %q (want fmp4 or mpegts)", name)
}

type fmp4Format struct{}

func (fmp4Format) ext() string    { return ".m4s" }
func (fmp4Format) version() uint8 { return 7 }

func mp4Codec(t media.Track) (mp4codecs.Codec, error) {
	switch t.Codec {
	case media.CodecH264:
		return &mp4codecs.H264{SPS: t.SPS, PPS: t.PPS}, nil
	case media.CodecH265:
		return &mp4codecs.H265{VPS: t.VPS, SPS: t.SPS, PPS: t.PPS}, nil
	case media.CodecAAC:
		var cfg mpeg4audio.AudioSpecificConfig
		if err := cfg.Unmarshal(t.AudioConfig); err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
		return &mp4codecs.MPEG4Audio{Config: cfg}, nil
	}
	return nil, fmt.Errorf("codec %q cannot be packaged", t.Codec)
}

func (fmp4Format) init(t media.Track) ([]byte, error) {
	c, err := mp4Codec(t)
	if err != nil {
		return nil, err
	}
	init := fmp4.Init{Tracks: []*fmp4.InitTrack{{ID: 1, TimeScale: uint32(t.ClockRate), Codec: c}}}
	var buf seekablebuffer.Buffer
	if err := init.Marshal(&buf); err != nil {
		return nil, fmt.Errorf("fMP4 init: %w", err)
	}
	return buf.Bytes(), nil
}

func (fmp4Format) segment(t media.Track, seq uint32, samples []sample) ([]byte, error) {
	out := make([]*fmp4.Sample, len(samples))
	for i, s := range samples {
		var payload []byte
		if t.IsVideo() {
			var err error
			if payload, err = h264.AVCC(s.payload).Marshal(); err != nil {
				return nil, fmt.Errorf("AVCC: %w", err)
			}
		} else {
			payload = s.payload[0]
		}
		out[i] = &fmp4.Sample{
			Duration:        uint32(s.dur),
			PTSOffset:       s.ptsOff,
			IsNonSyncSample: t.IsVideo() && !s.key,
			Payload:         payload,
		}
	}
	part := fmp4.Part{SequenceNumber: seq, Tracks: []*fmp4.PartTrack{{
		ID: 1, BaseTime: uint64(samples[0].dts), Samples: out,
	}}}
	var buf seekablebuffer.Buffer
	if err := part.Marshal(&buf); err != nil {
		return nil, fmt.Errorf("fMP4 fragment: %w", err)
	}
	return buf.Bytes(), nil
}

type tsFormat struct{}

func (tsFormat) ext() string                      { return ".ts" }
func (tsFormat) version() uint8                   { return 3 }
func (tsFormat) init(media.Track) ([]byte, error) { return nil, nil }

func (tsFormat) segment(t media.Track, _ uint32, samples []sample) ([]byte, error) {
	var codec tscodecs.Codec
	switch t.Codec {
	case media.CodecH264:
		codec = &tscodecs.H264{}
	case media.CodecH265:
		codec = &tscodecs.H265{}
	case media.CodecAAC:
		var cfg mpeg4audio.AudioSpecificConfig
		if err := cfg.Unmarshal(t.AudioConfig); err != nil {
			return nil, fmt.Errorf("AAC config: %w", err)
		}
		codec = &tscodecs.MPEG4Audio{Config: cfg}
	default:
		return nil, fmt.Errorf("codec %q cannot be packaged", t.Codec)
	}
	var buf bytes.Buffer
	track := &mpegts.Track{Codec: codec}
	w := &mpegts.Writer{W: &buf, Tracks: []*mpegts.Track{track}}
	if err := w.Initialize(); err != nil {
		return nil, fmt.Errorf("MPEG-TS: %w", err)
	}
	to90k := func(ticks int64) int64 { return ticks * 90000 / int64(t.ClockRate) }
	for _, s := range samples {
		var err error
		switch t.Codec {
		case media.CodecH264:
			au := s.payload
			if s.key {
				au = append([][]byte{t.SPS, t.PPS}, au...)
			}
			err = w.WriteH264(track, s.dts+int64(s.ptsOff), s.dts, au)
		case media.CodecH265:
			au := s.payload
			if s.key {
				au = append([][]byte{t.VPS, t.SPS, t.PPS}, au...)
			}
			err = w.WriteH265(track, s.dts+int64(s.ptsOff), s.dts, au)
		case media.CodecAAC:
			err = w.WriteMPEG4Audio(track, to90k(s.dts), s.payload)
		}
		if err != nil {
			return nil, fmt.Errorf("MPEG-TS: %w", err)
		}
	}
	return buf.Bytes(), nil
}
