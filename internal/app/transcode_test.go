package app

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/formats/fmp4"
	"github.com/grafov/m3u8"
)

// A 720p RTMP publish becomes an aligned 720p/480p/360p ladder, live and as
// a recording.
func TestLiveLadderEndToEnd(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_TRANSCODE_MAX_LADDERS=1", "SHOAL_TRANSCODE_HWACCEL=none", "SHOAL_TRANSCODE_PRESET=ultrafast")
	ls := n.createStream("ladder")
	file := clipSized(t, 1280, 720, 10)
	pub := publish(t, file, n.rtmp+"/"+ls.StreamKey)
	rungs := map[string]string{"720p": "h264,1280,720", "480p": "h264,854,480", "360p": "h264,640,360"}
	n.waitFor("a master playlist with three renditions", 20*time.Second, func() bool {
		m := n.playlist(ls.ID, "master.m3u8")
		return strings.Contains(m, "720p/index.m3u8") && strings.Contains(m, "480p/index.m3u8") && strings.Contains(m, "360p/index.m3u8")
	})
	master := n.playlist(ls.ID, "master.m3u8")
	for _, want := range []string{"RESOLUTION=1280x720", "RESOLUTION=854x480", "RESOLUTION=640x360", `AUDIO="audio"`, "mp4a.40.2"} {
		if !strings.Contains(master, want) {
			t.Errorf("master lacks %s:\n%s", want, master)
		}
	}
	if strings.Contains(master, "source/") {
		t.Errorf("the source is served next to the ladder without passthrough:\n%s", master)
	}
	if got := probeVideo(t, n.http+"/hls/"+ls.ID+"/480p/index.m3u8"); got != rungs["480p"] {
		t.Errorf("live 480p = %q", got)
	}
	if err := pub.Wait(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	n.waitFor("every rendition to end", 20*time.Second, func() bool {
		for r := range rungs {
			if !strings.Contains(n.playlist(ls.ID, r+"/index.m3u8"), "#EXT-X-ENDLIST") {
				return false
			}
		}
		return strings.Contains(n.playlist(ls.ID, "audio/index.m3u8"), "#EXT-X-ENDLIST")
	})
	starts := map[string][]int64{}
	for r, want := range rungs {
		url := n.http + "/hls/" + ls.ID + "/" + r + "/index.m3u8"
		if got := probeVideo(t, url); got != want {
			t.Errorf("%s = %q, want %q", r, got, want)
		}
		if d := probeDuration(t, url); d < 9 || d > 11 {
			t.Errorf("%s recording lasts %.3f s, want 10 ± 1", r, d)
		}
		starts[r] = segmentStarts(t, n, ls.ID, r)
	}
	ref := starts["720p"]
	if len(ref) < 4 {
		t.Fatalf("720p has %d segments, want about 5", len(ref))
	}
	for r, s := range starts {
		if len(s) != len(ref) {
			t.Errorf("%s has %d segments, 720p %d", r, len(s), len(ref))
			continue
		}
		for i := range s {
			if s[i] != ref[i] {
				t.Errorf("segment %d of %s starts at PTS %d, of 720p at %d", i, r, s[i], ref[i])
			}
		}
	}
	t.Logf("segment start PTS (90 kHz), identical in every rendition: %v", ref)
	// EXT-X-PROGRAM-DATE-TIME: the ingest time of each segment's source
	// frame, the same in every rung, the audio group within one AAC frame.
	pdt := func(r string) []time.Time {
		pl, _, err := m3u8.DecodeFrom(strings.NewReader(n.playlist(ls.ID, r+"/index.m3u8")), true)
		if err != nil {
			t.Fatal(err)
		}
		var out []time.Time
		for _, seg := range pl.(*m3u8.MediaPlaylist).Segments {
			if seg != nil {
				out = append(out, seg.ProgramDateTime)
			}
		}
		return out
	}
	refTimes := pdt("720p")
	for _, r := range []string{"480p", "360p", "audio"} {
		times := pdt(r)
		for i := 0; i < min(len(times), len(refTimes)); i++ {
			d := times[i].Sub(refTimes[i])
			if r != "audio" && d != 0 || d < -25*time.Millisecond || d > 25*time.Millisecond {
				t.Errorf("segment %d: %s at %s, 720p at %s", i, r, times[i].Format(time.RFC3339Nano), refTimes[i].Format(time.RFC3339Nano))
			}
		}
	}
}

// segmentStarts returns the presentation time of the first sample of every
// segment of a rendition, read from the fMP4 fragments themselves.
func segmentStarts(t *testing.T, n *node, id, rendition string) []int64 {
	t.Helper()
	pl, _, err := m3u8.DecodeFrom(strings.NewReader(n.playlist(id, rendition+"/index.m3u8")), true)
	if err != nil {
		t.Fatal(err)
	}
	var out []int64
	for _, seg := range pl.(*m3u8.MediaPlaylist).Segments {
		if seg == nil {
			continue
		}
		code, body := n.get("/hls/"+id+"/"+rendition+"/"+seg.URI, "")
		if code != 200 {
			t.Fatalf("%s/%s: %d", rendition, seg.URI, code)
		}
		var parts fmp4.Parts
		if err := parts.Unmarshal(body); err != nil || len(parts) == 0 || len(parts[0].Tracks) == 0 || len(parts[0].Tracks[0].Samples) == 0 {
			t.Fatalf("%s/%s: not an fMP4 fragment: %v", rendition, seg.URI, err)
		}
		tr := parts[0].Tracks[0]
		out = append(out, int64(tr.BaseTime)+int64(tr.Samples[0].PTSOffset))
	}
	return out
}

// videoPacketHashes returns the MD5 of every video packet of file, in order.
func videoPacketHashes(t *testing.T, file string) []string {
	t.Helper()
	// Only stdout: ffprobe reports the decoding errors of corrupt packets on
	// stderr.
	out, err := exec.Command("ffprobe", "-v", "quiet", "-select_streams", "v", "-show_data_hash", "md5",
		"-show_entries", "packet=data_hash", "-of", "csv=p=0", file).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", file, err)
	}
	return strings.Fields(string(out))
}

