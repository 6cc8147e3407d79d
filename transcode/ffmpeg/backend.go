package ffmpeg

import (
	"errors"
	"fmt"
	"strconv"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
)

// Backend names.
const (
	BackendSoftware = "software"
	BackendNVENC    = "nvenc"
	BackendQSV      = "qsv"
)

// Rung is one video rendition of a ladder.
type Rung struct {
	Name          string
	Width, Height int
	Bitrate       int // bits per second
}

// encoderSettings is what every backend gets to open an encoder.
type encoderSettings struct {
	rung      Rung
	frameRate astiav.Rational
	gop       int    // frames; keyframes are forced on the grid, this is a backstop
	preset    string // x264 preset name; hardware backends map it
	// gpuIndex is the NVIDIA GPU an NVENC session opens on.
	gpuIndex int
	// gpuFrames, when set, makes the encoder take frames in GPU memory:
	// it is called on the context before it opens, to hand it the
	// hardware frames context those frames come from.
	gpuFrames func(*astiav.CodecContext) error
	// device, for NVENC fed from system memory, is the GPU's CUDA
	// context the session uses (without it NVENC creates one per session
	// on GPU gpuIndex).
	device *cudaDevice
}

// backend opens H.264 encoders. Each hardware encoder lives in a file of
// its own; all of them take frames from system memory, and NVENC also
// takes frames in GPU memory (encoderSettings.gpuFrames).
type backend interface {
	name() string
	pixelFormat() astiav.PixelFormat
	open(s encoderSettings) (*astiav.CodecContext, error)
}

func backendByName(name string) (backend, error) {
	switch name {
	case BackendSoftware, "", "none":
		return software{}, nil
	case BackendNVENC:
		return nvenc{}, nil
	case BackendQSV:
		return qsv{}, nil
	}
	return nil, fmt.Errorf("unknown transcoding backend %q (want software, nvenc or qsv)", name)
}

// openEncoder allocates and opens an encoder context for codec with the
// common settings and the backend's options; on error nothing is leaked.
func openEncoder(codecName string, pix astiav.PixelFormat, s encoderSettings, opts map[string]string) (*astiav.CodecContext, error) {
	codec := astiav.FindEncoderByName(codecName)
	if codec == nil {
		return nil, fmt.Errorf("encoder %s is not in this FFmpeg build", codecName)
	}
	cc := astiav.AllocCodecContext(codec)
	if cc == nil {
		return nil, errors.New("allocating the encoder context failed")
	}
	cc.SetWidth(s.rung.Width)
	cc.SetHeight(s.rung.Height)
	if s.gpuFrames != nil {
		pix = astiav.PixelFormatCuda
		if err := s.gpuFrames(cc); err != nil {
			cc.Free()
			return nil, err
		}
	} else if s.device != nil {
		if err := s.device.bindEncoder(cc); err != nil {
			cc.Free()
			return nil, err
		}
	}
	cc.SetPixelFormat(pix)
	// One tick per frame: x264's rate control gives measurably better
	// quality (about 0.5 dB PSNR at the same size) with a time base of
	// 1/frame rate than with 1/90000 or 1/1000.
	cc.SetTimeBase(astiav.NewRational(s.frameRate.Den(), s.frameRate.Num()))
	cc.SetFramerate(s.frameRate)
	cc.SetSampleAspectRatio(astiav.NewRational(1, 1))
	cc.SetBitRate(int64(s.rung.Bitrate))
	cc.SetGopSize(s.gop)
	d := astiav.NewDictionary()
	defer d.Free()
	opts["maxrate"] = strconv.Itoa(s.rung.Bitrate * 11 / 10)
	opts["bufsize"] = strconv.Itoa(s.rung.Bitrate * 2)
	for k, v := range opts {
		if err := d.Set(k, v, 0); err != nil {
			cc.Free()
			return nil, fmt.Errorf("encoder option %s: %w", k, err)
		}
	}
	if err := cc.Open(codec, d); err != nil {
		cc.Free()
		return nil, fmt.Errorf("opening %s %dx%d: %w", codecName, s.rung.Width, s.rung.Height, err)
	}
	return cc, nil
}

// Track describes the output of rung r as the hub carries it, with the
// parameter sets found in keyframe (the first access unit the rung
// emitted, which carries its SPS and PPS).
func (r Rung) Track(keyframe *media.AccessUnit) media.Track {
	t := media.Track{Codec: media.CodecH264, ClockRate: 90000, Width: r.Width, Height: r.Height}
	for _, n := range keyframe.Payload {
		if len(n) == 0 {
			continue
		}
		switch h264.NALUType(n[0] & 0x1f) {
		case h264.NALUTypeSPS:
			t.SPS = n
		case h264.NALUTypePPS:
			t.PPS = n
		}
	}
	return t
}
