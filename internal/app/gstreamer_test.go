package app

import (
	"context"
	"encoding/json"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/shoal-video/shoal/internal/testutil/browser"
)

// gstPublish runs a GStreamer pipeline publishing over RTMP with
// rtmp2sink: videotestsrc through x264enc (with caps, when given, after
// it) and audiotestsrc through avenc_aac, as a GStreamer user would write
// it. frames video frames at 30 fps and audioFrames AAC frames (1024
// samples at 48 kHz) are sent in real time.
//
// sent, when not "", receives a copy of the FLV stream as it leaves the
// muxer: what GStreamer sent, to compare with what was recorded (a loaded
// machine makes a live GStreamer pipeline start its audio late or drop
// frames of its own).
func gstPublish(t *testing.T, url, x264Caps string, frames, audioFrames int, sent ...string) *exec.Cmd {
	t.Helper()
	if _, err := exec.LookPath("gst-launch-1.0"); err != nil {
		t.Fatal("gst-launch-1.0 is missing: run scripts/install-deps.sh (GStreamer is a test client)")
	}
	video := "videotestsrc is-live=true num-buffers=" + strconv.Itoa(frames) + " ! video/x-raw,framerate=30/1,width=320,height=240 ! x264enc tune=zerolatency key-int-max=60"
	if x264Caps != "" {
		video += " ! " + x264Caps
	}
	sink := "rtmp2sink location=" + url
	if len(sent) > 0 && sent[0] != "" {
		sink = "tee name=t ! queue ! " + sink + " t. ! queue ! filesink location=" + sent[0]
	}
	pipeline := video + " ! h264parse ! flvmux name=mux streamable=true ! " + sink +
		" audiotestsrc is-live=true wave=sine num-buffers=" + strconv.Itoa(audioFrames) +
		" samplesperbuffer=1024 ! audio/x-raw,rate=48000,channels=2 ! avenc_aac ! aacparse ! mux."
	return startClient(t, exec.Command("gst-launch-1.0", append([]string{"-q", "-e"}, strings.Fields(pipeline)...)...))
}

// ffprobeField runs ffprobe on url and returns its trimmed output.
func ffprobeField(t *testing.T, url string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "ffprobe", append(append([]string{"-v", "error"}, args...), url)...).Output()
	if err != nil {
		t.Fatalf("ffprobe %v %s: %v", args, url, err)
	}
	return strings.TrimSpace(string(out))
}

