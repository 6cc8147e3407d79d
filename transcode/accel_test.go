package transcode

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// The choice PickAccel makes from what the probe found. The probe itself
// runs for real in transcode/ffmpeg's tests (TestProbeGPUs); here its
// answers are the ones GPUs operators have give.
func TestPickAccelChoice(t *testing.T) {
	h200 := func() []*ffmpeg.GPU {
		return []*ffmpeg.GPU{{Index: 0, Name: "NVIDIA H200", NVDEC: []string{"h264", "hevc"},
			Problem: "NVENC: this GPU has no H.264 encoder"}}
	}
	l4 := func() []*ffmpeg.GPU {
		return []*ffmpeg.GPU{{Index: 0, Name: "NVIDIA L4", NVDEC: []string{"h264", "hevc"}, NVENC: true, NVENCSessions: 32}}
	}
	none := func() ([]*ffmpeg.GPU, error) {
		return nil, fmt.Errorf("%w: no NVIDIA driver (libcuda.so.1: cannot open shared object file)", ffmpeg.ErrNoGPU)
	}
	noQSV := func(string) error { return errors.New("no Quick Sync here") }
	for _, c := range []struct {
		name, hw       string
		gpus           func() ([]*ffmpeg.GPU, error)
		backend, where string
		summary        string // a part of it
		err            string // a part of the error, or "" for none
	}{
		{"H200 auto", "auto", func() ([]*ffmpeg.GPU, error) { return h200(), nil }, "software", "cuda",
			"NVIDIA H200 (GPU 0): NVDEC h264/hevc yes, NVENC no: decoding and scaling on the GPU, encoding on the CPU (x264)", ""},
		{"H200 cuda", "cuda", func() ([]*ffmpeg.GPU, error) { return h200(), nil }, "software", "cuda", "NVENC no", ""},
		{"H200 nvenc", "nvenc", func() ([]*ffmpeg.GPU, error) { return h200(), nil }, "", "", "",
			"nvenc was asked for but does not work here: NVIDIA H200 (GPU 0): NVDEC h264/hevc yes, NVENC no (NVENC: this GPU has no H.264 encoder)"},
		{"L4 auto", "auto", func() ([]*ffmpeg.GPU, error) { return l4(), nil }, "nvenc", "cuda",
			"NVIDIA L4 (GPU 0): NVDEC h264/hevc yes, NVENC yes (32+ sessions): decoding, scaling and encoding (NVENC) on the GPU", ""},
		{"no GPU auto", "auto", none, "software", "cpu", "no NVIDIA GPU: no NVIDIA driver (libcuda.so.1: cannot open shared object file): transcoding on the CPU (x264)", ""},
		{"no GPU cuda", "cuda", none, "", "", "", "cuda was asked for but no GPU decodes here: no NVIDIA GPU"},
		{"software", "software", none, "software", "cpu", "as transcode.hwaccel says", ""},
		{"none", "none", none, "software", "cpu", "as transcode.hwaccel says", ""},
		{"unknown", "vaapi", none, "", "", "", "unknown hwaccel"},
	} {
		t.Run(c.name, func(t *testing.T) {
			probeGPUs, probeEncoder = c.gpus, noQSV
			defer func() { probeGPUs, probeEncoder = ffmpeg.ProbeGPUs, ffmpeg.Probe }()
			a, err := pickAccel(c.hw)
			if c.err != "" {
				if err == nil || !strings.Contains(err.Error(), c.err) {
					t.Fatalf("error %v, want one containing %q", err, c.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if a.Backend != c.backend || a.Decode() != c.where || !strings.Contains(a.Summary, c.summary) {
				t.Fatalf("backend %s, decode %s, summary %q; want %s, %s, %q", a.Backend, a.Decode(), a.Summary, c.backend, c.where, c.summary)
			}
			caps := a.Capabilities(3, "default")
			if caps.Encoder != c.backend || caps.Decode != c.where || caps.Summary != a.Summary || caps.GPUs == nil {
				t.Fatalf("capabilities %+v", caps)
			}
			if c.where == "cuda" && (len(caps.GPUs) != 1 || caps.GPUs[0].NVDEC[1] != "hevc") {
				t.Fatalf("capabilities GPUs %+v", caps.GPUs)
			}
			if cfg := a.PipelineConfig("veryfast", 2e9, nil); (cfg.GPU != nil) != (c.where == "cuda") {
				t.Fatalf("PipelineConfig GPU %v for decode %s", cfg.GPU, c.where)
			}
		})
	}
}
