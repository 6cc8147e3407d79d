// Command transcode benchmarks Shoal's in-process ABR ladder against the
// ffmpeg CLI doing the same ladder in one process (-filter_complex split),
// side by side on the same machine, and prints one line:
//
//	bench-transcode ours_s=.. ffmpeg_s=.. ratio=.. realtime_x=.. peak_rss_mb=.. psnr_ours=.. psnr_ffmpeg=..
//
// ratio = ffmpeg_s / ours_s (above 1: we are faster). PSNR is the mean over
// the rungs of each output against the source scaled to the rung's size.
// With SHOAL_TEST_GPU=1 it also runs both with NVENC and finds how many
// concurrent 1080p ladders keep real time.
package main

import (
	"bufio"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/benchmarks/internal/benchutil"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

type rung struct {
	name          string
	width, height int
	bitrate       int
}

var ladder = []rung{
	{"720p", 1280, 720, 3_000_000},
	{"480p", 854, 480, 1_200_000},
	{"360p", 640, 360, 700_000},
}

func main() {
	seconds := flag.Int("seconds", 20, "length of the 1080p30 test clip")
	preset := flag.String("preset", "veryfast", "x264 preset for both")
	keep := flag.Bool("keep", false, "keep the work directory")
	flag.Parse()
	if err := run(*seconds, *preset, *keep); err != nil {
		fmt.Fprintln(os.Stderr, "bench-transcode:", err)
		os.Exit(1)
	}
}

func run(seconds int, preset string, keep bool) error {
	ffmpeg.SetLogger(discardLogger())
	dir, err := os.MkdirTemp("", "bench-transcode-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "work dir:", dir)
	}
	src := filepath.Join(dir, "src.ts")
	if err := benchutil.Sh("ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=1920x1080:rate=30",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "veryfast", "-crf", "16", "-g", "60",
		"-pix_fmt", "yuv420p", "-f", "mpegts", src); err != nil {
		return fmt.Errorf("making the source clip: %w", err)
	}

	oursS, err := benchutil.TimeIt(func() error { return ours(src, dir, "ours", ffmpeg.BackendSoftware, preset) })
	if err != nil {
		return fmt.Errorf("ours: %w", err)
	}
	peak := peakRSSMB()
	cliS, err := benchutil.TimeIt(func() error { return cli(src, dir, "cli", "libx264", preset) })
	if err != nil {
		return fmt.Errorf("ffmpeg CLI: %w", err)
	}
	psnrOurs, err := meanPSNR(src, dir, "ours")
	if err != nil {
		return err
	}
	psnrCLI, err := meanPSNR(src, dir, "cli")
	if err != nil {
		return err
	}
	fmt.Printf("bench-transcode ours_s=%.2f ffmpeg_s=%.2f ratio=%.2f realtime_x=%.2f peak_rss_mb=%.0f psnr_ours=%.2f psnr_ffmpeg=%.2f\n",
		oursS, cliS, cliS/oursS, float64(seconds)/oursS, peak, psnrOurs, psnrCLI)

	if os.Getenv("SHOAL_TEST_GPU") == "1" {
		return gpu(src, dir, seconds, preset)
	}
	return nil
}

// ours runs Shoal's pipeline on src and writes each rung as raw H.264.
func ours(src, dir, prefix, backend, preset string) error {
	files := make([]*bufio.Writer, len(ladder))
	for i, r := range ladder {
		f, err := os.Create(filepath.Join(dir, prefix+"-"+r.name+".h264"))
		if err != nil {
			return err
		}
		defer f.Close()
		files[i] = bufio.NewWriterSize(f, 1<<20)
		defer files[i].Flush()
	}
	rungs := make([]ffmpeg.Rung, len(ladder))
	for i, r := range ladder {
		rungs[i] = ffmpeg.Rung{Name: r.name, Height: r.height, Bitrate: r.bitrate}
	}
	var p *ffmpeg.Pipeline
	var werr error
	emit := func(i int, au *media.AccessUnit) {
		b, err := h264.AnnexB(au.Payload).Marshal()
		if err == nil {
			_, err = files[i].Write(b)
		}
		if err != nil && werr == nil {
			werr = err
		}
	}
	err := ffmpeg.DemuxVideo(src, func(tr media.Track, au *media.AccessUnit) error {
		if p == nil {
			var err error
			p, err = ffmpeg.New(ffmpeg.Config{Backend: backend, Preset: preset, KeyframeInterval: 2 * time.Second, Log: discardLogger()}, tr, rungs)
			if err != nil {
				return err
			}
		}
		return p.Push(au, emit)
	})
	if err != nil {
		return err
	}
	if p == nil {
		return errors.New("no video in the source")
	}
	defer p.Close()
	if err := p.Flush(emit); err != nil {
		return err
	}
	return werr
}

// cli runs the ffmpeg CLI doing the same ladder with the same settings.
func cli(src, dir, prefix, encoder, preset string) error {
	var split strings.Builder
	split.WriteString("[0:v]split=3")
	for i := range ladder {
		fmt.Fprintf(&split, "[s%d]", i)
	}
	for i, r := range ladder {
		fmt.Fprintf(&split, ";[s%d]scale=%d:%d:flags=bilinear[o%d]", i, r.width, r.height, i)
	}
	args := []string{"-v", "error", "-y", "-i", src, "-filter_complex", split.String()}
	for i, r := range ladder {
		args = append(args, "-map", fmt.Sprintf("[o%d]", i), "-c:v", encoder)
		if encoder == "libx264" {
			args = append(args, "-preset", preset, "-profile:v", "high", "-x264-params", "scenecut=0:open-gop=0")
		} else {
			args = append(args, "-preset", "p2", "-tune", "ll", "-rc", "cbr", "-bf", "2", "-no-scenecut", "1")
		}
		args = append(args, "-b:v", strconv.Itoa(r.bitrate), "-maxrate", strconv.Itoa(r.bitrate*11/10),
			"-bufsize", strconv.Itoa(r.bitrate*2), "-force_key_frames", "expr:gte(t,n_forced*2)",
			"-forced-idr", "1", "-f", "h264", filepath.Join(dir, prefix+"-"+r.name+".h264"))
	}
	return benchutil.Sh("ffmpeg", args...)
}

var psnrRe = regexp.MustCompile(`average:([0-9.]+|inf)`)

// meanPSNR compares every rung of prefix with the source scaled to its size.
func meanPSNR(src, dir, prefix string) (float64, error) {
	sum := 0.0
	for _, r := range ladder {
		out, err := exec.Command("ffmpeg", "-hide_banner", "-i", filepath.Join(dir, prefix+"-"+r.name+".h264"), "-i", src,
			"-lavfi", fmt.Sprintf("[1:v]scale=%d:%d:flags=bicubic[ref];[0:v][ref]psnr", r.width, r.height),
			"-f", "null", "-").CombinedOutput()
		if err != nil {
			return 0, fmt.Errorf("psnr of %s %s: %v\n%s", prefix, r.name, err, out)
		}
		m := psnrRe.FindSubmatch(out)
		if m == nil {
			return 0, fmt.Errorf("psnr of %s %s: no result in\n%s", prefix, r.name, out)
		}
		v, _ := strconv.ParseFloat(string(m[1]), 64)
		sum += v
	}
	return sum / float64(len(ladder)), nil
}

// gpu repeats the comparison with NVENC and finds how many concurrent
// 1080p ladders keep real time.
func gpu(src, dir string, seconds int, preset string) error {
	if err := ffmpeg.Probe(ffmpeg.BackendNVENC); err != nil {
		return fmt.Errorf("SHOAL_TEST_GPU=1 but NVENC does not work: %w", err)
	}
	oursS, err := benchutil.TimeIt(func() error { return ours(src, dir, "gpu", ffmpeg.BackendNVENC, preset) })
	if err != nil {
		return fmt.Errorf("ours with NVENC: %w", err)
	}
	cliS, err := benchutil.TimeIt(func() error { return cli(src, dir, "gpucli", "h264_nvenc", preset) })
	if err != nil {
		return fmt.Errorf("ffmpeg CLI with NVENC: %w", err)
	}
	best := 0
	for n := 1; n <= 64; n *= 2 {
		var wg sync.WaitGroup
		errs := make([]error, n)
		start := time.Now()
		for i := 0; i < n; i++ {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = ours(src, dir, fmt.Sprintf("conc%d", i), ffmpeg.BackendNVENC, preset)
			}()
		}
		wg.Wait()
		el := time.Since(start).Seconds()
		if err := errors.Join(errs...); err != nil {
			fmt.Fprintf(os.Stderr, "%d concurrent ladders failed: %v\n", n, err)
			break
		}
		if el > float64(seconds) {
			break
		}
		best = n
	}
	fmt.Printf("bench-transcode-gpu ours_s=%.2f ffmpeg_s=%.2f ratio=%.2f realtime_x=%.2f realtime_ladders_1080p=%d\n",
		oursS, cliS, cliS/oursS, float64(seconds)/oursS, best)
	return nil
}

// peakRSSMB is this process's peak resident set (VmHWM) in MiB.
func peakRSSMB() float64 {
	b, err := os.ReadFile("/proc/self/status")
	if err != nil {
		return 0
	}
	for _, line := range strings.Split(string(b), "\n") {
		if v, ok := strings.CutPrefix(line, "VmHWM:"); ok {
			kb, _ := strconv.ParseFloat(strings.TrimSuffix(strings.TrimSpace(v), " kB"), 64)
			return kb / 1024
		}
	}
	return 0
}
