package ffmpeg

//#cgo pkg-config: libavformat libavcodec libavutil
//#include <stdlib.h>
//#include <libavformat/avformat.h>
//#include <libavcodec/avcodec.h>
//#include <libavutil/avutil.h>
//
// // shoal_probe guesses the format of url the way avformat_open_input does
// // (growing reads up to 1 MiB), from the content only: the file's name is
// // not looked at. It reports the format in *fmt; *io is set when the file
// // could not be opened at all.
// static int shoal_probe(const char *url, const AVInputFormat **fmt, int *io) {
// 	AVIOContext *pb = NULL;
// 	int ret = avio_open(&pb, url, AVIO_FLAG_READ);
// 	if (ret < 0) {
// 		*io = 1;
// 		return ret;
// 	}
// 	ret = av_probe_input_buffer2(pb, fmt, "", NULL, 0, 0);
// 	avio_closep(&pb);
// 	return ret;
// }
//
// // shoal_find_stream_info is avformat_find_stream_info with the decoders
// // it opens limited to pictures of max_pixels.
// static int shoal_find_stream_info(AVFormatContext *fc, int64_t max_pixels) {
// 	unsigned n = fc->nb_streams;
// 	AVDictionary **opts = av_calloc(n ? n : 1, sizeof(*opts));
// 	int ret;
// 	if (!opts) return AVERROR(ENOMEM);
// 	for (unsigned i = 0; i < n; i++) av_dict_set_int(&opts[i], "max_pixels", max_pixels, 0);
// 	ret = avformat_find_stream_info(fc, opts);
// 	for (unsigned i = 0; i < n; i++) av_dict_free(&opts[i]);
// 	av_free(opts);
// 	return ret;
// }
//
// static AVStream *shoal_stream(AVFormatContext *fc, int i) { return fc->streams[i]; }
//
// static int shoal_attached_pic(AVStream *st) {
// 	return (st->disposition & AV_DISPOSITION_ATTACHED_PIC) != 0;
// }
//
// // shoal_index_end is the end (byte offset) of the last sample the
// // stream's index lists, or -1 when the demuxer keeps no index with
// // positions.
// static int64_t shoal_index_end(AVStream *st) {
// 	int n = avformat_index_get_entries_count(st);
// 	if (n <= 0) return -1;
// 	const AVIndexEntry *e = avformat_index_get_entry(st, n - 1);
// 	if (!e || e->pos < 0) return -1;
// 	return e->pos + e->size;
// }
//
// static int shoal_default(AVStream *st) {
// 	return (st->disposition & AV_DISPOSITION_DEFAULT) != 0;
// }
import "C"

import (
	"errors"
	"fmt"
	"os"
	"strings"
	"unsafe"

	"github.com/asticode/go-astiav"
)

// noPTS is AV_NOPTS_VALUE.
const noPTS = int64(C.AV_NOPTS_VALUE)

// maxPixels bounds the pictures a decoder allocates (8192 x 8192): a damaged
// or hostile header cannot make it allocate gigabytes.
const maxPixels = 8192 * 8192

// input is a demuxed file: libavformat's context and a packet to read into.
// It uses libavformat directly (go-astiav v0.16 exposes neither stream
// dispositions nor probing), so close must be called on every path.
type input struct {
	fc  *C.AVFormatContext
	pkt *C.AVPacket
}

// avErr turns an FFmpeg return code into an error (astiav.Error, so that
// errors.Is works with astiav's error values).
func avErr(ret C.int) error {
	if ret >= 0 {
		return nil
	}
	return astiav.Error(int(ret))
}

// deniedFormats are demuxers that read other files or URLs named inside the
// input (playlists, concatenation lists): an uploaded file must not make the
// transcoder read anything else.
var deniedFormats = map[string]bool{
	"hls": true, "dash": true, "concat": true, "imf": true,
	"webm_dash_manifest": true, "ffmetadata": true, "lavfi": true,
}

// notMedia are demuxers of text art that take any text for a picture.
var notMedia = map[string]bool{"tty": true, "bintext": true, "xbin": true, "adf": true, "idf": true}

// stillImage tells a demuxer of single images (JPEG, PNG...).
func stillImage(name string) bool {
	return name == "image2" || name == "image2pipe" || strings.HasSuffix(name, "_pipe")
}

