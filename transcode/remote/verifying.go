package remote

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"os"
	"sync"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/verify"
)

// Sampled verification: before it publishes a worker's output, the origin
// transcodes again a share of its segments (Config.VerifyFraction, per
// rendition, at least one) and compares them with the worker's
// (transcode/verify). The segments are picked by verify.Sample with a seed
// the worker cannot know: an HMAC of the job's attempt and the rendition,
// keyed with a key derived from the origin's placement secret. A segment
// that fails refuses the output; QuarantineAfter of them quarantine the
// worker. A check the origin could not make (its own trouble: the source
// unreadable, the reference encode failing) blames nobody: the attempt is
// retried.

// QuarantineAfter is how many of a worker's segments must fail the
// origin's re-check (over the 7 days its figures are kept after the last
// change) for it to be quarantined: it takes no more jobs until an
// operator releases it.
const QuarantineAfter = 3

// maxVerifiedSpan is the longest segment the checks take: the ladder
// forces a keyframe every segment duration, so only a source with a
// frame more than a minute long makes one so long (verify refuses longer
// spans).
const maxVerifiedSpan = 60 * time.Second

// seedLabel names the key sampling seeds are made with, derived from the
// placement secret (a secret of the origins', never sent to a worker).
const seedLabel = "shoal transcode/remote: verify sample seeds v1"

// sampler is how an output's segments are sampled and checked.
type sampler struct {
	fraction float64
	// seed is the sampling seed of a rendition of this attempt.
	seed func(rendition string) []byte
	// source returns a local file with the video's source (fetched at
	// most once per output), removed by done.
	source   func(ctx context.Context) (path string, done func(), err error)
	settings verify.Settings
	// check runs one segment's check (verify.Check, bounded by the
	// origin's concurrency); at most limit of an output's run at once
	// (0: no bound), so that no more segments than that are in memory.
	check func(ctx context.Context, req verify.Request) (verify.Report, error)
	limit int
	// audio runs the check of the audio rendition's sampled segments
	// (verify.CheckAudio, bounded as check is); nil: verify.CheckAudio.
	audio func(ctx context.Context, req verify.AudioRequest) (verify.AudioReport, error)
}

func (s *sampler) checkAudio(ctx context.Context, req verify.AudioRequest) (verify.AudioReport, error) {
	if s.audio != nil {
		return s.audio(ctx, req)
	}
	return verify.CheckAudio(ctx, req)
}

// checkError is a check the origin could not make: it refuses nothing and
// blames nobody.
type checkError struct{ err error }

func (e *checkError) Error() string { return "the origin could not check the output: " + e.err.Error() }
func (e *checkError) Unwrap() error { return e.err }

// videoSegment is a segment of a video rendition as its playlist lists
// it.
type videoSegment struct {
	uri      string
	duration time.Duration
	init     string // the initialization section's URI; "" for MPEG-TS
}

