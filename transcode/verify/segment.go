package verify

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"math/big"
	"slices"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	mp4codecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mp4/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts"
	tscodecs "github.com/bluenviron/mediacommon/v2/pkg/formats/mpegts/codecs"

	"github.com/shoal-video/shoal/internal/media"
)

// Segment is one segment of a rendition as a worker produced it.
type Segment struct {
	// Init is the fMP4 initialization section the segment refers to
	// (EXT-X-MAP); nil for an MPEG-TS segment.
	Init []byte
	// Media is the media segment: fMP4 fragments (moof + mdat) or
	// MPEG-TS packets.
	Media []byte
}

// Segment formats.
const (
	FormatFMP4   = "fmp4"
	FormatMPEGTS = "mpegts"
)

// Bounds on what a segment may hold, so that hostile bytes cannot make
// the checker allocate or decode without end.
const (
	maxInitBytes    = 1 << 20
	maxSegmentBytes = 64 << 20
	// maxSamples: 30 s at 240 fps.
	maxSamples = 7200
	// maxTime bounds timestamps (90 kHz ticks, about 3.6 years): what is
	// computed from them cannot overflow.
	maxTime = 1 << 43
)

// ErrMalformed is wrapped by the errors of ParseSegment.
var ErrMalformed = errors.New("malformed segment")

// Parsed is a segment's video as ParseSegment reads it.
type Parsed struct {
	Format string // FormatFMP4 or FormatMPEGTS
	// Track is the H.264 track: its parameter sets (from the init
	// section, or the first in band) and the size its SPS declares.
	Track media.Track
	// Samples are the video's access units in decode order.
	Samples []SegmentSample
	// Start is the decode time of the first sample (fMP4: the fragment's
	// tfdt; MPEG-TS: the DTS, 33 bits), in 90 kHz ticks.
	Start int64
	// Duration is the span of the samples in 90 kHz ticks (fMP4: the sum
	// of the sample durations; MPEG-TS, which has none: the last DTS
	// minus the first plus the last step between two DTS).
	Duration int64
}

// SegmentSample is one access unit of a segment.
type SegmentSample struct {
	DTS, PTS int64 // 90 kHz ticks, DTS from the segment's own start
	// Sync is the container's word: an fMP4 sync sample; in MPEG-TS,
	// which has no such flag here, the same as IDR.
	Sync bool
	// IDR: it holds an IDR slice.
	IDR   bool
	NALUs [][]byte
}

// ParseSegment reads the H.264 video of a segment: fMP4 when s.Init is
// set, MPEG-TS otherwise. Bytes that are not such a segment give an error
// wrapping ErrMalformed (never a panic).
func ParseSegment(s Segment) (p Parsed, err error) {
	defer func() {
		// The container parsers are third-party code fed hostile bytes:
		// whatever escapes them is the segment's fault.
		if r := recover(); r != nil {
			p, err = Parsed{}, fmt.Errorf("%w: %v", ErrMalformed, r)
		}
	}()
	if len(s.Media) == 0 {
		return Parsed{}, fmt.Errorf("%w: empty", ErrMalformed)
	}
	if len(s.Media) > maxSegmentBytes {
		return Parsed{}, fmt.Errorf("%w: %d bytes (at most %d)", ErrMalformed, len(s.Media), maxSegmentBytes)
	}
	if s.Init != nil {
		p, err = parseFMP4(s.Init, s.Media)
	} else {
		p, err = parseTS(s.Media)
	}
	if err != nil {
		return Parsed{}, err
	}
	if err := p.finish(); err != nil {
		return Parsed{}, err
	}
	return p, nil
}

func malformed(format string, args ...any) error {
	return fmt.Errorf("%w: "+format, append([]any{ErrMalformed}, args...)...)
}

