package playlist

import (
	"math"
	"testing"
	"time"

	hlsplaylist "github.com/bluenviron/gohlslib/v2/pkg/playlist"
)

// The playlist writer's output, for any segment durations, discontinuities,
// init changes and parts, is read back by an independent parser (gohlslib)
// with the same segments, durations, flags (gaps included) and a target duration no
// segment exceeds.
func FuzzEncodeMedia(f *testing.F) {
	f.Add([]byte{20, 0, 20, 1, 15, 2, 24, 0}, uint8(3), true)
	f.Add([]byte{1, 3, 255, 0}, uint8(0), false)
	f.Add([]byte{20, 0, 20, 12, 20, 9, 20, 0}, uint8(0), true) // gaps, one with parts
	f.Add([]byte{}, uint8(1), true)
	f.Fuzz(func(t *testing.T, spec []byte, window uint8, parts bool) {
		var m Media
		m.Kind, m.Version, m.TargetDuration, m.Window, m.FirstSeq = Live, 7, 2, int(window%8), 7
		init := "init-0.mp4"
		for i := 0; i+1 < len(spec) && len(m.Segments) < 64; i += 2 {
			d, flags := (float64(spec[i])+1)/10, spec[i+1] // the packager never writes an empty segment
			if flags&2 != 0 {
				init = "init-" + string(rune('a'+i%26)) + ".mp4"
			}
			s := Segment{URI: "s-" + string(rune('a'+i%26)) + ".m4s", Duration: d, Discontinuity: flags&1 != 0, Init: init, Gap: flags&8 != 0}
			if parts && flags&4 != 0 && d > 0 {
				s.Parts = []Part{{URI: "p-" + string(rune('a'+i%26)) + ".m4s", Duration: d, Independent: true}}
			}
			m.Segments = append(m.Segments, s)
		}
		if parts {
			m.PartTarget, m.Hint = 0.5, "next.m4s"
		}
		out, err := EncodeMedia(m)
		if err != nil {
			t.Fatal(err)
		}
		if len(m.Segments) == 0 {
			return // gohlslib refuses playlists without segments
		}
		pl, err := hlsplaylist.Unmarshal(out)
		if err != nil {
			t.Fatalf("gohlslib: %v\n%s", err, out)
		}
		got := pl.(*hlsplaylist.Media)
		win := m.Segments
		if m.Window > 0 && len(win) > m.Window {
			win = win[len(win)-m.Window:]
		}
		if len(got.Segments) != len(win) {
			t.Fatalf("%d segments read back, %d written\n%s", len(got.Segments), len(win), out)
		}
		if got.MediaSequence != int(m.FirstSeq)+len(m.Segments)-len(win) {
			t.Fatalf("media sequence %d\n%s", got.MediaSequence, out)
		}
		for i, s := range win {
			g := got.Segments[i]
			if g.URI != s.URI || g.Discontinuity != s.Discontinuity || g.Gap != s.Gap ||
				math.Abs(g.Duration.Seconds()-s.Duration) > 0.0005 {
				t.Fatalf("segment %d: wrote %+v, read %+v\n%s", i, s, g, out)
			}
			if time.Duration(got.TargetDuration)*time.Second < time.Duration(math.Round(s.Duration))*time.Second {
				t.Fatalf("EXTINF %.3f rounds above the target %d", s.Duration, got.TargetDuration)
			}
			if len(g.Parts) != len(s.Parts) {
				t.Fatalf("segment %d: %d parts read, %d written", i, len(g.Parts), len(s.Parts))
			}
		}
		if parts && (got.PreloadHint == nil || got.PartInf == nil || got.ServerControl == nil || !got.ServerControl.CanBlockReload) {
			t.Fatalf("LL-HLS tags lost\n%s", out)
		}
	})
}
