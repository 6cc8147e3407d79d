// Command transcode benchmarks Shoal's in-process ABR ladder against the
// ffmpeg CLI doing the same ladder in one process (-filter_complex split),
// side by side on the same machine, and prints one line:
//
//	bench-transcode ours_s=.. ffmpeg_s=.. ratio=.. realtime_x=.. peak_rss_mb=.. psnr_ours=.. psnr_ffmpeg=..
//
// ratio = ffmpeg_s / ours_s (above 1: we are faster). PSNR is the mean over
// the rungs of each output against the source scaled to the rung's size.
//
// Then (-remote, on by default) the same live ladder in process and on a
// remote worker over loopback HTTP (remote.go), on a second line:
//
//	bench-transcode-remote clip_s=.. local_s=.. remote_s=.. ratio=.. cpu_ratio=.. latency_local_ms_p50=.. ... added_ms_p50=.. added_ms_p95=.. start_added_ms=.. segments=..
//
// With SHOAL_TEST_GPU=1 it also counts the concurrent 1080p ladders that
// keep real time for Shoal on the CPU only, Shoal with the GPU and the
// ffmpeg CLI with the same GPU pipeline, and prints one more line:
//
//	bench-transcode-gpu clip_s=.. cpu_ladders=.. gpu_ladders=.. cli_gpu_ladders=.. gpu_over_cpu=.. gpu_over_cli=.. self_cpu=.. self_gpu=.. gpu_path=.. cli_path=..
//
// -count cpu (or any of cpu,gpu,cli) runs only those counts and prints them
// on a bench-transcode-ladders line, so the counting runs without a GPU.
package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/benchmarks/internal/benchutil"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/transcode"
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

// mediaLadder is ladder as the transcoder and the remote workers take it.
func mediaLadder() media.Ladder {
	l := make(media.Ladder, len(ladder))
	for i, r := range ladder {
		l[i] = media.Rung{Height: r.height, Bitrate: r.bitrate}
	}
	return l
}

func main() {
	seconds := flag.Int("seconds", 20, "length of the 1080p30 test clip")
	preset := flag.String("preset", "veryfast", "x264 preset for both")
	keep := flag.Bool("keep", false, "keep the work directory")
	count := flag.String("count", "", "only count the concurrent ladders that keep real time for these runners: cpu, gpu, cli (comma-separated)")
	maxLadders := flag.Int("max-ladders", 64, "the most concurrent ladders a count tries")
	remoteLine := flag.Bool("remote", true, "also run the live ladder through a remote worker over loopback HTTP against the in-process ladder (the bench-transcode-remote line)")
	flag.Parse()
	var runners []string
	if *count != "" {
		for _, r := range strings.Split(*count, ",") {
			if !slices.Contains([]string{"cpu", "gpu", "cli"}, r) {
				fmt.Fprintf(os.Stderr, "bench-transcode: -count %q: want cpu, gpu or cli\n", r)
				os.Exit(2)
			}
			runners = append(runners, r)
		}
	}
	if err := run(*seconds, *preset, *keep, runners, *maxLadders, *remoteLine); err != nil {
		fmt.Fprintln(os.Stderr, "bench-transcode:", err)
		os.Exit(1)
	}
}

func run(seconds int, preset string, keep bool, count []string, maxLadders int, remoteLine bool) error {
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
	if len(count) > 0 {
		return countLadders("bench-transcode-ladders", src, seconds, preset, count, maxLadders)
	}

	cpu, err := transcode.PickAccel(transcode.HWNone, discardLogger())
	if err != nil {
		return err
	}
	oursS, err := benchutil.TimeIt(func() error {
		return ours(context.Background(), src, cpu.PipelineConfig(preset, 2*time.Second, discardLogger()), dir, "ours")
	})
	if err != nil {
		return fmt.Errorf("ours: %w", err)
	}
	peak := peakRSSMB()
	cliS, err := benchutil.TimeIt(func() error {
		return runCLI(context.Background(), cliArgs(src, cliCPU, preset, outFiles(dir, "cli")))
	})
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

	if remoteLine {
		clip, err := loadClip(src)
		if err != nil {
			return err
		}
		figs, err := compareRemote(context.Background(), clip, remoteConfig{
			base: cpu.PipelineConfig(preset, 2*time.Second, discardLogger()), ladder: mediaLadder(),
			preset: preset, segment: 2 * time.Second, log: discardLogger(),
		})
		if err != nil {
			return fmt.Errorf("remote line: %w", err)
		}
		fmt.Println(figs.line(seconds))
	}

	if os.Getenv("SHOAL_TEST_GPU") == "1" {
		return countLadders("bench-transcode-gpu", src, seconds, preset, []string{"cpu", "gpu", "cli"}, maxLadders)
	}
	return nil
}

// outFiles names the files of each rung of prefix in dir.
func outFiles(dir, prefix string) []string {
	out := make([]string, len(ladder))
	for i, r := range ladder {
		out[i] = filepath.Join(dir, prefix+"-"+r.name+".h264")
	}
	return out
}

