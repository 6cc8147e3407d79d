// Package ffmpeg is Shoal's only cgo package: it decodes a video track once
// with FFmpeg's libraries (through go-astiav), scales each decoded frame to
// every rung of a ladder and encodes each rung to H.264, with keyframes
// forced at the same timestamps in every rung so that segments align across
// the ladder. Pipeline does so for live access units; TranscodeFile does the
// same for a whole media file of any format FFmpeg reads, with its audio
// re-encoded to AAC, thumbnails and a poster.
//
// Every C object is freed on every path: objects a method allocates are
// freed before it returns, and Close frees what the Pipeline keeps.
package ffmpeg

import (
	"errors"
	"fmt"
	"log/slog"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
)

// Config configures a pipeline.
type Config struct {
	// Backend is BackendSoftware, BackendNVENC or BackendQSV.
	Backend string
	// Preset is the x264 preset (hardware backends use the closest match).
	Preset string
	// KeyframeInterval is the spacing of the forced keyframes: the segment
	// duration, so that every rung can be cut at the same instants.
	KeyframeInterval time.Duration
	// Anchored puts the keyframe grid at KeyframeAnchor + k*KeyframeInterval
	// (90 kHz ticks) rather than starting it at the first frame, so that a
	// pipeline replacing another (a remote worker's, a failed one) forces
	// keyframes at the same instants. The first frame is a keyframe either
	// way: an encoder starts with one.
	Anchored       bool
	KeyframeAnchor int64
	// GPU, when set, decodes the codecs it decodes (NVDEC) and scales
	// every rung on it (scale_cuda, one filter graph for the ladder); with
	// the nvenc backend the scaled frames go to NVENC without leaving the
	// GPU, with x264 they are downloaded. A ladder takes one NVENC session
	// per rung; when the GPU has too few left, it encodes with x264.
	GPU *GPU
	// Log receives rate-limited warnings about bad input.
	Log *slog.Logger

	// graphOnCPU scales with a filter graph (swscale's scale filter) as
	// the GPU path does with scale_cuda: tests check that path's plumbing
	// on machines without a GPU.
	graphOnCPU bool
	// testDevice, when set, gets every decoded frame uploaded to it
	// before the ladder takes it: tests run the GPU path with real
	// hardware frames on Vulkan (hwupload.go).
	testDevice *hwDevice
}

// Emit receives an encoded access unit of rung i (H.264 NAL units, PTS and
// DTS in 90 kHz ticks, SPS and PPS in band before every keyframe).
type Emit func(rung int, au *media.AccessUnit)

// Pipeline transcodes one video track into a ladder: it decodes access
// units and hands the decoded frames to its ladder.
type Pipeline struct {
	*ladder
	warn *logx.Limiter
	src  media.Track

	dec     *astiav.CodecContext
	onGPU   bool // dec decodes with NVDEC (see also ladder.onGPU)
	decoded *astiav.Frame
	pkt     *astiav.Packet
	waitKey bool
	// onFrame, when set, gets the decoded frames instead of the ladder
	// (CompareLive decodes a live source with the pipeline's own
	// decoding).
	onFrame func(*astiav.Frame) error
}

// ladder scales decoded frames (PTS in 90 kHz ticks) to every rung and
// encodes them, forcing keyframes on a grid shared by the rungs. Pipeline
// (live access units) and TranscodeFile (whole files) feed it.
type ladder struct {
	cfg     Config
	backend backend
	log     *slog.Logger
	rungs   []Rung // as asked; output sizes follow the source's aspect ratio
	// sourceRate gives the source's frame rate when the encoders open.
	sourceRate func() astiav.Rational

	outs  []*output // nil until the first frame fixes the input size
	inW   int
	inH   int
	inFmt astiav.PixelFormat
	inSW  int // the hardware frames' picture layout (swFormat)

	nextKey  int64 // next grid instant in 90 kHz ticks
	haveGrid bool
	interval int64

	// graph scales every rung at once (GPU frames, or graphOnCPU); nil
	// when each rung scales with swscale.
	graph *frameGraph
	// sessions is how many NVENC sessions the open encoders hold on
	// cfg.GPU; encoder is the backend they use (cfg's, or software when
	// the GPU had no session left).
	sessions int
	encoder  backend
	// hwFrames tells whether the open outputs get frames in a hardware
	// device's memory (the GPU's, or a test's device).
	hwFrames bool
	// up uploads decoded frames to cfg.testDevice.
	up *uploader
	// counted is set while the ladder counts as one of cfg.GPU's; failed
	// once an error came out of it, encodedOnGPU once it encoded frames
	// scaled on the GPU (for the GPU's health).
	counted, failed, encodedOnGPU bool
}

