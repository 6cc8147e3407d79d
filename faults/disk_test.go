//go:build faults

package faults

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hlsplaylist "github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// TestDiskFull: the origin's data dir is a small tmpfs (in a mount
// namespace of its own) that a filler file leaves a few MiB of; a live
// stream fills it. The origin doesn't crash, marks the segments it could
// not write as gaps, resumes once the filler is removed, and the finished
// recording is a valid playlist (gohlslib, an independent parser) that
// ffprobe plays.
func TestDiskFull(t *testing.T) {
	if out, err := exec.Command("unshare", "-rm", "true").CombinedOutput(); err != nil {
		// The table says so: a machine without user namespaces can't
		// mount a tmpfs of its own without root.
		record(row{Fault: "disk full on a small tmpfs", Load: "not run",
			Survived: fmt.Sprintf("not run: unshare -rm is not permitted here (%v %s)", err, strings.TrimSpace(string(out))), Lost: "-", NotRun: true})
		t.Skipf("this test needs a mount namespace (unshare -rm): %v %s", err, out)
	}
	const sizeMiB, freeMiB = 48, 3
	rs := redistest.Start(t)
	dir := t.TempDir()
	s := newShoal(t, rs, dir, false)
	s.wrap = []string{"unshare", "-rm", "sh", "-c",
		fmt.Sprintf(`mount -t tmpfs -o size=%dm tmpfs "$SHOAL_DATA_DIR" && dd if=/dev/zero of="$SHOAL_DATA_DIR/filler" bs=1M count=%d 2>/dev/null; exec "$@"`,
			sizeMiB, sizeMiB-freeMiB), "sh"}
	s.start()
	filler := filepath.Join(fmt.Sprintf("/proc/%d/root", s.pid()), dir, "filler")
	if _, err := os.Stat(filler); err != nil {
		t.Fatalf("the filler is not visible through /proc: %v", err)
	}
	ls := s.createStream("disk full")
	pub := publisher(t, s.rtmp+"/"+ls.StreamKey)
	s.waitFor("the stream live", 30*time.Second, func() bool { return s.status(ls.ID) == "live" })
	rec := func() string {
		_, b := s.get("/hls/"+ls.ID+"/source/recording.m3u8", "")
		return string(b)
	}
	// The disk fills: segments become gaps; the origin keeps answering.
	s.waitFor("a gap in the playlist", 90*time.Second, func() bool { return strings.Contains(rec(), "#EXT-X-GAP") })
	s.waitFor("three gaps", 30*time.Second, func() bool { return strings.Count(rec(), "#EXT-X-GAP") >= 3 })
	full := rec()
	gaps := strings.Count(full, "#EXT-X-GAP")
	written := strings.Count(full, "#EXTINF") - gaps
	if code, _ := s.get("/readyz", ""); code != 200 {
		t.Errorf("readyz %d with the disk full", code)
	}
	// Space returns: segments are written again.
	if err := os.Remove(filler); err != nil {
		t.Fatal(err)
	}
	freed := time.Now()
	total := strings.Count(full, "#EXTINF")
	s.waitFor("segments written after space returned", 30*time.Second, func() bool {
		r := rec()
		return strings.Count(r, "#EXTINF")-strings.Count(r, "#EXT-X-GAP") >= written+2 && strings.Count(r, "#EXTINF") > total+1
	})
	resumed := time.Since(freed)
	// End the broadcast; the recording is valid and plays.
	_ = pub.Process.Kill()
	s.waitFor("the recording finished", 30*time.Second, func() bool { return strings.Contains(rec(), "#EXT-X-ENDLIST") })
	final := rec()
	gaps = strings.Count(final, "#EXT-X-GAP")
	segs := strings.Count(final, "#EXTINF")
	_, perr := hlsplaylist.Unmarshal([]byte(final))
	dur, probeErr := probeDuration(s.http + "/hls/" + ls.ID + "/master.m3u8")
	alive := s.cmd != nil && func() bool {
		select {
		case <-s.exited:
			return false
		default:
			return true
		}
	}()
	t.Logf("%d segments, %d of them gaps; resumed %s after space returned; gohlslib: %v; ffprobe %.2f s %s; alive %v",
		segs, gaps, resumed.Round(100*time.Millisecond), perr, dur, probeErr, alive)
	pass := perr == nil && dur > 0 && alive && gaps > 0 && segs > gaps
	if perr != nil {
		t.Errorf("gohlslib refuses the recording: %v\n%s", perr, final)
	}
	if dur <= 0 {
		t.Errorf("ffprobe cannot play the recording: %s", probeErr)
	}
	if !alive {
		t.Error("the origin died")
	}
	record(row{
		Fault:    fmt.Sprintf("disk full: the data dir a %d MiB tmpfs with %d MiB left, a live stream filling it", sizeMiB, freeMiB),
		Load:     "a live 1-rendition stream until the disk is full, then the space freed",
		Survived: fmt.Sprintf("no crash; %d segments marked EXT-X-GAP while full, segments written again %.1f s after space returned; the recording (%d segments) parses (gohlslib) and plays (ffprobe, %.1f s)", gaps, resumed.Seconds(), segs, dur),
		Lost:     fmt.Sprintf("the media of the %d gap segments (nowhere to write it); nothing written before or after", gaps),
		Pass:     pass,
	})
}
