package ffmpeg

//#cgo pkg-config: libavutil
//#include <libavutil/frame.h>
import "C"

import (
	"fmt"

	"github.com/asticode/go-astiav"
)

// makeWritable makes f's buffers safe to overwrite: a no-op when nothing else
// (an encoder's lookahead, say) holds a reference to them, a copy into new
// buffers otherwise. It lets a rung reuse one frame instead of allocating a
// picture per frame. go-astiav v0.16 has no binding for it.
func makeWritable(f *astiav.Frame) error {
	if ret := C.av_frame_make_writable((*C.AVFrame)(f.UnsafePointer())); ret < 0 {
		return fmt.Errorf("av_frame_make_writable: %w", astiav.Error(ret))
	}
	return nil
}
