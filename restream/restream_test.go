package restream

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"
	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	rtmpingest "github.com/shoal-video/shoal/ingest/rtmp"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

const (
	testKey    = "sk_restreamtestrestreamtestrestream"
	testStream = "live1"
)

// keyTable is an ingest Authorizer over a fixed table, standing in for the
// Redis lookup the app wires in.
type keyTable map[string]string

func (k keyTable) Authorize(_ context.Context, key string) (string, error) {
	if id, ok := k[key]; ok {
		return id, nil
	}
	return "", ingest.ErrUnknownKey
}

// targetTable is a TargetSource over a table the test edits, standing in
// for the Redis-backed one of the app.
type targetTable struct {
	mu sync.Mutex
	m  map[string][]Target
}

func (tt *targetTable) Targets(_ context.Context, id string) ([]Target, error) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	return slices.Clone(tt.m[id]), nil
}

func (tt *targetTable) set(id string, ts ...Target) {
	tt.mu.Lock()
	defer tt.mu.Unlock()
	if tt.m == nil {
		tt.m = map[string][]Target{}
	}
	tt.m[id] = ts
}

type stateEvent struct {
	stream string
	target Target
	State
}

// recorder collects OnState reports and lets a test wait for one.
type recorder struct {
	mu     sync.Mutex
	events []stateEvent
	notify chan struct{}
}

func newRecorder() *recorder { return &recorder{notify: make(chan struct{}, 1)} }

func (r *recorder) onState(id string, t Target, s State) {
	r.mu.Lock()
	r.events = append(r.events, stateEvent{stream: id, target: t, State: s})
	r.mu.Unlock()
	select {
	case r.notify <- struct{}{}:
	default:
	}
}

// of returns the reports of one target so far.
func (r *recorder) of(id string) []stateEvent {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []stateEvent
	for _, e := range r.events {
		if e.target.ID == id {
			out = append(out, e)
		}
	}
	return out
}

// wait waits until cond holds for the reports of target id and returns them.
func (r *recorder) wait(t *testing.T, id string, timeout time.Duration, what string, cond func([]stateEvent) bool) []stateEvent {
	t.Helper()
	deadline := time.NewTimer(timeout)
	defer deadline.Stop()
	for {
		evs := r.of(id)
		if cond(evs) {
			return evs
		}
		select {
		case <-r.notify:
		case <-deadline.C:
			t.Fatalf("target %s: timed out waiting for %s; reports: %s", id, what, describe(evs))
		}
	}
}

// count returns how many reports of evs are in state s.
func count(evs []stateEvent, s string) int {
	n := 0
	for _, e := range evs {
		if e.State.State == s {
			n++
		}
	}
	return n
}

// states lists the states reported, once per change (a report that only
// changes Detail repeats the state).
func states(evs []stateEvent) []string {
	var out []string
	for _, e := range evs {
		if len(out) == 0 || out[len(out)-1] != e.State.State {
			out = append(out, e.State.State)
		}
	}
	return out
}

func describe(evs []stateEvent) string {
	var b strings.Builder
	for _, e := range evs {
		fmt.Fprintf(&b, "\n  %s err=%q detail=%q bytes=%d", e.State.State, e.Error, e.Detail, e.BytesSent)
	}
	return b.String()
}

type rig struct {
	hub     *stream.Hub
	mgr     *Manager
	targets *targetTable
	rec     *recorder
	reg     *prometheus.Registry
	ingest  *rtmpingest.Server // nil unless asked for
}

type rigOpts struct {
	grace  time.Duration
	cfg    Config
	ingest bool
}

func testConfig() Config {
	return Config{
		BackoffMin: 10 * time.Millisecond, BackoffMax: 40 * time.Millisecond, StableAfter: time.Minute,
		DialTimeout: 10 * time.Second, WriteTimeout: 5 * time.Second, RenditionWait: 20 * time.Millisecond,
		AllowPrivate: true, // the targets are on loopback
	}
}

// newRig runs a hub, a manager and, when asked, the RTMP ingest, until the
// test ends (and checks that Run returns).
func newRig(t *testing.T, o rigOpts) *rig {
	t.Helper()
	log := slog.New(slog.DiscardHandler)
	if os.Getenv("RESTREAM_TEST_LOG") != "" {
		log = slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	hub, err := stream.New(stream.Config{QueueSize: 4096, Grace: o.grace}, stream.Deps{Log: log})
	if err != nil {
		t.Fatal(err)
	}
	r := &rig{hub: hub, targets: &targetTable{}, rec: newRecorder(), reg: prometheus.NewRegistry()}
	mgr, err := New(o.cfg, Deps{Log: log, Hub: hub, Targets: r.targets, OnState: r.rec.onState, Registerer: r.reg})
	if err != nil {
		t.Fatal(err)
	}
	r.mgr = mgr
	if o.ingest {
		r.ingest, err = rtmpingest.New(rtmpingest.Config{Addr: "127.0.0.1:0", ReadTimeout: 5 * time.Second},
			rtmpingest.Deps{Log: log, Auth: keyTable{testKey: testStream}, Hub: hub})
		if err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() { _ = hub.Run(ctx) })
	runDone := make(chan error, 1)
	wg.Go(func() { runDone <- mgr.Run(ctx) })
	if r.ingest != nil {
		wg.Go(func() { _ = r.ingest.Run(ctx) })
	}
	t.Cleanup(func() {
		cancel()
		select {
		case err := <-runDone:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Error("Run did not return after its context was canceled")
		}
		wg.Wait()
	})
	return r
}

// makeClip encodes an FLV (H.264 + AAC) with the ffmpeg CLI.
func makeClip(t *testing.T, name string, size string, seconds int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+size+":rate=30", "-f", "lavfi", "-i", "sine=sample_rate=44100",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-g", "15", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-f", "flv", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg (is it installed? `make test` installs it): %v\n%s", err, out)
	}
	return path
}

