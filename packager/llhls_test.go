package packager

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	hlsplaylist "github.com/bluenviron/gohlslib/v2/pkg/playlist"
	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager/live"
)

type llRig struct {
	*rig
	live *live.Registry
}

func newLLRig(t *testing.T, cfg Config) *llRig {
	t.Helper()
	return newLLRigWith(t, cfg, Deps{}, nil)
}

// newLLRigWith is newLLRig with deps' Log and Registerer (when set), and
// setup run on the packager before it starts.
func newLLRigWith(t *testing.T, cfg Config, deps Deps, setup func(*Packager)) *llRig {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 1 << 20}, stream.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	reg := live.New()
	cfg.Dir, cfg.Format = dir, FormatFMP4
	if cfg.SegmentDuration == 0 {
		cfg.SegmentDuration = 2 * time.Second
	}
	if cfg.LiveWindow == 0 {
		cfg.LiveWindow = 3
	}
	deps.Hub, deps.Live = hub, reg
	if deps.Log == nil {
		deps.Log = slog.New(slog.DiscardHandler)
	}
	if deps.Registerer == nil {
		deps.Registerer = prometheus.NewRegistry()
	}
	p, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	if setup != nil {
		setup(p)
	}
	ctx, cancel := context.WithCancel(context.Background())
	r := &rig{pkg: p, hub: hub, dir: dir, done: make(chan struct{}), stop: cancel}
	go func() { _ = hub.Run(ctx) }()
	go func() { _ = p.Run(ctx); close(r.done) }()
	t.Cleanup(func() { cancel(); <-r.done })
	return &llRig{rig: r, live: reg}
}

// waitSnap waits for the live playlist at key to satisfy ok.
func (r *llRig) waitSnap(t *testing.T, key string, ok func(*live.Snapshot) bool) *live.Snapshot {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for {
		s, err := r.live.Wait(ctx, key, func(s *live.Snapshot) bool { return ok(s) })
		if err != nil {
			t.Fatalf("waiting for %s: %v", key, err)
		}
		if s != nil {
			return s
		}
		// Not published yet: wait for the packager to start it.
		select {
		case <-ctx.Done():
			t.Fatalf("%s was never published", key)
		case <-time.After(5 * time.Millisecond):
		}
	}
}

func parseMedia(t *testing.T, data []byte) *hlsplaylist.Media {
	t.Helper()
	pl, err := hlsplaylist.Unmarshal(data)
	if err != nil {
		t.Fatalf("gohlslib rejects the playlist: %v\n%s", err, data)
	}
	m, ok := pl.(*hlsplaylist.Media)
	if !ok {
		t.Fatalf("not a media playlist:\n%s", data)
	}
	return m
}

