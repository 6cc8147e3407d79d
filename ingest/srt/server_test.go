package srt

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	gosrt "github.com/datarhei/gosrt"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
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
	srv  *Server
	hub  *stream.Hub
	reg  *prometheus.Registry
	logs *logBuffer
}

// logBuffer collects the server's log lines.
type logBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *logBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *logBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// noKeys fails the test if a stream key made it into the logs.
func (r *rig) noKeys(t *testing.T, keys ...string) {
	t.Helper()
	logs := r.logs.String()
	for _, k := range append(keys, testKey) {
		if strings.Contains(logs, k) {
			t.Fatalf("a stream key was logged:\n%s", logs)
		}
	}
}

// newRig starts a hub and an SRT server on 127.0.0.1:0 with cfg (address,
// latency and read timeout filled in when zero); both stop, and Run has
// returned, when the test ends.
func newRig(t *testing.T, cfg Config) *rig {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 100000}, stream.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Addr == "" {
		cfg.Addr = "127.0.0.1:0"
	}
	if cfg.Latency == 0 {
		cfg.Latency = 120 * time.Millisecond
	}
	if cfg.ReadTimeout == 0 {
		cfg.ReadTimeout = 5 * time.Second
	}
	reg := prometheus.NewRegistry()
	logs := &logBuffer{}
	srv, err := New(cfg, Deps{
		Log:  slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug})),
		Auth: keyTable{testKey: "stream1"}, Hub: hub, Registerer: reg,
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(2)
	go func() { defer wg.Done(); _ = hub.Run(ctx) }()
	go func() {
		defer wg.Done()
		if err := srv.Run(ctx); err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	t.Cleanup(func() { cancel(); wg.Wait() })
	return &rig{srv: srv, hub: hub, reg: reg, logs: logs}
}

// url is the SRT URL of the server with the given query options
// (e.g. "streamid=publish:KEY", "passphrase=...").
func (r *rig) url(query ...string) string {
	return "srt://" + r.srv.Addr().String() + "?" + strings.Join(query, "&")
}

func (r *rig) refused(reason string) float64 {
	return testutil.ToFloat64(r.srv.m.Refused.WithLabelValues(reason))
}

// testClip makes a short MP4 (H.264 with B-frames, a keyframe a second at
// 30 fps, 44.1 kHz mono AAC) with the ffmpeg CLI.
func testClip(t *testing.T, seconds string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.mp4")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=44100",
		"-t", seconds, "-c:v", "libx264", "-preset", "veryfast", "-g", "30", "-bf", "2", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-f", "mp4", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg (is it installed? `make test` installs it): %v\n%s", err, out)
	}
	return path
}

// publish runs the ffmpeg CLI publishing clip (at its own pace) to url
// with extra output options and returns its error and output.
func publish(ctx context.Context, clip, url string, extra ...string) ([]byte, error) {
	return ffmpeg(ctx, []string{"-re", "-i", clip, "-c", "copy"}, url, extra...)
}

// ffmpeg runs the ffmpeg CLI with input options in, sending MPEG-TS to url
// with output options out.
func ffmpeg(ctx context.Context, in []string, url string, out ...string) ([]byte, error) {
	args := append([]string{"-nostdin", "-v", "error"}, in...)
	args = append(append(append(args, "-f", "mpegts"), out...), url)
	return exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput()
}

// sidOpt passes an SRT stream id as an option (-streamid is taken by the
// ffmpeg CLI itself): ffmpeg 5 does not
// URL-decode a streamid query parameter, and the access-control form
// (#!::r=...,m=...) cannot go in a URL as it is.
func sidOpt(sid string) []string { return []string{"-srt_streamid", sid} }

func requireSRT(t *testing.T) {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-hide_banner", "-protocols").CombinedOutput()
	if err != nil || !bytes.Contains(out, []byte("srt")) {
		t.Fatalf("the ffmpeg CLI with SRT support (libsrt) is required: %v", err)
	}
}

// received is what a subscriber read from one publication.
type received struct {
	tracks []media.Track
	aus    []*media.AccessUnit
}

// readAll subscribes to the next publication and reads it to its end.
func readAll(ctx context.Context, t *testing.T, w *stream.Watcher) received {
	t.Helper()
	sub, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	if sub.Key() != (media.StreamKey{Name: "stream1", Rendition: media.RenditionSource}) {
		t.Fatalf("published as %v", sub.Key())
	}
	var got received
	for {
		ev, err := sub.Next(ctx)
		if errors.Is(err, io.EOF) {
			return got
		}
		if err != nil {
			t.Fatal(err)
		}
		if ev.Tracks != nil {
			if got.tracks != nil {
				t.Fatal("the publication restarted")
			}
			got.tracks = ev.Tracks
		}
		if ev.AU != nil {
			got.aus = append(got.aus, ev.AU)
		}
	}
}

