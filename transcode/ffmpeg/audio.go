package ffmpeg

//#cgo pkg-config: libswresample libavcodec libavutil
//#include <libavutil/audio_fifo.h>
//#include <libavutil/channel_layout.h>
//#include <libavutil/frame.h>
//#include <libavutil/mem.h>
//#include <libavutil/samplefmt.h>
//#include <libswresample/swresample.h>
//
// // shoal_swr_open makes a resampler from in's format, rate and layout to
// // float planar stereo at rate out_rate. A layout the decoder left
// // unspecified is taken as the usual one for its number of channels.
// static int shoal_swr_open(SwrContext **s, const AVFrame *in, int out_rate) {
// 	AVChannelLayout inl = {0};
// 	AVChannelLayout out = AV_CHANNEL_LAYOUT_STEREO;
// 	int ret;
// 	if (in->ch_layout.order == AV_CHANNEL_ORDER_NATIVE && av_channel_layout_check(&in->ch_layout)) {
// 		if ((ret = av_channel_layout_copy(&inl, &in->ch_layout)) < 0) return ret;
// 	} else {
// 		av_channel_layout_default(&inl, in->ch_layout.nb_channels);
// 	}
// 	ret = swr_alloc_set_opts2(s, &out, AV_SAMPLE_FMT_FLTP, out_rate,
// 		&inl, (enum AVSampleFormat)in->format, in->sample_rate, 0, NULL);
// 	av_channel_layout_uninit(&inl);
// 	if (ret < 0) return ret;
// 	if ((ret = swr_init(*s)) < 0) swr_free(s);
// 	return ret;
// }
//
// // shoal_resample converts in (NULL: what the resampler still holds) and
// // appends the result to fifo. It returns the number of samples appended.
// static int shoal_resample(SwrContext *s, AVAudioFifo *fifo, const AVFrame *in) {
// 	int in_n = in ? in->nb_samples : 0;
// 	int max = swr_get_out_samples(s, in_n);
// 	uint8_t **buf = NULL;
// 	int n, ret;
// 	if (max <= 0) return max;
// 	if ((ret = av_samples_alloc_array_and_samples(&buf, NULL, 2, max, AV_SAMPLE_FMT_FLTP, 0)) < 0) return ret;
// 	n = swr_convert(s, buf, max, in ? (const uint8_t **)in->extended_data : NULL, in_n);
// 	ret = n;
// 	if (n > 0) {
// 		ret = av_audio_fifo_write(fifo, (void **)buf, n);
// 		if (ret >= 0 && ret < n) ret = AVERROR(ENOMEM);
// 	}
// 	av_freep(&buf[0]);
// 	av_freep(&buf);
// 	return ret;
// }
//
// static int shoal_fifo_read(AVAudioFifo *fifo, AVFrame *f, int n) {
// 	return av_audio_fifo_read(fifo, (void **)f->data, n);
// }
//
// static int shoal_audio_format_ok(const AVFrame *f) {
// 	return f->nb_samples > 0 && f->sample_rate > 0 && f->sample_rate <= 768000 &&
// 		f->ch_layout.nb_channels > 0 && f->ch_layout.nb_channels <= 64 &&
// 		f->format >= 0 && f->format < AV_SAMPLE_FMT_NB;
// }
//
// static int shoal_same_audio_format(const AVFrame *a, int rate, int format, const AVChannelLayout *l) {
// 	return a->sample_rate == rate && a->format == format && !av_channel_layout_compare(&a->ch_layout, l);
// }
//
// static void shoal_layout_copy(AVChannelLayout *dst, const AVFrame *f) {
// 	av_channel_layout_uninit(dst);
// 	if (av_channel_layout_copy(dst, &f->ch_layout) < 0) av_channel_layout_uninit(dst);
// }
//
// static void shoal_layout_uninit(AVChannelLayout *l) { av_channel_layout_uninit(l); }
//
// // shoal_fifo_read2 reads n samples of a planar stereo FIFO into l and r.
// static int shoal_fifo_read2(AVAudioFifo *fifo, float *l, float *r, int n) {
// 	void *d[2] = {l, r};
// 	return av_audio_fifo_read(fifo, d, n);
// }
import "C"

import (
	"errors"
	"fmt"

	"github.com/asticode/go-astiav"

	"github.com/shoal-video/shoal/internal/media"
)

