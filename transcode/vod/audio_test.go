package vod

import (
	"bytes"
	"context"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// audioClip makes a 4 s 640x360 clip whose AAC stream the ffmpeg CLI's
// noise filter damaged (noise=amount=1: every packet, none decodes; 100:
// about two packets in three); ffprobe lists the stream.
func audioClip(t *testing.T, noise string) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), "src.mp4")
	out, err := exec.Command("ffmpeg", "-nostdin", "-v", "error", "-y",
		"-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30", "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", "4", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac",
		"-bsf:a", "noise=amount="+noise, p).CombinedOutput()
	if err != nil {
		t.Fatalf("ffmpeg: %v\n%s", err, out)
	}
	out, err = exec.Command("ffprobe", "-v", "error", "-select_streams", "a", "-show_entries", "stream=codec_name",
		"-of", "csv=p=0", p).Output()
	if err != nil || strings.TrimSpace(string(out)) != "aac" {
		t.Fatalf("ffprobe: the clip's audio stream = %q, %v", out, err)
	}
	return p
}

// transcodeWithPackager runs Transcode with the live packager as the worker
// does, logging into log.
func transcodeWithPackager(t *testing.T, src string, log *slog.Logger) (string, error) {
	t.Helper()
	root := t.TempDir()
	_, err := Transcode(context.Background(), Settings{
		Backend: ffmpeg.BackendSoftware, Preset: "ultrafast", SegmentDuration: 2 * time.Second, Log: log,
		NewPackager: func(dir string, hub *stream.Hub, seg time.Duration, log *slog.Logger) (Packager, error) {
			return packager.New(packager.Config{Dir: dir, SegmentDuration: seg, LiveWindow: 3, Format: packager.FormatFMP4},
				packager.Deps{Log: log, Hub: hub})
		},
	}, "audiotest", src, root, media.Ladder{{Height: 360, Bitrate: 700_000}, {Height: 240, Bitrate: 300_000}}, func(float64) {})
	return filepath.Join(root, "audiotest"), err
}

// A source whose audio stream exists but never decodes is published
// without audio: a master playlist that names no audio group and plays,
// and a log line saying so (before, Transcode succeeded with no master
// playlist: the packager waited for the audio group's first segment
// forever). One whose audio partly decodes keeps what decodes.
func TestTranscodeUndecodableAudio(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		noise string
		audio bool
	}{{"1", false}, {"100", true}} {
		src := audioClip(t, c.noise)
		var logs bytes.Buffer
		dir, err := transcodeWithPackager(t, src, slog.New(slog.NewTextHandler(&logs, nil)))
		if err != nil {
			t.Fatalf("noise %s: %v", c.noise, err)
		}
		master, err := os.ReadFile(filepath.Join(dir, "master.m3u8"))
		if err != nil {
			t.Fatalf("noise %s: no master playlist: %v\n%s", c.noise, err, logs.String())
		}
		if got := strings.Contains(string(master), "TYPE=AUDIO"); got != c.audio {
			t.Fatalf("noise %s: master names an audio group: %v, want %v\n%s", c.noise, got, c.audio, master)
		}
		dropped := strings.Contains(logs.String(), "published without audio")
		if dropped == c.audio {
			t.Errorf("noise %s: logged the audio as dropped: %v\n%s", c.noise, dropped, logs.String())
		}
		// ffprobe reads the HLS as a player would.
		out, err := exec.Command("ffprobe", "-v", "error", "-show_entries", "stream=codec_type:format=duration",
			"-of", "default=nw=1", filepath.Join(dir, "master.m3u8")).CombinedOutput()
		if err != nil {
			t.Fatalf("noise %s: ffprobe: %v\n%s", c.noise, err, out)
		}
		if !strings.Contains(string(out), "codec_type=video") || strings.Contains(string(out), "codec_type=audio") != c.audio {
			t.Fatalf("noise %s: ffprobe reads\n%s", c.noise, out)
		}
	}
}
