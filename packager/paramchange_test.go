package packager

import (
	"bytes"
	"encoding/hex"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// spsVGA is a real x264 SPS of 640x480 (testSPS is 320x240).
var spsVGA, _ = hex.DecodeString("6764001eacd940a03db0110000030001000003003c0f162d96")

// feedWithSPS publishes video only, frames [from, to) at 30 fps, a
// keyframe every 60 carrying sps.
func feedWithSPS(pub *stream.Publisher, from, to int, sps []byte) {
	for v := from; v < to; v++ {
		key := v%60 == 0
		payload := [][]byte{{0x41, 0x9a, byte(v)}}
		if key {
			payload = [][]byte{sps, testPPS, {0x65, 0x88, byte(v)}}
		}
		pub.Write(&media.AccessUnit{Track: 0, DTS: int64(v) * 3000, PTS: int64(v) * 3000, Keyframe: key, Payload: payload})
	}
}

// A source that changes resolution: every segment, with its
// initialization section, carries only the parameter sets it was encoded
// with. Before, the segment just before the change was written with the
// new SPS (TS always; fMP4 when its initialization section was not
// written yet), and players decoded it as the new size. Split at frame
// 60, the change comes at the end of the first segment. (Found by a
// review helper.)
func TestSegmentsKeepTheirParameterSets(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		format string
		split  int
	}{{FormatMPEGTS, 120}, {FormatFMP4, 120}, {FormatFMP4, 60}} {
		t.Run(c.format+"-"+string(rune('0'+c.split/60)), func(t *testing.T) {
			t.Parallel()
			r := newRig(t, c.format, 0)
			pub, err := r.hub.Publish(media.StreamKey{Name: "res", Rendition: media.RenditionSource}, tracks[:1])
			if err != nil {
				t.Fatal(err)
			}
			feedWithSPS(pub, 0, c.split, testSPS)
			feedWithSPS(pub, c.split, 240, spsVGA)
			pub.Close()
			dir := filepath.Join(r.dir, "res", "source")
			index := filepath.Join(dir, "index.m3u8")
			waitFor(t, "ENDLIST", func() bool {
				b, _ := os.ReadFile(index)
				return strings.Contains(string(b), "#EXT-X-ENDLIST")
			})
			mapURI := ""
			segs := segments(readPlaylist(t, index))
			if len(segs) != 4 {
				t.Fatalf("%d segments, want 4", len(segs))
			}
			for i, s := range segs {
				b, err := os.ReadFile(filepath.Join(dir, s.URI))
				if err != nil {
					t.Fatal(err)
				}
				if s.Map != nil {
					mapURI = s.Map.URI
				}
				if mapURI != "" {
					init, err := os.ReadFile(filepath.Join(dir, mapURI))
					if err != nil {
						t.Fatal(err)
					}
					b = append(init, b...)
				}
				old := i < c.split/60
				if bytes.Contains(b, testSPS) != old || bytes.Contains(b, spsVGA) == old {
					t.Errorf("segment %d (%s): 320x240 SPS %v, 640x480 SPS %v; want only the %s one", i, s.URI,
						bytes.Contains(b, testSPS), bytes.Contains(b, spsVGA), map[bool]string{true: "320x240", false: "640x480"}[old])
				}
			}
		})
	}
}
