package ffmpeg

/*
#include <malloc.h>
*/
import "C"

// CHeapInUse returns the bytes the C allocator (glibc's malloc, every arena,
// mmapped blocks included) has handed out and not yet freed in this
// process: FFmpeg's, x264's and every other C library's memory, but not the
// Go heap. Unlike the resident set size it does not move with the Go
// runtime, the race detector's shadow memory or allocator fragmentation,
// so it is what the leak test watches.
func CHeapInUse() int64 {
	mi := C.mallinfo2()
	return int64(mi.uordblks) + int64(mi.hblkhd)
}
