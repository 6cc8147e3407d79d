package transcode

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"maps"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// These tests run the real stream hub and the real FFmpeg pipeline: sources
// are published on the hub as ingest would, and the renditions the
// transcoder publishes are read back from the hub as the packager would.

var quiet = slog.New(slog.DiscardHandler)

// waitLimit bounds every wait on the transcoder, so that a hang fails the
// test with a message instead of running into the package timeout.
const waitLimit = 60 * time.Second

// newHub runs a hub with no reconnect grace and queues large enough that no
// test ever loses an access unit.
func newHub(t *testing.T) *stream.Hub {
	t.Helper()
	h, err := stream.New(stream.Config{QueueSize: 1 << 16}, stream.Deps{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h
}

// running is a started Transcoder; stop cancels it and waits for Run.
type running struct {
	*Transcoder
	reg  *prometheus.Registry
	stop func()
	// metrics is signalled when the transcoder's metrics changed.
	metrics chan struct{}
}

func startTranscoder(t *testing.T, hub *stream.Hub, cfg Config) *running {
	t.Helper()
	return startTranscoderWith(t, hub, cfg, quiet, nil)
}

// startTranscoderWith is startTranscoder logging to log, with prepare
// (when set) called between New and Run.
func startTranscoderWith(t *testing.T, hub *stream.Hub, cfg Config, log *slog.Logger, prepare func(*Transcoder)) *running {
	t.Helper()
	reg := prometheus.NewRegistry()
	tc, err := New(cfg, Deps{Log: log, Hub: hub, Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	metrics := make(chan struct{}, 1)
	tc.onMetrics = func() {
		select {
		case metrics <- struct{}{}:
		default:
		}
	}
	if prepare != nil {
		prepare(tc)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tc.Run(ctx) }()
	stopped := false
	stop := func() {
		if stopped {
			return
		}
		stopped = true
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Errorf("Run: %v", err)
			}
		case <-time.After(waitLimit):
			t.Errorf("Run did not return within %s of its context being cancelled", waitLimit)
		}
	}
	t.Cleanup(stop)
	return &running{Transcoder: tc, reg: reg, stop: stop, metrics: metrics}
}

func softwareConfig(ladder string, maxLadders int) Config {
	l, err := media.ParseLadder(ladder)
	if err != nil {
		panic(err)
	}
	return Config{Ladder: l, MaxLadders: maxLadders, HWAccel: HWNone, Preset: "ultrafast", SegmentDuration: time.Second}
}

// metric returns the value of the unlabelled counter or gauge name in reg.
func metric(t *testing.T, reg *prometheus.Registry, name string) float64 {
	t.Helper()
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	for _, mf := range mfs {
		if mf.GetName() != name || len(mf.GetMetric()) != 1 {
			continue
		}
		m := mf.GetMetric()[0]
		if m.GetCounter() != nil {
			return m.GetCounter().GetValue()
		}
		return m.GetGauge().GetValue()
	}
	t.Fatalf("metric %s is not registered", name)
	return 0
}

// waitMetric waits until metric name reads want.
func waitMetric(t *testing.T, tc *running, name string, want float64) {
	t.Helper()
	if !tc.awaitMetric(t, name, func(v float64) bool { return v == want }, waitLimit) {
		t.Fatalf("%s = %v after %s, want %v", name, metric(t, tc.reg, name), waitLimit, want)
	}
}

// awaitMetric waits until metric name satisfies ok, looking again each time
// the transcoder's metrics change; it reports false after limit.
func (tc *running) awaitMetric(t *testing.T, name string, ok func(float64) bool, limit time.Duration) bool {
	t.Helper()
	deadline := time.NewTimer(limit)
	defer deadline.Stop()
	for !ok(metric(t, tc.reg, name)) {
		select {
		case <-tc.metrics:
		case <-deadline.C:
			return false
		}
	}
	return true
}

// makeTS is internal/testutil.MakeTS.
var makeTS = shoaltest.MakeTS

// demux reads a clip into its video track and access units.
func demux(t *testing.T, path string) (media.Track, []*media.AccessUnit) {
	t.Helper()
	var track media.Track
	var aus []*media.AccessUnit
	err := ffmpeg.DemuxVideo(path, func(tr media.Track, au *media.AccessUnit) error {
		track = tr
		aus = append(aus, au)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(aus) == 0 || track.SPS == nil || track.PPS == nil {
		t.Fatalf("%s: %d access units, SPS %x, PPS %x", path, len(aus), track.SPS, track.PPS)
	}
	return track, aus
}

// renditionOut is what a subscriber read from one rendition, to io.EOF.
type renditionOut struct {
	tracks   []media.Track
	restarts int
	aus      []*media.AccessUnit
	keys     []int64 // PTS of video keyframes
}

func readAll(t *testing.T, sub *stream.Subscriber) renditionOut {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	var out renditionOut
	for {
		ev, err := sub.Next(ctx)
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatalf("%s did not end: %v", sub.Key(), err)
		}
		switch {
		case ev.Tracks != nil:
			if out.tracks != nil {
				out.restarts++
			}
			out.tracks = ev.Tracks
		case ev.AU != nil:
			out.aus = append(out.aus, ev.AU)
			if ev.AU.Keyframe && ev.AU.Track < len(out.tracks) && out.tracks[ev.AU.Track].IsVideo() {
				out.keys = append(out.keys, ev.AU.PTS)
			}
		}
	}
}

func nextRendition(t *testing.T, w *stream.Watcher) *stream.Subscriber {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), waitLimit)
	defer cancel()
	sub, err := w.Next(ctx)
	if err != nil {
		t.Fatalf("waiting for a rendition: %v", err)
	}
	return sub
}

// noMoreRenditions checks, once the transcoder has stopped (so that every
// publication it made is queued), that w holds no other rendition.
func noMoreRenditions(t *testing.T, w *stream.Watcher) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	for {
		sub, err := w.Next(ctx)
		if err != nil {
			return
		}
		t.Errorf("unexpected rendition %s", sub.Key())
		sub.Close()
	}
}