// AAC output: LC, stereo, 48 kHz.
const (
	aacRate     = 48000
	aacChannels = 2
	aacFrame    = 1024 // samples per AAC frame
)

// audioTranscoder re-encodes decoded audio of any format to AAC-LC stereo
// 48 kHz: swresample converts it, a FIFO cuts it into the 1024-sample frames
// AAC needs, FFmpeg's native encoder encodes them. Timestamps count samples
// from the first frame on, without gaps. free releases every C object.
type audioTranscoder struct {
	swr  *C.SwrContext
	fifo *C.AVAudioFifo
	// The input format the resampler was made for.
	inRate   C.int
	inFormat C.int
	inLayout C.AVChannelLayout

	enc   *astiav.CodecContext
	frame *astiav.Frame // the encoder's input, reused
	pkt   *astiav.Packet
	track media.Track

	next    int64 // PTS of the next encoder frame, in samples
	started bool
	// frameSize is the samples per encoder frame: 1024 for AAC, 960 (20
	// ms) for Opus.
	frameSize int
}

// newAudioTranscoder opens the AAC encoder (bitrate in bits per second).
func newAudioTranscoder(bitrate int) (*audioTranscoder, error) {
	return newAudioEncoder(media.CodecAAC, bitrate)
}

// newAudioEncoder opens an AAC or Opus encoder (FFmpeg's own, both take
// planar float): stereo, 48 kHz.
func newAudioEncoder(out media.Codec, bitrate int) (*audioTranscoder, error) {
	name, frameSize := "aac", aacFrame
	if out == media.CodecOpus {
		name, frameSize = "opus", 960
	} else if out != media.CodecAAC {
		return nil, fmt.Errorf("cannot encode %q audio", out)
	}
	codec := astiav.FindEncoderByName(name)
	if codec == nil {
		return nil, fmt.Errorf("no %s encoder in this FFmpeg build", name)
	}
	a := &audioTranscoder{frameSize: frameSize}
	fail := func(err error) (*audioTranscoder, error) {
		a.free()
		return nil, err
	}
	if a.enc = astiav.AllocCodecContext(codec); a.enc == nil {
		return fail(errors.New("allocating the AAC encoder failed"))
	}
	a.enc.SetSampleFormat(astiav.SampleFormatFltp)
	a.enc.SetSampleRate(aacRate)
	a.enc.SetChannelLayout(astiav.ChannelLayoutStereo)
	a.enc.SetBitRate(int64(bitrate))
	a.enc.SetTimeBase(astiav.NewRational(1, aacRate))
	if out == media.CodecAAC {
		a.enc.SetProfile(astiav.ProfileAacLow)
	} else {
		// FFmpeg's own Opus encoder (marked experimental) takes planar
		// float like the AAC one; libopus would need interleaved input.
		a.enc.SetStrictStdCompliance(astiav.StrictStdComplianceExperimental)
	}
	// Global header: the AudioSpecificConfig comes out as extradata and
	// the packets are raw AAC frames (no ADTS).
	a.enc.SetFlags(a.enc.Flags().Add(astiav.CodecContextFlagGlobalHeader))
	if err := a.enc.Open(codec, nil); err != nil {
		return fail(fmt.Errorf("opening the %s encoder: %w", name, err))
	}
	if fs := a.enc.FrameSize(); fs > 0 {
		frameSize = fs // the encoder's own choice
		a.frameSize = fs
	}
	cfg := a.enc.ExtraData()
	if out == media.CodecAAC && len(cfg) == 0 {
		return fail(errors.New("the AAC encoder gave no AudioSpecificConfig"))
	}
	a.track = media.Track{Codec: out, ClockRate: aacRate, AudioConfig: cfg,
		SampleRate: aacRate, Channels: aacChannels}
	if a.frame = astiav.AllocFrame(); a.frame == nil {
		return fail(errors.New("allocating an audio frame failed"))
	}
	a.frame.SetSampleFormat(astiav.SampleFormatFltp)
	a.frame.SetChannelLayout(astiav.ChannelLayoutStereo)
	a.frame.SetSampleRate(aacRate)
	a.frame.SetNbSamples(frameSize)
	if err := a.frame.AllocBuffer(0); err != nil {
		return fail(fmt.Errorf("audio frame buffer: %w", err))
	}
	if a.fifo = C.av_audio_fifo_alloc(C.AV_SAMPLE_FMT_FLTP, aacChannels, C.int(4*frameSize)); a.fifo == nil {
		return fail(errors.New("allocating the audio FIFO failed"))
	}
	if a.pkt = astiav.AllocPacket(); a.pkt == nil {
		return fail(errors.New("allocating a packet failed"))
	}
	return a, nil
}

