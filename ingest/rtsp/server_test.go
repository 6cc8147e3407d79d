package rtsp

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
)

const testKey = "sk_testtesttesttesttesttesttesttest"

// keyTable is an Authorizer over a fixed table, standing in for the Redis
// lookup the app wires in (which has its own tests against a real Redis).
type keyTable map[string]string

func (k keyTable) Authorize(_ context.Context, key string) (string, error) {
	if id, ok := k[key]; ok {
		return id, nil
	}
	return "", ingest.ErrUnknownKey
}

type rig struct {
	srv *Server
	hub *stream.Hub
	reg *prometheus.Registry
}

func newRig(t *testing.T, udpPort int) *rig {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 100000}, stream.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := New(Config{Addr: "127.0.0.1:0", UDPPort: udpPort, ReadTimeout: 5 * time.Second}, Deps{
		Log: slog.New(slog.DiscardHandler), Auth: keyTable{testKey: "stream1"}, Hub: hub, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = hub.Run(ctx) }()
	go func() { defer wg.Done(); _ = srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &rig{srv: srv, hub: hub, reg: reg}
}

// testClip makes a short MP4 (H.264 with B-frames + AAC) with the ffmpeg CLI.
func testClip(t *testing.T, seconds string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.mp4")
	out, err := exec.Command("ffmpeg", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=44100",
		"-t", seconds, "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-bf", "2", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-f", "mp4", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

// TestPublishFromFFmpeg: the ffmpeg CLI publishes over RTSP, with TCP and
// with UDP transport; the hub gets the source's tracks and every frame,
// with decoding times that move forward.
func TestPublishFromFFmpeg(t *testing.T) {
	t.Parallel()
	clip := testClip(t, "3")
	for _, transport := range []string{"tcp", "udp"} {
		t.Run(transport, func(t *testing.T) {
			udp := 0
			if transport == "udp" {
				udp = shoaltest.FreeUDPPair(t)
			}
			r := newRig(t, udp)
			w := r.hub.Watch(func(media.StreamKey) bool { return true })
			defer w.Close()
			url := "rtsp://" + r.srv.Addr().String() + "/live/" + testKey
			out, err := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip, "-c", "copy", "-f", "rtsp",
				"-rtsp_transport", transport, url).CombinedOutput()
			if err != nil {
				t.Fatalf("ffmpeg publish: %v\n%s", err, out)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			sub, err := w.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if sub.Key() != (media.StreamKey{Name: "stream1", Rendition: media.RenditionSource}) {
				t.Fatalf("published as %v", sub.Key())
			}
			ev, err := sub.Next(ctx)
			if err != nil || len(ev.Tracks) != 2 {
				t.Fatalf("tracks: %+v %v", ev, err)
			}
			v, a := ev.Tracks[0], ev.Tracks[1]
			if v.Codec != media.CodecH264 || v.Width != 320 || v.Height != 240 {
				t.Fatalf("video track %+v", v)
			}
			if a.Codec != media.CodecAAC || a.SampleRate != 44100 {
				t.Fatalf("audio track %+v", a)
			}
			var video, keys, audio int
			var lastDTS int64 = -1 << 62
			for {
				ev, err := sub.Next(ctx)
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatal(err)
				}
				if ev.AU == nil {
					continue
				}
				switch ev.AU.Track {
				case 0:
					video++
					if ev.AU.Keyframe {
						keys++
					}
					if ev.AU.DTS <= lastDTS || ev.AU.PTS < ev.AU.DTS {
						t.Fatalf("frame %d: DTS %d after %d, PTS %d", video, ev.AU.DTS, lastDTS, ev.AU.PTS)
					}
					lastDTS = ev.AU.DTS
				case 1:
					audio++
				}
			}
			// 3 s at 30 fps: 90 frames, a keyframe a second; 44.1 kHz AAC:
			// about 129 frames (UDP on loopback loses none here).
			if video < 85 || keys < 3 || audio < 120 {
				t.Fatalf("got %d video frames (%d keyframes), %d audio frames", video, keys, audio)
			}
			if n := testutil.ToFloat64(r.srv.m.Bytes); n == 0 {
				t.Fatal("no bytes counted")
			}
		})
	}
}

// TestRefusals: a wrong key, a wrong path and playback are refused with
// clear answers, and counted.
func TestRefusals(t *testing.T) {
	t.Parallel()
	r := newRig(t, 0)
	clip := testClip(t, "1")
	for name, c := range map[string]struct{ url, reason string }{
		"wrong key":  {"rtsp://" + r.srv.Addr().String() + "/live/sk_wrong", "unknown_key"},
		"wrong path": {"rtsp://" + r.srv.Addr().String() + "/other/" + testKey, "bad_path"},
	} {
		out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip, "-c", "copy", "-f", "rtsp", "-rtsp_transport", "tcp", c.url).CombinedOutput()
		if err == nil {
			t.Fatalf("%s: ffmpeg published\n%s", name, out)
		}
		if n := testutil.ToFloat64(r.srv.m.Refused.WithLabelValues(c.reason)); n < 1 {
			t.Fatalf("%s: refusal %q not counted (ffmpeg said %s)", name, c.reason, out)
		}
	}
	out, err := exec.Command("ffprobe", "-v", "error", "-rtsp_transport", "tcp", "rtsp://"+r.srv.Addr().String()+"/live/"+testKey).CombinedOutput()
	if err == nil {
		t.Fatalf("playback was offered\n%s", out)
	}
	if n := testutil.ToFloat64(r.srv.m.Refused.WithLabelValues("play_not_offered")); n < 1 {
		t.Fatalf("playback refusal not counted: %s", out)
	}
}

func TestStreamKeyFromPath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{"/live/abc": "abc", "live/abc": "abc", "/live/abc/": "abc", "/live/": "", "/x/abc": "", "/live/a/b": ""} {
		got, err := streamKeyFromPath(path)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%q: %q %v, want %q", path, got, err, want)
		}
	}
}