// A 360p source gets the rungs at or below 360p, each its own rendition with
// keyframes at the same instants, and every rung ends with the source.
func TestLadderFromHub(t *testing.T) {
	t.Parallel()
	track, aus := demux(t, makeTS(t, 640, 360, 4, 45)) // source GOP 1.5 s: the 1 s grid must not follow it
	if track.Width != 640 || track.Height != 360 {
		t.Fatalf("demuxed track is %dx%d", track.Width, track.Height)
	}
	hub := newHub(t)
	tc := startTranscoder(t, hub, softwareConfig("480p:1M,360p:700k,240p:400k", 1))
	if tc.Backend() != ffmpeg.BackendSoftware || tc.Limit() != 1 {
		t.Fatalf("backend %q, limit %d", tc.Backend(), tc.Limit())
	}
	w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition != media.RenditionSource })
	defer w.Close()

	pub, err := hub.Publish(media.StreamKey{Name: "lad", Rendition: media.RenditionSource}, []media.Track{track})
	if err != nil {
		t.Fatal(err)
	}
	for _, au := range aus {
		pub.Write(au)
	}
	pub.Close() // no grace: the source ends once the transcoder has read it all

	subs := map[string]*stream.Subscriber{}
	for range 2 {
		sub := nextRendition(t, w)
		if sub.Key().Name != "lad" {
			t.Fatalf("rendition of an unknown stream: %s", sub.Key())
		}
		subs[sub.Key().Rendition] = sub
	}
	want := map[string][2]int{"360p": {640, 360}, "240p": {428, 240}}
	outs := map[string]renditionOut{}
	for name := range want {
		sub := subs[name]
		if sub == nil {
			t.Fatalf("renditions %v, want 360p and 240p", slices.Collect(maps.Keys(subs)))
		}
		outs[name] = readAll(t, sub) // io.EOF while the transcoder still runs: the rung ended with its source
		sub.Close()
	}
	tc.stop()
	noMoreRenditions(t, w)

	for name, size := range want {
		o := outs[name]
		if len(o.tracks) != 1 || o.restarts != 0 {
			t.Fatalf("%s: tracks %+v (%d restarts), want one video track (the source has no audio)", name, o.tracks, o.restarts)
		}
		tr := o.tracks[0]
		if tr.Codec != media.CodecH264 || tr.ClockRate != 90000 || tr.Width != size[0] || tr.Height != size[1] {
			t.Errorf("%s: track %s %d Hz %dx%d, want h264 90000 Hz %dx%d", name, tr.Codec, tr.ClockRate, tr.Width, tr.Height, size[0], size[1])
		}
		var sps h264.SPS
		if err := sps.Unmarshal(tr.SPS); err != nil {
			t.Fatalf("%s: SPS: %v", name, err)
		}
		if sps.Width() != size[0] || sps.Height() != size[1] {
			t.Errorf("%s: SPS says %dx%d, want %dx%d", name, sps.Width(), sps.Height(), size[0], size[1])
		}
		if len(tr.PPS) == 0 {
			t.Errorf("%s: no PPS", name)
		}
		if len(o.aus) != len(aus) {
			t.Errorf("%s: %d frames, want %d (one per source frame)", name, len(o.aus), len(aus))
		}
		if len(o.aus) > 0 && !o.aus[0].Keyframe {
			t.Errorf("%s does not start with a keyframe", name)
		}
		if len(o.keys) != 4 {
			t.Errorf("%s: keyframes at %v, want 4 (one a second)", name, o.keys)
		}
		for i := 1; i < len(o.keys); i++ {
			if d := o.keys[i] - o.keys[i-1]; d != 90000 {
				t.Errorf("%s: keyframes %d ticks apart, want 90000", name, d)
			}
		}
	}
	if !slices.Equal(outs["360p"].keys, outs["240p"].keys) {
		t.Errorf("keyframes differ across renditions: 360p %v, 240p %v", outs["360p"].keys, outs["240p"].keys)
	}
	if n := testutil.CollectAndCount(tc.fallbacks); n != 0 {
		t.Errorf("the ladder fell back (%d fallback series)", n)
	}
}

