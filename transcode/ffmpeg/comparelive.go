package ffmpeg

import (
	"context"
	"errors"
	"fmt"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/shoal-video/shoal/internal/media"
)

// LiveCompareConfig says what CompareLive compares: a window of a live
// rung, as a remote worker encoded it, with the source it was encoded
// from.
type LiveCompareConfig struct {
	// Source is the source's video track (its parameter sets tell its
	// size and frame rate, as the pipeline reads them).
	Source media.Track
	// SourceAUs are the source's access units (90 kHz), in decode order,
	// from a keyframe at or before From to past To: the first frame at or
	// after To tells where the window ends. The reference encoder starts
	// at the first, so that it is warm at From, as a ladder running before
	// the window is (x264 starting less than a second before it scores
	// 1 to 1.5 dB lower): start them a second before From or more.
	SourceAUs []*media.AccessUnit
	// From and To bound the window on the stream's timeline (90 kHz):
	// the source frames the ladder keeps whose timestamps fall in [From,
	// To) (with From and To on the grid: one cell, from its keyframe to
	// the next's).
	From, To int64
	// KeyframeInterval and KeyframeAnchor are the ladder's keyframe grid
	// (Config.Anchored): keyframes fall on the first frame at or after
	// KeyframeAnchor + k*KeyframeInterval.
	KeyframeInterval time.Duration
	KeyframeAnchor   int64
	// Rung is the size compared at and, for the reference, the bitrate;
	// with Width 0, the size the ladder makes of the source at Height.
	Rung Rung
	// Candidate is the video to check, with its timestamps on the
	// stream's timeline; its first frame (the lowest PTS) stands for the
	// window's first source frame.
	Candidate CodedVideo
	// Reference, when set, also encodes the window with the ladder's own
	// code under this configuration (x264, one rung) and measures it.
	Reference *Config
}

// errWindowDone ends a live walk once the frame after the window is seen.
var errWindowDone = errors.New("the window is done")

// CompareLive is CompareSegment for a live rung: the source is access
// units in memory rather than a file, decoded with the live pipeline's
// own decoding, and the timeline is the stream's (the ladder's encoder
// ticks and its anchored keyframe grid over the source's timestamps).
// The result's frames' At are instants on that timeline; First is the
// grid's anchor.
func CompareLive(ctx context.Context, cfg LiveCompareConfig) (CompareResult, error) {
	if len(cfg.SourceAUs) == 0 || !cfg.SourceAUs[0].Keyframe {
		return CompareResult{}, errors.New("compare: the source must start with a keyframe")
	}
	if cfg.To <= cfg.From || cfg.To-cfg.From > media.Ticks(maxCompareWindow, 90000) {
		return CompareResult{}, fmt.Errorf("compare: bad window [%d, %d) (at most %s)", cfg.From, cfg.To, maxCompareWindow)
	}
	if cfg.KeyframeInterval <= 0 {
		return CompareResult{}, errors.New("compare: the keyframe interval is required")
	}
	srcW, srcH, err := TrackSize(cfg.Source)
	if err != nil {
		return CompareResult{}, err
	}
	if cfg.Rung.Width == 0 {
		cfg.Rung.Height = min(cfg.Rung.Height, srcH&^1)
		cfg.Rung.Width = EvenWidth(srcW, srcH, cfg.Rung.Height)
	}
	if cfg.Rung.Width < 2 || cfg.Rung.Height < 2 || cfg.Rung.Width*cfg.Rung.Height > maxPixels {
		return CompareResult{}, fmt.Errorf("compare: bad rung size %dx%d", cfg.Rung.Width, cfg.Rung.Height)
	}
	probe := &Pipeline{src: cfg.Source}
	w := &window{first: cfg.KeyframeAnchor, interval: media.Ticks(cfg.KeyframeInterval, 90000),
		from: cfg.From, to: cfg.To, srcW: srcW, srcH: srcH, fps: probe.frameRate()}
	w.encTB = astiav.NewRational(w.fps.Den(), w.fps.Num())
	w.frame = max(astiav.RescaleQ(1, w.encTB, clock90k), 1)
	defer w.close()
	walk := func(ctx context.Context, s *codedStream, feed feedFunc) ([]SourceFrame, bool, error) {
		return w.walkLive(ctx, cfg, s, feed)
	}
	return w.compare(ctx, cfg.Rung, cfg.Candidate, cfg.Reference, cfg.KeyframeInterval, walk)
}

