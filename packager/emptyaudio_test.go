package packager

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-video/shoal/internal/media"
)

// A publication whose audio track never carries a frame (a VOD source
// whose audio does not decode at all) still ends with a master playlist:
// one that names no audio group, whether the rendition that declared the
// audio ends last (its end ends the audio group) or first (the stream's
// end does).
func TestEmptyAudioGroupLeftOutOfMaster(t *testing.T) {
	t.Parallel()
	for _, ownerLast := range []bool{true, false} {
		r := newRig(t, FormatFMP4, 0)
		id := "ea"
		hi, _ := r.hub.Publish(media.StreamKey{Name: id, Rendition: "720p"}, tracks) // declares the audio
		lo, _ := r.hub.Publish(media.StreamKey{Name: id, Rendition: "360p"}, tracks[:1])
		feedVideo(hi, 0, 120, 60, nil)
		feedVideo(lo, 0, 120, 60, nil)
		first, last := lo, hi
		if !ownerLast {
			first, last = hi, lo
		}
		first.Close()
		waitFor(t, "the first rendition to finish", func() bool {
			for _, name := range []string{"720p", "360p"} {
				b, _ := os.ReadFile(filepath.Join(r.dir, id, name, "index.m3u8"))
				if strings.Contains(string(b), "#EXT-X-ENDLIST") {
					return true
				}
			}
			return false
		})
		last.Close()
		master := filepath.Join(r.dir, id, "master.m3u8")
		waitFor(t, "the master playlist", func() bool {
			b, _ := os.ReadFile(master)
			return strings.Contains(string(b), "720p/index.m3u8") && strings.Contains(string(b), "360p/index.m3u8")
		})
		b, _ := os.ReadFile(master)
		if strings.Contains(string(b), "TYPE=AUDIO") || strings.Contains(string(b), "mp4a") {
			t.Errorf("owner last %v: the master playlist names the empty audio group:\n%s", ownerLast, b)
		}
	}
}
