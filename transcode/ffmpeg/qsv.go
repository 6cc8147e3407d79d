package ffmpeg

import "github.com/asticode/go-astiav"

// qsv encodes with Intel Quick Sync Video (h264_qsv), which takes NV12
// frames from system memory.
type qsv struct{}

func (qsv) name() string                    { return BackendQSV }
func (qsv) pixelFormat() astiav.PixelFormat { return astiav.PixelFormatNv12 }

func (qsv) open(s encoderSettings) (*astiav.CodecContext, error) {
	return openEncoder("h264_qsv", astiav.PixelFormatNv12, s, map[string]string{
		"preset":     qsvPreset(s.preset),
		"profile":    "high",
		"forced_idr": "1",
		"look_ahead": "0",
	})
}

func qsvPreset(x264 string) string {
	switch x264 {
	case "ultrafast", "superfast", "veryfast":
		return "veryfast"
	case "faster", "fast":
		return "faster"
	}
	return "medium"
}
