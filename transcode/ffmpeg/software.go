package ffmpeg

import "github.com/asticode/go-astiav"

// software encodes with libx264 on the CPU.
type software struct{}

func (software) name() string                    { return BackendSoftware }
func (software) pixelFormat() astiav.PixelFormat { return astiav.PixelFormatYuv420P }

func (software) open(s encoderSettings) (*astiav.CodecContext, error) {
	preset := s.preset
	if preset == "" {
		preset = "veryfast"
	}
	return openEncoder("libx264", astiav.PixelFormatYuv420P, s, map[string]string{
		"preset":  preset,
		"profile": "high",
		// Keyframes come only where the pipeline forces them (the shared
		// segment grid), as IDR frames; GOPs are closed.
		"forced-idr":  "1",
		"x264-params": "scenecut=0:open-gop=0",
	})
}