// checkSegments: every segment of every video rendition parses (H.264 in
// fMP4 with its initialization section, or MPEG-TS), holds pictures of
// the rendition's size and lasts no more than the checks take; the frames
// counted make the output's pixels (the worker's credit). Cheap: nothing
// is decoded.
func (c *checker) checkSegments(ctx context.Context) error {
	for _, rung := range c.rungs {
		if err := ctx.Err(); err != nil {
			return err
		}
		name := rung.Name()
		var w, h int
		for _, r := range c.manifest.Renditions {
			if r.Name == name {
				w, h = r.Width, r.Height
			}
		}
		inits := map[string][]byte{}
		var frames int64
		var next int64 = -1 // where the next segment must start, in 90 kHz ticks
		for _, s := range c.segments[name] {
			if s.duration > maxVerifiedSpan {
				return reject("%s/%s lasts %s: a segment of this ladder lasts at most %s", name, s.uri, seconds(s.duration), seconds(maxVerifiedSpan))
			}
			seg, err := c.readSegment(name, s, inits)
			if err != nil {
				return err
			}
			p, err := verify.ParseSegment(seg)
			if err != nil {
				return reject("%s/%s is not a segment of H.264 video: %v", name, s.uri, clipErr(err))
			}
			if p.Track.Width != w || p.Track.Height != h {
				return reject("%s/%s holds %dx%d pictures; the rendition is %dx%d", name, s.uri, p.Track.Width, p.Track.Height, w, h)
			}
			// Its own timing agrees with its EXTINF, and it starts where
			// the one before ended (each within a tenth of a second, or
			// of the segment).
			tol := max(100*time.Millisecond, s.duration/10)
			if d := ticks(p.Duration); d-s.duration > tol || s.duration-d > tol {
				return reject("%s/%s lasts %s by its samples; its playlist says %s", name, s.uri, seconds(d), seconds(s.duration))
			}
			if next >= 0 {
				if gap := ticks(p.Start - next); gap > tol || -gap > tol {
					return reject("%s/%s starts at %s; the segment before it ended at %s", name, s.uri, seconds(ticks(p.Start)), seconds(ticks(next)))
				}
			}
			if next < 0 && c.videoStart < 0 && s.init != "" {
				c.videoStart = p.Start // fMP4's tfdt, on the audio's timeline
				c.videoShown = p.Presented()
			}
			next = p.Start + p.Duration
			frames += min(int64(len(p.Samples)), c.maxFrames(s.duration))
			if _, ok := c.codecs[name]; !ok && len(p.Track.SPS) >= 4 {
				c.codecs[name] = "avc1." + hex.EncodeToString(p.Track.SPS[1:4])
			}
		}
		c.frames[name] = frames
		c.pixels += frames * int64(w) * int64(h)
	}
	return nil
}

// checkAudioSegments: every segment of the audio rendition, when the
// output has one, is fMP4 AAC-LC of the one track of its initialization
// section (verify.ParseAudioSegment: AAC frames of the right shape, each
// lasting a frame), lasts as long as its EXTINF says and starts where the
// one before ended, the first where the video starts (each within a tenth
// of a second, or of the segment); the rendition as a whole lasts as long
// as the source (checkDurations). Cheap: nothing is decoded.
func (c *checker) checkAudioSegments(ctx context.Context) error {
	if !c.audio {
		return nil
	}
	r := nodeproto.AudioRendition
	inits := map[string][]byte{}
	var next time.Duration = -1 // where the next segment must start
	for _, s := range c.segments[r] {
		if err := ctx.Err(); err != nil {
			return err
		}
		if s.duration > maxVerifiedSpan {
			return reject("%s/%s lasts %s: a segment of this ladder lasts at most %s", r, s.uri, seconds(s.duration), seconds(maxVerifiedSpan))
		}
		if s.init == "" {
			return reject("%s/%s has no initialization section: the audio rendition is AAC in fMP4", r, s.uri)
		}
		seg, err := c.readSegment(r, s, inits)
		if err != nil {
			return err
		}
		p, err := verify.ParseAudioSegment(seg)
		if err != nil {
			return reject("%s/%s is not a segment of AAC audio: %v", r, s.uri, clipErr(err))
		}
		tol := max(100*time.Millisecond, s.duration/10)
		far := func(a, b time.Duration) bool { return a-b > tol || b-a > tol }
		if far(p.Duration, s.duration) {
			return reject("%s/%s lasts %s by its samples; its playlist says %s", r, s.uri, seconds(p.Duration), seconds(s.duration))
		}
		switch {
		case next < 0 && c.videoStart >= 0 && ticks(c.videoStart)-p.Start > tol:
			// A source's audio may start after its video (the transcoder
			// keeps its real start), never before: the packager drops
			// what comes before the first video frame.
			return reject("%s/%s starts at %s, before the video (at %s)", r, s.uri, seconds(p.Start), seconds(ticks(c.videoStart)))
		case next >= 0 && far(p.Start, next):
			return reject("%s/%s starts at %s; the segment before it ended at %s", r, s.uri, seconds(p.Start), seconds(next))
		}
		next = p.Start + p.Duration
		c.audioTrack = audioTrack{codec: fmt.Sprintf("mp4a.40.%d", p.Config.Type), channels: p.Config.ChannelCount}
	}
	return nil
}

// defaultFrameRate caps the frames credited per second of a source whose
// frame rate was not recorded: the pipeline's own default.
const defaultFrameRate = 60

