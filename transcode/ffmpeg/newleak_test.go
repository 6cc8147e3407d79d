package ffmpeg

import (
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// A pipeline that cannot be made (its decoder does not open) does not stay
// counted on its GPU: LeastBusy would steer ladders away from a GPU that
// runs nothing, and the GPU's ladders gauge would never come down.
func TestFailedNewDoesNotStayCountedOnItsGPU(t *testing.T) {
	t.Parallel()
	gpu := &GPU{Name: "test"} // no device: nothing is decoded on it
	cfg := Config{Backend: BackendSoftware, Preset: "ultrafast", KeyframeInterval: time.Second, GPU: gpu, Log: quiet}
	rungs := []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}}
	for range 3 {
		if p, err := New(cfg, media.Track{Codec: media.CodecAAC, ClockRate: 48000}, rungs); err == nil {
			p.Close()
			t.Fatal("New made a video pipeline for an AAC track")
		}
	}
	if _, n := gpu.InUse(); n != 0 {
		t.Fatalf("the GPU counts %d ladders after 3 pipelines failed to open and none runs", n)
	}
}
