package ffmpeg

// Decoding audio to PCM, for the verification of transcodes made
// elsewhere (package transcode/verify compares the sound): the source's
// audio on TranscodeFile's timeline, as its audio transcoder converts it,
// and the raw AAC frames of a worker's output.

/*
#cgo pkg-config: libavformat libavutil
#include <libavformat/avformat.h>

// shoal_pcm_only makes the demuxer skip every stream but keep.
static void shoal_pcm_only(AVFormatContext *fc, int keep) {
	for (unsigned i = 0; i < fc->nb_streams; i++)
		fc->streams[i]->discard = (int)i == keep ? AVDISCARD_DEFAULT : AVDISCARD_ALL;
}
*/
import "C"

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"slices"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/shoal-video/shoal/internal/media"
)

// AudioWindow is a span of the VOD timeline, [From, To) (it may begin
// before its zero, where the audio may start).
type AudioWindow struct{ From, To time.Duration }

// MaxAudioWindow is the longest window DecodeAudioWindows decodes.
const MaxAudioWindow = time.Minute

// ErrBadAudio is wrapped by DecodeAAC's errors for frames that do not
// decode: the coded audio's fault, not the decoder's.
var ErrBadAudio = errors.New("the audio does not decode")

// errStopPCM ends a decoding that has all it needs.
var errStopPCM = errors.New("enough audio")

// DecodeAudioWindows decodes the audio TranscodeFile transcodes from the
// media file path (the same stream, decoded and converted to stereo the
// same way, at rate) and hands fn each window of its VOD timeline, left
// and right channels, as soon as it is whole (in the order of their
// starts), then forgets it. The VOD timeline is TranscodeFile's output's:
// its zero is the encoder tick of the first video frame (CompareSegment's
// SourceFrame.At), and the audio's samples are counted from the first
// one's timestamp on, without gaps, as the audio transcoder counts them.
// Where there is no audio (before it starts, after it ends), a window is
// silent. The source is decoded from its start (the audio only: the other
// streams are skipped), so that the count is the transcoder's; it stops
// after the last window. decodes tells whether the audio decodes at all
// (a frame of it converted): TranscodeFile makes an audio track of a
// source only then; without windows it returns as soon as it knows. A
// source without audio, or whose audio has no decoder, is no error:
// decodes is false. fn's errors are returned.
func DecodeAudioWindows(ctx context.Context, path string, rate int, windows []AudioWindow, fn func(i int, pcm [2][]float32) error) (decodes bool, err error) {
	if rate < 8000 || rate > aacRate {
		return false, fmt.Errorf("decoding audio: rate %d Hz out of range (8000 to %d)", rate, aacRate)
	}
	for _, w := range windows {
		if w.To <= w.From || w.To-w.From > MaxAudioWindow || w.From < -MaxAudioWindow || w.To > 100*24*time.Hour {
			return false, fmt.Errorf("decoding audio: the window [%s, %s) is empty, longer than %s or out of range", w.From, w.To, MaxAudioWindow)
		}
	}
	// The timeline, as CompareSegment finds it.
	var zero, origin int64
	if len(windows) > 0 {
		cw, err := openWindow(path, 0, 0, 0)
		if err != nil {
			return false, err
		}
		zero, origin = cw.zero, cw.origin
		cw.close()
	}

	in, err := openInput(path)
	if err != nil {
		return false, err
	}
	defer in.close()
	a := in.bestAudio(in.bestVideo())
	if a < 0 {
		return false, nil
	}
	C.shoal_pcm_only(in.fc, C.int(a))
	dec, err := in.openDecoder(a, 1, nil)
	if err != nil {
		return false, nil // TranscodeFile makes no audio either
	}
	defer dec.free()
	conv, err := newPCMConverter(rate)
	if err != nil {
		return false, err
	}
	defer conv.free()
	frame := astiav.AllocFrame()
	if frame == nil {
		return false, errors.New("allocating a frame failed")
	}
	defer frame.Free()

	tb := astiav.NewRational(1, rate)
	p := &pcmWindows{fn: fn}
	for i, w := range windows {
		start := astiav.RescaleQ(origin+media.Ticks(w.From, 90000), clock90k, tb)
		end := astiav.RescaleQ(origin+media.Ticks(w.To, 90000), clock90k, tb)
		p.wins = append(p.wins, pcmWindow{i: i, start: start, end: max(end, start+1)})
	}
	slices.SortStableFunc(p.wins, func(x, y pcmWindow) int { return cmp.Compare(x.start, y.start) })

	atb := in.timeBase(a)
	handle := func(f *astiav.Frame) error {
		var start int64 // as the audio transcoder takes it: at 48 kHz
		if !p.started {
			if ts := bestEffortTS(f); ts != noPTS {
				start = astiav.RescaleQ(astiav.RescaleQ(ts, atb, clock90k)-zero, clock90k, astiav.NewRational(1, aacRate))
			}
		}
		if err := conv.push(f); err != nil {
			if errors.Is(err, errSkipAudio) {
				return nil
			}
			return err
		}
		if !p.started {
			p.started = true
			p.pos = astiav.RescaleQ(start, astiav.NewRational(1, aacRate), tb)
			if len(p.wins) == 0 {
				return errStopPCM
			}
		}
		return conv.drain(p.add)
	}
	err = decodeAll(ctx, in, a, dec, frame, handle)
	if err == nil {
		// The end: what the decoder and the resampler still hold.
		err = drainDecoder(dec, frame, handle)
		if err == nil && p.started {
			if err = conv.flush(); err == nil {
				err = conv.drain(p.add)
			}
		}
		if err == nil {
			err = p.finish()
		}
	}
	if errors.Is(err, errStopPCM) {
		err = nil
	}
	return p.started, err
}

