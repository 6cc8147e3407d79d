package packager

import (
	"bytes"
	"context"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/packager/live"
)

// logLines keeps the messages logged through it.
type logLines struct {
	mu   sync.Mutex
	msgs []string
}

func (l *logLines) Enabled(context.Context, slog.Level) bool { return true }
func (l *logLines) WithAttrs([]slog.Attr) slog.Handler       { return l }
func (l *logLines) WithGroup(string) slog.Handler            { return l }
func (l *logLines) Handle(_ context.Context, r slog.Record) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.msgs = append(l.msgs, r.Message)
	return nil
}

func (l *logLines) count(prefix string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	n := 0
	for _, m := range l.msgs {
		if strings.HasPrefix(m, prefix) {
			n++
		}
	}
	return n
}

// fullDisk makes the packager's writes fail like a full disk while on is
// set: half the bytes go out, then ENOSPC.
type fullDisk struct{ on atomic.Bool }

func (d *fullDisk) failWrite(_ string, data []byte) (int, error) {
	if d.on.Load() {
		return len(data) / 2, syscall.ENOSPC
	}
	return 0, nil
}

// A full disk mid-stream: the segments that cannot be written are listed
// as gaps (EXT-X-GAP) at their media sequence numbers in every rendition
// and the audio group, live and in the recording; no partial or temporary
// file is left; it is logged once, and once when space returns, after
// which segments are written as before. gohlslib reads every playlist.
func TestDiskFullMarksGaps(t *testing.T) {
	t.Parallel()
	logs := &logLines{}
	disk := &fullDisk{}
	r := newLLRigWith(t, Config{PartDuration: 500 * time.Millisecond}, Deps{Log: slog.New(logs)},
		func(p *Packager) { p.fs.failWrite = disk.failWrite })
	hub, dir := r.hub, r.dir

	hi, _ := hub.Publish(media.StreamKey{Name: "full", Rendition: "720p"}, tracks)
	lo, _ := hub.Publish(media.StreamKey{Name: "full", Rendition: "360p"}, tracks[:1])
	playlists := []string{"720p", "360p", AudioDir}
	waitAll := func(msn uint64) map[string]*live.Snapshot {
		out := map[string]*live.Snapshot{}
		for _, name := range playlists {
			out[name] = r.waitSnap(t, "full/"+name+"/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN >= msn })
		}
		return out
	}
	feedRange(hi, 0, 4.5, 60)
	feedRange(lo, 0, 4.5, 60)
	waitAll(2) // segments 0 and 1 written
	disk.on.Store(true)
	feedRange(hi, 4.5, 4, 60)
	feedRange(lo, 4.5, 4, 60)
	during := waitAll(4) // segments 2 and 3 cut while the disk is full
	// The live playlists list them as gaps, their parts (served from
	// memory before the segment failed) still announced.
	m := parseMedia(t, during["720p"].Data)
	last := m.Segments[len(m.Segments)-1]
	if !last.Gap || len(last.Parts) == 0 || !strings.HasSuffix(last.URI, "-3.m4s") {
		t.Fatalf("segment 3 while the disk is full:\n%s", during["720p"].Data)
	}
	if _, err := os.Stat(filepath.Join(dir, "full", "720p", last.URI)); !os.IsNotExist(err) {
		t.Fatalf("the gap segment's file: %v", err)
	}
	disk.on.Store(false)
	feedRange(hi, 8.5, 4, 60)
	feedRange(lo, 8.5, 4, 60)
	after := waitAll(6) // segments 4 and 5 written again

	// Every playlist: the same media sequence numbers, gaps at 2 and 3.
	for _, name := range playlists {
		m := parseMedia(t, after[name].Data)
		if m.MediaSequence != 3 || len(m.Segments) != 3 {
			t.Fatalf("%s: media sequence %d, %d segments\n%s", name, m.MediaSequence, len(m.Segments), after[name].Data)
		}
		for i, seg := range m.Segments {
			msn := 3 + i
			if seg.Gap != (msn == 3) {
				t.Errorf("%s: segment %d gap=%v\n%s", name, msn, seg.Gap, after[name].Data)
			}
			_, err := os.Stat(filepath.Join(dir, "full", name, seg.URI))
			if seg.Gap == (err == nil) {
				t.Errorf("%s: segment %d (gap=%v) on disk: %v", name, msn, seg.Gap, err)
			}
		}
		// The file written once space returned has the gap too.
		data, err := os.ReadFile(filepath.Join(dir, "full", name, "index.m3u8"))
		if err != nil {
			t.Fatal(err)
		}
		if fm := parseMedia(t, data); fm.MediaSequence != 3 || !fm.Segments[0].Gap {
			t.Errorf("%s: index.m3u8 on disk:\n%s", name, data)
		}
	}
	if n := logs.count("disk full"); n != 1 {
		t.Errorf("disk full logged %d times, want once", n)
	}
	if n := logs.count("disk space is back"); n != 1 {
		t.Errorf("space back logged %d times, want once", n)
	}
	if v := testutil.ToFloat64(r.pkg.gaps.WithLabelValues("video")); v != 4 {
		t.Errorf("%v video gap segments counted, want 4", v)
	}
	if v := testutil.ToFloat64(r.pkg.gaps.WithLabelValues("audio")); v != 2 {
		t.Errorf("%v audio gap segments counted, want 2", v)
	}

	// The recordings (the VOD after the broadcast) have the gaps.
	hi.End()
	lo.End()
	r.stop() // Run returns once every playlist is finished
	<-r.done
	for _, name := range playlists {
		for _, f := range []string{"recording.m3u8", "index.m3u8"} {
			data, err := os.ReadFile(filepath.Join(dir, "full", name, f))
			if err != nil {
				t.Fatal(err)
			}
			m := parseMedia(t, data)
			if m.MediaSequence != 0 || len(m.Segments) < 6 || !m.Endlist {
				t.Fatalf("%s/%s: %d segments from %d\n%s", name, f, len(m.Segments), m.MediaSequence, data)
			}
			for i, seg := range m.Segments {
				if seg.Gap != (i == 2 || i == 3) {
					t.Errorf("%s/%s: segment %d gap=%v\n%s", name, f, i, seg.Gap, data)
				}
			}
		}
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err == nil && strings.HasSuffix(path, ".tmp") {
			t.Errorf("%s is left behind", path)
		}
		return nil
	})
}