// publish plays clip in real time into the ingest, as OBS would, and
// returns when it has all been sent.
func (r *rig) publish(t *testing.T, clip string) {
	t.Helper()
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-re", "-i", clip, "-c", "copy", "-f", "flv",
		"rtmp://"+r.ingest.Addr().String()+"/live/"+testKey).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg publish: %v\n%s", err, out)
	}
}

// freePort returns a TCP port on 127.0.0.1 nothing listens on.
func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	return port
}

type probe struct {
	Streams []struct {
		CodecType string `json:"codec_type"`
		CodecName string `json:"codec_name"`
		Width     int    `json:"width"`
	} `json:"streams"`
	Format struct {
		Duration string `json:"duration"`
	} `json:"format"`
}

func ffprobe(t *testing.T, path string) probe {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_type,codec_name,width:format=duration",
		"-of", "json", path).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", path, err)
	}
	var p probe
	if err := json.Unmarshal(out, &p); err != nil {
		t.Fatal(err)
	}
	return p
}

// TestPushToFFmpeg publishes a clip with ffmpeg into the RTMP ingest and
// checks that an ffmpeg RTMP server (the target) records it: H.264 and AAC,
// about as long as what was published.
func TestPushToFFmpeg(t *testing.T) {
	t.Parallel()
	const seconds = 4
	clip := makeClip(t, "clip.flv", "320x240", seconds)
	r := newRig(t, rigOpts{cfg: testConfig(), ingest: true})

	port := freePort(t)
	outPath := filepath.Join(t.TempDir(), "out.flv")
	target := exec.Command("ffmpeg", "-nostdin", "-v", "debug", "-y", "-listen", "1", "-f", "flv",
		"-i", fmt.Sprintf("rtmp://127.0.0.1:%d/live/x", port), "-c", "copy", "-f", "flv", outPath)
	// At debug level ffmpeg says when it opens the input, right before it
	// listens.
	stderr := &markWriter{mark: []byte("for reading"), seen: make(chan struct{})}
	target.Stderr = stderr
	if err := target.Start(); err != nil {
		t.Fatal(err)
	}
	targetDone := make(chan error, 1)
	go func() { targetDone <- target.Wait() }()
	t.Cleanup(func() {
		_ = target.Process.Kill()
		<-targetDone
	})
	r.targets.set(testStream, Target{ID: "t1", Name: "ffmpeg", URL: fmt.Sprintf("rtmp://127.0.0.1:%d/live/x", port)})
	select {
	case <-stderr.seen:
	case err := <-targetDone:
		t.Fatalf("target ffmpeg exited: %v\n%s", err, stderr.tail())
	case <-time.After(20 * time.Second):
		t.Fatal("target ffmpeg did not start")
	}

	// Should ffmpeg not listen yet, the pusher is refused and retries
	// (10 ms backoff); the start buffer still gives it the whole stream.
	published := make(chan struct{})
	go func() {
		defer close(published)
		r.publish(t, clip)
	}()
	evs := r.rec.wait(t, "t1", 20*time.Second, "live", func(evs []stateEvent) bool { return count(evs, StateLive) > 0 })
	i := slices.IndexFunc(evs, func(e stateEvent) bool { return e.State.State == StateLive })
	if i == 0 || evs[i-1].State.State != StateConnecting {
		t.Fatalf("live was not preceded by connecting: %v", states(evs))
	}
	if st := r.mgr.States(testStream)["t1"]; st.State != StateLive || st.Since.IsZero() {
		t.Fatalf("States while live: %+v", st)
	}
	<-published
	// The stream ends (no reconnect grace): the pusher unpublishes and
	// disconnects, ffmpeg finishes its file and exits.
	select {
	case err := <-targetDone:
		targetDone <- err
		if err != nil {
			t.Fatalf("target ffmpeg: %v\n%s", err, stderr.tail())
		}
	case <-time.After(20 * time.Second):
		t.Fatalf("target ffmpeg did not finish; reports: %s", describe(r.rec.of("t1")))
	}
	evs = r.rec.wait(t, "t1", 10*time.Second, "idle", func(evs []stateEvent) bool {
		return len(evs) > 0 && evs[len(evs)-1].State.State == StateIdle
	})
	if last := evs[len(evs)-1]; last.BytesSent < 50_000 {
		t.Fatalf("final report says %d bytes sent", last.BytesSent)
	}
	if n := count(evs, StateFailed); n > 0 && !strings.Contains(evs[slices.IndexFunc(evs, func(e stateEvent) bool {
		return e.State.State == StateFailed
	})].Error, "refused") {
		t.Fatalf("unexpected failure: %s", describe(evs))
	}
	if got := r.mgr.States(testStream); got != nil {
		t.Fatalf("States after the stream ended: %+v", got)
	}
	if got := promtest.ToFloat64(r.mgr.bytes); got < 50_000 {
		t.Fatalf("bytes metric = %v", got)
	}
	if got := promtest.ToFloat64(r.mgr.targetsGauge.WithLabelValues(StateLive)); got != 0 {
		t.Fatalf("targets{live} after the end = %v", got)
	}

	p := ffprobe(t, outPath)
	var codecsSeen []string
	for _, s := range p.Streams {
		codecsSeen = append(codecsSeen, s.CodecType+":"+s.CodecName)
	}
	slices.Sort(codecsSeen)
	if !slices.Equal(codecsSeen, []string{"audio:aac", "video:h264"}) {
		t.Fatalf("target recorded streams %v", codecsSeen)
	}
	dur, _ := strconv.ParseFloat(p.Format.Duration, 64)
	t.Logf("target recorded %.3f s (%v); reports %v", dur, codecsSeen, states(evs))
	// The whole stream, from its first keyframe: the ingest publishes
	// its first 2 s in a burst before the pusher could subscribe, the
	// start buffer has them.
	if dur < seconds-0.2 || dur > seconds+0.5 {
		t.Fatalf("target recorded %.2f s of a %d s stream", dur, seconds)
	}
}

