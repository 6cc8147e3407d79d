package rtmp

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

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
	srv *Server
	hub *stream.Hub
	reg *prometheus.Registry
}

func newRig(t testing.TB, readTimeout time.Duration) *rig {
	return newLimitedRig(t, readTimeout, nil)
}

func newLimitedRig(t testing.TB, readTimeout time.Duration, limits *ingest.ConnLimiter) *rig {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 100000}, stream.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	reg := prometheus.NewRegistry()
	srv, err := New(Config{Addr: "127.0.0.1:0", ReadTimeout: readTimeout}, Deps{
		Log: slog.New(slog.DiscardHandler), Auth: keyTable{testKey: "stream1"}, Hub: hub, Registerer: reg, Limits: limits,
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

// testClip makes a short FLV (H.264 + AAC) with the ffmpeg CLI.
func testClip(t testing.TB, seconds string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.flv")
	out, err := exec.Command("ffmpeg", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-f", "lavfi", "-i", "sine=sample_rate=44100",
		"-t", seconds, "-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-f", "flv", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	return path
}

func TestPublishFromFFmpeg(t *testing.T) {
	t.Parallel()
	r := newRig(t, 5*time.Second)
	w := r.hub.Watch(func(media.StreamKey) bool { return true })
	defer w.Close()
	clip := testClip(t, "2")

	// A recording proxy sits between ffmpeg and the server so that the
	// bytes of a real publish session can refresh the fuzz seed.
	proxy, recorded := recordingProxy(t, r.srv.Addr().String())
	out, err := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip, "-c", "copy", "-f", "flv",
		"rtmp://"+proxy+"/live/"+testKey).CombinedOutput()
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
	if v.Codec != media.CodecH264 || v.Width != 320 || v.Height != 240 || len(v.SPS) == 0 {
		t.Fatalf("video track %+v", v)
	}
	if a.Codec != media.CodecAAC || a.SampleRate != 44100 || a.ClockRate != 44100 || a.Channels != 1 {
		t.Fatalf("audio track %+v", a)
	}
	var video, keys, audio int
	var lastDTS, lastAudio int64 = -1, -1
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
		if ev.AU.Track == 0 {
			if len(ev.AU.Payload) == 0 {
				continue
			}
			video++
			if ev.AU.Keyframe {
				keys++
			}
			if ev.AU.DTS < lastDTS {
				t.Fatalf("video DTS went back: %d after %d", ev.AU.DTS, lastDTS)
			}
			lastDTS = ev.AU.DTS
		} else {
			// FLV's millisecond times are rounded; frames are timed by
			// their sample count: exactly 1024 apart.
			if lastAudio >= 0 && ev.AU.PTS-lastAudio != 1024 {
				t.Fatalf("AAC frame %d is %d samples after the last, want 1024", audio, ev.AU.PTS-lastAudio)
			}
			lastAudio = ev.AU.PTS
			audio++
		}
	}
	// 2 s at 30 fps with a keyframe every 30 frames; ~86 AAC frames.
	if video < 55 || keys < 2 || audio < 80 {
		t.Fatalf("received %d video (%d key) and %d audio access units", video, keys, audio)
	}
	if got := testutil.ToFloat64(r.srv.m.Bytes); got <= 0 {
		t.Fatalf("ingest bytes metric = %v", got)
	}
	if path := os.Getenv("SHOAL_WRITE_RTMP_SEED"); path != "" {
		// The handshake, connect, publish, metadata, codec configs and the
		// first frames: enough to reach every parser, small enough to mutate.
		data := recorded()
		if len(data) > 24<<10 {
			data = data[:24<<10]
		}
		if err := os.WriteFile(path, []byte(fmt.Sprintf("go test fuzz v1\n[]byte(%q)\n", data)), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

func TestWrongKeyAndPlayRefused(t *testing.T) {
	t.Parallel()
	r := newRig(t, 5*time.Second)
	clip := testClip(t, "1")
	addr := r.srv.Addr().String()
	// Each refusal tells the encoder's user what is wrong.
	out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip, "-c", "copy", "-f", "flv",
		"rtmp://"+addr+"/live/sk_nope").CombinedOutput()
	if err == nil {
		t.Fatalf("wrong key accepted: %s", out)
	}
	if !strings.Contains(string(out), "unknown stream key") {
		t.Errorf("ffmpeg was not told the key is unknown: %s", out)
	}
	out, err = exec.Command("ffmpeg", "-v", "error", "-i", clip, "-c", "copy", "-f", "flv",
		"rtmp://"+addr+"/other/"+testKey).CombinedOutput()
	if err == nil {
		t.Fatalf("wrong app accepted: %s", out)
	}
	if !strings.Contains(string(out), "wrong path: publish to rtmp://HOST/live/<stream_key>") {
		t.Errorf("ffmpeg was not told the path is wrong: %s", out)
	}
	if strings.Contains(string(out), "authentication failed") {
		t.Errorf("a wrong path is reported as a failed authentication: %s", out)
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-rw_timeout", "3000000", "rtmp://"+addr+"/live/"+testKey).CombinedOutput()
	if err == nil {
		t.Fatalf("RTMP playback accepted: %s", out)
	}
	if !strings.Contains(string(out), "watch over HLS") {
		t.Errorf("ffprobe was not told to watch over HLS: %s", out)
	}
	if got := testutil.ToFloat64(r.srv.m.Refused.WithLabelValues("unknown_key")); got != 1 {
		t.Fatalf("refused{unknown_key} = %v, want 1", got)
	}
	if got := testutil.ToFloat64(r.srv.m.Refused.WithLabelValues("bad_path")); got != 1 {
		t.Fatalf("refused{bad_path} = %v, want 1", got)
	}
	if r.hub.IsLive("stream1") {
		t.Fatal("a refused publisher went live")
	}
}

func TestStreamKeyFromPath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{
		"/live/sk_abc": "sk_abc", "live/sk_abc": "sk_abc",
		"/live/": "", "/live": "", "/app/sk_abc": "", "/live/a/b": "", "": "",
	} {
		got, err := streamKeyFromPath(path)
		if want == "" && err == nil || want != "" && (err != nil || got != want) {
			t.Errorf("streamKeyFromPath(%q) = %q, %v; want %q", path, got, err, want)
		}
	}
}

func FuzzStreamKeyFromPath(f *testing.F) {
	for _, s := range []string{"/live/sk_abc", "/live/../x", "/live/a?b", "//live//"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, p string) {
		key, err := streamKeyFromPath(p)
		if err == nil && (key == "" || strings.ContainsAny(key, "/?#")) {
			t.Fatalf("accepted key %q from %q", key, p)
		}
	})
}

// FuzzRTMPConnection feeds arbitrary client bytes to a server connection:
// the handshake, chunk stream, AMF commands and FLV tags must be refused
// with an error, never a panic or a hang. The seed corpus holds a real
// ffmpeg publish session (see SHOAL_WRITE_RTMP_SEED above).
func FuzzRTMPConnection(f *testing.F) {
	f.Add([]byte{})
	f.Add([]byte{3})
	r := newRig(f, 200*time.Millisecond)
	f.Fuzz(func(t *testing.T, data []byte) {
		done := make(chan struct{})
		go func() {
			defer close(done)
			r.srv.handle(context.Background(), &replayConn{r: bytes.NewReader(data)})
		}()
		select {
		case <-done:
		case <-time.After(10 * time.Second):
			t.Fatal("connection handler did not return")
		}
	})
}

// replayConn is a connection whose peer sent exactly the bytes in r and then
// closed; what the server writes is discarded.
type replayConn struct{ r *bytes.Reader }

func (c *replayConn) Read(p []byte) (int, error)  { return c.r.Read(p) }
func (c *replayConn) Write(p []byte) (int, error) { return len(p), nil }
func (c *replayConn) Close() error                { return nil }
func (c *replayConn) LocalAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 1935}
}
func (c *replayConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 50000}
}
func (c *replayConn) SetDeadline(time.Time) error      { return nil }
func (c *replayConn) SetReadDeadline(time.Time) error  { return nil }
func (c *replayConn) SetWriteDeadline(time.Time) error { return nil }