// output is one rung: its scaler, its reused picture and its encoder, driven
// by a goroutine of its own so that the rungs scale and encode in parallel
// with each other and with the decoding of the next frames. The worker owns
// the C objects while it runs; the pipeline touches them only after sync.
type output struct {
	rung Rung
	// scaler and frame scale the decoded pictures; both are nil when the
	// ladder's filter graph scales (jobs then carry scaled frames).
	scaler *astiav.SoftwareScaleContext
	frame  *astiav.Frame
	enc    *astiav.CodecContext
	pkt    *astiav.Packet

	lastPTS int64 // in the encoder's time base
	sent    bool

	work   chan rungJob
	exited chan struct{}
	stop   atomic.Bool // closing without a flush: drop queued frames

	mu      sync.Mutex
	pending []*media.AccessUnit // encoded by the worker, emitted by Push
	err     error               // the worker's first error
}

// rungJob is a decoded frame (a reference of its own) to scale and encode,
// or, with sync set, a marker the worker closes once it has reached it.
type rungJob struct {
	f    *astiav.Frame
	pts  int64
	key  bool
	sync chan struct{}
}

// queueDepth is how many decoded frames a rung may lag behind the decoder.
const queueDepth = 4

// loop encodes the frames it is handed until work is closed.
func (o *output) loop(l *ladder) {
	defer close(o.exited)
	collect := func(_ int, au *media.AccessUnit) {
		o.mu.Lock()
		o.pending = append(o.pending, au)
		o.mu.Unlock()
	}
	for j := range o.work {
		if j.sync != nil {
			close(j.sync)
			continue
		}
		o.mu.Lock()
		failed := o.err != nil
		o.mu.Unlock()
		if !failed && !o.stop.Load() {
			if err := l.encodeRung(0, o, j.f, j.pts, j.key, collect); err != nil {
				o.mu.Lock()
				o.err = err
				o.mu.Unlock()
			}
		}
		j.f.Free()
	}
}

// New opens a decoder for src (H.264, H.265, VP8 or VP9). Encoders open with the first
// decoded frame, when the input size is known.
func New(cfg Config, src media.Track, rungs []Rung) (p *Pipeline, err error) {
	l, err := newLadder(cfg, rungs)
	if err != nil {
		return nil, err
	}
	defer func() {
		if err != nil {
			// Not counted on its GPU: it never runs.
			l.release()
		}
	}()
	var id astiav.CodecID
	switch src.Codec {
	case media.CodecH264:
		id = astiav.CodecIDH264
	case media.CodecH265:
		id = astiav.CodecIDHevc
	case media.CodecVP8:
		id = astiav.CodecIDVp8
	case media.CodecVP9:
		id = astiav.CodecIDVp9
	default:
		return nil, fmt.Errorf("transcode: cannot decode %q video", src.Codec)
	}
	codec := astiav.FindDecoder(id)
	if codec == nil {
		return nil, fmt.Errorf("transcode: no %s decoder in this FFmpeg build", src.Codec)
	}
	dec := astiav.AllocCodecContext(codec)
	if dec == nil {
		return nil, errors.New("transcode: allocating the decoder failed")
	}
	onGPU := cfg.GPU != nil && cfg.GPU.Decodes(src.Codec)
	if onGPU {
		// NVDEC decodes and the pictures stay in GPU memory (FFmpeg
		// decodes on the CPU instead if NVDEC refuses the stream, and the
		// ladder then scales those pictures on the CPU).
		if err := cfg.GPU.dev.attach(dec); err != nil {
			dec.Free()
			return nil, fmt.Errorf("transcode: %w", err)
		}
	} else {
		dec.SetThreadCount(0)
	}
	// A publisher's SPS may declare any size: pictures over maxPixels are
	// refused, not allocated (12000x12000 took 1.6 GB for 435 KB sent).
	opts := astiav.NewDictionary()
	defer opts.Free()
	if err := opts.Set("max_pixels", strconv.Itoa(maxPixels), 0); err != nil {
		dec.Free()
		return nil, fmt.Errorf("transcode: decoder options: %w", err)
	}
	if err := dec.Open(codec, opts); err != nil {
		dec.Free()
		return nil, fmt.Errorf("transcode: opening the %s decoder: %w", src.Codec, err)
	}
	p = &Pipeline{
		ladder: l, warn: logx.NewLimiter(5 * time.Second),
		src: src, dec: dec, onGPU: onGPU,
		decoded: astiav.AllocFrame(), pkt: astiav.AllocPacket(),
		waitKey: true,
	}
	l.sourceRate = p.frameRate
	return p, nil
}

