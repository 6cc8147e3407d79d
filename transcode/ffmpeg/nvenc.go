package ffmpeg

import (
	"strconv"

	"github.com/asticode/go-astiav"
)

// nvenc encodes with NVIDIA's NVENC (h264_nvenc): frames scaled on the GPU
// (Config.GPU) go to it without leaving GPU memory; frames decoded and
// scaled on the CPU are uploaded by the encoder.
type nvenc struct{}

func (nvenc) name() string                    { return BackendNVENC }
func (nvenc) pixelFormat() astiav.PixelFormat { return astiav.PixelFormatYuv420P }

func (nvenc) open(s encoderSettings) (*astiav.CodecContext, error) {
	opts := map[string]string{
		"preset":      nvencPreset(s.preset),
		"tune":        "ll",
		"profile":     "high",
		"rc":          "cbr",
		"bf":          "2",
		"forced-idr":  "1",
		"no-scenecut": "1",
	}
	if s.gpuFrames == nil && s.device == nil {
		opts["gpu"] = strconv.Itoa(s.gpuIndex)
	}
	return openEncoder("h264_nvenc", astiav.PixelFormatYuv420P, s, opts)
}

// nvencPreset maps an x264 preset name to the closest NVENC preset (p1
// fastest .. p7 best).
func nvencPreset(x264 string) string {
	switch x264 {
	case "ultrafast", "superfast":
		return "p1"
	case "veryfast", "faster":
		return "p2"
	case "fast":
		return "p3"
	case "medium", "":
		return "p4"
	case "slow":
		return "p5"
	}
	return "p6"
}