// A publisher whose video is full of corrupted frames (keyframes included)
// keeps its ladder: the transcoder skips what it cannot decode, nothing
// falls back, and the recording is whole.
func TestCorruptVideoKeepsTheLadder(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_TRANSCODE_MAX_LADDERS=1", "SHOAL_TRANSCODE_HWACCEL=none", "SHOAL_TRANSCODE_PRESET=ultrafast")
	ls := n.createStream("corrupt")
	src := clipSized(t, 640, 360, 6)
	bad := filepath.Join(t.TempDir(), "corrupt.flv")
	// The noise filter overwrites about one byte in 200 inside video
	// packets: every frame of this clip (about 8 KB each) is hit, keyframes
	// included, and some NAL unit lengths too (ingest drops those
	// messages), while the audio, the FLV tags and the sequence header stay
	// intact.
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", src, "-c", "copy", "-bsf:v", "noise=amount=200", bad).CombinedOutput(); err != nil {
		t.Fatalf("corrupting the clip: %v\n%s", err, out)
	}
	before, after := videoPacketHashes(t, src), videoPacketHashes(t, bad)
	if len(before) != len(after) || len(before) < 170 {
		t.Fatalf("%d video packets before corruption, %d after", len(before), len(after))
	}
	corrupted := 0
	for i := range before {
		if before[i] != after[i] {
			corrupted++
		}
	}
	if corrupted < len(before)/2 {
		t.Fatalf("only %d of %d video packets corrupted", corrupted, len(before))
	}
	t.Logf("%d of %d video packets corrupted", corrupted, len(before))

	pub := publish(t, bad, n.rtmp+"/"+ls.StreamKey)
	if err := pub.Wait(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	n.waitFor("ENDLIST on 360p and audio", 30*time.Second, func() bool {
		return strings.Contains(n.playlist(ls.ID, "360p/index.m3u8"), "#EXT-X-ENDLIST") &&
			strings.Contains(n.playlist(ls.ID, "audio/index.m3u8"), "#EXT-X-ENDLIST")
	})
	master := n.playlist(ls.ID, "master.m3u8")
	if !strings.Contains(master, "360p/index.m3u8") || strings.Contains(master, "copy/") || strings.Contains(master, "source/") {
		t.Errorf("master playlist is not the 360p ladder:\n%s", master)
	}
	if got := probeVideo(t, n.http+"/hls/"+ls.ID+"/360p/index.m3u8"); got != "h264,640,360" {
		t.Errorf("360p = %q", got)
	}
	for _, rel := range []string{"master.m3u8", "360p/index.m3u8"} {
		d := probeDuration(t, n.http+"/hls/"+ls.ID+"/"+rel)
		if d < 4.5 || d > 7.5 {
			t.Errorf("%s lasts %.3f s, want 6 ± 1.5", rel, d)
		}
		t.Logf("%s lasts %.3f s", rel, d)
	}
	if strings.Contains(n.stderr.String(), "transcoding failed") {
		t.Errorf("the ladder fell back on corrupt input")
	}
}