// pcmWindows gathers the windows of DecodeAudioWindows as the samples
// come.
type pcmWindows struct {
	wins    []pcmWindow // by start
	next    int         // the first not yet handed out
	fn      func(i int, pcm [2][]float32) error
	started bool
	pos     int64 // the next sample's, on the VOD timeline at the rate
}

type pcmWindow struct {
	i          int
	start, end int64
	pcm        [2][]float32 // allocated when its first sample comes
}

// add places the next samples, hands out the windows they complete and
// stops (errStopPCM) after the last.
func (p *pcmWindows) add(l, r []float32) error {
	n := int64(len(l))
	for k := p.next; k < len(p.wins) && p.wins[k].start < p.pos+n; k++ {
		w := &p.wins[k]
		from, to := max(w.start, p.pos), min(w.end, p.pos+n)
		if from >= to {
			continue
		}
		if w.pcm[0] == nil {
			w.pcm = [2][]float32{make([]float32, w.end-w.start), make([]float32, w.end-w.start)}
		}
		copy(w.pcm[0][from-w.start:], l[from-p.pos:to-p.pos])
		copy(w.pcm[1][from-w.start:], r[from-p.pos:to-p.pos])
	}
	p.pos += n
	for p.next < len(p.wins) && p.wins[p.next].end <= p.pos {
		if err := p.hand(); err != nil {
			return err
		}
	}
	if p.next == len(p.wins) {
		return errStopPCM
	}
	return nil
}

// hand hands out the next window (silent where no sample came).
func (p *pcmWindows) hand() error {
	w := &p.wins[p.next]
	if w.pcm[0] == nil {
		w.pcm = [2][]float32{make([]float32, w.end-w.start), make([]float32, w.end-w.start)}
	}
	pcm := w.pcm
	w.pcm = [2][]float32{}
	p.next++
	if p.fn == nil {
		return nil
	}
	return p.fn(w.i, pcm)
}

// finish hands out the windows the audio did not reach.
func (p *pcmWindows) finish() error {
	for p.next < len(p.wins) {
		if err := p.hand(); err != nil {
			return err
		}
	}
	return nil
}

// decodeAll reads in's packets of stream a to the end and hands every
// frame its decoder gives to handle, as TranscodeFile does: damaged data
// is skipped, a file that cannot be read further ends. Only handle's and
// ctx's errors are returned.
func decodeAll(ctx context.Context, in *input, a int, d *decoder, f *astiav.Frame, handle func(*astiav.Frame) error) error {
	readErrs := 0
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		idx, err := in.read()
		if errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			if readErrs++; readErrs > maxReadErrors {
				return nil
			}
			continue
		}
		readErrs = 0
		if idx != a {
			continue
		}
		if err := decodePacket(in, d, f, false, handle); err != nil {
			return err
		}
	}
}

func drainDecoder(d *decoder, f *astiav.Frame, handle func(*astiav.Frame) error) error {
	return decodePacket(nil, d, f, true, handle)
}

