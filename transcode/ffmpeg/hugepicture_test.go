package ffmpeg

import (
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// A live publisher (any stream key holder) sends H.264 whose SPS declares
// 9000x9000 pictures, over maxPixels: the live decoder refuses them as the
// file path's does, instead of allocating hundreds of MiB per picture
// (12000x12000 took 1.6 GB of C heap for 435 KB sent).
func TestLivePipelineBoundsPictureSize(t *testing.T) {
	src := filepath.Join(t.TempDir(), "huge.ts")
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "lavfi", "-i", "color=black:s=9000x9000:r=30",
		"-frames:v", "3", "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", src).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	base := CHeapInUse()
	peak := base
	frames := 0
	emit := func(int, *media.AccessUnit) { frames++ }
	var p *Pipeline
	cfg := Config{Preset: "ultrafast", KeyframeInterval: time.Second, Log: quiet}
	err := DemuxVideo(src, func(tr media.Track, au *media.AccessUnit) error {
		if p == nil {
			var err error
			if p, err = New(cfg, tr, []Rung{{Name: "360p", Height: 360, Bitrate: 700_000}}); err != nil {
				return err
			}
		}
		err := p.Push(au, emit)
		peak = max(peak, CHeapInUse())
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
	if p != nil {
		_ = p.Flush(emit)
		p.Close()
	}
	grew := peak - base
	t.Logf("C heap peak growth %.0f MiB; %d frames encoded", float64(grew)/(1<<20), frames)
	if frames > 0 || grew > 200<<20 {
		t.Fatalf("pictures of 9000x9000 (over maxPixels %d) were decoded: %d frames, %.0f MiB of C heap", maxPixels, frames, float64(grew)/(1<<20))
	}
}