// EncoderTick is one tick of the ladder's encoders for a source video
// track, in 90 kHz ticks: they count in its declared frame rate (60 fps
// when it declares none), so an output frame's instant is its source
// frame's rounded to a tick.
func EncoderTick(t media.Track) int64 {
	fps := (&Pipeline{src: t}).frameRate()
	return max(astiav.RescaleQ(1, astiav.NewRational(fps.Den(), fps.Num()), clock90k), 1)
}

// TrackSize is the picture size a video track's SPS declares (the track's
// own figures when it has no SPS the parser reads).
func TrackSize(t media.Track) (int, int, error) {
	w, h := t.Width, t.Height
	switch t.Codec {
	case media.CodecH264:
		var sps h264.SPS
		if err := sps.Unmarshal(t.SPS); err == nil {
			w, h = sps.Width(), sps.Height()
		}
	case media.CodecH265:
		var sps h265.SPS
		if err := sps.Unmarshal(t.SPS); err == nil {
			w, h = sps.Width(), sps.Height()
		}
	}
	if w < 2 || h < 2 || int64(w)*int64(h) > maxPixels {
		return 0, 0, fmt.Errorf("compare: the source's picture size is unknown or out of range (%dx%d)", w, h)
	}
	return w, h, nil
}

// walkLive decodes the source access units with the live pipeline's
// decoding, follows the ladder over them (encodeFrame's anchored grid,
// encodeRung's ticks), hands each window frame to s and every frame to
// feed (when set), and returns the frames seen, as walk does; eof: the
// access units end before the window does.
func (w *window) walkLive(ctx context.Context, cfg LiveCompareConfig, s *codedStream, feed feedFunc) ([]SourceFrame, bool, error) {
	var frames []SourceFrame
	var last, nextKey int64
	haveGrid, seenWindow := false, false
	ticks := encoderTicks{tb: w.encTB}
	handle := func(f *astiav.Frame) error {
		if err := ctx.Err(); err != nil {
			return err
		}
		if f.Width() != w.srcW || f.Height() != w.srcH {
			return fmt.Errorf("compare: the source's pictures are %dx%d, its parameter sets say %dx%d", f.Width(), f.Height(), w.srcW, w.srcH)
		}
		pts := f.Pts()
		if pts == noPTS {
			pts = last + w.frame
		}
		last = pts
		// The grid (encodeFrame, Anchored).
		key := false
		if !haveGrid {
			nextKey, haveGrid, key = w.first+(floorDiv(pts-w.first, w.interval)+1)*w.interval, true, true
		} else if pts >= nextKey {
			key = true
			nextKey += ((pts-nextKey)/w.interval + 1) * w.interval
		}
		// The ticks (encodeRung).
		at, kept := ticks.next(pts, key)
		sf := SourceFrame{PTS: pts, At: at, Kept: kept, Key: key && kept}
		// A cell holds the frames from its grid keyframe (the first at or
		// after From) to the next one's: by their timestamps, whatever
		// instant their ticks round to (a frame just before From may
		// round to it, the keyframe after it a frame later).
		switch {
		case kept && pts >= w.to:
			frames = append(frames, sf)
			return errWindowDone
		case kept && pts >= w.from:
			sf.InWindow, seenWindow = true, true
			frames = append(frames, sf)
			if err := w.source(s, f, at); err != nil {
				return err
			}
			if feed != nil {
				return feed(f, pts, at, true)
			}
			return nil
		}
		frames = append(frames, sf)
		if !seenWindow && len(frames) > keptBefore {
			frames = frames[1:]
		}
		if feed != nil {
			return feed(f, pts, at, false)
		}
		return nil
	}
	dec, err := New(Config{Backend: BackendSoftware, KeyframeInterval: cfg.KeyframeInterval}, cfg.Source, []Rung{{Name: "source", Height: 2}})
	if err != nil {
		return nil, false, fmt.Errorf("compare: the source's decoder: %w", err)
	}
	defer dec.Close()
	dec.onFrame = handle
	s.begin()
	eof := true
	for _, au := range cfg.SourceAUs {
		err = dec.Push(au, nil)
		if err != nil {
			break
		}
	}
	if err == nil {
		err = dec.Flush(nil)
	}
	switch {
	case errors.Is(err, errWindowDone):
		eof = false
	case err != nil:
		return nil, false, err
	}
	if err := s.end(); err != nil {
		return nil, false, err
	}
	return frames, eof, nil
}