func parseFMP4(initBytes, mediaBytes []byte) (Parsed, error) {
	if len(initBytes) > maxInitBytes {
		return Parsed{}, malformed("init section of %d bytes (at most %d)", len(initBytes), maxInitBytes)
	}
	var init fmp4.Init
	if err := init.Unmarshal(bytes.NewReader(initBytes)); err != nil {
		return Parsed{}, malformed("init section: %v", err)
	}
	var track *fmp4.InitTrack
	var codec *mp4codecs.H264
	for _, t := range init.Tracks {
		if c, ok := t.Codec.(*mp4codecs.H264); ok {
			track, codec = t, c
			break
		}
	}
	if track == nil {
		names := make([]string, 0, len(init.Tracks))
		for _, t := range init.Tracks {
			names = append(names, fmt.Sprintf("%T", t.Codec))
		}
		return Parsed{}, malformed("no H.264 video track in the init section (tracks: %v)", names)
	}
	if track.TimeScale == 0 {
		return Parsed{}, malformed("video track with a time scale of 0")
	}
	frags, err := parseFragments(mediaBytes, uint32(track.ID))
	if err != nil {
		return Parsed{}, err
	}
	p := Parsed{Format: FormatFMP4, Track: media.Track{Codec: media.CodecH264, ClockRate: 90000, SPS: codec.SPS, PPS: codec.PPS}}
	scale := int64(track.TimeScale)
	var start, end uint64 // in the track's time scale
	for i, f := range frags {
		t := f.base
		if i == 0 {
			start = t
		} else if t != end {
			return Parsed{}, malformed("fragment starts at %d, the previous one ended at %d (time scale %d)", t, end, scale)
		}
		for _, s := range f.samples {
			if t > maxTime || s.cto > maxTime || s.cto < -maxTime {
				return Parsed{}, malformed("sample time %d (offset %d) out of range", t, s.cto)
			}
			var nalus h264.AVCC
			if err := nalus.Unmarshal(s.payload); err != nil {
				return Parsed{}, malformed("sample %d: %v", len(p.Samples), err)
			}
			p.Samples = append(p.Samples, SegmentSample{
				DTS:   rescale(int64(t-start), 90000, scale),
				PTS:   rescale(int64(t-start)+s.cto, 90000, scale),
				Sync:  s.sync,
				NALUs: nalus,
			})
			t += uint64(s.duration)
		}
		end = t
	}
	if len(p.Samples) == 0 {
		return Parsed{}, malformed("no video sample")
	}
	if start > maxTime || end > maxTime {
		return Parsed{}, malformed("decode time %d out of range", start)
	}
	p.Start = rescale(int64(start), 90000, scale)
	p.Duration = rescale(int64(end), 90000, scale) - p.Start
	return p, nil
}

// rescale is v * num / den rounded to the nearest (halves away from zero),
// without overflow.
func rescale(v, num, den int64) int64 {
	x := new(big.Int).Mul(big.NewInt(v), big.NewInt(num))
	d := big.NewInt(den)
	half := new(big.Int).Quo(d, big.NewInt(2))
	if x.Sign() >= 0 {
		x.Add(x, half)
	} else {
		x.Sub(x, half)
	}
	return x.Quo(x, d).Int64()
}

// tsWrap is the MPEG-TS clock's period (33 bits).
const tsWrap = 1 << 33

