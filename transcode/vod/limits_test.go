package vod

import (
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// A source beyond the limits is refused with what to do; one within them
// is taken.
func TestSourceLimits(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mk := func(name, rate string) string {
		p := filepath.Join(dir, name)
		out, err := exec.Command("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=160x120:rate="+rate,
			"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", p).CombinedOutput()
		if err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, out)
		}
		return p
	}
	f := Files{RecordDir: dir, WorkDir: dir}
	if got, err := f.Probe(mk("ok.mp4", "30")); err != nil || got.Duration < 900*time.Millisecond || got.Width != 160 || got.Height != 120 {
		t.Fatalf("a 1 s 160x120 30 fps clip: %+v, %v", got, err)
	}
	if _, err := f.Probe(mk("fast.mp4", "240")); err == nil || !strings.Contains(err.Error(), "240 frames per second") {
		t.Fatalf("a 240 fps clip: %v", err)
	}
	for _, c := range []struct {
		info ffmpeg.FileInfo
		want string
	}{
		{ffmpeg.FileInfo{Duration: 13 * time.Hour, FrameRate: 30, Width: 1920, Height: 1080}, "cut it into parts"},
		{ffmpeg.FileInfo{Duration: time.Hour, FrameRate: 30, Width: 16384, Height: 16384}, "scale it down"},
	} {
		if err := checkLimits(c.info); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: %v", c.info, err)
		}
	}
}
