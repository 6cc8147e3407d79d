package verify

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/vod"
)

var quiet = slog.New(slog.DiscardHandler)

// fixtures holds files made once for the package's tests (sources, Shoal's
// own VOD output), removed when they end.
var fixtures string

func TestMain(m *testing.M) {
	ffmpeg.SetLogger(quiet)
	dir, err := os.MkdirTemp("", "verify-test-")
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
	fixtures = dir
	code := m.Run()
	_ = os.RemoveAll(dir)
	os.Exit(code)
}

// The node's settings in these tests: VOD's 2 s segments, veryfast.
var settings = Settings{Preset: "veryfast", SegmentDuration: 2 * time.Second, Backend: ffmpeg.BackendSoftware}

// rung360 is the rung most tests check: the source's own height.
var (
	rung360 = ffmpeg.Rung{Name: "360p", Height: 360, Bitrate: 700_000}
	rung240 = ffmpeg.Rung{Name: "240p", Height: 240, Bitrate: 300_000}
)

// once makes a fixture the first time a test asks for it.
type once struct {
	sync.Once
	path string
	err  error
}

func (o *once) get(t testing.TB, make func(path string) error, name string) string {
	t.Helper()
	o.Do(func() {
		o.path = filepath.Join(fixtures, name)
		o.err = make(o.path)
	})
	if o.err != nil {
		t.Fatalf("fixture %s: %v", name, o.err)
	}
	return o.path
}

