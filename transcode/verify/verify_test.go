package verify

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Every segment of Shoal's own VOD output (vod.Transcode and the live
// packager, as a worker runs them) passes, in both rungs of the ladder.
func TestShoalSegmentsPass(t *testing.T) {
	t.Parallel()
	src, out := source(t), shoalOutput(t)
	for _, rung := range []ffmpeg.Rung{rung360, rung240} {
		r := readRendition(t, filepath.Join(out, videoID, rung.Name))
		if len(r.segs) != 3 {
			t.Fatalf("%s: %d segments, want 3", rung.Name, len(r.segs))
		}
		for i := range r.segs {
			rep := check(t, request(src, r, i, rung))
			wantPass(t, rep)
			f := rep.Figures
			if f.Frames != 60 || f.Format != FormatFMP4 || f.WantKeyframes[0] != 0 || len(f.WantKeyframes) != 1 {
				t.Fatalf("%s segment %d: %+v", rung.Name, i, f)
			}
			if want := map[string]int{"360p": 640, "240p": 428}[rung.Name]; f.Width != want || f.WantWidth != want {
				t.Fatalf("%s: width %d (want %d), the ladder's %d", rung.Name, f.Width, want, f.WantWidth)
			}
		}
	}
}

// The same with MPEG-TS segments (SHOAL_HLS_FORMAT=mpegts).
func TestShoalMPEGTSSegmentsPass(t *testing.T) {
	t.Parallel()
	src := source(t)
	root := filepath.Join(t.TempDir(), "out")
	if err := shoalVOD(src, root, media.Ladder{{Height: 360, Bitrate: 700_000}}, packager.FormatMPEGTS); err != nil {
		t.Fatal(err)
	}
	r := readRendition(t, filepath.Join(root, videoID, "360p"))
	for i := range r.segs {
		rep := check(t, request(src, r, i, rung360))
		wantPass(t, rep)
		if rep.Figures.Format != FormatMPEGTS {
			t.Fatalf("format %q", rep.Figures.Format)
		}
	}
}

// Sources whose frames the ladder drops or whose keyframes it moves (its
// encoders count in ticks of the declared frame rate) and frame rates that
// do not divide the grid: Shoal's own output passes, with exactly the
// frames the ladder kept; an encode that keeps every source frame fails.
func TestFrameRateHandling(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name   string
		args   []string
		frames []int // per segment
	}{
		{"fast.ts", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=60", "-t", "5", "-c:v", "libx264", "-preset", "ultrafast",
			"-g", "60", "-pix_fmt", "yuv420p", "-bsf:v", "h264_metadata=tick_rate=60", "-f", "mpegts"}, []int{61, 60, 30}},
		{"jitter.mkv", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-vf", "setpts='PTS+if(eq(mod(N,10),5),-0.02/TB,0)'",
			"-t", "5", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-vsync", "passthrough"}, []int{54, 54, 27}},
		{"ntsc.mp4", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30000/1001", "-t", "5", "-c:v", "libx264", "-preset", "ultrafast",
			"-pix_fmt", "yuv420p"}, []int{60, 60, 30}},
		{"pal.mp4", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=25", "-t", "5", "-c:v", "libx264", "-preset", "ultrafast",
			"-pix_fmt", "yuv420p"}, []int{50, 50, 25}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			dir := t.TempDir()
			src := filepath.Join(dir, c.name)
			if err := sh("ffmpeg", append(append([]string{"-nostdin", "-v", "error", "-y"}, c.args...), src)...); err != nil {
				t.Fatal(err)
			}
			root := filepath.Join(dir, "out")
			rung := ffmpeg.Rung{Name: "240p", Height: 240, Bitrate: 400_000}
			if err := shoalVOD(src, root, media.Ladder{{Height: 240, Bitrate: 400_000}}, packager.FormatFMP4); err != nil {
				t.Fatal(err)
			}
			r := readRendition(t, filepath.Join(root, videoID, "240p"))
			if len(r.segs) != len(c.frames) {
				t.Fatalf("%d segments, want %d", len(r.segs), len(c.frames))
			}
			for i := range r.segs {
				rep := check(t, request(src, r, i, rung))
				wantPass(t, rep)
				if rep.Figures.Frames != c.frames[i] {
					t.Fatalf("segment %d: %d frames, want %d", i, rep.Figures.Frames, c.frames[i])
				}
			}
			if c.name != "jitter.mkv" {
				return
			}
			// The ffmpeg CLI keeps every frame of the jittered source.
			cli := readRendition(t, cliHLS(t, src, append(x264Args("veryfast", 320, 240, 400_000, ""), "-vsync", "passthrough")...))
			rep := check(t, request(src, cli, 1, rung))
			wantFail(t, rep, CheckFrames, []string{"60 frames, want 54"})
		})
	}
}

