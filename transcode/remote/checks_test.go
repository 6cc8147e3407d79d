package remote

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/grafov/m3u8"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/verify"
)

// honestTree transcodes a 4 s 640x360 clip as a worker does and returns
// the tree and the outcome.
func honestTree(t *testing.T) (string, routing.JobOutcome) {
	t.Helper()
	tree, out, _ := transcodeTree(t, "testsrc2")
	return tree, out
}

// transcodeTree transcodes a 4 s 640x360 clip of the lavfi source
// pattern (testsrc2, smptebars, ...) to 360p:700k,240p:400k in 1 s
// segments as a worker does, and returns the tree, the outcome and the
// source file.
func transcodeTree(t *testing.T, pattern string) (string, routing.JobOutcome, string) {
	t.Helper()
	return transcodeTreeWith(t, pattern, "sine=frequency=440:sample_rate=44100")
}

// transcodeTreeWith is transcodeTree with the lavfi audio source audio
// ("": none).
func transcodeTreeWith(t *testing.T, pattern, audio string) (string, routing.JobOutcome, string) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.mp4")
	args := []string{"-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", pattern + "=size=640x360:rate=30"}
	if audio != "" {
		args = append(args, "-f", "lavfi", "-i", audio)
	}
	args = append(args, "-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac")
	if out, err := exec.Command("ffmpeg", append(args, src)...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	tree, out := ladderTree(t, src, time.Second)
	return tree, out, src
}

