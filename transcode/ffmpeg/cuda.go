package ffmpeg

// The C below does what go-astiav v0.16 (the last release for FFmpeg 5.1)
// has no binding for, and nothing more:
//   - a filter graph whose source takes hardware frames: the buffer source
//     needs the decoder's hw_frames_ctx (av_buffersrc_parameters_set), and
//     an encoder fed GPU frames needs the graph's output hw_frames_ctx;
//   - asking the NVIDIA driver (libcuda, loaded with dlopen so that Shoal
//     builds and runs on machines without it) for its GPUs' names, and NVML
//     for their memory in use.

/*
#cgo pkg-config: libavutil libavcodec libavfilter
#cgo LDFLAGS: -ldl
#include <dlfcn.h>
#include <stdio.h>
#include <string.h>
#include <libavcodec/avcodec.h>
#include <libavfilter/avfilter.h>
#include <libavfilter/buffersink.h>
#include <libavfilter/buffersrc.h>
#include <libavutil/hwcontext.h>
#include <libavutil/mem.h>

typedef struct {
	AVFilterGraph *graph;
	AVFilterContext *src;
	AVFilterContext **sinks;
	int n;
} shoal_graph;

static void shoal_graph_free(shoal_graph *g) {
	if (!g) return;
	avfilter_graph_free(&g->graph);
	av_free(g->sinks);
	av_free(g);
}

// shoal_graph_new builds desc (one input labelled "in", n outputs labelled
// "out0".."out<n-1>") between a buffer source shaped like f, with f's
// hardware frames context when it has one, and n buffer sinks.
static int shoal_graph_new(shoal_graph **out, const AVFrame *f, const char *desc, int n) {
	int ret = AVERROR(ENOMEM);
	AVFilterInOut *ins = NULL, *outs = NULL;
	shoal_graph *g = av_mallocz(sizeof(*g));
	if (!g) return ret;
	g->n = n;
	g->graph = avfilter_graph_alloc();
	g->sinks = av_calloc(n, sizeof(*g->sinks));
	if (!g->graph || !g->sinks) goto fail;
	g->graph->nb_threads = 1;
	char args[256];
	int sn = f->sample_aspect_ratio.num > 0 ? f->sample_aspect_ratio.num : 1;
	int sd = f->sample_aspect_ratio.den > 0 ? f->sample_aspect_ratio.den : 1;
	snprintf(args, sizeof(args), "video_size=%dx%d:pix_fmt=%d:time_base=1/90000:pixel_aspect=%d/%d",
		f->width, f->height, f->format, sn, sd);
	ret = avfilter_graph_create_filter(&g->src, avfilter_get_by_name("buffer"), "in", args, NULL, g->graph);
	if (ret < 0) goto fail;
	if (f->hw_frames_ctx) {
		AVBufferSrcParameters *p = av_buffersrc_parameters_alloc();
		if (!p) { ret = AVERROR(ENOMEM); goto fail; }
		p->hw_frames_ctx = f->hw_frames_ctx; // referenced by the call
		ret = av_buffersrc_parameters_set(g->src, p);
		av_free(p);
		if (ret < 0) goto fail;
	}
	for (int i = 0; i < n; i++) {
		char name[32];
		snprintf(name, sizeof(name), "out%d", i);
		ret = avfilter_graph_create_filter(&g->sinks[i], avfilter_get_by_name("buffersink"), name, NULL, NULL, g->graph);
		if (ret < 0) goto fail;
	}
	ret = AVERROR(ENOMEM);
	outs = avfilter_inout_alloc();
	if (!outs) goto fail;
	outs->name = av_strdup("in");
	outs->filter_ctx = g->src;
	for (int i = n - 1; i >= 0; i--) {
		AVFilterInOut *io = avfilter_inout_alloc();
		if (!io) goto fail;
		char name[32];
		snprintf(name, sizeof(name), "out%d", i);
		io->name = av_strdup(name);
		io->filter_ctx = g->sinks[i];
		io->next = ins;
		ins = io;
	}
	ret = avfilter_graph_parse_ptr(g->graph, desc, &ins, &outs, NULL);
	if (ret < 0) goto fail;
	ret = avfilter_graph_config(g->graph, NULL);
	if (ret < 0) goto fail;
	avfilter_inout_free(&ins);
	avfilter_inout_free(&outs);
	*out = g;
	return 0;
fail:
	avfilter_inout_free(&ins);
	avfilter_inout_free(&outs);
	shoal_graph_free(g);
	return ret;
}

static int shoal_graph_push(shoal_graph *g, AVFrame *f) {
	return av_buffersrc_add_frame_flags(g->src, f, AV_BUFFERSRC_FLAG_KEEP_REF);
}

static int shoal_graph_pull(shoal_graph *g, int i, AVFrame *f) {
	return av_buffersink_get_frame(g->sinks[i], f);
}

// shoal_encoder_use_graph_frames makes an encoder (not yet opened) take the
// hardware frames output i of g makes.
static int shoal_encoder_use_graph_frames(AVCodecContext *cc, shoal_graph *g, int i) {
	AVBufferRef *r = av_buffersink_get_hw_frames_ctx(g->sinks[i]);
	if (!r) return AVERROR(EINVAL);
	av_buffer_unref(&cc->hw_frames_ctx);
	cc->hw_frames_ctx = av_buffer_ref(r);
	return cc->hw_frames_ctx ? 0 : AVERROR(ENOMEM);
}

static int shoal_codec_context_width(const AVCodecContext *cc) { return cc->width; }

// shoal_hw_device_open opens the device name of type for FFmpeg.
static int shoal_hw_device_open(enum AVHWDeviceType type, const char *name, AVBufferRef **dev) {
	return av_hwdevice_ctx_create(dev, type, name, NULL, 0);
}

// shoal_get_cuda is a decoder's get_format: pictures in GPU memory when
// NVDEC takes the stream, else FFmpeg's default (a software format).
static enum AVPixelFormat shoal_get_cuda(AVCodecContext *cc, const enum AVPixelFormat *fmts) {
	for (const enum AVPixelFormat *p = fmts; *p != AV_PIX_FMT_NONE; p++) {
		if (*p == AV_PIX_FMT_CUDA) return *p;
	}
	return avcodec_default_get_format(cc, fmts);
}

// shoal_codec_set_device gives a codec context (not yet opened) a reference
// of its own to dev, which avcodec_free_context drops: an NVENC encoder fed
// from system memory then uses the device's CUDA context instead of
// creating one per session.
static int shoal_codec_set_device(AVCodecContext *cc, AVBufferRef *dev) {
	av_buffer_unref(&cc->hw_device_ctx);
	cc->hw_device_ctx = av_buffer_ref(dev);
	return cc->hw_device_ctx ? 0 : AVERROR(ENOMEM);
}

// shoal_codec_use_device makes a decoder (not yet opened) decode on dev
// with shoal_get_cuda, on one thread (NVDEC does the work). The ladder
// copies every picture at once (scale_cuda), so no extra surfaces.
static int shoal_codec_use_device(AVCodecContext *cc, AVBufferRef *dev) {
	int ret = shoal_codec_set_device(cc, dev);
	if (ret < 0) return ret;
	cc->get_format = shoal_get_cuda;
	cc->thread_count = 1;
	return 0;
}

// shoal_frame_sw_format is the layout of a GPU frame's pictures (nv12,
// p010...), or -1 for a frame in system memory.
static int shoal_frame_sw_format(const AVFrame *f) {
	if (!f->hw_frames_ctx) return -1;
	return ((AVHWFramesContext *)f->hw_frames_ctx->data)->sw_format;
}

static int shoal_frame_copy_props(AVFrame *dst, const AVFrame *src) { return av_frame_copy_props(dst, src); }

// shoal_have_lib tells whether the shared library name loads.
static int shoal_have_lib(const char *name) {
	void *lib = dlopen(name, RTLD_NOW | RTLD_LOCAL);
	return lib != NULL;
}

// The NVIDIA driver, loaded at run time. CUresult and nvmlReturn_t are ints
// (0: success); a CUdevice is an int; an nvmlDevice_t a pointer.
typedef int (*cu_init_t)(unsigned int);
typedef int (*cu_count_t)(int *);
typedef int (*cu_get_t)(int *, int);
typedef int (*cu_name_t)(char *, int, int);
typedef int (*cu_pci_t)(char *, int, int);
typedef struct { unsigned long long total, free, used; } shoal_nvml_memory;
typedef int (*nvml_init_t)(void);
typedef int (*nvml_handle_t)(const char *, void **);
typedef int (*nvml_memory_t)(void *, shoal_nvml_memory *);

// shoal_cuda_devices loads libcuda and counts its devices: -1 when the
// library is missing (why says so), -2 when cuInit fails (*code is its
// CUresult).
static int shoal_cuda_devices(int *count, int *code, char *why, int whylen) {
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) {
		snprintf(why, whylen, "%s", dlerror());
		return -1;
	}
	cu_init_t init = (cu_init_t)dlsym(lib, "cuInit");
	cu_count_t cnt = (cu_count_t)dlsym(lib, "cuDeviceGetCount");
	if (!init || !cnt) {
		snprintf(why, whylen, "libcuda.so.1 lacks cuInit or cuDeviceGetCount");
		return -1;
	}
	*code = init(0);
	if (*code != 0) return -2;
	*code = cnt(count);
	return *code == 0 ? 0 : -2;
}

static int shoal_cuda_name(int index, char *name, int len) {
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) return -1;
	cu_get_t get = (cu_get_t)dlsym(lib, "cuDeviceGet");
	cu_name_t nm = (cu_name_t)dlsym(lib, "cuDeviceGetName");
	int dev = 0;
	if (!get || !nm || get(&dev, index) != 0) return -1;
	return nm(name, len, dev) == 0 ? 0 : -1;
}

// shoal_cuda_pci is CUDA device index's PCI bus id ("0000:17:00.0"): NVML
// numbers GPUs in PCI order, CUDA fastest first, so they meet by bus id.
static int shoal_cuda_pci(int index, char *id, int len) {
	void *lib = dlopen("libcuda.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) return -1;
	cu_get_t get = (cu_get_t)dlsym(lib, "cuDeviceGet");
	cu_pci_t pci = (cu_pci_t)dlsym(lib, "cuDeviceGetPCIBusId");
	int dev = 0;
	if (!get || !pci || get(&dev, index) != 0) return -1;
	return pci(id, len, dev) == 0 ? 0 : -1;
}

// shoal_gpu_memory_used is the memory in use on the GPU at PCI bus id
// (NVML), or -1.
static long long shoal_gpu_memory_used(const char *pci) {
	void *lib = dlopen("libnvidia-ml.so.1", RTLD_NOW | RTLD_LOCAL);
	if (!lib) return -1;
	nvml_init_t init = (nvml_init_t)dlsym(lib, "nvmlInit_v2");
	nvml_handle_t handle = (nvml_handle_t)dlsym(lib, "nvmlDeviceGetHandleByPciBusId_v2");
	nvml_memory_t memory = (nvml_memory_t)dlsym(lib, "nvmlDeviceGetMemoryInfo");
	void *dev = NULL;
	shoal_nvml_memory m;
	if (!init || !handle || !memory || init() != 0 || handle(pci, &dev) != 0 || memory(dev, &m) != 0) return -1;
	return (long long)m.used;
}
*/
import "C"