// flvWithHeaders encodes seconds of testsrc2 + sine at w x h like clipSized,
// but with SPS and PPS repeated before every keyframe, as an encoder that
// can change resolution sends them.
func flvWithHeaders(t *testing.T, dir string, w, h, seconds int) string {
	t.Helper()
	path := filepath.Join(dir, fmt.Sprintf("%dx%d.flv", w, h))
	out, err := exec.Command("ffmpeg", "-v", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=30", w, h),
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "60", "-keyint_min", "60", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
		"-x264-params", "repeat-headers=1",
		"-c:a", "aac", "-b:a", "96k", "-f", "flv", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

// A publisher that switches from 640x360 to 320x240 midway keeps its ladder
// (picked from the first size): every rung gets a new initialization
// section after the switch and the recording stays whole.
func TestResolutionChangeMidStream(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_TRANSCODE_MAX_LADDERS=1", "SHOAL_TRANSCODE_HWACCEL=none", "SHOAL_TRANSCODE_PRESET=ultrafast",
		"SHOAL_TRANSCODE_LADDER=360p:700k,240p:400k")
	ls := n.createStream("resize")
	dir := t.TempDir()
	a, b := flvWithHeaders(t, dir, 640, 360, 4), flvWithHeaders(t, dir, 320, 240, 4)
	list := filepath.Join(dir, "list.txt")
	if err := os.WriteFile(list, []byte("file '"+a+"'\nfile '"+b+"'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	joined := filepath.Join(dir, "joined.flv")
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", list, "-c", "copy", joined).CombinedOutput(); err != nil {
		t.Fatalf("concat: %v\n%s", err, out)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v", "-show_entries", "frame=width,height", "-of", "csv=p=0", joined).CombinedOutput()
	if err != nil {
		t.Fatalf("ffprobe: %v\n%s", err, out)
	}
	var sizes []string
	for _, line := range strings.Split(string(out), "\n") {
		s := strings.TrimSuffix(strings.TrimSpace(line), ",")
		if s != "" && (len(sizes) == 0 || sizes[len(sizes)-1] != s) {
			sizes = append(sizes, s)
		}
	}
	if strings.Join(sizes, " ") != "640,360 320,240" {
		t.Fatalf("the joined clip's frames are %v, want 640x360 then 320x240", sizes)
	}

	pub := publish(t, joined, n.rtmp+"/"+ls.StreamKey)
	if err := pub.Wait(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	rungs := []string{"360p", "240p"}
	n.waitFor("ENDLIST everywhere", 30*time.Second, func() bool {
		for _, r := range append(rungs, "audio") {
			if !strings.Contains(n.playlist(ls.ID, r+"/index.m3u8"), "#EXT-X-ENDLIST") {
				return false
			}
		}
		return true
	})
	master := n.playlist(ls.ID, "master.m3u8")
	for _, r := range rungs {
		if !strings.Contains(master, r+"/index.m3u8") {
			t.Errorf("master lacks %s:\n%s", r, master)
		}
	}
	d := probeDuration(t, n.http+"/hls/"+ls.ID+"/master.m3u8")
	if d < 6.5 || d > 9.5 {
		t.Errorf("recording lasts %.3f s, want 8 ± 1.5", d)
	}
	t.Logf("master.m3u8 lasts %.3f s", d)
	for _, r := range rungs {
		pl := n.playlist(ls.ID, r+"/index.m3u8")
		if !strings.Contains(pl, "#EXT-X-DISCONTINUITY") && strings.Count(pl, "#EXT-X-MAP") < 2 {
			t.Errorf("%s has no new initialization section after the size change:\n%s", r, pl)
		}
		d := probeDuration(t, n.http+"/hls/"+ls.ID+"/"+r+"/index.m3u8")
		if d < 6.5 || d > 9.5 {
			t.Errorf("%s lasts %.3f s, want 8 ± 1.5", r, d)
		}
		t.Logf("%s lasts %.3f s", r, d)
	}
}

// Stopping the node mid-broadcast ends every rendition properly: the
// sources end first, the ladders flush and end their renditions, and every
// playlist gets ENDLIST.
func TestShutdownFinishesTheLadder(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_TRANSCODE_MAX_LADDERS=1", "SHOAL_TRANSCODE_HWACCEL=none", "SHOAL_TRANSCODE_PRESET=ultrafast",
		"SHOAL_TRANSCODE_LADDER=360p:700k,240p:400k")
	ls := n.createStream("shutdown")
	publish(t, clip(t, 10), n.rtmp+"/"+ls.StreamKey)
	n.waitFor("both renditions", 20*time.Second, func() bool {
		m := n.playlist(ls.ID, "master.m3u8")
		return strings.Contains(m, "360p/index.m3u8") && strings.Contains(m, "240p/index.m3u8")
	})
	n.stop()
	code := <-n.done
	n.done <- code // for the cleanup
	for _, r := range []string{"360p", "240p", "audio"} {
		b, err := os.ReadFile(filepath.Join(n.dataDir, "hls", ls.ID, r, "index.m3u8"))
		if err != nil || !strings.Contains(string(b), "#EXT-X-ENDLIST") {
			t.Errorf("%s/index.m3u8 after shutdown: %v\n%s", r, err, b)
		}
	}
}
