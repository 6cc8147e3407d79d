package transcode

import (
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Accel is how a node transcodes, as PickAccel found it once at start: the
// encoder backend, the NVIDIA GPUs that decode and scale, and what the
// hardware probe said.
type Accel struct {
	// Backend is the encoder backend (ffmpeg.Backend*).
	Backend string
	// GPUs decode and scale the ladders, each ladder on the least busy
	// one; empty when the CPU does.
	GPUs []*ffmpeg.GPU
	// Found is every GPU the probe found, used or not.
	Found []*ffmpeg.GPU
	// Summary is the probe's verdict in one line, as logged, e.g. "NVIDIA
	// H200 (GPU 0): NVDEC h264/hevc yes, NVENC no: decoding and scaling on
	// the GPU, encoding on the CPU (x264)".
	Summary string
}

// HWCUDA asks for decoding and scaling on NVIDIA GPUs (NVDEC and
// scale_cuda), encoding with NVENC where the GPU has it and x264 otherwise.
const HWCUDA = "cuda"

// HWSoftware is HWNone's other name.
const HWSoftware = "software"

// probeGPUs is ffmpeg.ProbeGPUs; tests of the choice replace it.
var probeGPUs = ffmpeg.ProbeGPUs

// probeEncoder is ffmpeg.Probe; tests of the choice replace it.
var probeEncoder = ffmpeg.Probe

// PickAccel resolves a hwaccel setting by probing the hardware for real
// (a CUDA device, a decode on NVDEC, NVENC sessions, Quick Sync), logs the
// verdict in one line and returns it. An explicit setting whose hardware
// does not work is an error that says why; auto falls back to the CPU.
func PickAccel(hw string, log *slog.Logger) (Accel, error) {
	if log == nil {
		log = slog.Default()
	}
	a, err := pickAccel(hw)
	if err != nil {
		return Accel{}, err
	}
	log.Info("transcode: " + a.Summary)
	return a, nil
}

func pickAccel(hw string) (Accel, error) {
	switch hw {
	case HWNone, HWSoftware:
		return Accel{Backend: ffmpeg.BackendSoftware, Summary: "transcoding on the CPU (x264), as transcode.hwaccel says"}, nil
	case HWQSV:
		if err := probeEncoder(ffmpeg.BackendQSV); err != nil {
			return Accel{}, fmt.Errorf("transcode: qsv was asked for but does not work here: %w", err)
		}
		return Accel{Backend: ffmpeg.BackendQSV, Summary: "Intel Quick Sync: decoding and scaling on the CPU, encoding on the GPU (QSV)"}, nil
	case HWAuto, "", HWCUDA, HWNVENC:
	default:
		return Accel{}, fmt.Errorf("transcode: unknown hwaccel %q (want auto, software, cuda, nvenc or qsv)", hw)
	}
	gpus, gerr := probeGPUs()
	var decoders, encoders []*ffmpeg.GPU
	for _, g := range gpus {
		if len(g.NVDEC) > 0 {
			decoders = append(decoders, g)
		}
		if g.NVENC {
			encoders = append(encoders, g)
		}
	}
	found := describeAll(gpus)
	switch {
	case hw == HWNVENC && len(encoders) == 0:
		return Accel{}, fmt.Errorf("transcode: nvenc was asked for but does not work here: %s", noGPUReason(gpus, gerr))
	case hw == HWCUDA && len(decoders) == 0:
		return Accel{}, fmt.Errorf("transcode: cuda was asked for but no GPU decodes here: %s", noGPUReason(gpus, gerr))
	case len(decoders) > 0:
		a := Accel{Backend: ffmpeg.BackendSoftware, GPUs: decoders, Found: gpus}
		plan := "decoding and scaling on the GPU, encoding on the CPU (x264)"
		if len(encoders) > 0 {
			a.Backend = ffmpeg.BackendNVENC
			plan = "decoding, scaling and encoding (NVENC) on the GPU"
			if len(encoders) < len(decoders) {
				plan += " (x264 for ladders on GPUs without NVENC)"
			}
		}
		a.Summary = found + ": " + plan
		return a, nil
	case len(encoders) > 0:
		// NVENC without NVDEC: frames decoded on the CPU are uploaded.
		return Accel{Backend: ffmpeg.BackendNVENC, GPUs: nil, Found: gpus,
			Summary: found + ": decoding and scaling on the CPU, encoding on the GPU (NVENC)"}, nil
	}
	why := noGPUReason(gpus, gerr)
	if err := probeEncoder(ffmpeg.BackendQSV); err == nil {
		return Accel{Backend: ffmpeg.BackendQSV, Found: gpus,
			Summary: why + "; Intel Quick Sync: decoding and scaling on the CPU, encoding on the GPU (QSV)"}, nil
	}
	return Accel{Backend: ffmpeg.BackendSoftware, Found: gpus, Summary: why + ": transcoding on the CPU (x264)"}, nil
}

// describeAll is every GPU's Describe, joined.
func describeAll(gpus []*ffmpeg.GPU) string {
	d := make([]string, len(gpus))
	for i, g := range gpus {
		d[i] = g.Describe()
	}
	return strings.Join(d, "; ")
}

// noGPUReason says why no GPU is used.
func noGPUReason(gpus []*ffmpeg.GPU, err error) string {
	if err != nil {
		if errors.Is(err, ffmpeg.ErrNoGPU) {
			return err.Error()
		}
		return "no NVIDIA GPU: " + err.Error()
	}
	var why []string
	for _, g := range gpus {
		s := g.Describe()
		if g.Problem != "" {
			s += " (" + g.Problem + ")"
		}
		why = append(why, s)
	}
	return strings.Join(why, "; ")
}

// Decode says where a's ladders decode and scale: "cuda" or "cpu".
func (a Accel) Decode() string {
	if len(a.GPUs) > 0 {
		return "cuda"
	}
	return "cpu"
}

// Capabilities describes a node transcoding with a, running at most
// ladders ladders (from says where that figure comes from: "measured",
// "configured" or "default"; see nodeproto.Transcoding).
func (a Accel) Capabilities(ladders int, from string) nodeproto.Transcoding {
	t := nodeproto.Transcoding{
		Encoder: a.Backend, Decode: a.Decode(), GPUs: []nodeproto.GPU{},
		Ladders: ladders, LaddersFrom: from, Summary: a.Summary,
	}
	for _, g := range a.Found {
		t.GPUs = append(t.GPUs, nodeproto.GPU{
			Index: g.Index, Name: g.Name, NVDEC: append([]string{}, g.NVDEC...),
			NVENC: g.NVENC, NVENCSessions: g.NVENCSessions, Problem: g.Problem,
		})
	}
	return t
}

// PipelineConfig is the ffmpeg pipeline configuration for a ladder
// transcoded with a: its encoder backend, the least busy of a's GPUs (none
// when the CPU decodes), the x264 preset (hardware encoders use the
// closest match) and the keyframe interval.
func (a Accel) PipelineConfig(preset string, keyframeInterval time.Duration, log *slog.Logger) ffmpeg.Config {
	cfg := ffmpeg.Config{Backend: a.Backend, Preset: preset, KeyframeInterval: keyframeInterval, Log: log}
	if len(a.GPUs) > 0 {
		if cfg.GPU = ffmpeg.LeastBusy(a.GPUs); cfg.GPU == nil {
			// Every GPU was set aside after failing: the CPU does it all.
			cfg.Backend = ffmpeg.BackendSoftware
		}
	} else if a.Backend == ffmpeg.BackendNVENC {
		// NVENC sessions are counted on the GPU that encodes.
		var encoders []*ffmpeg.GPU
		for _, g := range a.Found {
			if g.NVENC {
				encoders = append(encoders, g)
			}
		}
		cfg.GPU = ffmpeg.LeastBusy(encoders)
	}
	return cfg
}
