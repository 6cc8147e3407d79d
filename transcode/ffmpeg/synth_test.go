package ffmpeg

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
)

// A synthetic clip is H.264 of the asked size and frame rate that the
// pipeline decodes frame for frame, with as much detail as its bitrate
// asks for (flat pictures would come out far smaller).
func TestSynthesize(t *testing.T) {
	t.Parallel()
	const frames, fps, bitrate = 45, 30, 1_500_000
	clip, err := Synthesize(context.Background(), SynthConfig{Width: 640, Height: 360, FPS: fps, Frames: frames, Bitrate: bitrate, GOP: 30})
	if err != nil {
		t.Fatal(err)
	}
	var sps h264.SPS
	if err := sps.Unmarshal(clip.Track.SPS); err != nil {
		t.Fatal(err)
	}
	if sps.Width() != 640 || sps.Height() != 360 || sps.FPS() != fps {
		t.Fatalf("SPS says %dx%d at %v fps, want 640x360 at %d", sps.Width(), sps.Height(), sps.FPS(), fps)
	}
	if len(clip.AUs) != frames {
		t.Fatalf("%d access units, want %d", len(clip.AUs), frames)
	}
	size, keys := 0, 0
	for _, au := range clip.AUs {
		for _, n := range au.Payload {
			size += len(n)
		}
		if au.Keyframe {
			keys++
		}
	}
	if keys != 2 || !clip.AUs[0].Keyframe {
		t.Errorf("%d keyframes (first: %v), want 2 with a GOP of 30 frames, the first one first", keys, clip.AUs[0].Keyframe)
	}
	want := bitrate / 8 * frames / fps
	if size < want/2 || size > want*2 {
		t.Errorf("%d bytes, want about %d (the bitrate's worth)", size, want)
	}

	p, err := New(Config{Preset: "ultrafast", KeyframeInterval: time.Second, Log: quiet}, clip.Track,
		[]Rung{{Name: "144p", Height: 144, Bitrate: 200_000}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	out := 0
	emit := func(int, *media.AccessUnit) { out++ }
	for _, au := range clip.AUs {
		if err := p.Push(au, emit); err != nil {
			t.Fatal(err)
		}
	}
	if err := p.Flush(emit); err != nil {
		t.Fatal(err)
	}
	if out != frames {
		t.Fatalf("the pipeline made %d frames of the clip's %d", out, frames)
	}
}

func TestSynthesizeRefusesBadSizes(t *testing.T) {
	t.Parallel()
	for _, c := range []SynthConfig{{Width: 641, Height: 360, FPS: 30, Frames: 1, Bitrate: 1e6, GOP: 30}, {Width: 640, Height: 360, FPS: 0, Frames: 1, Bitrate: 1e6, GOP: 30}} {
		if _, err := Synthesize(context.Background(), c); err == nil {
			t.Errorf("Synthesize(%+v) did not fail", c)
		}
	}
}

func TestLibraryVersion(t *testing.T) {
	t.Parallel()
	if v := LibraryVersion(); !strings.HasPrefix(v, "FFmpeg ") || !strings.Contains(v, "libavcodec ") {
		t.Fatalf("LibraryVersion() = %q", v)
	}
}