// newLadder validates the ladder's settings; encoders open with the first
// frame. sourceRate must be set before that.
func newLadder(cfg Config, rungs []Rung) (*ladder, error) {
	if len(rungs) == 0 {
		return nil, errors.New("transcode: empty ladder")
	}
	if cfg.KeyframeInterval <= 0 {
		return nil, errors.New("transcode: keyframe interval must be positive")
	}
	b, err := backendByName(cfg.Backend)
	if err != nil {
		return nil, err
	}
	if cfg.Log == nil {
		cfg.Log = slog.Default()
	}
	l := &ladder{cfg: cfg, backend: b, log: cfg.Log, rungs: rungs,
		interval: media.Ticks(cfg.KeyframeInterval, 90000)}
	if cfg.testDevice != nil {
		l.up = &uploader{dev: cfg.testDevice}
	}
	if cfg.GPU != nil {
		// Counted from now, so that ladders started together spread
		// over the GPUs.
		cfg.GPU.addLadder(1)
		l.counted = true
	}
	return l, nil
}

// release closes the outputs and stops counting the ladder on its GPU,
// telling the GPU how it went.
func (p *ladder) release() {
	p.closeOutputs()
	if p.up != nil {
		p.up.free()
	}
	if p.counted {
		p.counted = false
		p.cfg.GPU.addLadder(-1)
		if p.failed || p.encodedOnGPU {
			p.cfg.GPU.ladderEnded(p.failed)
		}
	}
}

// Backend names the encoder backend in use: the configured one, or
// software when a GPU had no NVENC session left for the ladder.
func (p *Pipeline) Backend() string { return p.ladder.encoderName() }

// OnGPU tells whether the frames are decoded and scaled on the GPU (known
// once the first frame was decoded).
func (p *Pipeline) OnGPU() bool { return p.onGPU && p.ladder.hwFrames }

func (p *ladder) encoderName() string {
	if p.encoder != nil {
		return p.encoder.name()
	}
	return p.backend.name()
}

// Push decodes one access unit of the source video track (90 kHz clock) and
// emits whatever the encoders produce. Undecodable input is skipped until
// the next keyframe; only encoder failures are returned.
func (p *Pipeline) Push(au *media.AccessUnit, emit Emit) error {
	if p.waitKey {
		if !au.Keyframe {
			return nil
		}
		p.waitKey = false
	}
	data, err := p.annexB(au)
	if err != nil {
		p.badInput("unusable access unit", err)
		return nil
	}
	p.pkt.Unref()
	if err := p.pkt.FromData(data); err != nil {
		return fmt.Errorf("transcode: packet: %w", err)
	}
	p.pkt.SetSize(len(data) - padding)
	p.pkt.SetPts(au.PTS)
	p.pkt.SetDts(au.DTS)
	if au.Keyframe {
		p.pkt.SetFlags(p.pkt.Flags().Add(astiav.PacketFlagKey))
	}
	err = p.dec.SendPacket(p.pkt)
	p.pkt.Unref()
	if err != nil && !errors.Is(err, astiav.ErrEagain) {
		if gerr := p.gpuFailure(err); gerr != nil {
			p.failed = true
			return gerr
		}
		p.badInput("the decoder refused an access unit", err)
		p.waitKey = true
		return nil
	}
	return p.drainDecoder(emit)
}