// The origin's checks accept an honest output and refuse every way of
// bending one: each case changes a copy of the tree (and rebuilds the
// manifest, so that only the check at stake can catch it).
func TestCheckOutput(t *testing.T) {
	t.Parallel()
	tree, out := honestTree(t)
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	const job = "vid.1.1-0"
	run := func(t *testing.T, change func(dir string, m *nodeproto.Complete)) error {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(tree)); err != nil {
			t.Fatal(err)
		}
		m, err := BuildManifest(dir, job, out)
		if err != nil {
			t.Fatal(err)
		}
		if change != nil {
			change(dir, &m)
		}
		_, err = checkOutput(t.Context(), output{dir: dir, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
			source: 4 * time.Second, segment: time.Second})
		return err
	}
	if err := run(t, nil); err != nil {
		t.Fatalf("the honest output: %v", err)
	}
	got, err := checkOutput(t.Context(), func() output {
		m, _ := BuildManifest(tree, job, out)
		return output{dir: tree, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360, source: 4 * time.Second, segment: time.Second}
	}())
	if err != nil || got.Duration < 3900*time.Millisecond || len(got.Renditions) != 2 || got.Renditions[0].Name != "360p" || !got.Poster || !got.Storyboard {
		t.Fatalf("the outcome: %+v %v", got, err)
	}
	write := func(dir, rel, s string) {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	read := func(dir, rel string) string {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	rebuild := func(dir string, m *nodeproto.Complete) {
		n, err := BuildManifest(dir, job, out)
		if err != nil {
			t.Fatal(err)
		}
		n.Renditions = m.Renditions
		*m = n
	}
	firstSegment := func(dir, r string) string {
		for _, l := range strings.Split(read(dir, r+"/index.m3u8"), "\n") {
			if strings.HasSuffix(l, ".m4s") {
				return l
			}
		}
		t.Fatal("no segment")
		return ""
	}
	initOf := func(dir, r string) string {
		m := regexp.MustCompile(`#EXT-X-MAP:URI="([^"]+)"`).FindStringSubmatch(read(dir, r+"/index.m3u8"))
		if m == nil {
			t.Fatal("no initialization section")
		}
		return m[1]
	}
	for _, c := range []struct {
		name, want string
		change     func(dir string, m *nodeproto.Complete)
	}{
		{"a file uploaded, not in the manifest", "is not in the manifest", func(dir string, m *nodeproto.Complete) {
			write(dir, "360p/extra.m4s", "x")
		}},
		{"a file in the manifest, never uploaded", "never uploaded", func(dir string, m *nodeproto.Complete) {
			_ = os.Remove(filepath.Join(dir, "poster.jpg"))
		}},
		{"a segment's bytes changed", "does not match the manifest", func(dir string, m *nodeproto.Complete) {
			write(dir, "240p/"+firstSegment(dir, "240p"), "other bytes")
		}},
		{"a segment no playlist lists", "is not listed by", func(dir string, m *nodeproto.Complete) {
			write(dir, "360p/stray.m4s", "x")
			rebuild(dir, m)
		}},
		{"a playlist listing a file the output lacks", "which the output does not have", func(dir string, m *nodeproto.Complete) {
			seg := firstSegment(dir, "360p")
			_ = os.Remove(filepath.Join(dir, "360p", seg))
			rebuild(dir, m)
		}},
		{"a playlist listing a file elsewhere", "lists the files next to it", func(dir string, m *nodeproto.Complete) {
			seg := firstSegment(dir, "360p")
			write(dir, "360p/index.m3u8", strings.Replace(read(dir, "360p/index.m3u8"), seg, "../240p/"+firstSegment(dir, "240p"), 1))
			rebuild(dir, m)
		}},
		{"a playlist that does not end", "does not end", func(dir string, m *nodeproto.Complete) {
			write(dir, "240p/index.m3u8", strings.Replace(read(dir, "240p/index.m3u8"), "#EXT-X-ENDLIST", "", 1))
			rebuild(dir, m)
		}},
		{"a gap", "has a gap", func(dir string, m *nodeproto.Complete) {
			seg := firstSegment(dir, "240p")
			write(dir, "240p/index.m3u8", strings.Replace(read(dir, "240p/index.m3u8"), seg, "#EXT-X-GAP\n"+seg, 1))
			rebuild(dir, m)
		}},
		{"a recording other than the playlist", "does not list the segments of", func(dir string, m *nodeproto.Complete) {
			rec := read(dir, "360p/recording.m3u8")
			i := strings.LastIndex(rec, "#EXTINF")
			write(dir, "360p/recording.m3u8", rec[:i]+"#EXT-X-ENDLIST\n")
			rebuild(dir, m)
		}},
		{"not a master playlist", "is not a master playlist", func(dir string, m *nodeproto.Complete) {
			write(dir, "master.m3u8", read(dir, "360p/index.m3u8"))
			rebuild(dir, m)
		}},
		{"a variant elsewhere", "variants are <rendition>/index.m3u8", func(dir string, m *nodeproto.Complete) {
			write(dir, "master.m3u8", strings.Replace(read(dir, "master.m3u8"), "240p/index.m3u8", "https://evil.example/240p.m3u8", 1))
			rebuild(dir, m)
		}},
		{"an alternative other than the audio", "only the audio group", func(dir string, m *nodeproto.Complete) {
			write(dir, "master.m3u8", strings.Replace(read(dir, "master.m3u8"), `URI="audio/index.m3u8"`, `URI="subs/index.m3u8"`, 1))
			rebuild(dir, m)
		}},
		{"a rendition the master does not list", "is not a rendition master.m3u8 lists", func(dir string, m *nodeproto.Complete) {
			_ = os.MkdirAll(filepath.Join(dir, "1080p"), 0o755)
			write(dir, "1080p/index.m3u8", read(dir, "360p/index.m3u8"))
			rebuild(dir, m)
		}},
		{"a rung of another bitrate", "the rung is 360p at 700000", func(dir string, m *nodeproto.Complete) {
			m.Renditions[0].Bitrate = 5_000_000
		}},
		{"a rendition out of the source's proportions", "pixels wide", func(dir string, m *nodeproto.Complete) {
			write(dir, "master.m3u8", strings.Replace(read(dir, "master.m3u8"), "RESOLUTION=640x360", "RESOLUTION=360x360", 1))
			m.Renditions[0].Width = 360
			rebuild(dir, m)
		}},
		{"the master and the manifest disagreeing", "the manifest 640x360", func(dir string, m *nodeproto.Complete) {
			write(dir, "master.m3u8", strings.Replace(read(dir, "master.m3u8"), "RESOLUTION=640x360", "RESOLUTION=642x360", 1))
			rebuild(dir, m)
		}},
		{"a manifest duration far from the source", "the manifest says the output lasts", func(dir string, m *nodeproto.Complete) {
			m.DurationSeconds = 40
		}},
		{"a poster that is not a picture", "poster.jpg is not a JPEG", func(dir string, m *nodeproto.Complete) {
			write(dir, "poster.jpg", "<html>")
			rebuild(dir, m)
		}},
		{"a segment that is no video", "is not a segment of H.264 video", func(dir string, m *nodeproto.Complete) {
			write(dir, "240p/"+firstSegment(dir, "240p"), "not a segment at all")
			rebuild(dir, m)
		}},
		{"a rendition whose pictures are another rung's", "holds 640x360 pictures; the rendition is 428x240", func(dir string, m *nodeproto.Complete) {
			write(dir, "240p/"+initOf(dir, "240p"), read(dir, "360p/"+initOf(dir, "360p")))
			rebuild(dir, m)
		}},
		{"two initialization sections", "a rendition has one", func(dir string, m *nodeproto.Complete) {
			write(dir, "240p/init2.mp4", read(dir, "240p/"+initOf(dir, "240p")))
			pl := read(dir, "240p/index.m3u8")
			i := strings.LastIndex(pl, "#EXTINF")
			write(dir, "240p/index.m3u8", pl[:i]+"#EXT-X-MAP:URI=\"init2.mp4\"\n"+pl[i:])
			rebuild(dir, m)
		}},
		{"a segment listed twice", "twice", func(dir string, m *nodeproto.Complete) {
			seg := firstSegment(dir, "240p")
			write(dir, "240p/index.m3u8", strings.Replace(read(dir, "240p/index.m3u8"), "#EXT-X-ENDLIST", "#EXTINF:0.100,\n"+seg+"\n#EXT-X-ENDLIST", 1))
			rebuild(dir, m)
		}},
		{"more segments than the source makes", "a rendition of this source has at most 12", func(dir string, m *nodeproto.Complete) {
			pl := read(dir, "240p/index.m3u8")
			var more strings.Builder
			for i := range 12 {
				name := fmt.Sprintf("x%d.m4s", i)
				write(dir, "240p/"+name, "x")
				fmt.Fprintf(&more, "#EXTINF:0.010,\n%s\n", name)
			}
			write(dir, "240p/index.m3u8", strings.Replace(pl, "#EXT-X-ENDLIST", more.String()+"#EXT-X-ENDLIST", 1))
			rebuild(dir, m)
		}},
		{"a playlist line hidden behind a CR", "has a control character (0x0d)", func(dir string, m *nodeproto.Complete) {
			write(dir, "240p/index.m3u8", strings.Replace(read(dir, "240p/index.m3u8"), "#EXT-X-ENDLIST", "#EXT-X-ENDLIST\r#EXT-X-KEY:METHOD=AES-128,URI=\"https://evil.example/k\"", 1))
			rebuild(dir, m)
		}},
		{"a playlist line hidden behind U+2028", "has a line separator (U+2028 or U+2029)", func(dir string, m *nodeproto.Complete) {
			pl := read(dir, "240p/index.m3u8")
			i := strings.Index(pl, "#EXTINF:")
			write(dir, "240p/index.m3u8", pl[:i]+"#EXT-X-PROGRAM-DATE-TIME:2026-12-04T23:00:02.000Z\u2028"+pl[i:])
			rebuild(dir, m)
		}},
		{"a segment of EXTINF 0", "a segment of this ladder lasts more than 0", func(dir string, m *nodeproto.Complete) {
			setExtinf(t, dir, "360p", 1, "0")
			rebuild(dir, m)
		}},
		{"a segment of a negative EXTINF", "a segment of this ladder lasts more than 0", func(dir string, m *nodeproto.Complete) {
			setExtinf(t, dir, "240p", 0, "-1.000")
			rebuild(dir, m)
		}},
		{"a segment longer than the ladder's", "a segment of this ladder lasts more than 0", func(dir string, m *nodeproto.Complete) {
			setExtinf(t, dir, "240p", 0, "1.600")
			rebuild(dir, m)
		}},
		{"an EXTINF other than the samples' span", "by its samples; its playlist says", func(dir string, m *nodeproto.Complete) {
			setExtinf(t, dir, "360p", 0, "0.500")
			rebuild(dir, m)
		}},
		{"a segment that does not start where the one before ended", "the segment before it ended at", func(dir string, m *nodeproto.Complete) {
			segs := segmentsOf(t, dir, "240p")
			a, b := read(dir, "240p/"+segs[1]), read(dir, "240p/"+segs[2])
			write(dir, "240p/"+segs[1], b)
			write(dir, "240p/"+segs[2], a)
			rebuild(dir, m)
		}},
		{"an audio segment that is video", "is not a segment of AAC audio", func(dir string, m *nodeproto.Complete) {
			write(dir, "audio/"+firstSegment(dir, "audio"), read(dir, "360p/"+firstSegment(dir, "360p")))
			rebuild(dir, m)
		}},
		{"an audio rendition of video", "is not a segment of AAC audio", func(dir string, m *nodeproto.Complete) {
			write(dir, "audio/"+initOf(dir, "audio"), read(dir, "360p/"+initOf(dir, "360p")))
			for _, s := range segmentsOf(t, dir, "audio") {
				write(dir, "audio/"+s, read(dir, "360p/"+firstSegment(dir, "360p")))
			}
			rebuild(dir, m)
		}},
		{"an audio EXTINF other than the samples' span", "audio/", func(dir string, m *nodeproto.Complete) {
			setExtinf(t, dir, "audio", 0, "0.500")
			rebuild(dir, m)
		}},
		{"audio segments out of order", "the segment before it ended at", func(dir string, m *nodeproto.Complete) {
			segs := segmentsOf(t, dir, "audio")
			a, b := read(dir, "audio/"+segs[1]), read(dir, "audio/"+segs[2])
			write(dir, "audio/"+segs[1], b)
			write(dir, "audio/"+segs[2], a)
			rebuild(dir, m)
		}},
		{"a storyboard cue elsewhere", "a cue names a sprite of the output", func(dir string, m *nodeproto.Complete) {
			write(dir, "storyboard.vtt", strings.Replace(read(dir, "storyboard.vtt"), "storyboard-0.jpg#", "https://evil.example/storyboard-0.jpg#", 1))
			rebuild(dir, m)
		}},
		{"a storyboard cue with a protocol-relative sprite", "a cue names a sprite of the output", func(dir string, m *nodeproto.Complete) {
			write(dir, "storyboard.vtt", strings.Replace(read(dir, "storyboard.vtt"), "storyboard-0.jpg#", "//evil.example/storyboard-0.jpg#", 1))
			rebuild(dir, m)
		}},
		{"a storyboard with a stray line", "a cue has one line", func(dir string, m *nodeproto.Complete) {
			write(dir, "storyboard.vtt", strings.Replace(read(dir, "storyboard.vtt"), "#xywh=0,0,", "#xywh=0,0,", 1)+"\n00:00:09.000 --> 00:00:10.000\nstoryboard-0.jpg#xywh=0,0,160,90\nhttps://evil.example/x.jpg\n")
			rebuild(dir, m)
		}},
		{"a storyboard cue ending before it begins", "the cue ends before it begins", func(dir string, m *nodeproto.Complete) {
			write(dir, "storyboard.vtt", read(dir, "storyboard.vtt")+"\n00:00:10.000 --> 00:00:09.000\nstoryboard-0.jpg#xywh=0,0,160,90\n")
			rebuild(dir, m)
		}},
		{"a storyboard with a CR", "a cue's timing", func(dir string, m *nodeproto.Complete) {
			write(dir, "storyboard.vtt", read(dir, "storyboard.vtt")+"\n00:00:09.000 --> 00:00:10.000\rstoryboard-0.jpg#xywh=0,0,160,90\n")
			rebuild(dir, m)
		}},
		{"a storyboard naming a missing sprite", "which the output does not have", func(dir string, m *nodeproto.Complete) {
			write(dir, "storyboard.vtt", read(dir, "storyboard.vtt")+"\n00:00:09.000 --> 00:00:10.000\nstoryboard-7.jpg#xywh=0,0,160,90\n")
			rebuild(dir, m)
		}},
	} {
		t.Run(c.name, func(t *testing.T) {
			err := run(t, c.change)
			var rej *rejection
			if !errors.As(err, &rej) || !strings.Contains(rej.reason, c.want) {
				t.Fatalf("got %v, want a refusal saying %q", err, c.want)
			}
			t.Log(rej.reason)
		})
	}
}

// setExtinf sets the EXTINF of segment i of rendition r's playlist in
// dir to v.
func setExtinf(t *testing.T, dir, r string, i int, v string) {
	t.Helper()
	p := filepath.Join(dir, r, "index.m3u8")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(b), "\n")
	n := 0
	for k, l := range lines {
		if strings.HasPrefix(l, "#EXTINF:") {
			if n == i {
				lines[k] = "#EXTINF:" + v + ","
			}
			n++
		}
	}
	if n <= i {
		t.Fatalf("%s has %d segments", p, n)
	}
	if err := os.WriteFile(p, []byte(strings.Join(lines, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// shiftTfdt adds delta to the decode time (tfdt) of every track fragment
// of an fMP4 segment.
func shiftTfdt(t *testing.T, seg []byte, delta uint64) []byte {
	t.Helper()
	seg = bytes.Clone(seg)
	n := 0
	for i := bytes.Index(seg, []byte("tfdt")); i >= 0; {
		at := i + 8 // past the type, the version and the flags
		if seg[i+4] == 1 {
			binary.BigEndian.PutUint64(seg[at:], binary.BigEndian.Uint64(seg[at:])+delta)
		} else {
			binary.BigEndian.PutUint32(seg[at:], binary.BigEndian.Uint32(seg[at:])+uint32(delta))
		}
		n++
		j := bytes.Index(seg[at:], []byte("tfdt"))
		if j < 0 {
			break
		}
		i = at + j
	}
	if n == 0 {
		t.Fatal("no tfdt in the segment")
	}
	return seg
}

// segmentsOf lists the segments of rendition r's playlist in tree.
func segmentsOf(t *testing.T, tree, r string) []string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(tree, r, "index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		if strings.HasSuffix(l, ".m4s") {
			out = append(out, l)
		}
	}
	return out
}

// probeFrames counts the video frames of rendition r in tree with ffprobe
// and returns them with the picture size.
func probeFrames(t *testing.T, tree, r string) (frames, w, h int64) {
	t.Helper()
	out, err := exec.Command("ffprobe", "-v", "error", "-select_streams", "v:0", "-count_packets",
		"-show_entries", "stream=width,height,nb_read_packets", "-of", "csv=p=0", filepath.Join(tree, r, "index.m3u8")).Output()
	if err != nil {
		t.Fatalf("ffprobe %s: %v", r, err)
	}
	if _, err := fmt.Sscanf(strings.TrimSpace(string(out)), "%d,%d,%d", &w, &h, &frames); err != nil {
		t.Fatalf("ffprobe %s: %q: %v", r, out, err)
	}
	return frames, w, h
}

// The sampled re-check (fraction 1: every segment): an honest output
// passes with every video segment verified and its pixels counted as
// ffprobe counts its frames; the same output with one segment replaced by
// the same segment of another picture, made by the same encoder (the
// files, playlists, sizes and structure all still right), is refused for
// that segment's quality, a refusal that counts towards quarantine; a
// re-check that cannot be made (the source gone) is no refusal; an output
// with audio of a source without is refused.
func TestCheckOutputSamples(t *testing.T) {
	t.Parallel()
	tree, out, src := transcodeTree(t, "testsrc2")
	other, _, _ := transcodeTree(t, "smptebars")
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	const job = "vid.1.1-0"
	key := seedKey([]byte("a secret of the origin's, 32 bytes"))
	run := func(dir, source string, fraction float64) (checked, error) {
		m, err := BuildManifest(dir, job, out)
		if err != nil {
			t.Fatal(err)
		}
		return checkOutput(t.Context(), output{dir: dir, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
			source: 4 * time.Second, segment: time.Second, sample: &sampler{
				fraction: fraction,
				seed:     func(r string) []byte { return sampleSeed(key, job, r) },
				source:   func(context.Context) (string, func(), error) { return source, func() {}, nil },
				settings: verify.Settings{Preset: "ultrafast", SegmentDuration: time.Second},
				check:    verify.Check, limit: 2,
			}})
	}
	began := time.Now()
	got, err := run(tree, src, 1)
	if err != nil {
		t.Fatalf("the honest output: %v", err)
	}
	segs := len(segmentsOf(t, tree, "360p")) + len(segmentsOf(t, tree, "240p"))
	var pixels int64
	for _, r := range []string{"360p", "240p"} {
		n, w, h := probeFrames(t, tree, r)
		pixels += n * w * h
	}
	t.Logf("honest: %d segments verified in %s, %d pixels", got.verified, time.Since(began).Round(time.Millisecond), got.pixels)
	if got.verified != segs || got.pixels != pixels || got.Duration < 3900*time.Millisecond {
		t.Fatalf("the honest output: %d segments verified (want %d), %d pixels (ffprobe counts %d)", got.verified, segs, got.pixels, pixels)
	}
	// A smaller fraction checks fewer, at least one per rendition.
	if got, err := run(tree, src, 0.01); err != nil || got.verified < 2 || got.verified >= segs || got.pixels != pixels {
		t.Fatalf("the honest output at 1%%: %d verified, %v", got.verified, err)
	}

	// One segment of 240p replaced by the same segment of another picture.
	cheat := t.TempDir()
	if err := os.CopyFS(cheat, os.DirFS(tree)); err != nil {
		t.Fatal(err)
	}
	victim := segmentsOf(t, tree, "240p")[1]
	b, err := os.ReadFile(filepath.Join(other, "240p", segmentsOf(t, other, "240p")[1]))
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(cheat, "240p", victim), b, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = run(cheat, src, 1)
	var rej *rejection
	if !errors.As(err, &rej) || !rej.verify || !strings.Contains(rej.reason, "240p/"+victim) || !strings.Contains(rej.reason, "quality: PSNR") {
		t.Fatalf("the tampered output: %v, want a re-check refusal of 240p/%s for its quality", err, victim)
	}
	t.Logf("tampered: %s", rej.reason)

	// The source gone: the check could not be made.
	_, err = run(tree, filepath.Join(t.TempDir(), "gone.mp4"), 1)
	if ce, ok := isCheckError(err); !ok || errors.As(err, &rej) || !strings.Contains(ce.Error(), "could not check") {
		t.Fatalf("a re-check without the source: %v, want a check error", err)
	}

	// Audio the source does not have.
	silent := filepath.Join(t.TempDir(), "silent.mp4")
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, "-an", "-c", "copy", silent).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	_, err = run(tree, silent, 0.01)
	if !errors.As(err, &rej) || !strings.Contains(rej.reason, "the source has no audio") {
		t.Fatalf("an output with audio of a source without: %v, want a refusal", err)
	}
}

// What is published is what was checked: the origin writes the playlists
// itself from the checked renditions, segments and durations (the VOD
// packager's format), with BANDWIDTH measured and CODECS read from the
// output, so whatever else a worker wrote into its playlists goes nowhere.
func TestCheckedPlaylists(t *testing.T) {
	t.Parallel()
	tree, out := honestTree(t)
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(tree)); err != nil {
		t.Fatal(err)
	}
	read := func(rel string) string {
		b, err := os.ReadFile(filepath.Join(dir, filepath.FromSlash(rel)))
		if err != nil {
			t.Fatal(err)
		}
		return string(b)
	}
	write := func(rel, s string) {
		if err := os.WriteFile(filepath.Join(dir, filepath.FromSlash(rel)), []byte(s), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	honestMaster, honest360 := read("master.m3u8"), read("360p/index.m3u8")
	master := strings.Replace(honestMaster, "#EXT-X-INDEPENDENT-SEGMENTS\n", "#EXT-X-INDEPENDENT-SEGMENTS\n"+
		`#EXT-X-MEDIA:TYPE=SUBTITLES,GROUP-ID="subs",NAME="x",URI="https://evil.example/subs.m3u8"`+"\n"+
		`#EXT-X-SESSION-DATA:DATA-ID="com.evil",URI="https://evil.example/data.json"`+"\n"+
		`#EXT-X-CONTENT-STEERING:SERVER-URI="https://evil.example/steer"`+"\n", 1)
	master = regexp.MustCompile(`BANDWIDTH=[0-9]+`).ReplaceAllString(master, "BANDWIDTH=1")
	master = strings.ReplaceAll(master, `CODECS="avc1.`, `CODECS="evil,avc1.`)
	write("master.m3u8", master)
	media360 := strings.Replace(honest360, "#EXT-X-TARGETDURATION:1\n", "#EXT-X-TARGETDURATION:1\n"+
		`#EXT-X-KEY:METHOD=AES-128,URI="https://evil.example/key"`+"\n"+
		`#EXT-X-DATERANGE:ID="ad",START-DATE="2026-01-01T00:00:00Z",X-ASSET-URI="https://evil.example/ad.m3u8"`+"\n", 1)
	write("360p/index.m3u8", media360)
	m, err := BuildManifest(dir, "vid.1.1-0", out)
	if err != nil {
		t.Fatal(err)
	}
	got, err := checkOutput(t.Context(), output{dir: dir, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
		source: 4 * time.Second, segment: time.Second})
	if err != nil {
		t.Fatalf("checks: %v", err)
	}
	for _, p := range []string{"master.m3u8", "360p/index.m3u8", "360p/recording.m3u8", "240p/index.m3u8", "audio/index.m3u8"} {
		b, ok := got.playlists[p]
		if !ok {
			t.Fatalf("no %s written: %v", p, slices.Collect(maps.Keys(got.playlists)))
		}
		for _, bad := range []string{"evil", "KEY", "DATERANGE", "SESSION-DATA", "STEERING", "SUBTITLES", "BYTERANGE"} {
			if strings.Contains(string(b), bad) {
				t.Errorf("%s has %q:\n%s", p, bad, b)
			}
		}
	}
	// The media playlists are the packager's, without the worker's
	// wall-clock times.
	noPDT := regexp.MustCompile(`(?m)^#EXT-X-PROGRAM-DATE-TIME:.*\n`)
	for _, r := range []string{"360p", "240p", "audio"} {
		want := noPDT.ReplaceAllString(read(r+"/index.m3u8"), "")
		if r == "360p" {
			want = noPDT.ReplaceAllString(honest360, "")
		}
		if string(got.playlists[r+"/index.m3u8"]) != want {
			t.Errorf("%s/index.m3u8:\n%s\nwant\n%s", r, got.playlists[r+"/index.m3u8"], want)
		}
	}
	// The master: the packager's codecs, measured bandwidths near the
	// packager's own, in its order.
	pl, kind, err := m3u8.DecodeFrom(bytes.NewReader(got.playlists["master.m3u8"]), true)
	if err != nil || kind != m3u8.MASTER {
		t.Fatalf("the written master: %v\n%s", err, got.playlists["master.m3u8"])
	}
	hpl, _, _ := m3u8.DecodeFrom(strings.NewReader(honestMaster), true)
	vs, hvs := pl.(*m3u8.MasterPlaylist).Variants, hpl.(*m3u8.MasterPlaylist).Variants
	if len(vs) != 2 || len(hvs) != 2 {
		t.Fatalf("variants: %d, %d", len(vs), len(hvs))
	}
	for i, v := range vs {
		h := hvs[i]
		if v.URI != h.URI || v.Codecs != h.Codecs || v.Resolution != h.Resolution || v.Audio != "audio" ||
			float64(v.Bandwidth) < 0.5*float64(h.Bandwidth) || float64(v.Bandwidth) > 2*float64(h.Bandwidth) {
			t.Errorf("variant %d: %+v, the packager's %+v", i, v.VariantParams, h.VariantParams)
		}
	}
	t.Logf("written master:\n%s", got.playlists["master.m3u8"])
}

// The frames credited per segment are at most its EXTINF at the source's
// frame rate (a tenth more, and one): a worker cannot inflate its credit
// with frames the source does not have.
func TestCheckCreditCap(t *testing.T) {
	t.Parallel()
	tree, out := honestTree(t)
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	m, err := BuildManifest(tree, "vid.1.1-0", out)
	if err != nil {
		t.Fatal(err)
	}
	pixels := func(fps float64) int64 {
		got, err := checkOutput(t.Context(), output{dir: tree, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
			source: 4 * time.Second, segment: time.Second, frameRate: fps})
		if err != nil {
			t.Fatal(err)
		}
		return got.pixels
	}
	// The clip: 30 fps, four 1 s segments per rendition.
	if got, want := pixels(30), int64(120*640*360+120*428*240); got != want {
		t.Errorf("credited at the source's frame rate: %d, want %d", got, want)
	}
	// Had the source 10 fps, at most 12 frames a segment count.
	if got, want := pixels(10), int64(4*12*640*360+4*12*428*240); got != want {
		t.Errorf("credited at 10 fps: %d, want %d", got, want)
	}
}

func TestCheckOutputRefusesJunkAudioSegments(t *testing.T) {
	t.Parallel()
	tree, out := honestTree(t)
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	dir := t.TempDir()
	if err := os.CopyFS(dir, os.DirFS(tree)); err != nil {
		t.Fatal(err)
	}
	honest, err := BuildManifest(dir, "vid.1.1-0", out)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := checkOutput(t.Context(), output{dir: dir, manifest: honest, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
		source: 4 * time.Second, segment: time.Second}); err != nil {
		t.Fatalf("the honest output: %v", err)
	}
	segs := segmentsOf(t, dir, "audio")
	if len(segs) == 0 {
		t.Fatal("the honest output has no audio segment")
	}
	for _, s := range segs {
		if err := os.WriteFile(filepath.Join(dir, "audio", s), []byte("not audio: whatever the worker wants the viewers to hear"), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	m, err := BuildManifest(dir, "vid.1.1-0", out)
	if err != nil {
		t.Fatal(err)
	}
	_, err = checkOutput(t.Context(), output{dir: dir, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
		source: 4 * time.Second, segment: time.Second})
	var rej *rejection
	if !errors.As(err, &rej) || !strings.Contains(rej.reason, "audio/") {
		t.Fatalf("an output whose audio segments are %d junk files: got %v, want a refusal naming audio/", len(segs), err)
	}
}

// The sampled re-check compares the sound: an honest output passes (and
// a silent source's), the audio of another source spliced in (real,
// well-formed AAC in the same layout, which every cheap check accepts)
// is refused for its sound, an output without audio of a source whose
// audio decodes is refused, and one without audio of a source whose
// audio does not decode passes.
func TestCheckOutputComparesSound(t *testing.T) {
	t.Parallel()
	const pink = "anoisesrc=color=pink:sample_rate=44100:amplitude=0.5:seed=1"
	tree, out, src := transcodeTreeWith(t, "testsrc2", pink)
	other, _, _ := transcodeTreeWith(t, "testsrc2", "anoisesrc=color=pink:sample_rate=44100:amplitude=0.5:seed=2")
	tone, _, _ := transcodeTreeWith(t, "testsrc2", "sine=frequency=660:sample_rate=44100")
	mute, muteOut, muteSrc := transcodeTreeWith(t, "testsrc2", "")
	silent, silentOut, silentSrc := transcodeTreeWith(t, "testsrc2", "anullsrc=r=44100:cl=stereo")
	// The source with every audio packet garbled: the stream is there,
	// nothing decodes.
	brokenSrc := filepath.Join(t.TempDir(), "broken.mp4")
	if b, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, "-c", "copy", "-bsf:a", "noise=amount=1", brokenSrc).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, b)
	}
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	const job = "vid.1.1-0"
	key := seedKey([]byte("a secret of the origin's, 32 bytes"))
	run := func(dir, source string, out routing.JobOutcome, fraction float64) (checked, error) {
		t.Helper()
		m, err := BuildManifest(dir, job, out)
		if err != nil {
			t.Fatal(err)
		}
		return checkOutput(t.Context(), output{dir: dir, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
			source: 4 * time.Second, segment: time.Second, sample: &sampler{
				fraction: fraction,
				seed:     func(r string) []byte { return sampleSeed(key, job, r) },
				source:   func(context.Context) (string, func(), error) { return source, func() {}, nil },
				settings: verify.Settings{Preset: "ultrafast", SegmentDuration: time.Second},
				check:    verify.Check, limit: 2,
			}})
	}
	// splice is the honest tree with the audio rendition of from.
	splice := func(from string) string {
		dir := t.TempDir()
		if err := os.CopyFS(dir, os.DirFS(tree)); err != nil {
			t.Fatal(err)
		}
		if err := os.RemoveAll(filepath.Join(dir, "audio")); err != nil {
			t.Fatal(err)
		}
		if err := os.CopyFS(filepath.Join(dir, "audio"), os.DirFS(filepath.Join(from, "audio"))); err != nil {
			t.Fatal(err)
		}
		return dir
	}

	if _, err := run(tree, src, out, 1); err != nil {
		t.Fatalf("the honest output, every segment checked: %v", err)
	}
	if _, err := run(silent, silentSrc, silentOut, 1); err != nil {
		t.Fatalf("the honest output of a silent source: %v", err)
	}
	for name, from := range map[string]string{"other pink noise": other, "a 660 Hz tone": tone, "silence": silent} {
		// The cheap checks take it: only the sound differs.
		dir := splice(from)
		if _, err := run(dir, src, out, 0); err != nil {
			t.Fatalf("%s spliced in, without the re-check: %v", name, err)
		}
		_, err := run(dir, src, out, 0.01)
		var rej *rejection
		if !errors.As(err, &rej) || !rej.verify || !strings.Contains(rej.reason, "failed the origin's re-check: audio: ") ||
			!strings.Contains(rej.reason, "audio/") {
			t.Fatalf("the audio of %s spliced in: %v, want a re-check refusal for the audio", name, err)
		}
		t.Logf("%s spliced in: %s", name, rej.reason)
	}

	// The honest audio half a second behind the video: the cheap checks
	// take it (a source's audio may start late), the sound does not.
	{
		dir := splice(tree)
		for _, s := range segmentsOf(t, dir, "audio") {
			p := filepath.Join(dir, "audio", s)
			b, err := os.ReadFile(p)
			if err != nil {
				t.Fatal(err)
			}
			if err := os.WriteFile(p, shiftTfdt(t, b, 24000), 0o644); err != nil {
				t.Fatal(err)
			}
		}
		if _, err := run(dir, src, out, 0); err != nil {
			t.Fatalf("the audio half a second late, without the re-check: %v", err)
		}
		_, err := run(dir, src, out, 1)
		var rej *rejection
		if !errors.As(err, &rej) || !strings.Contains(rej.reason, "failed the origin's re-check: audio: ") {
			t.Fatalf("the audio half a second late: %v, want a re-check refusal for the audio", err)
		}
	}

	// No audio rendition, of a source whose audio decodes.
	_, err := run(mute, src, muteOut, 0.01)
	var rej *rejection
	if !errors.As(err, &rej) || !strings.Contains(rej.reason, "the output has no audio rendition; the source has audio that decodes") {
		t.Fatalf("an output without the source's audio: %v, want a refusal", err)
	}
	if _, err := run(mute, muteSrc, muteOut, 0.01); err != nil {
		t.Fatalf("an output without audio of a source without: %v", err)
	}
	// An output without audio of a source whose audio does not decode.
	// (The ladder's own output of such a source has no master playlist
	// at all: its audio rendition waits for audio that never comes.)
	if _, err := run(mute, brokenSrc, muteOut, 0.01); err != nil {
		t.Fatalf("an output without audio of a source whose audio does not decode: %v", err)
	}
}
