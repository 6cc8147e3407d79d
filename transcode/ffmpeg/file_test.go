package ffmpeg

import (
	"context"
	"errors"
	"image"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"runtime/debug"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/shoal-video/shoal/internal/media"
)

// makeClip runs the ffmpeg CLI with args (inputs and codecs) to write a file
// named name in a temporary directory and returns its path.
func makeClip(t testing.TB, name string, args ...string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	args = append([]string{"-nostdin", "-v", "error", "-y"}, append(args, path)...)
	if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return path
}

// Sources: testsrc2 pictures, a sine tone.
func videoSrc(size string, fps string) []string {
	return []string{"-f", "lavfi", "-i", "testsrc2=size=" + size + ":rate=" + fps}
}

func audioSrc(rate string) []string {
	return []string{"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=" + rate}
}

func args(parts ...[]string) []string { return slices.Concat(parts...) }

// mp4Clip is a 4 s 320x240 30 fps H.264 + mono 44.1 kHz AAC MP4 (moov at
// the end).
func mp4Clip(t testing.TB) string {
	return makeClip(t, "clip.mp4", args(videoSrc("320x240", "30"), audioSrc("44100"),
		[]string{"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-g", "45", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "64k"})...)
}

// fileOut records everything a FileSink receives.
type fileOut struct {
	calls    []string // the kinds of calls, in order, deduplicated
	starts   int
	rungs    []Rung
	audioT   *media.Track
	video    [][]*media.AccessUnit
	audio    []*media.AccessUnit
	thumbAt  []time.Duration
	thumbs   []*image.RGBA
	posters  []*image.RGBA
	progress []time.Duration
	startErr error
	onVideo  func()
}

func (o *fileOut) call(kind string) {
	if len(o.calls) == 0 || o.calls[len(o.calls)-1] != kind {
		o.calls = append(o.calls, kind)
	}
}

func (o *fileOut) sink() FileSink {
	return FileSink{
		Start: func(rungs []Rung, audio *media.Track) error {
			o.call("start")
			o.starts++
			o.rungs, o.audioT = rungs, audio
			o.video = make([][]*media.AccessUnit, len(rungs))
			return o.startErr
		},
		Video: func(i int, au *media.AccessUnit) {
			o.call("video")
			o.video[i] = append(o.video[i], au)
			if o.onVideo != nil {
				o.onVideo()
			}
		},
		Audio: func(au *media.AccessUnit) {
			o.call("audio")
			o.audio = append(o.audio, au)
		},
		Thumbnail: func(at time.Duration, img *image.RGBA) {
			o.call("thumbnail")
			o.thumbAt = append(o.thumbAt, at)
			o.thumbs = append(o.thumbs, img)
		},
		Poster: func(img *image.RGBA) {
			o.call("poster")
			o.posters = append(o.posters, img)
		},
		Progress: func(done time.Duration) {
			o.progress = append(o.progress, done)
		},
	}
}

var twoRungs = []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}, {Name: "144p", Height: 144, Bitrate: 150_000}}

func fileConfig(rungs []Rung) FileConfig {
	return FileConfig{
		Config:            Config{Preset: "ultrafast", KeyframeInterval: 2 * time.Second, Log: quiet},
		Rungs:             rungs,
		ThumbnailInterval: time.Second,
		ThumbnailWidth:    160,
		PosterAt:          time.Second,
		PosterMaxWidth:    1280,
	}
}

func transcode(t *testing.T, path string, cfg FileConfig) (*fileOut, FileResult) {
	t.Helper()
	o := &fileOut{}
	res, err := TranscodeFile(t.Context(), path, cfg, o.sink())
	if err != nil {
		t.Fatalf("TranscodeFile: %v", err)
	}
	return o, res
}