// Flush drains the decoder and the encoders at the end of the input.
func (p *Pipeline) Flush(emit Emit) error {
	if err := p.dec.SendPacket(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
		p.badInput("flushing the decoder", err)
	}
	if err := p.drainDecoder(emit); err != nil {
		return err
	}
	if err := p.flushEncoders(emit); err != nil {
		p.failed = true
		return err
	}
	return nil
}

// Close frees every C object. The pipeline is unusable afterwards.
func (p *Pipeline) Close() {
	p.ladder.release()
	if p.dec != nil {
		p.dec.Free()
		p.dec = nil
	}
	if p.decoded != nil {
		p.decoded.Free()
		p.decoded = nil
	}
	if p.pkt != nil {
		p.pkt.Free()
		p.pkt = nil
	}
}

// gpuFailure returns an error for a decoder error that means the GPU
// failed, so that the caller moves the stream to the CPU: with NVDEC
// decoding, anything but invalid data (which the CPU decoder would reject
// too, and which is skipped as bad input) is the GPU's.
func (p *Pipeline) gpuFailure(err error) error {
	if !p.onGPU || errors.Is(err, astiav.ErrInvaliddata) {
		return nil
	}
	return fmt.Errorf("transcode: decoding on the GPU (%s): %w", p.cfg.GPU.Name, err)
}

func (p *Pipeline) badInput(msg string, err error) {
	if ok, n := p.warn.Allow(); ok {
		p.log.Warn("transcode: "+msg+"; skipping to the next keyframe", "err", err, "suppressed_since_last", n)
	}
}

// clock90k is the time base of media access units.
var clock90k = astiav.NewRational(1, 90000)

// padding is the zeroed tail FFmpeg's bitstream readers may read past the
// end of a packet (AV_INPUT_BUFFER_PADDING_SIZE).
const padding = 64

// annexB serializes an access unit with start codes, putting the parameter
// sets first on keyframes so the decoder can start anywhere. A VP8 or VP9
// frame goes to the decoder as it came.
func (p *Pipeline) annexB(au *media.AccessUnit) ([]byte, error) {
	if p.src.Codec == media.CodecVP8 || p.src.Codec == media.CodecVP9 {
		var b []byte
		for _, part := range au.Payload {
			b = append(b, part...)
		}
		if len(b) == 0 {
			return nil, errors.New("empty frame")
		}
		return append(b, make([]byte, padding)...), nil
	}
	nalus := au.Payload
	inBand := false
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		if slot := p.paramSlot(n); slot != nil {
			*slot = n
			inBand = true
		}
	}
	if au.Keyframe && !inBand {
		var ps [][]byte
		for _, b := range [][]byte{p.src.VPS, p.src.SPS, p.src.PPS} {
			if len(b) > 0 {
				ps = append(ps, b)
			}
		}
		nalus = append(ps, nalus...)
	}
	b, err := h264.AnnexB(nalus).Marshal()
	if err != nil {
		return nil, err
	}
	return append(b, make([]byte, padding)...), nil
}

// paramSlot returns where the pipeline keeps the parameter set n, or nil when
// n is not one; parameter sets sent in band replace the track's.
func (p *Pipeline) paramSlot(n []byte) *[]byte {
	if p.src.Codec == media.CodecH265 {
		switch (n[0] >> 1) & 0x3f {
		case 32:
			return &p.src.VPS
		case 33:
			return &p.src.SPS
		case 34:
			return &p.src.PPS
		}
		return nil
	}
	switch h264.NALUType(n[0] & 0x1f) {
	case h264.NALUTypeSPS:
		return &p.src.SPS
	case h264.NALUTypePPS:
		return &p.src.PPS
	}
	return nil
}

