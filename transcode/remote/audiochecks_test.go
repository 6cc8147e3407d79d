package remote

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/verify"
	"github.com/shoal-video/shoal/transcode/vod"
)

// ladderTree is the ladder's own output of src with segments of seg.
func ladderTree(t *testing.T, src string, seg time.Duration) (string, routing.JobOutcome) {
	t.Helper()
	dir := t.TempDir()
	log := slog.New(slog.DiscardHandler)
	s := vod.Settings{Backend: ffmpeg.BackendSoftware, Preset: "ultrafast", SegmentDuration: seg, Log: log,
		NewPackager: func(dir string, hub *stream.Hub, segment time.Duration, log *slog.Logger) (vod.Packager, error) {
			return packager.New(packager.Config{Dir: dir, SegmentDuration: segment, LiveWindow: 3, Format: packager.FormatFMP4},
				packager.Deps{Log: log, Hub: hub})
		}}
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	out, err := vod.TranscodeJob(t.Context(), s, "vid", src, filepath.Join(dir, "out"), ladder, func(float64) {})
	if err != nil {
		t.Fatal(err)
	}
	return filepath.Join(dir, "out", "vid"), out
}

// With 6 s segments (hls.segment_duration allows up to 30 s), the part of
// a segment the sound check compares (4 s) is anywhere in it, at a place
// the worker cannot know: a worker whose audio is the source's for 4.3 s of
// each segment and another sound for the rest is refused. Before, only
// the first 4 s were compared, and it passed every segment re-checked.
// Found by a review helper.
func TestAudioComparedAnywhereInLongSegments(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	mk := func(name, audio string) string {
		p := filepath.Join(dir, name)
		args := []string{"-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
			"-f", "lavfi", "-i", audio, "-t", "12", "-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", "-b:a", "192k", p}
		if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
			t.Fatalf("ffmpeg: %v\n%s", err, out)
		}
		return p
	}
	const cut = "4.3"
	const pink = "anoisesrc=color=pink:sample_rate=48000:amplitude=0.5:seed=1"
	src := mk("src.mp4", pink)
	// The cheat's sound: the source's for 4.3 s of every 6, then a loud tone.
	cheat := mk("cheat.mp4", pink+",volume=eval=frame:volume='lt(mod(t,6),"+cut+")'[a];sine=frequency=660:sample_rate=48000,volume=eval=frame:volume='4*gte(mod(t,6),"+cut+")'[b];[a][b]amix=inputs=2:normalize=0")
	const seg = 6 * time.Second
	honest, _ := ladderTree(t, src, seg)
	bad, badOut := ladderTree(t, cheat, seg)
	// The cheat's output is the honest video with the cheat's audio.
	tree := t.TempDir()
	if err := os.CopyFS(tree, os.DirFS(honest)); err != nil {
		t.Fatal(err)
	}
	_ = os.RemoveAll(filepath.Join(tree, "audio"))
	if err := os.CopyFS(filepath.Join(tree, "audio"), os.DirFS(filepath.Join(bad, "audio"))); err != nil {
		t.Fatal(err)
	}
	ladder, _ := media.ParseLadder("360p:700k,240p:400k")
	const job = "vid.1.1-0"
	key := seedKey([]byte("a secret of the origin's, 32 bytes"))
	m, err := BuildManifest(tree, job, badOut)
	if err != nil {
		t.Fatal(err)
	}
	_, err = checkOutput(t.Context(), output{dir: tree, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
		source: 12 * time.Second, segment: seg, sample: &sampler{
			fraction: 1,
			seed:     func(r string) []byte { return sampleSeed(key, job, r) },
			source:   func(context.Context) (string, func(), error) { return src, func() {}, nil },
			settings: verify.Settings{Preset: "ultrafast", SegmentDuration: seg},
			check:    verify.Check, limit: 2,
		}})
	var rej *rejection
	if !errors.As(err, &rej) || !rej.verify {
		t.Fatalf("an output whose audio is another sound for the last 1.7 s of every 6 s segment (28%% of it), every segment re-checked: %v, want a re-check refusal", err)
	}
	t.Logf("refused: %s", rej.reason)
}

// The ladder's own output of a source whose audio starts after its video
// (edited or remuxed files, some cameras) passes every check, every
// segment re-checked: the audio keeps its real start, and only audio
// starting before the video is refused. Before, audio starting more than
// 100 ms late was refused as out of sync (an honest worker blamed).
// Found by a review helper.
func TestHonestOutputWithLateAudio(t *testing.T) {
	t.Parallel()
	for _, late := range []string{"0.15", "0.4"} {
		t.Run(late, func(t *testing.T) {
			t.Parallel()
			src := filepath.Join(t.TempDir(), "src.mp4")
			args := []string{"-nostdin", "-v", "error", "-y", "-f", "lavfi", "-i", "testsrc2=size=640x360:rate=30",
				"-itsoffset", late, "-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000", "-t", "4",
				"-c:v", "libx264", "-preset", "ultrafast", "-pix_fmt", "yuv420p", "-c:a", "aac", src}
			if out, err := exec.Command("ffmpeg", args...).CombinedOutput(); err != nil {
				t.Fatalf("ffmpeg: %v\n%s", err, out)
			}
			info, err := ffmpeg.ProbeFile(src)
			if err != nil {
				t.Fatal(err)
			}
			tree, out := ladderTree(t, src, time.Second)
			ladder, _ := media.ParseLadder("360p:700k,240p:400k")
			const job = "vid.1.1-0"
			key := seedKey([]byte("a secret of the origin's, 32 bytes"))
			m, err := BuildManifest(tree, job, out)
			if err != nil {
				t.Fatal(err)
			}
			if _, err := checkOutput(t.Context(), output{dir: tree, manifest: m, rungs: ladder.For(360), sourceWidth: 640, sourceHeight: 360,
				source: info.Duration, segment: time.Second, sample: &sampler{
					fraction: 1,
					seed:     func(r string) []byte { return sampleSeed(key, job, r) },
					source:   func(context.Context) (string, func(), error) { return src, func() {}, nil },
					settings: verify.Settings{Preset: "ultrafast", SegmentDuration: time.Second},
					check:    verify.Check, limit: 2,
				}}); err != nil {
				t.Fatalf("the honest output of a source whose audio starts %s s late: %v", late, err)
			}
		})
	}
}