func trackOf(tracks []media.Track, c media.Codec) (int, media.Track) {
	for i, tr := range tracks {
		if tr.Codec == c {
			return i, tr
		}
	}
	return -1, media.Track{}
}

// TestPublishFromFFmpeg: the ffmpeg CLI publishes an MP4 clip as MPEG-TS
// over SRT, with either stream id form; the hub gets an H.264 track with
// its parameter sets and an AAC track, and access units whose timestamps
// move forward and span the clip.
func TestPublishFromFFmpeg(t *testing.T) {
	t.Parallel()
	requireSRT(t)
	const seconds = 3
	clip := testClip(t, fmt.Sprint(seconds))
	for name, c := range map[string]struct {
		query string   // in the URL
		opts  []string // ffmpeg output options
	}{
		"publish prefix in the URL": {query: "streamid=publish:" + testKey},
		"access control":            {opts: sidOpt("#!::r=live/" + testKey + ",m=publish")},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			r := newRig(t, Config{})
			w := r.hub.Watch(func(media.StreamKey) bool { return true })
			defer w.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
			defer cancel()
			if out, err := publish(ctx, clip, r.url(c.query), c.opts...); err != nil {
				t.Fatalf("ffmpeg publish: %v\n%s", err, out)
			}
			got := readAll(ctx, t, w)

			vi, v := trackOf(got.tracks, media.CodecH264)
			ai, a := trackOf(got.tracks, media.CodecAAC)
			if len(got.tracks) != 2 || vi < 0 || ai < 0 {
				t.Fatalf("tracks %+v", got.tracks)
			}
			if v.ClockRate != 90000 || v.Width != 320 || v.Height != 240 || len(v.SPS) == 0 || len(v.PPS) == 0 {
				t.Fatalf("video track %+v", v)
			}
			if a.ClockRate != 44100 || a.SampleRate != 44100 || a.Channels != 1 || len(a.AudioConfig) == 0 {
				t.Fatalf("audio track %+v", a)
			}

			var video, keys, audio int
			var firstDTS, lastDTS, firstA, lastA int64
			for _, au := range got.aus {
				if len(au.Payload) == 0 || len(au.Payload[0]) == 0 {
					t.Fatalf("empty access unit %+v", au)
				}
				switch au.Track {
				case vi:
					if video == 0 {
						firstDTS = au.DTS
						if !au.Keyframe {
							t.Fatal("the first video frame is not a keyframe")
						}
					} else if au.DTS <= lastDTS {
						t.Fatalf("frame %d: DTS %d after %d", video, au.DTS, lastDTS)
					}
					if au.PTS < au.DTS {
						t.Fatalf("frame %d: PTS %d before DTS %d", video, au.PTS, au.DTS)
					}
					if bytes.HasPrefix(au.Payload[0], []byte{0, 0, 1}) || bytes.HasPrefix(au.Payload[0], []byte{0, 0, 0, 1}) {
						t.Fatalf("frame %d has start codes", video)
					}
					if au.Keyframe {
						keys++
						if !slices.ContainsFunc(au.Payload, func(n []byte) bool { return bytes.Equal(n, v.SPS) }) {
							t.Fatalf("keyframe %d does not carry the SPS", keys)
						}
					}
					lastDTS = au.DTS
					video++
				case ai:
					if audio == 0 {
						firstA = au.PTS
					} else if au.PTS <= lastA {
						t.Fatalf("audio frame %d: timestamp %d after %d", audio, au.PTS, lastA)
					}
					lastA = au.PTS
					audio++
				}
			}
			// What arrived spans the clip: the publication starts at the
			// first keyframe (audio before it is dropped) and SRT may lose
			// what the publisher sent in its last moments (about its
			// latency) when it closes, but nothing is added.
			clip := float64(seconds)
			vdur := float64(lastDTS-firstDTS+3000) / 90000 // + one frame at 30 fps
			adur := float64(lastA-firstA+1024) / 44100     // + one AAC frame
			const tolerance = 0.5                          // s
			t.Logf("video spans %.3fs (%d frames, %d keyframes), audio %.3fs (%d frames)", vdur, video, keys, adur, audio)
			if vdur < clip-tolerance || vdur > clip+0.05 || adur < clip-tolerance || adur > clip+0.1 {
				t.Fatalf("video spans %.3fs (%d frames, %d keyframes), audio %.3fs (%d frames); the clip is %.0fs",
					vdur, video, keys, adur, audio, clip)
			}
			if keys < seconds-1 {
				t.Fatalf("%d keyframes", keys)
			}
			if n := testutil.ToFloat64(r.srv.m.Bytes); n == 0 {
				t.Fatal("no bytes counted")
			}
			if n := testutil.ToFloat64(r.srv.m.Publishers); n != 0 {
				t.Fatalf("publishers gauge %v after the publisher left", n)
			}
			if logs := r.logs.String(); !strings.Contains(logs, "publisher connected") || !strings.Contains(logs, "publisher disconnected") {
				t.Fatalf("logs:\n%s", logs)
			}
			r.noKeys(t)
		})
	}
}

