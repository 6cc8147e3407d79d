package ffmpeg

//#cgo pkg-config: libavcodec libavutil
//#include <libavutil/frame.h>
//#include <libavutil/avutil.h>
//#include <libavcodec/avcodec.h>
import "C"

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"unsafe"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
)

// LibraryVersion names the FFmpeg libraries this process runs on, e.g.
// "FFmpeg 5.1.6-0+deb12u1, libavcodec 59.37.100": what a measurement of
// their speed depends on.
func LibraryVersion() string {
	v := uint(C.avcodec_version())
	return fmt.Sprintf("FFmpeg %s, libavcodec %d.%d.%d", C.GoString(C.av_version_info()), v>>16, v>>8&0xff, v&0xff)
}

// SynthConfig describes a synthetic source clip.
type SynthConfig struct {
	Width, Height int // even
	FPS           int
	Frames        int
	Bitrate       int // bits per second
	// GOP is the keyframe interval in frames.
	GOP int
}

// SynthClip is a synthetic H.264 clip in memory, as ingest would hand it
// to a ladder: Annex B access units in decoding order, PTS and DTS in
// 90 kHz ticks, parameter sets in band before every keyframe.
type SynthClip struct {
	Track media.Track
	AUs   []*media.AccessUnit
}

// Synthesize encodes a clip of moving pictures with the FFmpeg libraries
// (no ffmpeg CLI): a textured background (two octaves of value noise and
// some grain) panning diagonally, with a box of the same texture moving
// against it on a Lissajous path, so that the encoders that later read it
// have real motion and detail to work on, as with a camera or a screen
// capture, not flat colours. It is encoded with libx264 superfast (CABAC,
// B-frames: what OBS sends, and as costly to decode) at cfg.Bitrate.
func Synthesize(ctx context.Context, cfg SynthConfig) (*SynthClip, error) {
	if cfg.Width < 16 || cfg.Height < 16 || cfg.Width%2 != 0 || cfg.Height%2 != 0 {
		return nil, fmt.Errorf("synthesize: bad size %dx%d (even, at least 16x16)", cfg.Width, cfg.Height)
	}
	if cfg.FPS <= 0 || cfg.Frames <= 0 || cfg.Bitrate <= 0 || cfg.GOP <= 0 {
		return nil, errors.New("synthesize: frame rate, frame count, bitrate and GOP must be positive")
	}
	enc, err := openEncoder("libx264", astiav.PixelFormatYuv420P, encoderSettings{
		rung:      Rung{Name: "synth", Width: cfg.Width, Height: cfg.Height, Bitrate: cfg.Bitrate},
		frameRate: astiav.NewRational(cfg.FPS, 1), gop: cfg.GOP,
	}, map[string]string{"preset": "superfast", "profile": "high", "x264-params": "scenecut=0"})
	if err != nil {
		return nil, fmt.Errorf("synthesize: %w", err)
	}
	defer enc.Free()
	f := astiav.AllocFrame()
	defer f.Free()
	f.SetWidth(cfg.Width)
	f.SetHeight(cfg.Height)
	f.SetPixelFormat(astiav.PixelFormatYuv420P)
	if err := f.AllocBuffer(0); err != nil {
		return nil, fmt.Errorf("synthesize: frame buffer: %w", err)
	}
	pkt := astiav.AllocPacket()
	defer pkt.Free()

	w, h := cfg.Width, cfg.Height
	luma := newTexture(1, w, h, 16, 235, 64, 16, 6)
	cb := newTexture(2, w/2, h/2, 64, 192, 128, 32, 0)
	cr := newTexture(3, w/2, h/2, 64, 192, 128, 32, 0)
	clip := &SynthClip{Track: media.Track{Codec: media.CodecH264, ClockRate: 90000, Width: w, Height: h}}
	tb := enc.TimeBase()
	drain := func() error {
		for {
			err := enc.ReceivePacket(pkt)
			if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
				return nil
			}
			if err != nil {
				return fmt.Errorf("synthesize: encoding: %w", err)
			}
			var nalus h264.AnnexB
			uerr := nalus.Unmarshal(pkt.Data())
			au := &media.AccessUnit{
				PTS: astiav.RescaleQ(pkt.Pts(), tb, clock90k), DTS: astiav.RescaleQ(pkt.Dts(), tb, clock90k),
				Keyframe: pkt.Flags().Has(astiav.PacketFlagKey), Payload: nalus,
			}
			pkt.Unref()
			if uerr != nil {
				return fmt.Errorf("synthesize: encoder output: %w", uerr)
			}
			for _, n := range nalus {
				switch h264.NALUType(n[0] & 0x1f) {
				case h264.NALUTypeSPS:
					if clip.Track.SPS == nil {
						clip.Track.SPS = n
					}
				case h264.NALUTypePPS:
					if clip.Track.PPS == nil {
						clip.Track.PPS = n
					}
				}
			}
			clip.AUs = append(clip.AUs, au)
		}
	}
	for i := range cfg.Frames {
		if err := ctx.Err(); err != nil {
			return nil, err
		}
		if err := makeWritable(f); err != nil {
			return nil, fmt.Errorf("synthesize: %w", err)
		}
		// The background pans down and right; the box, a third of the
		// picture, moves on a Lissajous path and shows the texture
		// panning the other way.
		bx, by := 3*i, 2*i
		boxW, boxH := w/3&^1, h/3&^1
		px := (w - boxW) * (1000 + lissajous(i, 97)) / 2000 &^ 1
		py := (h - boxH) * (1000 + lissajous(i, 67)) / 2000 &^ 1
		for p, tex := range []*texture{luma, cb, cr} {
			s := 1
			if p > 0 {
				s = 2
			}
			data, stride := plane(f, p, h/s)
			for y := range h / s {
				row := data[y*stride : y*stride+w/s]
				tex.copyRow(row, bx/s, by/s+y)
				if y >= py/s && y < (py+boxH)/s {
					tex.copyRow(row[px/s:px/s+boxW/s], -bx/s+w/(2*s), -by/s+y+h/(3*s))
				}
			}
		}
		f.SetPts(int64(i))
		f.SetPictureType(astiav.PictureTypeNone)
		f.SetKeyFrame(false)
		if err := enc.SendFrame(f); err != nil {
			return nil, fmt.Errorf("synthesize: encoding: %w", err)
		}
		if err := drain(); err != nil {
			return nil, err
		}
	}
	if err := enc.SendFrame(nil); err != nil {
		return nil, fmt.Errorf("synthesize: flushing: %w", err)
	}
	if err := drain(); err != nil {
		return nil, err
	}
	if len(clip.AUs) == 0 || clip.Track.SPS == nil || clip.Track.PPS == nil {
		return nil, errors.New("synthesize: the encoder produced no H.264 with parameter sets")
	}
	return clip, nil
}

