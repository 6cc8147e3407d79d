package ffmpeg

import (
	"context"
	"errors"
	"fmt"
	"image"
	"log/slog"
	"os"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
)

// ErrNotVideo is wrapped by the errors of ProbeFile (and TranscodeFile) for
// input that is not a usable video. The rest of such an error's message
// says why, in words meant for the person who uploaded the file.
var ErrNotVideo = errors.New("not a video file")

// FileInfo describes a media file.
type FileInfo struct {
	Container     string // FFmpeg's demuxer name, e.g. "mov,mp4,m4a,3gp,3g2,mj2"
	Duration      time.Duration
	VideoCodec    string // FFmpeg's codec name, e.g. "h264", "hevc", "vp9"
	Width, Height int    // of the first decoded picture
	FrameRate     float64
	AudioCodec    string // "" when the file has no audio
}

// ProbeFile opens path with libavformat, finds the best video stream and
// decodes its first frame to prove it is usable. Errors for input that is
// not a usable video wrap ErrNotVideo.
func ProbeFile(path string) (FileInfo, error) {
	src, err := openSource(path, 1, nil)
	if err != nil {
		return FileInfo{}, err
	}
	defer src.close()
	f := astiav.AllocFrame()
	if f == nil {
		return FileInfo{}, errors.New("allocating a frame failed")
	}
	defer f.Free()
	if err := src.firstFrame(f); err != nil {
		return FileInfo{}, err
	}
	// An MP4 cut short after its index (written first, "faststart") still
	// opens and decodes its first frames: its index says where the data
	// should end.
	if end := src.in.indexEnd(src.v); end > 0 {
		if st, err := os.Stat(path); err == nil && end > st.Size() {
			return FileInfo{}, fmt.Errorf("%w: the file is truncated (%d of the %d bytes its index describes); upload it again",
				ErrNotVideo, st.Size(), end)
		}
	}
	info := FileInfo{
		Container:  src.in.formatName(),
		VideoCodec: src.in.codecName(src.v),
		Width:      f.Width(),
		Height:     f.Height(),
		FrameRate:  src.in.frameRate(src.v).Float64(),
	}
	f.Unref()
	if d := src.in.duration(); d > 0 {
		info.Duration = time.Duration(d) * time.Microsecond
	} else if d := src.in.streamDuration(src.v); d > 0 {
		info.Duration = media.Duration(astiav.RescaleQ(d, src.in.timeBase(src.v), clock90k), 90000)
	}
	if a := src.in.bestAudio(src.v); a >= 0 {
		info.AudioCodec = src.in.codecName(a)
	}
	return info, nil
}

// source is an opened input, its video stream and that stream's decoder.
type source struct {
	in   *input
	v    int
	vdec *decoder
}

// openSource opens path and the decoder of its best video stream.
func openSource(path string, threads int, gpu *GPU) (*source, error) {
	in, err := openInput(path)
	if err != nil {
		return nil, err
	}
	v := in.bestVideo()
	if v < 0 {
		in.close()
		return nil, fmt.Errorf("%w: no video stream found", ErrNotVideo)
	}
	if w, h := in.size(v); int64(w)*int64(h) > maxPixels {
		in.close()
		return nil, fmt.Errorf("%w: the video's pictures are too large (%dx%d)", ErrNotVideo, w, h)
	}
	vdec, err := in.openDecoder(v, threads, gpu)
	if err != nil {
		codec := in.codecName(v)
		in.close()
		return nil, fmt.Errorf("%w: the %s video cannot be decoded (%v)", ErrNotVideo, codec, err)
	}
	return &source{in: in, v: v, vdec: vdec}, nil
}

func (s *source) close() {
	s.vdec.free()
	s.in.close()
}

func (s *source) cannotDecode() error {
	return fmt.Errorf("%w: the %s video cannot be decoded", ErrNotVideo, s.in.codecName(s.v))
}

// maxPacketsWithoutPicture is how many video packets a decoder may take
// without giving a picture before the video is deemed undecodable.
const maxPacketsWithoutPicture = 1000