// markWriter collects a process's stderr (keeping the tail) and closes seen
// when mark appears.
type markWriter struct {
	mark []byte
	seen chan struct{}

	mu   sync.Mutex
	buf  []byte
	done bool
}

func (w *markWriter) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf = append(w.buf, p...)
	if !w.done && bytes.Contains(w.buf, w.mark) {
		w.done = true
		close(w.seen)
	}
	if len(w.buf) > 64<<10 {
		w.buf = slices.Clone(w.buf[len(w.buf)-32<<10:])
	}
	return len(p), nil
}

func (w *markWriter) tail() string {
	w.mu.Lock()
	defer w.mu.Unlock()
	b := w.buf
	if len(b) > 4<<10 {
		b = b[len(b)-4<<10:]
	}
	return string(b)
}

// rtmpTarget is an RTMP server (gortmplib's server side) that records what
// each publisher connection sent.
type rtmpTarget struct {
	ln       net.Listener
	mu       sync.Mutex
	accepted int
	conns    []*received
	notify   chan struct{}
	wg       sync.WaitGroup
}

type received struct {
	path     string
	tracks   []string
	videoDTS []time.Duration
	keys     int
	audio    int
	ended    bool
}

func newRTMPTarget(t *testing.T) *rtmpTarget {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	rt := &rtmpTarget{ln: ln, notify: make(chan struct{}, 1)}
	rt.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			rt.wg.Go(func() { rt.serve(c) })
		}
	})
	t.Cleanup(func() {
		ln.Close()
		rt.wg.Wait()
	})
	return rt
}

func (rt *rtmpTarget) url(key string) string {
	return "rtmp://" + rt.ln.Addr().String() + "/app/" + key
}

func (rt *rtmpTarget) signal() {
	select {
	case rt.notify <- struct{}{}:
	default:
	}
}

func (rt *rtmpTarget) serve(c net.Conn) {
	defer c.Close()
	rt.mu.Lock()
	rt.accepted++
	rt.mu.Unlock()
	rt.signal()
	rec := &received{}
	defer func() {
		rt.mu.Lock()
		rec.ended = true
		rt.mu.Unlock()
		rt.signal()
	}()
	_ = c.SetDeadline(time.Now().Add(20 * time.Second))
	sc := &gortmplib.ServerConn{RW: c}
	if sc.Initialize() != nil || sc.AcceptConn() != nil || !sc.Publish {
		return
	}
	r := &gortmplib.Reader{Conn: sc}
	if r.Initialize() != nil {
		return
	}
	rec.path = sc.URL.Path
	for _, tr := range r.Tracks() {
		switch tr.Codec.(type) {
		case *codecs.H264:
			rec.tracks = append(rec.tracks, "h264")
			r.OnDataH264(tr, func(_, dts time.Duration, au [][]byte) {
				rt.mu.Lock()
				rec.videoDTS = append(rec.videoDTS, dts)
				if slices.ContainsFunc(au, func(n []byte) bool { return len(n) > 0 && n[0]&0x1f == 5 }) {
					rec.keys++
				}
				rt.mu.Unlock()
				rt.signal()
			})
		case *codecs.MPEG4Audio:
			rec.tracks = append(rec.tracks, "aac")
			r.OnDataMPEG4Audio(tr, func(time.Duration, []byte) {
				rt.mu.Lock()
				rec.audio++
				rt.mu.Unlock()
				rt.signal()
			})
		}
	}
	rt.mu.Lock()
	rt.conns = append(rt.conns, rec)
	rt.mu.Unlock()
	rt.signal()
	for {
		_ = c.SetDeadline(time.Now().Add(20 * time.Second))
		if err := r.Read(); err != nil {
			return
		}
	}
}