// lissajous is a triangle wave of frame i with the given period in frames,
// from -1000 to 1000.
func lissajous(i, period int) int {
	p := i % period
	v := 4000 * p / period // 0..4000
	switch {
	case v < 1000:
		return v
	case v < 3000:
		return 2000 - v
	}
	return v - 4000
}

// plane returns plane p of f (rows rows) and its line size.
func plane(f *astiav.Frame, p, rows int) ([]byte, int) {
	cf := (*C.AVFrame)(f.UnsafePointer())
	stride := int(cf.linesize[p])
	return unsafe.Slice((*byte)(unsafe.Pointer(cf.data[p])), stride*rows), stride
}

// texture is a tileable picture plane: rows copy out of it at any offset,
// wrapping around, so that a pan needs no per-pixel work per frame.
type texture struct {
	w, h int
	pix  []byte
}

// newTexture makes a plane of value noise (from seed) between lo and hi, at least w x h
// (a whole number of coarse cells, so that it tiles): a coarse octave
// (cells of coarse pixels), a fine one (cells of fine pixels, a divisor of
// coarse) at a quarter of the amplitude, and uniform grain of +-grain.
func newTexture(seed uint64, w, h, lo, hi, coarse, fine, grain int) *texture {
	rng := rand.New(rand.NewPCG(seed, uint64(w)<<32|uint64(h)))
	w = (w + coarse - 1) / coarse * coarse
	h = (h + coarse - 1) / coarse * coarse
	t := &texture{w: w, h: h, pix: make([]byte, w*h)}
	a := newLattice(rng, w, h, coarse)
	b := newLattice(rng, w, h, fine)
	span := hi - lo
	for y := range h {
		for x := range w {
			v := (4*a.at(x, y) + b.at(x, y)) / 5 // 0..255
			v = lo + v*span/255
			if grain > 0 {
				v += rng.IntN(2*grain+1) - grain
			}
			t.pix[y*w+x] = byte(min(hi, max(lo, v)))
		}
	}
	return t
}

// copyRow fills dst with row y of t from column x on, wrapping around.
func (t *texture) copyRow(dst []byte, x, y int) {
	y = ((y % t.h) + t.h) % t.h
	x = ((x % t.w) + t.w) % t.w
	src := t.pix[y*t.w : (y+1)*t.w]
	for n := 0; n < len(dst); {
		c := copy(dst[n:], src[x:])
		n += c
		x = 0
	}
}

// lattice is value noise: random values on a grid of cell x cell pixels
// (w and h are multiples of cell), wrapping around so that the texture
// tiles, interpolated bilinearly.
type lattice struct {
	cw, ch, cell int
	v            []int
}

func newLattice(rng *rand.Rand, w, h, cell int) *lattice {
	l := &lattice{cw: w / cell, ch: h / cell, cell: cell}
	l.v = make([]int, l.cw*l.ch)
	for i := range l.v {
		l.v[i] = rng.IntN(256)
	}
	return l
}

func (l *lattice) at(x, y int) int {
	gx, fx := x/l.cell, x%l.cell
	gy, fy := y/l.cell, y%l.cell
	x0, x1 := gx%l.cw, (gx+1)%l.cw
	y0, y1 := gy%l.ch, (gy+1)%l.ch
	top := l.v[y0*l.cw+x0]*(l.cell-fx) + l.v[y0*l.cw+x1]*fx
	bot := l.v[y1*l.cw+x0]*(l.cell-fx) + l.v[y1*l.cw+x1]*fx
	return (top*(l.cell-fy) + bot*fy) / (l.cell * l.cell)
}
