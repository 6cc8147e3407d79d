package ffmpeg

import (
	_ "embed"
	"errors"
	"fmt"
	"slices"
	"strings"
	"sync"

	"github.com/asticode/go-astiav"

	"github.com/shoal-video/shoal/internal/media"
)

// GPU is an NVIDIA GPU as ProbeGPUs found it. A pipeline whose
// Config.GPU is set decodes on it (NVDEC) the codecs it decodes, scales
// there (scale_cuda), and hands the scaled frames straight to NVENC when the
// backend is nvenc, or downloads them for x264 otherwise.
type GPU struct {
	Index int
	Name  string
	// NVDEC lists the codecs ("h264", "hevc") a probe decoded on the GPU.
	NVDEC []string
	// NVENC tells whether an H.264 encode session opened and encoded a
	// frame; NVENCSessions how many the probe could hold open at once
	// (consumer cards cap them; the probe stops at maxProbedSessions).
	NVENC         bool
	NVENCSessions int
	// Problem says what did not work, when something did not.
	Problem string

	dev *cudaDevice
	pci string // PCI bus id, to find the GPU in NVML

	mu       sync.Mutex
	sessions int // NVENC sessions in use
	ladders  int // pipelines using the GPU
	// failures counts the ladders in a row that failed on the GPU; at
	// maxFailures the GPU takes no new ladders (a sticky CUDA error
	// poisons its context for the process's life).
	failures int
}

// maxFailures is how many ladders in a row may fail on a GPU before it is
// set aside.
const maxFailures = 3

// Healthy tells whether the GPU takes new ladders: fewer than maxFailures
// ladders in a row failed on it.
func (g *GPU) Healthy() bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.failures < maxFailures
}

// ladderEnded records how a ladder on the GPU ended: failed, or having
// encoded GPU frames without an error.
func (g *GPU) ladderEnded(failed bool) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if failed {
		g.failures++
	} else {
		g.failures = 0
	}
}

// MemoryUsed is the memory in use on the GPU, all processes, as NVML
// reports it; -1 where NVML is missing.
func (g *GPU) MemoryUsed() int64 {
	if g.pci == "" {
		return -1
	}
	return gpuMemoryUsed(g.pci)
}

// containerHint is said when a driver library NVDEC or NVENC needs is
// missing: containers get them only with the video capability.
const containerHint = " (in a container, set NVIDIA_DRIVER_CAPABILITIES=compute,video,utility)"

// maxProbedSessions bounds the NVENC sessions the probe opens at once.
const maxProbedSessions = 32

// Decodes reports whether the GPU decodes codec c (the probe decoded it on
// the device this process holds open).
func (g *GPU) Decodes(c media.Codec) bool {
	switch c {
	case media.CodecH264:
		return g.decodes("h264")
	case media.CodecH265:
		return g.decodes("hevc")
	}
	return false
}

// decodes reports whether the GPU decodes the codec FFmpeg names name.
func (g *GPU) decodes(name string) bool {
	return g != nil && g.dev != nil && slices.Contains(g.NVDEC, name)
}

// Describe is the GPU's probe result in a few words: "NVIDIA H200 (GPU 0):
// NVDEC h264/hevc yes, NVENC no".
func (g *GPU) Describe() string {
	dec := "NVDEC no"
	if len(g.NVDEC) > 0 {
		dec = "NVDEC " + strings.Join(g.NVDEC, "/") + " yes"
	}
	enc := "NVENC no"
	if g.NVENC {
		enc = fmt.Sprintf("NVENC yes (%d sessions", g.NVENCSessions)
		if g.NVENCSessions >= maxProbedSessions {
			enc = fmt.Sprintf("NVENC yes (%d+ sessions", g.NVENCSessions)
		}
		enc += ")"
	}
	return fmt.Sprintf("%s (GPU %d): %s, %s", g.Name, g.Index, dec, enc)
}

// InUse returns the NVENC sessions and the pipelines using the GPU now.
func (g *GPU) InUse() (sessions, ladders int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.sessions, g.ladders
}

// reserveNVENC takes n encode sessions if the GPU has that many free.
func (g *GPU) reserveNVENC(n int) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if !g.NVENC || g.sessions+n > g.NVENCSessions {
		return false
	}
	g.sessions += n
	return true
}