// Honest encodes by another encoder configuration (the ffmpeg CLI with x264
// at other presets, or without B-frames and lookahead as hardware encoders
// run: same size, bitrate and keyframes, fMP4 from FFmpeg's own HLS muxer)
// pass, on easy and on detailed content.
func TestOtherHonestEncodersPass(t *testing.T) {
	t.Parallel()
	for _, content := range []string{"testsrc2", "mandelbrot"} {
		t.Run(content, func(t *testing.T) {
			t.Parallel()
			src := source(t)
			if content == "mandelbrot" {
				src = detailedSource(t)
			}
			for _, c := range []struct {
				name string
				args []string
			}{
				{"x264 medium", x264Args("medium", 640, 360, 700_000, "")},
				{"x264 superfast", x264Args("superfast", 640, 360, 700_000, "")},
				{"x264 zerolatency (no B-frames, no lookahead)", append(x264Args("veryfast", 640, 360, 700_000, ""), "-tune", "zerolatency")},
			} {
				r := readRendition(t, cliHLS(t, src, c.args...))
				for i := range 2 {
					t.Logf("%s, segment %d:", c.name, i)
					wantPass(t, check(t, request(src, r, i, rung360)))
				}
			}
		})
	}
}

var detailedOnce once

// detailedSource is a 6 s 640x360 zoom into the Mandelbrot set: fine
// detail everywhere, harder to encode than testsrc2.
func detailedSource(t testing.TB) string {
	return detailedOnce.get(t, func(p string) error { return clip(p, "mandelbrot", 640, 360, "30", 6) }, "mandelbrot.mp4")
}

