package ffmpeg

import (
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/asticode/go-astiav"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
)

// The hardware backends run the ladder of TestLadderAlignedKeyframes on
// machines that have the hardware; the variable says so, and then the
// hardware must work and pass the same checks. On an NVIDIA GPU, all of
// this package's GPU tests run with
//
//	SHOAL_TEST_GPU=1 go test -run 'GPU|NVENC' -v ./transcode/ffmpeg
func needGPU(t *testing.T) []*GPU {
	t.Helper()
	if os.Getenv("SHOAL_TEST_GPU") != "1" {
		t.Skip("set SHOAL_TEST_GPU=1 on a machine with an NVIDIA GPU to test the GPU path")
	}
	gpus, err := ProbeGPUs()
	if err != nil {
		t.Fatalf("SHOAL_TEST_GPU=1 but ProbeGPUs: %v", err)
	}
	for _, g := range gpus {
		t.Logf("probe: %s (problem: %q)", g.Describe(), g.Problem)
	}
	if !gpus[0].Decodes(media.CodecH264) {
		t.Fatalf("%s does not decode H.264: %s", gpus[0].Name, gpus[0].Problem)
	}
	return gpus
}

// gpuConfig is the configuration auto picks on g: NVENC where it exists,
// x264 on GPU-scaled frames otherwise.
func gpuConfig(g *GPU) Config {
	cfg := Config{Backend: BackendSoftware, Preset: "veryfast", KeyframeInterval: time.Second, GPU: g, Log: quiet}
	if g.NVENC {
		cfg.Backend = BackendNVENC
	}
	return cfg
}

func TestNVENCLadderAlignedKeyframes(t *testing.T) {
	gpus := needGPU(t)
	if !gpus[0].NVENC {
		t.Skipf("%s has no NVENC (%s): TestGPULadderAlignedKeyframes covers NVDEC + x264", gpus[0].Name, gpus[0].Problem)
	}
	t.Parallel()
	if err := Probe(BackendNVENC); err != nil {
		t.Fatalf("Probe(nvenc): %v", err)
	}
	alignedLadder(t, Config{Backend: BackendNVENC, Preset: "veryfast", KeyframeInterval: time.Second, Log: quiet})
}

// The ladder decoded by NVDEC and scaled by scale_cuda, encoded by NVENC
// where the GPU has it and by x264 otherwise (the H200 has no NVENC: the
// probe must say so and the ladder must still run).
func TestGPULadderAlignedKeyframes(t *testing.T) {
	gpus := needGPU(t)
	g := gpus[0]
	if !g.NVENC && !strings.Contains(g.Describe(), "NVENC no") {
		t.Errorf("Describe() = %q for a GPU without NVENC", g.Describe())
	}
	cfg := gpuConfig(g)
	var onGPU bool
	var backend string
	alignedLadderWith(t, cfg, func(p *Pipeline) { onGPU, backend = p.OnGPU(), p.Backend() })
	if !onGPU {
		t.Fatal("the pipeline did not decode and scale on the GPU")
	}
	if backend != cfg.Backend {
		t.Fatalf("encoded with %s, want %s", backend, cfg.Backend)
	}
}

func TestQSVLadderAlignedKeyframes(t *testing.T) {
	if os.Getenv("SHOAL_TEST_QSV") != "1" {
		t.Skip("set SHOAL_TEST_QSV=1 on a machine with Intel Quick Sync to test QSV")
	}
	t.Parallel()
	if err := Probe(BackendQSV); err != nil {
		t.Fatalf("Probe(qsv): %v", err)
	}
	alignedLadder(t, Config{Backend: BackendQSV, Preset: "veryfast", KeyframeInterval: time.Second, Log: quiet})
}

// The filter graph the GPU path scales with, run on the CPU (the scale
// filter for scale_cuda), gives the same ladder: every frame, the sizes,
// and keyframes on the grid in every rung.
func TestGraphLadderAlignedKeyframes(t *testing.T) {
	t.Parallel()
	graph := false
	alignedLadderWith(t, Config{Backend: BackendSoftware, Preset: "veryfast", KeyframeInterval: time.Second, Log: quiet, graphOnCPU: true},
		func(p *Pipeline) { graph = p.graph != nil })
	if !graph {
		t.Fatal("the ladder did not scale with a filter graph")
	}
}