import (
	"errors"
	"fmt"
	"strconv"
	"unsafe"

	"github.com/asticode/go-astiav"
)

// cudaDevice is an FFmpeg CUDA device context, held for the process's
// life. go-astiav v0.16's CodecContext.Free drops the reference its
// HardwareDeviceContext holds (not the codec's own), so a device shared by
// several decoders is bound here instead.
type cudaDevice struct{ ref *C.AVBufferRef }

// openCUDADevice opens CUDA device index.
func openCUDADevice(index int) (*cudaDevice, error) {
	ref, err := openHWDevice(C.AV_HWDEVICE_TYPE_CUDA, strconv.Itoa(index))
	if err != nil {
		return nil, err
	}
	return &cudaDevice{ref: ref}, nil
}

// openHWDevice opens the device name of type for FFmpeg.
func openHWDevice(typ C.enum_AVHWDeviceType, name string) (*C.AVBufferRef, error) {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	var ref *C.AVBufferRef
	if ret := C.shoal_hw_device_open(typ, cname, &ref); ret < 0 {
		return nil, astiav.Error(ret)
	}
	return ref, nil
}

// attach makes decoder cc (not yet opened) decode on the device (see
// shoal_codec_use_device).
func (d *cudaDevice) attach(cc *astiav.CodecContext) error {
	return d.attachC(cCodecContext(cc))
}

