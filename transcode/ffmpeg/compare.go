package ffmpeg

// Comparing a coded video with its source, for the verification of
// transcodes made elsewhere (package transcode/verify orchestrates it): the
// source's frames of a window of its VOD timeline are decoded, scaled to a
// rung's size the way the ladder scales them, and compared frame by frame
// (PSNR, SSIM) with the decoded frames of the coded video, and, when asked,
// with a reference encode of the same window made by the ladder itself.

/*
#cgo pkg-config: libavformat libavcodec libavutil
#include <stdint.h>
#include <stdlib.h>
#include <libavformat/avformat.h>
#include <libavcodec/avcodec.h>
#include <libavutil/frame.h>

static int shoal_cmp_seek(AVFormatContext *fc, int stream, int64_t ts) {
	return av_seek_frame(fc, stream, ts, AVSEEK_FLAG_BACKWARD);
}

static void shoal_cmp_flush(AVCodecContext *cc) { avcodec_flush_buffers(cc); }

// shoal_cmp_damaged tells a picture the decoder concealed errors in.
static int shoal_cmp_damaged(const AVFrame *f) {
	return f->decode_error_flags != 0 || (f->flags & AV_FRAME_FLAG_CORRUPT) != 0;
}

// shoal_cmp_blocks sums the 4x4 blocks of a row of bw blocks of planes a and
// b: per block the sums of a, b, a*a + b*b and a*b.
static void shoal_cmp_blocks(const uint8_t *a, int as, const uint8_t *b, int bs, int bw, int64_t *out) {
	for (int bx = 0; bx < bw; bx++) {
		int64_t s1 = 0, s2 = 0, ss = 0, s12 = 0;
		const uint8_t *pa = a + 4 * bx, *pb = b + 4 * bx;
		for (int y = 0; y < 4; y++) {
			for (int x = 0; x < 4; x++) {
				int va = pa[(ptrdiff_t)y * as + x], vb = pb[(ptrdiff_t)y * bs + x];
				s1 += va;
				s2 += vb;
				ss += va * va + vb * vb;
				s12 += va * vb;
			}
		}
		out[4 * bx] = s1;
		out[4 * bx + 1] = s2;
		out[4 * bx + 2] = ss;
		out[4 * bx + 3] = s12;
	}
}

// shoal_cmp_window is the SSIM of a window of n pixels from its sums (Wang
// et al. 2004, constants for 8-bit samples).
static double shoal_cmp_window(double s1, double s2, double ss, double s12, double n) {
	const double c1 = (0.01 * 255) * (0.01 * 255), c2 = (0.03 * 255) * (0.03 * 255);
	double ma = s1 / n, mb = s2 / n;
	double vars = ss / n - ma * ma - mb * mb;
	double cov = s12 / n - ma * mb;
	return ((2 * ma * mb + c1) * (2 * cov + c2)) / ((ma * ma + mb * mb + c1) * (vars + c2));
}

// shoal_cmp_ssim is the mean SSIM of two w x h planes over 8x8 windows at
// 4-pixel steps (the layout of x264's and FFmpeg's SSIM); a plane too small
// for two windows is one window. It returns -1 when memory runs out.
static int shoal_cmp_ssim(const uint8_t *a, int as, const uint8_t *b, int bs, int w, int h, double *out) {
	int bw = w / 4, bh = h / 4;
	if (bw < 2 || bh < 2) {
		double s1 = 0, s2 = 0, ss = 0, s12 = 0;
		for (int y = 0; y < h; y++) {
			for (int x = 0; x < w; x++) {
				int va = a[(ptrdiff_t)y * as + x], vb = b[(ptrdiff_t)y * bs + x];
				s1 += va;
				s2 += vb;
				ss += va * va + vb * vb;
				s12 += va * vb;
			}
		}
		*out = w * h > 0 ? shoal_cmp_window(s1, s2, ss, s12, (double)w * h) : 1;
		return 0;
	}
	int64_t *buf = malloc(sizeof(int64_t) * 8 * (size_t)bw);
	if (!buf) return -1;
	int64_t *prev = buf, *cur = buf + 4 * bw;
	shoal_cmp_blocks(a, as, b, bs, bw, prev);
	double total = 0;
	int64_t n = 0;
	for (int by = 1; by < bh; by++) {
		shoal_cmp_blocks(a + (ptrdiff_t)4 * by * as, as, b + (ptrdiff_t)4 * by * bs, bs, bw, cur);
		for (int bx = 0; bx + 1 < bw; bx++) {
			int64_t *p = prev + 4 * bx, *c = cur + 4 * bx;
			total += shoal_cmp_window(p[0] + p[4] + c[0] + c[4], p[1] + p[5] + c[1] + c[5],
				p[2] + p[6] + c[2] + c[6], p[3] + p[7] + c[3] + c[7], 64);
			n++;
		}
		int64_t *t = prev;
		prev = cur;
		cur = t;
	}
	free(buf);
	*out = total / n;
	return 0;
}

// shoal_cmp_sse_y is the sum of squared differences of two pictures' luma.
static double shoal_cmp_sse_y(const AVFrame *a, const AVFrame *b) {
	uint64_t sse = 0;
	for (int y = 0; y < a->height; y++) {
		const uint8_t *ra = a->data[0] + (ptrdiff_t)y * a->linesize[0], *rb = b->data[0] + (ptrdiff_t)y * b->linesize[0];
		for (int x = 0; x < a->width; x++) {
			int d = ra[x] - rb[x];
			sse += (uint64_t)(d * d);
		}
	}
	return (double)sse;
}

typedef struct {
	double sse[3];
	double pixels[3];
	double ssim[3];
} shoal_cmp_metrics;

// shoal_cmp_measure compares two 8-bit 4:2:0 pictures of one size.
static int shoal_cmp_measure(const AVFrame *a, const AVFrame *b, shoal_cmp_metrics *m) {
	for (int p = 0; p < 3; p++) {
		int w = p ? (a->width + 1) >> 1 : a->width;
		int h = p ? (a->height + 1) >> 1 : a->height;
		const uint8_t *pa = a->data[p], *pb = b->data[p];
		uint64_t sse = 0;
		for (int y = 0; y < h; y++) {
			const uint8_t *ra = pa + (ptrdiff_t)y * a->linesize[p], *rb = pb + (ptrdiff_t)y * b->linesize[p];
			for (int x = 0; x < w; x++) {
				int d = ra[x] - rb[x];
				sse += (uint64_t)(d * d);
			}
		}
		m->sse[p] = (double)sse;
		m->pixels[p] = (double)w * h;
		if (shoal_cmp_ssim(pa, a->linesize[p], pb, b->linesize[p], w, h, &m->ssim[p]) < 0) return AVERROR(ENOMEM);
	}
	return 0;
}
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
)

// CodedVideo is an H.264 video to compare with its source: its access units
// in decode order (NAL units, PTS and DTS in 90 kHz ticks), with the
// parameter sets of its track, sent before every keyframe that lacks them.
type CodedVideo struct {
	Track media.Track
	AUs   []*media.AccessUnit
}

// CompareConfig says what CompareSegment compares.
type CompareConfig struct {
	// Source is the media file the video was transcoded from (any
	// container and codec FFmpeg reads, as for TranscodeFile).
	Source string
	// From and To bound the window of the source's VOD timeline compared:
	// the source frames the ladder keeps whose output instant (0 at the
	// source's first frame, as TranscodeFile and the packager lay it out;
	// see SourceFrame.At) rounds into [From, To) to the nearest frame.
	From, To time.Duration
	// KeyframeInterval is the ladder's keyframe interval (the segment
	// duration for VOD), required: it decides which frames are
	// keyframes and so which are kept.
	KeyframeInterval time.Duration
	// Rung is the size the frames are compared at and, for the
	// reference, the bitrate. With Width 0 the size is what the ladder
	// makes of the source for a rung of that Height (never upscaled, the
	// source's aspect ratio, even width).
	Rung Rung
	// Candidate is the video to check; its first frame (the lowest PTS)
	// stands for the window's first source frame.
	Candidate CodedVideo
	// Reference, when set, also encodes the window with the ladder's own
	// code under this configuration (one rung: Rung; the backend is always
	// x264 so that the reference is the same everywhere; the keyframe
	// interval is KeyframeInterval's) and measures that encode the same
	// way.
	Reference *Config
}

// SourceFrame is a frame of the source around the window, with what the
// ladder does with it.
type SourceFrame struct {
	// PTS is its time in 90 kHz ticks on TranscodeFile's timeline (whose
	// zero is the earliest start of the file's video and audio).
	PTS int64
	// At is its instant in the ladder's output on the VOD timeline, 90
	// kHz: its encoder tick's, counted from the tick of the source's
	// first frame (a segment's decode start, as the packager writes it, is
	// its first frame's At).
	At int64
	// Kept: the ladder encodes it. The encoders count in ticks of the
	// source's frame rate; a frame that repeats the previous frame's tick
	// is dropped, unless it is a keyframe, which moves to the next tick.
	Kept bool
	// Key: the ladder forces a keyframe on it (the first frame at or
	// after every multiple of the keyframe interval on the VOD timeline).
	Key bool
	// InWindow: it is kept and its At rounds into [From, To).
	InWindow bool
}

// FrameScore is one decoded frame of a coded video and how it compares
// with the source frame shown at its instant.
type FrameScore struct {
	PTS           int64 // as coded, 90 kHz
	Key           bool  // the decoder flagged it a keyframe
	Width, Height int   // as decoded
	// Source is the index among the window's source frames (0: the
	// first frame in the window) of the frame it was compared with.
	Source int
	// PSNR is the 6:1:1 weighted mean of the planes' PSNR in dB, PSNRY
	// the luma's (capped at MaxPSNR); SSIM is the mean of the planes'
	// SSIM weighted by their sizes.
	PSNR, PSNRY, SSIM float64
	// PrevPSNRY and NextPSNRY are its luma's PSNR against the source
	// frames before and after the one it was compared with (0 when there
	// is none): a frame that shows another instant than its own (a frame
	// dropped and the next ones shifted, a frame repeated) resembles a
	// neighbour more than its own source frame.
	PrevPSNRY, NextPSNRY float64
}

// MaxPSNR is the PSNR given to identical pictures.
const MaxPSNR = 100.0

// CodedResult is what came of decoding and measuring a coded video.
type CodedResult struct {
	// Frames are the decoded frames in output order, as measured.
	Frames []FrameScore
	// Decoded counts the pictures decoded (those measured, or all of them
	// when the window had no source frame to measure them against).
	Decoded int
	// Err is the first problem decoding it (nil: every access unit
	// decoded cleanly).
	Err error
	// Video is the coded video (for the reference: what the ladder
	// encoded).
	Video CodedVideo
}

// CompareResult is what CompareSegment measured.
type CompareResult struct {
	// FrameRate is the rate the ladder's encoders count in for this
	// source (its guessed frame rate, 60 when unknown), as TranscodeFile
	// takes it.
	FrameRateNum, FrameRateDen int
	// SourceWidth and SourceHeight are the source's picture size (its
	// first frame's).
	SourceWidth, SourceHeight int
	// Rung is the rung compared at, with its size.
	Rung Rung
	// First is the PTS of the source's first frame: the VOD timeline's 0.
	First int64
	// Frames are the source frames decoded up to the window's end: a few
	// before it, those in it, and the first one after it when the file
	// has one.
	Frames []SourceFrame
	// EOF: the file ends before To.
	EOF bool
	// Candidate and Reference (when asked) are the coded videos measured.
	Candidate CodedResult
	Reference *CodedResult
}

// maxCompareWindow bounds the window CompareSegment decodes.
const maxCompareWindow = 120 * time.Second

// preroll is how far before the window the source is sought: the frames
// just before it tell the ladder's frame-rate handling and keyframe grid,
// and warm the reference encoder up: x264's rate control starting cold on
// the window's first frame gives 1.5 to 2 dB less PSNR than the same
// frames get in the middle of a whole file's encode.
const preroll = time.Second

// keptBefore is how many source frames before the window the result keeps.
const keptBefore = 16

// CompareSegment decodes the source's frames of the window [cfg.From,
// cfg.To) of its VOD timeline, scales them to the rung's size with the
// ladder's scaler (bilinear), decodes the candidate and measures each of
// its frames against the source frame shown at its instant; with
// cfg.Reference, it also encodes the window with the ladder and measures
// that. Problems with the candidate are reported in the result; the error
// is for what keeps the comparison from being made (an unreadable source,
// bad arguments, a failing reference encoder, ctx done). Every C object is
// freed before it returns.
func CompareSegment(ctx context.Context, cfg CompareConfig) (CompareResult, error) {
	if cfg.Rung.Width < 0 || cfg.Rung.Height < 2 || cfg.Rung.Width*cfg.Rung.Height > maxPixels {
		return CompareResult{}, fmt.Errorf("compare: bad rung size %dx%d", cfg.Rung.Width, cfg.Rung.Height)
	}
	if cfg.From < 0 || cfg.To <= cfg.From || cfg.To-cfg.From > maxCompareWindow {
		return CompareResult{}, fmt.Errorf("compare: bad window [%s, %s) (at most %s)", cfg.From, cfg.To, maxCompareWindow)
	}
	if cfg.KeyframeInterval <= 0 {
		return CompareResult{}, errors.New("compare: the keyframe interval is required")
	}
	w, err := openWindow(cfg.Source, cfg.From, cfg.To, cfg.KeyframeInterval)
	if err != nil {
		return CompareResult{}, err
	}
	defer w.close()
	if cfg.Rung.Width == 0 {
		cfg.Rung.Height = min(cfg.Rung.Height, w.srcH&^1)
		cfg.Rung.Width = EvenWidth(w.srcW, w.srcH, cfg.Rung.Height)
	}
	return w.compare(ctx, cfg.Rung, cfg.Candidate, cfg.Reference, cfg.KeyframeInterval, w.walk)
}

// walkFunc decodes a window's source frames, hands them to s (and to feed,
// when set) and returns the frames seen and whether the source ended
// before the window did.
type walkFunc func(ctx context.Context, s *codedStream, feed feedFunc) ([]SourceFrame, bool, error)

// compare measures candidate, and with reference a reference encode of
// the window, against the window's source frames at the rung's size (its
// Width set): the first walk measures the candidate and feeds the
// reference encoder; the second (the source decoded again: frames are not
// kept, so memory stays bounded) measures the reference.
func (w *window) compare(ctx context.Context, rung Rung, candidate CodedVideo, reference *Config, interval time.Duration, walk walkFunc) (CompareResult, error) {
	res := CompareResult{FrameRateNum: w.fps.Num(), FrameRateDen: w.fps.Den(), First: w.first,
		SourceWidth: w.srcW, SourceHeight: w.srcH, Rung: rung}
	cand := newCodedStream(candidate, rung)
	defer cand.close()
	var ref *refEncoder
	var feed feedFunc
	if reference != nil {
		rc := *reference
		rc.KeyframeInterval = interval
		var err error
		if ref, err = newRefEncoder(rc, rung, w); err != nil {
			return res, err
		}
		defer ref.close()
		feed = ref.push
	}
	frames, eof, err := walk(ctx, cand, feed)
	if err != nil {
		return res, err
	}
	res.Frames, res.EOF = frames, eof
	res.Candidate = cand.result()
	if ref == nil || !ref.inWindow {
		return res, nil // no reference, or no frame to compare
	}
	video, err := ref.finish()
	if err != nil {
		return res, err
	}
	refStream := newCodedStream(video, rung)
	defer refStream.close()
	if _, _, err := walk(ctx, refStream, nil); err != nil {
		return res, err
	}
	r := refStream.result()
	if r.Err != nil {
		return res, fmt.Errorf("compare: the reference encode does not decode: %w", r.Err)
	}
	res.Reference = &r
	return res, nil
}

// window is the source file opened for CompareSegment.
type window struct {
	path     string
	src      *source
	zero     int64 // TranscodeFile's timeline zero, 90 kHz, in the stream's clock
	first    int64 // the first frame's PTS on that timeline
	origin   int64 // the instant of its encoder tick: the output's 0
	interval int64 // the keyframe interval, 90 kHz
	fps      astiav.Rational
	encTB    astiav.Rational // the encoders' time base, 1/fps
	frame    int64           // one frame, 90 kHz
	from, to int64           // the window, 90 kHz, VOD timeline
	srcW     int
	srcH     int
	vtb      astiav.Rational
	dec      *astiav.Frame
	// scaler scales the window's frames into ring, whose three pictures
	// are the source frames a coded stream compares with: the one before,
	// the current one and the one after.
	scaler *frameScaler
	ring   [3]*astiav.Frame
}

func openWindow(path string, from, to, interval time.Duration) (*window, error) {
	src, err := openSource(path, 0, nil)
	if err != nil {
		return nil, fmt.Errorf("compare: the source: %w", err)
	}
	w := &window{path: path, src: src, from: media.Ticks(from, 90000), to: media.Ticks(to, 90000),
		interval: media.Ticks(interval, 90000)}
	if w.dec = astiav.AllocFrame(); w.dec == nil {
		w.close()
		return nil, errors.New("compare: allocating a frame failed")
	}
	w.setClock()
	if err := src.firstFrame(w.dec); err != nil {
		w.close()
		return nil, fmt.Errorf("compare: the source: %w", err)
	}
	ts := bestEffortTS(w.dec)
	if ts == noPTS {
		ts = src.in.startTime(src.v)
	}
	if ts == noPTS {
		ts = 0
	}
	w.first = astiav.RescaleQ(ts, w.vtb, clock90k) - w.zero
	w.origin = w.tick(w.first)
	w.srcW, w.srcH = w.dec.Width(), w.dec.Height()
	w.dec.Unref()
	return w, nil
}

// setClock fixes the timeline and frame rate as TranscodeFile's setup does.
func (w *window) setClock() {
	in, v := w.src.in, w.src.v
	w.vtb = in.timeBase(v)
	w.fps = in.frameRate(v)
	if f := w.fps.Float64(); f <= 1 || f > 240 {
		w.fps = astiav.NewRational(60, 1)
	}
	w.encTB = astiav.NewRational(w.fps.Den(), w.fps.Num())
	w.frame = max(astiav.RescaleQ(1, w.encTB, clock90k), 1)
	haveZero := false
	streams := []int{v}
	if a := in.bestAudio(v); a >= 0 {
		streams = append(streams, a)
	}
	for _, i := range streams {
		if st := in.startTime(i); st != noPTS {
			z := astiav.RescaleQ(st, in.timeBase(i), clock90k)
			if !haveZero || z < w.zero {
				w.zero, haveZero = z, true
			}
		}
	}
}

func (w *window) close() {
	if w.scaler != nil {
		w.scaler.free()
	}
	for _, f := range w.ring {
		if f != nil {
			f.Free()
		}
	}
	if w.dec != nil {
		w.dec.Free()
	}
	if w.src != nil {
		w.src.close()
	}
}

// tick is the instant (90 kHz) of the encoder tick a PTS falls on.
func (w *window) tick(pts int64) int64 {
	return astiav.RescaleQ(astiav.RescaleQ(pts, clock90k, w.encTB), w.encTB, clock90k)
}

// seek positions the source before the window: on the keyframe at or
// before back ahead of it, or at the start (reopening the file) when back
// is negative, the window is that close to the start or the seek fails.
func (w *window) seek(back time.Duration) error {
	target := w.first + w.from - media.Ticks(back, 90000)
	if back >= 0 && target > w.first {
		ts := astiav.RescaleQ(target+w.zero, clock90k, w.vtb)
		if C.shoal_cmp_seek(w.src.in.fc, C.int(w.src.v), C.int64_t(ts)) >= 0 {
			C.shoal_cmp_flush(w.src.vdec.cc)
			return nil
		}
	}
	w.src.close()
	w.src = nil
	src, err := openSource(w.path, 0, nil)
	if err != nil {
		return fmt.Errorf("compare: reopening the source: %w", err)
	}
	w.src = src
	return nil
}

// encoderTicks follows encodeRung's ticks over a ladder's frames: each
// frame is encoded at its PTS's tick of the encoders' time base; a frame
// repeating the previous tick is dropped, a keyframe moves to the next
// tick.
type encoderTicks struct {
	tb   astiav.Rational
	last int64
	sent bool
}

// next returns the instant (90 kHz) of the tick of a frame at pts (key:
// a forced keyframe) and whether the ladder keeps it.
func (e *encoderTicks) next(pts int64, key bool) (at int64, kept bool) {
	tick := astiav.RescaleQ(pts, clock90k, e.tb)
	kept = true
	if e.sent && tick <= e.last {
		if key {
			tick = e.last + 1
		} else {
			kept = false
		}
	}
	if kept {
		e.last, e.sent = tick, true
	}
	return astiav.RescaleQ(tick, e.tb, clock90k), kept
}

// feedFunc hands the reference encoder a source frame: its PTS on
// TranscodeFile's timeline, the instant of its encoder tick, and whether
// it belongs to the window.
type feedFunc func(f *astiav.Frame, pts, at int64, inWindow bool) error

// errSeekLate is returned inside walk when the seek landed too close to
// the window (some demuxers' seeks are not exact): the walk starts again
// from further back.
var errSeekLate = errors.New("the seek landed too close to the window")

// walk decodes the source from before the window to its end, hands each
// window frame to s and to feed (when set, with its PTS; feed also gets
// the frames of the preroll before the window), and returns the frames
// seen (a few before the window, the window, the first after).
func (w *window) walk(ctx context.Context, s *codedStream, feed feedFunc) ([]SourceFrame, bool, error) {
	for _, back := range []time.Duration{preroll, 4 * preroll, 16 * preroll, -1} {
		frames, eof, err := w.walkFrom(ctx, s, feed, back)
		if !errors.Is(err, errSeekLate) {
			return frames, eof, err
		}
	}
	return nil, false, errors.New("compare: the source could not be read from before the window")
}

func (w *window) walkFrom(ctx context.Context, s *codedStream, feed feedFunc, back time.Duration) ([]SourceFrame, bool, error) {
	if err := w.seek(back); err != nil {
		return nil, false, err
	}
	half := w.frame / 2
	warm := w.from - media.Ticks(preroll, 90000)
	var frames []SourceFrame
	var last, prevT int64
	haveLast, started, done, seenWindow := false, false, false, false
	ticks := encoderTicks{tb: w.encTB}
	handle := func(f *astiav.Frame) error {
		if done {
			return nil
		}
		// The timestamps as TranscodeFile's videoPTS makes them.
		ts := bestEffortTS(f)
		var pts int64
		switch {
		case ts == noPTS && haveLast:
			pts = last + w.frame
		case ts == noPTS:
			pts = w.first
		default:
			pts = astiav.RescaleQ(ts, w.vtb, clock90k) - w.zero
		}
		if haveLast && pts <= last {
			if last-pts > 90000 {
				return fmt.Errorf("compare: the source's timestamps go back by %s near %s: its timeline cannot be followed from a seek",
					media.Duration(last-pts, 90000), media.Duration(last-w.first, 90000))
			}
			pts = last + 1 // a repeat: the ladder drops it
		}
		t := pts - w.first
		if !started && back >= 0 && t > w.from-media.Ticks(preroll, 90000)/2 && pts > w.first {
			// The frames before the window are needed: they tell the
			// ladder's ticks and warm the reference encoder up.
			return errSeekLate
		}
		started = true
		// The ladder's keyframe grid (encodeFrame): the first frame at or
		// after every multiple of the interval from the first frame.
		prev := prevT
		if !haveLast {
			prev = t - 1
		}
		key := t == 0 || floorDiv(t, w.interval) > floorDiv(prev, w.interval)
		last, prevT, haveLast = pts, t, true
		// Its encoder tick (encodeRung): a frame repeating the previous
		// tick is dropped, a keyframe moves to the next tick.
		at, kept := ticks.next(pts, key)
		sf := SourceFrame{PTS: pts, At: at - w.origin, Kept: kept, Key: key && kept}
		switch {
		case kept && sf.At >= w.to-half:
			frames = append(frames, sf)
			done = true
			return nil
		case kept && sf.At >= w.from-half:
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
			frames = slices.Delete(frames, 0, 1)
		}
		if feed != nil && t >= warm {
			return feed(f, pts, at, false)
		}
		return nil
	}
	s.begin()
	readErrs := 0
	for !done {
		if err := ctx.Err(); err != nil {
			return nil, false, err
		}
		idx, err := w.src.in.read()
		if errors.Is(err, astiav.ErrEof) {
			break
		}
		if err != nil {
			if readErrs++; readErrs > maxReadErrors {
				break
			}
			continue
		}
		readErrs = 0
		if idx != w.src.v {
			continue
		}
		if err := w.decode(false, handle); err != nil {
			return nil, false, err
		}
	}
	eof := !done
	if eof {
		if err := w.decode(true, handle); err != nil {
			return nil, false, err
		}
		eof = !done
	}
	if err := s.end(); err != nil {
		return nil, false, err
	}
	return frames, eof, nil
}

// decode sends the current packet (or the end of the input) to the
// source's decoder and hands on every frame it gives. Damaged source data
// is skipped, as TranscodeFile skips it.
func (w *window) decode(flush bool, handle func(*astiav.Frame) error) error {
	d := w.src.vdec
	for try, resend := 0, true; resend && try < 3; try++ {
		resend = false
		err := d.send(w.src.in, flush)
		switch {
		case errors.Is(err, astiav.ErrEagain):
			resend = true
		case err != nil && !errors.Is(err, astiav.ErrEof):
			return nil
		}
		for {
			err := d.receive(w.dec)
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				break
			}
			if err != nil {
				resend = false
				break
			}
			err = handle(w.dec)
			w.dec.Unref()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// source hands a window frame (one the ladder keeps; at is the instant of
// its encoder tick) to s, scaled to the rung's size with the ladder's
// scaler. The coded frames whose instants come before it are measured
// first, against the previous source frame.
func (w *window) source(s *codedStream, f *astiav.Frame, at int64) error {
	index := s.windowFrames
	s.windowFrames++
	if w.scaler == nil {
		w.scaler = &frameScaler{w: s.rung.Width, h: s.rung.Height}
		for i := range w.ring {
			p, err := newPicture(s.rung.Width, s.rung.Height)
			if err != nil {
				return fmt.Errorf("compare: %w", err)
			}
			w.ring[i] = p
		}
	}
	var dst *astiav.Frame
	for _, p := range w.ring {
		if p != s.prev && p != s.src {
			dst = p
			break
		}
	}
	if err := w.scaler.scale(f, dst); err != nil {
		return fmt.Errorf("compare: scaling the source: %w", err)
	}
	if s.haveSrc {
		s.next = dst
		if err := s.flush(at - w.frame/4); err != nil {
			return err
		}
	} else {
		s.srcStart = at
	}
	s.prev, s.src, s.next = s.src, dst, nil
	s.srcAt, s.haveSrc, s.srcFrame = at, true, index
	return nil
}

// newPicture allocates an 8-bit 4:2:0 picture.
func newPicture(w, h int) (*astiav.Frame, error) {
	f := astiav.AllocFrame()
	if f == nil {
		return nil, errors.New("allocating a picture failed")
	}
	f.SetWidth(w)
	f.SetHeight(h)
	f.SetPixelFormat(astiav.PixelFormatYuv420P)
	if err := f.AllocBuffer(0); err != nil {
		f.Free()
		return nil, fmt.Errorf("picture buffer: %w", err)
	}
	return f, nil
}

// frameScaler scales pictures to 8-bit 4:2:0 of one size with a bilinear
// swscale context, as the ladder's rungs do; remade when the input changes.
type frameScaler struct {
	w, h   int
	sws    *astiav.SoftwareScaleContext
	srcW   int
	srcH   int
	srcFmt astiav.PixelFormat
}

// scale scales f into dst (a w x h picture of newPicture's).
func (s *frameScaler) scale(f, dst *astiav.Frame) error {
	if s.sws == nil || f.Width() != s.srcW || f.Height() != s.srcH || f.PixelFormat() != s.srcFmt {
		s.free()
		sws, err := astiav.CreateSoftwareScaleContext(f.Width(), f.Height(), f.PixelFormat(), s.w, s.h,
			astiav.PixelFormatYuv420P, astiav.NewSoftwareScaleContextFlags(astiav.SoftwareScaleContextFlagBilinear))
		if err != nil {
			return fmt.Errorf("scaler %dx%d %s -> %dx%d: %w", f.Width(), f.Height(), f.PixelFormat(), s.w, s.h, err)
		}
		s.sws, s.srcW, s.srcH, s.srcFmt = sws, f.Width(), f.Height(), f.PixelFormat()
	}
	if err := makeWritable(dst); err != nil {
		return fmt.Errorf("picture buffer: %w", err)
	}
	return s.sws.ScaleFrame(f, dst)
}

func (s *frameScaler) free() {
	if s.sws != nil {
		s.sws.Free()
		s.sws = nil
	}
}

// codedStream decodes a coded video lazily, as far as the source frames
// handed to it go, and measures each of its frames against the source
// frame shown at its instant: its first frame (the lowest PTS) stands for
// the window's first source frame.
type codedStream struct {
	video CodedVideo
	rung  Rung
	base  int64 // the lowest PTS

	dec     *astiav.CodecContext
	pkt     *astiav.Packet
	out     *astiav.Frame
	pending bool // out holds a decoded frame not yet measured
	nextAU  int  // the next access unit to send
	flushed bool
	sps     []byte
	pps     []byte
	// scaler and scaled scale the frames not at the rung's size or
	// format.
	scaler *frameScaler
	scaled *astiav.Frame

	// The current source frame (scaled), its neighbours (nil when none
	// is known) and its encoder-tick instant.
	src, prev, next *astiav.Frame
	srcAt           int64
	srcStart        int64
	haveSrc         bool
	// windowFrames counts the window's frames handed in; srcFrame is
	// src's index among them.
	windowFrames int
	srcFrame     int

	frames  []FrameScore
	decoded int
	err     error
	fatal   error
}

func newCodedStream(v CodedVideo, rung Rung) *codedStream {
	s := &codedStream{video: v, rung: rung, sps: v.Track.SPS, pps: v.Track.PPS}
	for i, au := range v.AUs {
		if i == 0 || au.PTS < s.base {
			s.base = au.PTS
		}
	}
	return s
}

// begin readies the stream for a walk (a walk that started over from
// the start of the file starts it over too).
func (s *codedStream) begin() {
	s.freeDecoder()
	s.pending, s.nextAU, s.flushed = false, 0, false
	s.src, s.prev, s.next, s.haveSrc, s.windowFrames, s.srcFrame = nil, nil, nil, false, 0, 0
	s.frames, s.decoded, s.err = nil, 0, nil
	s.sps, s.pps = s.video.Track.SPS, s.video.Track.PPS
}

func (s *codedStream) fail(err error) {
	if s.err == nil {
		s.err = err
	}
}

func (s *codedStream) open() error {
	codec := astiav.FindDecoder(astiav.CodecIDH264)
	if codec == nil {
		return errors.New("compare: no H.264 decoder in this FFmpeg build")
	}
	if s.dec = astiav.AllocCodecContext(codec); s.dec == nil {
		return errors.New("compare: allocating a decoder failed")
	}
	d := astiav.NewDictionary()
	defer d.Free()
	// Any error in the stream is one: an honest encoder's output decodes
	// without concealment. One thread: errors are then reported for the
	// access unit that has them (frame threads lose some), at a cost of
	// about 5 ms a 1080p frame. Pictures are bounded by the rung's size
	// (four times over, so that a wrong size is still decoded and
	// reported).
	opts := map[string]string{
		"err_detect": "crccheck+bitstream+buffer+explode",
		"max_pixels": fmt.Sprint(min(4*s.rung.Width*s.rung.Height, maxPixels)),
		"threads":    "1",
	}
	for k, v := range opts {
		if err := d.Set(k, v, 0); err != nil {
			return fmt.Errorf("compare: decoder option %s: %w", k, err)
		}
	}
	if err := s.dec.Open(codec, d); err != nil {
		return fmt.Errorf("compare: opening the H.264 decoder: %w", err)
	}
	if s.pkt = astiav.AllocPacket(); s.pkt == nil {
		return errors.New("compare: allocating a packet failed")
	}
	if s.out = astiav.AllocFrame(); s.out == nil {
		return errors.New("compare: allocating a frame failed")
	}
	return nil
}

// flush measures every decoded frame whose instant is before upTo against
// the current source frame (all of them with upTo = MaxInt64).
func (s *codedStream) flush(upTo int64) error {
	if !s.haveSrc {
		return nil
	}
	for {
		ok, err := s.peek()
		if err != nil || !ok {
			return err
		}
		at := s.srcStart + s.out.Pts() - s.base
		if s.out.Pts() == noPTS {
			at = s.srcAt
		}
		if at >= upTo {
			return nil
		}
		if err := s.measure(); err != nil {
			return err
		}
	}
}

// peek decodes until a frame is pending; false when the video has no more.
func (s *codedStream) peek() (bool, error) {
	if s.fatal != nil {
		return false, s.fatal
	}
	if s.dec == nil {
		if len(s.video.AUs) == 0 {
			return false, nil
		}
		if err := s.open(); err != nil {
			s.fatal = err
			return false, err
		}
	}
	for !s.pending {
		err := s.dec.ReceiveFrame(s.out)
		if err == nil {
			if C.shoal_cmp_damaged(cFrame(s.out)) != 0 {
				s.fail(fmt.Errorf("frame %d was decoded with errors concealed", len(s.frames)))
			}
			s.pending = true
			break
		}
		if errors.Is(err, astiav.ErrEof) {
			return false, nil
		}
		if !errors.Is(err, astiav.ErrEagain) {
			// Reported; the decoder goes on with the next access unit.
			s.fail(fmt.Errorf("decoding: %w", err))
		}
		if s.flushed {
			return false, nil
		}
		if s.nextAU >= len(s.video.AUs) {
			s.flushed = true
			if err := s.dec.SendPacket(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
				s.fail(fmt.Errorf("flushing the decoder: %w", err))
			}
			continue
		}
		if err := s.send(s.video.AUs[s.nextAU], s.nextAU); err != nil {
			return false, err
		}
		s.nextAU++
	}
	return true, nil
}

// send hands an access unit to the decoder; a refused one is the video's
// fault, reported, not returned.
func (s *codedStream) send(au *media.AccessUnit, i int) error {
	nalus := au.Payload
	inBand := false
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			s.sps, inBand = n, true
		case h264.NALUTypePPS:
			s.pps, inBand = n, true
		}
	}
	if (i == 0 || au.Keyframe) && !inBand && s.sps != nil && s.pps != nil {
		nalus = append([][]byte{s.sps, s.pps}, nalus...)
	}
	data, err := h264.AnnexB(nalus).Marshal()
	if err != nil {
		s.fail(fmt.Errorf("access unit %d: %w", i, err))
		return nil
	}
	data = append(data, make([]byte, padding)...)
	s.pkt.Unref()
	if err := s.pkt.FromData(data); err != nil {
		return fmt.Errorf("compare: packet: %w", err)
	}
	s.pkt.SetSize(len(data) - padding)
	s.pkt.SetPts(au.PTS)
	s.pkt.SetDts(au.DTS)
	if au.Keyframe {
		s.pkt.SetFlags(s.pkt.Flags().Add(astiav.PacketFlagKey))
	}
	err = s.dec.SendPacket(s.pkt)
	s.pkt.Unref()
	if err != nil && !errors.Is(err, astiav.ErrEagain) {
		s.fail(fmt.Errorf("decoding access unit %d: %w", i, err))
	}
	return nil
}

// measure compares the pending frame with the current source frame.
func (s *codedStream) measure() error {
	f := s.out
	defer func() {
		s.out.Unref()
		s.pending = false
	}()
	s.decoded++
	score := FrameScore{PTS: f.Pts(), Key: f.KeyFrame(), Width: f.Width(), Height: f.Height(),
		Source: s.srcFrame}
	pic := f
	if f.Width() != s.rung.Width || f.Height() != s.rung.Height ||
		(f.PixelFormat() != astiav.PixelFormatYuv420P && f.PixelFormat() != astiav.PixelFormatYuvj420P) {
		if s.scaler == nil {
			s.scaler = &frameScaler{w: s.rung.Width, h: s.rung.Height}
			var err error
			if s.scaled, err = newPicture(s.rung.Width, s.rung.Height); err != nil {
				return fmt.Errorf("compare: %w", err)
			}
		}
		if err := s.scaler.scale(f, s.scaled); err != nil {
			s.fail(fmt.Errorf("frame %d cannot be scaled: %w", len(s.frames), err))
			return nil
		}
		pic = s.scaled
	}
	var m C.shoal_cmp_metrics
	if ret := C.shoal_cmp_measure(cFrame(s.src), cFrame(pic), &m); ret < 0 {
		return fmt.Errorf("compare: measuring: %w", astiav.Error(ret))
	}
	var psnr [3]float64
	var ssim, pixels float64
	for p := range 3 {
		psnr[p] = psnrOf(float64(m.sse[p]), float64(m.pixels[p]))
		ssim += float64(m.ssim[p]) * float64(m.pixels[p])
		pixels += float64(m.pixels[p])
	}
	score.PSNRY = psnr[0]
	score.PSNR = (6*psnr[0] + psnr[1] + psnr[2]) / 8
	score.SSIM = ssim / pixels
	if s.prev != nil {
		score.PrevPSNRY = psnrOf(float64(C.shoal_cmp_sse_y(cFrame(s.prev), cFrame(pic))), float64(m.pixels[0]))
	}
	if s.next != nil {
		score.NextPSNRY = psnrOf(float64(C.shoal_cmp_sse_y(cFrame(s.next), cFrame(pic))), float64(m.pixels[0]))
	}
	s.frames = append(s.frames, score)
	return nil
}

// psnrOf is the PSNR of 8-bit samples with the given sum of squared errors.
func psnrOf(sse, pixels float64) float64 {
	if sse <= 0 || pixels <= 0 {
		return MaxPSNR
	}
	return min(10*math.Log10(255*255*pixels/sse), MaxPSNR)
}

// end measures the frames left once the window's source frames are in,
// against the last source frame; with no source frame at all, it still
// decodes the video, to tell whether it decodes.
func (s *codedStream) end() error {
	if s.haveSrc {
		return s.flush(math.MaxInt64)
	}
	for {
		ok, err := s.peek()
		if err != nil || !ok {
			return err
		}
		s.decoded++
		s.out.Unref()
		s.pending = false
	}
}

func (s *codedStream) result() CodedResult {
	return CodedResult{Frames: s.frames, Decoded: s.decoded, Err: s.err, Video: s.video}
}

func (s *codedStream) freeDecoder() {
	if s.dec != nil {
		s.dec.Free()
		s.dec = nil
	}
	if s.pkt != nil {
		s.pkt.Free()
		s.pkt = nil
	}
	if s.out != nil {
		s.out.Free()
		s.out = nil
	}
}

func (s *codedStream) close() {
	s.freeDecoder()
	if s.scaler != nil {
		s.scaler.free()
	}
	if s.scaled != nil {
		s.scaled.Free()
		s.scaled = nil
	}
}

// refEncoder encodes the window with the ladder's own code: one rung,
// x264, the node's preset and keyframe interval, keyframes on the grid of
// the VOD timeline and on the window's first frame. The encode starts with
// the preroll's frames, so that the window is encoded as in the middle of
// a file; what the window's first frame starts (a closed GOP) is kept.
type refEncoder struct {
	w        *window
	lad      *ladder
	aus      []*media.AccessUnit
	started  bool
	inWindow bool
	windowAt int64 // the instant of the window's first frame
	track    *media.Track
}

func newRefEncoder(cfg Config, rung Rung, w *window) (*refEncoder, error) {
	cfg.Backend, cfg.GPU, cfg.graphOnCPU, cfg.testDevice = BackendSoftware, nil, false, nil
	rung.Width = 0 // the ladder sizes it from the source, as for the real rung
	lad, err := newLadder(cfg, []Rung{rung})
	if err != nil {
		return nil, fmt.Errorf("compare: reference: %w", err)
	}
	lad.sourceRate = func() astiav.Rational { return w.fps }
	return &refEncoder{w: w, lad: lad}, nil
}

func (r *refEncoder) emit(_ int, au *media.AccessUnit) {
	if r.track == nil && au.Keyframe {
		t := r.lad.outputRungs()[0].Track(au)
		r.track = &t
	}
	r.aus = append(r.aus, au)
}

// push encodes a frame of the preroll or the window (PTS on
// TranscodeFile's timeline).
func (r *refEncoder) push(f *astiav.Frame, pts, at int64, inWindow bool) error {
	forced := false
	if inWindow && !r.inWindow {
		// The window's first frame starts a segment: a keyframe, even
		// when the window does not start on the grid.
		r.inWindow, r.windowAt = true, at
		if r.started {
			r.lad.nextKey, forced = pts, true
		}
	}
	f.SetPts(pts)
	if err := r.lad.encodeFrame(f, r.emit); err != nil {
		return fmt.Errorf("compare: reference: %w", err)
	}
	if !r.started || forced {
		// The next keyframes fall where the whole file's grid puts them.
		r.started = true
		first := r.w.first
		r.lad.nextKey = first + (floorDiv(pts-first, r.lad.interval)+1)*r.lad.interval
	}
	return nil
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}

// finish flushes the encoder and returns what the window's first frame
// starts.
func (r *refEncoder) finish() (CodedVideo, error) {
	if err := r.lad.flushEncoders(r.emit); err != nil {
		return CodedVideo{}, fmt.Errorf("compare: reference: %w", err)
	}
	for i, au := range r.aus {
		if au.Keyframe && au.PTS >= r.windowAt-r.w.frame/2 {
			if r.track == nil {
				return CodedVideo{}, errors.New("compare: the reference encode has no parameter sets")
			}
			return CodedVideo{Track: *r.track, AUs: r.aus[i:]}, nil
		}
	}
	return CodedVideo{}, errors.New("compare: the reference encode has no keyframe at the window's start")
}

func (r *refEncoder) close() { r.lad.release() }
