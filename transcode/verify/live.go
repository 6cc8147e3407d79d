package verify

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// FormatLive is a live rung's access units as a remote worker sent them
// (no container).
const FormatLive = "live"

// LiveRequest is one cell of a live rung's keyframe grid to check: what a
// remote worker sent for it, with the source it was made from.
type LiveRequest struct {
	// Source is the source's video track; SourceAUs its access units
	// (90 kHz, decode order) from a keyframe a second or more before
	// Start (the reference encoder warms up on them) through the first
	// frame at or after End.
	Source    media.Track
	SourceAUs []*media.AccessUnit
	// Start and End are the cell on the stream's timeline (90 kHz): two
	// consecutive instants of the keyframe grid Anchor + k*interval.
	Start, End int64
	Anchor     int64
	// AUs are the rung's access units for the cell, in decode order,
	// from its keyframe up to the next one (excluded), parameter sets in
	// band; Next is the PTS of that next keyframe, where the cell's output
	// ends.
	AUs  []*media.AccessUnit
	Next int64
	// Rung is the rendition: Height and Bitrate are required; the size
	// checked is what the ladder makes of the source at that height (a
	// non-zero Width must agree with it).
	Rung       ffmpeg.Rung
	Settings   Settings
	Thresholds Thresholds
	// NoReference skips the reference encode (the absolute floors only).
	NoReference bool
}

func (req LiveRequest) validate() error {
	var errs []error
	if len(req.SourceAUs) == 0 {
		errs = append(errs, errors.New("the source's access units are required"))
	}
	if span := req.End - req.Start; span <= 0 || span > media.Ticks(maxSpan, 90000) {
		errs = append(errs, fmt.Errorf("bad cell [%d, %d) (at most %s long)", req.Start, req.End, maxSpan))
	}
	return validated(errs, req.Rung, req.Settings, req.NoReference)
}

// CheckLive verifies one cell of a live rung as Check verifies a VOD
// segment: the same checks and thresholds, on the stream's timeline (the
// cell's start is its keyframe's PTS; its duration runs to the next
// keyframe's), against the source's frames and a reference encode made
// with the ladder's own code (ffmpeg.CompareLive). The error is for the
// checker's own failures only.
func CheckLive(ctx context.Context, req LiveRequest) (Report, error) {
	began := time.Now()
	if err := req.validate(); err != nil {
		return Report{}, err
	}
	interval := req.Settings.interval()
	c := &checker{start: media.Duration(req.Start, 90000), end: media.Duration(req.End, 90000), th: req.Thresholds.withDefaults()}
	c.fig.Backend = req.Settings.Backend
	seg, perr := ParseLive(req.AUs, req.Next)
	if perr != nil {
		return c.unparsed(perr, began), nil
	}
	c.seg = seg
	cfg := ffmpeg.LiveCompareConfig{
		Source: req.Source, SourceAUs: req.SourceAUs, From: req.Start, To: req.End,
		KeyframeInterval: interval, KeyframeAnchor: req.Anchor,
		Rung:      ffmpeg.Rung{Name: req.Rung.Name, Height: req.Rung.Height, Bitrate: req.Rung.Bitrate},
		Candidate: candidate(seg),
	}
	cfg.Reference = req.Settings.reference(req.NoReference)
	res, err := ffmpeg.CompareLive(ctx, cfg)
	if err := compared(req.Rung, res, err); err != nil {
		return Report{}, err
	}
	return c.run(res, began), nil
}

// ParseLive reads a live rung's access units (H.264, decode order,
// parameter sets in band) as a segment: Start is the first access unit's
// PTS, Duration runs from there to next. Access units that are not such
// video give an error wrapping ErrMalformed.
func ParseLive(aus []*media.AccessUnit, next int64) (Parsed, error) {
	if len(aus) == 0 {
		return Parsed{}, fmt.Errorf("%w: no access unit", ErrMalformed)
	}
	if len(aus) > maxSamples {
		return Parsed{}, malformed("more than %d access units", maxSamples)
	}
	p := Parsed{Format: FormatLive, Track: media.Track{Codec: media.CodecH264, ClockRate: 90000}}
	first := aus[0]
	size := 0
	for i, au := range aus {
		if au == nil || abs(au.PTS) > maxTime || abs(au.DTS) > maxTime {
			return Parsed{}, malformed("access unit %d has no timestamps in range", i)
		}
		for _, n := range au.Payload {
			size += len(n)
		}
		if size > maxSegmentBytes {
			return Parsed{}, malformed("more than %d bytes", maxSegmentBytes)
		}
		p.Samples = append(p.Samples, SegmentSample{DTS: au.DTS - first.DTS, PTS: au.PTS - first.DTS, Sync: au.Keyframe, NALUs: au.Payload})
	}
	if abs(next) > maxTime {
		return Parsed{}, malformed("the next keyframe's time is out of range")
	}
	p.Start, p.Duration = first.PTS, next-first.PTS
	if err := p.finish(); err != nil {
		return Parsed{}, err
	}
	return p, nil
}