var aacTrack = media.Track{Codec: media.CodecAAC, ClockRate: 48000, AudioConfig: []byte{0x11, 0x90}, SampleRate: 48000, Channels: 2} // AAC-LC 48 kHz stereo

// A source with no video has nothing to transcode: it is forwarded unchanged
// as the copy rendition.
func TestAudioOnlySourceIsCopied(t *testing.T) {
	t.Parallel()
	hub := newHub(t)
	tc := startTranscoder(t, hub, softwareConfig("360p:700k,240p:400k", 1))
	w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition != media.RenditionSource })
	defer w.Close()

	pub, err := hub.Publish(media.StreamKey{Name: "radio", Rendition: media.RenditionSource}, []media.Track{aacTrack})
	if err != nil {
		t.Fatal(err)
	}
	var sent []*media.AccessUnit
	for i := range 50 {
		au := &media.AccessUnit{PTS: int64(i) * 1024, DTS: int64(i) * 1024, Keyframe: true, Payload: [][]byte{{0x21, 0x10, byte(i), 0x80}}}
		sent = append(sent, au)
		pub.Write(au)
	}
	pub.Close()

	sub := nextRendition(t, w)
	defer sub.Close()
	if want := (media.StreamKey{Name: "radio", Rendition: CopyRendition}); sub.Key() != want {
		t.Fatalf("rendition %s, want %s", sub.Key(), want)
	}
	o := readAll(t, sub)
	if !reflect.DeepEqual(o.tracks, []media.Track{aacTrack}) || o.restarts != 0 {
		t.Errorf("copy tracks %+v (%d restarts), want the source's %+v", o.tracks, o.restarts, aacTrack)
	}
	if len(o.aus) != len(sent) {
		t.Fatalf("copy has %d access units, the source %d", len(o.aus), len(sent))
	}
	for i, au := range o.aus {
		if !reflect.DeepEqual(*au, *sent[i]) {
			t.Errorf("access unit %d: %+v, sent %+v", i, *au, *sent[i])
		}
	}
	// The API shows why the stream has no ladder.
	if p := tc.Problem("radio"); !strings.Contains(p, "no H.264 or H.265 video") {
		t.Errorf("Problem = %q", p)
	}
}