// Cheats fail, each for its reason, while the checks it does not touch
// pass.
func TestCheatsFail(t *testing.T) {
	t.Parallel()
	src := source(t)
	shoal := readRendition(t, filepath.Join(shoalOutput(t), videoID, "360p"))
	other := filepath.Join(t.TempDir(), "other.mp4")
	if err := clip(other, "testsrc", 640, 360, "30", 6); err != nil {
		t.Fatal(err)
	}
	all := []string{CheckDecode, CheckResolution, CheckTiming, CheckFrames, CheckDuration, CheckKeyframes, CheckQuality}
	except := func(names ...string) []string {
		var out []string
		for _, n := range all {
			if !strings.Contains(strings.Join(names, ","), n) {
				out = append(out, n)
			}
		}
		return out
	}
	cli := func(src string, args ...string) func(t *testing.T) rendition {
		return func(t *testing.T) rendition { return readRendition(t, cliHLS(t, src, args...)) }
	}
	for _, c := range []struct {
		name    string
		make    func(t *testing.T) rendition
		seg     int
		req     func(*Request) // changes to the request, after it is made
		fail    string
		words   []string
		alsoBad []string // other checks this cheat fails
	}{
		{name: "a quarter of the bitrate", make: cli(src, x264Args("veryfast", 640, 360, 175_000, "")...), seg: 1,
			fail: CheckQuality, words: []string{"below the reference"}},
		{name: "blurred", make: cli(src, x264Args("veryfast", 640, 360, 700_000, "gblur=sigma=1.5")...), seg: 1,
			fail: CheckQuality, words: []string{"below the reference"}},
		{name: "another video", make: cli(other, x264Args("veryfast", 640, 360, 700_000, "")...), seg: 1,
			fail: CheckQuality, words: []string{"below the floor"}},
		{name: "wrong resolution", make: cli(src, x264Args("veryfast", 638, 360, 700_000, "")...), seg: 1,
			fail: CheckResolution, words: []string{"638x360, want 640x360"}, alsoBad: []string{CheckQuality}},
		{name: "a frame dropped", make: cli(src, append(x264Args("veryfast", 640, 360, 700_000, "select='not(eq(n\\,46))'"), "-vsync", "passthrough")...),
			fail: CheckFrames, words: []string{"59 frames, want 60", "the frame at +1.533 s is missing"}},
		{name: "a frame repeated in place of the next", make: cli(src, x264Args("veryfast", 640, 360, 700_000,
			"split[a][b];[a][b]freezeframes=first=46:last=46:replace=45")...),
			fail: CheckFrames, words: []string{"the frame at +1.533 s shows the source at +1.500 s"}, alsoBad: []string{CheckQuality}},
		{name: "a frame dropped, the next ones moved up", make: cli(src, x264Args("veryfast", 640, 360, 700_000,
			"select='not(eq(n\\,46))',setpts=N/30/TB")...),
			fail: CheckFrames, words: []string{"the frame at +1.533 s shows the source at +1.567 s"}, alsoBad: []string{CheckQuality}},
		{name: "a keyframe added", make: cli(src, append(x264Args("veryfast", 640, 360, 700_000, ""), "-force_key_frames", "expr:gte(t,n_forced*1)")...), seg: 1,
			fail: CheckKeyframes, words: []string{"keyframes at +0.000 s, +1.000 s, want +0.000 s"}},
		{name: "keyframes moved", make: cli(src, append(x264Args("veryfast", 640, 360, 700_000, ""), "-force_key_frames", "0,2.5,4.5")...), seg: 1,
			fail: CheckKeyframes, words: []string{"2.500 s is not on the keyframe grid"}},
		{name: "a segment of another time range", make: func(*testing.T) rendition { return shoal }, seg: 2,
			req:  func(r *Request) { r.Start, r.End = 2*time.Second, 4*time.Second },
			fail: CheckTiming, words: []string{"it starts at 4.000 s, want 2.000 s"}, alsoBad: []string{CheckQuality, CheckFrames}},
		{name: "a segment of another time range, retimed", make: func(*testing.T) rendition { return shoal }, seg: 2,
			req: func(r *Request) {
				r.Start, r.End = 2*time.Second, 4*time.Second
				r.Segment.Media = retime(t, r.Segment.Media, -2*90000)
			},
			fail: CheckQuality, words: []string{"below the reference"}, alsoBad: []string{CheckFrames}},
		{name: "undecodable", make: func(*testing.T) rendition { return shoal }, seg: 1,
			req:  func(r *Request) { r.Segment.Media = garble(t, r.Segment) },
			fail: CheckDecode, words: []string{"decod"}, alsoBad: []string{CheckQuality, CheckFrames, CheckResolution}},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			r := c.make(t)
			req := request(src, r, c.seg, rung360)
			if c.req != nil {
				c.req(&req)
			}
			rep := check(t, req)
			wantFail(t, rep, c.fail, c.words, except(append([]string{c.fail}, c.alsoBad...)...)...)
		})
	}
}

// retime moves the decode time (tfdt, version 1) of an fMP4 segment
// written by Shoal's packager by delta ticks of its 90 kHz time scale.
func retime(t *testing.T, seg []byte, delta int64) []byte {
	t.Helper()
	out := bytes.Clone(seg)
	i := bytes.Index(out, []byte("tfdt"))
	if i < 0 || out[i+4] != 1 {
		t.Fatal("no version 1 tfdt")
	}
	v := binary.BigEndian.Uint64(out[i+8:])
	binary.BigEndian.PutUint64(out[i+8:], uint64(int64(v)+delta))
	return out
}

// garble damages the slice data of a segment's first frame, keeping its
// structure (lengths, NAL headers) intact.
func garble(t *testing.T, seg Segment) []byte {
	t.Helper()
	out := bytes.Clone(seg.Media)
	p, err := ParseSegment(Segment{Init: seg.Init, Media: out})
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range p.Samples[0].NALUs {
		if h264.NALUType(n[0]&0x1f) == h264.NALUTypeIDR {
			for k := len(n) / 4; k < len(n); k += 7 {
				n[k] ^= 0x5a
			}
			return out // n is a slice of out
		}
	}
	t.Fatal("no IDR slice in the first sample")
	return nil
}

