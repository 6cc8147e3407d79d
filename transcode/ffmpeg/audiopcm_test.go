package ffmpeg

import (
	"errors"
	"math"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// DecodeAudioWindows gives the sound TranscodeFile encodes, on its VOD
// timeline (zero at the first video frame, here half a second after the
// audio starts): each window of it is, sample for sample, what
// DecodeAAC makes of TranscodeFile's AAC at the same instants. A file
// without audio, or whose audio does not decode, has none.
func TestDecodeAudioWindows(t *testing.T) {
	t.Parallel()
	clip := makeClip(t, "late.mkv", args([]string{"-itsoffset", "0.5"}, videoSrc("320x240", "30"),
		[]string{"-f", "lavfi", "-i", "anoisesrc=color=pink:sample_rate=44100:amplitude=0.5:seed=1"},
		[]string{"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac"})...)
	o, _ := transcode(t, clip, fileConfig([]Rung{{Name: "240p", Height: 240, Bitrate: 400_000}}))
	if o.audioT == nil || len(o.audio) == 0 || len(o.video[0]) == 0 {
		t.Fatal("no audio or video transcoded")
	}
	origin := o.video[0][0].PTS // the first frame's instant, 90 kHz
	for _, au := range o.video[0] {
		origin = min(origin, au.PTS)
	}
	if origin < 40000 || origin > 54000 {
		t.Fatalf("the video starts at %d (90 kHz), want about half a second", origin)
	}
	frames := make([][]byte, len(o.audio))
	for i, au := range o.audio {
		frames[i] = au.Payload[0]
	}
	coded, err := DecodeAAC(o.audioT.AudioConfig, frames, 48000)
	if err != nil {
		t.Fatal(err)
	}
	if want := len(frames) * 1024; len(coded[0]) != want || len(coded[1]) != want {
		t.Fatalf("DecodeAAC gave %d and %d samples of %d frames, want %d", len(coded[0]), len(coded[1]), len(frames), want)
	}
	first := o.audio[0].PTS // the priming frame's, 48 kHz
	windows := []AudioWindow{{From: 2 * time.Second, To: 3 * time.Second}, {From: 500 * time.Millisecond, To: 1500 * time.Millisecond}}
	got := 0
	decodes, err := DecodeAudioWindows(t.Context(), clip, 48000, windows, func(i int, pcm [2][]float32) error {
		got++
		w := windows[i]
		if len(pcm[0]) != 48000 || len(pcm[1]) != 48000 {
			t.Errorf("window %d: %d and %d samples, want 48000", i, len(pcm[0]), len(pcm[1]))
			return nil
		}
		// Where TranscodeFile's AAC has the window's first sample.
		at := int(media.Ticks(w.From, 48000) + origin*48000/90000 - first)
		best, bestLag := math.Inf(-1), 0
		for lag := -64; lag <= 64; lag++ {
			if c := correlate(pcm, coded, at+lag); c > best {
				best, bestLag = c, lag
			}
		}
		t.Logf("window %d [%s, %s): correlation %.4f at lag %d", i, w.From, w.To, best, bestLag)
		if best < 0.95 || bestLag != 0 {
			t.Errorf("window %d: TranscodeFile's sound correlates %.4f at %d samples from where it should", i, best, bestLag)
		}
		return nil
	})
	if err != nil || !decodes || got != 2 {
		t.Fatalf("DecodeAudioWindows: %d windows, decodes %v, %v", got, decodes, err)
	}

	silent := makeClip(t, "video.mp4", args(videoSrc("320x240", "30"), []string{"-t", "1", "-c:v", "libx264", "-preset", "ultrafast"})...)
	if ok, err := DecodeAudioWindows(t.Context(), silent, 48000, nil, nil); ok || err != nil {
		t.Errorf("a file without audio: decodes %v, %v", ok, err)
	}
	garbled := makeClip(t, "garbled.mkv", "-i", clip, "-c", "copy", "-bsf:a", "noise=amount=1")
	if ok, err := DecodeAudioWindows(t.Context(), garbled, 48000, nil, nil); ok || err != nil {
		t.Errorf("a file whose audio does not decode: decodes %v, %v", ok, err)
	}
	if ok, err := DecodeAudioWindows(t.Context(), clip, 48000, nil, nil); !ok || err != nil {
		t.Errorf("a file with audio: decodes %v, %v", ok, err)
	}

	// Frames that are not AAC do not decode.
	junk := [][]byte{{0xff, 0xff, 0xff, 0xff}, {0x00}, make([]byte, 300)}
	if _, err := DecodeAAC(o.audioT.AudioConfig, junk, 48000); !errors.Is(err, ErrBadAudio) {
		t.Errorf("junk frames: %v, want ErrBadAudio", err)
	}
	if _, err := DecodeAAC([]byte{0xf8, 0x00}, frames[:4], 48000); !errors.Is(err, ErrBadAudio) {
		t.Errorf("a configuration that is not AAC's: %v, want ErrBadAudio", err)
	}
}

// correlate is the normalized correlation of a with b from offset on.
func correlate(a, b [2][]float32, offset int) float64 {
	var ab, aa, bb float64
	for c := range 2 {
		for i, x := range a[c] {
			y := 0.0
			if k := offset + i; k >= 0 && k < len(b[c]) {
				y = float64(b[c][k])
			}
			ab += float64(x) * y
			aa += float64(x) * float64(x)
			bb += y * y
		}
	}
	if aa == 0 || bb == 0 {
		return 0
	}
	return ab / math.Sqrt(aa*bb)
}

// DecodeAAC takes a worker's frames (shaped as AAC-LC by
// verify.ParseAudioSegment, their contents anything): whatever they hold,
// it decodes them or refuses them with ErrBadAudio, never crashes.
func FuzzDecodeAAC(f *testing.F) {
	f.Add([]byte{0x21, 0x10, 0x04, 0x60, 0x8c, 0x1c}, uint8(3))
	f.Add([]byte{0xff, 0xff, 0xff}, uint8(1))
	f.Add(make([]byte, 64), uint8(8))
	asc := []byte{0x11, 0x90} // AAC-LC, 48 kHz, stereo
	f.Fuzz(func(t *testing.T, data []byte, n uint8) {
		// data cut into n frames.
		n = max(n%16, 1)
		var frames [][]byte
		size := len(data)/int(n) + 1
		for len(data) > 0 {
			k := min(size, len(data))
			frames, data = append(frames, data[:k]), data[k:]
		}
		pcm, err := DecodeAAC(asc, frames, 48000)
		if err != nil && !errors.Is(err, ErrBadAudio) {
			t.Fatalf("%d frames: %v", len(frames), err)
		}
		if err == nil && len(pcm[0]) != len(pcm[1]) {
			t.Fatalf("%d and %d samples", len(pcm[0]), len(pcm[1]))
		}
	})
}
