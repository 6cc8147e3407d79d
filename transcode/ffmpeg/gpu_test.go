package ffmpeg

import (
	"os"
	"slices"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
)

// The hardware backends run the ladder of TestLadderAlignedKeyframes on
// machines that have the hardware; the variable says so, and then the
// encoder must work (Probe) and pass the same checks.

func TestNVENCLadderAlignedKeyframes(t *testing.T) {
	if os.Getenv("SHOAL_TEST_GPU") != "1" {
		t.Skip("set SHOAL_TEST_GPU=1 on a machine with an NVIDIA GPU to test NVENC")
	}
	t.Parallel()
	if err := Probe(BackendNVENC); err != nil {
		t.Fatalf("Probe(nvenc): %v", err)
	}
	alignedLadder(t, BackendNVENC)
}

func TestQSVLadderAlignedKeyframes(t *testing.T) {
	if os.Getenv("SHOAL_TEST_QSV") != "1" {
		t.Skip("set SHOAL_TEST_QSV=1 on a machine with Intel Quick Sync to test QSV")
	}
	t.Parallel()
	if err := Probe(BackendQSV); err != nil {
		t.Fatalf("Probe(qsv): %v", err)
	}
	alignedLadder(t, BackendQSV)
}

// alignedLadder encodes a 720p source (GOP 1.5 s, which the grid must not
// follow) to 480p and 360p with a 1 s keyframe grid and checks every frame
// comes out, the sizes, and keyframes exactly on the grid and identical in
// every rung.
func alignedLadder(t *testing.T, backend string) []rungOut {
	t.Helper()
	src := makeTS(t, 1280, 720, 4, 45)
	rungs := []Rung{{Name: "480p", Height: 480, Bitrate: 1_200_000}, {Name: "360p", Height: 360, Bitrate: 700_000}}
	cfg := Config{Backend: backend, Preset: "veryfast", KeyframeInterval: time.Second, Log: quiet}
	outs := run(t, cfg, src, rungs, nil)
	for i, o := range outs {
		if len(o.aus) != 120 {
			t.Errorf("rung %d: %d frames, want 120", i, len(o.aus))
		}
		var sps h264.SPS
		if err := sps.Unmarshal(o.sps); err != nil {
			t.Fatalf("rung %d: SPS: %v", i, err)
		}
		wantW := map[int]int{480: 854, 360: 640}[rungs[i].Height]
		if sps.Width() != wantW || sps.Height() != rungs[i].Height {
			t.Errorf("rung %d: %dx%d, want %dx%d", i, sps.Width(), sps.Height(), wantW, rungs[i].Height)
		}
		if len(o.keys) != 4 {
			t.Errorf("rung %d: keyframes at %v, want 4 (one a second)", i, o.keys)
		}
		for j := 1; j < len(o.keys); j++ {
			if d := o.keys[j] - o.keys[j-1]; d != 90000 {
				t.Errorf("rung %d: keyframes %d ticks apart, want 90000", i, d)
			}
		}
	}
	if !slices.Equal(outs[0].keys, outs[1].keys) {
		t.Fatalf("keyframes differ across rungs: %v vs %v", outs[0].keys, outs[1].keys)
	}
	return outs
}
