package vod

import (
	"image"
	"image/jpeg"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestStoryboardSheetsAndTrack(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sb := newStoryboard(dir, 2*time.Second)
	sb.cols, sb.rows = 3, 2 // 6 per sheet
	for i := range 8 {
		img := image.NewRGBA(image.Rect(0, 0, 16, 10))
		for p := range img.Pix {
			img.Pix[p] = uint8(i * 30)
		}
		if err := sb.add(time.Duration(i)*2*time.Second, img); err != nil {
			t.Fatal(err)
		}
	}
	ok, err := sb.finish(15500 * time.Millisecond)
	if err != nil || !ok {
		t.Fatalf("finish = %v, %v", ok, err)
	}
	vtt, err := os.ReadFile(filepath.Join(dir, StoryboardFile))
	if err != nil {
		t.Fatal(err)
	}
	s := string(vtt)
	for _, want := range []string{
		"WEBVTT\n",
		"00:00:00.000 --> 00:00:02.000\nstoryboard-0.jpg#xywh=0,0,16,10\n",
		"00:00:08.000 --> 00:00:10.000\nstoryboard-0.jpg#xywh=16,10,16,10\n",
		"00:00:14.000 --> 00:00:15.500\nstoryboard-1.jpg#xywh=16,0,16,10\n",
	} {
		if !strings.Contains(s, want) {
			t.Errorf("track lacks %q:\n%s", want, s)
		}
	}
	if n := strings.Count(s, "-->"); n != 8 {
		t.Errorf("%d cues, want 8", n)
	}
	sizes := map[string]image.Point{"storyboard-0.jpg": {48, 20}, "storyboard-1.jpg": {48, 10}}
	for name, want := range sizes {
		f, err := os.Open(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		img, err := jpeg.Decode(f)
		f.Close()
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		if got := img.Bounds().Size(); got != want {
			t.Errorf("%s is %v, want %v", name, got, want)
		}
		if name == "storyboard-1.jpg" {
			r, _, _, _ := img.At(20, 5).RGBA()
			if level := r >> 8; level < 200 {
				t.Errorf("tile 8 of sheet 1 has level %d, want about 210", level)
			}
		}
	}
}

func TestStoryboardEmpty(t *testing.T) {
	t.Parallel()
	ok, err := newStoryboard(t.TempDir(), time.Second).finish(time.Second)
	if ok || err != nil {
		t.Fatalf("finish of an empty storyboard = %v, %v", ok, err)
	}
}

func TestThumbnailSpacing(t *testing.T) {
	t.Parallel()
	for d, want := range map[time.Duration]time.Duration{
		10 * time.Second: time.Second, 5 * time.Minute: 3 * time.Second, 3 * time.Hour: 10 * time.Second,
	} {
		if got := thumbnailInterval(d); got != want {
			t.Errorf("thumbnailInterval(%s) = %s, want %s", d, got, want)
		}
	}
	if got := posterAt(10 * time.Second); got != time.Second {
		t.Errorf("posterAt(10s) = %s", got)
	}
}