// A failed append (a full disk mid-write) cuts the file back: no half
// line stays in a playlist.
func TestFailedAppendLeavesTheFileAsItWas(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "recording.m3u8")
	before := []byte("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\na.m4s\n")
	if err := os.WriteFile(path, before, 0o644); err != nil {
		t.Fatal(err)
	}
	disk := &fullDisk{}
	disk.on.Store(true)
	s := &storage{failWrite: disk.failWrite}
	if err := s.appendFile(path, []byte("#EXTINF:2.000,\nb.m4s\n")); !noSpace(err) {
		t.Fatalf("append: %v, want ENOSPC", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, before) {
		t.Fatalf("after a failed append:\n%q", got)
	}
	if err := s.writeFile(path, []byte("other")); !noSpace(err) {
		t.Fatalf("write: %v, want ENOSPC", err)
	}
	if got, _ := os.ReadFile(path); !bytes.Equal(got, before) {
		t.Fatalf("after a failed write:\n%q", got)
	}
	if _, err := os.Stat(path + ".tmp"); !os.IsNotExist(err) {
		t.Fatalf("the temporary file is left: %v", err)
	}
	disk.on.Store(false)
	if err := s.appendFile(path, []byte("#EXTINF:2.000,\nb.m4s\n")); err != nil {
		t.Fatal(err)
	}
	if m := parseMedia(t, mustRead(t, path)); len(m.Segments) != 2 {
		t.Fatalf("%d segments after the append", len(m.Segments))
	}
}