// A ladder on a GPU whose NVENC sessions are all taken encodes with x264,
// and gives the sessions it took back when it closes.
func TestNVENCSessionCapFallsBackToX264(t *testing.T) {
	t.Parallel()
	g := &GPU{Name: "test GPU", NVENC: true, NVENCSessions: 3}
	if !g.reserveNVENC(2) {
		t.Fatal("reserving 2 of 3 sessions failed")
	}
	src := makeTS(t, 640, 360, 1, 30)
	rungs := []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}, {Name: "160p", Height: 160, Bitrate: 200_000}}
	var backend string
	outs := runWith(t, Config{Backend: BackendNVENC, Preset: "ultrafast", KeyframeInterval: time.Second, GPU: g, Log: quiet},
		src, rungs, nil, func(p *Pipeline) { backend = p.Backend() })
	if backend != BackendSoftware {
		t.Fatalf("backend %q with 1 session left for 2 rungs, want software", backend)
	}
	if len(outs[0].aus) != 30 || len(outs[1].aus) != 30 {
		t.Fatalf("%d and %d frames, want 30 each", len(outs[0].aus), len(outs[1].aus))
	}
	if s, l := g.InUse(); s != 2 || l != 0 {
		t.Fatalf("after the ladder closed: %d sessions and %d ladders in use, want 2 and 0", s, l)
	}
	g.releaseNVENC(2)
	if g.reserveNVENC(4) || !g.reserveNVENC(3) {
		t.Fatal("the session count does not cap at NVENCSessions")
	}
}

// On a machine without NVIDIA's driver (CI), the probe says so, for real:
// it loads libcuda and finds it missing. With a GPU (SHOAL_TEST_GPU=1) it
// finds it.
func TestProbeGPUs(t *testing.T) {
	t.Parallel()
	gpus, err := ProbeGPUs()
	if os.Getenv("SHOAL_TEST_GPU") == "1" {
		if err != nil || len(gpus) == 0 {
			t.Fatalf("ProbeGPUs on a GPU machine: %v", err)
		}
		for _, g := range gpus {
			if g.Name == "" || !strings.Contains(g.Describe(), "NVDEC") {
				t.Errorf("GPU %d: name %q, Describe %q", g.Index, g.Name, g.Describe())
			}
		}
		return
	}
	if _, statErr := os.Stat("/dev/nvidiactl"); statErr == nil {
		t.Skip("this machine has an NVIDIA device: run with SHOAL_TEST_GPU=1")
	}
	if !errors.Is(err, ErrNoGPU) || gpus != nil {
		t.Fatalf("ProbeGPUs without a GPU = %v, %v; want ErrNoGPU", gpus, err)
	}
	if !strings.Contains(err.Error(), "libcuda.so.1") {
		t.Fatalf("the reason %q does not name the missing driver library", err)
	}
	t.Logf("probe: %v", err)
}

// go-astiav v0.16 does not expose a CodecContext's C pointer; cCodecContext
// reads it from the struct, which this checks against the C side.
func TestCodecContextLayout(t *testing.T) {
	t.Parallel()
	cc := astiav.AllocCodecContext(astiav.FindEncoderByName("libx264"))
	defer cc.Free()
	cc.SetWidth(4242)
	if w := codecContextWidth(cc); w != 4242 {
		t.Fatalf("the C side reads width %d, want 4242: go-astiav's CodecContext layout changed", w)
	}
}

// Each rung's PSNR against the source is within 0.5 dB of the CPU path's at
// the same bitrate.
func TestGPUPSNRMatchesCPU(t *testing.T) {
	gpus := needGPU(t)
	gpu := gpuConfig(gpus[0])
	gpu.KeyframeInterval = 2 * time.Second
	psnrMatchesCPU(t, 1920, 1080, gpu, "gpu")
}

