package verify

import (
	"fmt"
	"math"
	"math/rand/v2"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/packager"
)

// CompareAudio finds the lag and the correlation of the same sound, is
// blind to its level (which it reports), finds nothing in another sound,
// and over a band ignores what is above it.
func TestCompareAudio(t *testing.T) {
	t.Parallel()
	r := rand.New(rand.NewPCG(1, 2))
	noise := func(n int, amp float64) [2][]float32 {
		var s [2][]float32
		for c := range s {
			s[c] = make([]float32, n)
			for i := range s[c] {
				s[c][i] = float32(amp * (2*r.Float64() - 1))
			}
		}
		return s
	}
	const n, lag = 8000, 240
	src := noise(n+2*lag, 0.5)
	window := [2][]float32{src[0][lag : lag+n], src[1][lag : lag+n]}
	// The coded audio 37 samples late and at half the level.
	late := [2][]float32{make([]float32, len(src[0])), make([]float32, len(src[0]))}
	for c := range late {
		for i := 37; i < len(late[c]); i++ {
			late[c][i] = src[c][i-37] / 2
		}
	}
	m := CompareAudio(window, late, lag, lag, 0.5)
	if m.Lag != 37 || m.Correlation < 0.999 || math.Abs(m.Level-m.SourceLevel+6.02) > 0.1 {
		t.Errorf("the same sound, late and quieter: %+v", m)
	}
	if m := CompareAudio(window, noise(n+2*lag, 0.5), lag, lag, 0.5); m.Correlation > 0.1 {
		t.Errorf("another sound: %+v", m)
	}
	// Beyond the lags searched it is another sound.
	if m := CompareAudio(window, late, lag, 20, 0.5); m.Correlation > 0.1 {
		t.Errorf("the same sound 37 samples late, 20 searched: %+v", m)
	}
	// Silence on either side correlates with nothing.
	zero := [2][]float32{make([]float32, n+2*lag), make([]float32, n+2*lag)}
	if m := CompareAudio(window, zero, lag, lag, 0.5); m.Correlation != 0 || m.Level != -200 {
		t.Errorf("silence: %+v", m)
	}
	// Noise added in the top sixteenth of the band counts in the whole
	// band, not in its bottom tenth: noise smoothed over 8 samples (below
	// a sixteenth of the rate), its every other sample negated.
	rough := noise(len(src[0])+8, 0.5)
	var hiss [2][]float32
	for c := range hiss {
		hiss[c] = make([]float32, len(src[0]))
		for i := range hiss[c] {
			var sum float32
			for _, v := range rough[c][i : i+8] {
				sum += v
			}
			if i%2 == 1 {
				sum = -sum
			}
			hiss[c][i] = src[c][i] + sum/4
		}
	}
	m = CompareAudio(window, hiss, lag, lag, 0.05)
	if m.Lag != 0 || m.Correlation < 0.97 || m.FullCorrelation > 0.9 {
		t.Errorf("the same sound with hiss above the band: %+v", m)
	}
}

// audioSource is a 6 s 320x180 clip with the lavfi audio source audio
// (48 kHz AAC), its video starting videoAt after the audio (Matroska keeps
// the gap; without one, MP4).
func audioSource(t testing.TB, audio string, videoAt time.Duration) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.mp4")
	var offset []string
	if videoAt > 0 {
		path, offset = strings.TrimSuffix(path, ".mp4")+".mkv", []string{"-itsoffset", videoAt.String()}
	}
	args := append([]string{"-nostdin", "-v", "error", "-y"}, offset...)
	if err := sh("ffmpeg", append(args, "-f", "lavfi", "-i", "testsrc2=size=320x180:rate=30", "-f", "lavfi", "-i", audio,
		"-t", "6", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", "-ar", "48000", path)...); err != nil {
		t.Fatal(err)
	}
	return path
}

// audioRequest checks the segments of rendition r but the last (the ffmpeg
// CLI's last frame is shorter than AAC's: ParseAudioSegment refuses it)
// against src, the first video frame shown at videoStart.
func audioRequest(src string, r rendition, videoStart time.Duration) AudioRequest {
	req := AudioRequest{Source: src, Segments: len(r.segs), VideoStart: videoStart, Read: func(i int) (Segment, error) {
		return Segment{Init: r.init, Media: r.segs[i].data}, nil
	}}
	for i := range len(r.segs) - 1 {
		req.Picks = append(req.Picks, i)
	}
	return req
}