// checkVideo checks every rung: the first access unit is a keyframe with
// the parameter sets of the announced size, DTS increases, keyframes fall
// on the grid at the same instants in every rung, and the last picture is
// near the end. It returns the keyframe instants.
func checkVideo(t *testing.T, o *fileOut, frames int, dur time.Duration, grid int64) []int64 {
	t.Helper()
	var keys [][]int64
	for i, aus := range o.video {
		if len(aus) != frames {
			t.Errorf("rung %d: %d access units, want %d", i, len(aus), frames)
		}
		if len(aus) == 0 {
			t.Fatalf("rung %d: nothing encoded", i)
		}
		if !aus[0].Keyframe {
			t.Errorf("rung %d: the first access unit is not a keyframe", i)
		}
		var sps h264.SPS
		for _, n := range aus[0].Payload {
			if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
				if err := sps.Unmarshal(n); err != nil {
					t.Fatalf("rung %d: SPS: %v", i, err)
				}
			}
		}
		if r := o.rungs[i]; sps.Width() != r.Width || sps.Height() != r.Height {
			t.Errorf("rung %d: SPS says %dx%d, Start said %dx%d", i, sps.Width(), sps.Height(), r.Width, r.Height)
		}
		var k []int64
		last := aus[0].PTS
		for j, au := range aus {
			if j > 0 && au.DTS <= aus[j-1].DTS {
				t.Fatalf("rung %d: DTS %d after %d", i, au.DTS, aus[j-1].DTS)
			}
			if au.PTS < au.DTS {
				t.Fatalf("rung %d: PTS %d before DTS %d", i, au.PTS, au.DTS)
			}
			if au.Keyframe {
				k = append(k, au.PTS)
			}
			last = max(last, au.PTS)
		}
		first := slices.MinFunc(aus, func(a, b *media.AccessUnit) int { return int(a.PTS - b.PTS) }).PTS
		if first < 0 || first > 4000 { // the source may start a frame in
			t.Errorf("rung %d: the first picture at %d ticks, want near 0", i, first)
		}
		if end := media.Duration(last, 90000); end < dur-200*time.Millisecond || end > dur {
			t.Errorf("rung %d: the last picture at %s of %s", i, end, dur)
		}
		for j := range k {
			if k[j]-k[0] != int64(j)*grid {
				t.Errorf("rung %d: keyframes at %v, want every %d ticks", i, k, grid)
				break
			}
		}
		keys = append(keys, k)
	}
	for i := 1; i < len(keys); i++ {
		if !slices.Equal(keys[0], keys[i]) {
			t.Errorf("keyframes differ: rung 0 %v, rung %d %v", keys[0], i, keys[i])
		}
	}
	return keys[0]
}

// checkAudio checks the AAC track and access units: one frame each, 1024
// samples apart from the priming frame at -1024 on, covering dur.
func checkAudio(t *testing.T, o *fileOut, dur time.Duration) {
	t.Helper()
	tr := o.audioT
	if tr == nil {
		t.Fatal("Start got no audio track")
	}
	if tr.Codec != media.CodecAAC || tr.ClockRate != 48000 || tr.SampleRate != 48000 || tr.Channels != 2 {
		t.Fatalf("audio track %+v", *tr)
	}
	var asc mpeg4audio.AudioSpecificConfig
	if err := asc.Unmarshal(tr.AudioConfig); err != nil {
		t.Fatalf("AudioSpecificConfig: %v", err)
	}
	if asc.Type != mpeg4audio.ObjectTypeAACLC || asc.SampleRate != 48000 || asc.ChannelConfig != 2 {
		t.Fatalf("AudioSpecificConfig %+v", asc)
	}
	if len(o.audio) == 0 {
		t.Fatal("no audio")
	}
	for i, au := range o.audio {
		if len(au.Payload) != 1 || len(au.Payload[0]) == 0 || !au.Keyframe || au.PTS != au.DTS {
			t.Fatalf("audio access unit %d: %+v", i, au)
		}
		if i > 0 && au.PTS-o.audio[i-1].PTS != 1024 {
			t.Fatalf("audio access unit %d at %d, the one before at %d", i, au.PTS, o.audio[i-1].PTS)
		}
	}
	if first := o.audio[0].PTS; first != -1024 {
		t.Errorf("the first AAC frame (the priming) at %d, want -1024", first)
	}
	end := media.Duration(o.audio[len(o.audio)-1].PTS, 48000)
	if end < dur-100*time.Millisecond || end > dur+50*time.Millisecond {
		t.Errorf("the audio ends at %s, want about %s", end, dur)
	}
	if peak := decodeAAC(t, tr, o.audio); peak < -30 {
		t.Errorf("the audio is silent (peak %.1f dB)", peak)
	}
}