// maxFrames is the most frames credited for a segment of duration d: d
// at the source's frame rate, a tenth more, and one.
func (c *checker) maxFrames(d time.Duration) int64 {
	fps := c.frameRate
	if !(fps > 0 && fps <= 1000) {
		fps = defaultFrameRate
	}
	return int64(math.Ceil(d.Seconds()*fps*1.1)) + 1
}

// ticks converts 90 kHz ticks to a duration.
func ticks(n int64) time.Duration { return time.Duration(n) * time.Second / 90000 }

// readSegment reads segment s of rendition r with its initialization section
// (read once into inits).
func (c *checker) readSegment(r string, s videoSegment, inits map[string][]byte) (verify.Segment, error) {
	var seg verify.Segment
	if s.init != "" {
		b, ok := inits[s.init]
		if !ok {
			var err error
			if b, err = os.ReadFile(c.path(r + "/" + s.init)); err != nil {
				return seg, err
			}
			inits[s.init] = b
		}
		seg.Init = b
	}
	b, err := os.ReadFile(c.path(r + "/" + s.uri))
	if err != nil {
		return seg, err
	}
	seg.Media = b
	return seg, nil
}

// pick is a segment chosen for the re-check.
type pick struct {
	rung media.Rung
	seg  videoSegment
	at   verify.Pick
}

