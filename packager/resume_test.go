package packager

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// events records what the packager tells a mirror.
type events struct {
	mu     sync.Mutex
	resets []string
	ended  []string
}

func (e *events) Written(string) {}
func (e *events) Resumed(string) {}
func (e *events) Reset(id string) {
	e.mu.Lock()
	e.resets = append(e.resets, id)
	e.mu.Unlock()
}
func (e *events) Ended(id string) {
	e.mu.Lock()
	e.ended = append(e.ended, id)
	e.mu.Unlock()
}

func (e *events) counts() (resets, ended int) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return len(e.resets), len(e.ended)
}

// rigWith is newRig with a Resume function and a listener.
func rigWith(t *testing.T, resume func(string) (map[string][]byte, error), ev FileEvents) *rig {
	t.Helper()
	return rigAt(t, t.TempDir(), resume, ev)
}

// rigAt is rigWith on a given directory (an earlier run's, say).
func rigAt(t *testing.T, dir string, resume func(string) (map[string][]byte, error), ev FileEvents) *rig {
	t.Helper()
	hub, err := stream.New(stream.Config{QueueSize: 100000}, stream.Deps{})
	if err != nil {
		t.Fatal(err)
	}
	p, err := New(Config{Dir: dir, SegmentDuration: 2 * time.Second, LiveWindow: 3, Format: FormatFMP4, Resume: resume},
		Deps{Hub: hub, Log: slog.New(slog.DiscardHandler), Files: ev})
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

// broadcast publishes seconds of stream abc on r and waits for its ENDLIST.
func (r *rig) broadcast(t *testing.T, seconds float64) {
	t.Helper()
	pub, err := r.hub.Publish(media.StreamKey{Name: "abc", Rendition: media.RenditionSource}, tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(pub, seconds, 60)
	pub.Close()
	for _, dir := range []string{"source", "audio"} {
		for _, name := range []string{"index.m3u8", "recording.m3u8"} {
			waitFor(t, dir+"/"+name+" ENDLIST", func() bool {
				b, _ := os.ReadFile(filepath.Join(r.dir, "abc", dir, name))
				return strings.Contains(string(b), "#EXT-X-ENDLIST")
			})
		}
	}
}

// A session that takes over a broadcast whose origin died continues its
// recordings: the old segments, a discontinuity, the new ones; the tree is
// not reset. A copy torn mid-append is cut after its last whole segment.
func TestTakeOverContinuesTheRecording(t *testing.T) {
	t.Parallel()
	a := rigWith(t, nil, nil)
	a.broadcast(t, 6)
	left := map[string][]byte{}
	for _, dir := range []string{"source", "audio"} {
		rec, err := os.ReadFile(filepath.Join(a.dir, "abc", dir, "recording.m3u8"))
		if err != nil {
			t.Fatal(err)
		}
		// As the dead origin left it: no ENDLIST, and the source's copy
		// torn in the middle of a segment's lines.
		rec = []byte(strings.TrimSuffix(string(rec), "#EXT-X-ENDLIST\n"))
		if dir == "source" {
			rec = append(rec, "#EXTINF:2.000,\nabc-0-"...)
		}
		left[dir] = rec
	}
	ev := &events{}
	var asked []string
	var mu sync.Mutex
	var ended atomic.Bool // the broadcast taken over ended cleanly
	b := rigWith(t, func(id string) (map[string][]byte, error) {
		mu.Lock()
		defer mu.Unlock()
		asked = append(asked, id)
		if ended.Load() {
			return nil, nil
		}
		return left, nil
	}, ev)
	b.broadcast(t, 4)
	if resets, _ := ev.counts(); resets != 0 {
		t.Fatalf("the tree taken over was reset %d times", resets)
	}
	mu.Lock()
	if len(asked) != 1 || asked[0] != "abc" {
		t.Fatalf("Resume asked for %q, want abc once", asked)
	}
	mu.Unlock()
	for _, dir := range []string{"source", "audio"} {
		rec, err := os.ReadFile(filepath.Join(b.dir, "abc", dir, "recording.m3u8"))
		if err != nil {
			t.Fatal(err)
		}
		s := string(rec)
		old := strings.TrimSuffix(string(left[dir]), "#EXTINF:2.000,\nabc-0-")
		body := old[strings.Index(old, "#EXT-X-MAP"):]
		if !strings.Contains(s, body+"#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=") {
			t.Fatalf("%s: the recording does not continue the old one with a discontinuity:\n%s", dir, s)
		}
		if !strings.HasSuffix(s, "#EXT-X-ENDLIST\n") || strings.Contains(s, "abc-0-\n") {
			t.Fatalf("%s recording:\n%s", dir, s)
		}
		vod := readPlaylist(t, filepath.Join(b.dir, "abc", dir, "index.m3u8"))
		total := 0.0
		for _, seg := range segments(vod) {
			total += seg.Duration
		}
		if total < 9.8 || total > 10.2 {
			t.Errorf("%s: the VOD of the recording lasts %.3f s, want 10 (6 + 4)", dir, total)
		}
	}
	// A session after a clean end does not continue it.
	waitFor(t, "the first session's end", func() bool { _, ended := ev.counts(); return ended == 1 })
	ended.Store(true)
	b.broadcast(t, 2)
	waitFor(t, "the second session's end", func() bool { _, ended := ev.counts(); return ended == 2 })
	if resets, _ := ev.counts(); resets != 1 {
		t.Fatalf("a new session after a clean end: %d resets, want 1", resets)
	}
}

func TestParseResumed(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, in string
		ok       bool
		seq      uint64
		body     string
		init     string
	}{
		{"empty", "", false, 0, "", ""},
		{"header only", "#EXTM3U\n#EXT-X-TARGETDURATION:2\n", false, 0, "", ""},
		{"whole", "#EXTM3U\n#EXT-X-MEDIA-SEQUENCE:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-MAP:URI=\"i1.mp4\"\n#EXTINF:2.000,\na.m4s\n#EXTINF:2.000,\nb.m4s\n",
			true, 7, "#EXT-X-MAP:URI=\"i1.mp4\"\n#EXTINF:2.000,\na.m4s\n#EXTINF:2.000,\nb.m4s\n", "i1.mp4"},
		{"torn after a new init", "#EXTM3U\n#EXT-X-MAP:URI=\"i1.mp4\"\n#EXTINF:2.000,\na.m4s\n#EXT-X-DISCONTINUITY\n#EXT-X-MAP:URI=\"i2.mp4\"\n#EXTINF:2.0",
			true, 0, "#EXT-X-MAP:URI=\"i1.mp4\"\n#EXTINF:2.000,\na.m4s\n", "i1.mp4"},
		{"ended", "#EXTM3U\n#EXTINF:2.000,\na.m4s\n#EXT-X-ENDLIST\n", true, 0, "#EXTINF:2.000,\na.m4s\n", ""},
	} {
		r, ok := parseResumed([]byte(c.in))
		if ok != c.ok || r.firstSeq != c.seq || string(r.body) != c.body || r.lastInit != c.init {
			t.Errorf("%s: got %+v %t", c.name, r, ok)
		}
	}
}

// After a crash, the recordings left open are finished at start (the
// broadcast plays as a recording), and a publisher that comes back to
// this origin continues them as a takeover by another origin does: the
// old segments, a discontinuity, the new ones, the tree not reset. Before,
// the reconnect was a new broadcast and replaced everything recorded
// before the crash.
func TestCrashThenReconnectContinuesTheRecording(t *testing.T) {
	t.Parallel()
	t.Run("back soon", func(t *testing.T) { crashThenReconnect(t, false) })
	// A broadcast after orphanReturn is a new one: it replaces the
	// recording.
	t.Run("back late", func(t *testing.T) { crashThenReconnect(t, true) })
}

func crashThenReconnect(t *testing.T, late bool) {
	dir := t.TempDir()
	a := rigAt(t, dir, nil, nil)
	a.broadcast(t, 6)
	a.stop()
	<-a.done
	// As the crash left it: no ENDLIST, a live index.
	for _, d := range []string{"source", "audio"} {
		path := filepath.Join(dir, "abc", d, "recording.m3u8")
		rec, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(strings.TrimSuffix(string(rec), "#EXT-X-ENDLIST\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	if late {
		// Cut longer ago than a publisher may come back to continue it.
		old := time.Now().Add(-orphanReturn - time.Minute)
		for _, d := range []string{"source", "audio"} {
			if err := os.Chtimes(filepath.Join(dir, "abc", d, "recording.m3u8"), old, old); err != nil {
				t.Fatal(err)
			}
		}
	}
	ev := &events{}
	b := rigAt(t, dir, nil, ev)
	for _, d := range []string{"source", "audio"} {
		rec, _ := os.ReadFile(filepath.Join(dir, "abc", d, "recording.m3u8"))
		if !strings.HasSuffix(string(rec), "#EXT-X-ENDLIST\n") {
			t.Fatalf("%s: the recording left open is not finished at start:\n%s", d, rec)
		}
	}
	// The recordings have ENDLIST already: the session's end is waited
	// for (broadcast waits for ENDLIST).
	pub, err := b.hub.Publish(media.StreamKey{Name: "abc", Rendition: media.RenditionSource}, tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(pub, 4, 60)
	pub.Close()
	waitFor(t, "the session's end", func() bool { _, ended := ev.counts(); return ended == 1 })
	if resets, _ := ev.counts(); late {
		if resets != 1 {
			t.Fatalf("a broadcast long after the crash: %d resets, want 1 (a new recording)", resets)
		}
		return
	} else if resets != 0 {
		t.Fatalf("the tree of the broadcast cut by the crash was reset %d times", resets)
	}
	for _, d := range []string{"source", "audio"} {
		rec, _ := os.ReadFile(filepath.Join(dir, "abc", d, "recording.m3u8"))
		if n := strings.Count(string(rec), "#EXT-X-DISCONTINUITY\n"); n != 1 {
			t.Fatalf("%s: %d discontinuities in the recording, want 1:\n%s\nfiles: %v", d, n, rec, lsDir(filepath.Join(dir, "abc", d)))
		}
		vod := readPlaylist(t, filepath.Join(dir, "abc", d, "index.m3u8"))
		total := 0.0
		for _, seg := range segments(vod) {
			if _, err := os.Stat(filepath.Join(dir, "abc", d, seg.URI)); err != nil {
				t.Fatalf("%s: the recording lists %s: %v", d, seg.URI, err)
			}
			total += seg.Duration
		}
		if total < 9.8 || total > 10.2 {
			t.Errorf("%s: the VOD of the recording lasts %.3f s, want 10 (6 before the crash + 4)", d, total)
		}
	}
	// Once: a new broadcast after that one's clean end replaces it.
	b.broadcast(t, 2)
	waitFor(t, "the second session's end", func() bool { _, ended := ev.counts(); return ended == 2 })
	if resets, _ := ev.counts(); resets != 1 {
		t.Fatalf("a new broadcast after a clean end: %d resets, want 1", resets)
	}
}

func lsDir(d string) []string {
	es, _ := os.ReadDir(d)
	var out []string
	for _, e := range es {
		out = append(out, e.Name())
	}
	return out
}