// decodeAAC writes access units to an ADTS file, has the ffmpeg CLI decode
// it and returns the peak level in dBFS.
func decodeAAC(t *testing.T, tr *media.Track, aus []*media.AccessUnit) float64 {
	t.Helper()
	var asc mpeg4audio.AudioSpecificConfig
	if err := asc.Unmarshal(tr.AudioConfig); err != nil {
		t.Fatal(err)
	}
	var pkts mpeg4audio.ADTSPackets
	for _, au := range aus {
		pkts = append(pkts, &mpeg4audio.ADTSPacket{Type: asc.Type, SampleRate: asc.SampleRate,
			ChannelConfig: asc.ChannelConfig, AU: au.Payload[0]})
	}
	b, err := pkts.Marshal()
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(t.TempDir(), "audio.aac")
	if err := os.WriteFile(path, b, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("ffmpeg", "-nostdin", "-hide_banner", "-i", path, "-af", "volumedetect", "-f", "null", "-").CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg decoding the AAC: %v\n%s", err, out)
	}
	if !strings.Contains(string(out), "48000 Hz, stereo") {
		t.Errorf("ffmpeg reads the AAC as:\n%s", out)
	}
	_, v, ok := strings.Cut(string(out), "max_volume: ")
	v, _, _ = strings.Cut(v, " dB")
	db, err := strconv.ParseFloat(v, 64)
	if !ok || err != nil {
		t.Fatalf("no max_volume in\n%s", out)
	}
	return db
}

func checkThumbs(t *testing.T, o *fileOut, n int, w, h int) {
	t.Helper()
	if len(o.thumbs) < n-1 || len(o.thumbs) > n {
		t.Fatalf("%d thumbnails at %v, want %d", len(o.thumbs), o.thumbAt, n)
	}
	for i, img := range o.thumbs {
		if o.thumbAt[i] != time.Duration(i)*time.Second {
			t.Errorf("thumbnail %d at %s", i, o.thumbAt[i])
		}
		checkImage(t, img, w, h)
	}
}

// checkImage checks an image's size and that it is a picture, not a flat
// color, and opaque.
func checkImage(t *testing.T, img *image.RGBA, w, h int) {
	t.Helper()
	if b := img.Bounds(); b.Dx() != w || b.Dy() != h || img.Stride != 4*w || len(img.Pix) != 4*w*h {
		t.Fatalf("image %v stride %d, want %dx%d", img.Bounds(), img.Stride, w, h)
	}
	colors := map[[3]uint8]bool{}
	for y := range h {
		for x := range w {
			c := img.RGBAAt(x, y)
			if c.A != 255 {
				t.Fatalf("pixel %d,%d alpha %d", x, y, c.A)
			}
			colors[[3]uint8{c.R &^ 15, c.G &^ 15, c.B &^ 15}] = true
		}
	}
	if len(colors) < 8 {
		t.Fatalf("image has %d colors: not a picture", len(colors))
	}
	// The last row is as rich as the first: no line padding was copied.
	row := func(y int) int {
		m := map[[3]uint8]bool{}
		for x := range w {
			c := img.RGBAAt(x, y)
			m[[3]uint8{c.R &^ 15, c.G &^ 15, c.B &^ 15}] = true
		}
		return len(m)
	}
	if row(h-1) < 2 || row(h/2) < 2 {
		t.Fatalf("rows look flat: %d and %d colors", row(h/2), row(h-1))
	}
}

func TestTranscodeFileMP4(t *testing.T) {
	t.Parallel()
	checkTranscodeFileMP4(t, fileConfig(twoRungs), BackendSoftware)
}