// firstFrame decodes the video's first picture into f.
func (s *source) firstFrame(f *astiav.Frame) error {
	sent, readErrs := 0, 0
	for sent < maxPacketsWithoutPicture {
		idx, err := s.in.read()
		if err != nil {
			if !errors.Is(err, astiav.ErrEof) && !errors.Is(err, astiav.ErrEagain) && readErrs < maxReadErrors {
				readErrs++
				continue
			}
			break
		}
		readErrs = 0
		if idx != s.v {
			continue
		}
		sent++
		if err := s.vdec.send(s.in, false); err != nil && !errors.Is(err, astiav.ErrEagain) {
			continue // a damaged packet: try the next one
		}
		if err := s.vdec.receive(f); err == nil {
			return nil
		}
	}
	// The end of the input (or of patience): what the decoder holds.
	_ = s.vdec.send(s.in, true)
	for {
		err := s.vdec.receive(f)
		if err == nil {
			return nil
		}
		if errors.Is(err, astiav.ErrEof) || errors.Is(err, astiav.ErrEagain) {
			return s.cannotDecode()
		}
	}
}

// maxReadErrors is how many read errors in a row end the input.
const maxReadErrors = 32

// FileConfig configures TranscodeFile.
type FileConfig struct {
	// Config is the backend, preset, keyframe interval and log, as for a
	// live Pipeline.
	Config
	// Rungs is the ladder, already chosen for the source's height; it
	// must not be empty.
	Rungs []Rung
	// ThumbnailInterval is the spacing of the thumbnails in media time;
	// 0: no thumbnails.
	ThumbnailInterval time.Duration
	// ThumbnailWidth is the thumbnails' width (0: 160); the height keeps
	// the first picture's aspect ratio, rounded to even.
	ThumbnailWidth int
	// PosterAt is the instant of the poster frame; the first frame when
	// the file is not that long. Negative: no poster.
	PosterAt time.Duration
	// PosterMaxWidth bounds the poster's width (0: the source's); it is
	// never upscaled.
	PosterMaxWidth int
	// AudioBitrate is the AAC bitrate in bits per second (0: 128000).
	AudioBitrate int
}

// FileSink receives what TranscodeFile produces. Every function is called
// on TranscodeFile's goroutine; nil ones are skipped.
type FileSink struct {
	// Start is called once, before any Video or Audio call, with the
	// output rungs (their real, even sizes, as Pipeline.OutputRungs gives
	// them) and the AAC track (nil when the file has no usable audio). An
	// error aborts the transcoding and is returned.
	Start func(rungs []Rung, audio *media.Track) error
	// Video receives the encoded access units of rung i, as a Pipeline's
	// Emit does (H.264, PTS and DTS in 90 kHz ticks; DTS increases).
	Video func(rung int, au *media.AccessUnit)
	// Audio receives one raw AAC frame per access unit (Payload
	// [][]byte{frame}), PTS = DTS in the track's clock (48 kHz). The
	// first one carries the encoder's priming: it starts 1024 samples
	// before the first audio sample, so its PTS may be negative.
	Audio func(au *media.AccessUnit)
	// Thumbnail receives a picture at every multiple of ThumbnailInterval
	// of media time (the first frame at or after that instant).
	Thumbnail func(at time.Duration, img *image.RGBA)
	// Poster receives the poster frame once when PosterAt >= 0.
	Poster func(img *image.RGBA)
	// Progress receives the media time processed, at most about every
	// 250 ms and at the end.
	Progress func(done time.Duration)
}

// FileResult sums up a transcoded file.
type FileResult struct {
	Duration time.Duration // media time transcoded
	Backend  string        // the encoder backend used
	Frames   int           // decoded source pictures given to the encoders
	OnGPU    bool          // decoded (NVDEC) and scaled on the GPU
}

// progressEvery is the least wall time between two Progress calls.
const progressEvery = 250 * time.Millisecond