func (a *audioTranscoder) free() {
	if a.swr != nil {
		C.swr_free(&a.swr)
	}
	C.shoal_layout_uninit(&a.inLayout)
	if a.fifo != nil {
		C.av_audio_fifo_free(a.fifo)
		a.fifo = nil
	}
	if a.enc != nil {
		a.enc.Free()
		a.enc = nil
	}
	if a.frame != nil {
		a.frame.Free()
		a.frame = nil
	}
	if a.pkt != nil {
		a.pkt.Free()
		a.pkt = nil
	}
}

// push converts and encodes a decoded frame whose first sample is at
// instant start (in samples at 48 kHz on the output timeline; used for the
// first frame only) and emits the AAC frames that are ready. A frame that
// cannot be used is skipped with errSkipAudio.
func (a *audioTranscoder) push(f *astiav.Frame, start int64, emit func(*media.AccessUnit)) error {
	cf := (*C.AVFrame)(f.UnsafePointer())
	if C.shoal_audio_format_ok(cf) == 0 {
		return errSkipAudio
	}
	if a.swr == nil || C.shoal_same_audio_format(cf, a.inRate, a.inFormat, &a.inLayout) == 0 {
		// A new input format: the old resampler's tail goes first.
		if a.swr != nil {
			if err := a.resample(nil); err != nil {
				return err
			}
			C.swr_free(&a.swr)
		}
		if err := avErr(C.shoal_swr_open(&a.swr, cf, aacRate)); err != nil {
			return fmt.Errorf("%w: resampler: %v", errSkipAudio, err)
		}
		a.inRate, a.inFormat = cf.sample_rate, cf.format
		C.shoal_layout_copy(&a.inLayout, cf)
	}
	if !a.started {
		a.next, a.started = start, true
	}
	if err := a.resample(cf); err != nil {
		return err
	}
	return a.encodeReady(false, emit)
}

// errSkipAudio marks a decoded audio frame that could not be used.
var errSkipAudio = errors.New("unusable audio frame")

func (a *audioTranscoder) resample(cf *C.AVFrame) error {
	if ret := C.shoal_resample(a.swr, a.fifo, cf); ret < 0 {
		return fmt.Errorf("resampling audio: %w", avErr(ret))
	}
	return nil
}

// encodeReady encodes every whole AAC frame in the FIFO; at the end (final
// set) also the remainder, as a shorter last frame.
func (a *audioTranscoder) encodeReady(final bool, emit func(*media.AccessUnit)) error {
	for {
		n := int(C.av_audio_fifo_size(a.fifo))
		if n < a.frameSize && (!final || n == 0) {
			return nil
		}
		n = min(n, a.frameSize)
		a.frame.SetNbSamples(a.frameSize)
		if err := makeWritable(a.frame); err != nil {
			return fmt.Errorf("audio frame: %w", err)
		}
		a.frame.SetNbSamples(n)
		if got := C.shoal_fifo_read(a.fifo, (*C.AVFrame)(a.frame.UnsafePointer()), C.int(n)); int(got) != n {
			return fmt.Errorf("reading the audio FIFO: %d of %d samples", int(got), n)
		}
		a.frame.SetPts(a.next)
		a.next += int64(n)
		if err := a.enc.SendFrame(a.frame); err != nil {
			return fmt.Errorf("encoding %s: %w", a.track.Codec, err)
		}
		if err := a.drain(emit); err != nil {
			return err
		}
	}
}

// flush encodes what the resampler and the FIFO still hold and drains the
// encoder.
func (a *audioTranscoder) flush(emit func(*media.AccessUnit)) error {
	if a.swr != nil {
		if err := a.resample(nil); err != nil {
			return err
		}
	}
	if err := a.encodeReady(true, emit); err != nil {
		return err
	}
	if err := a.enc.SendFrame(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
		return fmt.Errorf("flushing the AAC encoder: %w", err)
	}
	return a.drain(emit)
}

