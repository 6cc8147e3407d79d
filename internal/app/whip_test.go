package app

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/pion/webrtc/v4"

	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/whepclient"
	"github.com/shoal-video/shoal/internal/testutil/whippub"
)

// TestLiveOverWHIP: a pion client publishes VP8 and Opus (what a browser
// sends) to the live stream's ingest.whip_url with the stream key as the
// bearer token; the stream goes live, HLS appears with H.264 video and AAC
// audio, and after DELETE the recording lasts as long as the clip.
func TestLiveOverWHIP(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("whip")
	if !strings.HasSuffix(ls.Ingest.WHIPURL, "/v1/whip") {
		t.Fatalf("ingest.whip_url %q", ls.Ingest.WHIPURL)
	}
	video, err := whippub.ReadIVF(testutil.MakeVP8IVF(t, 640, 360, 6, 60))
	if err != nil {
		t.Fatal(err)
	}
	audio, err := whippub.ReadOgg(testutil.MakeOpusOgg(t, 6))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ses, err := whippub.Start(ctx, whippub.Options{Endpoint: ls.Ingest.WHIPURL, Key: ls.StreamKey,
		VideoMime: webrtc.MimeTypeVP8, Video: video, Audio: audio, Speed: 1})
	if err != nil {
		t.Fatal(err)
	}
	sent := make(chan error, 1)
	go func() { sent <- ses.Send(ctx) }()
	n.waitFor("the master playlist", 20*time.Second, func() bool {
		code, _ := n.get("/hls/"+ls.ID+"/master.m3u8", "")
		return code == 200
	})
	if s := n.status(ls.ID); s != "live" {
		t.Fatalf("status while publishing = %q, want live", s)
	}
	if err := <-sent; err != nil {
		t.Fatal(err)
	}
	if err := ses.Close(ctx); err != nil {
		t.Fatal(err)
	}
	n.waitFor("ENDLIST", 20*time.Second, func() bool { return n.ended(ls.ID, "index.m3u8") })
	if v := probeVideo(t, ls.Playback.HLSURL); !strings.HasPrefix(v, "h264,640,360") {
		t.Errorf("video %q, want h264 640x360", v)
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "a:0", "-show_entries", "stream=codec_name",
		"-of", "csv=p=0", ls.Playback.HLSURL).CombinedOutput()
	if err != nil || !strings.HasPrefix(strings.TrimSpace(string(out)), "aac") {
		t.Errorf("audio: %v %q, want aac", err, out)
	}
	if d := probeDuration(t, ls.Playback.HLSURL); d < 5 || d > 7 {
		t.Errorf("recording lasts %.3f s, want 6 ± 1", d)
	}
	_, metrics := n.get("/metrics", "")
	if metric(metrics, "shoal_ingest_bytes_total", `protocol="whip"`) == 0 {
		t.Error("no WHIP ingest bytes in /metrics")
	}
}

// TestWatchOverWHEP: ffmpeg publishes over RTMP; a pion viewer POSTs to
// the stream's playback.whep_url and receives its H.264 frames and audio
// (AAC converted to Opus). A signed stream refuses a viewer without a
// playback token.
func TestWatchOverWHEP(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("whep")
	if !strings.HasSuffix(ls.Playback.WHEPURL, "/v1/whep/"+ls.ID) {
		t.Fatalf("playback.whep_url %q", ls.Playback.WHEPURL)
	}
	pub := publish(t, clip(t, 30), ls.Ingest.RTMPURL+"/"+ls.StreamKey)
	defer pub.Process.Kill()
	n.waitFor("the stream live", 15*time.Second, func() bool { return n.status(ls.ID) == "live" })
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	v, err := whepclient.Start(ctx, ls.Playback.WHEPURL, "")
	if err != nil {
		t.Fatal(err)
	}
	keys, frames := 0, 0
	for frames < 60 {
		select {
		case f := <-v.Frames:
			frames++
			if f.Key {
				keys++
			}
		case <-ctx.Done():
			t.Fatalf("only %d frames over WHEP", frames)
		}
	}
	if keys == 0 {
		t.Error("no keyframe over WHEP")
	}
	if v.AudioPackets() == 0 {
		t.Error("no audio over WHEP")
	}
	if err := v.Close(ctx); err != nil {
		t.Fatal(err)
	}

	code, body := n.do(http.MethodPost, "/v1/live-streams", testAdminKey, map[string]string{"name": "signed whep", "playback_policy": "signed"})
	if code != http.StatusCreated {
		t.Fatalf("create a signed stream: %d %s", code, body)
	}
	var signed liveStream
	if err := json.Unmarshal(body, &signed); err != nil {
		t.Fatal(err)
	}
	_, err = whepclient.Start(ctx, signed.Playback.WHEPURL, "")
	var refused *whepclient.RefusedError
	if !errors.As(err, &refused) || refused.Status != 403 {
		t.Errorf("signed stream without a token: %v", err)
	}
}