// TranscodeFile transcodes the media file path: it decodes the best video
// stream of any container and codec FFmpeg reads, scales and encodes it to
// every rung with the code of the live Pipeline (keyframes on the
// KeyframeInterval grid, the same instants in every rung), and re-encodes
// the best audio stream to AAC-LC stereo 48 kHz. Video and audio share one
// timeline whose zero is the earliest start of the two streams. A file
// damaged midway is transcoded as far as it can be decoded, with warnings
// in the log. It returns ctx.Err() soon after ctx is done; errors for input
// that is not a usable video wrap ErrNotVideo.
func TranscodeFile(ctx context.Context, path string, cfg FileConfig, sink FileSink) (FileResult, error) {
	if err := ctx.Err(); err != nil {
		return FileResult{}, err
	}
	lad, err := newLadder(cfg.Config, cfg.Rungs)
	if err != nil {
		return FileResult{}, err
	}
	src, err := openSource(path, 0, cfg.GPU)
	if err != nil {
		return FileResult{}, err
	}
	j := &fileJob{cfg: cfg, sink: sink, lad: lad, src: src, in: src.in, log: lad.log,
		warn: logx.NewLimiter(5 * time.Second), a: -1}
	defer j.close()
	if err := j.setup(); err != nil {
		return FileResult{}, err
	}
	if err := j.run(ctx); err != nil {
		return FileResult{}, err
	}
	return j.finish()
}

// fileJob is the state of one TranscodeFile call. close frees every C
// object it holds.
type fileJob struct {
	cfg  FileConfig
	sink FileSink
	lad  *ladder
	src  *source
	in   *input
	log  *slog.Logger
	warn *logx.Limiter

	frame *astiav.Frame // decoder output, reused
	vtb   astiav.Rational
	step  int64 // one frame at the source's frame rate, in 90 kHz ticks

	a    int // audio stream index, -1 when none
	adec *decoder
	aud  *audioTranscoder
	atb  astiav.Rational

	// The timeline: zero is the earliest start of the streams used, in
	// 90 kHz ticks of the input's clock.
	zero     int64
	haveZero bool

	// Video timestamps as given to the encoders (see videoPTS).
	last     int64
	haveLast bool
	shift    int64
	lastDTS  []int64
	sentDTS  []bool
	sent     int // video packets sent to the decoder
	frames   int
	videoEnd int64 // 90 kHz

	started bool
	gatedV  []gatedVideo
	gatedA  []*media.AccessUnit

	thumbs    *rgbaScaler
	nextThumb time.Duration

	posterAt   time.Duration
	posterDone bool
	fallback   *astiav.Frame // the first picture, for a poster not found

	lastProgress time.Time
}

type gatedVideo struct {
	rung int
	au   *media.AccessUnit
}

func (j *fileJob) warnf(msg string, args ...any) {
	if ok, n := j.warn.Allow(); ok {
		j.log.Warn("transcode: "+msg, append(args, "suppressed_since_last", n)...)
	}
}

func (j *fileJob) close() {
	// The rung workers first: they may still hold decoded pictures.
	j.lad.release()
	if j.thumbs != nil {
		j.thumbs.free()
	}
	if j.fallback != nil {
		j.fallback.Free()
		j.fallback = nil
	}
	if j.frame != nil {
		j.frame.Free()
		j.frame = nil
	}
	if j.aud != nil {
		j.aud.free()
	}
	j.adec.free()
	j.src.close()
}

