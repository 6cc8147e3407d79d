// Package verify checks a rendition segment that an untrusted worker
// transcoded against the source it was made from, as the origin's own
// ladder would have made it:
//
//   - the segment parses and decodes (H.264 in fMP4 or MPEG-TS);
//   - its pictures have the rung's size, what the ladder makes of the
//     source (never upscaled, the source's aspect ratio, even width);
//   - it starts where the segment's window of the source starts, holds
//     exactly the frames the ladder keeps in that window, at their
//     instants, and lasts as long;
//   - its keyframes are exactly where the ladder forces them (the first
//     frame of the segment, an IDR on the keyframe grid, and any grid
//     instant inside it), closed GOPs;
//   - its pictures are close enough to the source's: each decoded frame
//     is compared (PSNR, SSIM) with the source frame shown at its instant,
//     scaled to the rung's size as the ladder scales it, and the origin
//     also encodes the same window itself (x264, the node's preset and the
//     rung's bitrate) and measures that encode the same way. Encoders are
//     not bit-exact across hardware, so the segment passes when it is not
//     much worse than that reference and above absolute floors.
//
// Check gives a Report; its error is only for what kept the check from
// being made (an unreadable source, bad arguments), so that a caller tells
// a worker that cheated from a check that could not run. Sample picks the
// segments of a job to check, unpredictably for the worker. CheckAudio
// compares the sound of an audio rendition's segments with the source's
// (audiocheck.go).
//
// The C-touching parts (decoding, scaling, the reference encode, the
// metrics) are ffmpeg.CompareSegment's, and for the sound
// ffmpeg.DecodeAudioWindows' and ffmpeg.DecodeAAC's.
package verify