// Claim hands out at most MaxLadders slots, counts refusals, and frees a
// slot when its ladder ends.
func TestClaimCapacity(t *testing.T) {
	t.Parallel()
	hub := newHub(t)
	tc := startTranscoder(t, hub, softwareConfig("360p:700k", 1))
	if got := metric(t, tc.reg, "shoal_transcode_ladders_limit"); got != 1 {
		t.Errorf("ladders_limit = %v, want 1", got)
	}
	if !tc.Claim("a") {
		t.Fatal(`Claim("a") on an idle node = false`)
	}
	if !tc.Claim("a") {
		t.Fatal(`Claim("a") again = false; every watcher of one source must get the same answer`)
	}
	if got := testutil.ToFloat64(tc.refused); got != 0 {
		t.Fatalf("refused = %v after claims that fit", got)
	}
	if tc.Claim("b") {
		t.Fatal(`Claim("b") past MaxLadders = true`)
	}
	if got := metric(t, tc.reg, "shoal_transcode_refused_total"); got != 1 {
		t.Fatalf("shoal_transcode_refused_total = %v, want 1", got)
	}
	if got := metric(t, tc.reg, "shoal_transcode_ladders_running"); got != 1 {
		t.Fatalf("shoal_transcode_ladders_running = %v, want 1", got)
	}

	// The ladder of "a" runs (its source has no video: it is copied) and
	// ends with its source; its slot is then free for "b".
	w := hub.Watch(func(k media.StreamKey) bool { return k.Name == "a" && k.Rendition == CopyRendition })
	defer w.Close()
	pub, err := hub.Publish(media.StreamKey{Name: "a", Rendition: media.RenditionSource}, []media.Track{aacTrack})
	if err != nil {
		t.Fatal(err)
	}
	pub.Write(&media.AccessUnit{Keyframe: true, Payload: [][]byte{{0x21, 0x10, 0x04, 0x80}}})
	pub.Close()
	sub := nextRendition(t, w) // the job for "a" runs
	if o := readAll(t, sub); len(o.aus) != 1 {
		t.Errorf("copy of a: %d access units, want 1", len(o.aus))
	}
	sub.Close()
	waitMetric(t, tc, "shoal_transcode_ladders_running", 0)
	if !tc.Claim("b") {
		t.Fatal(`Claim("b") after the ladder of "a" ended = false`)
	}
	if got := metric(t, tc.reg, "shoal_transcode_refused_total"); got != 1 {
		t.Errorf("shoal_transcode_refused_total = %v, want still 1", got)
	}
}

// MaxLadders 0 turns transcoding off: nothing is claimed, nothing refused.
func TestClaimWithTranscodingOff(t *testing.T) {
	t.Parallel()
	hub := newHub(t)
	tc := startTranscoder(t, hub, softwareConfig("360p:700k", 0))
	for _, id := range []string{"a", "a", "b"} {
		if tc.Claim(id) {
			t.Fatalf("Claim(%q) with MaxLadders 0 = true", id)
		}
	}
	if got := metric(t, tc.reg, "shoal_transcode_refused_total"); got != 0 {
		t.Errorf("shoal_transcode_refused_total = %v with transcoding off, want 0", got)
	}
}

