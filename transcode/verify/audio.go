package verify

import (
	"bytes"
	"fmt"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"

	"github.com/shoal-video/shoal/internal/media"
)

// AACFrameSamples is the samples of one AAC-LC frame (per channel).
const AACFrameSamples = 1024

// maxAACFrameBytes is the largest AAC frame of one channel: its decoder
// buffer, 6144 bits (ISO 14496-3 4.5.3.2).
const maxAACFrameBytes = 6144 / 8

// ParsedAudio is an audio segment as ParseAudioSegment reads it.
type ParsedAudio struct {
	// Config is the AAC configuration of the initialization section's
	// one track.
	Config mpeg4audio.AudioSpecificConfig
	// Frames are the raw AAC frames, one per sample, in decode order.
	Frames [][]byte
	// Start is the decode time of the first frame (the fragment's tfdt);
	// Duration the span of the frames.
	Start, Duration time.Duration
}

// ParseAudioSegment reads an fMP4 segment of AAC audio with its
// initialization section, as the ladder makes it: the initialization
// section has one track, AAC-LC of one or two channels and frames of 1024
// samples; every sample is one frame of at most 6144 bits a channel, lasts
// exactly a frame, and starts as an AAC frame of the track's channels
// does; the fragments follow each other without a gap. Bytes that are not
// such a segment give an error wrapping ErrMalformed (never a panic).
//
// It decodes nothing: a segment that passes holds AAC frames of the right
// shape, not necessarily the source's sound.
func ParseAudioSegment(s Segment) (p ParsedAudio, err error) {
	defer func() {
		if r := recover(); r != nil {
			p, err = ParsedAudio{}, fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	switch {
	case s.Init == nil:
		return ParsedAudio{}, malformed("no initialization section: the audio is fMP4")
	case len(s.Init) > maxInitBytes:
		return ParsedAudio{}, malformed("init section of %d bytes (at most %d)", len(s.Init), maxInitBytes)
	case len(s.Media) == 0:
		return ParsedAudio{}, malformed("empty")
	case len(s.Media) > maxSegmentBytes:
		return ParsedAudio{}, malformed("%d bytes (at most %d)", len(s.Media), maxSegmentBytes)
	}
	cfg, track, err := audioInit(s.Init)
	if err != nil {
		return ParsedAudio{}, err
	}
	frags, err := parseFragments(s.Media, uint32(track.ID))
	if err != nil {
		return ParsedAudio{}, err
	}
	p = ParsedAudio{Config: cfg}
	scale := int64(track.TimeScale)
	// A frame's duration in the track's time scale. Timestamps that went
	// through another clock are off by a tick here and there: each frame
	// may be a hundredth of a frame (at least a tick) off, the frames
	// together one frame.
	frame := rescale(AACFrameSamples, scale, int64(cfg.SampleRate))
	slack := max(1, frame/100)
	var start, end uint64
	for i, f := range frags {
		t := f.base
		if i == 0 {
			start = t
		} else if t != end {
			return ParsedAudio{}, malformed("fragment starts at %d, the previous one ended at %d (time scale %d)", t, end, scale)
		}
		for _, smp := range f.samples {
			n := len(p.Frames)
			if d := int64(smp.duration); d < frame-slack || d > frame+slack {
				return ParsedAudio{}, malformed("sample %d lasts %d ticks of 1/%d s: an AAC frame lasts %d samples at %d Hz (%d ticks)",
					n, smp.duration, scale, AACFrameSamples, cfg.SampleRate, frame)
			}
			if len(smp.payload) > maxAACFrameBytes*cfg.ChannelCount {
				return ParsedAudio{}, malformed("sample %d has %d bytes: an AAC frame of %d channels has at most %d",
					n, len(smp.payload), cfg.ChannelCount, maxAACFrameBytes*cfg.ChannelCount)
			}
			if err := aacFrameStart(smp.payload, cfg); err != nil {
				return ParsedAudio{}, malformed("sample %d is not an AAC-LC frame: %v", n, err)
			}
			p.Frames = append(p.Frames, smp.payload)
			t += uint64(smp.duration)
			if t > maxTime {
				return ParsedAudio{}, malformed("sample time %d out of range", t)
			}
		}
		end = t
	}
	if span, want := int64(end-start), int64(len(p.Frames))*frame; span < want-frame || span > want+frame {
		return ParsedAudio{}, malformed("%d frames span %d ticks of 1/%d s: %d frames of AAC last %d", len(p.Frames), span, scale, len(p.Frames), want)
	}
	if len(p.Frames) == 0 {
		return ParsedAudio{}, malformed("no audio sample")
	}
	p.Start = media.Duration(int64(start), int(scale))
	p.Duration = media.Duration(int64(end-start), int(scale))
	return p, nil
}

// audioInit reads an initialization section of AAC audio as the ladder
// makes it (see ParseAudioSegment) and returns its configuration and
// track.
func audioInit(b []byte) (mpeg4audio.AudioSpecificConfig, *fmp4.InitTrack, error) {
	var none mpeg4audio.AudioSpecificConfig
	if len(b) > maxInitBytes {
		return none, nil, malformed("init section of %d bytes (at most %d)", len(b), maxInitBytes)
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(b)); err != nil {
		return none, nil, malformed("init section: %v", err)
	}
	if len(init.Tracks) != 1 {
		return none, nil, malformed("the init section has %d tracks: the audio has one", len(init.Tracks))
	}
	t := init.Tracks[0]
	aac, ok := t.Codec.(*mp4codecs.MPEG4Audio)
	if !ok {
		return none, nil, malformed("the init section's track is %T, not AAC", t.Codec)
	}
	c := aac.Config
	switch {
	case c.Type != mpeg4audio.ObjectTypeAACLC:
		return none, nil, malformed("the AAC is of object type %d, not AAC-LC (2)", c.Type)
	case c.FrameLengthFlag:
		return none, nil, malformed("the AAC has frames of 960 samples, not 1024")
	case c.ChannelConfig != 1 && c.ChannelConfig != 2:
		return none, nil, malformed("the AAC has the channel configuration %d: the audio is mono or stereo", c.ChannelConfig)
	case swbIndex(c.SampleRate) < 0:
		return none, nil, malformed("the AAC's sample rate %d Hz is not one of AAC's", c.SampleRate)
	case t.TimeScale == 0 || t.TimeScale > 1_000_000:
		return none, nil, malformed("the audio track's time scale is %d", t.TimeScale)
	}
	c.ChannelCount = int(c.ChannelConfig)
	return c, t, nil
}

// AAC's sample rates by sampling frequency index, and the scale factor
// bands of a long and a short window at each (ISO 14496-3 4.5.4, FFmpeg's
// ff_aac_num_swb_1024 and _128).
var (
	aacRates    = []int{96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000, 7350}
	aacSWBLong  = []int{41, 41, 47, 49, 49, 51, 47, 47, 43, 43, 43, 40, 40}
	aacSWBShort = []int{12, 12, 12, 14, 14, 14, 15, 15, 15, 15, 15, 15, 15}
)

func swbIndex(rate int) int {
	for i, r := range aacRates {
		if r == rate {
			return i
		}
	}
	return -1
}

// AAC syntactic elements (ISO 14496-3 table 4.85).
const (
	aacSCE = 0
	aacCPE = 1
	aacDSE = 4
	aacFIL = 6
	aacEND = 7
)

// aacFrameStart checks the beginning of a raw AAC frame (raw_data_block)
// of cfg's channels: fill and data stream elements may come first, then
// the channels' element (a single channel element for mono, a channel
// pair for stereo) whose first individual channel stream's header
// (ics_info) is that of AAC-LC at the track's sample rate. What follows
// (the Huffman-coded spectra) only a decoder reads.
func aacFrameStart(b []byte, cfg mpeg4audio.AudioSpecificConfig) error {
	r := bitReader{b: b}
	for range 16 {
		id := r.read(3)
		switch id {
		case aacFIL:
			n := r.read(4)
			if n == 15 {
				n += r.read(8) - 1
			}
			r.skip(8 * n)
		case aacDSE:
			r.skip(4) // element_instance_tag
			align := r.read(1)
			n := r.read(8)
			if n == 255 {
				n += r.read(8)
			}
			if align == 1 {
				r.align()
			}
			r.skip(8 * n)
		case aacSCE, aacCPE:
			if r.err != nil {
				return r.err
			}
			if want := map[uint8]int{1: aacSCE, 2: aacCPE}[cfg.ChannelConfig]; id != want {
				return fmt.Errorf("a %d-channel frame begins with element %d", cfg.ChannelCount, id)
			}
			r.skip(4) // element_instance_tag
			if id == aacCPE && r.read(1) == 0 {
				// No common window: the first channel's stream has its own
				// ics_info after its global gain.
				r.skip(8)
			} else if id == aacSCE {
				r.skip(8) // global_gain
			}
			return r.icsInfo(cfg)
		case aacEND:
			if r.err != nil {
				return r.err
			}
			return fmt.Errorf("the frame ends (END element) before any channel")
		default:
			if r.err != nil {
				return r.err
			}
			return fmt.Errorf("element %d where the channels were expected", id)
		}
		if r.err != nil {
			return r.err
		}
	}
	return fmt.Errorf("more than 16 fill or data elements")
}

// icsInfo reads an ics_info of AAC-LC at cfg's sample rate.
func (r *bitReader) icsInfo(cfg mpeg4audio.AudioSpecificConfig) error {
	i := swbIndex(cfg.SampleRate)
	if r.read(1) != 0 {
		return r.fail("ics_reserved_bit is set")
	}
	seq := r.read(2)
	r.skip(1)     // window_shape
	if seq == 2 { // EIGHT_SHORT_SEQUENCE
		if sfb := r.read(4); sfb > aacSWBShort[i] {
			return r.fail(fmt.Sprintf("max_sfb %d of a short window: %d Hz has %d bands", sfb, cfg.SampleRate, aacSWBShort[i]))
		}
		r.skip(7) // scale_factor_grouping
		return r.err
	}
	if sfb := r.read(6); sfb > aacSWBLong[i] {
		return r.fail(fmt.Sprintf("max_sfb %d of a long window: %d Hz has %d bands", sfb, cfg.SampleRate, aacSWBLong[i]))
	}
	if r.read(1) != 0 {
		return r.fail("predictor data, which AAC-LC does not have")
	}
	return r.err
}

// bitReader reads bits, most significant first; reading past the end
// sets err (and reads zeros).
type bitReader struct {
	b   []byte
	pos int // in bits
	err error
}

func (r *bitReader) read(n int) int {
	v := 0
	for range n {
		if r.pos >= 8*len(r.b) {
			if r.err == nil {
				r.err = fmt.Errorf("the frame ends within its header (%d bytes)", len(r.b))
			}
			return 0
		}
		v = v<<1 | int(r.b[r.pos/8]>>(7-r.pos%8))&1
		r.pos++
	}
	return v
}

func (r *bitReader) skip(n int) {
	if r.pos+n > 8*len(r.b) {
		if r.err == nil {
			r.err = fmt.Errorf("the frame ends within its header (%d bytes)", len(r.b))
		}
		r.pos = 8 * len(r.b)
		return
	}
	r.pos += n
}

func (r *bitReader) align() { r.skip((8 - r.pos%8) % 8) }

func (r *bitReader) fail(msg string) error {
	if r.err != nil {
		return r.err
	}
	return fmt.Errorf("%s", msg)
}