// snapshot returns copies of what every connection sent so far.
func (rt *rtmpTarget) snapshot() []received {
	rt.mu.Lock()
	defer rt.mu.Unlock()
	out := make([]received, len(rt.conns))
	for i, c := range rt.conns {
		out[i] = *c
		out[i].videoDTS = slices.Clone(c.videoDTS)
	}
	return out
}

// waitAccepted waits for a TCP connection (the pusher subscribed before
// it dialed).
func (rt *rtmpTarget) waitAccepted(t *testing.T) {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		rt.mu.Lock()
		n := rt.accepted
		rt.mu.Unlock()
		if n > 0 {
			return
		}
		select {
		case <-rt.notify:
		case <-deadline.C:
			t.Fatal("timed out waiting for a connection")
		}
	}
}

func (rt *rtmpTarget) wait(t *testing.T, what string, cond func([]received) bool) []received {
	t.Helper()
	deadline := time.NewTimer(20 * time.Second)
	defer deadline.Stop()
	for {
		s := rt.snapshot()
		if cond(s) {
			return s
		}
		select {
		case <-rt.notify:
		case <-deadline.C:
			var desc []string
			for _, c := range s {
				desc = append(desc, fmt.Sprintf("{%s %v video=%d audio=%d ended=%v}", c.path, c.tracks, len(c.videoDTS), c.audio, c.ended))
			}
			t.Fatalf("timed out waiting for %s; target saw %d connections: %s", what, len(s), strings.Join(desc, " "))
		}
	}
}

// TestPublisherRestart reconnects the publisher within the hub's grace
// period: with the same tracks the target keeps one connection whose
// timestamps keep increasing; with other tracks (another resolution) the
// pusher reconnects the target.
func TestPublisherRestart(t *testing.T) {
	t.Parallel()
	// Longer than the 2 s the ingest reads before it knows the tracks.
	clipA := makeClip(t, "a.flv", "320x240", 3)
	clipB := makeClip(t, "b.flv", "256x144", 3)
	r := newRig(t, rigOpts{cfg: testConfig(), ingest: true, grace: time.Minute})
	rt := newRTMPTarget(t)
	r.targets.set(testStream, Target{ID: "t1", Name: "test", URL: rt.url("sk_restart")})

	r.publish(t, clipA)
	r.publish(t, clipA) // within the grace period: the same publication restarts
	r.publish(t, clipB) // restarts with other SPS/PPS: the target is reconnected
	if !r.hub.End(media.StreamKey{Name: testStream, Rendition: media.RenditionSource}) {
		t.Fatal("the publication had ended early")
	}
	got := rt.wait(t, "both connections to end; reports: "+describe(r.rec.of("t1")), func(s []received) bool {
		return len(s) >= 2 && !slices.ContainsFunc(s, func(c received) bool { return !c.ended })
	})
	if len(got) != 2 {
		t.Fatalf("target saw %d connections, want 2", len(got))
	}
	for i, c := range got {
		if c.path != "/app/sk_restart" {
			t.Errorf("connection %d published to %q", i, c.path)
		}
		if !slices.Equal(c.tracks, []string{"h264", "aac"}) {
			t.Errorf("connection %d tracks %v", i, c.tracks)
		}
		if len(c.videoDTS) == 0 || c.videoDTS[0] != 0 || c.keys == 0 || c.audio == 0 {
			t.Fatalf("connection %d: %d video frames (first DTS %v, %d keyframes), %d audio frames",
				i, len(c.videoDTS), c.videoDTS, c.keys, c.audio)
		}
		for j := 1; j < len(c.videoDTS); j++ {
			if c.videoDTS[j] < c.videoDTS[j-1] {
				t.Fatalf("connection %d: video DTS went back from %v to %v", i, c.videoDTS[j-1], c.videoDTS[j])
			}
		}
	}
	// The first connection carries both 3 s publishes of clip A (90
	// frames each), the second re-based after the first plus the time the
	// publisher was away (its start-up and the ingest's 2 s of analysis).
	first, second := got[0], got[1]
	for i, c := range got {
		t.Logf("connection %d: %d video frames up to DTS %v, %d audio frames", i, len(c.videoDTS), c.videoDTS[len(c.videoDTS)-1], c.audio)
	}
	if n := len(first.videoDTS); n < 175 || n > 184 {
		t.Fatalf("first connection carried %d video frames, want 180", n)
	}
	jump := time.Duration(0)
	for j := 1; j < len(first.videoDTS); j++ {
		jump = max(jump, first.videoDTS[j]-first.videoDTS[j-1])
	}
	if last := first.videoDTS[len(first.videoDTS)-1]; jump < time.Second || last < 6*time.Second {
		t.Fatalf("first connection: largest step %v, last DTS %v; want a pause of over 1 s and over 6 s in all", jump, last)
	}
	// The second carries all of clip B: the subscription that saw the new
	// tracks carried over to the new connection.
	if n := len(second.videoDTS); n < 85 || n > 92 {
		t.Fatalf("second connection carried %d video frames, want 90", n)
	}
	evs := r.rec.wait(t, "t1", 10*time.Second, "idle", func(evs []stateEvent) bool {
		return len(evs) > 0 && evs[len(evs)-1].State.State == StateIdle
	})
	if n := count(evs, StateFailed); n != 0 {
		t.Fatalf("a restart was reported as a failure: %s", describe(evs))
	}
	if n := count(evs, StateLive); n != 2 {
		t.Fatalf("reports %v, want two connections live", states(evs))
	}
}