// openInput opens path for demuxing; its format is recognised from its
// content, whatever its name says. Input that is not a media file, or one
// too damaged to open, gives an error wrapping ErrNotVideo.
func openInput(path string) (*input, error) {
	st, err := os.Stat(path)
	if err != nil {
		return nil, err
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	// The file protocol, explicitly: a colon in the path does not name
	// another protocol.
	url := C.CString("file:" + path)
	defer C.free(unsafe.Pointer(url))
	var format *C.AVInputFormat
	var ioErr C.int
	if ret := C.shoal_probe(url, &format, &ioErr); ret < 0 || format == nil {
		if ioErr != 0 {
			return nil, fmt.Errorf("opening %s: %w", path, avErr(ret))
		}
		return nil, fmt.Errorf("%w: the format is not recognised", ErrNotVideo)
	}
	name := C.GoString(format.name)
	switch {
	case notMedia[name]:
		return nil, fmt.Errorf("%w: the format is not recognised", ErrNotVideo)
	case deniedFormats[name]:
		return nil, fmt.Errorf("%w: %s files are not accepted", ErrNotVideo, name)
	case stillImage(name):
		return nil, fmt.Errorf("%w: the file is a still image", ErrNotVideo)
	}
	// Nothing but local files, should a demuxer open another one.
	var opts *C.AVDictionary
	defer C.av_dict_free(&opts)
	key, val := C.CString("protocol_whitelist"), C.CString("file")
	C.av_dict_set(&opts, key, val, 0)
	C.free(unsafe.Pointer(key))
	C.free(unsafe.Pointer(val))
	var fc *C.AVFormatContext // avformat_open_input frees it on failure
	if ret := C.avformat_open_input(&fc, url, format, &opts); ret < 0 {
		return nil, damaged(format, avErr(ret))
	}
	in := &input{fc: fc, pkt: C.av_packet_alloc()}
	if in.pkt == nil {
		in.close()
		return nil, errors.New("allocating a packet failed")
	}
	if ret := C.shoal_find_stream_info(fc, maxPixels); ret < 0 {
		in.close()
		return nil, damaged(format, avErr(ret))
	}
	return in, nil
}

func damaged(format *C.AVInputFormat, err error) error {
	what := C.GoString(format.long_name)
	if what == "" {
		what = C.GoString(format.name)
	}
	return fmt.Errorf("%w: the file is truncated or damaged (%s: %v)", ErrNotVideo, what, err)
}

func (in *input) close() {
	if in.pkt != nil {
		C.av_packet_free(&in.pkt)
	}
	if in.fc != nil {
		C.avformat_close_input(&in.fc)
	}
}

// formatName is the demuxer's name, e.g. "mov,mp4,m4a,3gp,3g2,mj2".
func (in *input) formatName() string { return C.GoString(in.fc.iformat.name) }

// duration is the file's duration in microseconds, or 0 when unknown.
func (in *input) duration() int64 {
	if d := int64(in.fc.duration); d != noPTS && d > 0 {
		return d
	}
	return 0
}

func (in *input) stream(i int) *C.AVStream { return C.shoal_stream(in.fc, C.int(i)) }

// bestVideo returns the index of the video stream to transcode: a real
// video (not cover art), one this build decodes, within maxPixels and the
// default one first, then the largest; -1 when there is none.
func (in *input) bestVideo() int {
	best, bestScore := -1, int64(-1)
	for i := range int(in.fc.nb_streams) {
		st := in.stream(i)
		par := st.codecpar
		if par.codec_type != C.AVMEDIA_TYPE_VIDEO || C.shoal_attached_pic(st) != 0 {
			continue
		}
		pixels := int64(par.width) * int64(par.height)
		score := min(max(pixels, 0), maxPixels)
		if C.avcodec_find_decoder(par.codec_id) != nil && pixels <= maxPixels {
			score += 1 << 42
		}
		if C.shoal_default(st) != 0 {
			score += 1 << 41
		}
		if score > bestScore {
			best, bestScore = i, score
		}
	}
	return best
}

// bestAudio returns the index of the audio stream to transcode (one that a
// decoder of this build reads), or -1.
func (in *input) bestAudio(video int) int {
	var dec *C.AVCodec
	ret := C.av_find_best_stream(in.fc, C.AVMEDIA_TYPE_AUDIO, -1, C.int(video), &dec, 0)
	if ret < 0 {
		return -1
	}
	return int(ret)
}

// codecName is FFmpeg's name of stream i's codec ("h264", "vp9", "aac").
func (in *input) codecName(i int) string {
	return C.GoString(C.avcodec_get_name(in.stream(i).codecpar.codec_id))
}

// size is stream i's declared picture size.
func (in *input) size(i int) (int, int) {
	par := in.stream(i).codecpar
	return int(par.width), int(par.height)
}

func (in *input) timeBase(i int) astiav.Rational {
	tb := in.stream(i).time_base
	return astiav.NewRational(int(tb.num), int(tb.den))
}

// streamDuration is stream i's duration in its time base, or 0 when unknown.
func (in *input) streamDuration(i int) int64 {
	if d := int64(in.stream(i).duration); d != noPTS && d > 0 {
		return d
	}
	return 0
}

// startTime is stream i's first timestamp in its time base, or noPTS.
func (in *input) startTime(i int) int64 { return int64(in.stream(i).start_time) }

// frameRate is FFmpeg's guess of stream i's frame rate (0/1 when unknown).
func (in *input) frameRate(i int) astiav.Rational {
	r := C.av_guess_frame_rate(in.fc, in.stream(i), nil)
	if r.num <= 0 || r.den <= 0 {
		return astiav.NewRational(0, 1)
	}
	return astiav.NewRational(int(r.num), int(r.den))
}

// read reads the next packet into in.pkt (unreferencing the previous one)
// and returns its stream index.
func (in *input) read() (int, error) {
	C.av_packet_unref(in.pkt)
	if err := avErr(C.av_read_frame(in.fc, in.pkt)); err != nil {
		return -1, err
	}
	return int(in.pkt.stream_index), nil
}

// decoder is a libavcodec decoder of one stream of an input.
type decoder struct {
	cc    *C.AVCodecContext
	name  string
	onGPU bool // NVDEC decodes
}

// openDecoder opens a decoder for stream i with threads threads (0: as many
// as the machine has), on gpu when it is set and decodes the codec.
func (in *input) openDecoder(i, threads int, gpu *GPU) (*decoder, error) {
	st := in.stream(i)
	name := in.codecName(i)
	codec := C.avcodec_find_decoder(st.codecpar.codec_id)
	if codec == nil {
		return nil, fmt.Errorf("no %s decoder in this FFmpeg build", name)
	}
	cc := C.avcodec_alloc_context3(codec)
	if cc == nil {
		return nil, errors.New("allocating a decoder failed")
	}
	d := &decoder{cc: cc, name: name}
	if err := avErr(C.avcodec_parameters_to_context(cc, st.codecpar)); err != nil {
		d.free()
		return nil, fmt.Errorf("%s decoder parameters: %w", name, err)
	}
	cc.pkt_timebase = st.time_base
	cc.thread_count = C.int(threads)
	cc.max_pixels = maxPixels
	if gpu.decodes(name) {
		if err := gpu.dev.attachC(cc); err != nil {
			d.free()
			return nil, err
		}
		d.onGPU = true
	}
	if err := avErr(C.avcodec_open2(cc, codec, nil)); err != nil {
		d.free()
		return nil, fmt.Errorf("opening the %s decoder: %w", name, err)
	}
	return d, nil
}

// send gives the decoder in's current packet, or with flush set, tells it
// the input ended.
func (d *decoder) send(in *input, flush bool) error {
	if flush {
		return avErr(C.avcodec_send_packet(d.cc, nil))
	}
	return avErr(C.avcodec_send_packet(d.cc, in.pkt))
}

// receive moves the next decoded frame into f (which must be unreferenced).
func (d *decoder) receive(f *astiav.Frame) error {
	return avErr(C.avcodec_receive_frame(d.cc, (*C.AVFrame)(f.UnsafePointer())))
}

func (d *decoder) free() {
	if d != nil && d.cc != nil {
		C.avcodec_free_context(&d.cc)
	}
}

// bestEffortTS is the frame's timestamp as libavcodec best guesses it (in
// the stream's time base), or noPTS.
func bestEffortTS(f *astiav.Frame) int64 {
	return int64((*C.AVFrame)(f.UnsafePointer()).best_effort_timestamp)
}

// indexEnd is the byte offset where the last sample of stream i that the
// container's index lists ends, or -1 when the container keeps no such
// index (MP4 and MOV do: their index is written before or after the data).
func (in *input) indexEnd(i int) int64 {
	return int64(C.shoal_index_end(C.shoal_stream(in.fc, C.int(i))))
}
