package ffmpeg

import (
	"bufio"
	"context"
	"errors"
	"io/fs"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// ladderVideo transcodes path with TranscodeFile to the one rung and
// returns what the ladder encoded.
func ladderVideo(t *testing.T, path string, rung Rung, interval time.Duration) CodedVideo {
	t.Helper()
	o, _ := transcode(t, path, FileConfig{Config: Config{Preset: "veryfast", KeyframeInterval: interval, Log: quiet},
		Rungs: []Rung{rung}, PosterAt: -1})
	aus := o.video[0]
	return CodedVideo{Track: o.rungs[0].Track(aus[0]), AUs: aus}
}

// CompareSegment follows the ladder's frame-rate handling and keyframe
// grid exactly: over a whole file, the frames it says the ladder keeps are
// those TranscodeFile encoded, at the same instants, with the keyframes
// at the same frames; measured against the source, that encode and the
// reference CompareSegment makes itself (the same code on the same
// frames) score the same to a tenth of a dB.
func TestCompareSegmentFollowsTheLadder(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name string
		args []string
		kept int // frames the ladder keeps
	}{
		// 60 fps content whose SPS says 30 (FFmpeg guesses 30 fps): every
		// other frame repeats a tick and is dropped; the keyframes on the
		// grid repeat one too and move to the next tick.
		{"fast.ts", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=60", "-t", "5", "-c:v", "libx264", "-preset", "ultrafast",
			"-g", "60", "-pix_fmt", "yuv420p", "-bsf:v", "h264_metadata=tick_rate=60", "-f", "mpegts"}, 151},
		// 30 fps with every tenth frame 20 ms early: it lands on the
		// previous frame's tick and is dropped.
		{"jitter.mkv", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30", "-vf", "setpts='PTS+if(eq(mod(N,10),5),-0.02/TB,0)'",
			"-t", "5", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-vsync", "passthrough"}, 135},
		// 29.97 fps: the grid instants fall between frames.
		{"ntsc.mp4", []string{"-f", "lavfi", "-i", "testsrc2=size=320x240:rate=30000/1001", "-t", "5", "-c:v", "libx264", "-preset", "ultrafast",
			"-pix_fmt", "yuv420p"}, 150},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			src := makeClip(t, c.name, c.args...)
			rung := Rung{Name: "240p", Height: 240, Bitrate: 400_000}
			interval := time.Second
			video := ladderVideo(t, src, rung, interval)
			res, err := CompareSegment(t.Context(), CompareConfig{Source: src, From: 0, To: time.Minute, KeyframeInterval: interval,
				Rung: rung, Candidate: video, Reference: &Config{Preset: "veryfast"}})
			if err != nil {
				t.Fatal(err)
			}
			if !res.EOF || res.Rung.Width != 320 || res.Rung.Height != 240 {
				t.Fatalf("EOF %v, rung %+v", res.EOF, res.Rung)
			}
			// The ladder's output in presentation order.
			aus := slices.Clone(video.AUs)
			slices.SortFunc(aus, func(a, b *media.AccessUnit) int { return int(a.PTS - b.PTS) })
			var window []SourceFrame
			for _, f := range res.Frames {
				if f.InWindow {
					window = append(window, f)
				}
			}
			if len(window) != len(aus) || len(aus) != c.kept {
				t.Fatalf("CompareSegment keeps %d frames, the ladder encoded %d, want %d", len(window), len(aus), c.kept)
			}
			keys := 0
			for i, f := range window {
				if at := aus[i].PTS - aus[0].PTS; f.At != at || f.Key != aus[i].Keyframe {
					t.Fatalf("frame %d: at %d key %v; the ladder's at %d key %v", i, f.At, f.Key, at, aus[i].Keyframe)
				}
				if f.Key {
					keys++
				}
			}
			if keys != 5 {
				t.Errorf("%d keyframes, want 5 (every second)", keys)
			}
			cand := res.Candidate
			if cand.Err != nil || len(cand.Frames) != len(aus) {
				t.Fatalf("candidate: %d frames of %d, %v", len(cand.Frames), len(aus), cand.Err)
			}
			for i, f := range cand.Frames {
				if f.Source != i || f.PSNR < 30 || f.Width != 320 || f.Height != 240 {
					t.Fatalf("frame %d: %+v", i, f)
				}
			}
			if res.Reference == nil || len(res.Reference.Frames) != len(aus) {
				t.Fatalf("reference: %+v", res.Reference)
			}
			ours, ref := meanPSNR(cand.Frames), meanPSNR(res.Reference.Frames)
			t.Logf("%d frames kept, PSNR %.3f dB, reference %.3f dB", len(aus), ours, ref)
			// x264's threaded rate control is not bit-exact from run to
			// run: two runs of the ladder over the same file differ by a
			// few hundredths of a dB.
			if math.Abs(ours-ref) > 0.1 {
				t.Errorf("the ladder's own encode scores %.3f dB, the reference %.3f dB: the reference is not the ladder's encode", ours, ref)
			}
		})
	}
}

