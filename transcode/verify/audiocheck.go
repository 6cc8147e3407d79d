package verify

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// The sound of an audio rendition, sampled: CheckAudio decodes the
// source's audio over the windows of a few of the rendition's segments
// (on the VOD timeline, as the origin's own transcoder counts its
// samples: ffmpeg.DecodeAudioWindows) and the worker's AAC of the same
// segments (ffmpeg.DecodeAAC), both to stereo at AudioRate, and compares
// them: the normalized cross-correlation of the two, both channels
// together, below AudioBand, at the best of the lags within MaxAudioLag,
// and their levels.

// AudioRate is the rate the sound is compared at: the origin's
// transcoder's, so that the source's is what its AAC encoder takes, and a
// worker's timestamps, whole samples of it, align exactly.
const AudioRate = 48000

// AudioBand is the band the correlation is measured over (Hz): AAC at
// the ladder's bitrate keeps the waveform there; above, FFmpeg's encoder
// codes noise-like bands as noise of the same energy (over the whole
// band, honest white noise correlates 0.80 to 0.98).
const AudioBand = 4000

// MaxAudioLag is how far the worker's audio may be from where its
// timestamps put it (encoder delay, a frame's rounding) and still be
// compared at its best alignment.
const MaxAudioLag = 50 * time.Millisecond

// The window compared of a picked segment: at most maxAudioWindow of it
// (from its start), at least minAudioWindow (a short last segment takes
// the end of the one before).
const (
	maxAudioWindow = 4 * time.Second
	minAudioWindow = 500 * time.Millisecond
)

// AudioThresholds decide the audio check. Zero fields take the defaults.
type AudioThresholds struct {
	// MinCorrelation: the worker's sound must correlate at least this
	// much with the source's.
	MinCorrelation float64
	// MaxLevelDiff: its level (RMS) may be at most this far from the
	// source's, in dB.
	MaxLevelDiff float64
	// SilentLevel: a window of the source below this level (dBFS) is
	// silence; the worker's must then be below SilentLevel +
	// MaxLevelDiff.
	SilentLevel float64
}

// DefaultAudioThresholds, from the figures TestCheckAudio logs (the
// README's "Verifying remote transcodes" has the table): honest AAC, Shoal's
// and FFmpeg's at 64 to 128 kbit/s, correlates 0.973 (full-scale white
// noise) to 1.000 with the source's sound below 4 kHz and keeps its level
// within 0.5 dB; another sound correlates under 0.2, the source's with a
// tone mixed in 6 dB under it 0.88.
var DefaultAudioThresholds = AudioThresholds{
	MinCorrelation: 0.9,
	MaxLevelDiff:   6,
	SilentLevel:    -60,
}

func (t AudioThresholds) withDefaults() AudioThresholds {
	d := DefaultAudioThresholds
	if t.MinCorrelation > 0 {
		d.MinCorrelation = t.MinCorrelation
	}
	if t.MaxLevelDiff > 0 {
		d.MaxLevelDiff = t.MaxLevelDiff
	}
	if t.SilentLevel < 0 {
		d.SilentLevel = t.SilentLevel
	}
	return d
}

// AudioRequest is the audio check of a worker's audio rendition. Without
// picks, it only finds whether the source has audio that decodes.
type AudioRequest struct {
	// Source is the path of the source media file.
	Source string
	// Segments is how many segments the rendition has; Read returns
	// segment i with its initialization section (an error from it is the
	// checker's).
	Segments int
	Read     func(i int) (Segment, error)
	// Picks are the segments to check (indexes below Segments). Each is
	// decoded with the segments next to it, whose sound the decoder
	// needs first and the lags reach into.
	Picks []int
	// VideoStart is when the output's first video frame is presented on
	// the audio's timeline (its decode times'): the instant the VOD
	// timeline's zero (the source's first frame) is heard at. The
	// packager puts the audio on the video's decode timeline, whose zero
	// is the first frame's decode time: an encoder with B-frames
	// presents it a few frames later (x264's veryfast: 2 frames).
	VideoStart time.Duration
	// Thresholds decide (zero: DefaultAudioThresholds).
	Thresholds AudioThresholds
	// WindowAt, when set, says where in a picked segment longer than the
	// part compared (maxAudioWindow) that part starts: a fraction of the
	// room left, in [0, 1) (WindowFraction, a secret of the sampler's);
	// unset, the part starts with the segment.
	WindowAt func(segment int) float64
}