func (g *GPU) releaseNVENC(n int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.sessions -= n
}

func (g *GPU) addLadder(d int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.ladders += d
}

// LeastBusy returns the healthy GPU with the fewest pipelines, or nil.
func LeastBusy(gpus []*GPU) *GPU {
	var best *GPU
	bestN := 0
	for _, g := range gpus {
		if !g.Healthy() {
			continue
		}
		_, n := g.InUse()
		if best == nil || n < bestN {
			best, bestN = g, n
		}
	}
	return best
}

// ErrNoGPU is ProbeGPUs' answer on a machine without a usable NVIDIA GPU;
// the error says why.
var ErrNoGPU = errors.New("no NVIDIA GPU")

// ProbeGPUs finds the NVIDIA GPUs and what each can do, for real: it opens a
// CUDA device, decodes a tiny H.264 and H.265 picture on it and opens
// H.264 encode sessions. A GPU that FFmpeg cannot open at all is left out;
// with none, the error matches ErrNoGPU and says why.
func ProbeGPUs() ([]*GPU, error) {
	n, err := cudaDevices()
	if err != nil {
		return nil, fmt.Errorf("%w: %w", ErrNoGPU, err)
	}
	if n == 0 {
		return nil, fmt.Errorf("%w: the NVIDIA driver sees no device", ErrNoGPU)
	}
	probing.Add(1)
	defer probing.Add(-1)
	var gpus []*GPU
	var problems []string
	for i := range n {
		g := &GPU{Index: i, Name: cudaDeviceName(i), pci: cudaPCIBusID(i)}
		dev, err := openCUDADevice(i)
		if err != nil {
			problems = append(problems, fmt.Sprintf("%s (GPU %d): FFmpeg could not open it: %v", g.Name, i, err))
			continue
		}
		g.dev = dev
		var why []string
		for _, c := range probePictures {
			if err := probeNVDEC(dev, c.id, c.data); err != nil {
				why = append(why, fmt.Sprintf("NVDEC %s: %v", c.name, err))
				continue
			}
			g.NVDEC = append(g.NVDEC, c.name)
		}
		if len(g.NVDEC) == 0 && !haveLib("libnvcuvid.so.1") {
			why = append(why, "NVDEC: the driver's libnvcuvid.so.1 is missing"+containerHint)
		}
		g.NVENCSessions, err = probeNVENC(dev, i)
		g.NVENC = g.NVENCSessions > 0
		if err != nil {
			if !haveLib("libnvidia-encode.so.1") {
				err = errors.New("the driver's libnvidia-encode.so.1 is missing" + containerHint)
			}
			why = append(why, "NVENC: "+err.Error())
		}
		g.Problem = strings.Join(why, "; ")
		gpus = append(gpus, g)
	}
	if len(gpus) == 0 {
		return nil, fmt.Errorf("%w: %s", ErrNoGPU, strings.Join(problems, "; "))
	}
	return gpus, nil
}

// probePictures are one 256x144 picture in each codec NVDEC is probed for,
// parameter sets in band. Made with the ffmpeg CLI:
//
//	ffmpeg -f lavfi -i testsrc2=s=256x144:r=30 -frames:v 1 -c:v libx264 -preset ultrafast -pix_fmt yuv420p -f h264 picture.h264
//	ffmpeg -f lavfi -i testsrc2=s=256x144:r=30 -frames:v 1 -c:v libx265 -preset ultrafast -pix_fmt yuv420p -f hevc picture.hevc
var probePictures = []struct {
	name string
	id   astiav.CodecID
	data []byte
}{{"h264", astiav.CodecIDH264, probeH264}, {"hevc", astiav.CodecIDHevc, probeHEVC}}

//go:embed probedata/picture.h264
var probeH264 []byte

//go:embed probedata/picture.hevc
var probeHEVC []byte