// LL-HLS: the live playlist lists parts of at most the part target,
// announces the next one, reports the other renditions, and every segment
// is exactly the concatenation of its parts; an independent parser
// (gohlslib) reads it.
func TestLowLatencyParts(t *testing.T) {
	t.Parallel()
	r := newLLRig(t, Config{PartDuration: 500 * time.Millisecond})
	pub, _ := r.hub.Publish(media.StreamKey{Name: "ll", Rendition: "720p"}, tracks)
	feed(pub, 9, 60) // keyframes every 2 s
	key := "ll/720p/index.m3u8"
	snap := r.waitSnap(t, key, func(s *live.Snapshot) bool { return s.NextMSN == 4 && s.Parts == 1 })
	m := parseMedia(t, snap.Data)
	if m.ServerControl == nil || !m.ServerControl.CanBlockReload || m.ServerControl.PartHoldBack == nil ||
		*m.ServerControl.PartHoldBack != 1500*time.Millisecond {
		t.Fatalf("server control: %+v\n%s", m.ServerControl, snap.Data)
	}
	if m.PartInf == nil || m.PartInf.PartTarget != 500*time.Millisecond {
		t.Fatalf("part target: %+v", m.PartInf)
	}
	if m.TargetDuration != 2 || m.MediaSequence != 1 || len(m.Segments) != 3 {
		t.Fatalf("target %d, sequence %d, %d segments\n%s", m.TargetDuration, m.MediaSequence, len(m.Segments), snap.Data)
	}
	if m.PreloadHint == nil || m.PreloadHint.URI != strings.TrimSuffix(m.Segments[2].URI, "-3.m4s")+"-4-p1.m4s" {
		t.Fatalf("preload hint %+v\n%s", m.PreloadHint, snap.Data)
	}
	if snap.Hint != "ll/720p/"+m.PreloadHint.URI {
		t.Fatalf("snapshot hint %q", snap.Hint)
	}
	if len(m.Parts) != 1 || !m.Parts[0].Independent || m.Parts[0].Duration != 500*time.Millisecond {
		t.Fatalf("pending parts %+v", m.Parts)
	}
	if m.Segments[0].Parts != nil || len(m.Segments[1].Parts) != 4 || len(m.Segments[2].Parts) != 4 {
		t.Fatalf("parts per segment: %d %d %d", len(m.Segments[0].Parts), len(m.Segments[1].Parts), len(m.Segments[2].Parts))
	}
	for _, seg := range m.Segments[1:] {
		var whole []byte
		var total time.Duration
		for i, p := range seg.Parts {
			if p.Duration > 500*time.Millisecond || p.Duration < 425*time.Millisecond {
				t.Errorf("%s lasts %s, want 425ms..500ms", p.URI, p.Duration)
			}
			if p.Independent != (i == 0) {
				t.Errorf("%s: independent=%v", p.URI, p.Independent)
			}
			part, ok := r.live.LookupPart("ll/720p/" + p.URI)
			if !ok {
				t.Fatalf("%s is not served", p.URI)
			}
			whole = append(whole, part.Data...)
			total += p.Duration
		}
		file, err := os.ReadFile(filepath.Join(r.dir, "ll", "720p", seg.URI))
		if err != nil || !bytes.Equal(file, whole) {
			t.Errorf("%s is not the concatenation of its parts (%d bytes, parts %d bytes, err %v)", seg.URI, len(file), len(whole), err)
		}
		if total != seg.Duration {
			t.Errorf("%s: parts last %s, the segment %s", seg.URI, total, seg.Duration)
		}
	}
	if !regexp.MustCompile(`(?m)^#EXT-X-RENDITION-REPORT:URI="../audio/index.m3u8",LAST-MSN=[0-9]+,LAST-PART=[0-9]+$`).Match(snap.Data) {
		t.Errorf("no rendition report of the audio group:\n%s", snap.Data)
	}
	audio := r.waitSnap(t, "ll/audio/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN == 4 })
	if am := parseMedia(t, audio.Data); len(am.Segments[2].Parts) < 3 || am.PartInf == nil {
		t.Errorf("the audio group has no parts:\n%s", audio.Data)
	}
	// The file on disk is the same list without the LL-HLS tags.
	disk, err := os.ReadFile(filepath.Join(r.dir, "ll", "720p", "index.m3u8"))
	if err != nil || bytes.Contains(disk, []byte("#EXT-X-PART")) || len(parseMedia(t, disk).Segments) != 3 {
		t.Errorf("index.m3u8 on disk: %v\n%s", err, disk)
	}

	// The end: the registry lets go (waiters wake), and the disk has the
	// whole recording as VOD.
	woke := make(chan *live.Snapshot, 1)
	go func() {
		s, _ := r.live.Wait(context.Background(), key, func(*live.Snapshot) bool { return false })
		woke <- s
	}()
	pub.End()
	if s := <-woke; s != nil {
		t.Fatalf("a waiter got %v after the end, want nil (serve the disk)", s)
	}
	for _, name := range []string{"index.m3u8", "recording.m3u8"} {
		data, err := os.ReadFile(filepath.Join(r.dir, "ll", "720p", name))
		if err != nil {
			t.Fatal(err)
		}
		if m := parseMedia(t, data); !m.Endlist || len(m.Segments) != 5 || m.Segments[0].Parts != nil {
			t.Errorf("%s: ended=%v, %d segments\n%s", name, m.Endlist, len(m.Segments), data)
		}
	}
	if _, ok := r.live.LookupPart("ll/720p/" + m.Segments[2].Parts[0].URI); ok {
		t.Error("parts are still held after the end")
	}
}

// A long stream costs the same per segment at its end as at its start:
// the bytes written per segment (segment, playlist, recording line) do not
// grow with the number of segments before. (Bytes, not time: the fsyncs,
// some 15,000 of them, are left out.)
func TestCostPerSegmentStaysFlat(t *testing.T) {
	t.Parallel()
	r := newLLRig(t, Config{SegmentDuration: time.Second, LiveWindow: 6, PartDuration: 300 * time.Millisecond, NoSync: true})
	vtrack := []media.Track{tracks[0]}
	pub, _ := r.hub.Publish(media.StreamKey{Name: "flat", Rendition: "720p"}, vtrack)
	key := "flat/720p/index.m3u8"
	// 4 fps, a keyframe every 4 frames: one segment a second.
	frame := 0
	segmentsUpTo := func(n uint64) {
		for ; uint64(frame) < n*4+1; frame++ {
			payload := [][]byte{{0x41, 0x9a, byte(frame)}}
			if frame%4 == 0 {
				payload = [][]byte{testSPS, testPPS, {0x65, 0x88, byte(frame)}}
			}
			pub.Write(&media.AccessUnit{Track: 0, DTS: int64(frame) * 22500, PTS: int64(frame) * 22500, Keyframe: frame%4 == 0, Payload: payload})
		}
		r.waitSnap(t, key, func(s *live.Snapshot) bool { return s.NextMSN >= n })
	}
	written := func() float64 { return testutil.ToFloat64(r.pkg.written) }
	perSegment := func(from, to uint64) float64 {
		segmentsUpTo(from)
		before := written()
		segmentsUpTo(to)
		return (written() - before) / float64(to-from)
	}
	early := perSegment(20, 120)
	late := perSegment(3000, 3100) // the naive packager rewrote 3,000 recording lines per segment here
	if late > early*1.05 {
		t.Fatalf("%.0f bytes written per segment after 3,000 segments, %.0f after 20", late, early)
	}
	rec, err := os.ReadFile(filepath.Join(r.dir, "flat", "720p", "recording.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	if m := parseMedia(t, rec); len(m.Segments) != 3100 || m.TargetDuration != 1 {
		t.Fatalf("the recording lists %d segments (target %d), want 3100", len(m.Segments), m.TargetDuration)
	}
	pub.End()
}

// Timestamps with FLV's millisecond jitter (33, 33, 34 ms at 30 fps) never
// make a part longer than the part target.
func TestPartsNeverExceedTheTarget(t *testing.T) {
	t.Parallel()
	r := newLLRig(t, Config{PartDuration: 500 * time.Millisecond})
	pub, _ := r.hub.Publish(media.StreamKey{Name: "jit", Rendition: "720p"}, tracks[:1])
	for v := 0; v < 30*9; v++ {
		key := v%60 == 0
		payload := [][]byte{{0x41, 0x9a, byte(v)}}
		if key {
			payload = [][]byte{testSPS, testPPS, {0x65, 0x88, byte(v)}}
		}
		ts := int64(v*1000/30) * 90 // whole milliseconds, in the 90 kHz clock
		pub.Write(&media.AccessUnit{Track: 0, DTS: ts, PTS: ts, Keyframe: key, Payload: payload})
	}
	snap := r.waitSnap(t, "jit/720p/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN == 4 })
	m := parseMedia(t, snap.Data)
	n := 0
	for _, seg := range m.Segments {
		for _, p := range seg.Parts {
			n++
			if p.Duration > 500*time.Millisecond {
				t.Errorf("%s lasts %s, more than the 500ms part target", p.URI, p.Duration)
			}
		}
	}
	if n < 8 {
		t.Fatalf("only %d parts listed\n%s", n, snap.Data)
	}
	pub.End()
}

// A recording whose last segment a crash cut short ends after its last
// whole segment, with no half-written tag left in the VOD playlist.
func TestFinishRecordingCutShort(t *testing.T) {
	t.Parallel()
	for name, tail := range map[string]string{
		"cut uri":     "#EXTINF:2.000,\ns-1.m",
		"cut tag":     "#EXT-X-PROGRAM-DATE-TIME:2026-12-0",
		"no uri":      "#EXTINF:2.000,\n",
		"whole":       "",
		"disc no uri": "#EXT-X-DISCONTINUITY\n",
		"gap no uri":  "#EXT-X-GAP\n#EXTINF:2.000,\n",
	} {
		dir := t.TempDir()
		head := "#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-PLAYLIST-TYPE:EVENT\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\ns-0.m4s\n"
		if err := os.WriteFile(filepath.Join(dir, "recording.m3u8"), []byte(head+tail), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := finishRecording(&storage{}, dir); err != nil {
			t.Fatal(err)
		}
		for _, f := range []string{"recording.m3u8", "index.m3u8"} {
			data, _ := os.ReadFile(filepath.Join(dir, f))
			m := parseMedia(t, data)
			if !m.Endlist || len(m.Segments) != 1 || m.Segments[0].URI != "s-0.m4s" || bytes.Contains(data, []byte("2026-12-0")) ||
				bytes.Contains(data, []byte("DISCONTINUITY")) || bytes.Contains(data, []byte("GAP")) {
				t.Errorf("%s: %s:\n%s", name, f, data)
			}
		}
	}
}

// The DVR window: a playlist of the last DVRWindow beside the live one,
// with delta updates, a DVR master playlist, and the whole recording once
// the broadcast ends.
func TestDVRWindow(t *testing.T) {
	t.Parallel()
	r := newLLRig(t, Config{PartDuration: 500 * time.Millisecond, DVRWindow: 20 * time.Second})
	pub, _ := r.hub.Publish(media.StreamKey{Name: "dvr", Rendition: "720p"}, tracks)
	feed(pub, 41, 60)
	snap := r.waitSnap(t, "dvr/720p/"+DVRPlaylist, func(s *live.Snapshot) bool { return s.NextMSN == 20 })
	m := parseMedia(t, snap.Data)
	if len(m.Segments) != 10 || m.MediaSequence != 10 || m.ServerControl == nil || m.ServerControl.CanSkipUntil == nil ||
		*m.ServerControl.CanSkipUntil != 12*time.Second || m.PartInf != nil {
		t.Fatalf("DVR playlist: %d segments from %d\n%s", len(m.Segments), m.MediaSequence, snap.Data)
	}
	if !bytes.Contains(snap.Delta, []byte("#EXT-X-SKIP:SKIPPED-SEGMENTS=4\n")) || bytes.Count(snap.Delta, []byte("#EXTINF")) != 6 {
		t.Fatalf("delta update:\n%s", snap.Delta)
	}
	if idx := parseMedia(t, r.live.Get("dvr/720p/index.m3u8").Data); len(idx.Segments) != 3 {
		t.Fatalf("the live playlist lists %d segments, want the live window of 3", len(idx.Segments))
	}
	master := r.live.Get("dvr/" + DVRPlaylist)
	if master == nil || !bytes.Contains(master.Data, []byte("720p/dvr.m3u8")) || !bytes.Contains(master.Data, []byte(`URI="audio/dvr.m3u8"`)) {
		t.Fatalf("DVR master: %v", master)
	}
	pub.End()
	r.rig.stop()
	<-r.rig.done
	data, err := os.ReadFile(filepath.Join(r.dir, "dvr", "720p", DVRPlaylist))
	if err != nil {
		t.Fatal(err)
	}
	if m := parseMedia(t, data); !m.Endlist || len(m.Segments) != 21 {
		t.Fatalf("the ended DVR playlist: ended %v, %d segments", m.Endlist, len(m.Segments))
	}
}

// One timeline per stream: a rendition that starts late takes the media
// sequence numbers, boundaries and times of the others; renditions that
// end and start again while the session lingers (a transcoder falling
// back to another encoder) continue their playlists, recording and audio
// group after a discontinuity, and nothing is deleted.
func TestOneTimelinePerStream(t *testing.T) {
	t.Parallel()
	r := newLLRig(t, Config{Linger: time.Minute})
	hi, _ := r.hub.Publish(media.StreamKey{Name: "tl", Rendition: "720p"}, tracks)
	feedRange(hi, 0, 8.5, 60)
	r.waitSnap(t, "tl/720p/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN == 4 })
	lo, _ := r.hub.Publish(media.StreamKey{Name: "tl", Rendition: "360p"}, tracks[:1])
	feedRange(lo, 5, 3.5, 60) // from 5 s: its first keyframe is at 6 s
	feedRange(hi, 8.5, 1.6, 60)
	feedRange(lo, 8.5, 1.6, 60)
	hiSnap := r.waitSnap(t, "tl/720p/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN == 5 })
	loSnap := r.waitSnap(t, "tl/360p/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN == 5 })
	hm, lm := parseMedia(t, hiSnap.Data), parseMedia(t, loSnap.Data)
	if lm.MediaSequence != 3 || len(lm.Segments) != 2 {
		t.Fatalf("the late rendition starts at media sequence %d with %d segments, want 3 and 2\n%s", lm.MediaSequence, len(lm.Segments), loSnap.Data)
	}
	for i := range lm.Segments {
		h := hm.Segments[len(hm.Segments)-2+i]
		l := lm.Segments[i]
		if !h.DateTime.Equal(*l.DateTime) || h.Duration != l.Duration {
			t.Errorf("segment %d: 720p at %s for %s, 360p at %s for %s", 3+i, h.DateTime, h.Duration, l.DateTime, l.Duration)
		}
	}

	// Both end; 720p starts again with the input going on (new encoders).
	hi.End()
	lo.End()
	r.waitSnap(t, "tl/audio/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN == 5 })
	// While the session lingers, 720p stays live (no ENDLIST players would
	// stop at) for a rendition of its name to continue.
	again, _ := r.hub.Publish(media.StreamKey{Name: "tl", Rendition: "720p"}, tracks)
	feedRange(again, 10, 6.5, 60)
	snap := r.waitSnap(t, "tl/720p/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN == 8 })
	m := parseMedia(t, snap.Data)
	// Segment 6 starts at the first keyframe after what 720p wrote (the
	// new encoder's replayed GOP overlaps it), on the same timeline.
	if len(m.Segments) != 3 || !m.Segments[1].Discontinuity || m.MediaSequence != 5 ||
		m.Segments[1].DateTime.Sub(*m.Segments[0].DateTime) != 2*time.Second {
		t.Fatalf("720p after it came back:\n%s", snap.Data)
	}
	rec, err := os.ReadFile(filepath.Join(r.dir, "tl", "720p", "recording.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	if rm := parseMedia(t, rec); rm.Endlist || len(rm.Segments) != 8 || bytes.Count(rec, []byte("#EXT-X-DISCONTINUITY\n")) != 1 {
		t.Fatalf("720p's recording: %d segments\n%s", len(rm.Segments), rec)
	}
	r.waitSnap(t, "tl/audio/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN == 8 })
	audio, err := os.ReadFile(filepath.Join(r.dir, "tl", "audio", "recording.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	if am := parseMedia(t, audio); am.Endlist || len(am.Segments) != 8 {
		t.Fatalf("the audio group did not go on: %d segments, ended %v\n%s", len(am.Segments), am.Endlist, audio)
	}
	// The first broadcast's first segment is still there.
	if _, err := os.Stat(filepath.Join(r.dir, "tl", "720p", m.Segments[0].URI)); err != nil {
		t.Fatal(err)
	}
	again.End()
}

// A write that fails (a full disk) leaves no partial file behind.
func TestFailedWriteLeavesNoPartialFile(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	// A directory where the temporary file would go makes the write fail
	// after the name is taken: the rename of a file onto a directory.
	path := filepath.Join(dir, "seg.m4s")
	if err := os.Mkdir(path, 0o755); err != nil {
		t.Fatal(err)
	}
	if err := (&storage{}).writeFile(path, []byte("data")); err == nil {
		t.Fatal("writing over a directory succeeded")
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file is left: %v", err)
	}
}