// The same file decoded by NVDEC and scaled by scale_cuda (encoded by NVENC
// where the GPU has it): same frames, keyframes, audio, thumbnails and
// poster (made from pictures downloaded from the GPU).
func TestGPUTranscodeFileMP4(t *testing.T) {
	gpus := needGPU(t)
	cfg := fileConfig(twoRungs)
	cfg.GPU = gpus[0]
	want := BackendSoftware
	if gpus[0].NVENC {
		cfg.Backend, want = BackendNVENC, BackendNVENC
	}
	if res := checkTranscodeFileMP4(t, cfg, want); !res.OnGPU {
		t.Fatalf("result %+v: the file was not decoded and scaled on the GPU", res)
	}
}

func checkTranscodeFileMP4(t *testing.T, cfg FileConfig, backend string) FileResult {
	t.Helper()
	src := mp4Clip(t)
	o, res := transcode(t, src, cfg)
	if o.starts != 1 || o.calls[0] != "start" {
		t.Fatalf("calls %v: Start must come once, first", o.calls)
	}
	want := []Rung{{Name: "240p", Width: 320, Height: 240, Bitrate: 400_000}, {Name: "144p", Width: 192, Height: 144, Bitrate: 150_000}}
	if !slices.Equal(o.rungs, want) {
		t.Fatalf("rungs %+v, want %+v", o.rungs, want)
	}
	keys := checkVideo(t, o, 120, 4*time.Second, 180000)
	if !slices.Equal(keys, []int64{0, 180000}) {
		t.Errorf("keyframes at %v, want 0 and 2 s", keys)
	}
	checkAudio(t, o, 4*time.Second)
	checkThumbs(t, o, 4, 160, 120)
	if len(o.posters) != 1 {
		t.Fatalf("%d posters", len(o.posters))
	}
	checkImage(t, o.posters[0], 320, 240) // never upscaled
	if res.Frames != 120 || res.Backend != backend || res.Duration < 3900*time.Millisecond || res.Duration > 4100*time.Millisecond {
		t.Errorf("result %+v", res)
	}
	if len(o.progress) == 0 || o.progress[len(o.progress)-1] != res.Duration {
		t.Errorf("progress %v, want it to end with %s", o.progress, res.Duration)
	}
	return res
}

// Other containers and codecs: VP9 + Opus in WebM, MPEG-4 part 2 + mono
// 44.1 kHz MP3 in Matroska (resampled and upmixed).
func TestTranscodeFileOtherCodecs(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name, file, vcodec, acodec string
		args                       []string
	}{
		{"webm", "clip.webm", "vp9", "opus", args(videoSrc("320x240", "25"), audioSrc("48000"), []string{"-t", "2", "-ac", "2",
			"-c:v", "libvpx-vp9", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "300k", "-c:a", "libopus"})},
		{"mkv", "clip.mkv", "mpeg4", "mp3", args(videoSrc("320x240", "25"), audioSrc("44100"), []string{"-t", "2",
			"-c:v", "mpeg4", "-q:v", "5", "-c:a", "libmp3lame", "-ac", "1"})},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			src := makeClip(t, c.file, c.args...)
			info, err := ProbeFile(src)
			if err != nil {
				t.Fatal(err)
			}
			if info.VideoCodec != c.vcodec || info.AudioCodec != c.acodec || info.Width != 320 || info.Height != 240 || info.FrameRate != 25 {
				t.Fatalf("ProbeFile: %+v", info)
			}
			cfg := fileConfig(twoRungs)
			cfg.KeyframeInterval = time.Second
			cfg.Preset = "veryfast" // with B-frames
			o, res := transcode(t, src, cfg)
			checkVideo(t, o, 50, 2*time.Second, 90000)
			if res.Frames != 50 {
				t.Errorf("%d frames", res.Frames)
			}
			if len(o.audio) == 0 || o.audioT == nil {
				t.Fatal("no audio")
			}
			end := media.Duration(o.audio[len(o.audio)-1].PTS+1024, 48000)
			if end < 1900*time.Millisecond || end > 2150*time.Millisecond {
				t.Errorf("the audio ends at %s, want about 2 s", end)
			}
			if peak := decodeAAC(t, o.audioT, o.audio); peak < -30 {
				t.Errorf("the audio is silent (peak %.1f dB)", peak)
			}
			checkThumbs(t, o, 2, 160, 120)
		})
	}
}