// AudioResult is the verdict on one picked segment.
type AudioResult struct {
	Segment int
	// From and To are the window compared, on the audio rendition's
	// timeline (its decode times').
	From, To time.Duration
	Match    AudioMatch
	Passed   bool
	// Reason says why it failed, or what was found when it passed.
	Reason string
}

// AudioReport is the verdict on an audio rendition's picked segments.
type AudioReport struct {
	Passed  bool
	Results []AudioResult
	// SourceAudio tells whether the source has audio that decodes (the
	// origin's transcoder makes an audio rendition only then).
	SourceAudio bool
	Elapsed     time.Duration
}

// Reason is the first failure's ("" when it passed).
func (r AudioReport) Reason() string {
	for _, w := range r.Results {
		if !w.Passed {
			return w.Reason
		}
	}
	return ""
}

// audioPick is a picked segment as CheckAudio decodes it.
type audioPick struct {
	res    AudioResult
	config []byte   // the AudioSpecificConfig
	frames [][]byte // of the segments decoded, in order
	start  time.Duration
	done   bool // judged before any decoding (it did not parse)
}

// CheckAudio checks the sound of a worker's audio rendition: each picked
// segment (and at most maxAudioWindow of it) against the source's over
// the same window. It passes where the two correlate at least
// MinCorrelation at their best lag within MaxAudioLag, with levels at
// most MaxLevelDiff apart, or both are silent. The error is for the
// checker's own failures only (bad arguments, the source unreadable, a
// segment it cannot read, ctx done); whatever is wrong with the worker's
// audio is in the report.
func CheckAudio(ctx context.Context, req AudioRequest) (AudioReport, error) {
	began := time.Now()
	if req.Source == "" || len(req.Picks) > 0 && (req.Read == nil || req.Segments <= 0) {
		return AudioReport{}, errors.New("verify: the source, and with picks the segments and their reader, are required")
	}
	th := req.Thresholds.withDefaults()
	picks := slices.Clone(req.Picks)
	slices.Sort(picks)
	picks = slices.Compact(picks)
	var ps []*audioPick
	var windows []ffmpeg.AudioWindow
	var todo []*audioPick // the picks of windows, in order
	for _, k := range picks {
		if k < 0 || k >= req.Segments {
			return AudioReport{}, fmt.Errorf("verify: pick %d out of the %d segments", k, req.Segments)
		}
		p, err := prepareAudio(req, k)
		if err != nil {
			return AudioReport{}, err
		}
		ps = append(ps, p)
		if !p.done {
			windows = append(windows, ffmpeg.AudioWindow{From: p.res.From - req.VideoStart, To: p.res.To - req.VideoStart})
			todo = append(todo, p)
		}
	}
	lag := int(MaxAudioLag * AudioRate / time.Second)
	decodes, err := ffmpeg.DecodeAudioWindows(ctx, req.Source, AudioRate, windows, func(i int, src [2][]float32) error {
		p := todo[i]
		coded, err := ffmpeg.DecodeAAC(p.config, p.frames, AudioRate)
		if errors.Is(err, ffmpeg.ErrBadAudio) {
			p.res.Reason = clipped(err.Error())
			return nil
		}
		if err != nil {
			return err
		}
		p.frames = nil
		off := int(math.Round((p.res.From - p.start).Seconds() * AudioRate))
		p.res.Match = CompareAudio(src, coded, off, lag, float64(AudioBand)/AudioRate)
		p.res.Passed, p.res.Reason = th.judge(p.res.Match)
		p.done = true
		return nil
	})
	if err != nil {
		if ctx.Err() != nil {
			return AudioReport{}, ctx.Err()
		}
		return AudioReport{}, fmt.Errorf("verify: the source's audio: %w", err)
	}
	rep := AudioReport{Passed: true, SourceAudio: decodes}
	for _, p := range ps {
		if !decodes && len(todo) > 0 && p.res.Reason == "" {
			p.res.Reason = "the source has no audio that decodes"
		}
		if !p.res.Passed {
			rep.Passed = false
		}
		rep.Results = append(rep.Results, p.res)
	}
	rep.Elapsed = time.Since(began)
	return rep, nil
}