// decodePacket is fileJob.decode: it sends in's current packet (or the
// end) and hands the frames to handle.
func decodePacket(in *input, d *decoder, f *astiav.Frame, flush bool, handle func(*astiav.Frame) error) error {
	for try, resend := 0, true; resend && try < 3; try++ {
		resend = false
		err := d.send(in, flush)
		switch {
		case errors.Is(err, astiav.ErrEagain):
			resend = true
		case err != nil && !errors.Is(err, astiav.ErrEof):
			return nil // damaged: skipped
		}
		for {
			err := d.receive(f)
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				break
			}
			if err != nil {
				resend = false
				break
			}
			err = handle(f)
			f.Unref()
			if err != nil {
				return err
			}
		}
	}
	return nil
}

// maxAACFrames bounds the frames DecodeAAC takes (about 3 minutes at 48
// kHz).
const maxAACFrames = 8192

// DecodeAAC decodes raw AAC frames (one per element of frames, as an fMP4
// sample holds one) of the AudioSpecificConfig config with FFmpeg's
// decoder, and returns the sound converted to stereo at rate as
// DecodeAudioWindows converts the source's, left and right: the first
// sample is the first frame's. Frames the decoder refuses give an error
// wrapping ErrBadAudio.
func DecodeAAC(config []byte, frames [][]byte, rate int) ([2][]float32, error) {
	var none [2][]float32
	if rate < 8000 || rate > aacRate {
		return none, fmt.Errorf("decoding AAC: rate %d Hz out of range (8000 to %d)", rate, aacRate)
	}
	if len(frames) > maxAACFrames {
		return none, fmt.Errorf("decoding AAC: %d frames (at most %d)", len(frames), maxAACFrames)
	}
	codec := astiav.FindDecoder(astiav.CodecIDAac)
	if codec == nil {
		return none, errors.New("no AAC decoder in this FFmpeg build")
	}
	cc := astiav.AllocCodecContext(codec)
	if cc == nil {
		return none, errors.New("allocating the AAC decoder failed")
	}
	defer cc.Free()
	if err := cc.SetExtraData(config); err != nil {
		return none, fmt.Errorf("the AAC decoder's configuration: %w", err)
	}
	if err := cc.Open(codec, nil); err != nil {
		return none, fmt.Errorf("%w: the AAC decoder refuses its configuration (%v)", ErrBadAudio, err)
	}
	conv, err := newPCMConverter(rate)
	if err != nil {
		return none, err
	}
	defer conv.free()
	pkt := astiav.AllocPacket()
	if pkt == nil {
		return none, errors.New("allocating a packet failed")
	}
	defer pkt.Free()
	f := astiav.AllocFrame()
	if f == nil {
		return none, errors.New("allocating a frame failed")
	}
	defer f.Free()

	out := [2][]float32{make([]float32, 0, len(frames)*aacFrame*rate/aacRate+aacFrame), nil}
	out[1] = make([]float32, 0, cap(out[0]))
	keep := func(l, r []float32) error {
		out[0], out[1] = append(out[0], l...), append(out[1], r...)
		return nil
	}
	receive := func(i int) error {
		for {
			err := cc.ReceiveFrame(f)
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("%w: frame %d: %v", ErrBadAudio, i, err)
			}
			err = conv.push(f)
			f.Unref()
			if errors.Is(err, errSkipAudio) {
				return fmt.Errorf("%w: frame %d decodes to unusable audio (%v)", ErrBadAudio, i, err)
			}
			if err != nil {
				return err
			}
			if err := conv.drain(keep); err != nil {
				return err
			}
		}
	}
	for i, b := range frames {
		pkt.Unref()
		if err := pkt.FromData(append(append(make([]byte, 0, len(b)+padding), b...), make([]byte, padding)...)); err != nil {
			return none, fmt.Errorf("decoding AAC: packet: %w", err)
		}
		pkt.SetSize(len(b))
		err := cc.SendPacket(pkt)
		pkt.Unref()
		if err != nil && !errors.Is(err, astiav.ErrEagain) {
			return none, fmt.Errorf("%w: frame %d: %v", ErrBadAudio, i, err)
		}
		if err := receive(i); err != nil {
			return none, err
		}
	}
	if err := cc.SendPacket(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
		return none, fmt.Errorf("decoding AAC: flushing: %w", err)
	}
	if err := receive(len(frames)); err != nil {
		return none, err
	}
	if err := conv.flush(); err != nil {
		return none, err
	}
	if err := conv.drain(keep); err != nil {
		return none, err
	}
	return out, nil
}