// checkSamples: the sampled segments of every video rendition match what
// the origin makes of the same window of the source (transcode/verify),
// the output has audio exactly when the source has audio that decodes,
// and the sound of the audio rendition's sampled segments is the
// source's over the same windows (verify.CheckAudio).
// The first that fails refuses the output (the others still running are
// stopped); a check that could not be made is a *checkError.
func (c *checker) checkSamples(ctx context.Context) error {
	s := c.sample
	if s == nil || s.fraction <= 0 {
		return nil
	}
	var picks []pick
	for _, rung := range c.rungs {
		chosen, err := c.sampleRendition(rung.Name())
		if err != nil {
			return err
		}
		for _, p := range chosen {
			picks = append(picks, pick{rung: rung, seg: c.segments[rung.Name()][p.Index], at: p})
		}
	}
	var audioPicks []int
	if c.audio {
		chosen, err := c.sampleRendition(nodeproto.AudioRendition)
		if err != nil {
			return err
		}
		for _, p := range chosen {
			audioPicks = append(audioPicks, p.Index)
		}
	}
	if len(picks) == 0 && len(audioPicks) == 0 {
		return nil
	}
	src, done, err := s.source(ctx)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &checkError{err: fmt.Errorf("the source: %w", err)}
	}
	defer done()
	if c.audio {
		// An honest worker makes audio only of the source's.
		info, err := ffmpeg.ProbeFile(src)
		if err != nil {
			return &checkError{err: fmt.Errorf("probing the source: %w", err)}
		}
		if info.AudioCodec == "" {
			return reject("the output has an audio rendition; the source has no audio")
		}
	} else {
		// An honest worker makes audio of the source's whenever it
		// decodes (where it does not, it makes none, and that passes).
		rep, err := s.checkAudio(ctx, verify.AudioRequest{Source: src})
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return &checkError{err: fmt.Errorf("decoding the source's audio: %w", err)}
		}
		if rep.SourceAudio {
			return reject("the output has no audio rendition; the source has audio that decodes")
		}
	}

	gctx, stop := context.WithCancel(ctx)
	defer stop()
	var (
		mu       sync.Mutex
		failed   error // the first failure
		checkErr error
		passed   int
	)
	var g errgroup.Group
	if s.limit > 0 {
		g.SetLimit(s.limit)
	}
	// The initialization sections, read once (small); each segment is
	// read when its check starts.
	inits := map[string]map[string][]byte{}
	for _, p := range picks {
		name := p.rung.Name()
		if inits[name] == nil {
			inits[name] = map[string][]byte{}
			if _, err := c.readSegment(name, p.seg, inits[name]); err != nil {
				return fmt.Errorf("reading %s/%s: %w", name, p.seg.uri, err)
			}
		}
	}
	var readErr error
	if len(audioPicks) > 0 {
		g.Go(func() error {
			if gctx.Err() != nil {
				return nil
			}
			r := nodeproto.AudioRendition
			segs := c.segments[r]
			audioInits := map[string][]byte{}
			var audioReadErr error // the check reads on its own goroutine, one segment at a time
			seed := c.sample.seed(r)
			rep, err := s.checkAudio(gctx, verify.AudioRequest{Source: src, Segments: len(segs), Picks: audioPicks, VideoStart: ticks(c.videoShown),
				WindowAt: func(k int) float64 { return verify.WindowFraction(seed, k) },
				Read: func(i int) (verify.Segment, error) {
					seg, err := c.readSegment(r, segs[i], audioInits)
					if err != nil {
						audioReadErr = fmt.Errorf("reading %s/%s: %w", r, segs[i].uri, err)
					}
					return seg, err
				}})
			mu.Lock()
			defer mu.Unlock()
			switch {
			case gctx.Err() != nil:
			case audioReadErr != nil:
				readErr = cmpErr(readErr, audioReadErr)
				stop()
			case err != nil:
				if checkErr == nil {
					checkErr = fmt.Errorf("%s: %w", r, err)
				}
				stop()
			case !rep.Passed:
				for _, w := range rep.Results {
					if !w.Passed && failed == nil {
						failed = &rejection{verify: true, reason: fmt.Sprintf("%s/%s (%s to %s) failed the origin's re-check: audio: %s",
							r, segs[w.Segment].uri, seconds(w.From), seconds(w.To), clip(w.Reason, 400))}
					}
				}
				stop()
			}
			return nil
		})
	}
	for _, p := range picks {
		name := p.rung.Name()
		g.Go(func() error {
			if gctx.Err() != nil {
				return nil
			}
			seg, err := c.readSegment(name, p.seg, inits[name])
			if err != nil {
				mu.Lock()
				readErr = cmpErr(readErr, fmt.Errorf("reading %s/%s: %w", name, p.seg.uri, err))
				mu.Unlock()
				stop()
				return nil
			}
			req := verify.Request{Source: src, Segment: seg, Start: p.at.Start, End: p.at.End,
				Rung:     ffmpeg.Rung{Name: name, Height: p.rung.Height, Bitrate: p.rung.Bitrate},
				Settings: s.settings}
			rep, err := s.check(gctx, req)
			mu.Lock()
			defer mu.Unlock()
			switch {
			case gctx.Err() != nil:
				// Stopped: another failed, or the job ended.
			case err != nil:
				if checkErr == nil {
					checkErr = fmt.Errorf("%s/%s: %w", name, p.seg.uri, err)
				}
				stop()
			case !rep.Passed:
				if failed == nil {
					failed = &rejection{verify: true, reason: fmt.Sprintf("%s/%s (%s to %s) failed the origin's re-check: %s",
						name, p.seg.uri, seconds(p.at.Start), seconds(p.at.End), clip(rep.Reason(), 400))}
				}
				stop()
			default:
				passed++
			}
			return nil
		})
	}
	_ = g.Wait()
	switch {
	case failed != nil:
		return failed
	case ctx.Err() != nil:
		return ctx.Err()
	case readErr != nil:
		return readErr
	case checkErr != nil:
		return &checkError{err: checkErr}
	}
	c.verified = passed
	return nil
}

// sampleRendition picks the segments of rendition r to check.
func (c *checker) sampleRendition(r string) ([]verify.Pick, error) {
	segs := c.segments[r]
	list := make([]verify.PlaylistSegment, len(segs))
	for i, sg := range segs {
		list[i] = verify.PlaylistSegment{URI: sg.uri, Duration: sg.duration}
	}
	chosen, err := verify.Sample(list, c.sample.fraction, c.sample.seed(r))
	if err != nil {
		return nil, &checkError{err: err}
	}
	return chosen, nil
}

// sampleSeed is the seed of rendition r's sample in the attempt job: an
// HMAC of both under key (itself derived from the origins' secret).
func sampleSeed(key []byte, job, r string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(job))
	m.Write([]byte{0})
	m.Write([]byte(r))
	return m.Sum(nil)
}

// seedKey derives the key of sampling seeds from secret.
func seedKey(secret []byte) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(seedLabel))
	return m.Sum(nil)
}

func clipErr(err error) string {
	if err == nil {
		return ""
	}
	return clip(err.Error(), 200)
}

// isCheckError tells a check the origin could not make.
func isCheckError(err error) (*checkError, bool) {
	var ce *checkError
	ok := errors.As(err, &ce)
	return ce, ok
}