// bindEncoder has NVENC encoder cc (not yet opened), fed from system
// memory, use the device's CUDA context.
func (d *cudaDevice) bindEncoder(cc *astiav.CodecContext) error {
	if ret := C.shoal_codec_set_device(cCodecContext(cc), d.ref); ret < 0 {
		return fmt.Errorf("giving the encoder the GPU: %w", astiav.Error(ret))
	}
	return nil
}

// swFormat is the layout of a GPU frame's pictures, or -1 for a frame in
// system memory.
func swFormat(f *astiav.Frame) int { return int(C.shoal_frame_sw_format(cFrame(f))) }

// haveLib tells whether the shared library name loads here.
func haveLib(name string) bool {
	cname := C.CString(name)
	defer C.free(unsafe.Pointer(cname))
	return C.shoal_have_lib(cname) != 0
}

func (d *cudaDevice) attachC(cc *C.AVCodecContext) error {
	if ret := C.shoal_codec_use_device(cc, d.ref); ret < 0 {
		return fmt.Errorf("giving the decoder the GPU: %w", astiav.Error(ret))
	}
	return nil
}

// softwareFrame returns f when its picture is in system memory, else a
// copy downloaded from the GPU, and a func that frees what it allocated.
func softwareFrame(f *astiav.Frame) (*astiav.Frame, func(), error) {
	if !hwFrame(f) {
		return f, func() {}, nil
	}
	sw := astiav.AllocFrame()
	if sw == nil {
		return nil, nil, errors.New("allocating a frame failed")
	}
	if err := f.TransferHardwareData(sw); err != nil {
		sw.Free()
		return nil, nil, fmt.Errorf("downloading a picture from the GPU: %w", err)
	}
	// Timestamps, color range and space, for thumbnails true to the source.
	if ret := C.shoal_frame_copy_props(cFrame(sw), cFrame(f)); ret < 0 {
		sw.Free()
		return nil, nil, fmt.Errorf("copying a picture's properties: %w", astiav.Error(ret))
	}
	return sw, sw.Free, nil
}