// ours runs Shoal's pipeline with cfg on src and writes each rung as raw
// H.264 to dir/prefix-<rung>.h264, or nowhere when dir is "".
func ours(ctx context.Context, src string, cfg ffmpeg.Config, dir, prefix string) error {
	files := make([]io.Writer, len(ladder))
	for i := range ladder {
		files[i] = io.Discard
	}
	if dir != "" {
		for i, name := range outFiles(dir, prefix) {
			f, err := os.Create(name)
			if err != nil {
				return err
			}
			defer f.Close()
			w := bufio.NewWriterSize(f, 1<<20)
			defer w.Flush()
			files[i] = w
		}
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
		if err := ctx.Err(); err != nil {
			return err
		}
		if p == nil {
			var err error
			if p, err = ffmpeg.New(cfg, tr, rungs); err != nil {
				return err
			}
		}
		return p.Push(au, emit)
	})
	if p != nil {
		defer p.Close()
	}
	if err != nil {
		return err
	}
	if p == nil {
		return errors.New("no video in the source")
	}
	if err := p.Flush(emit); err != nil {
		return err
	}
	return werr
}

// CLI pipelines.
const (
	cliCPU       = "x264"                  // decode, split and scale on the CPU, x264
	cliGPUx264   = "nvdec+scale_cuda+x264" // NVDEC, scale_cuda, download, x264
	cliGPUNVENC  = "nvdec+scale_cuda+nvenc"
	cliGPUOutput = "/dev/null"
)

// cliArgs is the ffmpeg CLI doing the same ladder with the same settings in
// one process, with pipeline (cli*), writing each rung to outs.
func cliArgs(src, pipeline, preset string, outs []string) []string {
	var split strings.Builder
	split.WriteString("[0:v]split=3")
	for i := range ladder {
		fmt.Fprintf(&split, "[s%d]", i)
	}
	for i, r := range ladder {
		switch pipeline {
		case cliCPU:
			fmt.Fprintf(&split, ";[s%d]scale=%d:%d:flags=bilinear[o%d]", i, r.width, r.height, i)
		case cliGPUx264:
			fmt.Fprintf(&split, ";[s%d]scale_cuda=%d:%d:interp_algo=bilinear:format=yuv420p,hwdownload,format=yuv420p[o%d]", i, r.width, r.height, i)
		case cliGPUNVENC:
			fmt.Fprintf(&split, ";[s%d]scale_cuda=%d:%d:interp_algo=bilinear[o%d]", i, r.width, r.height, i)
		}
	}
	args := []string{"-nostdin", "-v", "error", "-y"}
	if pipeline != cliCPU {
		args = append(args, "-hwaccel", "cuda", "-hwaccel_output_format", "cuda")
	}
	args = append(args, "-i", src, "-filter_complex", split.String())
	for i, r := range ladder {
		args = append(args, "-map", fmt.Sprintf("[o%d]", i))
		if pipeline == cliGPUNVENC {
			args = append(args, "-c:v", "h264_nvenc", "-preset", "p2", "-tune", "ll", "-rc", "cbr", "-bf", "2", "-no-scenecut", "1")
		} else {
			args = append(args, "-c:v", "libx264", "-preset", preset, "-profile:v", "high", "-x264-params", "scenecut=0:open-gop=0")
		}
		args = append(args, "-b:v", strconv.Itoa(r.bitrate), "-maxrate", strconv.Itoa(r.bitrate*11/10),
			"-bufsize", strconv.Itoa(r.bitrate*2), "-force_key_frames", "expr:gte(t,n_forced*2)",
			"-forced-idr", "1", "-f", "h264", outs[i])
	}
	return args
}

// runCLI runs the ffmpeg CLI until it ends or ctx is done; its error
// carries the CLI's output.
func runCLI(ctx context.Context, args []string) error {
	out, err := exec.CommandContext(ctx, "ffmpeg", args...).CombinedOutput()
	if ctx.Err() != nil {
		return ctx.Err()
	}
	if err != nil {
		return fmt.Errorf("ffmpeg: %v\n%s", err, out)
	}
	return nil
}

// ladderRunner runs one ladder over the whole source.
type ladderRunner func(ctx context.Context) error

