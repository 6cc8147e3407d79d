package vod

import (
	"bufio"
	"fmt"
	"image"
	"image/draw"
	"image/jpeg"
	"os"
	"path/filepath"
	"time"
)

// Files a job writes next to the HLS tree of a video.
const (
	PosterFile     = "poster.jpg"
	StoryboardFile = "storyboard.vtt"
)

// spriteFile names sheet n of the storyboard.
func spriteFile(n int) string { return fmt.Sprintf("storyboard-%d.jpg", n) }

// storyboard collects thumbnails into sprite sheets of cols x rows tiles
// and describes them in a WebVTT track (the format players use for scrub
// previews: each cue's text is "<sheet>#xywh=x,y,w,h").
type storyboard struct {
	dir        string
	cols, rows int
	interval   time.Duration

	sheet  *image.RGBA
	n      int // thumbnails added
	sheets int // sheets written
	tw, th int
	cues   []cue
}

type cue struct {
	from, to   time.Duration
	sheet      int
	x, y, w, h int
}

func newStoryboard(dir string, interval time.Duration) *storyboard {
	return &storyboard{dir: dir, cols: 10, rows: 10, interval: interval}
}

// add places a thumbnail taken at instant at.
func (s *storyboard) add(at time.Duration, img *image.RGBA) error {
	b := img.Bounds()
	if s.tw == 0 {
		s.tw, s.th = b.Dx(), b.Dy()
	}
	slot := s.n % (s.cols * s.rows)
	if slot == 0 {
		if err := s.flushSheet(); err != nil {
			return err
		}
		s.sheet = image.NewRGBA(image.Rect(0, 0, s.cols*s.tw, s.rows*s.th))
	}
	x, y := (slot%s.cols)*s.tw, (slot/s.cols)*s.th
	draw.Draw(s.sheet, image.Rect(x, y, x+s.tw, y+s.th), img, b.Min, draw.Src)
	if len(s.cues) > 0 {
		s.cues[len(s.cues)-1].to = at
	}
	s.cues = append(s.cues, cue{from: at, to: at + s.interval, sheet: s.sheets, x: x, y: y, w: s.tw, h: s.th})
	s.n++
	return nil
}

// flushSheet writes the sheet being filled, cropped to its used rows.
func (s *storyboard) flushSheet() error {
	if s.sheet == nil {
		return nil
	}
	used := s.n - s.sheets*s.cols*s.rows
	rows := (used + s.cols - 1) / s.cols
	img := s.sheet.SubImage(image.Rect(0, 0, s.cols*s.tw, rows*s.th))
	if err := writeJPEG(filepath.Join(s.dir, spriteFile(s.sheets)), img, 75); err != nil {
		return err
	}
	s.sheet = nil
	s.sheets++
	return nil
}

// finish writes the last sheet and the WebVTT track; end is the video's
// duration (the last cue ends there). It reports whether a storyboard was
// written.
func (s *storyboard) finish(end time.Duration) (bool, error) {
	if s.n == 0 {
		return false, nil
	}
	if err := s.flushSheet(); err != nil {
		return false, err
	}
	if last := &s.cues[len(s.cues)-1]; end > last.from {
		last.to = end
	}
	return true, writeAtomically(filepath.Join(s.dir, StoryboardFile), func(w *bufio.Writer) error {
		w.WriteString("WEBVTT\n")
		for _, c := range s.cues {
			fmt.Fprintf(w, "\n%s --> %s\n%s#xywh=%d,%d,%d,%d\n", vttTime(c.from), vttTime(c.to), spriteFile(c.sheet), c.x, c.y, c.w, c.h)
		}
		return nil
	})
}

func vttTime(d time.Duration) string {
	ms := d.Milliseconds()
	return fmt.Sprintf("%02d:%02d:%02d.%03d", ms/3_600_000, ms/60_000%60, ms/1000%60, ms%1000)
}

func writeJPEG(path string, img image.Image, quality int) error {
	return writeAtomically(path, func(w *bufio.Writer) error {
		return jpeg.Encode(w, img, &jpeg.Options{Quality: quality})
	})
}

// writeAtomically writes a file through a temporary name, synced before
// the rename.
func writeAtomically(path string, fill func(*bufio.Writer) error) error {
	tmp := path + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	err = fill(w)
	if err == nil {
		err = w.Flush()
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(tmp, path)
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("writing %s: %w", filepath.Base(path), err)
	}
	return nil
}

// thumbnailInterval spaces about 100 thumbnails over d, between 1 and 10
// seconds apart.
func thumbnailInterval(d time.Duration) time.Duration {
	return min(max((d/100).Round(time.Second), time.Second), 10*time.Second)
}

// posterAt is where the poster frame is taken: a tenth into the video, at
// most 5 s in (opening black frames make poor posters).
func posterAt(d time.Duration) time.Duration {
	return min(d/10, 5*time.Second)
}
