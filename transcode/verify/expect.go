package verify

import (
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// expectation is what the origin's own ladder and packager make of the
// source frames of a segment's window (CompareSegment follows the ladder's
// frame-rate handling and keyframe grid over them: see
// ffmpeg.SourceFrame).
type expectation struct {
	frame int64 // one tick of the encoders, 90 kHz
	// start is the decode time of the segment's first sample on the VOD
	// timeline (the packager's tfdt).
	start int64
	// frames are the kept frames' instants, relative to the first one;
	// keys says which are forced keyframes.
	frames []int64
	keys   []bool
	// duration is the segment's span: up to the next kept frame, or one
	// tick past the last one at the end of the file.
	duration int64
	empty    bool // no source frame in the window
}

func expect(res ffmpeg.CompareResult) expectation {
	num, den := int64(res.FrameRateNum), int64(res.FrameRateDen)
	e := expectation{frame: max(rescale(1, 90000*den, num), 1)}
	first, haveFirst, seen := int64(0), false, false
	for _, f := range res.Frames {
		switch {
		case f.InWindow:
			if !haveFirst {
				first, haveFirst = f.At, true
				e.start = f.At
			}
			e.frames = append(e.frames, f.At-first)
			e.keys = append(e.keys, f.Key)
			seen = true
		case seen && f.Kept:
			e.duration = f.At - first
			return e
		}
	}
	if !haveFirst {
		e.empty = true
		return e
	}
	e.duration = e.frames[len(e.frames)-1] + e.frame
	return e
}
