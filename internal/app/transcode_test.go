package app

import (
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