// setup opens the audio side and fixes the timeline's zero.
func (j *fileJob) setup() error {
	if j.frame = astiav.AllocFrame(); j.frame == nil {
		return errors.New("allocating a frame failed")
	}
	v := j.src.v
	j.vtb = j.in.timeBase(v)
	fps := j.in.frameRate(v)
	if f := fps.Float64(); f <= 1 || f > 240 {
		fps = astiav.NewRational(60, 1)
	}
	j.lad.sourceRate = func() astiav.Rational { return fps }
	j.step = max(int64(float64(90000)/fps.Float64()+0.5), 1)
	j.lastDTS, j.sentDTS = make([]int64, len(j.cfg.Rungs)), make([]bool, len(j.cfg.Rungs))

	if j.a = j.in.bestAudio(v); j.a >= 0 {
		if err := j.openAudio(); err != nil {
			j.warnf("the audio cannot be transcoded; the video will have none", "codec", j.in.codecName(j.a), "err", err)
			j.adec.free()
			j.adec = nil
			if j.aud != nil {
				j.aud.free()
				j.aud = nil
			}
			j.a = -1
		}
	}
	for _, i := range []int{v, j.a} {
		if i < 0 {
			continue
		}
		if st := j.in.startTime(i); st != noPTS {
			z := astiav.RescaleQ(st, j.in.timeBase(i), clock90k)
			if !j.haveZero || z < j.zero {
				j.zero, j.haveZero = z, true
			}
		}
	}

	if j.cfg.PosterAt >= 0 && j.sink.Poster != nil {
		j.posterAt = j.cfg.PosterAt
		if d := j.in.duration(); d > 0 && j.posterAt >= time.Duration(d)*time.Microsecond {
			j.posterAt = 0 // a short file: its first frame
		}
	} else {
		j.posterDone = true
	}
	j.lastProgress = time.Now()
	return nil
}

func (j *fileJob) openAudio() error {
	var err error
	if j.adec, err = j.in.openDecoder(j.a, 1, nil); err != nil {
		return err
	}
	j.atb = j.in.timeBase(j.a)
	bitrate := j.cfg.AudioBitrate
	if bitrate <= 0 {
		bitrate = 128_000
	}
	j.aud, err = newAudioTranscoder(bitrate)
	return err
}

// run demuxes and decodes the whole input.
func (j *fileJob) run(ctx context.Context) error {
	readErrs := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		idx, err := j.in.read()
		if errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			if readErrs++; readErrs > maxReadErrors {
				j.warnf("the file cannot be read any further; transcoding what was read", "err", err)
				return nil
			}
			j.warnf("reading the file", "err", err)
			continue
		}
		readErrs = 0
		switch idx {
		case j.src.v:
			j.sent++
			if err := j.decode(j.src.vdec, false, j.videoFrame); err != nil {
				return err
			}
			if j.frames == 0 && j.sent > maxPacketsWithoutPicture {
				return j.src.cannotDecode()
			}
		case j.a:
			if err := j.decode(j.adec, false, j.audioFrame); err != nil {
				return err
			}
		}
		j.progress(false)
	}
}

// finish drains the decoders and the encoders.
func (j *fileJob) finish() (FileResult, error) {
	if err := j.decode(j.src.vdec, true, j.videoFrame); err != nil {
		return FileResult{}, err
	}
	if j.adec != nil {
		if err := j.decode(j.adec, true, j.audioFrame); err != nil {
			return FileResult{}, err
		}
	}
	if j.frames == 0 {
		return FileResult{}, j.src.cannotDecode()
	}
	if j.aud != nil && j.aud.started {
		if err := j.aud.flush(j.emitAudio); err != nil {
			return FileResult{}, err
		}
	}
	if err := j.lad.flushEncoders(j.emitVideo); err != nil {
		j.lad.failed = true
		return FileResult{}, err
	}
	if !j.posterDone && j.fallback != nil {
		if err := j.poster(j.fallback); err != nil {
			return FileResult{}, err
		}
	}
	res := FileResult{Duration: j.done(), Backend: j.lad.encoderName(), Frames: j.frames,
		OnGPU: j.src.vdec.onGPU && j.lad.hwFrames}
	j.progress(true)
	return res, nil
}

// done is the media time processed.
func (j *fileJob) done() time.Duration {
	d := media.Duration(max(j.videoEnd, 0), 90000)
	if j.aud != nil && j.aud.started {
		d = max(d, media.Duration(j.aud.next, aacRate))
	}
	return d
}