// TestWHIPWithAPIKey: the dashboard's way to go live without the stream
// key: POST /v1/whip?stream=<id> with an API key (issued or admin) as the
// bearer. The stream goes live; the session ends with a DELETE carrying
// the same bearer. A wrong API key, the stream key in its place, or an
// unknown stream are refused.
func TestWHIPWithAPIKey(t *testing.T) {
	t.Parallel()
	n := startNode(t)
	ls := n.createStream("whip-api-key")
	code, body := n.do(http.MethodPost, "/v1/api-keys", testAdminKey, map[string]string{"name": "dashboard"})
	if code != http.StatusCreated {
		t.Fatalf("create API key: %d %s", code, body)
	}
	var issued struct {
		Key string `json:"key"`
	}
	if err := json.Unmarshal(body, &issued); err != nil || issued.Key == "" {
		t.Fatalf("API key answer %s: %v", body, err)
	}
	video, err := whippub.ReadIVF(testutil.MakeVP8IVF(t, 320, 180, 4, 30))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	endpoint := ls.Ingest.WHIPURL + "?stream=" + ls.ID
	for _, c := range []struct {
		name, endpoint, key string
		status              int
	}{
		{"unknown API key", endpoint, "shoal_aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa", http.StatusUnauthorized},
		{"the stream key as an API key", endpoint, ls.StreamKey, http.StatusUnauthorized},
		{"no such stream", ls.Ingest.WHIPURL + "?stream=nosuchstream", testAdminKey, http.StatusNotFound},
		{"two streams", endpoint + "&stream=" + ls.ID, testAdminKey, http.StatusBadRequest},
	} {
		_, err := whippub.Start(ctx, whippub.Options{Endpoint: c.endpoint, Key: c.key, VideoMime: webrtc.MimeTypeVP8, Video: video, Speed: 1})
		var refused *whippub.RefusedError
		if !errors.As(err, &refused) || refused.Status != c.status {
			t.Errorf("%s: %v, want a %d refusal", c.name, err, c.status)
		}
	}
	for _, key := range []string{issued.Key, testAdminKey} {
		ses, err := whippub.Start(ctx, whippub.Options{Endpoint: endpoint, Key: key, VideoMime: webrtc.MimeTypeVP8, Video: video, Speed: 1})
		if err != nil {
			t.Fatal(err)
		}
		sent := make(chan error, 1)
		go func() { sent <- ses.Send(ctx) }()
		n.waitFor("the stream live", 20*time.Second, func() bool { return n.status(ls.ID) == "live" })
		if err := <-sent; err != nil {
			t.Fatal(err)
		}
		// DELETE with the same bearer ends the session at once (not when
		// the media stops).
		if err := ses.Close(ctx); err != nil {
			t.Fatalf("DELETE of the session: %v", err)
		}
		n.waitFor("the stream idle", 20*time.Second, func() bool { return n.status(ls.ID) == "idle" })
	}
}