import (
	"context"
	"errors"
	"fmt"
	"math"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Settings are the node's transcoding settings the rendition was made
// with.
type Settings struct {
	// Preset is the x264 preset ("" is veryfast, the ladder's default).
	Preset string
	// SegmentDuration is the target segment duration.
	SegmentDuration time.Duration
	// KeyframeInterval is the spacing of the forced keyframes; 0 means
	// SegmentDuration (as VOD and live transcoding use).
	KeyframeInterval time.Duration
	// Backend is the encoder the worker says it used (software, nvenc,
	// qsv): reported only; the reference is always x264.
	Backend string
}

// Thresholds decide the quality check. Zero fields take the defaults.
type Thresholds struct {
	// PSNRMargin: the segment's mean PSNR (dB, YUV 6:1:1) may be this far
	// below the reference's.
	PSNRMargin float64
	// MinPSNR: the segment's mean PSNR must be at least this (with a
	// reference below MinPSNR + PSNRMargin, the reference's less the
	// margin: content the origin's own encoder renders that badly does
	// not condemn honest workers).
	MinPSNR float64
	// SSIMMargin: the segment's mean SSIM may be this far below the
	// reference's.
	SSIMMargin float64
	// MinSSIM: the segment's mean SSIM must be at least this (lowered
	// as MinPSNR is).
	MinSSIM float64
	// FramePSNRMargin: the segment's worst frame may be this far below
	// the reference's worst frame (a frame replaced by another).
	FramePSNRMargin float64
	// NeighbourMargin: a frame whose luma is this much closer (PSNR, dB)
	// to the source frame before or after its instant than to its own
	// (plus however much closer the reference's frame is, if it is)
	// shows another instant (a frame repeated, or dropped and the next
	// ones shifted): the frames check fails.
	NeighbourMargin float64
}

// Default thresholds, from the figures this package's tests log
// (TestOtherHonestEncodersPass, TestCheatsFail; the README's "Verifying
// remote transcodes" has the table): honest encodes by other x264
// configurations (medium, superfast, no B-frames or lookahead) stay within
// 1.4 dB of the reference's mean PSNR and 0.01 of its SSIM, on easy and on
// detailed content; a quarter of the bitrate loses 4 to 12 dB, a blur of
// sigma 1 3 to 9 dB, another picture falls below 20 dB; a frame replaced
// by its neighbour is 8 to 19 dB closer to the neighbour's source frame
// than to its own, honest frames at least 2 dB further.
var DefaultThresholds = Thresholds{
	PSNRMargin:      3,
	MinPSNR:         25,
	SSIMMargin:      0.03,
	MinSSIM:         0.85,
	FramePSNRMargin: 8,
	NeighbourMargin: 2,
}

func (t Thresholds) withDefaults() Thresholds {
	d := DefaultThresholds
	if t.PSNRMargin > 0 {
		d.PSNRMargin = t.PSNRMargin
	}
	if t.MinPSNR > 0 {
		d.MinPSNR = t.MinPSNR
	}
	if t.SSIMMargin > 0 {
		d.SSIMMargin = t.SSIMMargin
	}
	if t.MinSSIM > 0 {
		d.MinSSIM = t.MinSSIM
	}
	if t.FramePSNRMargin > 0 {
		d.FramePSNRMargin = t.FramePSNRMargin
	}
	if t.NeighbourMargin > 0 {
		d.NeighbourMargin = t.NeighbourMargin
	}
	return d
}

// Request is one segment to check.
type Request struct {
	// Source is the path of the source media file (any container FFmpeg
	// reads; the origin has it).
	Source string
	// Segment is the worker's segment.
	Segment Segment
	// Start and End are the segment's span on the VOD timeline (0 at the
	// source's first frame), as the rendition's playlist gives them: the
	// sum of the EXTINF durations before it, and that plus its own. They
	// are matched to the source's frames to the nearest frame.
	Start, End time.Duration
	// Rung is the rendition: Height (the ladder's rung height) and
	// Bitrate are required; the size checked is what the ladder makes of
	// the source at that height. A non-zero Width must agree with it.
	Rung ffmpeg.Rung
	// Settings are the node's.
	Settings Settings
	// Thresholds decide the quality check (zero: DefaultThresholds).
	Thresholds Thresholds
	// NoReference skips the reference encode (about half the cost): the
	// quality check then uses the absolute floors only.
	NoReference bool
}

// Check names.
const (
	CheckDecode     = "decode"
	CheckResolution = "resolution"
	CheckTiming     = "timing"
	CheckFrames     = "frames"
	CheckDuration   = "duration"
	CheckKeyframes  = "keyframes"
	CheckQuality    = "quality"
)

// CheckResult is the outcome of one check.
type CheckResult struct {
	Name   string
	Passed bool
	// Reason says why it failed, or what was found when it passed.
	Reason string
}

// Figures are what the checks measured. Times are on the VOD timeline or,
// for keyframes, offsets from the segment's first frame.
type Figures struct {
	Format                string // FormatFMP4 or FormatMPEGTS ("" when it did not parse)
	Backend               string // Settings.Backend
	Width, Height         int    // the size the segment's SPS declares
	WantWidth, WantHeight int
	// Start is the decode time of the segment's first sample (fMP4: its
	// tfdt).
	Start, WantStart time.Duration
	// Frames are the segment's samples, DecodedFrames the pictures that
	// came out of them.
	Frames, WantFrames, DecodedFrames int
	Duration, WantDuration            time.Duration
	Keyframes, WantKeyframes          []time.Duration
	// PSNR (dB, YUV 6:1:1 weighted), PSNRY (luma) and SSIM (the planes
	// weighted by size) are means over the segment's decoded frames;
	// MinPSNR is its worst frame's PSNR.
	PSNR, PSNRY, SSIM, MinPSNR float64
	// The same for the origin's reference encode of the window (zero with
	// NoReference).
	RefPSNR, RefPSNRY, RefSSIM, RefMinPSNR float64
	// FramePSNR is each decoded frame's PSNR, in presentation order.
	FramePSNR []float64
	// NeighbourGap is the most by which a decoded frame's luma resembles
	// the source frame before or after its own instant more than its own
	// (dB; negative when every frame resembles its own best).
	NeighbourGap float64
	// Elapsed is the wall time the check took.
	Elapsed time.Duration
}

// Report is the verdict on one segment.
type Report struct {
	Passed  bool
	Checks  []CheckResult
	Figures Figures
}

// Failed returns the checks that failed.
func (r Report) Failed() []CheckResult {
	var out []CheckResult
	for _, c := range r.Checks {
		if !c.Passed {
			out = append(out, c)
		}
	}
	return out
}

// Check returns the check of that name (false when it is not in the
// report).
func (r Report) Check(name string) (CheckResult, bool) {
	for _, c := range r.Checks {
		if c.Name == name {
			return c, true
		}
	}
	return CheckResult{}, false
}

// Reason sums up the failed checks in one line ("" when it passed).
func (r Report) Reason() string {
	var parts []string
	for _, c := range r.Failed() {
		parts = append(parts, c.Name+": "+c.Reason)
	}
	return strings.Join(parts, "; ")
}

// maxSpan bounds a segment's claimed span.
const maxSpan = 60 * time.Second

func (req Request) validate() error {
	var errs []error
	if req.Source == "" {
		errs = append(errs, errors.New("the source path is required"))
	}
	if req.Start < 0 || req.End <= req.Start || req.End-req.Start > maxSpan {
		errs = append(errs, fmt.Errorf("bad segment span [%s, %s) (at most %s long)", req.Start, req.End, maxSpan))
	}
	return validated(errs, req.Rung, req.Settings, req.NoReference)
}

// validated adds the checks of the rung and the settings to errs and
// returns them as one error (nil when there are none).
func validated(errs []error, rung ffmpeg.Rung, settings Settings, noReference bool) error {
	if rung.Height < 2 || rung.Height > 8192 || rung.Width < 0 || rung.Width > 8192 {
		errs = append(errs, fmt.Errorf("bad rung size %dx%d", rung.Width, rung.Height))
	}
	if rung.Bitrate <= 0 && !noReference {
		errs = append(errs, errors.New("the rung's bitrate is required for the reference encode"))
	}
	if settings.SegmentDuration <= 0 && settings.KeyframeInterval <= 0 {
		errs = append(errs, errors.New("the segment duration (or keyframe interval) is required"))
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	return nil
}

// Check verifies one segment (see the package documentation). The error
// is for the checker's own failures only: bad arguments, a source it
// cannot read, a reference encode that fails, ctx done. Whatever is wrong
// with the segment is in the Report.
func Check(ctx context.Context, req Request) (Report, error) {
	began := time.Now()
	if err := req.validate(); err != nil {
		return Report{}, err
	}
	th := req.Thresholds.withDefaults()
	interval := req.Settings.interval()
	c := &checker{start: req.Start, end: req.End, th: th}
	c.fig.Backend = req.Settings.Backend

	seg, perr := ParseSegment(req.Segment)
	if perr != nil {
		return c.unparsed(perr, began), nil
	}
	c.seg = seg
	cfg := ffmpeg.CompareConfig{
		Source: req.Source, From: req.Start, To: req.End, KeyframeInterval: interval,
		Rung:      ffmpeg.Rung{Name: req.Rung.Name, Height: req.Rung.Height, Bitrate: req.Rung.Bitrate},
		Candidate: candidate(seg),
	}
	cfg.Reference = req.Settings.reference(req.NoReference)
	res, err := ffmpeg.CompareSegment(ctx, cfg)
	if err := compared(req.Rung, res, err); err != nil {
		return Report{}, err
	}
	return c.run(res, began), nil
}

// interval is the keyframe interval the settings give.
func (s Settings) interval() time.Duration {
	if s.KeyframeInterval > 0 {
		return s.KeyframeInterval
	}
	return s.SegmentDuration
}

// reference is the reference encode's configuration: x264 everywhere, the
// node's preset (nil with noReference).
func (s Settings) reference(noReference bool) *ffmpeg.Config {
	if noReference {
		return nil
	}
	return &ffmpeg.Config{Backend: ffmpeg.BackendSoftware, Preset: s.Preset, KeyframeInterval: s.interval()}
}

// compared is a comparison's error as the checker's, or the refusal of a
// rung whose size is not what the ladder makes of the source.
func compared(rung ffmpeg.Rung, res ffmpeg.CompareResult, err error) error {
	if err != nil {
		return fmt.Errorf("verify: %w", err)
	}
	if rung.Width != 0 && (rung.Width != res.Rung.Width || rung.Height != res.Rung.Height) {
		return fmt.Errorf("verify: the rung %dx%d is not what the ladder makes of this %dx%d source at height %d (%dx%d)",
			rung.Width, rung.Height, res.SourceWidth, res.SourceHeight, rung.Height, res.Rung.Width, res.Rung.Height)
	}
	return nil
}

// unparsed is the report on a segment that does not parse.
func (c *checker) unparsed(err error, began time.Time) Report {
	c.add(CheckDecode, false, err.Error())
	for _, n := range []string{CheckResolution, CheckTiming, CheckFrames, CheckDuration, CheckKeyframes, CheckQuality} {
		c.add(n, false, "not checked: the segment does not parse")
	}
	return c.report(began)
}

// run makes the checks of a comparison's result.
func (c *checker) run(res ffmpeg.CompareResult, began time.Time) Report {
	c.res = res
	c.exp = expect(res)
	c.decode()
	c.resolution()
	c.timing()
	c.frames()
	c.duration()
	c.keyframes()
	c.quality()
	return c.report(began)
}

// candidate is the segment's video as CompareSegment takes it.
func candidate(p Parsed) ffmpeg.CodedVideo {
	v := ffmpeg.CodedVideo{Track: p.Track, AUs: make([]*media.AccessUnit, len(p.Samples))}
	for i, s := range p.Samples {
		v.AUs[i] = &media.AccessUnit{PTS: s.PTS, DTS: s.DTS, Keyframe: s.IDR, Payload: s.NALUs}
	}
	return v
}

type checker struct {
	// start and end are the span checked, for messages.
	start, end time.Duration
	th         Thresholds
	seg        Parsed
	res        ffmpeg.CompareResult
	exp        expectation
	checks     []CheckResult
	fig        Figures
}

func (c *checker) add(name string, ok bool, reason string) {
	c.checks = append(c.checks, CheckResult{Name: name, Passed: ok, Reason: reason})
}

func (c *checker) report(began time.Time) Report {
	c.fig.Elapsed = time.Since(began)
	r := Report{Passed: len(c.checks) > 0, Checks: c.checks, Figures: c.fig}
	for _, ch := range c.checks {
		r.Passed = r.Passed && ch.Passed
	}
	return r
}

func dur(ticks int64) time.Duration { return media.Duration(ticks, 90000) }

// secs renders a time in seconds, to the millisecond.
func secs(ticks int64) string { return fmt.Sprintf("%.3f s", float64(ticks)/90000) }

// tolerance is how far two instants may be and still be the same frame's:
// a quarter of a frame (timestamps are rounded differently by containers
// and encoders, by a tick or two).
func (c *checker) tolerance() int64 { return max(c.exp.frame/4, 2) }

func (c *checker) decode() {
	cand := c.res.Candidate
	c.fig.Format = c.seg.Format
	c.fig.DecodedFrames = cand.Decoded
	switch {
	case cand.Err != nil:
		c.add(CheckDecode, false, cand.Err.Error())
	case cand.Decoded != len(c.seg.Samples):
		c.add(CheckDecode, false, fmt.Sprintf("%d of its %d access units decoded to a picture", cand.Decoded, len(c.seg.Samples)))
	default:
		c.add(CheckDecode, true, fmt.Sprintf("%d pictures (%s)", cand.Decoded, c.seg.Format))
	}
}

func (c *checker) resolution() {
	w, h := c.res.Rung.Width, c.res.Rung.Height
	c.fig.Width, c.fig.Height = c.seg.Track.Width, c.seg.Track.Height
	c.fig.WantWidth, c.fig.WantHeight = w, h
	if c.seg.Track.Width != w || c.seg.Track.Height != h {
		c.add(CheckResolution, false, fmt.Sprintf("%dx%d, want %dx%d", c.seg.Track.Width, c.seg.Track.Height, w, h))
		return
	}
	for i, f := range c.res.Candidate.Frames {
		if f.Width != w || f.Height != h {
			c.add(CheckResolution, false, fmt.Sprintf("picture %d is %dx%d, want %dx%d", i, f.Width, f.Height, w, h))
			return
		}
	}
	c.add(CheckResolution, true, fmt.Sprintf("%dx%d", w, h))
}

func (c *checker) noFrames(name string) bool {
	if c.exp.empty {
		c.add(name, false, fmt.Sprintf("the source has no frame in [%s, %s)", c.start, c.end))
		return true
	}
	return false
}

func (c *checker) timing() {
	if c.noFrames(CheckTiming) {
		return
	}
	c.fig.Start, c.fig.WantStart = dur(c.seg.Start), dur(c.exp.start)
	d := c.seg.Start - c.exp.start
	if c.seg.Format == FormatMPEGTS { // 33-bit clock
		d &= tsWrap - 1
		if d >= tsWrap/2 {
			d -= tsWrap
		}
	}
	if abs(d) > c.tolerance() {
		c.add(CheckTiming, false, fmt.Sprintf("it starts at %s, want %s", secs(c.seg.Start), secs(c.exp.start)))
		return
	}
	c.add(CheckTiming, true, "starts at "+secs(c.seg.Start))
}

func abs(v int64) int64 {
	if v < 0 {
		return -v
	}
	return v
}

// presented returns the samples' instants relative to the first presented
// one, in presentation order, and which are IDR frames.
func (c *checker) presented() ([]int64, []bool) {
	order := c.seg.presentation()
	at := make([]int64, len(order))
	idr := make([]bool, len(order))
	base := c.seg.Samples[order[0]].PTS
	for i, k := range order {
		at[i] = c.seg.Samples[k].PTS - base
		idr[i] = c.seg.Samples[k].IDR
	}
	return at, idr
}

func (c *checker) frames() {
	c.fig.Frames = len(c.seg.Samples)
	if c.noFrames(CheckFrames) {
		return
	}
	want := c.exp.frames
	c.fig.WantFrames = len(want)
	got, _ := c.presented()
	tol := c.tolerance()
	for i := 0; i < max(len(got), len(want)); i++ {
		switch {
		case i >= len(got):
			c.add(CheckFrames, false, fmt.Sprintf("%d frames, want %d: none from +%s on", len(got), len(want), secs(want[i])))
			return
		case i >= len(want):
			c.add(CheckFrames, false, fmt.Sprintf("%d frames, want %d: extra frames from +%s on", len(got), len(want), secs(got[i])))
			return
		case got[i] > want[i]+tol:
			c.add(CheckFrames, false, fmt.Sprintf("%d frames, want %d: the frame at +%s is missing", len(got), len(want), secs(want[i])))
			return
		case got[i] < want[i]-tol:
			c.add(CheckFrames, false, fmt.Sprintf("%d frames, want %d: a frame at +%s where none belongs", len(got), len(want), secs(got[i])))
			return
		}
	}
	// Each frame must show its own instant: resemble its source frame
	// more than the ones before and after it. Where the reference itself
	// leans towards a neighbour (content an encoder cannot follow at this
	// bitrate, whose skipped blocks copy the previous picture), the bar
	// rises by as much.
	refGap := map[int]float64{}
	if ref := c.res.Reference; ref != nil {
		for _, f := range ref.Frames {
			refGap[f.Source] = max(f.PrevPSNRY, f.NextPSNRY) - f.PSNRY
		}
	}
	base := c.seg.Samples[c.seg.presentation()[0]].PTS
	for _, f := range c.res.Candidate.Frames {
		own, other, at := f.PSNRY, f.PrevPSNRY, f.Source-1
		if f.NextPSNRY > other {
			other, at = f.NextPSNRY, f.Source+1
		}
		if other-own <= c.th.NeighbourMargin+max(refGap[f.Source], 0) || f.Source < 0 || f.Source >= len(want) {
			continue
		}
		where := "the next segment's first frame"
		if at < len(want) {
			where = "+" + secs(want[at])
		}
		c.add(CheckFrames, false, fmt.Sprintf("the frame at +%s shows the source at %s, not at +%s (luma PSNR %.1f dB against it, %.1f dB against its own instant)",
			secs(f.PTS-base), where, secs(want[f.Source]), other, own))
		return
	}
	c.add(CheckFrames, true, fmt.Sprintf("%d frames, each at its source frame's instant", len(got)))
}

func (c *checker) duration() {
	if c.noFrames(CheckDuration) {
		return
	}
	c.fig.Duration, c.fig.WantDuration = dur(c.seg.Duration), dur(c.exp.duration)
	if abs(c.seg.Duration-c.exp.duration) > c.tolerance() {
		c.add(CheckDuration, false, fmt.Sprintf("%s, want %s", secs(c.seg.Duration), secs(c.exp.duration)))
		return
	}
	c.add(CheckDuration, true, secs(c.seg.Duration))
}

func (c *checker) keyframes() {
	if c.noFrames(CheckKeyframes) {
		return
	}
	at, idr := c.presented()
	var got, want []int64
	for i, k := range idr {
		if k {
			got = append(got, at[i])
			c.fig.Keyframes = append(c.fig.Keyframes, dur(at[i]))
		}
	}
	for i, k := range c.exp.keys {
		if k {
			want = append(want, c.exp.frames[i])
			c.fig.WantKeyframes = append(c.fig.WantKeyframes, dur(c.exp.frames[i]))
		}
	}
	list := func(v []int64) string {
		if len(v) == 0 {
			return "none"
		}
		s := make([]string, len(v))
		for i, t := range v {
			s[i] = "+" + secs(t)
		}
		return strings.Join(s, ", ")
	}
	switch {
	case !c.exp.keys[0]:
		c.add(CheckKeyframes, false, fmt.Sprintf("the segment's start %s is not on the keyframe grid (the source frame there is no segment start)", secs(c.exp.start)))
		return
	case !c.seg.Samples[0].IDR:
		c.add(CheckKeyframes, false, "the segment does not start with an IDR frame")
		return
	case !idr[0]:
		c.add(CheckKeyframes, false, "frames are presented before the segment's IDR frame (an open GOP)")
		return
	}
	for i, s := range c.seg.Samples {
		if s.Sync != s.IDR {
			what := "is marked a sync sample but holds no IDR slice"
			if s.IDR {
				what = "holds an IDR slice but is not marked a sync sample"
			}
			c.add(CheckKeyframes, false, fmt.Sprintf("sample %d %s", i, what))
			return
		}
	}
	ok := len(got) == len(want)
	for i := 0; ok && i < len(got); i++ {
		ok = abs(got[i]-want[i]) <= c.tolerance()
	}
	if !ok {
		c.add(CheckKeyframes, false, fmt.Sprintf("keyframes at %s, want %s", list(got), list(want)))
		return
	}
	c.add(CheckKeyframes, true, "keyframes at "+list(got))
}

// means returns the mean PSNR, PSNR-Y and SSIM of frames and the worst
// frame's PSNR.
func means(frames []ffmpeg.FrameScore) (psnr, psnrY, ssim, worst float64) {
	worst = math.Inf(1)
	for _, f := range frames {
		psnr += f.PSNR
		psnrY += f.PSNRY
		ssim += f.SSIM
		worst = min(worst, f.PSNR)
	}
	n := float64(len(frames))
	return psnr / n, psnrY / n, ssim / n, worst
}

func (c *checker) quality() {
	frames := c.res.Candidate.Frames
	if len(frames) == 0 {
		c.add(CheckQuality, false, "no picture decoded")
		return
	}
	f := &c.fig
	f.PSNR, f.PSNRY, f.SSIM, f.MinPSNR = means(frames)
	f.NeighbourGap = math.Inf(-1)
	for _, fr := range frames {
		f.FramePSNR = append(f.FramePSNR, fr.PSNR)
		f.NeighbourGap = max(f.NeighbourGap, max(fr.PrevPSNRY, fr.NextPSNRY)-fr.PSNRY)
	}
	th := c.th
	var fails []string
	if ref := c.res.Reference; ref != nil && len(ref.Frames) > 0 {
		f.RefPSNR, f.RefPSNRY, f.RefSSIM, f.RefMinPSNR = means(ref.Frames)
		// Content the origin's own encoder cannot render above the
		// floors must not condemn an honest worker: the floors come down
		// to the reference's figures less the margins.
		th.MinPSNR = min(th.MinPSNR, f.RefPSNR-th.PSNRMargin)
		th.MinSSIM = min(th.MinSSIM, f.RefSSIM-th.SSIMMargin)
		if f.PSNR < f.RefPSNR-th.PSNRMargin {
			fails = append(fails, fmt.Sprintf("PSNR %.2f dB is more than %.1f dB below the reference's %.2f dB", f.PSNR, th.PSNRMargin, f.RefPSNR))
		}
		if f.SSIM < f.RefSSIM-th.SSIMMargin {
			fails = append(fails, fmt.Sprintf("SSIM %.4f is more than %.3f below the reference's %.4f", f.SSIM, th.SSIMMargin, f.RefSSIM))
		}
		if f.MinPSNR < f.RefMinPSNR-th.FramePSNRMargin {
			fails = append(fails, fmt.Sprintf("its worst frame's PSNR %.2f dB is more than %.1f dB below the reference's worst %.2f dB", f.MinPSNR, th.FramePSNRMargin, f.RefMinPSNR))
		}
	}
	if f.PSNR < th.MinPSNR {
		fails = append(fails, fmt.Sprintf("PSNR %.2f dB is below the floor of %.1f dB", f.PSNR, th.MinPSNR))
	}
	if f.SSIM < th.MinSSIM {
		fails = append(fails, fmt.Sprintf("SSIM %.4f is below the floor of %.3f", f.SSIM, th.MinSSIM))
	}
	if len(fails) > 0 {
		c.add(CheckQuality, false, strings.Join(fails, "; "))
		return
	}
	msg := fmt.Sprintf("PSNR %.2f dB, SSIM %.4f", f.PSNR, f.SSIM)
	if c.res.Reference != nil {
		msg += fmt.Sprintf(" (reference %.2f dB, %.4f)", f.RefPSNR, f.RefSSIM)
	}
	c.add(CheckQuality, true, msg)
}