// psnrMatchesCPU encodes a w x h source with a 720p/480p/360p ladder (the
// rungs above the source's height left out) on the CPU and with cfg, and
// checks that each rung's PSNR against the source is within 0.5 dB.
func psnrMatchesCPU(t *testing.T, w, h int, cfg Config, name string) {
	t.Helper()
	src := makeTS(t, w, h, 4, 60)
	var rungs []Rung
	for _, r := range []Rung{{Name: "720p", Height: 720, Bitrate: 3_000_000}, {Name: "480p", Height: 480, Bitrate: 1_200_000}, {Name: "360p", Height: 360, Bitrate: 700_000}} {
		if r.Height <= h {
			rungs = append(rungs, r)
		}
	}
	dir := t.TempDir()
	cpu := Config{Backend: BackendSoftware, Preset: cfg.Preset, KeyframeInterval: cfg.KeyframeInterval, Log: quiet}
	for run, c := range map[string]Config{"cpu": cpu, name: cfg} {
		outs := runWith(t, c, src, rungs, nil, nil)
		for i, o := range outs {
			var b []byte
			for _, au := range o.aus {
				enc, err := h264.AnnexB(au.Payload).Marshal()
				if err != nil {
					t.Fatal(err)
				}
				b = append(b, enc...)
			}
			if err := os.WriteFile(filepath.Join(dir, run+"-"+rungs[i].Name+".h264"), b, 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	for _, r := range rungs {
		rw := EvenWidth(w, h, r.Height)
		c := psnr(t, filepath.Join(dir, "cpu-"+r.Name+".h264"), src, rw, r.Height)
		g := psnr(t, filepath.Join(dir, name+"-"+r.Name+".h264"), src, rw, r.Height)
		t.Logf("%s: PSNR cpu %.2f dB, %s %.2f dB", r.Name, c, name, g)
		if d := c - g; d > 0.5 || d < -0.5 {
			t.Errorf("%s: PSNR with %s %.2f dB, on the CPU %.2f dB: more than 0.5 dB apart", r.Name, name, g, c)
		}
	}
}

var psnrAverage = regexp.MustCompile(`average:([0-9.]+|inf)`)

// psnr is the mean PSNR of the H.264 file out against src scaled to w x h.
func psnr(t *testing.T, out, src string, w, h int) float64 {
	t.Helper()
	b, err := exec.Command("ffmpeg", "-hide_banner", "-i", out, "-i", src,
		"-lavfi", fmt.Sprintf("[1:v]scale=%d:%d:flags=bicubic[ref];[0:v][ref]psnr", w, h), "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("psnr: %v\n%s", err, b)
	}
	m := psnrAverage.FindSubmatch(b)
	if m == nil {
		t.Fatalf("psnr: no result in\n%s", b)
	}
	v, _ := strconv.ParseFloat(string(m[1]), 64)
	return v
}

// Neither GPU nor host memory grows over 2,000 frames through the GPU path.
func TestGPUPipelineDoesNotLeak(t *testing.T) {
	gpus := needGPU(t)
	g := gpus[0]
	src := makeTS(t, 1280, 720, 10, 60) // 300 frames
	rungs := []Rung{{Name: "480p", Height: 480, Bitrate: 1_200_000}, {Name: "360p", Height: 360, Bitrate: 700_000}}
	cfg := gpuConfig(g)
	cfg.Preset = "ultrafast"
	const runs, warmup = 7, 2 // 2,100 frames
	var baseHeap, baseGPU int64
	for i := range runs {
		outs := run(t, cfg, src, rungs, nil)
		if len(outs[0].aus) != 300 {
			t.Fatalf("run %d: %d frames, want 300", i, len(outs[0].aus))
		}
		runtime.GC()
		debug.FreeOSMemory()
		heap, used := CHeapInUse(), g.MemoryUsed()
		if i == warmup-1 {
			baseHeap, baseGPU = heap, used
			continue
		}
		if i >= warmup {
			t.Logf("run %d: C heap %+.2f MiB, GPU memory %+.1f MiB since warm-up", i, float64(heap-baseHeap)/(1<<20), float64(used-baseGPU)/(1<<20))
		}
	}
	heap, used := CHeapInUse(), g.MemoryUsed()
	if grew := heap - baseHeap; grew > 8<<20 {
		t.Errorf("the C heap grew by %.1f MiB over %d frames", float64(grew)/(1<<20), (runs-warmup)*300)
	}
	if used < 0 {
		t.Fatal("NVML is not available to read the GPU's memory")
	}
	if grew := used - baseGPU; grew > 32<<20 {
		t.Errorf("GPU memory grew by %.1f MiB over %d frames", float64(grew)/(1<<20), (runs-warmup)*300)
	}
}

// alignedLadder encodes a 720p source (GOP 1.5 s, which the grid must not
// follow) to 480p and 360p with a 1 s keyframe grid and checks every frame
// comes out, the sizes, and keyframes exactly on the grid and identical in
// every rung.
func alignedLadder(t *testing.T, cfg Config) []rungOut {
	t.Helper()
	return alignedLadderWith(t, cfg, nil)
}

func alignedLadderWith(t *testing.T, cfg Config, before func(*Pipeline)) []rungOut {
	t.Helper()
	src := makeTS(t, 1280, 720, 4, 45)
	rungs := []Rung{{Name: "480p", Height: 480, Bitrate: 1_200_000}, {Name: "360p", Height: 360, Bitrate: 700_000}}
	outs := runWith(t, cfg, src, rungs, nil, before)
	for i, o := range outs {
		if len(o.aus) != 120 {
			t.Errorf("rung %d: %d frames, want 120", i, len(o.aus))
		}
		var sps h264.SPS
		if err := sps.Unmarshal(o.sps); err != nil {
			t.Fatalf("rung %d: SPS: %v", i, err)
		}
		wantW := map[int]int{480: 854, 360: 640}[rungs[i].Height]
		if sps.Width() != wantW || sps.Height() != rungs[i].Height {
			t.Errorf("rung %d: %dx%d, want %dx%d", i, sps.Width(), sps.Height(), wantW, rungs[i].Height)
		}
		if len(o.keys) != 4 {
			t.Errorf("rung %d: keyframes at %v, want 4 (one a second)", i, o.keys)
		}
		for j := 1; j < len(o.keys); j++ {
			if d := o.keys[j] - o.keys[j-1]; d != 90000 {
				t.Errorf("rung %d: keyframes %d ticks apart, want 90000", i, d)
			}
		}
	}
	if !slices.Equal(outs[0].keys, outs[1].keys) {
		t.Fatalf("keyframes differ across rungs: %v vs %v", outs[0].keys, outs[1].keys)
	}
	return outs
}

// The pictures the probe hands NVDEC decode (here on the CPU) to 256x144.
func TestProbePicturesDecode(t *testing.T) {
	t.Parallel()
	for _, p := range probePictures {
		if err := probeNVDEC(nil, p.id, p.data); err != nil {
			t.Errorf("%s: %v", p.name, err)
		}
	}
}

// A ladder counts on its GPU from New (so that ladders started together
// spread), and one that fails on the GPU counts against it: after three in
// a row the GPU takes no new ladders. Here the failure is real: NVENC
// cannot open on a machine without NVIDIA's driver.
func TestLadderFailuresSetAGPUAside(t *testing.T) {
	t.Parallel()
	if os.Getenv("SHOAL_TEST_GPU") == "1" {
		t.Skip("NVENC may work here: the failure this test needs cannot be made")
	}
	g := &GPU{Name: "test GPU", NVENC: true, NVENCSessions: 8}
	src := makeTS(t, 320, 240, 1, 30)
	track, aus := demuxAll(t, src)
	for i := range maxFailures {
		if LeastBusy([]*GPU{g}) != g {
			t.Fatalf("after %d failures the GPU is set aside, want it after %d", i, maxFailures)
		}
		p, err := New(Config{Backend: BackendNVENC, Preset: "ultrafast", KeyframeInterval: time.Second, GPU: g, Log: quiet}, track,
			[]Rung{{Name: "144p", Height: 144, Bitrate: 150_000}})
		if err != nil {
			t.Fatal(err)
		}
		if _, l := g.InUse(); l != 1 {
			t.Fatalf("%d ladders on the GPU before the first frame, want 1", l)
		}
		var perr error
		for _, au := range aus {
			if perr = p.Push(au, func(int, *media.AccessUnit) {}); perr != nil {
				break
			}
		}
		if perr == nil {
			t.Fatal("NVENC encoded without NVIDIA's driver")
		}
		p.Close()
		if s, l := g.InUse(); s != 0 || l != 0 {
			t.Fatalf("after Close: %d sessions and %d ladders in use", s, l)
		}
	}
	if g.Healthy() || LeastBusy([]*GPU{g}) != nil {
		t.Fatalf("the GPU still takes ladders after %d failures in a row", maxFailures)
	}
	g.ladderEnded(false)
	if !g.Healthy() {
		t.Fatal("a ladder that went well does not clear the failures")
	}
}

// demuxAll reads the video of a file as access units.
func demuxAll(t *testing.T, path string) (media.Track, []*media.AccessUnit) {
	t.Helper()
	var track media.Track
	var aus []*media.AccessUnit
	if err := DemuxVideo(path, func(tr media.Track, au *media.AccessUnit) error {
		track = tr
		aus = append(aus, au)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	return track, aus
}