// probeNVDEC decodes data on dev (with dev nil: on the CPU, which checks
// the probe pictures); the picture must come out in GPU memory (FFmpeg
// falls back to the CPU quietly when NVDEC refuses a stream).
func probeNVDEC(dev *cudaDevice, id astiav.CodecID, data []byte) error {
	codec := astiav.FindDecoder(id)
	if codec == nil {
		return errors.New("no decoder in this FFmpeg build")
	}
	dec := astiav.AllocCodecContext(codec)
	if dec == nil {
		return errors.New("allocating the decoder failed")
	}
	defer dec.Free()
	if dev != nil {
		if err := dev.attach(dec); err != nil {
			return err
		}
	}
	if err := dec.Open(codec, nil); err != nil {
		return fmt.Errorf("opening the decoder: %w", err)
	}
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	if err := pkt.FromData(append(slices.Clip(data), make([]byte, padding)...)); err != nil {
		return err
	}
	pkt.SetSize(len(data))
	f := astiav.AllocFrame()
	defer f.Free()
	if err := dec.SendPacket(pkt); err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	if err := dec.SendPacket(nil); err != nil && !errors.Is(err, astiav.ErrEof) {
		return fmt.Errorf("decoding: %w", err)
	}
	err := dec.ReceiveFrame(f)
	if errors.Is(err, astiav.ErrEof) || errors.Is(err, astiav.ErrEagain) {
		return errors.New("the decoder gave no picture")
	}
	if err != nil {
		return fmt.Errorf("decoding: %w", err)
	}
	defer f.Unref()
	if f.Width() != 256 || f.Height() != 144 {
		return fmt.Errorf("decoded a %dx%d picture, want 256x144", f.Width(), f.Height())
	}
	if dev != nil && f.PixelFormat() != astiav.PixelFormatCuda {
		return fmt.Errorf("the picture was decoded on the CPU (%s), not by NVDEC", f.PixelFormat())
	}
	return nil
}

// encodeOne encodes one blank picture with enc and returns the bytes.
func encodeOne(enc *astiav.CodecContext, pix astiav.PixelFormat) ([]byte, error) {
	f := astiav.AllocFrame()
	defer f.Free()
	f.SetWidth(enc.Width())
	f.SetHeight(enc.Height())
	f.SetPixelFormat(pix)
	if err := f.AllocBuffer(0); err != nil {
		return nil, fmt.Errorf("probe frame: %w", err)
	}
	f.SetPts(0)
	if err := enc.SendFrame(f); err != nil {
		return nil, fmt.Errorf("encoding a frame: %w", err)
	}
	if err := enc.SendFrame(nil); err != nil {
		return nil, fmt.Errorf("flushing: %w", err)
	}
	pkt := astiav.AllocPacket()
	defer pkt.Free()
	var out []byte
	for {
		err := enc.ReceivePacket(pkt)
		if err == nil {
			out = append(out, pkt.Data()...)
			pkt.Unref()
			continue
		}
		if errors.Is(err, astiav.ErrEof) {
			if len(out) == 0 {
				return nil, errors.New("the encoder produced nothing")
			}
			return out, nil
		}
		if !errors.Is(err, astiav.ErrEagain) {
			return nil, fmt.Errorf("encoding a frame: %w", err)
		}
	}
}

// probeNVENC opens H.264 NVENC sessions on GPU index, each encoding one
// frame, and holds them until one fails or maxProbedSessions are open: only
// opening them tells how many a card allows (NVML reports a capacity even
// on GPUs without an encoder). It returns how many opened; the error says
// why the first failed when none did.
func probeNVENC(dev *cudaDevice, index int) (int, error) {
	var open []*astiav.CodecContext
	defer func() {
		for _, cc := range open {
			cc.Free()
		}
	}()
	for len(open) < maxProbedSessions {
		s := encoderSettings{rung: Rung{Width: 256, Height: 144, Bitrate: 200_000},
			frameRate: astiav.NewRational(30, 1), gop: 60, preset: "veryfast", gpuIndex: index, device: dev}
		enc, err := nvenc{}.open(s)
		if err != nil {
			if len(open) == 0 {
				return 0, nvencError(err)
			}
			return len(open), nil
		}
		open = append(open, enc)
		if _, err := encodeOne(enc, astiav.PixelFormatYuv420P); err != nil {
			if len(open) == 1 {
				return 0, nvencError(err)
			}
			return len(open) - 1, nil // it opened but could not encode
		}
	}
	return len(open), nil
}

// nvencError words an NVENC failure for an operator: FFmpeg says "Generic
// error in an external library" for a GPU without an encoder.
func nvencError(err error) error {
	if errors.Is(err, astiav.ErrExternal) {
		return fmt.Errorf("this GPU has no H.264 encoder, or its driver refused a session (%w)", err)
	}
	return err
}
