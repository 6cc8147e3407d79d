package packager

import (
	"context"
	"encoding/hex"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/grafov/m3u8"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/packager/live"
)

// Parameter sets of a 320x240 x264 stream.
var (
	testSPS, _ = hex.DecodeString("6764000dacd94141fb0110000003001000000303c0f1429960")
	testPPS, _ = hex.DecodeString("68ebe3cb22c0")
	aacConfig  = []byte{0x11, 0x90} // AAC-LC 48 kHz stereo
)

type rig struct {
	pkg  *Packager
	hub  *stream.Hub
	dir  string
	done chan struct{}
	stop context.CancelFunc
}

func newRig(t *testing.T, format string, grace time.Duration) *rig {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 100000, Grace: grace}, stream.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p, err := New(Config{Dir: dir, SegmentDuration: 2 * time.Second, LiveWindow: 3, Format: format}, Deps{Hub: hub, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{pkg: p, hub: hub, dir: dir, done: make(chan struct{}), stop: cancel}
	go func() { _ = hub.Run(ctx) }()
	go func() { _ = p.Run(ctx); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return r
}

var tracks = []media.Track{
	{Codec: media.CodecH264, ClockRate: 90000, SPS: testSPS, PPS: testPPS, Width: 320, Height: 240},
	{Codec: media.CodecAAC, ClockRate: 48000, AudioConfig: aacConfig, SampleRate: 48000, Channels: 2},
}

// feed publishes seconds of 30 fps video with a keyframe every gop frames and
// 48 kHz AAC frames, interleaved in time order, starting at input time 0.
func feed(pub *stream.Publisher, seconds float64, gop int) {
	feedRange(pub, 0, seconds, gop)
}

// feedEpoch is the ingest time (AccessUnit.NTP) of input time 0 of what
// feed publishes: every rendition fed carries the same, as a transcoder's
// rungs carry their source's.
var feedEpoch = time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)

// feedRange is feed from input time from (seconds) on.
func feedRange(pub *stream.Publisher, from, seconds float64, gop int) {
	frames := int((from + seconds) * 30)
	audioFrames := int((from + seconds) * 48000 / 1024)
	v, a := int(from*30), int(from*48000/1024)
	for v < frames || a < audioFrames {
		vt := float64(v) / 30
		at := float64(a) * 1024 / 48000
		if v < frames && (a >= audioFrames || vt <= at) {
			key := v%gop == 0
			nalu := []byte{0x41, 0x9a, byte(v)}
			payload := [][]byte{nalu}
			if key {
				payload = [][]byte{testSPS, testPPS, {0x65, 0x88, byte(v)}}
			}
			pub.Write(&media.AccessUnit{Track: 0, DTS: int64(v) * 3000, PTS: int64(v) * 3000, Keyframe: key, Payload: payload,
				NTP: feedEpoch.Add(time.Duration(v) * time.Second / 30)})
			v++
		} else {
			pub.Write(&media.AccessUnit{Track: 1, DTS: int64(a) * 1024, PTS: int64(a) * 1024, Keyframe: true, Payload: [][]byte{{0x21, 0x10, byte(a)}},
				NTP: feedEpoch.Add(time.Duration(a) * 1024 * time.Second / 48000)})
			a++
		}
	}
}

func readPlaylist(t *testing.T, path string) *m3u8.MediaPlaylist {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	pl, typ, err := m3u8.DecodeFrom(f, true)
	if err != nil || typ != m3u8.MEDIA {
		t.Fatalf("%s: %v", path, err)
	}
	return pl.(*m3u8.MediaPlaylist)
}

// waitFor polls cond, which reads files the packager writes, until it
// holds or 10 s passed.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.After(10 * time.Second)
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	for !cond() {
		select {
		case <-deadline:
			t.Fatalf("timed out waiting for %s", what)
		case <-tick.C:
		}
	}
}

func segments(pl *m3u8.MediaPlaylist) []*m3u8.MediaSegment {
	var out []*m3u8.MediaSegment
	for _, s := range pl.Segments {
		if s != nil {
			out = append(out, s)
		}
	}
	return out
}