func (p *Pipeline) drainDecoder(emit Emit) error {
	for {
		err := p.dec.ReceiveFrame(p.decoded)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			if gerr := p.gpuFailure(err); gerr != nil {
				p.failed = true
				return gerr
			}
			p.badInput("decoding", err)
			return nil
		}
		if pf := p.decoded.PixelFormat(); p.onGPU && pf != astiav.PixelFormatCuda {
			// NVDEC refused the stream and FFmpeg decodes it on one CPU
			// thread: the caller moves it to a CPU pipeline instead.
			p.decoded.Unref()
			p.failed = true
			return fmt.Errorf("transcode: NVDEC on %s did not take this %s stream (FFmpeg decoded it to %s)",
				p.cfg.GPU.Name, p.src.Codec, pf)
		}
		f, err := p.toDevice(p.decoded)
		if err == nil {
			if p.onFrame != nil {
				err = p.onFrame(f)
			} else {
				err = p.encodeFrame(f, emit)
			}
		}
		p.decoded.Unref()
		if err != nil {
			p.failed = true
			return err
		}
	}
}

// toDevice is f, or f uploaded to the test's device (Config.testDevice),
// which lives until the next call.
func (p *ladder) toDevice(f *astiav.Frame) (*astiav.Frame, error) {
	if p.up == nil {
		return f, nil
	}
	return p.up.upload(f)
}

// encodeFrame scales a decoded frame (PTS in 90 kHz ticks) to every rung and
// encodes it, forcing a keyframe on the first frame at or after each grid
// instant.
func (p *ladder) encodeFrame(f *astiav.Frame, emit Emit) error {
	// The hardware frames' layout is read (a cgo call) only for hardware
	// frames: a frame in system memory has none (-1), as inSW then says.
	if f.Width() != p.inW || f.Height() != p.inH || f.PixelFormat() != p.inFmt ||
		(p.hwFrames && swFormat(f) != p.inSW) {
		if p.outs != nil {
			p.log.Info("transcode: the source changed size or format; restarting the encoders",
				"from", fmt.Sprintf("%dx%d", p.inW, p.inH), "to", fmt.Sprintf("%dx%d", f.Width(), f.Height()))
			if err := p.flushEncoders(emit); err != nil {
				return err
			}
			p.closeOutputs()
		}
		if err := p.openOutputs(f); err != nil {
			return err
		}
		p.haveGrid = false // the new encoders start with a keyframe
	}
	pts := f.Pts()
	key := false
	if !p.haveGrid {
		p.nextKey, p.haveGrid, key = pts+p.interval, true, true
		if p.cfg.Anchored { // the first grid instant after pts
			p.nextKey = p.cfg.KeyframeAnchor + (floorDiv(pts-p.cfg.KeyframeAnchor, p.interval)+1)*p.interval
		}
	} else if pts >= p.nextKey {
		// The first grid instant after pts (a jump in the timestamps
		// costs no more than a step).
		key = true
		p.nextKey += ((pts-p.nextKey)/p.interval + 1) * p.interval
	}
	if p.graph != nil {
		return p.scaleInGraph(f, pts, key, emit)
	}
	// Every rung gets a reference of its own to the decoded picture, which
	// lives until the last of them is done with it.
	for _, o := range p.outs {
		ref := f.Clone()
		if ref == nil {
			return errors.New("transcode: referencing a decoded frame failed")
		}
		o.work <- rungJob{f: ref, pts: pts, key: key}
	}
	return p.emitReady(emit)
}

// scaleInGraph runs a decoded frame through the ladder's filter graph and
// hands each rung its scaled frame. The graph's filters give one frame per
// frame, at once, with the input's timestamp.
func (p *ladder) scaleInGraph(f *astiav.Frame, pts int64, key bool, emit Emit) error {
	if err := p.graph.push(f); err != nil {
		return fmt.Errorf("transcode: scaling %s: %w", p.scaledWhere(), err)
	}
	for i, o := range p.outs {
		for {
			sf := astiav.AllocFrame()
			if sf == nil {
				return errors.New("transcode: allocating a frame failed")
			}
			ok, err := p.graph.pull(i, sf)
			if err != nil || !ok {
				sf.Free()
				if err != nil {
					return fmt.Errorf("transcode: scaling %s to %s: %w", p.scaledWhere(), o.rung.Name, err)
				}
				break
			}
			o.work <- rungJob{f: sf, pts: sf.Pts(), key: key && sf.Pts() == pts}
		}
	}
	if p.hwFrames {
		p.encodedOnGPU = true
	}
	return p.emitReady(emit)
}