func meanPSNR(frames []FrameScore) float64 {
	sum := 0.0
	for _, f := range frames {
		sum += f.PSNR
	}
	return sum / float64(len(frames))
}

// The metrics are FFmpeg's: PSNR per plane as the psnr filter computes it
// and SSIM within a few thousandths of the ssim filter's (whose constants
// differ slightly from the textbook ones used here), frame by frame.
func TestCompareMetricsAgreeWithFFmpeg(t *testing.T) {
	t.Parallel()
	src := makeClip(t, "src.mp4", args(videoSrc("320x240", "30"), []string{"-t", "2", "-c:v", "libx264", "-preset", "veryfast",
		"-crf", "12", "-pix_fmt", "yuv420p"})...)
	cand := makeClip(t, "cand.ts", "-i", src, "-vf", "gblur=sigma=0.8", "-c:v", "libx264", "-preset", "veryfast", "-b:v", "150k",
		"-pix_fmt", "yuv420p", "-f", "mpegts")
	var video CodedVideo
	err := DemuxVideo(cand, func(tr media.Track, au *media.AccessUnit) error {
		video.Track = tr
		video.AUs = append(video.AUs, au)
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	res, err := CompareSegment(t.Context(), CompareConfig{Source: src, From: 0, To: 10 * time.Second, KeyframeInterval: 2 * time.Second,
		Rung: Rung{Width: 320, Height: 240}, Candidate: video})
	if err != nil {
		t.Fatal(err)
	}
	if res.Candidate.Err != nil || len(res.Candidate.Frames) != 60 {
		t.Fatalf("%d frames, %v", len(res.Candidate.Frames), res.Candidate.Err)
	}
	dir := t.TempDir()
	psnrLog, ssimLog := filepath.Join(dir, "psnr.log"), filepath.Join(dir, "ssim.log")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-i", cand, "-i", src, "-lavfi",
		"[0:v]split[a0][a1];[1:v]split[b0][b1];[a0][b0]psnr=stats_file="+psnrLog+";[a1][b1]ssim=stats_file="+ssimLog,
		"-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	psnr, ssim := statsFile(t, psnrLog), statsFile(t, ssimLog)
	if len(psnr) != 60 || len(ssim) != 60 {
		t.Fatalf("FFmpeg measured %d and %d frames, want 60", len(psnr), len(ssim))
	}
	worstSSIM := 0.0
	for i, f := range res.Candidate.Frames {
		y, u, v := psnr[i]["psnr_y"], psnr[i]["psnr_u"], psnr[i]["psnr_v"]
		if math.Abs(f.PSNRY-y) > 0.01 || math.Abs(f.PSNR-(6*y+u+v)/8) > 0.01 {
			t.Fatalf("frame %d: PSNR-Y %.3f, YUV %.3f; FFmpeg's %.3f, %.3f", i, f.PSNRY, f.PSNR, y, (6*y+u+v)/8)
		}
		worstSSIM = max(worstSSIM, math.Abs(f.SSIM-ssim[i]["All"]))
	}
	first := res.Candidate.Frames[0]
	t.Logf("frame 0: PSNR-Y %.3f dB (FFmpeg %.3f), SSIM %.4f (FFmpeg %.4f); largest SSIM difference %.4f",
		first.PSNRY, psnr[0]["psnr_y"], first.SSIM, ssim[0]["All"], worstSSIM)
	if worstSSIM > 0.005 {
		t.Errorf("SSIM differs from FFmpeg's by up to %.4f", worstSSIM)
	}
}

// statsFile reads the per-frame key:value lines of FFmpeg's psnr and ssim
// filters' stats files.
func statsFile(t *testing.T, path string) []map[string]float64 {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []map[string]float64
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := map[string]float64{}
		for _, field := range strings.Fields(sc.Text()) {
			k, v, ok := strings.Cut(field, ":")
			if !ok {
				continue
			}
			if x, err := strconv.ParseFloat(v, 64); err == nil {
				m[k] = x
			}
		}
		out = append(out, m)
	}
	return out
}

// Problems of the candidate are reported in the result; what keeps the
// comparison from being made is an error.
func TestCompareSegmentErrors(t *testing.T) {
	t.Parallel()
	src := makeClip(t, "src.mp4", args(videoSrc("160x120", "30"), []string{"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"})...)
	good := CompareConfig{Source: src, From: 0, To: time.Second, KeyframeInterval: time.Second, Rung: Rung{Height: 120}}

	bad := good
	bad.Candidate = CodedVideo{AUs: []*media.AccessUnit{
		{PTS: 0, DTS: 0, Keyframe: true, Payload: [][]byte{{0x65, 0x88, 0x84, 0x00, 0xff, 0x13}}},
		{PTS: 3000, DTS: 3000, Payload: [][]byte{{0x41, 0x9a, 0x02, 0x03}}},
	}}
	res, err := CompareSegment(t.Context(), bad)
	if err != nil {
		t.Fatalf("a broken candidate made an error: %v", err)
	}
	if res.Candidate.Err == nil || len(res.Candidate.Frames) != 0 {
		t.Fatalf("a broken candidate decoded: %d frames, %v", len(res.Candidate.Frames), res.Candidate.Err)
	}
	if n := len(res.Frames); n != 30 || res.Rung.Width != 160 {
		t.Fatalf("%d source frames, rung %+v", n, res.Rung)
	}

	text := filepath.Join(t.TempDir(), "notes.txt")
	if err := os.WriteFile(text, []byte("not a video at all\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	for name, mutate := range map[string]func(*CompareConfig){
		"missing source":   func(c *CompareConfig) { c.Source = filepath.Join(t.TempDir(), "gone.mp4") },
		"not a video":      func(c *CompareConfig) { c.Source = text },
		"empty window":     func(c *CompareConfig) { c.To = c.From },
		"window too long":  func(c *CompareConfig) { c.To = time.Hour },
		"no interval":      func(c *CompareConfig) { c.KeyframeInterval = 0 },
		"no rung height":   func(c *CompareConfig) { c.Rung = Rung{} },
		"negative window":  func(c *CompareConfig) { c.From = -time.Second },
		"reference preset": func(c *CompareConfig) { c.Reference = &Config{Preset: "no-such-preset"}; c.Rung.Bitrate = 100_000 },
	} {
		c := good
		mutate(&c)
		_, err := CompareSegment(t.Context(), c)
		if err == nil {
			t.Errorf("%s: no error", name)
			continue
		}
		t.Logf("%s: %v", name, err)
		switch name {
		case "missing source":
			if !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("%s: %v does not wrap fs.ErrNotExist", name, err)
			}
		case "not a video":
			if !errors.Is(err, ErrNotVideo) {
				t.Errorf("%s: %v does not wrap ErrNotVideo", name, err)
			}
		}
	}
}

// CompareSegment frees every C object it allocates (source decoder and
// scaler, candidate and reference decoders, the reference's encoder):
// running it over and over does not make the process grow. As
// TestTranscodeFileDoesNotLeak, it runs in a child process with one malloc
// arena.
func TestCompareSegmentDoesNotLeak(t *testing.T) {
	if os.Getenv("SHOAL_TEST_LEAK_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestCompareSegmentDoesNotLeak$", "-test.v")
		cmd.Env = append(os.Environ(), "SHOAL_TEST_LEAK_CHILD=1", "MALLOC_ARENA_MAX=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the child process: %v\n%s", err, out)
		}
		if _, s, ok := strings.Cut(string(out), "C heap "); ok {
			s, _, _ = strings.Cut(s, "\n")
			t.Log("C heap " + s)
		}
		return
	}
	src := makeClip(t, "src.mp4", args(videoSrc("640x360", "30"), []string{"-t", "3", "-c:v", "libx264", "-preset", "ultrafast",
		"-g", "15", "-pix_fmt", "yuv420p"})...)
	// A rung of the source's size: a picture of it (345 KiB) leaked a
	// run shows over the runs.
	rung := Rung{Name: "360p", Height: 360, Bitrate: 500_000}
	video := ladderVideo(t, src, rung, time.Second)
	// The candidate is the second second of the ladder's output.
	var seg CodedVideo
	seg.Track = video.Track
	for _, au := range video.AUs {
		if au.DTS >= 90000-6000 && au.PTS >= 90000 && au.PTS < 2*90000 {
			seg.AUs = append(seg.AUs, au)
		}
	}
	const warmup, iterations = 10, 40
	var baseHeap int64
	for i := range iterations {
		cfg := CompareConfig{Source: src, From: time.Second, To: 2 * time.Second, KeyframeInterval: time.Second, Rung: rung,
			Candidate: seg, Reference: &Config{Preset: "ultrafast"}}
		ctx, cancel := context.WithCancel(t.Context())
		switch i % 4 {
		case 1: // cancelled: what was opened is freed
			cancel()
		case 3: // no source
			cfg.Source = filepath.Join(t.TempDir(), "gone.mp4")
		}
		res, err := CompareSegment(ctx, cfg)
		cancel()
		switch {
		case i%4 == 1 && !errors.Is(err, context.Canceled):
			t.Fatalf("run %d: %v, want context.Canceled", i, err)
		case i%2 == 0 && (err != nil || len(res.Candidate.Frames) != 30 || res.Reference == nil):
			t.Fatalf("run %d: %d frames, %v", i, len(res.Candidate.Frames), err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		heap := CHeapInUse()
		if i == warmup-1 {
			baseHeap = heap
		}
		if i == iterations-1 {
			t.Logf("C heap %+.2f MiB over %d runs after warm-up", float64(heap-baseHeap)/(1<<20), iterations-warmup)
			const bound = 4 << 20
			if grew := heap - baseHeap; grew > bound {
				t.Fatalf("the C heap grew by %.1f MiB over %d runs after warm-up (bound %d MiB): C memory leaks", float64(grew)/(1<<20), iterations-warmup, bound>>20)
			}
		}
	}
}
