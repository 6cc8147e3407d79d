package ffmpeg

import (
	"errors"
	"fmt"
	"log/slog"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
)

// AudioConverter re-encodes a live audio track that HLS players cannot play
// (Opus, as WebRTC publishers send it) to AAC-LC stereo 48 kHz, access unit
// by access unit. Output timestamps are in samples at 48 kHz on the input's
// timeline: the first output frame starts where the first input frame did,
// and a gap in the input (lost packets, a muted sender) moves the output on
// by as much, so audio stays in step with the video it came with.
type AudioConverter struct {
	src  media.Track
	dec  *astiav.CodecContext
	pkt  *astiav.Packet
	dec1 *astiav.Frame
	aac  *audioTranscoder
	warn *logx.Limiter
	log  *slog.Logger

	// next is where the next input frame should start, in output samples;
	// valid once started.
	next    int64
	started bool
}

// NewAudioConverter opens a decoder for src and an AAC encoder of the given
// bitrate (bits per second).
func NewAudioConverter(src media.Track, bitrate int, log *slog.Logger) (*AudioConverter, error) {
	return NewAudioConverterTo(src, media.CodecAAC, bitrate, log)
}

// NewAudioConverterTo is NewAudioConverter with the output codec chosen:
// AAC, or Opus (for WebRTC viewers of an AAC source; 20 ms frames).
func NewAudioConverterTo(src media.Track, out media.Codec, bitrate int, log *slog.Logger) (*AudioConverter, error) {
	var id astiav.CodecID
	switch src.Codec {
	case media.CodecOpus:
		id = astiav.CodecIDOpus
	case media.CodecAAC:
		id = astiav.CodecIDAac
	default:
		return nil, fmt.Errorf("audio converter: cannot decode %q audio", src.Codec)
	}
	if src.ClockRate <= 0 {
		return nil, fmt.Errorf("audio converter: clock rate must be positive, got %d", src.ClockRate)
	}
	if log == nil {
		log = slog.Default()
	}
	codec := astiav.FindDecoder(id)
	if codec == nil {
		return nil, fmt.Errorf("audio converter: no %s decoder in this FFmpeg build", src.Codec)
	}
	c := &AudioConverter{src: src, warn: logx.NewLimiter(5 * time.Second), log: log}
	fail := func(err error) (*AudioConverter, error) {
		c.Close()
		return nil, err
	}
	if c.dec = astiav.AllocCodecContext(codec); c.dec == nil {
		return fail(errors.New("audio converter: allocating the decoder failed"))
	}
	rate, channels := src.SampleRate, src.Channels
	if rate <= 0 {
		rate = src.ClockRate
	}
	if channels <= 0 || channels > 2 {
		channels = 2
	}
	c.dec.SetSampleRate(rate)
	if channels == 1 {
		c.dec.SetChannelLayout(astiav.ChannelLayoutMono)
	} else {
		c.dec.SetChannelLayout(astiav.ChannelLayoutStereo)
	}
	if len(src.AudioConfig) > 0 {
		if err := c.dec.SetExtraData(src.AudioConfig); err != nil {
			return fail(fmt.Errorf("audio converter: decoder configuration: %w", err))
		}
	}
	if err := c.dec.Open(codec, nil); err != nil {
		return fail(fmt.Errorf("audio converter: opening the %s decoder: %w", src.Codec, err))
	}
	if c.pkt = astiav.AllocPacket(); c.pkt == nil {
		return fail(errors.New("audio converter: allocating a packet failed"))
	}
	if c.dec1 = astiav.AllocFrame(); c.dec1 == nil {
		return fail(errors.New("audio converter: allocating a frame failed"))
	}
	var err error
	if c.aac, err = newAudioEncoder(out, bitrate); err != nil {
		return fail(fmt.Errorf("audio converter: %w", err))
	}
	return c, nil
}

// Track is the track the converter produces.
func (c *AudioConverter) Track() media.Track { return c.aac.track }

// gapTolerance is how far an input frame may start from where the last one
// ended (in output samples, 48 kHz) before the output timeline jumps with
// it: two Opus frames of 20 ms.
const gapTolerance = 2 * 960