// scaledWhere says where the graph scales, for errors.
func (p *ladder) scaledWhere() string {
	if p.cfg.GPU != nil && !p.cfg.graphOnCPU {
		return "on the GPU (" + p.cfg.GPU.Name + ")"
	}
	return "in the filter graph"
}

// emitReady emits what the rung workers have encoded so far, rung by rung in
// order, and returns the first error a worker met.
func (p *ladder) emitReady(emit Emit) error {
	var first error
	for i, o := range p.outs {
		o.mu.Lock()
		aus, err := o.pending, o.err
		o.pending = nil
		o.mu.Unlock()
		for _, au := range aus {
			emit(i, au)
		}
		if err != nil && first == nil {
			first = err
		}
	}
	return first
}

// sync waits until every rung worker has encoded the frames it was given.
func (p *ladder) sync() {
	for _, o := range p.outs {
		ch := make(chan struct{})
		o.work <- rungJob{sync: ch}
		<-ch
	}
}

func (p *ladder) encodeRung(i int, o *output, f *astiav.Frame, pts int64, key bool, emit Emit) error {
	// The encoder counts in frames (see openEncoder). A source faster than
	// its declared frame rate would repeat a tick: such a frame is dropped
	// (converting to the declared rate), since shifting it would make the
	// output run ahead of the source's time and of its audio. Forced
	// keyframes are kept: they move to the next tick.
	encPTS := astiav.RescaleQ(pts, clock90k, o.enc.TimeBase())
	if o.sent && encPTS <= o.lastPTS {
		if !key {
			return nil
		}
		encPTS = o.lastPTS + 1
	}
	o.lastPTS, o.sent = encPTS, true
	dst := f // scaled by the ladder's graph
	if o.scaler != nil {
		dst = o.frame
		if err := makeWritable(dst); err != nil {
			return fmt.Errorf("transcode: frame buffer: %w", err)
		}
		if err := o.scaler.ScaleFrame(f, dst); err != nil {
			return fmt.Errorf("transcode: scaling to %s: %w", o.rung.Name, err)
		}
	}
	dst.SetPts(encPTS)
	dst.SetPictureType(astiav.PictureTypeNone)
	dst.SetKeyFrame(false)
	if key {
		dst.SetPictureType(astiav.PictureTypeI)
		dst.SetKeyFrame(true)
	}
	if err := o.enc.SendFrame(dst); err != nil {
		return fmt.Errorf("transcode: encoding %s with %s: %w", o.rung.Name, p.encoder.name(), err)
	}
	return p.drainEncoder(i, o, emit)
}

func (p *ladder) drainEncoder(i int, o *output, emit Emit) error {
	for {
		err := o.enc.ReceivePacket(o.pkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("transcode: encoder %s: %w", o.rung.Name, err)
		}
		var nalus h264.AnnexB
		uerr := nalus.Unmarshal(o.pkt.Data())
		tb := o.enc.TimeBase()
		au := &media.AccessUnit{
			PTS:      astiav.RescaleQ(o.pkt.Pts(), tb, clock90k),
			DTS:      astiav.RescaleQ(o.pkt.Dts(), tb, clock90k),
			Keyframe: o.pkt.Flags().Has(astiav.PacketFlagKey),
			Payload:  [][]byte(nalus),
		}
		o.pkt.Unref()
		if uerr != nil {
			return fmt.Errorf("transcode: encoder %s output: %w", o.rung.Name, uerr)
		}
		emit(i, au)
	}
}

func (p *ladder) flushEncoders(emit Emit) error {
	p.sync()
	if err := p.emitReady(emit); err != nil {
		return err
	}
	for i, o := range p.outs {
		if err := o.enc.SendFrame(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
			return fmt.Errorf("transcode: flushing %s: %w", o.rung.Name, err)
		}
		if err := p.drainEncoder(i, o, emit); err != nil {
			return err
		}
	}
	return nil
}

