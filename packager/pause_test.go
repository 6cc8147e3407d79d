package packager

import (
	"math"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	hlsplaylist "github.com/bluenviron/gohlslib/v2/pkg/playlist"

	"github.com/shoal-video/shoal/internal/media"
)

// A camera that pauses (fMP4, MPEG-TS, and LL-HLS with parts) while its audio goes on (a phone app sent to the
// background): the audio playlist keeps growing by whole segments, the
// video playlist lists the time without frames as gaps, and neither ever
// lists a segment longer than the target duration, which stays the same.
func TestVideoPauseIsListedAsGaps(t *testing.T) {
	for _, format := range []string{FormatFMP4, FormatMPEGTS, "llhls"} {
		t.Run(format, func(t *testing.T) {
			t.Parallel()
			var r *rig
			if format == "llhls" {
				r = newLLRig(t, Config{PartDuration: 500 * time.Millisecond}).rig
			} else {
				r = newRig(t, format, 0)
			}
			pub, err := r.hub.Publish(media.StreamKey{Name: "st", Rendition: media.RenditionSource}, tracks)
			if err != nil {
				t.Fatal(err)
			}
			feed(pub, 6, 60) // 6 s of video and audio
			// The video pauses from 6 s to 36 s; audio goes on.
			for a := 6 * 48000 / 1024; a < 36*48000/1024; a++ {
				pub.Write(&media.AccessUnit{Track: 1, DTS: int64(a) * 1024, PTS: int64(a) * 1024, Keyframe: true,
					Payload: [][]byte{{0x21, 0x10, byte(a)}}})
			}
			audioDir := filepath.Join(r.dir, "st", "audio")
			videoDir := filepath.Join(r.dir, "st", "source")
			// While the video is paused, the audio is segmented on.
			waitFor(t, "audio segments while the video is paused", func() bool {
				b, err := os.ReadFile(filepath.Join(audioDir, "recording.m3u8"))
				if err != nil {
					return false
				}
				return total(parseMedia(t, b).Segments) >= 30
			})
			feedRange(pub, 36, 6, 60) // the camera comes back
			pub.Close()
			for _, dir := range []string{audioDir, videoDir} {
				index := filepath.Join(dir, "index.m3u8")
				waitFor(t, "ENDLIST in "+dir, func() bool {
					b, _ := os.ReadFile(index)
					return strings.Contains(string(b), "#EXT-X-ENDLIST")
				})
			}
			var sums []float64
			for _, dir := range []string{audioDir, videoDir} {
				rec := parseMedia(t, mustRead(t, filepath.Join(dir, "recording.m3u8")))
				if rec.TargetDuration != 2 {
					t.Errorf("%s: EXT-X-TARGETDURATION %d, want 2", dir, rec.TargetDuration)
				}
				for i, s := range rec.Segments {
					if s.Duration > 2500*time.Millisecond {
						t.Errorf("%s: segment %d (%s) lasts %v", dir, i, s.URI, s.Duration)
					}
					if _, err := os.Stat(filepath.Join(dir, s.URI)); (err == nil) == s.Gap {
						t.Errorf("%s: segment %d (%s): gap %v, file exists %v", dir, i, s.URI, s.Gap, err == nil)
					}
				}
				sums = append(sums, total(rec.Segments))
			}
			if math.Abs(sums[0]-42) > 0.1 || math.Abs(sums[1]-42) > 0.1 {
				t.Errorf("audio lists %.3f s, video %.3f s; want 42 s each", sums[0], sums[1])
			}
			// The video: 6 s of frames (the last one ends at 6 s), 30 s of gaps,
			// 6 s of frames.
			rec := parseMedia(t, mustRead(t, filepath.Join(videoDir, "recording.m3u8")))
			var at, gapFrom, gapTo float64 = 0, -1, -1
			for _, s := range rec.Segments {
				if s.Gap {
					if gapFrom < 0 {
						gapFrom = at
					}
					gapTo = at + s.Duration.Seconds()
				}
				at += s.Duration.Seconds()
			}
			if math.Abs(gapFrom-6) > 0.002 || math.Abs(gapTo-36) > 0.002 {
				t.Errorf("video gaps span %.3f..%.3f s, want 6..36", gapFrom, gapTo)
			}
			// The live playlist of the audio was published while the video
			// was paused; the audio's segments line up with the video's
			// again once it is back: the last three cut at 36, 38 and 40 s.
			audio := parseMedia(t, mustRead(t, filepath.Join(audioDir, "recording.m3u8")))
			at = 0
			var starts []float64
			for _, s := range audio.Segments {
				starts = append(starts, at)
				at += s.Duration.Seconds()
			}
			for i, want := range []float64{36, 38, 40} {
				got := starts[len(starts)-3+i]
				if math.Abs(got-want) > 0.03 {
					t.Errorf("audio segment starts at %.3f s, want %.0f (starts %v)", got, want, starts)
				}
			}
		})
	}
}

func total(segs []*hlsplaylist.MediaSegment) float64 {
	s := 0.0
	for _, seg := range segs {
		s += seg.Duration.Seconds()
	}
	return s
}

// Audio that pauses while the video goes on (a muted microphone that stops
// sending): the time without audio is listed as gaps, and the audio is cut
// with the video again afterwards (not once per video cut it missed).
func TestAudioPauseIsListedAsGaps(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, 0)
	pub, err := r.hub.Publish(media.StreamKey{Name: "st", Rendition: media.RenditionSource}, tracks)
	if err != nil {
		t.Fatal(err)
	}
	feed(pub, 6, 60)
	for v := 6 * 30; v < 14*30; v++ { // video alone from 6 s to 14 s
		payload := [][]byte{{0x41, 0x9a, byte(v)}}
		if v%60 == 0 {
			payload = [][]byte{testSPS, testPPS, {0x65, 0x88, byte(v)}}
		}
		pub.Write(&media.AccessUnit{Track: 0, DTS: int64(v) * 3000, PTS: int64(v) * 3000, Keyframe: v%60 == 0, Payload: payload})
	}
	feedRange(pub, 14, 6, 60)
	pub.Close()
	dir := filepath.Join(r.dir, "st", "audio")
	waitFor(t, "ENDLIST", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "index.m3u8"))
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	rec := parseMedia(t, mustRead(t, filepath.Join(dir, "recording.m3u8")))
	at, gaps := 0.0, 0.0
	var cuts []float64
	for i, s := range rec.Segments {
		if s.Duration > 2500*time.Millisecond || !s.Gap && s.Duration < time.Second && i < len(rec.Segments)-1 {
			t.Errorf("segment %d (%s, gap %v) lasts %v", i, s.URI, s.Gap, s.Duration)
		}
		if s.Gap {
			gaps += s.Duration.Seconds()
		} else {
			cuts = append(cuts, at)
		}
		at += s.Duration.Seconds()
	}
	if math.Abs(at-20) > 0.05 || math.Abs(gaps-8) > 0.05 {
		t.Errorf("the audio lists %.3f s, %.3f s of it gaps; want 20 and 8", at, gaps)
	}
	if got := cuts[len(cuts)-2:]; math.Abs(got[0]-16) > 0.03 || math.Abs(got[1]-18) > 0.03 {
		t.Errorf("audio segments start at %v; the last two should at 16 and 18 s, with the video's", cuts)
	}
}
