package app

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// pausedClip returns an FLV file of 20 s of sine with testsrc2 video that
// pauses from 4 s to 14 s, as a phone app sent to the background sends it:
// H.264 keyframes at 0, 2, 14, 16 and 18 s, AAC throughout.
func pausedClip(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "pause.flv")
	cmd := exec.Command("ffmpeg", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "20", "-vf", "select='not(between(t,4,13.99))'", "-fps_mode", "passthrough", "-force_key_frames", "0,2,14,16,18",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "600", "-sc_threshold", "0", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "96k", "-f", "flv", path)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("making the paused clip with ffmpeg: %v\n%s", err, out)
	}
	return path
}

// A camera that pauses while its sound goes on, end to end: ffmpeg
// publishes 4 s of video, 10 s of sound alone and 6 s more of both over
// RTMP; the audio playlist goes on during the pause, the video playlist
// lists it as gaps, EXT-X-TARGETDURATION stays 2 in both, and hls.js in
// Chromium, watching live, plays on past the pause.
func TestVideoPauseEndToEnd(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("pause")
	// As a phone sends it: the sound as it comes (ffmpeg's muxer would
	// hold it up to 10 s waiting for video to interleave with).
	pub := startClient(t, exec.Command("ffmpeg", "-v", "error", "-re", "-i", pausedClip(t), "-c", "copy",
		"-max_interleave_delta", "100000", "-f", "flv", ls.Ingest.RTMPURL+"/"+ls.StreamKey))
	n.waitFor("the master playlist", 15*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == 200
	})
	br := browser.Start(t)
	tab := br.NewTab(t)
	if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
		t.Fatal(err)
	}
	const state = `JSON.stringify({status: document.body.dataset.status, t: (document.querySelector('video') || {}).currentTime,
		buffered: (() => { const v = document.querySelector('video'); if (!v) return []; const r = [];
			for (let i = 0; i < v.buffered.length; i++) r.push([v.buffered.start(i), v.buffered.end(i)]); return r })()})`
	if err := tab.WaitFor(30*time.Second, `(() => { const v = document.querySelector('video'); return !!v && v.currentTime > 1 })()`, state); err != nil {
		t.Fatal(err)
	}
	// The player plays on past the pause (timeline time 14 s on).
	if err := tab.WaitFor(45*time.Second, `(() => { const v = document.querySelector('video'); return !!v && v.currentTime > 15 && !v.paused })()`, state); err != nil {
		t.Fatal(err)
	}
	if err := pub.Wait(); err != nil {
		t.Fatalf("ffmpeg publish: %v", err)
	}
	n.waitFor("ENDLIST", 20*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
	for _, rel := range []string{"source/recording.m3u8", "audio/recording.m3u8"} {
		pl := n.playlist(ls.ID, rel)
		if !strings.Contains(pl, "#EXT-X-TARGETDURATION:2\n") {
			t.Errorf("%s: target duration changed\n%s", rel, pl)
		}
		gaps := strings.Count(pl, "#EXT-X-GAP")
		if rel == "source/recording.m3u8" && (gaps < 4 || gaps > 6) || rel == "audio/recording.m3u8" && gaps != 0 {
			t.Errorf("%s: %d gaps\n%s", rel, gaps, pl)
		}
		for _, line := range strings.Split(pl, "\n") {
			if d, ok := strings.CutPrefix(line, "#EXTINF:"); ok {
				if v, _ := strconv.ParseFloat(strings.TrimSuffix(d, ","), 64); v > 2.5 {
					t.Errorf("%s: a segment of %.3f s\n%s", rel, v, pl)
				}
			}
		}
	}
	// The audio was segmented while the video was paused: its segment
	// from 8 s on was written before the video's first after the pause.
	dir := filepath.Join(n.dataDir, "hls", ls.ID)
	audioFile := segmentFrom(t, dir, "audio", 8, false)
	videoFile := segmentFrom(t, dir, "source", 4, true)
	a, errA := os.Stat(audioFile)
	v, errV := os.Stat(videoFile)
	if errA != nil || errV != nil || !a.ModTime().Before(v.ModTime()) {
		t.Errorf("the audio segment %s (%v, %v) was not written before the video segment %s (%v, %v)",
			filepath.Base(audioFile), a, errA, filepath.Base(videoFile), v, errV)
	}
	var raw string
	_ = tab.Run(5*time.Second, chromedp.Evaluate(state, &raw))
	t.Logf("player: %s", raw)
}

// segmentFrom is the file of the first segment of rendition's recording
// that starts at or after from seconds (and, with afterGap, follows a gap).
func segmentFrom(t *testing.T, dir, rendition string, from float64, afterGap bool) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(dir, rendition, "recording.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	at, gap, sawGap := 0.0, false, false
	var d float64
	for _, line := range strings.Split(string(b), "\n") {
		switch {
		case line == "#EXT-X-GAP":
			gap, sawGap = true, true
		case strings.HasPrefix(line, "#EXTINF:"):
			d, _ = strconv.ParseFloat(strings.TrimSuffix(strings.TrimPrefix(line, "#EXTINF:"), ","), 64)
		case line != "" && !strings.HasPrefix(line, "#"):
			if !gap && at >= from-0.05 && (!afterGap || sawGap) {
				return filepath.Join(dir, rendition, line)
			}
			at += d
			gap = false
		}
	}
	t.Fatalf("%s: no segment from %.0f s\n%s", rendition, from, b)
	return ""
}