// OutputRungs returns the rungs with the sizes actually encoded (known once
// the first frame was decoded), or nil before that.
func (p *Pipeline) OutputRungs() []Rung { return p.ladder.outputRungs() }

func (p *ladder) outputRungs() []Rung {
	if p.outs == nil {
		return nil
	}
	out := make([]Rung, len(p.outs))
	for i, o := range p.outs {
		out[i] = o.rung
	}
	return out
}

// frameRate is the source's declared frame rate (SPS timing info), or 60
// when it declares none: the encoders count in ticks of 1/frame rate, and a
// frame that would repeat a tick is dropped, so a too-low guess would halve
// the frame rate while a too-high one only costs a little quality.
func (p *Pipeline) frameRate() astiav.Rational {
	var fps float64
	switch p.src.Codec {
	case media.CodecH264:
		var sps h264.SPS
		if err := sps.Unmarshal(p.src.SPS); err == nil {
			fps = sps.FPS()
		}
	case media.CodecH265:
		var sps h265.SPS
		if err := sps.Unmarshal(p.src.SPS); err == nil {
			fps = sps.FPS()
		}
	}
	if fps <= 1 || fps > 240 {
		return astiav.NewRational(60, 1)
	}
	return astiav.NewRational(int(fps*1000+0.5), 1000)
}

func (p *ladder) openOutputs(f *astiav.Frame) error {
	w, h := f.Width(), f.Height()
	fps := p.sourceRate()
	gop := int(fps.Float64()*p.cfg.KeyframeInterval.Seconds()*4 + 0.5)
	rungs := make([]Rung, len(p.rungs))
	for i, r := range p.rungs {
		// Never upscale, even when the source shrinks mid-stream.
		r.Height = min(r.Height, h&^1)
		r.Width = EvenWidth(w, h, r.Height)
		rungs[i] = r
	}
	p.encoder = p.backend
	if p.backend.name() == BackendNVENC && p.cfg.GPU != nil {
		// One NVENC session per rung, counted per GPU.
		if p.cfg.GPU.reserveNVENC(len(rungs)) {
			p.sessions = len(rungs)
		} else {
			p.encoder = software{}
			p.log.Warn("transcode: the GPU has no NVENC session left for this ladder; it encodes with x264",
				"gpu", p.cfg.GPU.Name, "sessions", p.cfg.GPU.NVENCSessions, "rungs", len(rungs))
		}
	}
	hw, sw := hwFrame(f), swFormat(f)
	if hw || p.cfg.graphOnCPU {
		g, err := newFrameGraph(f, p.graphDesc(rungs, f.PixelFormat(), sw), len(rungs))
		if err != nil {
			p.releaseSessions()
			return fmt.Errorf("transcode: scaling %s: %w", p.scaledWhere(), err)
		}
		p.graph = g
	}
	outs := make([]*output, 0, len(rungs))
	fail := func(err error) error {
		freeOutputs(outs)
		p.graph.free()
		p.graph = nil
		p.releaseSessions()
		return err
	}
	for i, r := range rungs {
		s := encoderSettings{rung: r, frameRate: fps, gop: gop, preset: p.cfg.Preset}
		if p.cfg.GPU != nil && p.encoder.name() == BackendNVENC {
			s.gpuIndex, s.device = p.cfg.GPU.Index, p.cfg.GPU.dev
		}
		o := &output{rung: r, pkt: astiav.AllocPacket(), work: make(chan rungJob, queueDepth), exited: make(chan struct{})}
		if f.PixelFormat() == astiav.PixelFormatCuda && p.encoder.name() == BackendNVENC {
			s.gpuFrames = func(cc *astiav.CodecContext) error { return p.graph.feedEncoder(cc, i) }
		}
		if p.graph == nil {
			scaler, err := astiav.CreateSoftwareScaleContext(w, h, f.PixelFormat(), r.Width, r.Height,
				p.encoder.pixelFormat(), astiav.NewSoftwareScaleContextFlags(astiav.SoftwareScaleContextFlagBilinear))
			if err != nil {
				o.pkt.Free()
				return fail(fmt.Errorf("transcode: scaler %dx%d -> %dx%d: %w", w, h, r.Width, r.Height, err))
			}
			o.scaler = scaler
			o.frame = astiav.AllocFrame()
			o.frame.SetWidth(r.Width)
			o.frame.SetHeight(r.Height)
			o.frame.SetPixelFormat(p.encoder.pixelFormat())
			if err := o.frame.AllocBuffer(0); err != nil {
				o.free()
				return fail(fmt.Errorf("transcode: frame buffer: %w", err))
			}
		}
		enc, err := p.encoder.open(s)
		if err != nil {
			o.free()
			return fail(fmt.Errorf("transcode: %w", err))
		}
		o.enc = enc
		go o.loop(p)
		outs = append(outs, o)
	}
	p.outs, p.inW, p.inH, p.inFmt, p.inSW, p.hwFrames = outs, w, h, f.PixelFormat(), sw, hw
	return nil
}