func sh(name string, args ...string) error {
	out, err := exec.Command(name, args...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return nil
}

// clip encodes seconds of a lavfi test pattern at w x h and rate (with a
// sine tone) to an MP4 like an upload: x264 at a high quality, a keyframe
// every second.
func clip(path, pattern string, w, h int, rate string, seconds int) error {
	return sh("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("%s=size=%dx%d:rate=%s", pattern, w, h, rate),
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-g", "30",
		"-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", path)
}

var (
	srcOnce   once
	shoalOnce once
)

// source is a 6 s 640x360 testsrc2 clip at 30 fps (three 2 s segments).
func source(t testing.TB) string {
	return srcOnce.get(t, func(p string) error { return clip(p, "testsrc2", 640, 360, "30", 6) }, "src.mp4")
}

// shoalOutput is Shoal's own VOD output of source: 360p and 240p, fMP4.
func shoalOutput(t testing.TB) string {
	src := source(t)
	return shoalOnce.get(t, func(p string) error {
		return shoalVOD(src, p, media.Ladder{{Height: 360, Bitrate: 700_000}, {Height: 240, Bitrate: 300_000}}, packager.FormatFMP4)
	}, "shoal")
}

// videoID is the id the VOD fixtures are made under.
const videoID = "verifytest0000000000"

// shoalVOD transcodes src with Shoal's VOD job (vod.Transcode and the live
// packager, as the worker does) into root/videoID.
func shoalVOD(src, root string, ladder media.Ladder, format string) error {
	if err := os.MkdirAll(root, 0o755); err != nil {
		return err
	}
	_, err := vod.Transcode(context.Background(), vod.Settings{
		Backend: ffmpeg.BackendSoftware, Preset: settings.Preset, SegmentDuration: settings.SegmentDuration, Log: quiet,
		NewPackager: func(dir string, hub *stream.Hub, seg time.Duration, log *slog.Logger) (vod.Packager, error) {
			return packager.New(packager.Config{Dir: dir, SegmentDuration: seg, LiveWindow: 3, Format: format},
				packager.Deps{Log: log, Hub: hub})
		},
	}, videoID, src, root, ladder, func(float64) {})
	return err
}

// cliHLS encodes src with the ffmpeg CLI into an fMP4 HLS rendition in a
// new directory: video only, the given filter and encoder arguments.
func cliHLS(t testing.TB, src string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	full := append([]string{"-nostdin", "-v", "error", "-y", "-i", src, "-an"}, args...)
	full = append(full, "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "2", "-hls_playlist_type", "vod",
		"-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", filepath.Join(dir, "seg%d.m4s"),
		filepath.Join(dir, "index.m3u8"))
	if err := sh("ffmpeg", full...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// x264Args are the ffmpeg CLI's arguments for an encode like a rung's:
// size, bitrate (maxrate and buffer as the ladder sets them), keyframes
// forced every 2 s and nowhere else, closed GOPs.
func x264Args(preset string, w, h, bitrate int, filter string) []string {
	vf := fmt.Sprintf("scale=%d:%d:flags=bilinear", w, h)
	if filter != "" {
		vf = filter + "," + vf
	}
	return []string{"-vf", vf, "-c:v", "libx264", "-preset", preset, "-pix_fmt", "yuv420p",
		"-b:v", strconv.Itoa(bitrate), "-maxrate", strconv.Itoa(bitrate * 11 / 10), "-bufsize", strconv.Itoa(bitrate * 2),
		"-x264-params", "scenecut=0:open-gop=0", "-force_key_frames", "expr:gte(t,n_forced*2)"}
}

// rendition is one rendition of an HLS output, as its playlist lists it.
type rendition struct {
	init []byte // nil for MPEG-TS
	segs []renditionSeg
}

type renditionSeg struct {
	name       string
	data       []byte
	start, end time.Duration
}

// readRendition reads the media playlist dir/index.m3u8 (written by Shoal
// or the ffmpeg CLI: trusted here) and the files it lists.
func readRendition(t testing.TB, dir string) rendition {
	t.Helper()
	pl, err := os.ReadFile(filepath.Join(dir, "index.m3u8"))
	if err != nil {
		t.Fatal(err)
	}
	var r rendition
	var at, next time.Duration
	sc := bufio.NewScanner(bytes.NewReader(pl))
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		switch {
		case strings.HasPrefix(line, "#EXT-X-MAP:URI="):
			uri := strings.Trim(strings.TrimPrefix(line, "#EXT-X-MAP:URI="), `"`)
			if r.init, err = os.ReadFile(filepath.Join(dir, uri)); err != nil {
				t.Fatal(err)
			}
		case strings.HasPrefix(line, "#EXTINF:"):
			v := strings.TrimSuffix(strings.TrimPrefix(line, "#EXTINF:"), ",")
			v, _, _ = strings.Cut(v, ",")
			secs, err := strconv.ParseFloat(v, 64)
			if err != nil {
				t.Fatalf("EXTINF %q: %v", line, err)
			}
			next = at + time.Duration(secs*float64(time.Second)+0.5)
		case line != "" && !strings.HasPrefix(line, "#"):
			data, err := os.ReadFile(filepath.Join(dir, line))
			if err != nil {
				t.Fatal(err)
			}
			r.segs = append(r.segs, renditionSeg{name: line, data: data, start: at, end: next})
			at = next
		}
	}
	if len(r.segs) == 0 {
		t.Fatalf("no segment in %s", dir)
	}
	return r
}

// request is the check of segment i of r against src at rung.
func request(src string, r rendition, i int, rung ffmpeg.Rung) Request {
	s := r.segs[i]
	return Request{Source: src, Segment: Segment{Init: r.init, Media: s.data}, Start: s.start, End: s.end,
		Rung: rung, Settings: settings}
}

// check runs Check and logs the report.
func check(t testing.TB, req Request) Report {
	t.Helper()
	rep, err := Check(context.Background(), req)
	if err != nil {
		t.Fatalf("Check: %v", err)
	}
	f := rep.Figures
	t.Logf("passed=%v PSNR %.2f dB (ref %.2f) SSIM %.4f (ref %.4f) worst frame %.2f dB (ref %.2f) neighbour gap %.2f dB frames %d/%d keyframes %v/%v start %s/%s duration %s/%s in %s; %s",
		rep.Passed, f.PSNR, f.RefPSNR, f.SSIM, f.RefSSIM, f.MinPSNR, f.RefMinPSNR, f.NeighbourGap, f.Frames, f.WantFrames,
		f.Keyframes, f.WantKeyframes, f.Start, f.WantStart, f.Duration, f.WantDuration, f.Elapsed.Round(time.Millisecond), rep.Reason())
	return rep
}

// wantPass fails the test unless rep passed every check.
func wantPass(t testing.TB, rep Report) {
	t.Helper()
	if !rep.Passed {
		t.Fatalf("an honest segment failed: %s", rep.Reason())
	}
	if len(rep.Checks) != 7 {
		t.Fatalf("%d checks, want 7: %+v", len(rep.Checks), rep.Checks)
	}
}

// wantFail fails the test unless rep failed check name (with a reason
// containing each of words) and passed every check in passes.
func wantFail(t testing.TB, rep Report, name string, words []string, passes ...string) {
	t.Helper()
	if rep.Passed {
		t.Fatalf("a bad segment passed (want %s to fail)", name)
	}
	c, ok := rep.Check(name)
	if !ok || c.Passed {
		t.Fatalf("check %s did not fail; failed: %s", name, rep.Reason())
	}
	for _, w := range words {
		if !strings.Contains(c.Reason, w) {
			t.Errorf("%s's reason %q does not say %q", name, c.Reason, w)
		}
	}
	for _, p := range passes {
		if c, ok := rep.Check(p); !ok || !c.Passed {
			t.Errorf("check %s failed too (%s); only %s should", p, c.Reason, name)
		}
	}
}
