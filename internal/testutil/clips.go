package testutil

import (
	"bytes"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// MakeTS encodes seconds of testsrc2 at w x h, 30 fps, a keyframe every gop
// frames, to an MPEG-TS file with the ffmpeg CLI, and returns its path.
func MakeTS(t testing.TB, w, h, seconds, gop int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "src.ts")
	out, err := exec.Command("ffmpeg", "-v", "error", "-y", "-f", "lavfi",
		"-i", "testsrc2=size="+strconv.Itoa(w)+"x"+strconv.Itoa(h)+":rate=30", "-t", strconv.Itoa(seconds),
		"-c:v", "libx264", "-preset", "ultrafast", "-g", strconv.Itoa(gop), "-pix_fmt", "yuv420p", "-f", "mpegts", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg (is it installed? `make test` installs it): %v\n%s", err, out)
	}
	return path
}

// MakeMP4 encodes seconds of testsrc2 at w x h, 30 fps, with a 440 Hz AAC
// tone, to an MP4 file (moov at the front, as phones and editors write
// it) with the ffmpeg CLI, and returns its path.
func MakeMP4(t testing.TB, w, h, seconds int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.mp4")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+strconv.Itoa(w)+"x"+strconv.Itoa(h)+":rate=30",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=44100",
		"-t", strconv.Itoa(seconds), "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "64k", "-movflags", "+faststart", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg (is it installed? `make test` installs it): %v\n%s", err, out)
	}
	return path
}

// MakeOpusOgg encodes seconds of a 440 Hz tone to Opus (48 kHz stereo, 20 ms
// frames, one frame per Ogg page, as WebRTC sends them) with the ffmpeg
// CLI, and returns its path.
func MakeOpusOgg(t testing.TB, seconds int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "tone.ogg")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-ac", "2", "-t", strconv.Itoa(seconds),
		"-c:a", "libopus", "-b:a", "64k", "-frame_duration", "20", "-page_duration", "20000", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg (is it installed? `make test` installs it): %v\n%s", err, out)
	}
	return path
}

// MakeVP8IVF encodes seconds of testsrc2 at w x h, 30 fps, a keyframe every
// gop frames, to VP8 in an IVF file with the ffmpeg CLI, and returns its
// path.
func MakeVP8IVF(t testing.TB, w, h, seconds, gop int) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "clip.ivf")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size="+strconv.Itoa(w)+"x"+strconv.Itoa(h)+":rate=30", "-t", strconv.Itoa(seconds),
		"-c:v", "libvpx", "-deadline", "realtime", "-cpu-used", "8", "-b:v", "1M", "-g", strconv.Itoa(gop),
		"-auto-alt-ref", "0", "-f", "ivf", path).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg (is it installed? `make test` installs it): %v\n%s", err, out)
	}
	return path
}

// H264SPS encodes one 64x64 frame with libx264 and the extra ffmpeg
// arguments (e.g. "-pix_fmt", "yuv444p10le") and returns its SPS.
func H264SPS(t testing.TB, args ...string) []byte {
	t.Helper()
	path := filepath.Join(t.TempDir(), "f.h264")
	cmd := append([]string{"-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=64x64:rate=1",
		"-frames:v", "1", "-c:v", "libx264"}, args...)
	if out, err := exec.Command("ffmpeg", append(cmd, "-f", "h264", path)...).CombinedOutput(); err != nil {
		t.Fatalf("ffmpeg (is it installed? `make test` installs it): %v\n%s", err, out)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Annex-B: the SPS is the NAL unit of type 7, up to the next start code.
	for i := 0; i+4 < len(b); i++ {
		if b[i] == 0 && b[i+1] == 0 && b[i+2] == 1 && b[i+3]&0x1f == 7 {
			end := bytes.Index(b[i+3:], []byte{0, 0, 1})
			if end < 0 {
				return b[i+3:]
			}
			sps := b[i+3 : i+3+end]
			return bytes.TrimRight(sps, "\x00")
		}
	}
	t.Fatal("no SPS in the encoded frame")
	return nil
}