// TestPublishH265SkipsUnsupported: an H.265 stream with an MPEG-1 audio
// track is published with its video only.
func TestPublishH265SkipsUnsupported(t *testing.T) {
	t.Parallel()
	requireSRT(t)
	clip := filepath.Join(t.TempDir(), "clip.ts")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=48000",
		"-t", "2", "-c:v", "libx265", "-preset", "ultrafast", "-x265-params", "keyint=30:log-level=error",
		"-pix_fmt", "yuv420p", "-c:a", "mp2", "-f", "mpegts", clip).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	r := newRig(t, Config{})
	w := r.hub.Watch(func(media.StreamKey) bool { return true })
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	if out, err := publish(ctx, clip, r.url("streamid=publish:"+testKey)); err != nil {
		t.Fatalf("ffmpeg publish: %v\n%s", err, out)
	}
	got := readAll(ctx, t, w)
	if len(got.tracks) != 1 {
		t.Fatalf("tracks %+v", got.tracks)
	}
	v := got.tracks[0]
	if v.Codec != media.CodecH265 || v.Width != 320 || v.Height != 240 || len(v.VPS) == 0 || len(v.SPS) == 0 || len(v.PPS) == 0 {
		t.Fatalf("video track %+v", v)
	}
	if len(got.aus) < 40 || !got.aus[0].Keyframe {
		t.Fatalf("%d access units", len(got.aus))
	}
}

// TestRefusals: wrong keys, reading and malformed stream ids are refused
// during the SRT handshake (ffmpeg fails to connect), and counted.
func TestRefusals(t *testing.T) {
	t.Parallel()
	requireSRT(t)
	r := newRig(t, Config{})
	clip := testClip(t, "1")
	for _, c := range []struct{ name, streamID, reason string }{
		{"unknown key", "publish:sk_wrong", "unknown_key"},
		{"unknown key, access control", "#!::r=live/sk_wrong,m=publish", "unknown_key"},
		{"mode request", "#!::r=live/" + testKey + ",m=request", "play_not_offered"},
		{"mode defaults to request", "#!::r=" + testKey, "play_not_offered"},
		{"read", "read:" + testKey, "play_not_offered"},
		{"no key", "publish:", "bad_streamid"},
		{"no mode", testKey, "bad_streamid"},
	} {
		before := r.refused(c.reason)
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		out, err := publish(ctx, clip, r.url(), sidOpt(c.streamID)...)
		cancel()
		if err == nil {
			t.Fatalf("%s: ffmpeg published\n%s", c.name, out)
		}
		if n := r.refused(c.reason); n != before+1 {
			t.Fatalf("%s: refusal %q counted %v times (ffmpeg said %s)", c.name, c.reason, n-before, out)
		}
	}
	r.noKeys(t, "sk_wrong")
}

// TestBusyStream: while a stream has a publisher, a second one is refused;
// Disconnect ends the first.
func TestBusyStream(t *testing.T) {
	t.Parallel()
	requireSRT(t)
	r := newRig(t, Config{})
	clip := testClip(t, "1")
	w := r.hub.Watch(func(media.StreamKey) bool { return true })
	defer w.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	first := make(chan error, 1)
	go func() {
		_, err := ffmpeg(ctx, []string{"-stream_loop", "-1", "-re", "-i", clip, "-c", "copy"}, r.url("streamid=publish:"+testKey))
		first <- err
	}()
	sub, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	out, err := publish(ctx, clip, r.url("streamid=publish:"+testKey))
	if err == nil {
		t.Fatalf("a second publisher was accepted\n%s", out)
	}
	if n := r.refused("already_publishing"); n != 1 {
		t.Fatalf("already_publishing counted %v times (ffmpeg said %s)", n, out)
	}
	if !r.srv.Disconnect("stream1") {
		t.Fatal("Disconnect found no publisher")
	}
	for {
		if _, err := sub.Next(ctx); errors.Is(err, io.EOF) {
			break
		} else if err != nil {
			t.Fatal(err)
		}
	}
	if err := <-first; err == nil || ctx.Err() != nil {
		t.Fatalf("the disconnected publisher: %v (ctx %v)", err, ctx.Err())
	}
}

