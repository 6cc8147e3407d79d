package ffmpeg

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"
)

// A source faster than its declared frame rate (60 fps content whose SPS
// says 30) must not make the output run ahead of the source's clock: frames
// that would repeat an encoder tick are dropped, timestamps stay on time and
// keyframes stay on the 1 s grid.
func TestFasterThanDeclaredFrameRateStaysOnTime(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "fast.ts")
	out, err := exec.Command("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=60", "-t", "4",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-pix_fmt", "yuv420p",
		"-bsf:v", "h264_metadata=tick_rate=60", "-f", "mpegts", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	rungs := []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}}
	outs := run(t, Config{Preset: "ultrafast", KeyframeInterval: time.Second, Log: quiet}, path, rungs, nil)
	o := outs[0]
	if len(o.aus) < 110 {
		t.Fatalf("%d frames out of 240, want at least the declared 30 fps", len(o.aus))
	}
	first, last := o.aus[0].PTS, o.aus[0].PTS
	for _, au := range o.aus {
		first, last = min(first, au.PTS), max(last, au.PTS)
	}
	if span := float64(last-first) / 90000; span < 3.8 || span > 4.05 {
		t.Fatalf("output spans %.2f s of a 4 s source", span)
	}
	for i := 1; i < len(o.keys); i++ {
		if d := o.keys[i] - o.keys[i-1]; d < 87000 || d > 93000 {
			t.Errorf("keyframes %d ticks apart, want about 90000", d)
		}
	}
}