// prepareAudio reads and parses picked segment k and the segments next to
// it (those that parse, of the same configuration: the decoder needs the
// sound before the window, the lags reach past its ends) and sets the
// window compared.
func prepareAudio(req AudioRequest, k int) (*audioPick, error) {
	p := &audioPick{res: AudioResult{Segment: k}}
	read := func(i int) (ParsedAudio, []byte, error, error) {
		s, err := req.Read(i)
		if err != nil {
			return ParsedAudio{}, nil, nil, fmt.Errorf("verify: reading audio segment %d: %w", i, err)
		}
		a, err := ParseAudioSegment(s)
		if err != nil {
			return ParsedAudio{}, nil, fmt.Errorf("it is not AAC audio: %w", err), nil
		}
		cfg, err := a.Config.Marshal()
		if err != nil {
			return ParsedAudio{}, nil, fmt.Errorf("its AAC configuration: %w", err), nil
		}
		return a, cfg, nil, nil
	}
	picked, cfg, bad, err := read(k)
	if err != nil {
		return nil, err
	}
	if bad != nil {
		p.res.Reason, p.done = clipped(bad.Error()), true
		return p, nil
	}
	p.config = cfg
	run := []ParsedAudio{picked}
	if k > 0 {
		a, c, bad, err := read(k - 1)
		if err != nil {
			return nil, err
		}
		if bad == nil && bytes.Equal(c, cfg) {
			run = append([]ParsedAudio{a}, run...)
		}
	}
	if k+1 < req.Segments {
		a, c, bad, err := read(k + 1)
		if err != nil {
			return nil, err
		}
		if bad == nil && bytes.Equal(c, cfg) {
			run = append(run, a)
		}
	}
	// The window, and the frames decoded: those from a frame and the
	// lags before it to the lags after it (the run's frames follow each
	// other: checkAudioSegments' rule).
	frame := time.Duration(AACFrameSamples) * time.Second / time.Duration(picked.Config.SampleRate)
	from, to := picked.Start, picked.Start+picked.Duration
	if room := picked.Duration - maxAudioWindow; room > 0 && req.WindowAt != nil {
		// Anywhere in the segment: a worker must not know which part.
		from += time.Duration(min(max(req.WindowAt(k), 0), 1) * float64(room))
	}
	to = min(to, from+maxAudioWindow)
	if to-from < minAudioWindow {
		from = to - minAudioWindow
	}
	// The decoder's first frame lacks the one before it.
	from = max(from, run[0].Start+frame)
	margin := MaxAudioLag + 2*frame
	i := 0
	for _, a := range run {
		for _, f := range a.Frames {
			at := run[0].Start + time.Duration(i)*frame
			i++
			if at+frame <= from-margin || at >= to+margin {
				continue
			}
			if len(p.frames) == 0 {
				p.start = at
			}
			p.frames = append(p.frames, f)
		}
	}
	p.res.From, p.res.To = from, to
	if to-from < 2*frame {
		p.res.Passed, p.res.Reason, p.done = true, "too short to compare", true
	}
	return p, nil
}

// judge decides a window from its match.
func (t AudioThresholds) judge(m AudioMatch) (bool, string) {
	switch {
	case m.SourceLevel < t.SilentLevel:
		if m.Level > t.SilentLevel+t.MaxLevelDiff {
			return false, fmt.Sprintf("the source is silent there (%.1f dBFS); the audio is at %.1f dBFS", m.SourceLevel, m.Level)
		}
		return true, fmt.Sprintf("silent (%.1f dBFS), as the source (%.1f dBFS)", m.Level, m.SourceLevel)
	case m.Level < t.SilentLevel:
		return false, fmt.Sprintf("it is silent (%.1f dBFS) where the source's sound is at %.1f dBFS", m.Level, m.SourceLevel)
	case m.Correlation < t.MinCorrelation:
		return false, fmt.Sprintf("its sound correlates %.3f with the source's (SNR %.1f dB; at least %.2f wanted): another sound", m.Correlation, m.SNR(), t.MinCorrelation)
	case math.Abs(m.Level-m.SourceLevel) > t.MaxLevelDiff:
		return false, fmt.Sprintf("its level is %.1f dBFS, the source's %.1f dBFS: more than %.0f dB apart", m.Level, m.SourceLevel, t.MaxLevelDiff)
	}
	return true, fmt.Sprintf("correlates %.3f with the source's sound (SNR %.1f dB, %d samples late), level %.1f dBFS (source %.1f)",
		m.Correlation, m.SNR(), m.Lag, m.Level, m.SourceLevel)
}

func clipped(s string) string {
	if len(s) > 200 {
		s = s[:200] + "..."
	}
	return s
}