// cFrame is f's AVFrame (go-astiav exposes it).
func cFrame(f *astiav.Frame) *C.AVFrame { return (*C.AVFrame)(f.UnsafePointer()) }

// cCodecContext is cc's AVCodecContext. go-astiav v0.16 does not expose it;
// its CodecContext's first field is that pointer, which
// TestCodecContextLayout checks against the width the C side reads.
func cCodecContext(cc *astiav.CodecContext) *C.AVCodecContext {
	return *(**C.AVCodecContext)(unsafe.Pointer(cc))
}

// codecContextWidth reads cc's width on the C side (for the layout test).
func codecContextWidth(cc *astiav.CodecContext) int {
	return int(C.shoal_codec_context_width(cCodecContext(cc)))
}

// frameGraph is one filter graph that turns a decoded frame into one frame
// per rung: scale_cuda on the GPU (and hwdownload where a rung's encoder
// takes system memory), or swscale in tests of the same plumbing on the
// CPU.
type frameGraph struct {
	g *C.shoal_graph
	n int
}

// newFrameGraph builds desc for frames shaped like f (see shoal_graph_new
// for the labels).
func newFrameGraph(f *astiav.Frame, desc string, n int) (*frameGraph, error) {
	cdesc := C.CString(desc)
	defer C.free(unsafe.Pointer(cdesc))
	var g *C.shoal_graph
	if ret := C.shoal_graph_new(&g, cFrame(f), cdesc, C.int(n)); ret < 0 {
		return nil, fmt.Errorf("filter graph %q: %w", desc, astiav.Error(ret))
	}
	return &frameGraph{g: g, n: n}, nil
}