// Asking for NVENC fails exactly when NVENC does not work here (no NVIDIA
// GPU, no driver), and the error says so.
func TestNVENCAskedForButMissing(t *testing.T) {
	t.Parallel()
	probeErr := ffmpeg.Probe(ffmpeg.BackendNVENC)
	cfg := softwareConfig("360p:700k", 1)
	cfg.HWAccel = HWNVENC
	tc, err := New(cfg, Deps{Log: quiet, Hub: newHub(t)})
	if probeErr != nil {
		if err == nil {
			t.Fatalf("New with nvenc succeeded although the probe failed: %v", probeErr)
		}
		if !strings.Contains(err.Error(), "nvenc") {
			t.Fatalf("error does not mention nvenc: %v", err)
		}
		return
	}
	if err != nil {
		t.Fatalf("NVENC works here, but New with nvenc failed: %v", err)
	}
	if tc.Backend() != ffmpeg.BackendNVENC {
		t.Fatalf("backend %q, want nvenc", tc.Backend())
	}
}

func TestNewValidatesConfig(t *testing.T) {
	t.Parallel()
	hub := newHub(t)
	good := softwareConfig("360p:700k", 1)
	for name, c := range map[string]struct {
		mutate func(*Config, *Deps)
		want   string
	}{
		"empty ladder":          {func(c *Config, _ *Deps) { c.Ladder = nil }, "ladder"},
		"zero segment duration": {func(c *Config, _ *Deps) { c.SegmentDuration = 0 }, "segment duration"},
		"negative segment":      {func(c *Config, _ *Deps) { c.SegmentDuration = -time.Second }, "segment duration"},
		"nil hub":               {func(_ *Config, d *Deps) { d.Hub = nil }, "Hub"},
		"unknown hwaccel":       {func(c *Config, _ *Deps) { c.HWAccel = "vaapi" }, "hwaccel"},
	} {
		cfg, deps := good, Deps{Log: quiet, Hub: hub}
		c.mutate(&cfg, &deps)
		if _, err := New(cfg, deps); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: err = %v, want one mentioning %q", name, err, c.want)
		}
	}
	if _, err := New(good, Deps{Log: quiet, Hub: hub}); err != nil {
		t.Fatalf("a good config: %v", err)
	}
}

// A hardware encoder that fails when the ladder starts falls back to the
// software encoder for that stream: the renditions still come out, the
// fallback is counted, and the API has nothing to complain about.
func TestHardwareFailureFallsBackToSoftware(t *testing.T) {
	t.Parallel()
	if ffmpeg.Probe(ffmpeg.BackendQSV) == nil {
		t.Skip("Quick Sync works on this machine; the failure this test needs cannot happen")
	}
	track, aus := demux(t, makeTS(t, 320, 240, 2, 30))
	hub := newHub(t)
	tc := startTranscoder(t, hub, softwareConfig("240p:400k", 1))
	// As if auto had found QSV and it broke once streams started: its
	// encoders fail to open here.
	tc.Transcoder.accel.Backend = ffmpeg.BackendQSV
	w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition != media.RenditionSource })
	defer w.Close()
	pub, err := hub.Publish(media.StreamKey{Name: "hw", Rendition: media.RenditionSource}, []media.Track{track})
	if err != nil {
		t.Fatal(err)
	}
	for _, au := range aus {
		pub.Write(au)
	}
	pub.Close()
	sub := nextRendition(t, w)
	defer sub.Close()
	if sub.Key().Rendition != "240p" {
		t.Fatalf("rendition %s, want 240p", sub.Key())
	}
	if o := readAll(t, sub); len(o.aus) < 50 {
		t.Fatalf("%d frames after the fallback, want about 60", len(o.aus))
	}
	if got := testutil.ToFloat64(tc.fallbacks.WithLabelValues(ffmpeg.BackendSoftware)); got != 1 {
		t.Fatalf("fallbacks{to=software} = %v, want 1", got)
	}
	if p := tc.Problem("hw"); p != "" {
		t.Fatalf("Problem = %q after a successful fallback", p)
	}
}

