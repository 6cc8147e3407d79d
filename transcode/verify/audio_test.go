package verify

import (
	"bytes"
	"errors"
	"path/filepath"
	"testing"
	"time"
)

// cliAudioHLS encodes the audio of src with the ffmpeg CLI into an fMP4
// HLS rendition in a new directory, with the given encoder arguments.
func cliAudioHLS(t testing.TB, src string, args ...string) string {
	t.Helper()
	dir := t.TempDir()
	full := append([]string{"-nostdin", "-v", "error", "-y", "-i", src, "-vn"}, args...)
	full = append(full, "-f", "hls", "-hls_segment_type", "fmp4", "-hls_time", "2", "-hls_playlist_type", "vod",
		"-hls_fmp4_init_filename", "init.mp4", "-hls_segment_filename", filepath.Join(dir, "seg%d.m4s"),
		filepath.Join(dir, "index.m3u8"))
	if err := sh("ffmpeg", full...); err != nil {
		t.Fatal(err)
	}
	return dir
}

// The audio segments of Shoal's packager and of FFmpeg's HLS muxer parse
// to their AAC frames, decode times and durations; segments that are not
// AAC-LC of the ladder's shape, in fMP4 with their initialization section,
// do not.
func TestParseAudioSegment(t *testing.T) {
	t.Parallel()
	src := source(t)
	shoal := readRendition(t, filepath.Join(shoalOutput(t), videoID, "audio"))
	cli := readRendition(t, cliAudioHLS(t, src, "-c:a", "aac", "-b:a", "128k", "-ar", "48000"))
	for name, r := range map[string]rendition{"shoal": shoal, "cli": cli} {
		var next time.Duration
		for i, s := range r.segs {
			p, err := ParseAudioSegment(Segment{Init: r.init, Media: s.data})
			if err != nil {
				t.Fatalf("%s segment %d: %v", name, i, err)
			}
			frames := time.Duration(len(p.Frames)) * AACFrameSamples * time.Second / 48000
			if p.Config.SampleRate != 48000 || p.Config.ChannelCount < 1 || len(p.Frames) == 0 || absDur(p.Duration-frames) > time.Millisecond {
				t.Fatalf("%s segment %d: %+v, %d frames, duration %s", name, i, p.Config, len(p.Frames), p.Duration)
			}
			// Its span agrees with its EXTINF and with the segment before.
			if d := s.end - s.start; absDur(p.Duration-d) > 30*time.Millisecond || i > 0 && absDur(p.Start-next) > time.Millisecond {
				t.Fatalf("%s segment %d: starts at %s (the one before ended at %s), lasts %s (EXTINF %s)", name, i, p.Start, next, p.Duration, d)
			}
			next = p.Start + p.Duration
		}
	}
	video := readRendition(t, filepath.Join(shoalOutput(t), videoID, "360p"))
	junk := bytes.Clone(shoal.segs[0].data)
	// Every frame's bytes 0xff (the END element first): the container
	// is right, the frames are not AAC.
	p, err := ParseAudioSegment(Segment{Init: shoal.init, Media: shoal.segs[0].data})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range p.Frames {
		off := bytes.Index(junk, f)
		for i := range f {
			junk[off+i] = 0xff
		}
	}
	main := readRendition(t, cliAudioHLS(t, src, "-c:a", "aac", "-profile:a", "aac_main", "-ar", "48000"))
	for name, seg := range map[string]Segment{
		"empty":                   {Init: shoal.init},
		"no init":                 {Media: shoal.segs[0].data},
		"not a segment":           {Init: shoal.init, Media: []byte("not audio: whatever the worker wants the viewers to hear")},
		"truncated":               {Init: shoal.init, Media: shoal.segs[0].data[:len(shoal.segs[0].data)/2]},
		"init as media":           {Init: shoal.init, Media: shoal.init},
		"video":                   {Init: video.init, Media: video.segs[0].data},
		"video with audio init":   {Init: shoal.init, Media: video.segs[0].data},
		"frames that are not AAC": {Init: shoal.init, Media: junk},
		"AAC Main":                {Init: main.init, Media: main.segs[0].data},
		"too large":               {Init: shoal.init, Media: make([]byte, maxSegmentBytes+1)},
	} {
		if p, err := ParseAudioSegment(seg); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v (%d frames), want ErrMalformed", name, err, len(p.Frames))
		} else {
			t.Logf("%s: %v", name, err)
		}
	}
}

func absDur(d time.Duration) time.Duration {
	if d < 0 {
		return -d
	}
	return d
}

// Malformed audio segment bytes give an error, never a panic or a hang.
// Seeds: an audio segment of FFmpeg's HLS muxer, whole and cut.
func FuzzParseAudioSegment(f *testing.F) {
	r := readRendition(f, cliAudioHLS(f, tinySource(f), "-c:a", "aac", "-b:a", "32k", "-ar", "48000", "-t", "0.3"))
	f.Add(r.init, r.segs[0].data)
	f.Add(r.init, r.segs[0].data[:len(r.segs[0].data)/2])
	f.Add([]byte{}, []byte("not a segment"))
	f.Fuzz(func(t *testing.T, init, media []byte) {
		seg := Segment{Media: media}
		if len(init) > 0 {
			seg.Init = init
		}
		p, err := ParseAudioSegment(seg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if len(p.Frames) == 0 || len(p.Frames) > maxSamples || p.Duration <= 0 || p.Start < 0 {
			t.Fatalf("accepted %d frames, start %s, duration %s", len(p.Frames), p.Start, p.Duration)
		}
	})
}