func parseTS(data []byte) (Parsed, error) {
	r := &mpegts.Reader{R: bytes.NewReader(data)}
	if err := r.Initialize(); err != nil {
		return Parsed{}, malformed("MPEG-TS: %v", err)
	}
	var track *mpegts.Track
	for _, t := range r.Tracks() {
		if _, ok := t.Codec.(*tscodecs.H264); ok {
			track = t
			break
		}
	}
	if track == nil {
		return Parsed{}, malformed("no H.264 video track in the MPEG-TS segment")
	}
	p := Parsed{Format: FormatMPEGTS, Track: media.Track{Codec: media.CodecH264, ClockRate: 90000}}
	var decodeErr error
	r.OnDecodeError(func(err error) {
		if decodeErr == nil {
			decodeErr = err
		}
	})
	var firstDTS int64
	r.OnDataH264(track, func(pts, dts int64, au [][]byte) error {
		if len(p.Samples) >= maxSamples {
			return malformed("more than %d samples", maxSamples)
		}
		if len(p.Samples) == 0 {
			firstDTS = dts
		}
		// Relative to the first DTS, across a wrap of the 33-bit clock.
		rel := func(v int64) int64 {
			d := (v - firstDTS) & (tsWrap - 1)
			if d >= tsWrap/2 {
				d -= tsWrap
			}
			return d
		}
		p.Samples = append(p.Samples, SegmentSample{DTS: rel(dts), PTS: rel(pts), NALUs: au})
		return nil
	})
	for {
		err := r.Read()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			if errors.Is(err, ErrMalformed) {
				return Parsed{}, err
			}
			return Parsed{}, malformed("MPEG-TS: %v", err)
		}
	}
	if decodeErr != nil {
		return Parsed{}, malformed("MPEG-TS: %v", decodeErr)
	}
	if len(p.Samples) == 0 {
		return Parsed{}, malformed("no video access unit")
	}
	p.Start = firstDTS
	n := len(p.Samples)
	p.Duration = p.Samples[n-1].DTS
	if n > 1 {
		p.Duration += p.Samples[n-1].DTS - p.Samples[n-2].DTS
	}
	for i := range p.Samples {
		p.Samples[i].Sync = true // set from IDR in finish
	}
	return p, nil
}

// finish checks the samples and fills what the NAL units tell: IDR, the
// parameter sets and the declared size.
func (p *Parsed) finish() error {
	for i := range p.Samples {
		s := &p.Samples[i]
		if len(s.NALUs) == 0 {
			return malformed("sample %d is empty", i)
		}
		if i > 0 && s.DTS <= p.Samples[i-1].DTS {
			return malformed("sample %d does not move forward in decode time", i)
		}
		for _, n := range s.NALUs {
			if len(n) == 0 {
				return malformed("sample %d holds an empty NAL unit", i)
			}
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeIDR:
				s.IDR = true
			case h264.NALUTypeSPS:
				if p.Track.SPS == nil {
					p.Track.SPS = n
				}
			case h264.NALUTypePPS:
				if p.Track.PPS == nil {
					p.Track.PPS = n
				}
			}
		}
		if p.Format == FormatMPEGTS {
			s.Sync = s.IDR
		}
	}
	if p.Track.SPS == nil || p.Track.PPS == nil {
		return malformed("no SPS and PPS")
	}
	var sps h264.SPS
	if err := sps.Unmarshal(p.Track.SPS); err != nil {
		return malformed("SPS: %v", err)
	}
	p.Track.Width, p.Track.Height = sps.Width(), sps.Height()
	if p.Duration <= 0 || p.Duration > maxTime {
		return malformed("duration %d out of range", p.Duration)
	}
	return nil
}

// presentation returns the samples' indexes in presentation order.
// Presented is when the segment's first frame is presented, in 90 kHz
// ticks on the segment's timeline (its decode start plus the least
// composition time: an encoder with B-frames presents its first frame a
// few frames after it decodes it).
func (p *Parsed) Presented() int64 {
	if len(p.Samples) == 0 {
		return p.Start
	}
	first := p.Samples[0].PTS
	for _, s := range p.Samples {
		first = min(first, s.PTS)
	}
	return p.Start + first
}

func (p *Parsed) presentation() []int {
	idx := make([]int, len(p.Samples))
	for i := range idx {
		idx[i] = i
	}
	slices.SortStableFunc(idx, func(a, b int) int {
		switch pa, pb := p.Samples[a].PTS, p.Samples[b].PTS; {
		case pa < pb:
			return -1
		case pa > pb:
			return 1
		}
		return 0
	})
	return idx
}
