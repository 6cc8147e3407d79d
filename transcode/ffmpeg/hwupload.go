package ffmpeg

// The GPU path's plumbing (hardware frames through the ladder's filter
// graph, scaled on the device, downloaded for x264; thumbnails from
// downloaded copies) needs a hardware device to run for real. Machines
// without an NVIDIA GPU have one FFmpeg 5.1 drives all the same: Vulkan on
// Mesa's lavapipe, which runs on the CPU. Tests upload the decoded frames
// to it (Config.testDevice) where NVDEC would have decoded them into GPU
// memory, and scale them with scale_vulkan where a GPU uses scale_cuda.
// Nothing in a running node uses this.

/*
#cgo pkg-config: libavutil
#include <libavutil/frame.h>
#include <libavutil/hwcontext.h>

// shoal_hw_upload copies src (system memory) into a new frame of *frames, a
// hardware frames context of format hw on dev for src's size and layout,
// made here, and made again when they change.
static int shoal_hw_upload(AVBufferRef *dev, enum AVPixelFormat hw, AVBufferRef **frames, const AVFrame *src, AVFrame *dst) {
	AVHWFramesContext *fc = *frames ? (AVHWFramesContext *)(*frames)->data : NULL;
	if (!fc || fc->width != src->width || fc->height != src->height || fc->sw_format != src->format) {
		av_buffer_unref(frames);
		*frames = av_hwframe_ctx_alloc(dev);
		if (!*frames) return AVERROR(ENOMEM);
		fc = (AVHWFramesContext *)(*frames)->data;
		fc->format = hw;
		fc->sw_format = src->format;
		fc->width = src->width;
		fc->height = src->height;
		int ret = av_hwframe_ctx_init(*frames);
		if (ret < 0) {
			av_buffer_unref(frames);
			return ret;
		}
	}
	int ret = av_hwframe_get_buffer(*frames, dst, 0);
	if (ret < 0) return ret;
	ret = av_hwframe_transfer_data(dst, src, 0);
	if (ret >= 0) ret = av_frame_copy_props(dst, src);
	if (ret < 0) av_frame_unref(dst);
	return ret;
}

static void shoal_buffer_unref(AVBufferRef **r) { av_buffer_unref(r); }
*/
import "C"

import (
	"errors"
	"fmt"
	"sync/atomic"

	"github.com/asticode/go-astiav"
)

// pixelFormatVulkan is AV_PIX_FMT_VULKAN, which go-astiav v0.16 does not
// name.
var pixelFormatVulkan = astiav.PixelFormat(C.AV_PIX_FMT_VULKAN)

// hwFrame tells whether f's picture is in a hardware device's memory.
func hwFrame(f *astiav.Frame) bool {
	pf := f.PixelFormat()
	return pf == astiav.PixelFormatCuda || pf == pixelFormatVulkan
}

// hwDevice is the Vulkan device tests upload decoded frames to (see the
// top of this file).
type hwDevice struct {
	ref *C.AVBufferRef
	// uploads counts the frames uploaded, for tests to see the path ran.
	uploads atomic.Int64
}

// openLavapipe opens Mesa's lavapipe Vulkan device ("llvmpipe": FFmpeg
// takes the device whose name has it), never a GPU's: its device memory is
// this process's shared memory, which the leak test reads.
func openLavapipe() (*hwDevice, error) {
	ref, err := openHWDevice(C.AV_HWDEVICE_TYPE_VULKAN, "llvmpipe")
	if err != nil {
		return nil, fmt.Errorf("opening the Vulkan device llvmpipe (Mesa's lavapipe): %w", err)
	}
	return &hwDevice{ref: ref}, nil
}

func (d *hwDevice) close() { C.shoal_buffer_unref(&d.ref) }

// uploader copies one ladder's decoded frames to a hwDevice, one at a time:
// the frame it returns lives until the next upload or free.
type uploader struct {
	dev    *hwDevice
	frames *C.AVBufferRef
	out    *astiav.Frame
}

func (u *uploader) upload(f *astiav.Frame) (*astiav.Frame, error) {
	if u.out == nil {
		if u.out = astiav.AllocFrame(); u.out == nil {
			return nil, errors.New("allocating a frame failed")
		}
	}
	u.out.Unref()
	if ret := C.shoal_hw_upload(u.dev.ref, C.AV_PIX_FMT_VULKAN, &u.frames, cFrame(f), cFrame(u.out)); ret < 0 {
		return nil, fmt.Errorf("uploading a picture to the device: %w", astiav.Error(ret))
	}
	u.dev.uploads.Add(1)
	return u.out, nil
}

func (u *uploader) free() {
	if u.out != nil {
		u.out.Free()
		u.out = nil
	}
	C.shoal_buffer_unref(&u.frames)
}