// recordingProxy forwards one TCP connection to target and records what the
// client sent.
func recordingProxy(t *testing.T, target string) (string, func() []byte) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	var buf []byte
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		s, err := net.Dial("tcp", target)
		if err != nil {
			return
		}
		defer s.Close()
		go func() { _, _ = io.Copy(c, s) }()
		b := make([]byte, 32*1024)
		for {
			n, err := c.Read(b)
			if n > 0 {
				mu.Lock()
				buf = append(buf, b[:n]...)
				mu.Unlock()
				if _, werr := s.Write(b[:n]); werr != nil {
					return
				}
			}
			if err != nil {
				return
			}
		}
	}()
	return ln.Addr().String(), func() []byte {
		wg.Wait()
		mu.Lock()
		defer mu.Unlock()
		return buf
	}
}

// TestConnectionLimits: with one connection allowed per address, an idle
// connection (a client that never authenticates) makes a publisher from
// the same address be refused; once it goes, the publisher gets in.
func TestConnectionLimits(t *testing.T) {
	t.Parallel()
	limits := ingest.NewConnLimiter(10, 1)
	r := newLimitedRig(t, 5*time.Second, limits)
	clip := testClip(t, "3")
	addr := r.srv.Addr().String()
	idle, err := net.Dial("tcp", addr)
	if err != nil {
		t.Fatal(err)
	}
	// Wait until the server has accepted and counted the idle connection.
	deadline := time.Now().Add(20 * time.Second)
	for limits.InUse() == 0 {
		if time.Now().After(deadline) {
			t.Fatal("the idle connection was never counted")
		}
		runtime.Gosched()
	}
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip, "-c", "copy", "-f", "flv",
		"rtmp://"+addr+"/live/"+testKey).CombinedOutput(); err == nil {
		t.Fatalf("a publisher over the per-address limit was accepted: %s", out)
	}
	if got := testutil.ToFloat64(r.srv.m.Refused.WithLabelValues(ingest.RefusedLimit)); got != 1 {
		t.Fatalf("refused{too_many_connections} = %v, want 1", got)
	}
	idle.Close()
	deadline = time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip, "-c", "copy", "-f", "flv",
			"rtmp://"+addr+"/live/"+testKey).CombinedOutput()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the publisher is still refused after the idle connection closed: %v %s", err, out)
		}
	}
}

