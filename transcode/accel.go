package transcode

import (
	"fmt"
	"log/slog"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Accel is how a node transcodes, as PickAccel found it once at start: the
// encoder backend and what the hardware probe said.
type Accel struct {
	// Backend is the encoder backend (ffmpeg.Backend*).
	Backend string
	// Summary is the probe's verdict in one line, as logged.
	Summary string
}

// PickAccel resolves a hwaccel setting (HW*) by probing the hardware, logs
// the verdict in one line and returns it.
func PickAccel(hw string, log *slog.Logger) (Accel, error) {
	if log == nil {
		log = slog.Default()
	}
	backend, err := PickBackend(hw, log)
	if err != nil {
		return Accel{}, err
	}
	a := Accel{Backend: backend, Summary: fmt.Sprintf("encoding with %s", backend)}
	log.Info("transcode: " + a.Summary)
	return a, nil
}

// Capabilities describes a node transcoding with a, running at most
// ladders ladders (from says where that figure comes from: "measured",
// "configured" or "default"; see nodeproto.Transcoding).
func (a Accel) Capabilities(ladders int, from string) nodeproto.Transcoding {
	return nodeproto.Transcoding{
		Encoder: a.Backend, Decode: "cpu", GPUs: []nodeproto.GPU{},
		Ladders: ladders, LaddersFrom: from, Summary: a.Summary,
	}
}

// PipelineConfig is the ffmpeg pipeline configuration for a ladder
// transcoded with a: its encoder backend and hardware, the x264 preset
// (hardware encoders use the closest match) and the keyframe interval.
func (a Accel) PipelineConfig(preset string, keyframeInterval time.Duration, log *slog.Logger) ffmpeg.Config {
	return ffmpeg.Config{Backend: a.Backend, Preset: preset, KeyframeInterval: keyframeInterval, Log: log}
}