// A ladder that cannot keep up loses source frames in the hub; the
// transcoder counts them so operators see it.
func TestFallingBehindIsCounted(t *testing.T) {
	t.Parallel()
	track, aus := demux(t, makeTS(t, 320, 240, 4, 15))
	h, err := stream.New(stream.Config{QueueSize: 16}, stream.Deps{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	tc := startTranscoder(t, h, softwareConfig("240p:400k", 1))
	pub, err := h.Publish(media.StreamKey{Name: "slow", Rendition: media.RenditionSource}, []media.Track{track})
	if err != nil {
		t.Fatal(err)
	}
	for _, au := range aus { // all at once: far faster than any encoder
		pub.Write(au)
	}
	pub.Close()
	if !tc.awaitMetric(t, "shoal_transcode_dropped_source_access_units_total", func(v float64) bool { return v > 0 }, waitLimit) {
		t.Fatal("no dropped source frames were counted")
	}
}

// A rung is published when its encoder's first keyframe comes out, a
// fraction of a second after the source's; its audio still starts with
// its video, not when the rung was published.
func TestRungAudioStartsWithVideo(t *testing.T) {
	t.Parallel()
	track, vids := demux(t, makeTS(t, 320, 240, 3, 30))
	hub := newHub(t)
	tc := startTranscoder(t, hub, softwareConfig("240p:400k", 1))
	w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition != media.RenditionSource })
	defer w.Close()
	pub, err := hub.Publish(media.StreamKey{Name: "av", Rendition: media.RenditionSource}, []media.Track{track, aacTrack})
	if err != nil {
		t.Fatal(err)
	}
	// Interleave 1024-sample AAC frames (the payload is not decoded) with
	// the video, by time, from the first video frame's time on.
	start := vids[0].PTS
	var next int64 // in samples from start
	for _, v := range vids {
		for media.Ticks(media.Duration(next, 48000), 90000) <= v.PTS-start {
			pts := start*48000/90000 + next
			pub.Write(&media.AccessUnit{Track: 1, PTS: pts, DTS: pts, Keyframe: true, Payload: [][]byte{{0x21, 0x10, 0x04}}})
			next += 1024
		}
		v.Track = 0
		pub.Write(v)
	}
	pub.Close()
	sub := nextRendition(t, w)
	out := readAll(t, sub)
	sub.Close()
	tc.stop()
	var firstVideo, firstAudio time.Duration = -1, -1
	for _, au := range out.aus {
		switch {
		case au.Track == 0 && firstVideo < 0:
			firstVideo = media.Duration(au.PTS, 90000)
		case au.Track == 1 && firstAudio < 0:
			firstAudio = media.Duration(au.PTS, 48000)
		}
	}
	if firstVideo < 0 || firstAudio < 0 {
		t.Fatalf("the rung has video from %s and audio from %s", firstVideo, firstAudio)
	}
	if d := firstAudio - firstVideo; d < -30*time.Millisecond || d > 30*time.Millisecond {
		t.Errorf("the rung's audio starts %s after its video (video at %s), want within one AAC frame", d, firstVideo)
	}
}

// A source no browser decodes (H.264 High 4:4:4 10-bit) is transcoded into
// rungs they all decode (8-bit 4:2:0).
func TestUnplayableSourceIsTranscoded(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "444.ts")
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30",
		"-t", "2", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv444p10le", "-g", "30", "-f", "mpegts", path).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	track, aus := demux(t, path)
	if media.Unplayable(track) == "" {
		t.Fatal("the test source is playable")
	}
	hub := newHub(t)
	tc := startTranscoder(t, hub, softwareConfig("240p:400k", 1))
	w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition != media.RenditionSource })
	defer w.Close()
	pub, err := hub.Publish(media.StreamKey{Name: "hi444", Rendition: media.RenditionSource}, []media.Track{track})
	if err != nil {
		t.Fatal(err)
	}
	for _, au := range aus {
		pub.Write(au)
	}
	pub.Close()
	sub := nextRendition(t, w)
	out := readAll(t, sub)
	sub.Close()
	tc.stop()
	if sub.Key().Rendition != "240p" || len(out.tracks) != 1 {
		t.Fatalf("rendition %s with tracks %+v", sub.Key(), out.tracks)
	}
	if why := media.Unplayable(out.tracks[0]); why != "" {
		t.Errorf("the rung is %s", why)
	}
	if len(out.aus) < len(aus)-1 {
		t.Errorf("%d frames from %d", len(out.aus), len(aus))
	}
}