// ReadTimeout closes "an ingest connection that sends nothing for this
// long" (1 s to 5 m), but the deadline set when the connection opened was
// not moved until the tracks were known, and gortmplib reads 2 s of media
// to know them: a real-time encoder (OBS, ffmpeg -re) that sends all the
// time was cut off while its tracks were read whenever read_timeout was
// under about 2.5 s, and could never publish. Every read moves it now.
func TestReadTimeoutMovesWhileTracksAreRead(t *testing.T) {
	t.Parallel()
	r := newRig(t, 2*time.Second)
	w := r.hub.Watch(func(media.StreamKey) bool { return true })
	defer w.Close()
	clip := testClip(t, "4")
	out, err := exec.Command("ffmpeg", "-v", "error", "-re", "-i", clip, "-c", "copy", "-f", "flv",
		"rtmp://"+r.srv.Addr().String()+"/live/"+testKey).CombinedOutput()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	if _, werr := w.Next(ctx); werr != nil {
		t.Fatalf("a real-time publisher that never paused was not published with read_timeout 2s: %v (ffmpeg: %v %s)", werr, err, out)
	}
}

// deadlineConn records the deadlines set on it.
type deadlineConn struct {
	replayConn
	set []time.Time
}

func (c *deadlineConn) SetDeadline(t time.Time) error { c.set = append(c.set, t); return nil }

// Each read moves the deadline ReadTimeout ahead; before authorization no
// further than the pre-authorization cap, after it without one.
func TestDeadlineMovesOnEachRead(t *testing.T) {
	t.Parallel()
	c := &deadlineConn{replayConn: replayConn{r: bytes.NewReader(make([]byte, 10))}}
	start := time.Unix(1_800_000_000, 0)
	now := start
	d := newDeadlineReaderAt(c, time.Second, 1500*time.Millisecond, func() time.Time { return now })
	buf := make([]byte, 1)
	read := func() time.Time {
		t.Helper()
		if _, err := d.Read(buf); err != nil {
			t.Fatal(err)
		}
		return c.set[len(c.set)-1]
	}
	if got := read(); !got.Equal(start.Add(time.Second)) {
		t.Fatalf("first read: deadline %s after the start, want 1 s", got.Sub(start))
	}
	now = start.Add(700 * time.Millisecond)
	if got := read(); !got.Equal(start.Add(1500 * time.Millisecond)) {
		t.Fatalf("read 0.7 s in: deadline %s after the start, want the cap (1.5 s)", got.Sub(start))
	}
	d.authorized()
	if got := read(); !got.Equal(now.Add(time.Second)) {
		t.Fatalf("read after authorization: deadline %s from now, want 1 s", got.Sub(now))
	}
	if preauthTime(time.Second) != 10*time.Second || preauthTime(time.Minute) != time.Minute {
		t.Fatal("the pre-authorization cap is ReadTimeout, 10 s at least")
	}
}
