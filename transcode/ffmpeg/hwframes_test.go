package ffmpeg

import (
	"strings"
	"testing"
	"time"

	"github.com/asticode/go-astiav"

	"github.com/shoal-video/shoal/internal/media"
)

// The GPU path with real hardware frames, on a machine without a GPU: the
// decoded frames are uploaded to a Vulkan device (Mesa's lavapipe, which
// runs on the CPU) where NVDEC would have left them in GPU memory, and the
// ladder takes them as it takes NVDEC's: its filter graph gets the frames'
// hardware context, splits them, scales every rung on the device
// (scale_vulkan where a GPU uses scale_cuda) and downloads them for x264.
// What is CUDA's own (NVDEC, scale_cuda, NVENC) runs only on a GPU
// (SHOAL_TEST_GPU=1, gpu_test.go).

// vulkanDevice opens the device these tests run on.
func vulkanDevice(t testing.TB) *hwDevice {
	t.Helper()
	d, err := openLavapipe()
	if err != nil {
		t.Fatalf("%v: the hardware-frame tests need a Vulkan device; Mesa's lavapipe runs on any CPU "+
			"(Debian: apt-get install mesa-vulkan-drivers, which make deps does)", err)
	}
	t.Cleanup(d.close)
	return d
}

func hwConfig(t testing.TB, preset string) Config {
	return Config{Backend: BackendSoftware, Preset: preset, KeyframeInterval: time.Second, Log: quiet, testDevice: vulkanDevice(t)}
}

// Every frame, the sizes, and keyframes on the grid, identical in every
// rung, with the rungs scaled on the device.
func TestHWFramesLadderAlignedKeyframes(t *testing.T) {
	t.Parallel()
	cfg := hwConfig(t, "veryfast")
	var hw, graph bool
	var in string
	alignedLadderWith(t, cfg, func(p *Pipeline) {
		hw, graph, in = p.hwFrames, p.graph != nil, p.inFmt.Name()
	})
	if !hw || !graph || in != "vulkan" {
		t.Fatalf("hardware frames %v, filter graph %v, input %q: the ladder did not take Vulkan frames through its graph", hw, graph, in)
	}
	if n := cfg.testDevice.uploads.Load(); n != 120 {
		t.Fatalf("%d frames uploaded, want 120", n)
	}
}

// Each rung's PSNR against the source is within 0.5 dB of the CPU path's:
// nothing is lost or mangled on the way through the device (a wrong
// plane, stride or layout would cost far more).
func TestHWFramesPSNRMatchesCPU(t *testing.T) {
	t.Parallel()
	psnrMatchesCPU(t, 1280, 720, hwConfig(t, "veryfast"), "vulkan")
}

// A source that changes size mid-stream gets a new hardware frames
// context; the ladder builds a new graph for it.
func TestHWFramesResolutionChange(t *testing.T) {
	t.Parallel()
	cfg := hwConfig(t, "ultrafast")
	checkResolutionChange(t, cfg)
	if n := cfg.testDevice.uploads.Load(); n < 110 {
		t.Fatalf("%d frames uploaded, want about 120", n)
	}
}

// A file through the device: frames, keyframes and audio as on the CPU,
// and the thumbnails and poster made from pictures downloaded from it.
func TestHWFramesTranscodeFileMP4(t *testing.T) {
	t.Parallel()
	cfg := fileConfig(twoRungs)
	cfg.testDevice = vulkanDevice(t)
	checkTranscodeFileMP4(t, cfg, BackendSoftware)
	if n := cfg.testDevice.uploads.Load(); n != 120 {
		t.Fatalf("%d frames uploaded, want 120", n)
	}
}

// Hardware frames and their contexts are all given back: the pipeline run
// over and over grows neither the C heap nor the device's memory
// (lavapipe's is shared memory, in which one 640x480 frame left behind per
// run would add 13 MiB over the runs).
func TestHWFramesPipelineDoesNotLeak(t *testing.T) {
	cfg := hwConfig(t, "ultrafast")
	cfg.KeyframeInterval = 500 * time.Millisecond
	checkNoLeak(t, cfg, 640, 480)
	// Half the runs are flushed (30 frames); the others are abandoned
	// with frames still in the decoder.
	if n := cfg.testDevice.uploads.Load(); n < 20*30 {
		t.Fatalf("%d frames uploaded, want at least %d", n, 20*30)
	}
}