// Segment bytes that do not parse are the worker's fault: a report, not
// an error. A source the checker cannot read is an error: the caller
// tells "the worker cheated" from "the check could not be made".
func TestReportOrError(t *testing.T) {
	t.Parallel()
	src := source(t)
	r := readRendition(t, filepath.Join(shoalOutput(t), videoID, "360p"))
	req := request(src, r, 1, rung360)

	trunc := req
	trunc.Segment.Media = req.Segment.Media[:len(req.Segment.Media)/2]
	rep := check(t, trunc)
	wantFail(t, rep, CheckDecode, []string{"malformed segment"})
	for _, c := range rep.Checks[1:] {
		if c.Passed || !strings.Contains(c.Reason, "not checked") {
			t.Fatalf("after a parse error: %+v", c)
		}
	}

	noInit := req
	noInit.Segment.Init = nil // fMP4 taken for MPEG-TS
	wantFail(t, check(t, noInit), CheckDecode, []string{"MPEG-TS"})

	gone := req
	gone.Source = filepath.Join(t.TempDir(), "gone.mp4")
	if _, err := Check(context.Background(), gone); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("a missing source: %v, want an error wrapping fs.ErrNotExist", err)
	}
	for name, mutate := range map[string]func(*Request){
		"no source":           func(r *Request) { r.Source = "" },
		"end before start":    func(r *Request) { r.End = r.Start },
		"no rung height":      func(r *Request) { r.Rung.Height = 0 },
		"no bitrate":          func(r *Request) { r.Rung.Bitrate = 0 },
		"no segment duration": func(r *Request) { r.Settings = Settings{} },
		"a rung of another size": func(r *Request) {
			r.Rung.Width = 480
		},
	} {
		bad := req
		mutate(&bad)
		if _, err := Check(context.Background(), bad); err == nil {
			t.Errorf("%s: no error", name)
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
	// The source's start: outside it the source has no frame.
	past := req
	past.Start, past.End = time.Minute, time.Minute+2*time.Second
	rep = check(t, past)
	wantFail(t, rep, CheckFrames, []string{"the source has no frame in [1m0s, 1m2s)"}, CheckDecode, CheckResolution)
}

// A 2 s 1080p segment (the top rung of the default ladder) checks in a few
// seconds on the development machine's 2 cores: the figure is logged, not
// asserted.
func Test1080pSegment(t *testing.T) {
	if testing.Short() {
		t.Skip("1080p encodes take a while")
	}
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "src.mp4")
	if err := clip(src, "testsrc2", 1920, 1080, "30", 4); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "out")
	if err := shoalVOD(src, root, media.Ladder{{Height: 1080, Bitrate: 5_000_000}}, packager.FormatFMP4); err != nil {
		t.Fatal(err)
	}
	r := readRendition(t, filepath.Join(root, videoID, "1080p"))
	rung := ffmpeg.Rung{Name: "1080p", Width: 1920, Height: 1080, Bitrate: 5_000_000}
	rep := check(t, request(src, r, 1, rung))
	wantPass(t, rep)
	req := request(src, r, 1, rung)
	req.NoReference = true
	rep2 := check(t, req)
	wantPass(t, rep2)
	t.Logf("1080p, 2 s: checked in %s with the reference encode, %s without", rep.Figures.Elapsed.Round(time.Millisecond),
		rep2.Figures.Elapsed.Round(time.Millisecond))
}

// Content the origin's own encoder cannot render above the floors (noise
// at a low bitrate) does not condemn an honest worker: the floors come
// down to the reference's figures less the margins. Without a reference,
// the floors are absolute.
func TestHardContentLowersTheFloors(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	src := filepath.Join(dir, "noise.mp4")
	if err := sh("ffmpeg", "-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "nullsrc=size=320x240:rate=30,geq=lum='random(1)*255':cb='random(2)*255':cr='random(3)*255'",
		"-t", "4", "-c:v", "libx264", "-preset", "veryfast", "-crf", "10", "-pix_fmt", "yuv420p", src); err != nil {
		t.Fatal(err)
	}
	root := filepath.Join(dir, "out")
	if err := shoalVOD(src, root, media.Ladder{{Height: 240, Bitrate: 150_000}}, packager.FormatFMP4); err != nil {
		t.Fatal(err)
	}
	r := readRendition(t, filepath.Join(root, videoID, "240p"))
	req := request(src, r, 1, ffmpeg.Rung{Name: "240p", Height: 240, Bitrate: 150_000})
	rep := check(t, req)
	wantPass(t, rep)
	if rep.Figures.RefPSNR >= DefaultThresholds.MinPSNR {
		t.Fatalf("the reference scores %.2f dB: not hard enough content for this test", rep.Figures.RefPSNR)
	}
	req.NoReference = true
	wantFail(t, check(t, req), CheckQuality, []string{"below the floor of 25.0 dB", "below the floor of 0.850"})
}