func TestTranscodeFileVideoOnly(t *testing.T) {
	t.Parallel()
	src := makeClip(t, "noaudio.mp4", args(videoSrc("256x144", "30"), []string{"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"})...)
	cfg := fileConfig([]Rung{{Name: "144p", Height: 144, Bitrate: 200_000}})
	cfg.PosterAt = 10 * time.Second // past the end: the first frame
	cfg.PosterMaxWidth = 100
	o, res := transcode(t, src, cfg)
	if o.starts != 1 || o.audioT != nil || len(o.audio) != 0 {
		t.Fatalf("Start calls %d, audio track %v, %d audio frames", o.starts, o.audioT, len(o.audio))
	}
	checkVideo(t, o, 30, time.Second, 180000)
	if len(o.posters) != 1 {
		t.Fatalf("%d posters", len(o.posters))
	}
	checkImage(t, o.posters[0], 100, 56)
	if res.Frames != 30 {
		t.Errorf("%d frames", res.Frames)
	}
}

// Two files joined byte for byte: the picture size, the audio format and
// the timestamps change midway (they start over). The encoders restart,
// the output's timeline goes on, DTS keeps increasing in every rung.
func TestTranscodeFileChangesMidway(t *testing.T) {
	t.Parallel()
	a := makeClip(t, "a.ts", args(videoSrc("320x240", "30"), audioSrc("44100"), []string{"-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "1"})...)
	b := makeClip(t, "b.ts", args(videoSrc("256x144", "30"), audioSrc("48000"), []string{"-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-ac", "2"})...)
	ab, err := os.ReadFile(a)
	if err != nil {
		t.Fatal(err)
	}
	bb, err := os.ReadFile(b)
	if err != nil {
		t.Fatal(err)
	}
	joined := filepath.Join(t.TempDir(), "joined.ts")
	if err := os.WriteFile(joined, append(ab, bb...), 0o644); err != nil {
		t.Fatal(err)
	}
	cfg := fileConfig([]Rung{{Name: "144p", Height: 144, Bitrate: 200_000}})
	cfg.KeyframeInterval = time.Second
	cfg.Preset = "veryfast"
	o, res := transcode(t, joined, cfg)
	if o.starts != 1 || res.Frames < 115 {
		t.Fatalf("%d Start calls, %d frames", o.starts, res.Frames)
	}
	var sizes []string
	aus := o.video[0]
	for j, au := range aus {
		if j > 0 && au.DTS <= aus[j-1].DTS {
			t.Fatalf("DTS %d after %d", au.DTS, aus[j-1].DTS)
		}
		if au.PTS < au.DTS {
			t.Fatalf("PTS %d before DTS %d", au.PTS, au.DTS)
		}
		for _, n := range au.Payload {
			var sps h264.SPS
			if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS && sps.Unmarshal(n) == nil {
				if s := strconv.Itoa(sps.Width()) + "x" + strconv.Itoa(sps.Height()); len(sizes) == 0 || sizes[len(sizes)-1] != s {
					sizes = append(sizes, s)
				}
			}
		}
	}
	if strings.Join(sizes, ",") != "192x144,256x144" {
		t.Errorf("sizes %v", sizes)
	}
	if end := media.Duration(slices.MaxFunc(aus, func(a, b *media.AccessUnit) int { return int(a.PTS - b.PTS) }).PTS, 90000); end < 3800*time.Millisecond || end > 4100*time.Millisecond {
		t.Errorf("the video ends at %s, want about 4 s", end)
	}
	for i := 1; i < len(o.audio); i++ {
		if o.audio[i].PTS-o.audio[i-1].PTS != 1024 {
			t.Fatalf("audio at %d after %d", o.audio[i].PTS, o.audio[i-1].PTS)
		}
	}
	if end := media.Duration(o.audio[len(o.audio)-1].PTS, 48000); end < 3800*time.Millisecond || end > 4200*time.Millisecond {
		t.Errorf("the audio ends at %s, want about 4 s", end)
	}
	if len(o.thumbs) != 4 {
		t.Fatalf("%d thumbnails", len(o.thumbs))
	}
	for _, img := range o.thumbs {
		checkImage(t, img, 160, 120) // the first picture's shape throughout
	}
}

func TestTranscodeFileStartError(t *testing.T) {
	t.Parallel()
	src := makeClip(t, "clip.mp4", args(videoSrc("160x120", "30"), []string{"-t", "1", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p"})...)
	boom := errors.New("boom")
	o := &fileOut{startErr: boom}
	_, err := TranscodeFile(t.Context(), src, fileConfig([]Rung{{Name: "120p", Height: 120, Bitrate: 100_000}}), o.sink())
	if !errors.Is(err, boom) {
		t.Fatalf("err %v, want Start's", err)
	}
	if slices.Contains(o.calls, "video") {
		t.Fatal("Video called after Start failed")
	}
}

// A file damaged midway is transcoded as far as it can be decoded.
func TestTranscodeFileDamagedMidway(t *testing.T) {
	t.Parallel()
	src := makeClip(t, "clip.mp4", args(videoSrc("320x240", "30"), audioSrc("48000"), []string{"-t", "4",
		"-c:v", "libx264", "-preset", "ultrafast", "-g", "30", "-pix_fmt", "yuv420p", "-c:a", "aac", "-movflags", "+faststart"})...)
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// Garbage over a tenth of the file at 40%, and the last third cut off.
	for i := len(b) * 4 / 10; i < len(b)/2; i++ {
		b[i] = byte(i * 7)
	}
	b = b[:len(b)*2/3]
	damaged := filepath.Join(t.TempDir(), "damaged.mp4")
	if err := os.WriteFile(damaged, b, 0o644); err != nil {
		t.Fatal(err)
	}
	o, res := transcode(t, damaged, fileConfig(twoRungs))
	if res.Frames < 30 || res.Frames > 100 {
		t.Fatalf("%d frames decoded from a file damaged midway", res.Frames)
	}
	for i, aus := range o.video {
		if len(aus) < 30 || !aus[0].Keyframe {
			t.Fatalf("rung %d: %d access units", i, len(aus))
		}
		for j := 1; j < len(aus); j++ {
			if aus[j].DTS <= aus[j-1].DTS {
				t.Fatalf("rung %d: DTS %d after %d", i, aus[j].DTS, aus[j-1].DTS)
			}
		}
	}
}

func TestTranscodeFileCancelled(t *testing.T) {
	t.Parallel()
	src := mp4Clip(t)
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, err := TranscodeFile(ctx, src, fileConfig(twoRungs), FileSink{}); !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	// Cancelled midway: it stops soon, without emitting much more.
	ctx, cancel = context.WithCancel(t.Context())
	defer cancel()
	o := &fileOut{}
	n := 0
	o.onVideo = func() {
		if n++; n == 5 {
			cancel()
		}
	}
	_, err := TranscodeFile(ctx, src, fileConfig(twoRungs), o.sink())
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err %v, want context.Canceled", err)
	}
	if n > 20 {
		t.Fatalf("%d access units after the cancellation", n-5)
	}
}

func TestTranscodeFileBadConfig(t *testing.T) {
	t.Parallel()
	if _, err := TranscodeFile(t.Context(), "/nonexistent", FileConfig{Config: Config{KeyframeInterval: time.Second}}, FileSink{}); err == nil || errors.Is(err, ErrNotVideo) {
		t.Fatalf("empty ladder: %v", err)
	}
}

func TestProbeFile(t *testing.T) {
	t.Parallel()
	src := mp4Clip(t)
	info, err := ProbeFile(src)
	if err != nil {
		t.Fatal(err)
	}
	if info.VideoCodec != "h264" || info.AudioCodec != "aac" || info.Width != 320 || info.Height != 240 ||
		info.FrameRate != 30 || !strings.Contains(info.Container, "mp4") ||
		math.Abs(info.Duration.Seconds()-4) > 0.2 {
		t.Fatalf("ProbeFile: %+v", info)
	}

	dir := t.TempDir()
	text := filepath.Join(dir, "notes.txt")
	if err := os.WriteFile(text, []byte(strings.Repeat("Dear diary, today I uploaded a text file.\n", 50)), 0o644); err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	truncated := filepath.Join(dir, "truncated.mp4")
	if err := os.WriteFile(truncated, b[:len(b)/2], 0o644); err != nil {
		t.Fatal(err)
	}
	// Cut after its index (moov first, as phones and editors write it).
	fast := makeClip(t, "fast.mp4", args(videoSrc("320x240", "30"), []string{"-t", "2",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"})...)
	fb, err := os.ReadFile(fast)
	if err != nil {
		t.Fatal(err)
	}
	cutFast := filepath.Join(dir, "cut-faststart.mp4")
	if err := os.WriteFile(cutFast, fb[:len(fb)*2/3], 0o644); err != nil {
		t.Fatal(err)
	}
	empty := filepath.Join(dir, "empty.mp4")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	playlist := filepath.Join(dir, "list.m3u8")
	if err := os.WriteFile(playlist, []byte("#EXTM3U\n#EXT-X-TARGETDURATION:4\n#EXTINF:4,\n"+src+"\n#EXT-X-ENDLIST\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	m4a := makeClip(t, "audio.m4a", args(audioSrc("44100"), []string{"-t", "1", "-c:a", "aac"})...)
	mp3 := makeClip(t, "audio.mp3", args(audioSrc("44100"), []string{"-t", "1", "-c:a", "libmp3lame"})...)
	jpeg := makeClip(t, "still.jpg", args(videoSrc("64x64", "1"), []string{"-frames:v", "1"})...)
	for _, c := range []struct{ path, want string }{
		{text, "not a video file: the format is not recognised"},
		{empty, "not a video file: the format is not recognised"},
		{m4a, "not a video file: no video stream found"},
		{mp3, "not a video file: no video stream found"},
		{truncated, "not a video file: the file is truncated or damaged"},
		{cutFast, "not a video file: the file is truncated ("},
		{playlist, "not a video file: hls files are not accepted"},
		{jpeg, "not a video file: the file is a still image"},
	} {
		_, err := ProbeFile(c.path)
		if !errors.Is(err, ErrNotVideo) || !strings.HasPrefix(err.Error(), c.want) {
			t.Errorf("ProbeFile(%s): %v, want %q", filepath.Base(c.path), err, c.want)
		}
		// TranscodeFile says the same.
		if c.path == text || c.path == m4a {
			_, terr := TranscodeFile(t.Context(), c.path, fileConfig(twoRungs), FileSink{})
			if !errors.Is(terr, ErrNotVideo) || terr.Error() != err.Error() {
				t.Errorf("TranscodeFile(%s): %v", filepath.Base(c.path), terr)
			}
		}
	}
	if _, err := ProbeFile(filepath.Join(dir, "missing.mp4")); err == nil || errors.Is(err, ErrNotVideo) {
		t.Errorf("a missing file: %v, want an error that is not ErrNotVideo", err)
	}
}

// A video stream whose packets are garbage cannot be decoded.
func TestProbeFileUndecodable(t *testing.T) {
	t.Parallel()
	src := makeClip(t, "clip.mp4", args(videoSrc("320x240", "30"), []string{"-t", "1",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-movflags", "+faststart"})...)
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	// The index (moov) first, then the pictures (mdat): scramble those.
	i := strings.Index(string(b), "mdat")
	if i < 0 {
		t.Fatal("no mdat box")
	}
	for j := i + 4; j < len(b); j++ {
		b[j] = byte(j*31+7) | 0x80
	}
	bad := filepath.Join(t.TempDir(), "bad.mp4")
	if err := os.WriteFile(bad, b, 0o644); err != nil {
		t.Fatal(err)
	}
	const want = "not a video file: the h264 video cannot be decoded"
	_, err = ProbeFile(bad)
	if !errors.Is(err, ErrNotVideo) || err.Error() != want {
		t.Fatalf("ProbeFile: %v, want %q", err, want)
	}
	_, err = TranscodeFile(t.Context(), bad, fileConfig(twoRungs), FileSink{})
	if !errors.Is(err, ErrNotVideo) || err.Error() != want {
		t.Fatalf("TranscodeFile: %v, want %q", err, want)
	}
}

// TranscodeFile frees every C object it allocates, whether it runs to the
// end or is cancelled midway: running it over and over does not make the
// process grow. It runs in a child process with one malloc arena: glibc
// otherwise gives every thread that allocates (x264's, the decoders') an
// arena of its own, whose fragmentation grows the RSS for dozens of runs,
// leak or not, hiding leaks of a few hundred KiB a run. Not parallel, so
// that no other test's memory is counted.
func TestTranscodeFileDoesNotLeak(t *testing.T) {
	if os.Getenv("SHOAL_TEST_LEAK_CHILD") != "1" {
		cmd := exec.Command(os.Args[0], "-test.run=^TestTranscodeFileDoesNotLeak$", "-test.v")
		cmd.Env = append(os.Environ(), "SHOAL_TEST_LEAK_CHILD=1", "MALLOC_ARENA_MAX=1")
		out, err := cmd.CombinedOutput()
		if err != nil {
			t.Fatalf("the child process: %v\n%s", err, out)
		}
		if _, s, ok := strings.Cut(string(out), "RSS "); ok {
			s, _, _ = strings.Cut(s, "\n")
			t.Log("RSS " + s)
		}
		return
	}
	src := makeClip(t, "clip.mp4", args(videoSrc("320x240", "30"), audioSrc("44100"), []string{"-t", "1",
		"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"})...)
	cfg := fileConfig(twoRungs)
	cfg.ThumbnailInterval = 100 * time.Millisecond
	cfg.PosterAt = 500 * time.Millisecond
	const warmup, iterations = 10, 60
	var base, baseHeap int64
	for i := range iterations {
		ctx, cancel := context.WithCancel(t.Context())
		o := &fileOut{}
		n := 0
		if i%2 == 1 { // abandoned midway, encoders and poster pending
			o.onVideo = func() {
				if n++; n == 10 {
					cancel()
				}
			}
		}
		res, err := TranscodeFile(ctx, src, cfg, o.sink())
		cancel()
		if i%2 == 1 {
			if !errors.Is(err, context.Canceled) {
				t.Fatalf("run %d: %v, want context.Canceled", i, err)
			}
		} else if err != nil || res.Frames != 30 || len(o.thumbs) != 10 || len(o.posters) != 1 {
			t.Fatalf("run %d: %+v, %d thumbnails, %d posters, %v", i, res, len(o.thumbs), len(o.posters), err)
		}
		runtime.GC()
		debug.FreeOSMemory()
		heap, rss := CHeapInUse(), rssBytes(t)
		if i == warmup-1 {
			baseHeap, base = heap, rss
		}
		if i == iterations-1 {
			t.Logf("C heap %+.2f MiB, RSS %+.1f MiB over %d runs after warm-up", float64(heap-baseHeap)/(1<<20), float64(rss-base)/(1<<20), iterations-warmup)
			// The C heap is the measure (see TestPipelineDoesNotLeak).
			const bound = 4 << 20
			if grew := heap - baseHeap; grew > bound {
				t.Fatalf("the C heap grew by %.1f MiB over %d runs after warm-up (bound %d MiB): C memory leaks", float64(grew)/(1<<20), iterations-warmup, bound>>20)
			}
		}
	}
}

func FuzzProbeFile(f *testing.F) {
	// Seeds: testdata/fuzz/FuzzProbeFile (tiny MP4, WebM, MPEG-TS, M4A
	// files and a text file).
	f.Add([]byte("not a video"))
	f.Fuzz(func(t *testing.T, data []byte) {
		path := filepath.Join(t.TempDir(), "upload")
		if err := os.WriteFile(path, data, 0o644); err != nil {
			t.Fatal(err)
		}
		info, err := ProbeFile(path)
		if err != nil {
			return
		}
		if info.Width <= 0 || info.Height <= 0 || info.VideoCodec == "" {
			t.Fatalf("ProbeFile accepted %+v", info)
		}
	})
}