// aacTracks is an audio-only publication, enough for tests whose target
// never receives media.
func aacTracks(t *testing.T) []media.Track {
	t.Helper()
	cfg, err := (&mpeg4audio.AudioSpecificConfig{Type: mpeg4audio.ObjectTypeAACLC, SampleRate: 48000, ChannelCount: 2}).Marshal()
	if err != nil {
		t.Fatal(err)
	}
	return []media.Track{{Codec: media.CodecAAC, ClockRate: 48000, SampleRate: 48000, Channels: 2, AudioConfig: cfg}}
}

// closingListener accepts connections and closes them at once.
func closingListener(t *testing.T) string {
	return serveTCP(t, func(c net.Conn) { c.Close() })
}

// serveTCP listens on a loopback port and runs handle for every connection
// it accepts (each in its own goroutine) until the test ends; it returns
// the address.
func serveTCP(t *testing.T, handle func(net.Conn)) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			wg.Go(func() { handle(c) })
		}
	})
	t.Cleanup(func() { ln.Close(); wg.Wait() })
	return ln.Addr().String()
}

// silentListener accepts connections and never answers (a target that hangs
// in the handshake).
func silentListener(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	var wg sync.WaitGroup
	wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	})
	t.Cleanup(func() {
		ln.Close()
		wg.Wait()
		for _, c := range conns {
			c.Close()
		}
	})
	return ln.Addr().String()
}

// TestFailingTargetsRetry checks that refused and hung-up connections show
// "failed" with the reason (no stream key in it) and are retried, and that
// a rung that is not published falls back to the source, said in Detail.
func TestFailingTargetsRetry(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOpts{cfg: testConfig()})
	refused := fmt.Sprintf("rtmp://127.0.0.1:%d/live2/sk_refused_secret", freePort(t))
	hungUp := "rtmps://" + closingListener(t) + "/app/sk_hungup_secret?token=abcdef"
	r.targets.set(testStream,
		Target{ID: "refused", Name: "YouTube", URL: refused},
		Target{ID: "hungup", Name: "Twitch", URL: hungUp, Rendition: "720p"},
	)
	pub, err := r.hub.Publish(media.StreamKey{Name: testStream, Rendition: media.RenditionSource}, aacTracks(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.End()

	retried := func(evs []stateEvent) bool {
		return count(evs, StateFailed) >= 2 && count(evs, StateConnecting) >= 2
	}
	for id, reason := range map[string]string{"refused": "connection refused", "hungup": "connect: "} {
		evs := r.rec.wait(t, id, 10*time.Second, "a retry after a failure", retried)
		if got := states(evs)[:4]; !slices.Equal(got, []string{StateConnecting, StateFailed, StateConnecting, StateFailed}) {
			t.Fatalf("%s: reports %v", id, states(evs))
		}
		f := evs[slices.IndexFunc(evs, func(e stateEvent) bool { return e.State.State == StateFailed })]
		if !strings.Contains(f.Error, reason) {
			t.Fatalf("%s: error %q does not say %q", id, f.Error, reason)
		}
		for _, e := range evs {
			for _, secret := range []string{"sk_refused_secret", "sk_hungup_secret", "abcdef"} {
				if strings.Contains(e.Error, secret) || strings.Contains(e.Detail, secret) {
					t.Fatalf("%s: report leaks %q: %+v", id, secret, e)
				}
			}
		}
		if f.Since.Before(evs[0].Since) {
			t.Fatalf("%s: Since went back", id)
		}
	}
	evs := r.rec.of("hungup")
	if !slices.ContainsFunc(evs, func(e stateEvent) bool { return strings.Contains(e.Detail, `"720p" is not published`) }) {
		t.Fatalf("hungup: no fallback detail: %s", describe(evs))
	}
	st := r.mgr.States(testStream)
	if len(st) != 2 || st["refused"].State == "" || st["hungup"].Detail == "" {
		t.Fatalf("States: %+v", st)
	}
	if got := promtest.ToFloat64(r.mgr.failures); got < 4 {
		t.Fatalf("failures metric = %v, want at least 4", got)
	}
}

// TestRefresh adds and removes targets of a live stream: a removed target
// stops at once, even in the middle of connecting; a new one starts; the
// end of the stream stops the rest.
func TestRefresh(t *testing.T) {
	t.Parallel()
	cfg := testConfig()
	cfg.DialTimeout = time.Minute // the hung target would connect for that long
	r := newRig(t, rigOpts{cfg: cfg})
	refused := Target{ID: "a", URL: fmt.Sprintf("rtmp://127.0.0.1:%d/app/key-a", freePort(t))}
	hung := Target{ID: "b", URL: "rtmp://" + silentListener(t) + "/app/key-b"}
	r.targets.set(testStream, refused, hung)
	r.mgr.Refresh(testStream) // not live yet: ignored
	pub, err := r.hub.Publish(media.StreamKey{Name: testStream, Rendition: media.RenditionSource}, aacTracks(t))
	if err != nil {
		t.Fatal(err)
	}
	r.rec.wait(t, "a", 10*time.Second, "a failure", func(evs []stateEvent) bool { return count(evs, StateFailed) > 0 })
	r.rec.wait(t, "b", 10*time.Second, "connecting", func(evs []stateEvent) bool { return count(evs, StateConnecting) > 0 })

	added := Target{ID: "c", URL: fmt.Sprintf("rtmp://127.0.0.1:%d/app/key-c", freePort(t))}
	r.targets.set(testStream, refused, added)
	start := time.Now()
	r.mgr.Refresh(testStream)
	evs := r.rec.wait(t, "b", 10*time.Second, "idle", func(evs []stateEvent) bool { return count(evs, StateIdle) > 0 })
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("removing a connecting target took %v", d)
	}
	if got := states(evs); !slices.Equal(got, []string{StateConnecting, StateIdle}) {
		t.Fatalf("removed target reports %v", got)
	}
	r.rec.wait(t, "c", 10*time.Second, "the added target to start", func(evs []stateEvent) bool { return count(evs, StateFailed) > 0 })
	st := r.mgr.States(testStream)
	if _, ok := st["b"]; ok || len(st) != 2 {
		t.Fatalf("States after removing b: %+v", st)
	}
	if got := promtest.ToFloat64(r.mgr.targetsGauge.WithLabelValues(StateConnecting)) +
		promtest.ToFloat64(r.mgr.targetsGauge.WithLabelValues(StateFailed)); got != 2 {
		t.Fatalf("targets gauge counts %v pushers, want 2", got)
	}

	pub.End()
	for _, id := range []string{"a", "c"} {
		r.rec.wait(t, id, 10*time.Second, "idle", func(evs []stateEvent) bool {
			return len(evs) > 0 && evs[len(evs)-1].State.State == StateIdle
		})
	}
	if got := r.mgr.States(testStream); got != nil {
		t.Fatalf("States after the end: %+v", got)
	}
}

