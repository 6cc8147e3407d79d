package ffmpeg

import (
	"math"
	"slices"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// liveRun is a live source and what the pipeline made of it for one rung.
type liveRun struct {
	track    media.Track
	source   []*media.AccessUnit
	rung     Rung
	out      []*media.AccessUnit // the rung's access units, decode order
	outTrack media.Track
	anchor   int64
	interval time.Duration
}

// runLive demuxes a clip, moves it onto a live timeline (far from 0) and
// runs the live pipeline over it with a keyframe grid anchored off the
// source's keyframes.
func runLive(t *testing.T, path string, rung Rung, interval time.Duration) liveRun {
	t.Helper()
	const offset = 123_456_789
	r := liveRun{rung: rung, interval: interval}
	err := DemuxVideo(path, func(tr media.Track, au *media.AccessUnit) error {
		if r.source == nil {
			r.track = tr
		}
		au.PTS += offset
		au.DTS += offset
		r.source = append(r.source, au)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	// 0.3 s in and between two frames: not on a source keyframe, and the
	// cell's keyframe (the next frame) rounds to a tick after the grid.
	r.anchor = r.source[0].PTS + 27_000 + 1_110
	p, err := New(Config{Preset: "veryfast", KeyframeInterval: interval, Anchored: true, KeyframeAnchor: r.anchor, Log: quiet}, r.track, []Rung{rung})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	emit := func(_ int, au *media.AccessUnit) { r.out = append(r.out, au) }
	for _, au := range r.source {
		if err := p.Push(au, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(emit); err != nil {
		t.Fatal(err)
	}
	r.outTrack = p.OutputRungs()[0].Track(r.out[0])
	return r
}

// gop returns the rung's access units of grid cell k ([anchor + k*interval,
// anchor + (k+1)*interval)) and the source from its latest keyframe a
// second or more before the cell.
func (r liveRun) gop(t *testing.T, k int64) (from, to int64, cand CodedVideo, src []*media.AccessUnit) {
	t.Helper()
	step := media.Ticks(r.interval, 90000)
	from, to = r.anchor+k*step, r.anchor+(k+1)*step
	start, end := -1, len(r.out)
	for i, au := range r.out {
		if !au.Keyframe {
			continue
		}
		switch {
		case start < 0 && au.PTS >= from-1500 && au.PTS < to:
			start = i
		case start >= 0 && end == len(r.out):
			end = i
		}
	}
	if start < 0 {
		t.Fatalf("no keyframe in cell %d", k)
	}
	s := 0
	for i, au := range r.source {
		if au.Keyframe && au.PTS <= from-90000 {
			s = i
		}
	}
	return from, to, CodedVideo{Track: r.outTrack, AUs: r.out[start:end]}, r.source[s:]
}

// CompareLive follows the live ladder: over a cell of the anchored grid,
// the frames it says the ladder keeps are those the pipeline encoded, at
// the same instants, starting with the cell's keyframe; the pipeline's
// output and the reference score within half a dB of each other (the
// reference starts more than a second before the cell, the ladder long
// before: x264 is warm in both).
func TestCompareLiveFollowsTheLadder(t *testing.T) {
	t.Parallel()
	src := makeClip(t, "live.ts", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-t", "6", "-c:v", "libx264", "-preset", "ultrafast",
		"-g", "45", "-pix_fmt", "yuv420p", "-f", "mpegts")
	run := runLive(t, src, Rung{Name: "180p", Height: 180, Bitrate: 300_000}, time.Second)
	from, to, cand, source := run.gop(t, 2)
	res, err := CompareLive(t.Context(), LiveCompareConfig{Source: run.track, SourceAUs: source, From: from, To: to,
		KeyframeInterval: run.interval, KeyframeAnchor: run.anchor, Rung: run.rung, Candidate: cand, Reference: &Config{Preset: "veryfast"}})
	if err != nil {
		t.Fatal(err)
	}
	if res.EOF || res.Rung.Width != 240 || res.Rung.Height != 180 {
		t.Fatalf("EOF %v, rung %+v", res.EOF, res.Rung)
	}
	var window []SourceFrame
	for _, f := range res.Frames {
		if f.InWindow {
			window = append(window, f)
		}
	}
	// The candidate in presentation order: a closed GOP of 30 frames.
	pts := make([]int64, len(cand.AUs))
	for i, au := range cand.AUs {
		pts[i] = au.PTS
	}
	slices.Sort(pts)
	if len(window) != 30 || len(pts) != 30 {
		t.Fatalf("CompareLive keeps %d frames, the ladder encoded %d, want 30", len(window), len(pts))
	}
	for i, f := range window {
		if f.At != pts[i] || f.Key != (i == 0) {
			t.Fatalf("frame %d: at %d key %v; the ladder's at %d", i, f.At, f.Key, pts[i])
		}
	}
	if c := res.Candidate; c.Err != nil || len(c.Frames) != 30 {
		t.Fatalf("candidate: %d frames, %v", len(c.Frames), c.Err)
	}
	for i, f := range res.Candidate.Frames {
		if f.Source != i || f.PSNR < 30 {
			t.Fatalf("frame %d: %+v", i, f)
		}
	}
	if res.Reference == nil || len(res.Reference.Frames) != 30 {
		t.Fatalf("reference: %+v", res.Reference)
	}
	ours, ref := meanPSNR(res.Candidate.Frames), meanPSNR(res.Reference.Frames)
	t.Logf("PSNR %.3f dB, reference %.3f dB", ours, ref)
	if math.Abs(ours-ref) > 0.5 {
		t.Errorf("the ladder's encode scores %.3f dB, the reference %.3f dB", ours, ref)
	}

	// What cannot be compared is an error.
	bad := []LiveCompareConfig{
		{Source: run.track, SourceAUs: source[1:], From: from, To: to, KeyframeInterval: time.Second, Rung: run.rung},
		{Source: run.track, SourceAUs: source, From: to, To: from, KeyframeInterval: time.Second, Rung: run.rung},
		{Source: run.track, SourceAUs: source, From: from, To: to, Rung: run.rung},
		{Source: media.Track{Codec: media.CodecH264}, SourceAUs: source, From: from, To: to, KeyframeInterval: time.Second, Rung: run.rung},
	}
	for i, c := range bad {
		if _, err := CompareLive(t.Context(), c); err == nil {
			t.Errorf("case %d: no error", i)
		}
	}
}

// At 29.97 fps the grid instants fall between frames and the cells'
// keyframes round to ticks up to a frame after them: every cell CompareLive
// lays out is the one the pipeline encoded, frame for frame.
func TestCompareLiveNTSC(t *testing.T) {
	t.Parallel()
	src := makeClip(t, "ntsc.ts", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30000/1001", "-t", "6", "-c:v", "libx264",
		"-preset", "ultrafast", "-g", "45", "-pix_fmt", "yuv420p", "-f", "mpegts")
	run := runLive(t, src, Rung{Name: "180p", Height: 180, Bitrate: 300_000}, time.Second)
	for k := int64(1); k <= 4; k++ {
		from, to, cand, source := run.gop(t, k)
		res, err := CompareLive(t.Context(), LiveCompareConfig{Source: run.track, SourceAUs: source, From: from, To: to,
			KeyframeInterval: run.interval, KeyframeAnchor: run.anchor, Rung: run.rung, Candidate: cand})
		if err != nil {
			t.Fatal(err)
		}
		var at []int64
		for _, f := range res.Frames {
			if f.InWindow {
				at = append(at, f.At)
			}
		}
		pts := make([]int64, len(cand.AUs))
		for i, au := range cand.AUs {
			pts[i] = au.PTS
		}
		slices.Sort(pts)
		if !slices.Equal(at, pts) {
			t.Errorf("cell %d: CompareLive lays out %v, the ladder encoded %v", k, at, pts)
		}
		if c := res.Candidate; c.Err != nil || len(c.Frames) != len(pts) {
			t.Errorf("cell %d: candidate %d frames of %d, %v", k, len(c.Frames), len(pts), c.Err)
		}
	}
}

// The encoders' tick follows the source's declared frame rate (60 fps
// when its SPS declares none): the tolerance of a keyframe's instant.
func TestEncoderTick(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		rate string
		want int64
	}{{"15", 6000}, {"30", 3000}, {"30000/1001", 3003}} {
		src := makeClip(t, "tick.ts", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate="+c.rate, "-t", "1", "-c:v", "libx264",
			"-preset", "ultrafast", "-pix_fmt", "yuv420p", "-f", "mpegts")
		var track media.Track
		if err := DemuxVideo(src, func(tr media.Track, _ *media.AccessUnit) error { track = tr; return nil }); err != nil {
			t.Fatal(err)
		}
		if got := EncoderTick(track); got != c.want {
			t.Errorf("%s fps: tick %d, want %d", c.rate, got, c.want)
		}
	}
	if got := EncoderTick(media.Track{Codec: media.CodecH264}); got != 1500 {
		t.Errorf("no SPS: tick %d, want 1500 (60 fps)", got)
	}
}