func mustRead(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

// A broadcast that starts on a full disk: nothing can be written, not even
// its directories or the initialization section, yet the live master and media playlists are
// served (every segment a gap); once space returns the next segment is
// written with its initialization section and plays.
func TestStartOnAFullDisk(t *testing.T) {
	t.Parallel()
	logs := &logLines{}
	disk := &fullDisk{}
	disk.on.Store(true)
	r := newLLRigWith(t, Config{PartDuration: 500 * time.Millisecond}, Deps{Log: slog.New(logs)},
		func(p *Packager) { p.fs.failWrite = disk.failWrite })
	hub, dir, reg := r.hub, r.dir, r.live

	pub, _ := hub.Publish(media.StreamKey{Name: "empty", Rendition: "720p"}, tracks)
	feedRange(pub, 0, 4.5, 60)
	snap := r.waitSnap(t, "empty/720p/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN >= 2 })
	m := parseMedia(t, snap.Data)
	if len(m.Segments) != 2 || !m.Segments[0].Gap || !m.Segments[1].Gap || len(m.Parts) != 0 {
		t.Fatalf("on a full disk:\n%s", snap.Data)
	}
	if reg.Get("empty/master.m3u8") == nil {
		t.Fatal("no live master playlist while the disk is full")
	}
	disk.on.Store(false)
	feedRange(pub, 4.5, 2, 60)
	snap = r.waitSnap(t, "empty/720p/index.m3u8", func(s *live.Snapshot) bool { return s.NextMSN >= 3 })
	m = parseMedia(t, snap.Data)
	written := m.Segments[2]
	if written.Gap || m.Map == nil || len(written.Parts) == 0 {
		t.Fatalf("after space returned:\n%s", snap.Data)
	}
	for _, f := range []string{written.URI, m.Map.URI, written.Parts[0].URI} {
		if f == written.Parts[0].URI {
			if _, ok := reg.LookupPart("empty/720p/" + f); !ok {
				t.Errorf("part %s is not served", f)
			}
			continue
		}
		if _, err := os.Stat(filepath.Join(dir, "empty", "720p", f)); err != nil {
			t.Error(err)
		}
	}
	if logs.count("disk full") != 1 || logs.count("disk space is back") != 1 {
		t.Errorf("logged %q", logs.msgs)
	}
	// The recording, whose directory could not even be made at first,
	// has every segment.
	pub.End()
	r.stop()
	<-r.done
	rec := parseMedia(t, mustRead(t, filepath.Join(dir, "empty", "720p", "recording.m3u8")))
	if len(rec.Segments) < 3 || !rec.Segments[0].Gap || !rec.Segments[1].Gap || rec.Segments[2].Gap || !rec.Endlist {
		t.Fatalf("the recording: %d segments, ended %v", len(rec.Segments), rec.Endlist)
	}
}

// TestAppendCutBackLater: when cutting a file back after a failed append
// fails too, the next append cuts it back first: the half line never stays
// in the playlist.
func TestAppendCutBackLater(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "recording.m3u8")
	before := []byte("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2.000,\na.m4s\n")
	if err := os.WriteFile(path, before, 0o644); err != nil {
		t.Fatal(err)
	}
	disk := &fullDisk{}
	disk.on.Store(true)
	s := &storage{failWrite: disk.failWrite, failTruncate: func(string) error { return syscall.ENOSPC }}
	if err := s.appendFile(path, []byte("#EXTINF:2.000,\nb.m4s\n")); !noSpace(err) {
		t.Fatalf("append: %v, want ENOSPC", err)
	}
	// The failed cut left the file as the failing write did (the test
	// hook fails after a real cut: make it half a line again).
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_APPEND, 0)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = f.WriteString("#EXTINF:2.0")
	_ = f.Close()
	disk.on.Store(false)
	s.failTruncate = nil
	if err := s.appendFile(path, []byte("#EXTINF:2.000,\nb.m4s\n")); err != nil {
		t.Fatal(err)
	}
	want := append(append([]byte{}, before...), "#EXTINF:2.000,\nb.m4s\n"...)
	if got := mustRead(t, path); !bytes.Equal(got, want) {
		t.Fatalf("after the next append:\n%q\nwant\n%q", got, want)
	}
}