func (j *fileJob) progress(final bool) {
	if j.sink.Progress == nil || (!final && time.Since(j.lastProgress) < progressEvery) {
		return
	}
	j.lastProgress = time.Now()
	j.sink.Progress(j.done())
}

// decode sends the current packet (or, with flush, the end of the input)
// to d and hands every frame it gives to handle. Damaged input is skipped
// with a warning; only handle's errors are returned.
func (j *fileJob) decode(d *decoder, flush bool, handle func(*astiav.Frame) error) error {
	for try, resend := 0, true; resend && try < 3; try++ {
		resend = false
		err := d.send(j.in, flush)
		switch {
		case errors.Is(err, astiav.ErrEagain):
			resend = true // drain first, then send again
		case err != nil && !errors.Is(err, astiav.ErrEof):
			j.warnf("damaged "+d.name+" data skipped", "err", err)
			return nil
		}
		for {
			err := d.receive(j.frame)
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				break
			}
			if err != nil {
				j.warnf("damaged "+d.name+" data skipped", "err", err)
				resend = false
				break
			}
			err = handle(j.frame)
			j.frame.Unref()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// videoPTS maps a decoded picture's timestamp to the output timeline in
// 90 kHz ticks, strictly increasing: a missing timestamp follows the last
// one by a frame, a small step back (a repeated or reordered timestamp)
// becomes one tick after the last one (the encoders then drop the picture
// as a repeat), and a jump back of more than a second (timestamps that
// restart) shifts the rest of the file to continue the timeline.
func (j *fileJob) videoPTS(ts int64) int64 {
	if ts == noPTS {
		if j.haveLast {
			j.last += j.step
		}
		j.haveLast = true
		return j.last
	}
	pts := astiav.RescaleQ(ts, j.vtb, clock90k)
	if !j.haveZero {
		j.zero, j.haveZero = pts, true
	}
	pts += j.shift - j.zero
	if j.haveLast && pts <= j.last {
		if j.last-pts > 90000 {
			j.shift += j.last + j.step - pts
			pts = j.last + j.step
		} else {
			pts = j.last + 1
		}
	}
	j.last, j.haveLast = pts, true
	return pts
}

func (j *fileJob) videoFrame(f *astiav.Frame) error {
	if j.src.vdec.onGPU && f.PixelFormat() != astiav.PixelFormatCuda {
		// NVDEC refused the file and FFmpeg decodes it on one CPU thread:
		// the caller retries on the CPU.
		j.lad.failed = true
		return fmt.Errorf("transcode: NVDEC on %s did not take this %s video (FFmpeg decoded it to %s)",
			j.cfg.GPU.Name, j.in.codecName(j.src.v), f.PixelFormat())
	}
	f, err := j.lad.toDevice(f)
	if err != nil {
		j.lad.failed = true
		return err
	}
	pts := j.videoPTS(bestEffortTS(f))
	f.SetPts(pts)
	if err := j.lad.encodeFrame(f, j.emitVideo); err != nil {
		j.lad.failed = true
		return err
	}
	j.frames++
	j.videoEnd = pts + j.step
	if !j.started {
		if err := j.start(); err != nil {
			return err
		}
	}
	at := media.Duration(pts, 90000)
	if hwFrame(f) &&
		(j.wantThumbnail(at) || !j.posterDone && (at >= j.posterAt || j.fallback == nil)) {
		// Thumbnails and the poster are made on the CPU from a copy.
		sw, free, err := softwareFrame(f)
		if err != nil {
			return err
		}
		defer free()
		f = sw
	}
	if err := j.thumbnails(f, at); err != nil {
		return err
	}
	if !j.posterDone {
		if at >= j.posterAt {
			return j.poster(f)
		}
		if j.fallback == nil {
			if j.fallback = f.Clone(); j.fallback == nil {
				return errors.New("referencing a decoded frame failed")
			}
		}
	}
	return nil
}

// start calls the sink's Start and hands it what waited for it.
func (j *fileJob) start() error {
	j.started = true
	if j.sink.Start != nil {
		var track *media.Track
		if j.aud != nil {
			t := j.aud.track
			track = &t
		}
		if err := j.sink.Start(j.lad.outputRungs(), track); err != nil {
			return err
		}
	}
	for _, g := range j.gatedV {
		j.emitVideo(g.rung, g.au)
	}
	for _, au := range j.gatedA {
		j.emitAudio(au)
	}
	j.gatedV, j.gatedA = nil, nil
	return nil
}

// emitVideo hands an access unit of rung i to the sink once it started,
// keeping each rung's DTS increasing (encoders restarted by a change of
// the source's size start a little back).
func (j *fileJob) emitVideo(i int, au *media.AccessUnit) {
	if !j.started {
		j.gatedV = append(j.gatedV, gatedVideo{i, au})
		return
	}
	if i < len(j.lastDTS) {
		if j.sentDTS[i] && au.DTS <= j.lastDTS[i] {
			au.DTS = j.lastDTS[i] + 1
			au.PTS = max(au.PTS, au.DTS)
		}
		j.lastDTS[i], j.sentDTS[i] = au.DTS, true
	}
	if j.sink.Video != nil {
		j.sink.Video(i, au)
	}
}

func (j *fileJob) emitAudio(au *media.AccessUnit) {
	if !j.started {
		j.gatedA = append(j.gatedA, au)
		return
	}
	if j.sink.Audio != nil {
		j.sink.Audio(au)
	}
}

func (j *fileJob) audioFrame(f *astiav.Frame) error {
	var start int64
	if !j.aud.started {
		if ts := bestEffortTS(f); ts != noPTS {
			pts := astiav.RescaleQ(ts, j.atb, clock90k)
			if !j.haveZero {
				j.zero, j.haveZero = pts, true
			}
			start = astiav.RescaleQ(pts-j.zero, clock90k, astiav.NewRational(1, aacRate))
		}
	}
	err := j.aud.push(f, start, j.emitAudio)
	if errors.Is(err, errSkipAudio) {
		j.warnf("unusable audio skipped", "err", err)
		return nil
	}
	return err
}

// maxThumbsPerFrame bounds the thumbnails one picture stands for, after a
// gap in the video.
const maxThumbsPerFrame = 10

// wantThumbnail tells whether the picture at at makes a thumbnail.
func (j *fileJob) wantThumbnail(at time.Duration) bool {
	return j.cfg.ThumbnailInterval > 0 && j.sink.Thumbnail != nil && at >= j.nextThumb
}

func (j *fileJob) thumbnails(f *astiav.Frame, at time.Duration) error {
	iv := j.cfg.ThumbnailInterval
	if !j.wantThumbnail(at) {
		return nil
	}
	if j.thumbs == nil {
		w := j.cfg.ThumbnailWidth
		if w <= 0 {
			w = 160
		}
		j.thumbs = &rgbaScaler{}
		j.thumbs.w, j.thumbs.h = fitSize(f.Width(), f.Height(), w, false)
	}
	for n := 0; at >= j.nextThumb && n < maxThumbsPerFrame; n++ {
		img, err := j.thumbs.scale(f)
		if err != nil {
			return fmt.Errorf("transcode: thumbnail: %w", err)
		}
		j.sink.Thumbnail(j.nextThumb, img)
		j.nextThumb += iv
	}
	if at >= j.nextThumb {
		j.nextThumb = (at/iv + 1) * iv
	}
	return nil
}

func (j *fileJob) poster(f *astiav.Frame) error {
	j.posterDone = true
	if j.fallback != nil && j.fallback != f {
		j.fallback.Free()
		j.fallback = nil
	}
	w := j.cfg.PosterMaxWidth
	if w <= 0 {
		w = f.Width()
	}
	s := &rgbaScaler{}
	defer s.free()
	s.w, s.h = fitSize(f.Width(), f.Height(), w, true)
	img, err := s.scale(f)
	if err != nil {
		return fmt.Errorf("transcode: poster: %w", err)
	}
	j.sink.Poster(img)
	return nil
}
