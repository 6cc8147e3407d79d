package ffmpeg

import (
	"errors"
	"fmt"
	"image"

	"github.com/asticode/go-astiav"
)

// rgbaScaler turns decoded pictures into small RGBA images of one size. Its
// scaler and picture are reused; they are remade when the source changes
// size or pixel format. free releases them.
type rgbaScaler struct {
	w, h int // output size

	sws    *astiav.SoftwareScaleContext
	frame  *astiav.Frame
	srcW   int
	srcH   int
	srcFmt astiav.PixelFormat
}

// scale converts f to a new w x h RGBA image in Go memory.
func (s *rgbaScaler) scale(f *astiav.Frame) (*image.RGBA, error) {
	if s.sws == nil || f.Width() != s.srcW || f.Height() != s.srcH || f.PixelFormat() != s.srcFmt {
		s.free()
		sws, err := astiav.CreateSoftwareScaleContext(f.Width(), f.Height(), f.PixelFormat(), s.w, s.h,
			astiav.PixelFormatRgba, astiav.NewSoftwareScaleContextFlags(astiav.SoftwareScaleContextFlagArea))
		if err != nil {
			return nil, fmt.Errorf("scaler %dx%d -> %dx%d RGBA: %w", f.Width(), f.Height(), s.w, s.h, err)
		}
		frame := astiav.AllocFrame()
		if frame == nil {
			sws.Free()
			return nil, errors.New("allocating a picture failed")
		}
		frame.SetWidth(s.w)
		frame.SetHeight(s.h)
		frame.SetPixelFormat(astiav.PixelFormatRgba)
		if err := frame.AllocBuffer(0); err != nil {
			frame.Free()
			sws.Free()
			return nil, fmt.Errorf("picture buffer: %w", err)
		}
		s.sws, s.frame = sws, frame
		s.srcW, s.srcH, s.srcFmt = f.Width(), f.Height(), f.PixelFormat()
	}
	if err := makeWritable(s.frame); err != nil {
		return nil, fmt.Errorf("picture buffer: %w", err)
	}
	if err := s.sws.ScaleFrame(f, s.frame); err != nil {
		return nil, fmt.Errorf("scaling to %dx%d RGBA: %w", s.w, s.h, err)
	}
	// Copied with an alignment of 1, the rows are packed without the
	// picture's line padding: exactly image.RGBA's layout.
	pix, err := s.frame.Data().Bytes(1)
	if err != nil {
		return nil, fmt.Errorf("copying the picture: %w", err)
	}
	if len(pix) != 4*s.w*s.h {
		return nil, fmt.Errorf("copying the picture: %d bytes for %dx%d RGBA", len(pix), s.w, s.h)
	}
	return &image.RGBA{Pix: pix, Stride: 4 * s.w, Rect: image.Rect(0, 0, s.w, s.h)}, nil
}

func (s *rgbaScaler) free() {
	if s.sws != nil {
		s.sws.Free()
		s.sws = nil
	}
	if s.frame != nil {
		s.frame.Free()
		s.frame = nil
	}
}

// fitSize is the size of a picture w wide (at most srcW when noUpscale)
// with the aspect ratio of a srcW x srcH source, its height even.
func fitSize(srcW, srcH, w int, noUpscale bool) (int, int) {
	if noUpscale && w > srcW {
		w = srcW
	}
	w = max(w, 2)
	h := (srcH*w + srcW/2) / max(srcW, 1)
	h += h & 1
	return w, max(h, 2)
}