// push hands the graph a reference to f.
func (g *frameGraph) push(f *astiav.Frame) error {
	if ret := C.shoal_graph_push(g.g, cFrame(f)); ret < 0 {
		return astiav.Error(ret)
	}
	return nil
}

// pull takes output i's next frame into f; false when it has none yet.
func (g *frameGraph) pull(i int, f *astiav.Frame) (bool, error) {
	ret := C.shoal_graph_pull(g.g, C.int(i), cFrame(f))
	if ret >= 0 {
		return true, nil
	}
	err := astiav.Error(ret)
	if errors.Is(err, astiav.ErrEagain) || errors.Is(err, astiav.ErrEof) {
		return false, nil
	}
	return false, err
}

// feedEncoder makes cc (not yet opened) take output i's hardware frames.
func (g *frameGraph) feedEncoder(cc *astiav.CodecContext, i int) error {
	if ret := C.shoal_encoder_use_graph_frames(cCodecContext(cc), g.g, C.int(i)); ret < 0 {
		return fmt.Errorf("handing the scaler's GPU frames to the encoder: %w", astiav.Error(ret))
	}
	return nil
}

func (g *frameGraph) free() {
	if g != nil && g.g != nil {
		C.shoal_graph_free(g.g)
		g.g = nil
	}
}

// errNoDriver is cudaDevices' answer on a machine without NVIDIA's driver.
var errNoDriver = errors.New("no NVIDIA driver")

// cudaDevices counts the CUDA devices the driver sees.
func cudaDevices() (int, error) {
	var count, code C.int
	why := make([]byte, 256)
	switch C.shoal_cuda_devices(&count, &code, (*C.char)(unsafe.Pointer(&why[0])), C.int(len(why))) {
	case -1:
		return 0, fmt.Errorf("%w (%s)", errNoDriver, C.GoString((*C.char)(unsafe.Pointer(&why[0]))))
	case -2:
		if code == 100 { // CUDA_ERROR_NO_DEVICE
			return 0, nil
		}
		return 0, fmt.Errorf("the NVIDIA driver failed to start (CUDA error %d)", int(code))
	}
	return int(count), nil
}

// cudaDeviceName is the marketing name of CUDA device index ("NVIDIA H200").
func cudaDeviceName(index int) string {
	name := make([]byte, 256)
	if C.shoal_cuda_name(C.int(index), (*C.char)(unsafe.Pointer(&name[0])), C.int(len(name))) != 0 {
		return fmt.Sprintf("NVIDIA GPU %d", index)
	}
	return C.GoString((*C.char)(unsafe.Pointer(&name[0])))
}

// cudaPCIBusID is CUDA device index's PCI bus id, or "" when unknown.
func cudaPCIBusID(index int) string {
	id := make([]byte, 64)
	if C.shoal_cuda_pci(C.int(index), (*C.char)(unsafe.Pointer(&id[0])), C.int(len(id))) != 0 {
		return ""
	}
	return C.GoString((*C.char)(unsafe.Pointer(&id[0])))
}

// gpuMemoryUsed is the memory in use on the GPU at PCI bus id pci as NVML
// reports it, or -1 where NVML is missing.
func gpuMemoryUsed(pci string) int64 {
	cpci := C.CString(pci)
	defer C.free(unsafe.Pointer(cpci))
	return int64(C.shoal_gpu_memory_used(cpci))
}