// The graphs the ladder builds for Vulkan frames (by layout) and for CUDA
// frames downloaded for x264.
func TestHWFramesGraphDesc(t *testing.T) {
	t.Parallel()
	l, err := newLadder(Config{Backend: BackendSoftware, KeyframeInterval: time.Second}, []Rung{{Name: "360p", Height: 360}})
	if err != nil {
		t.Fatal(err)
	}
	l.encoder = l.backend
	rungs := []Rung{{Name: "360p", Width: 640, Height: 360}, {Name: "240p", Width: 426, Height: 240}}
	yuv420p, nv12 := int(astiav.PixelFormatYuv420P), int(astiav.PixelFormatNv12)
	for _, c := range []struct {
		sw   int
		want string
	}{
		{yuv420p, "[in]split=2[s0][s1];[s0]scale_vulkan=w=640:h=360:scaler=bilinear,hwdownload,format=yuv420p[out0];[s1]scale_vulkan=w=426:h=240:scaler=bilinear,hwdownload,format=yuv420p[out1]"},
		{nv12, "[in]split=2[s0][s1];[s0]scale_vulkan=w=640:h=360:scaler=bilinear,hwdownload,format=nv12,format=yuv420p[out0];[s1]scale_vulkan=w=426:h=240:scaler=bilinear,hwdownload,format=nv12,format=yuv420p[out1]"},
	} {
		if got := l.graphDesc(rungs, pixelFormatVulkan, c.sw); got != c.want {
			t.Errorf("graphDesc(vulkan, %d) =\n%s\nwant\n%s", c.sw, got, c.want)
		}
	}
	if got := l.graphDesc(rungs[:1], astiav.PixelFormatCuda, yuv420p); !strings.HasPrefix(got, "[in]split=1[s0];[s0]scale_cuda=w=640:h=360:interp_algo=bilinear:format=yuv420p,hwdownload,format=yuv420p[out0]") {
		t.Errorf("graphDesc(cuda) = %s", got)
	}
}

// A source whose picture layout changes at the same size (yuv420p, then
// nv12) gets a new hardware frames context, and the ladder reopens its
// graph and encoders for it: the layout is read from the frames' context,
// as for NVDEC's (nv12, then p010 when a stream turns to 10 bits).
func TestHWFramesLayoutChange(t *testing.T) {
	t.Parallel()
	l, err := newLadder(hwConfig(t, "ultrafast"), []Rung{{Name: "180p", Height: 180, Bitrate: 300_000}})
	if err != nil {
		t.Fatal(err)
	}
	defer l.release()
	l.sourceRate = func() astiav.Rational { return astiav.NewRational(30, 1) }
	var frames, keys int
	emit := func(_ int, au *media.AccessUnit) {
		frames++
		if au.Keyframe {
			keys++
		}
	}
	var layouts []string
	for i := range 20 {
		pf := astiav.PixelFormatYuv420P
		if i >= 10 {
			pf = astiav.PixelFormatNv12
		}
		f := astiav.AllocFrame()
		f.SetWidth(320)
		f.SetHeight(240)
		f.SetPixelFormat(pf)
		if err := f.AllocBuffer(0); err != nil {
			t.Fatal(err)
		}
		if err := f.ImageFillBlack(); err != nil {
			t.Fatal(err)
		}
		f.SetPts(int64(i) * 3000)
		hf, err := l.toDevice(f)
		if err == nil {
			err = l.encodeFrame(hf, emit)
		}
		f.Free()
		if err != nil {
			t.Fatalf("frame %d (%s): %v", i, pf, err)
		}
		if name := astiav.PixelFormat(l.inSW).Name(); len(layouts) == 0 || layouts[len(layouts)-1] != name {
			layouts = append(layouts, name)
		}
		if !l.hwFrames || l.graph == nil {
			t.Fatalf("frame %d: hardware frames %v, graph %v", i, l.hwFrames, l.graph != nil)
		}
	}
	if err := l.flushEncoders(emit); err != nil {
		t.Fatal(err)
	}
	if strings.Join(layouts, ",") != "yuv420p,nv12" || frames != 20 || keys != 2 {
		t.Fatalf("layouts %v, %d frames, %d keyframes; want yuv420p then nv12, 20 frames, a keyframe at each start", layouts, frames, keys)
	}
}