// TestPassphrase: with a passphrase set, only publishers that encrypt with
// it get in.
func TestPassphrase(t *testing.T) {
	t.Parallel()
	requireSRT(t)
	const pass = "correct-horse-battery"
	r := newRig(t, Config{Passphrase: pass})
	clip := testClip(t, "1")
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	for _, c := range []struct{ name, opt, reason string }{
		{"no passphrase", "", "encryption_required"},
		{"wrong passphrase", "passphrase=wrong-horse-battery", "bad_passphrase"},
	} {
		var opts []string
		if c.opt != "" {
			opts = append(opts, c.opt)
		}
		out, err := publish(ctx, clip, r.url(append([]string{"streamid=publish:" + testKey}, opts...)...))
		if err == nil {
			t.Fatalf("%s: ffmpeg published\n%s", c.name, out)
		}
		if n := r.refused(c.reason); n != 1 {
			t.Fatalf("%s: refusal %q counted %v times (ffmpeg said %s)", c.name, c.reason, n, out)
		}
	}
	w := r.hub.Watch(func(media.StreamKey) bool { return true })
	defer w.Close()
	if out, err := publish(ctx, clip, r.url("streamid=publish:"+testKey, "passphrase="+pass)); err != nil {
		t.Fatalf("ffmpeg publish with the passphrase: %v\n%s", err, out)
	}
	if got := readAll(ctx, t, w); len(got.aus) == 0 {
		t.Fatal("nothing arrived")
	}
}

// TestNoSupportedTracks: a stream with no H.264, H.265 or AAC track is
// refused once its tracks are known, and its publisher cut off.
func TestNoSupportedTracks(t *testing.T) {
	t.Parallel()
	requireSRT(t)
	r := newRig(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := ffmpeg(ctx, []string{"-re", "-f", "lavfi", "-i", "sine=sample_rate=48000:duration=20", "-c:a", "mp2"},
		r.url("streamid=publish:"+testKey))
	if err == nil || ctx.Err() != nil {
		t.Fatalf("ffmpeg was not cut off: %v (ctx %v)\n%s", err, ctx.Err(), out)
	}
	if n := r.refused("bad_tracks"); n != 1 {
		t.Fatalf("bad_tracks counted %v times", n)
	}
}

// TestReadTimeout: a publisher that connects and then sends nothing is
// closed after the read timeout. The client is gosrt's.
func TestReadTimeout(t *testing.T) {
	t.Parallel()
	r := newRig(t, Config{ReadTimeout: time.Second})
	cfg := gosrt.DefaultConfig()
	cfg.StreamId = "publish:" + testKey
	c, err := gosrt.Dial("srt", r.srv.Addr().String(), cfg)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	done := make(chan error, 1)
	go func() {
		_, err := c.Read(make([]byte, 1500))
		done <- err
	}()
	select {
	case err := <-done:
		if err == nil {
			t.Fatal("read data from the server")
		}
	case <-ctx.Done():
		t.Fatal("the silent publisher was not closed")
	}
	// It left before publishing anything: not a refusal.
	if n := testutil.CollectAndCount(r.srv.m.Refused); n != 0 {
		t.Fatalf("%d refusal reasons counted", n)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	hub, err := stream.New(stream.Config{QueueSize: 1}, stream.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	deps := Deps{Log: slog.New(slog.DiscardHandler), Auth: keyTable{}, Hub: hub}
	ok := Config{Addr: "127.0.0.1:0", Latency: 200 * time.Millisecond, ReadTimeout: time.Second}
	for name, mutate := range map[string]func(*Config){
		"no address":       func(c *Config) { c.Addr = "" },
		"no latency":       func(c *Config) { c.Latency = 0 },
		"huge latency":     func(c *Config) { c.Latency = time.Minute + 6*time.Second },
		"no read timeout":  func(c *Config) { c.ReadTimeout = 0 },
		"short passphrase": func(c *Config) { c.Passphrase = "short" },
		"long passphrase":  func(c *Config) { c.Passphrase = strings.Repeat("x", 80) },
		"bad address":      func(c *Config) { c.Addr = "nonsense" },
	} {
		cfg := ok
		mutate(&cfg)
		if s, err := New(cfg, deps); err == nil {
			s.Close()
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(ok, Deps{Hub: hub}); err == nil {
		t.Error("no Auth: accepted")
	}
	s, err := New(ok, deps)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	// A busy port is reported by New.
	busy := ok
	busy.Addr = s.Addr().String()
	if s2, err := New(busy, deps); err == nil {
		s2.Close()
		t.Error("a busy port was accepted")
	}
}