// TestRemoveLiveTarget removes a target that is live: its connection
// ends at once. The stream is audio only (no keyframe to wait for).
func TestRemoveLiveTarget(t *testing.T) {
	t.Parallel()
	r := newRig(t, rigOpts{cfg: testConfig()})
	rt := newRTMPTarget(t)
	r.targets.set(testStream, Target{ID: "t1", URL: rt.url("sk_live")})
	pub, err := r.hub.Publish(media.StreamKey{Name: testStream, Rendition: media.RenditionSource}, aacTracks(t))
	if err != nil {
		t.Fatal(err)
	}
	defer pub.End()
	// 200 AAC frames of 1024 samples at 48 kHz (4.3 s; the target's
	// reader looks at 2 s before it reports the tracks): half before the
	// pusher subscribed (the start buffer has them), half after it
	// connected.
	write := func(from, to int) {
		for i := from; i < to; i++ {
			ts := int64(i) * 1024
			pub.Write(&media.AccessUnit{Track: 0, PTS: ts, DTS: ts, Keyframe: true, Payload: [][]byte{{0x21, 0x10, byte(i)}}})
		}
	}
	write(0, 100)
	rt.waitAccepted(t)
	write(100, 200)
	r.rec.wait(t, "t1", 10*time.Second, "live", func(evs []stateEvent) bool { return count(evs, StateLive) > 0 })
	rt.wait(t, "the connection", func(s []received) bool { return len(s) == 1 && s[0].audio == 200 })

	r.targets.set(testStream)
	r.mgr.Refresh(testStream)
	evs := r.rec.wait(t, "t1", 10*time.Second, "idle", func(evs []stateEvent) bool { return count(evs, StateIdle) > 0 })
	if got := states(evs); !slices.Equal(got, []string{StateConnecting, StateLive, StateIdle}) {
		t.Fatalf("reports %v", got)
	}
	if last := evs[len(evs)-1]; last.BytesSent < 200*3 {
		t.Fatalf("idle report says %d bytes sent", last.BytesSent)
	}
	got := rt.wait(t, "the connection to end", func(s []received) bool { return len(s) == 1 && s[0].ended })
	if !slices.Equal(got[0].tracks, []string{"aac"}) || got[0].audio != 200 {
		t.Fatalf("target got tracks %v and %d audio frames, want 200: the start buffer and the subscription spliced", got[0].tracks, got[0].audio)
	}
	if st := r.mgr.States(testStream); st != nil {
		t.Fatalf("States after removing the only target: %+v", st)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	hub, err := stream.New(stream.Config{QueueSize: 1}, stream.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	good := DefaultConfig()
	if _, err := New(good, Deps{Hub: hub, Targets: &targetTable{}}); err != nil {
		t.Fatalf("defaults refused: %v", err)
	}
	for name, mut := range map[string]func(*Config){
		"zero backoff":     func(c *Config) { c.BackoffMin = 0 },
		"max below min":    func(c *Config) { c.BackoffMax = c.BackoffMin / 2 },
		"no dial timeout":  func(c *Config) { c.DialTimeout = 0 },
		"no write timeout": func(c *Config) { c.WriteTimeout = 0 },
		"no stable period": func(c *Config) { c.StableAfter = 0 },
		"negative wait":    func(c *Config) { c.RenditionWait = -time.Second },
	} {
		c := good
		mut(&c)
		if _, err := New(c, Deps{Hub: hub, Targets: &targetTable{}}); err == nil {
			t.Errorf("%s: accepted", name)
		}
	}
	if _, err := New(good, Deps{Hub: hub}); err == nil {
		t.Error("no target source: accepted")
	}
}

var urlCases = []struct {
	url      string
	valid    bool
	redacted string
}{
	{"rtmp://a.rtmp.youtube.com/live2/abcd-efgh-ijkl-mnop", true, "rtmp://a.rtmp.youtube.com/live2/****"},
	{"rtmps://live-api-s.facebook.com:443/rtmp/FB-123-0-Ab?s_bl=1&s_sw=0", true, "rtmps://live-api-s.facebook.com:443/rtmp/****"},
	{"rtmp://live.twitch.tv/app/live_1234_abc", true, "rtmp://live.twitch.tv/app/****"},
	{"rtmp://user:pass@shoal.example:1935/live/sk_x", false, "rtmp://shoal.example:1935/live/****"},
	{"rtmp://shoal.example:1935/live/sk_x", true, "rtmp://shoal.example:1935/live/****"},
	{"rtmp://[::1]:1935/app/inst/key", true, "rtmp://[::1]:1935/app/inst/****"},
	{"RTMP://host/app/key", true, "rtmp://host/app/****"},
	{"http://host/app/key", false, "http://host/app/****"},
	{"rtmp://host/key", false, "rtmp://host/****"},
	{"rtmp://host/app/", false, "rtmp://host/app/"},
	{"rtmp://host/app/?key", false, "rtmp://host/app/****"},
	{"rtmp://host", false, "rtmp://host"},
	{"rtmp:///app/key", false, "rtmp:///app/****"},
	{"rtmp://host:99999/app/key", false, "rtmp://host:99999/app/****"},
	{"rtmp://host:/app/key", false, "rtmp://host:/app/****"},
	{"rtmp://0.0.0.0/app/key", false, "rtmp://0.0.0.0/app/****"},
	{"rtmp://host/app/key#frag", false, "rtmp://host/app/****"},
	{"rtmp://host/app/ke y", false, "rtmp://host/app/****"},
	{"rtmp://host//key", false, "rtmp://host//****"},
	{"rtmp:host/app/key", false, "rtmp://****"},
	{"rtmp://host/app/k%zzey", false, "rtmp://****"},
	{"", false, "****"},
	{"rtmp://host/app/" + strings.Repeat("k", MaxURLLength), false, "rtmp://host/app/****"},
}

func TestValidateAndRedactURL(t *testing.T) {
	t.Parallel()
	for _, c := range urlCases {
		err := ValidateURL(c.url)
		if (err == nil) != c.valid {
			t.Errorf("ValidateURL(%q) = %v, want valid=%v", c.url, err, c.valid)
		}
		if err != nil && (strings.Contains(err.Error(), "key") && strings.Contains(c.url, "/key") && strings.Contains(err.Error(), c.url)) {
			t.Errorf("ValidateURL(%q) error quotes the URL: %v", c.url, err)
		}
		if got := RedactURL(c.url); got != c.redacted {
			t.Errorf("RedactURL(%q) = %q, want %q", c.url, got, c.redacted)
		}
	}
}

func TestPublishNames(t *testing.T) {
	t.Parallel()
	for raw, want := range map[string][3]string{
		"rtmp://a.rtmp.youtube.com/live2/abcd": {"rtmp://a.rtmp.youtube.com/live2", "/live2", "abcd"},
		"rtmps://h:443/rtmp/FB-1?s_bl=1":       {"rtmps://h:443/rtmp", "/rtmp", "FB-1?s_bl=1"},
		"rtmp://h/app/instance/key":            {"rtmp://h/app/instance", "/app/instance", "key"},
	} {
		tg, err := parseTarget(raw)
		if err != nil {
			t.Fatalf("%s: %v", raw, err)
		}
		if got := [3]string{tg.tcURL(), tg.app, tg.key}; got != want {
			t.Errorf("%s: tcUrl, app, key = %q, want %q", raw, got, want)
		}
	}
}

func TestScrub(t *testing.T) {
	t.Parallel()
	raw := "rtmps://bob:s3cret@host/app/sk_live_42?auth=tok123"
	msg := "bad result: publish " + raw + " name=sk_live_42?auth=tok123 user bob:s3cret"
	got := scrub(msg, raw)
	for _, s := range []string{"sk_live_42", "tok123", "s3cret"} {
		if strings.Contains(got, s) {
			t.Fatalf("scrub left %q in %q", s, got)
		}
	}
}

// TestOutputTimestamps drives the conversion with a publisher that restarts:
// the output starts at the first keyframe at 0 and stays monotonic.
func TestOutputTimestamps(t *testing.T) {
	t.Parallel()
	o := &output{video: 0, audio: 1, waitKey: true,
		vSrc: media.Track{Codec: media.CodecH264, ClockRate: 90000},
		aSrc: media.Track{Codec: media.CodecAAC, ClockRate: 48000}}
	now := time.Unix(1000, 0)
	pl := [][]byte{{1}}
	type step struct {
		au      media.AccessUnit
		ok      bool
		pts     time.Duration
		dts     time.Duration
		restart bool
		advance time.Duration
	}
	steps := []step{
		{au: media.AccessUnit{Track: 1, PTS: 48000, DTS: 48000, Keyframe: true, Payload: pl}}, // audio before the keyframe
		{au: media.AccessUnit{Track: 0, PTS: 90000, DTS: 90000, Payload: pl}},                 // not a keyframe
		{au: media.AccessUnit{Track: 0, PTS: 183000, DTS: 180000, Keyframe: true, Payload: pl}, ok: true, pts: 1000 * time.Millisecond / 30, dts: 0},
		{au: media.AccessUnit{Track: 1, PTS: 95040, DTS: 95040, Keyframe: true, Payload: pl}}, // 1.98 s: before the base
		{au: media.AccessUnit{Track: 1, PTS: 96000, DTS: 96000, Keyframe: true, Payload: pl}, ok: true, pts: 0, dts: 0},
		{au: media.AccessUnit{Track: 0, PTS: 186000, DTS: 183000, Payload: pl}, ok: true, pts: 2000 * time.Millisecond / 30, dts: 1000 * time.Millisecond / 30},
		{au: media.AccessUnit{Track: 0, PTS: 0, DTS: 0, Payload: nil}}, // empty
		{restart: true, advance: 2 * time.Second},
		{au: media.AccessUnit{Track: 1, PTS: 0, DTS: 0, Keyframe: true, Payload: pl}}, // waits for the keyframe
		{au: media.AccessUnit{Track: 0, PTS: 3000, DTS: 0, Keyframe: true, Payload: pl}, ok: true,
			pts: 1000*time.Millisecond/30 + 2*time.Second + 1000*time.Millisecond/30, dts: 1000*time.Millisecond/30 + 2*time.Second},
	}
	for i, s := range steps {
		now = now.Add(s.advance)
		if s.restart {
			o.restart()
			continue
		}
		pts, dts, ok := o.place(&s.au, now)
		if ok != s.ok || ok && (pts != s.pts || dts != s.dts) {
			t.Fatalf("step %d: place = %v, %v, %v; want %v, %v, %v", i, pts, dts, ok, s.pts, s.dts, s.ok)
		}
	}
}

func TestSameAs(t *testing.T) {
	t.Parallel()
	tracks := aacTracks(t)
	o, err := newOutput(tracks)
	if err != nil {
		t.Fatal(err)
	}
	if !o.sameAs(aacTracks(t)) {
		t.Fatal("identical tracks differ")
	}
	other := aacTracks(t)
	other[0].AudioConfig = slices.Clone(other[0].AudioConfig)
	other[0].AudioConfig[1] ^= 0x08 // channels
	if o.sameAs(other) {
		t.Fatal("a different AudioSpecificConfig is the same")
	}
	if _, err := newOutput([]media.Track{{Codec: media.CodecH264, ClockRate: 90000, SPS: []byte{0x67, 1, 2, 3}, PPS: []byte{1}}}); err == nil {
		t.Fatal("a broken SPS was accepted (gortmplib would panic on it)")
	}
	if _, err := newOutput(nil); !errors.Is(err, errNoTracks) {
		t.Fatalf("no tracks: %v", err)
	}
}

// FuzzURL checks that ValidateURL and RedactURL never panic and that a URL
// ValidateURL accepts never shows its stream key once redacted.
func FuzzURL(f *testing.F) {
	for _, c := range urlCases {
		f.Add(c.url)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		red := RedactURL(raw)
		tg, err := parseTarget(raw)
		if err != nil {
			return
		}
		key := tg.key
		if i := strings.LastIndexByte(tg.u.EscapedPath(), '/'); i >= 0 {
			key = tg.u.EscapedPath()[i+1:]
		}
		if len(key) >= 3 && strings.Contains(red, key) && !strings.Contains(tg.u.Host+tg.app, key) {
			t.Fatalf("RedactURL(%q) = %q shows the key %q", raw, red, key)
		}
		if strings.Contains(tg.tcURL(), tg.key) && !strings.Contains(tg.u.Host+tg.app, tg.key) {
			t.Fatalf("tcUrl of %q holds the key", raw)
		}
	})
}