// graphDesc is the filter graph that scales a frame of format in (its
// pictures laid out as sw when in is a hardware format) to every rung: on
// the GPU with scale_cuda, downloaded unless NVENC takes GPU frames; on a
// test's Vulkan device with scale_vulkan, downloaded; on the CPU
// (graphOnCPU) with the scale filter.
func (p *ladder) graphDesc(rungs []Rung, in astiav.PixelFormat, sw int) string {
	var b strings.Builder
	fmt.Fprintf(&b, "[in]split=%d", len(rungs))
	for i := range rungs {
		fmt.Fprintf(&b, "[s%d]", i)
	}
	pix := p.encoder.pixelFormat().Name()
	for i, r := range rungs {
		fmt.Fprintf(&b, ";[s%d]", i)
		switch in {
		case astiav.PixelFormatCuda:
			fmt.Fprintf(&b, "scale_cuda=w=%d:h=%d:interp_algo=bilinear:format=%s", r.Width, r.Height, pix)
			if p.encoder.name() != BackendNVENC {
				fmt.Fprintf(&b, ",hwdownload,format=%s", pix)
			}
		case pixelFormatVulkan:
			// FFmpeg 5.1's scale_vulkan converts only from RGB: the
			// pictures keep their layout down to system memory.
			layout := astiav.PixelFormat(sw).Name()
			fmt.Fprintf(&b, "scale_vulkan=w=%d:h=%d:scaler=bilinear,hwdownload,format=%s", r.Width, r.Height, layout)
			if layout != pix {
				fmt.Fprintf(&b, ",format=%s", pix)
			}
		default:
			fmt.Fprintf(&b, "scale=w=%d:h=%d:flags=bilinear,format=%s", r.Width, r.Height, pix)
		}
		fmt.Fprintf(&b, "[out%d]", i)
	}
	return b.String()
}

func (p *ladder) releaseSessions() {
	if p.sessions > 0 {
		p.cfg.GPU.releaseNVENC(p.sessions)
		p.sessions = 0
	}
}

// EvenWidth is the even width that keeps a w x h picture's aspect ratio at
// the given height.
func EvenWidth(w, h, height int) int {
	if h <= 0 {
		return height * 16 / 9 &^ 1
	}
	v := (w*height + h/2) / h
	v += v & 1
	if v < 2 {
		v = 2
	}
	return v
}

func (p *ladder) closeOutputs() {
	freeOutputs(p.outs)
	p.outs = nil
	p.inW, p.inH = 0, 0
	// The encoders are freed before the graph whose frames they took.
	p.graph.free()
	p.graph = nil
	p.releaseSessions()
}

func freeOutputs(outs []*output) {
	for _, o := range outs {
		o.stop.Store(true)
		close(o.work)
		<-o.exited
		o.free()
	}
}

// free frees the output's C objects (those it has).
func (o *output) free() {
	if o.scaler != nil {
		o.scaler.Free()
	}
	if o.frame != nil {
		o.frame.Free()
	}
	if o.enc != nil {
		o.enc.Free()
	}
	o.pkt.Free()
}