// drain emits the encoder's packets: one raw AAC frame per access unit,
// PTS = DTS in samples. The first one carries the encoder's priming (1024
// samples before the first input sample).
func (a *audioTranscoder) drain(emit func(*media.AccessUnit)) error {
	for {
		err := a.enc.ReceivePacket(a.pkt)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			return fmt.Errorf("AAC encoder: %w", err)
		}
		data := a.pkt.Data() // a copy in Go memory
		pts := a.pkt.Pts()
		a.pkt.Unref()
		if len(data) == 0 {
			continue
		}
		emit(&media.AccessUnit{PTS: pts, DTS: pts, Keyframe: true, Payload: [][]byte{data}})
	}
}

// pcmConverter converts decoded audio of any format to planar float
// stereo at a given rate with the audio transcoder's conversion (the same
// resampler, made and remade the same way, at that rate), and hands the
// samples out in Go memory. free releases its C objects.
type pcmConverter struct {
	swr  *C.SwrContext
	fifo *C.AVAudioFifo
	rate int
	// The input format the resampler was made for.
	inRate   C.int
	inFormat C.int
	inLayout C.AVChannelLayout
	l, r     []float32 // read buffers, reused
}

func newPCMConverter(rate int) (*pcmConverter, error) {
	p := &pcmConverter{rate: rate}
	if p.fifo = C.av_audio_fifo_alloc(C.AV_SAMPLE_FMT_FLTP, aacChannels, 4096); p.fifo == nil {
		return nil, errors.New("allocating an audio FIFO failed")
	}
	return p, nil
}

func (p *pcmConverter) free() {
	if p.swr != nil {
		C.swr_free(&p.swr)
	}
	C.shoal_layout_uninit(&p.inLayout)
	if p.fifo != nil {
		C.av_audio_fifo_free(p.fifo)
		p.fifo = nil
	}
}

// push converts a decoded frame (a new input format first flushes the
// resampler made for the last one, as the transcoder does); a frame that
// cannot be used is skipped with errSkipAudio. What it gives waits for
// drain.
func (p *pcmConverter) push(f *astiav.Frame) error {
	cf := (*C.AVFrame)(f.UnsafePointer())
	if C.shoal_audio_format_ok(cf) == 0 {
		return errSkipAudio
	}
	if p.swr == nil || C.shoal_same_audio_format(cf, p.inRate, p.inFormat, &p.inLayout) == 0 {
		if p.swr != nil {
			if err := p.resample(nil); err != nil {
				return err
			}
			C.swr_free(&p.swr)
		}
		if err := avErr(C.shoal_swr_open(&p.swr, cf, C.int(p.rate))); err != nil {
			return fmt.Errorf("%w: resampler: %v", errSkipAudio, err)
		}
		p.inRate, p.inFormat = cf.sample_rate, cf.format
		C.shoal_layout_copy(&p.inLayout, cf)
	}
	return p.resample(cf)
}

// flush converts what the resampler still holds.
func (p *pcmConverter) flush() error {
	if p.swr == nil {
		return nil
	}
	return p.resample(nil)
}

func (p *pcmConverter) resample(cf *C.AVFrame) error {
	if ret := C.shoal_resample(p.swr, p.fifo, cf); ret < 0 {
		return fmt.Errorf("resampling audio: %w", avErr(ret))
	}
	return nil
}

// drain hands fn the converted samples in order, left and right, in
// buffers reused after fn returns.
func (p *pcmConverter) drain(fn func(l, r []float32) error) error {
	const chunk = 4096
	if p.l == nil {
		p.l, p.r = make([]float32, chunk), make([]float32, chunk)
	}
	for {
		n := min(int(C.av_audio_fifo_size(p.fifo)), chunk)
		if n <= 0 {
			return nil
		}
		got := int(C.shoal_fifo_read2(p.fifo, (*C.float)(&p.l[0]), (*C.float)(&p.r[0]), C.int(n)))
		if got != n {
			return fmt.Errorf("reading the audio FIFO: %d of %d samples", got, n)
		}
		if err := fn(p.l[:n], p.r[:n]); err != nil {
			return err
		}
	}
}