// The sound of Shoal's own audio rendition (also of a source whose video
// starts late) and of other honest AAC encodes passes; another sound, the
// source's delayed, much quieter or silenced does not. A sound mixed in
// well under the source's passes (the figures are logged).
func TestCheckAudio(t *testing.T) {
	t.Parallel()
	const pink = "anoisesrc=color=pink:sample_rate=48000:amplitude=0.5:seed=7"
	src := audioSource(t, pink, 0)
	late := audioSource(t, pink, 700*time.Millisecond)
	ladder := media.Ladder{{Height: 180, Bitrate: 300_000}}
	// shoal is Shoal's audio rendition of src and when its video's first
	// frame is shown.
	shoal := func(src string) (rendition, time.Duration) {
		root := t.TempDir()
		if err := shoalVOD(src, root, ladder, packager.FormatFMP4); err != nil {
			t.Fatal(err)
		}
		v := readRendition(t, filepath.Join(root, videoID, "180p"))
		p, err := ParseSegment(Segment{Init: v.init, Media: v.segs[0].data})
		if err != nil {
			t.Fatal(err)
		}
		return readRendition(t, filepath.Join(root, videoID, "audio")), media.Duration(p.Presented(), 90000)
	}
	own, ownStart := shoal(src)
	lateOwn, lateStart := shoal(late)
	t.Logf("Shoal's video is shown from %s, %s with the video late", ownStart, lateStart)
	// made writes a copy of src's audio with the filter graph, through
	// WAV, then the ffmpeg CLI's fMP4 HLS with the encoder arguments.
	made := func(graph string, enc ...string) rendition {
		wav := filepath.Join(t.TempDir(), "a.wav")
		if err := sh("ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, "-f", "lavfi", "-i", "sine=frequency=660:sample_rate=48000",
			"-filter_complex", graph, "-map", "[a]", "-t", "6", wav); err != nil {
			t.Fatal(err)
		}
		return readRendition(t, cliAudioHLS(t, wav, enc...))
	}
	aac := []string{"-c:a", "aac", "-b:a", "128k", "-ar", "48000"}
	as := func(graph string) rendition { return made(graph, aac...) }
	cases := []struct {
		name  string
		src   string
		r     rendition
		start time.Duration // VideoStart
		pass  bool
		why   string // in the failure's reason
	}{
		{"shoal", src, own, ownStart, true, ""},
		{"shoal, the video 0.7 s late", late, lateOwn, lateStart, true, ""},
		{"ffmpeg aac 128k", src, as("[0:a]anull[a]"), 0, true, ""},
		{"ffmpeg aac 64k", src, made("[0:a]anull[a]", "-c:a", "aac", "-b:a", "64k", "-ar", "48000"), 0, true, ""},
		{"ffmpeg aac 96k at 44.1 kHz", src, made("[0:a]anull[a]", "-c:a", "aac", "-b:a", "96k", "-ar", "44100"), 0, true, ""},
		{"a tone mixed in 20 dB under", src, as("[1:a]volume=0.1[t];[0:a][t]amix=inputs=2:normalize=0[a]"), 0, true, ""},
		{"a tone mixed in 6 dB under", src, as("[1:a]volume=0.5[t];[0:a][t]amix=inputs=2:normalize=0[a]"), 0, false, "correlates"},
		{"a tone instead", src, as("[1:a]anull[a]"), 0, false, "correlates"},
		{"other noise", src, as("anoisesrc=color=pink:sample_rate=48000:amplitude=0.5:seed=8[a]"), 0, false, "correlates"},
		{"delayed 100 ms", src, as("[0:a]adelay=100:all=1[a]"), 0, false, "correlates"},
		{"12 dB quieter", src, as("[0:a]volume=0.25[a]"), 0, false, "level"},
		{"silenced", src, as("[0:a]volume=0[a]"), 0, false, "silent"},
	}
	for _, c := range cases {
		rep, err := CheckAudio(t.Context(), audioRequest(c.src, c.r, c.start))
		if err != nil {
			t.Fatalf("%s: %v", c.name, err)
		}
		var figs []string
		for _, w := range rep.Results {
			figs = append(figs, fmt.Sprintf("%.3f %+.1f dB (%d)", w.Match.Correlation, w.Match.Level-w.Match.SourceLevel, w.Match.Lag))
		}
		t.Logf("%-28s passed %-5v %s (%s)", c.name, rep.Passed, strings.Join(figs, ", "), rep.Elapsed.Round(time.Millisecond))
		if rep.Passed != c.pass || !c.pass && !strings.Contains(rep.Reason(), c.why) {
			t.Errorf("%s: passed %v (%s), want %v (%q)", c.name, rep.Passed, rep.Reason(), c.pass, c.why)
		}
		if !rep.SourceAudio {
			t.Errorf("%s: the source's audio does not decode", c.name)
		}
	}
	// Without picks, whether the source has audio.
	if rep, err := CheckAudio(t.Context(), AudioRequest{Source: src}); err != nil || !rep.SourceAudio || !rep.Passed {
		t.Errorf("the source's audio: %+v, %v", rep, err)
	}
	// A source without audio: nothing of the worker's passes.
	mute := filepath.Join(t.TempDir(), "mute.mkv")
	if err := sh("ffmpeg", "-nostdin", "-v", "error", "-y", "-i", src, "-an", "-c", "copy", mute); err != nil {
		t.Fatal(err)
	}
	if rep, err := CheckAudio(t.Context(), audioRequest(mute, own, ownStart)); err != nil || rep.Passed || rep.SourceAudio ||
		!strings.Contains(rep.Reason(), "no audio") {
		t.Errorf("audio of a source without: %+v, %v", rep, err)
	}
}