// GStreamer with avenc_aac (equal millisecond timestamps on some AAC
// frames) and x264enc constrained to High 8-bit: every video frame and
// every audio frame reaches the recording, the audio starts with the video,
// and nothing was dropped as going backwards.
func TestGStreamerPublisherLosesNothing(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("gstreamer")
	const frames, audioFrames = 240, 375 // 8 s of each
	sent := filepath.Join(t.TempDir(), "sent.flv")
	pub := gstPublish(t, ls.Ingest.RTMPURL+"/"+ls.StreamKey, "video/x-h264,profile=high", frames, audioFrames, sent)
	if err := pub.Wait(); err != nil {
		t.Fatalf("gst-launch-1.0: %v", err)
	}
	n.waitFor("the recording to end", 30*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
	n.waitFor("the audio group to end", 10*time.Second, func() bool {
		return strings.Contains(n.playlist(ls.ID, "audio/index.m3u8"), "#EXT-X-ENDLIST")
	})
	base := n.http + "/hls/" + ls.ID + "/"
	count := func(url string) int {
		s := ffprobeField(t, url, "-count_packets", "-show_entries", "stream=nb_read_packets", "-of", "csv=p=0")
		v, err := strconv.Atoi(strings.Split(s, "\n")[0])
		if err != nil {
			t.Fatalf("packet count %q", s)
		}
		return v
	}
	// What GStreamer sent (its copy of the FLV stream): packet times.
	times := func(stream string, field ...string) []float64 {
		entry := "packet=pts_time"
		if len(field) > 0 {
			entry = "packet=" + field[0]
		}
		s := ffprobeField(t, sent, "-select_streams", stream, "-show_entries", entry, "-of", "csv=p=0")
		var out []float64
		for _, l := range strings.Fields(s) {
			v, err := strconv.ParseFloat(strings.TrimSuffix(l, ","), 64)
			if err != nil {
				t.Fatalf("packet time %q", l)
			}
			out = append(out, v)
		}
		return out
	}
	sentVideo, sentAudio := times("v:0"), times("a:0")
	if len(sentVideo) == 0 || len(sentAudio) == 0 {
		t.Fatalf("GStreamer sent %d video and %d audio packets", len(sentVideo), len(sentAudio))
	}
	// A loaded machine can make flvmux itself send a video frame whose
	// decoding time is not after the last one's: the ingest drops those
	// (and says so), and only those.
	backwards, last := 0, -1.0
	for _, d := range times("v:0", "dts_time") {
		if d <= last {
			backwards++
			continue
		}
		last = d
	}
	if got := count(base + "source/index.m3u8"); got != len(sentVideo)-backwards {
		t.Errorf("the recording holds %d video frames, GStreamer sent %d (%d of them not after the one before)", got, len(sentVideo), backwards)
	}
	// The audio starts with the video: every AAC frame GStreamer sent from
	// the first video frame on (FLV's milliseconds) is recorded, but for
	// the last (avenc_aac's tail) when it ends after the last video frame.
	v0 := sentVideo[0]
	var sentFrom []float64
	for _, a := range sentAudio {
		if a >= v0-0.001 {
			sentFrom = append(sentFrom, a)
		}
	}
	if got := count(base + "audio/index.m3u8"); got < len(sentFrom)-1 || got > len(sentFrom) {
		t.Errorf("the recording holds %d AAC frames, GStreamer sent %d from the first video frame on (%d in all)", got, len(sentFrom), len(sentAudio))
	}
	if len(sentAudio) < audioFrames {
		t.Logf("GStreamer sent %d of its %d AAC frames (a loaded machine)", len(sentAudio), audioFrames)
	}
	first := func(url string) float64 {
		s := ffprobeField(t, url, "-show_entries", "packet=pts_time", "-read_intervals", "%+#1", "-of", "csv=p=0")
		v, err := strconv.ParseFloat(strings.Split(s, "\n")[0], 64)
		if err != nil {
			t.Fatalf("first packet time %q", s)
		}
		return v
	}
	v, a := first(base+"source/index.m3u8"), first(base+"audio/index.m3u8")
	if d := (a - v) - (sentFrom[0] - v0); d < -1.0/30 || d > 1.0/30 {
		t.Errorf("the first audio packet is at %.3f s, the first video frame at %.3f s; GStreamer sent them %.3f s apart: more than one frame off",
			a, v, sentFrom[0]-v0)
	}
	if log := n.stderr.String(); strings.Contains(log, "went backwards") && backwards == 0 {
		t.Errorf("frames were dropped as going backwards, GStreamer sent none such:\n%s", log)
	}
	if backwards > 0 {
		t.Logf("GStreamer sent %d video frames not after the one before (a loaded machine)", backwards)
	}
}

// GStreamer's x264enc as it comes sends High 4:4:4 Predictive 10-bit,
// which no browser decodes: without a transcoder it is refused with a
// clear reason; with one it is transcoded and plays in Chromium.
func TestGStreamerHigh444(t *testing.T) {
	t.Parallel()
	t.Run("refused without a transcoder", func(t *testing.T) {
		t.Parallel()
		n := startNode(t)
		ls := n.createStream("444")
		pub := gstPublish(t, ls.Ingest.RTMPURL+"/"+ls.StreamKey, "", 300, 470)
		defer pub.Process.Kill()
		var reason string
		n.waitFor("the reason in the API", 20*time.Second, func() bool {
			reason = n.streamError(ls.ID)
			return reason != ""
		})
		if !strings.Contains(reason, "4:4:4") && !strings.Contains(reason, "10-bit") {
			t.Errorf("reason %q does not say what is wrong", reason)
		}
		if code, body := n.get("/hls/"+ls.ID+"/master.m3u8", ""); code == 200 {
			t.Errorf("a master playlist was published for a source no browser plays:\n%s", body)
		}
		t.Logf("refused: %s", reason)
	})
	t.Run("transcoded and played", func(t *testing.T) {
		t.Parallel()
		n := startNode(t, "SHOAL_TRANSCODE_MAX_LADDERS=1", "SHOAL_TRANSCODE_HWACCEL=none", "SHOAL_TRANSCODE_PRESET=ultrafast")
		ls := n.createStream("444 transcoded")
		pub := gstPublish(t, ls.Ingest.RTMPURL+"/"+ls.StreamKey, "", 900, 1410) // 30 s
		defer pub.Process.Kill()
		n.waitFor("the master playlist", 30*time.Second, func() bool {
			code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
			return code == 200
		})
		master := n.playlist(ls.ID, "master.m3u8")
		if strings.Contains(master, "avc1.f4") || strings.Contains(master, "source/") {
			t.Fatalf("the 4:4:4 source is served as it came:\n%s", master)
		}
		b := browser.Start(t)
		tab := b.NewTab(t)
		if err := tab.Run(20*time.Second, chromedp.Navigate(n.http+"/watch/"+ls.ID+"?player=hlsjs")); err != nil {
			t.Fatal(err)
		}
		const playing = `(() => { const v = document.querySelector('video'); return !!v && v.currentTime > 3 && v.videoWidth > 0 })()`
		const state = `JSON.stringify((() => { const v = document.querySelector('video'); return v ? {t: v.currentTime, w: v.videoWidth, err: v.error && v.error.code} : null })())`
		if err := tab.WaitFor(60*time.Second, playing, state); err != nil {
			t.Fatal(err)
		}
	})
}

// streamError is the live stream's "error" field in the API: why it is not
// served as it should be ("" when nothing is wrong).
func (n *node) streamError(id string) string {
	n.t.Helper()
	code, body := n.get("/v1/live-streams/"+id, testAdminKey)
	if code != 200 {
		return ""
	}
	var ls struct {
		Error string `json:"error"`
	}
	_ = json.Unmarshal(body, &ls)
	return ls.Error
}