func TestSegmentsAtKeyframesAndEndlist(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, 0)
	key := media.StreamKey{Name: "abc", Rendition: media.RenditionSource}
	pub, err := r.hub.Publish(key, tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(pub, 10, 60)
	pub.Close()
	index := filepath.Join(r.dir, "abc", "source", "index.m3u8")
	waitFor(t, "ENDLIST", func() bool {
		b, _ := os.ReadFile(index)
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	pl := readPlaylist(t, index)
	segs := segments(pl)
	if len(segs) != 5 {
		t.Fatalf("%d segments, want 5", len(segs))
	}
	total := 0.0
	for i, s := range segs {
		total += s.Duration
		if s.Duration < 1.9 || s.Duration > 2.1 {
			t.Errorf("segment %d lasts %.3f s, want 2", i, s.Duration)
		}
		if _, err := os.Stat(filepath.Join(r.dir, "abc", "source", s.URI)); err != nil {
			t.Errorf("segment file: %v", err)
		}
	}
	if total < 9.9 || total > 10.1 {
		t.Errorf("total %.3f s, want 10", total)
	}
	audioIndex := filepath.Join(r.dir, "abc", "audio", "index.m3u8")
	waitFor(t, "audio ENDLIST", func() bool {
		b, _ := os.ReadFile(audioIndex)
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	audio := segments(readPlaylist(t, audioIndex))
	if len(audio) < 5 {
		t.Fatalf("%d audio segments, want 5", len(audio))
	}
	for i := 0; i < 4; i++ { // audio cut at the video boundaries, within one AAC frame
		if d := audio[i].Duration - segs[i].Duration; d < -0.03 || d > 0.03 {
			t.Errorf("audio segment %d lasts %.3f s, video %.3f s", i, audio[i].Duration, segs[i].Duration)
		}
	}
	var master []byte
	waitFor(t, "the final master playlist", func() bool {
		master, _ = os.ReadFile(filepath.Join(r.dir, "abc", "master.m3u8"))
		return strings.Contains(string(master), "AVERAGE-BANDWIDTH=")
	})
	for _, want := range []string{`CODECS="avc1.64000d,mp4a.40.2"`, "RESOLUTION=320x240", `AUDIO="audio"`, `URI="audio/index.m3u8"`, `CHANNELS="2"`, "source/index.m3u8", "AVERAGE-BANDWIDTH="} {
		if !strings.Contains(string(master), want) {
			t.Errorf("master lacks %s:\n%s", want, master)
		}
	}
}

func TestReconnectAddsDiscontinuity(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, time.Hour)
	key := media.StreamKey{Name: "abc", Rendition: media.RenditionSource}
	pub, _ := r.hub.Publish(key, tracks)
	feed(pub, 4, 60)
	pub.Close()
	pub2, err := r.hub.Publish(key, tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(pub2, 4, 60) // timestamps start at 0 again
	rec := filepath.Join(r.dir, "abc", "source", "recording.m3u8")
	waitFor(t, "segments after the reconnect", func() bool {
		b, _ := os.ReadFile(rec)
		return strings.Count(string(b), "#EXTINF") >= 3 && strings.Contains(string(b), "#EXT-X-DISCONTINUITY")
	})
	r.stop() // shutting down finishes the recording
	<-r.done
	pl := readPlaylist(t, rec)
	segs := segments(pl)
	if !pl.Closed || len(segs) != 4 {
		t.Fatalf("closed=%v segments=%d, want a closed playlist of 4", pl.Closed, len(segs))
	}
	if !segs[2].Discontinuity || segs[1].Discontinuity || segs[3].Discontinuity {
		t.Fatalf("discontinuity flags wrong: %v %v %v %v", segs[0].Discontinuity, segs[1].Discontinuity, segs[2].Discontinuity, segs[3].Discontinuity)
	}
	if segs[2].Map == nil || segs[0].Map == nil || segs[2].Map.URI == segs[0].Map.URI {
		t.Fatal("no new init section after the reconnect")
	}
	total := 0.0
	for _, s := range segs {
		total += s.Duration
	}
	if total < 7.9 || total > 8.1 {
		t.Fatalf("recording lasts %.3f s, want 8 (nothing lost)", total)
	}
}

func TestMPEGTSFormat(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatMPEGTS, 0)
	pub, _ := r.hub.Publish(media.StreamKey{Name: "ts1", Rendition: media.RenditionSource}, tracks)
	feed(pub, 4, 60)
	pub.Close()
	index := filepath.Join(r.dir, "ts1", "source", "index.m3u8")
	waitFor(t, "ENDLIST", func() bool {
		b, _ := os.ReadFile(index)
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	segs := segments(readPlaylist(t, index))
	if len(segs) != 2 || !strings.HasSuffix(segs[0].URI, ".ts") || segs[0].Map != nil {
		t.Fatalf("want 2 .ts segments without EXT-X-MAP, got %+v", segs)
	}
	b, err := os.ReadFile(filepath.Join(r.dir, "ts1", "source", segs[0].URI))
	if err != nil || len(b) == 0 || len(b)%188 != 0 || b[0] != 0x47 {
		t.Fatalf("not an MPEG-TS file: %d bytes, err %v", len(b), err)
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	hub, _ := stream.New(stream.Config{QueueSize: 1}, stream.Deps{})
	good := Config{Dir: t.TempDir(), SegmentDuration: time.Second, LiveWindow: 3, Format: FormatFMP4}
	for _, mod := range []func(*Config){
		func(c *Config) { c.Dir = "" },
		func(c *Config) { c.SegmentDuration = 0 },
		func(c *Config) { c.LiveWindow = 0 },
		func(c *Config) { c.Format = "webm" },
	} {
		c := good
		mod(&c)
		if _, err := New(c, Deps{Hub: hub}); err == nil {
			t.Errorf("config %+v accepted", c)
		}
	}
}

func TestNewFinishesRecordingsLeftOpen(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sub := filepath.Join(dir, "abc", "source")
	if err := os.MkdirAll(sub, 0o755); err != nil {
		t.Fatal(err)
	}
	open := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\ns-0.m4s\n"
	for _, name := range []string{"recording.m3u8", "index.m3u8"} {
		if err := os.WriteFile(filepath.Join(sub, name), []byte(open), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	hub, _ := stream.New(stream.Config{QueueSize: 1}, stream.Deps{})
	if _, err := New(Config{Dir: dir, SegmentDuration: time.Second, LiveWindow: 3, Format: FormatFMP4}, Deps{Hub: hub, Log: slog.New(slog.DiscardHandler)}); err != nil {
		t.Fatal(err)
	}
	pl := readPlaylist(t, filepath.Join(sub, "index.m3u8"))
	if !pl.Closed || pl.MediaType != m3u8.VOD || len(segments(pl)) != 1 {
		t.Fatalf("index.m3u8 not finished as VOD: closed=%v type=%v", pl.Closed, pl.MediaType)
	}
	if rec := readPlaylist(t, filepath.Join(sub, "recording.m3u8")); !rec.Closed {
		t.Fatal("recording.m3u8 not closed")
	}
}

func TestRemovedStreamStaysRemoved(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, 0)
	p := r.pkg
	if err := p.Remove("gone"); err != nil {
		t.Fatal(err)
	}
	// A rendition that arrives after the delete (a transcoder's last flush)
	// must not recreate the output.
	pub, err := r.hub.Publish(media.StreamKey{Name: "gone", Rendition: "360p"}, tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(pub, 3, 60)
	pub.Close()
	other, _ := r.hub.Publish(media.StreamKey{Name: "kept", Rendition: media.RenditionSource}, tracks)
	feed(other, 3, 60)
	other.Close()
	waitFor(t, "the other stream", func() bool {
		b, _ := os.ReadFile(filepath.Join(r.dir, "kept", "source", "index.m3u8"))
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	if _, err := os.Stat(filepath.Join(r.dir, "gone")); !os.IsNotExist(err) {
		t.Fatalf("a deleted stream's output came back: %v", err)
	}
	if err := p.Remove("../x"); err == nil {
		t.Fatal("Remove accepted a bad id")
	}
}

// When the rendition that writes the audio group ends while another goes on,
// the other takes the audio over: the audio playlist continues (after a
// discontinuity) and ends only with the stream.
func TestAudioGroupOutlivesItsOwner(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, 0)
	hi, _ := r.hub.Publish(media.StreamKey{Name: "ho", Rendition: "720p"}, tracks)
	feedRange(hi, 0, 0.1, 60) // 720p claims the audio group first
	waitFor(t, "720p to own the audio group", func() bool {
		_, err := os.Stat(filepath.Join(r.dir, "ho", "audio"))
		return err == nil
	})
	lo, _ := r.hub.Publish(media.StreamKey{Name: "ho", Rendition: "360p"}, tracks)
	feedRange(hi, 0.1, 3.9, 60)
	feedRange(lo, 0, 4, 60)
	waitFor(t, "360p to be packaged", func() bool {
		_, err := os.Stat(filepath.Join(r.dir, "ho", "360p", "recording.m3u8"))
		return err == nil
	})
	hi.Close() // the owner ends after 4 s
	audio := filepath.Join(r.dir, "ho", "audio", "recording.m3u8")
	waitFor(t, "the owner to finish", func() bool {
		b, _ := os.ReadFile(filepath.Join(r.dir, "ho", "720p", "index.m3u8"))
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	if b, _ := os.ReadFile(audio); strings.Contains(string(b), "#EXT-X-ENDLIST") {
		t.Fatal("the audio group ended with its owner while the stream goes on")
	}
	feedRange(lo, 4, 4, 60)
	lo.Close()
	waitFor(t, "the audio group to end with the stream", func() bool {
		b, _ := os.ReadFile(audio)
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	pl := readPlaylist(t, audio)
	total, disc := 0.0, 0
	for _, s := range segments(pl) {
		total += s.Duration
		if s.Discontinuity {
			disc++
		}
	}
	if disc != 1 || total < 7 || total > 8.1 {
		t.Fatalf("audio: %.2f s with %d discontinuities, want about 8 s with 1", total, disc)
	}
}

// A source no browser can decode (H.264 High 4:4:4 10-bit, as GStreamer's
// x264enc sends when fed such frames) is not served as it came: nothing is
// written, and Problem says why; a playable broadcast clears it.
func TestUnplayableSourceIsNotServed(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, 0)
	bad := []media.Track{{Codec: media.CodecH264, ClockRate: 90000, SPS: shoaltest.H264SPS(t, "-pix_fmt", "yuv444p10le"), PPS: testPPS,
		Width: 64, Height: 64}, tracks[1]}
	key := media.StreamKey{Name: "yuv444", Rendition: media.RenditionSource}
	pub, err := r.hub.Publish(key, bad)
	if err != nil {
		t.Fatal(err)
	}
	feed(pub, 4, 30)
	waitFor(t, "the packager's reason", func() bool { return r.pkg.Problem("yuv444") != "" })
	if msg := r.pkg.Problem("yuv444"); !strings.Contains(msg, "4:4:4") || !strings.Contains(msg, "yuv420p") {
		t.Errorf("problem %q", msg)
	}
	pub.End()
	if _, err := os.Stat(filepath.Join(r.dir, "yuv444", "source", "index.m3u8")); !os.IsNotExist(err) {
		t.Errorf("the unplayable source was packaged: %v", err)
	}
	pub, err = r.hub.Publish(key, tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(pub, 4, 30)
	waitFor(t, "the reason cleared by a playable broadcast", func() bool { return r.pkg.Problem("yuv444") == "" })
	pub.End()
}

// Deleting output renames it away under the lock and removes it outside:
// what is left of a process that stopped in between goes at the next start,
// and a trashed directory is never a stream.
func TestTrashIsEmptied(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	left := filepath.Join(dir, trashPrefix+"abc-1")
	if err := os.MkdirAll(filepath.Join(left, "source"), 0o755); err != nil {
		t.Fatal(err)
	}
	hub, err := stream.New(stream.Config{QueueSize: 16}, stream.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Dir: dir, SegmentDuration: 2 * time.Second, LiveWindow: 3, Format: FormatFMP4}, Deps{Hub: hub, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	if err := os.MkdirAll(filepath.Join(dir, "gone", "source"), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := p.Remove("gone"); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = p.Run(ctx); close(done) }()
	cancel()
	<-done
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		t.Errorf("%s is left in the HLS directory", e.Name())
	}
}

// The first master playlist waits until every rung the ladder publishes
// has a segment (players load it once), but not for a rung more than two
// segments late.
func TestMasterWaitsForTheLadder(t *testing.T) {
	t.Parallel()
	hub, err := stream.New(stream.Config{QueueSize: 100000}, stream.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	ladder := map[string][]string{"both": {"720p", "360p"}, "late": {"720p", "360p"}}
	p, err := New(Config{Dir: dir, SegmentDuration: 2 * time.Second, LiveWindow: 3, Format: FormatFMP4,
		Renditions: func(id string) []string { return ladder[id] }}, Deps{Hub: hub, Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = hub.Run(ctx) }()
	go func() { _ = p.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	master := func(id string) string {
		b, _ := os.ReadFile(filepath.Join(dir, id, "master.m3u8"))
		return string(b)
	}
	segments := func(id, rendition string) int {
		b, _ := os.ReadFile(filepath.Join(dir, id, rendition, "index.m3u8"))
		return strings.Count(string(b), "#EXTINF")
	}
	// "both": 720p runs two segments ahead alone, then 360p joins.
	hi, _ := hub.Publish(media.StreamKey{Name: "both", Rendition: "720p"}, tracks)
	feed(hi, 5, 60) // two segments cut
	waitFor(t, "720p's segments", func() bool { return segments("both", "720p") >= 2 })
	if m := master("both"); m != "" {
		t.Fatalf("the master playlist was written before 360p had a segment:\n%s", m)
	}
	lo, _ := hub.Publish(media.StreamKey{Name: "both", Rendition: "360p"}, tracks)
	feed(lo, 5, 60)
	waitFor(t, "the master playlist", func() bool { return master("both") != "" })
	if m := master("both"); !strings.Contains(m, "720p/index.m3u8") || !strings.Contains(m, "360p/index.m3u8") {
		t.Fatalf("the first master playlist lacks a rung:\n%s", m)
	}
	// "late": 360p never comes; the master is written once 720p is three
	// segments in.
	solo, _ := hub.Publish(media.StreamKey{Name: "late", Rendition: "720p"}, tracks)
	feed(solo, 9, 60)
	waitFor(t, "the master playlist without the missing rung", func() bool { return strings.Contains(master("late"), "720p/index.m3u8") })
	hi.End()
	lo.End()
	solo.End()
}

// Segments carry EXT-X-PROGRAM-DATE-TIME from the ingest time of their
// first frame: each follows the last by its duration, aligned renditions
// and the audio group give the same instant the same time.
func TestProgramDateTime(t *testing.T) {
	t.Parallel()
	hub, err := stream.New(stream.Config{QueueSize: 100000}, stream.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	now := time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC)
	p, err := New(Config{Dir: dir, SegmentDuration: 2 * time.Second, LiveWindow: 10, Format: FormatFMP4},
		Deps{Hub: hub, Log: slog.New(slog.DiscardHandler), Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = hub.Run(ctx) }()
	go func() { _ = p.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	a, _ := hub.Publish(media.StreamKey{Name: "pdt", Rendition: "720p"}, tracks)
	b, _ := hub.Publish(media.StreamKey{Name: "pdt", Rendition: "360p"}, tracks[:1])
	feed(a, 9, 60)
	feed(b, 9, 30) // keyframes every second: cut on the same 2 s grid
	times := func(rendition string) []time.Time {
		pl := readPlaylist(t, filepath.Join(dir, "pdt", rendition, "index.m3u8"))
		var out []time.Time
		for _, s := range pl.Segments {
			if s != nil {
				out = append(out, s.ProgramDateTime)
			}
		}
		return out
	}
	waitFor(t, "four segments in each playlist", func() bool {
		for _, r := range []string{"720p", "360p", AudioDir} {
			b, _ := os.ReadFile(filepath.Join(dir, "pdt", r, "index.m3u8"))
			if strings.Count(string(b), "#EXT-X-PROGRAM-DATE-TIME") < 4 {
				return false
			}
		}
		return true
	})
	hi, lo, audio := times("720p"), times("360p"), times(AudioDir)
	if !hi[0].Equal(feedEpoch) {
		t.Errorf("the first segment starts at %s, want the ingest time of its first frame, %s", hi[0], feedEpoch)
	}
	for i := 1; i < 4; i++ {
		if d := hi[i].Sub(hi[i-1]); d != 2*time.Second {
			t.Errorf("segment %d starts %s after the last, want 2s", i, d)
		}
		if !hi[i].Equal(lo[i]) {
			t.Errorf("segment %d: 720p at %s, 360p at %s", i, hi[i], lo[i])
		}
		if d := audio[i].Sub(hi[i]); d < -25*time.Millisecond || d > 25*time.Millisecond {
			t.Errorf("segment %d: audio at %s, video at %s", i, audio[i], hi[i])
		}
	}
	a.End()
	b.End()
}

// EXT-X-TARGETDURATION is one value for the whole stream, fixed from its
// start: a source whose keyframes are 4 s apart (passed through) is cut
// between them so that no segment exceeds it, and it is the same in every
// variant (RFC 8216 4.3.3.1 and 6.2.4).
func TestTargetDurationStaysPut(t *testing.T) {
	t.Parallel()
	r := newLLRig(t, Config{PartDuration: 500 * time.Millisecond})
	long, _ := r.hub.Publish(media.StreamKey{Name: "td", Rendition: "720p"}, tracks)
	feed(long, 14, 120) // a keyframe every 4 s
	short, _ := r.hub.Publish(media.StreamKey{Name: "td", Rendition: "360p"}, tracks[:1])
	feed(short, 14, 60)
	snap := r.waitSnap(t, "td/720p/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN >= 6 })
	m := parseMedia(t, snap.Data)
	if m.TargetDuration != 2 {
		t.Fatalf("TARGETDURATION %d, want 2\n%s", m.TargetDuration, snap.Data)
	}
	cutBetween := false
	for _, seg := range m.Segments {
		if seg.Duration > 2499*time.Millisecond {
			t.Errorf("%s lasts %s: it rounds above the target duration", seg.URI, seg.Duration)
		}
		if len(seg.Parts) > 0 && !seg.Parts[0].Independent {
			cutBetween = true
		}
	}
	if !cutBetween {
		t.Errorf("no segment was cut between keyframes:\n%s", snap.Data)
	}
	long.End()
	short.End()
	for _, r2 := range []string{"720p", "360p"} {
		waitFor(t, r2+"'s ENDLIST", func() bool {
			b, _ := os.ReadFile(filepath.Join(r.dir, "td", r2, "index.m3u8"))
			return strings.Contains(string(b), "#EXT-X-ENDLIST")
		})
		b, _ := os.ReadFile(filepath.Join(r.dir, "td", r2, "recording.m3u8"))
		if m := parseMedia(t, b); m.TargetDuration != 2 {
			t.Errorf("%s's recording: TARGETDURATION %d, want 2", r2, m.TargetDuration)
		}
	}
}

// TestAudioBeforeTheFirstKeyframe: audio that reaches the packager before
// the first video keyframe of the same instant (a muxer's order, a loaded
// machine) is kept from the keyframe's time on, not dropped: the audio
// starts with the video.
func TestAudioBeforeTheFirstKeyframe(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, 0)
	pub, err := r.hub.Publish(media.StreamKey{Name: "early", Rendition: media.RenditionSource}, tracks)
	if err != nil {
		t.Fatal(err)
	}
	audio := func(a int) {
		pub.Write(&media.AccessUnit{Track: 1, DTS: int64(a) * 1024, PTS: int64(a) * 1024, Keyframe: true, Payload: [][]byte{{0x21, 0x10, byte(a)}},
			NTP: feedEpoch.Add(time.Duration(a) * 1024 * time.Second / 48000)})
	}
	// Five AAC frames (0.107 s) first, then the video from its keyframe
	// at 0 and the rest interleaved.
	const early = 5
	for a := range early {
		audio(a)
	}
	frames, audioFrames := 4*30, 4*48000/1024
	v, a := 0, early
	for v < frames || a < audioFrames {
		if v < frames && (a >= audioFrames || float64(v)/30 <= float64(a)*1024/48000) {
			key := v%60 == 0
			payload := [][]byte{{0x41, 0x9a, byte(v)}}
			if key {
				payload = [][]byte{testSPS, testPPS, {0x65, 0x88, byte(v)}}
			}
			pub.Write(&media.AccessUnit{Track: 0, DTS: int64(v) * 3000, PTS: int64(v) * 3000, Keyframe: key, Payload: payload,
				NTP: feedEpoch.Add(time.Duration(v) * time.Second / 30)})
			v++
		} else {
			audio(a)
			a++
		}
	}
	pub.Close()
	dir := filepath.Join(r.dir, "early")
	for _, rel := range []string{"source/index.m3u8", "audio/index.m3u8"} {
		waitFor(t, rel+" ENDLIST", func() bool {
			b, _ := os.ReadFile(filepath.Join(dir, rel))
			return strings.Contains(string(b), "#EXT-X-ENDLIST")
		})
	}
	video := segments(readPlaylist(t, filepath.Join(dir, "source", "index.m3u8")))
	aud := segments(readPlaylist(t, filepath.Join(dir, "audio", "index.m3u8")))
	if d := aud[0].Duration - video[0].Duration; d < -0.03 || d > 0.03 {
		t.Fatalf("the first audio segment lasts %.3f s, the video's %.3f s: the audio before the first keyframe was dropped", aud[0].Duration, video[0].Duration)
	}
}