// Push decodes one access unit (PTS in the source track's clock) and emits
// the AAC frames that are ready. Undecodable input is skipped with a
// rate-limited warning; only encoder failures are returned.
func (c *AudioConverter) Push(au *media.AccessUnit, emit func(*media.AccessUnit)) error {
	var data []byte
	for _, p := range au.Payload {
		data = append(data, p...)
	}
	if len(data) == 0 {
		return nil
	}
	start := au.PTS * aacRate / int64(c.src.ClockRate)
	c.pkt.Unref()
	if err := c.pkt.FromData(append(data, make([]byte, padding)...)); err != nil {
		return fmt.Errorf("audio converter: packet: %w", err)
	}
	c.pkt.SetSize(len(data))
	c.pkt.SetPts(au.PTS)
	err := c.dec.SendPacket(c.pkt)
	c.pkt.Unref()
	if err != nil && !errors.Is(err, astiav.ErrEagain) {
		c.bad("the decoder refused a frame", err)
		return nil
	}
	first := true
	for {
		err := c.dec.ReceiveFrame(c.dec1)
		if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
			return nil
		}
		if err != nil {
			c.bad("decoding", err)
			return nil
		}
		if first && c.started {
			// Only the first frame of a packet can start after a gap.
			if gap := start - c.next; gap > gapTolerance {
				c.aac.next += gap
				c.next = start
			}
		}
		if !c.started {
			c.next = start
		}
		n := int64(c.dec1.NbSamples())
		if r := c.dec1.SampleRate(); r > 0 {
			n = n * aacRate / int64(r)
		}
		err = c.aac.push(c.dec1, start, emit)
		c.dec1.Unref()
		if errors.Is(err, errSkipAudio) {
			c.bad("unusable audio frame", err)
			continue
		}
		if err != nil {
			return err
		}
		c.started = true
		c.next += n
		first = false
	}
}

// Flush encodes what is still buffered.
func (c *AudioConverter) Flush(emit func(*media.AccessUnit)) error {
	if !c.started {
		return nil
	}
	return c.aac.flush(emit)
}

// Close frees every C object. The converter is unusable afterwards.
func (c *AudioConverter) Close() {
	if c.dec != nil {
		c.dec.Free()
		c.dec = nil
	}
	if c.pkt != nil {
		c.pkt.Free()
		c.pkt = nil
	}
	if c.dec1 != nil {
		c.dec1.Free()
		c.dec1 = nil
	}
	if c.aac != nil {
		c.aac.free()
		c.aac = nil
	}
}

func (c *AudioConverter) bad(msg string, err error) {
	if ok, n := c.warn.Allow(); ok {
		c.log.Warn("audio converter: "+msg+"; skipping it", "codec", c.src.Codec, "err", err, "suppressed_since_last", n)
	}
}

// VideoConverter re-encodes a live video track that HLS players cannot
// play (VP8 or VP9, as WebRTC publishers send it) to H.264 at the source's
// size: a Pipeline of one rung.
type VideoConverter struct {
	p *Pipeline
}

// NewVideoConverter opens a converter for src. Its keyframes fall every
// keyframeInterval (the segment duration). A source of unknown size is
// encoded at 720 lines.
func NewVideoConverter(src media.Track, preset string, keyframeInterval time.Duration, log *slog.Logger) (*VideoConverter, error) {
	h := src.Height
	if h <= 0 {
		h = 720
	}
	w := src.Width
	if w <= 0 {
		w = h * 16 / 9
	}
	// About 0.1 bit per pixel at 30 fps: 2.8 Mb/s for 720p, from 300 kb/s
	// to 8 Mb/s.
	bitrate := min(max(w*h*3, 300_000), 8_000_000)
	p, err := New(Config{Backend: BackendSoftware, Preset: preset, KeyframeInterval: keyframeInterval, Log: log},
		src, []Rung{{Name: media.RenditionSource, Height: h, Bitrate: bitrate}})
	if err != nil {
		return nil, err
	}
	return &VideoConverter{p: p}, nil
}

// Push decodes one frame (90 kHz clock) and emits the H.264 access units
// that are ready.
func (c *VideoConverter) Push(au *media.AccessUnit, emit func(*media.AccessUnit)) error {
	return c.p.Push(au, func(_ int, out *media.AccessUnit) { emit(out) })
}

// Flush drains the decoder and the encoder.
func (c *VideoConverter) Flush(emit func(*media.AccessUnit)) error {
	return c.p.Flush(func(_ int, out *media.AccessUnit) { emit(out) })
}

// Track describes the H.264 output from one of its keyframes.
func (c *VideoConverter) Track(keyframe *media.AccessUnit) media.Track {
	return c.p.OutputRungs()[0].Track(keyframe)
}

// Close frees every C object.
func (c *VideoConverter) Close() { c.p.Close() }
