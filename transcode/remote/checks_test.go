package remote

import (
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/vod"
)

// honestTree transcodes a 4 s 640x360 clip as a worker does and returns
// the tree and the outcome.
func honestTree(t *testing.T) (string, routing.JobOutcome) {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.mp4")
	if out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100", "-t", "4", "-c:v", "libx264", "-preset", "ultrafast",
		"-pix_fmt", "yuv420p", "-c:a", "aac", src).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	log := slog.New(slog.DiscardHandler)
	s := vod.Settings{Backend: ffmpeg.BackendSoftware, Preset: "ultrafast", SegmentDuration: time.Second, Log: log,
		NewPackager: func(dir string, hub *stream.Hub, segment time.Duration, log *slog.Logger) (vod.Packager, error) {
			return packager.New(packager.Config{Dir: dir, SegmentDuration: segment, LiveWindow: 3, Format: packager.FormatFMP4},
				packager.Deps{Log: log, Hub: hub})
		}}
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	out, err := vod.TranscodeJob(t.Context(), s, "vid", src, filepath.Join(dir, "out"), ladder, func(float64) {})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "out", "vid"), out
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
		})
	}
}