// countLadders counts, for each runner named (cpu: Shoal on the CPU only;
// gpu: Shoal with what transcode.PickAccel finds, as a node with hwaccel
// auto; cli: the ffmpeg CLI with the GPU pipeline), the concurrent ladders
// that keep real time, with the self-benchmark's figure for Shoal's, and
// prints one line named name.
func countLadders(name, src string, seconds int, preset string, runners []string, maxLadders int) error {
	clip := time.Duration(seconds) * time.Second
	counts := map[string]int{}
	fields := []string{fmt.Sprintf("clip_s=%d", seconds)}
	for _, r := range runners {
		var run ladderRunner
		switch r {
		case "cpu", "gpu":
			hw := transcode.HWNone
			if r == "gpu" {
				hw = transcode.HWAuto
			}
			accel, err := transcode.PickAccel(hw, discardLogger())
			if err != nil {
				return err
			}
			// Each ladder asks for its GPU, as a node's do (the least busy).
			run = func(ctx context.Context) error {
				return ours(ctx, src, accel.PipelineConfig(preset, 2*time.Second, discardLogger()), "", "")
			}
			self, err := selfBenchmark(accel, preset)
			if err != nil {
				return fmt.Errorf("%s self-benchmark: %w", r, err)
			}
			fields = append(fields, fmt.Sprintf("self_%s=%d", r, self))
			if r == "gpu" {
				caps := accel.Capabilities(0, "")
				fields = append(fields, "gpu_path="+caps.Encoder+"+decode_"+caps.Decode)
			}
		case "cli":
			pipeline := cliGPUx264
			if ffmpeg.Probe(ffmpeg.BackendNVENC) == nil {
				pipeline = cliGPUNVENC
			}
			outs := make([]string, len(ladder))
			for i := range outs {
				outs[i] = cliGPUOutput
			}
			args := cliArgs(src, pipeline, preset, outs)
			run = func(ctx context.Context) error { return runCLI(ctx, args) }
			fields = append(fields, "cli_path="+pipeline)
		}
		n, err := realtimeLadders(r, clip, maxLadders, run)
		if err != nil {
			return fmt.Errorf("counting %s ladders: %w", r, err)
		}
		counts[r] = n
	}
	key := map[string]string{"cpu": "cpu_ladders", "gpu": "gpu_ladders", "cli": "cli_gpu_ladders"}
	var figures []string
	for _, r := range []string{"cpu", "gpu", "cli"} {
		if n, ok := counts[r]; ok {
			figures = append(figures, fmt.Sprintf("%s=%d", key[r], n))
		}
	}
	ratio := func(a, b string) {
		na, okA := counts[a]
		nb, okB := counts[b]
		if okA && okB {
			v := math.Inf(1)
			if nb > 0 {
				v = float64(na) / float64(nb)
			}
			figures = append(figures, fmt.Sprintf("%s_over_%s=%.2f", a, b, v))
		}
	}
	ratio("gpu", "cpu")
	ratio("gpu", "cli")
	fmt.Println(name + " " + strings.Join(slices.Concat(fields[:1], figures, fields[1:]), " "))
	return nil
}

// selfBenchmark is the capacity figure a node transcoding this ladder with
// accel would measure for itself at start (transcode.MeasureCapacity).
func selfBenchmark(accel transcode.Accel, preset string) (int, error) {
	c, err := transcode.MeasureCapacity(context.Background(), accel,
		transcode.CapacityConfig{Ladder: mediaLadder(), Preset: preset, KeyframeInterval: 2 * time.Second, SourceHeight: 1080, Log: discardLogger()})
	return c.Ladders, err
}

// realtimeLadders counts the ladders that keep real time when run n at
// once: a count passes when all n ladders are done within the clip's
// length (they are stopped there otherwise). It tries 1, 2, 4, ... up to
// the first count that fails (or max), then bisects between the last count
// that passed and that one.
func realtimeLadders(name string, clip time.Duration, maxN int, run ladderRunner) (int, error) {
	try := func(n int) (bool, error) {
		ctx, cancel := context.WithTimeout(context.Background(), clip)
		defer cancel()
		errs := make([]error, n)
		var wg sync.WaitGroup
		start := time.Now()
		for i := range n {
			wg.Add(1)
			go func() {
				defer wg.Done()
				errs[i] = run(ctx)
			}()
		}
		wg.Wait()
		took := time.Since(start)
		err := errors.Join(errs...)
		if errors.Is(err, context.DeadlineExceeded) || (err == nil && took > clip) {
			fmt.Fprintf(os.Stderr, "%s: %s did not finish within %s\n", name, ladders(n), clip)
			return false, nil
		}
		if err != nil {
			return false, err
		}
		fmt.Fprintf(os.Stderr, "%s: %s took %.2f s\n", name, ladders(n), took.Seconds())
		return true, nil
	}
	pass, fail := 0, 0
	for n := 1; fail == 0 && pass < maxN; n = min(maxN, 2*n) {
		ok, err := try(n)
		if err != nil {
			return 0, err
		}
		if ok {
			pass = n
		} else {
			fail = n
		}
	}
	for fail-pass > 1 {
		mid := (pass + fail) / 2
		ok, err := try(mid)
		if err != nil {
			return 0, err
		}
		if ok {
			pass = mid
		} else {
			fail = mid
		}
	}
	return pass, nil
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

func ladders(n int) string {
	if n == 1 {
		return "1 ladder"
	}
	return strconv.Itoa(n) + " ladders"
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
