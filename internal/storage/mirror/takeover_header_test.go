package mirror_test

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestTargetRaiseIsNotATakeOver: the packager rewrites a running
// recording's target duration when it rises, so the bucket's earlier copy
// is then not a byte prefix of the finished one; that is not another
// origin's takeover, and the origin's own finished recording is uploaded.
// Found by a review helper.
func TestTargetRaiseIsNotATakeOver(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	e.run()
	const id = "stream9rev"
	h2 := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:EVENT\n"
	h3 := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:3\n#EXT-X-PLAYLIST-TYPE:EVENT\n"
	e.write(id+"/720p/s0.m4s", "seg 0")
	e.write(id+"/720p/recording.m3u8", h2+"#EXTINF:2,\ns0.m4s\n")
	e.waitFor("the first uploads", 20*time.Second, func() bool { return e.m.Pending() == 0 })
	e.write(id+"/720p/s1.m4s", "seg 1")
	final := h3 + "#EXTINF:2,\ns0.m4s\n#EXTINF:2.6,\ns1.m4s\n#EXT-X-ENDLIST\n"
	e.write(id+"/720p/recording.m3u8", final)
	e.m.Ended(id)
	e.waitFor("the spool to empty", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.dir, id))
		return os.IsNotExist(err)
	})
	if got, _ := e.object(id + "/720p/recording.m3u8"); got != final {
		t.Fatalf("this origin's own finished recording was not uploaded: the bucket has %q", got)
	}
}
