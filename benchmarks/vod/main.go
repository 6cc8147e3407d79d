// Command vod benchmarks Shoal's VOD job (vod.Transcode: probe, transcode
// the ladder with the live pipeline's code, package fMP4 HLS with the audio
// group, poster and storyboard) against the ffmpeg CLI doing the same job in
// one process (-filter_complex split + -f hls with -var_stream_map), side by
// side on the same machine, and prints one line:
//
//	bench-vod ours_s=.. ffmpeg_s=.. ratio=.. realtime_x=.. clip_s=..
//
// ratio = ffmpeg_s / ours_s (above 1: we are faster); realtime_x = clip
// length / ours_s. Both outputs are checked with ffprobe: every rung and
// the audio are there and the master playlist lasts as long as the source.
// Ours also writes a poster and a storyboard, which the peer does not.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/shoal-video/shoal/benchmarks/internal/benchutil"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/vod"
)

const (
	srcWidth, srcHeight = 1920, 1080
	segment             = 2 * time.Second
	audioBitrate        = 128_000 // what vod.Transcode encodes (FileConfig.AudioBitrate 0)
	videoID             = "benchvideo"
	durationTolerance   = 0.5 // seconds
)

func main() {
	seconds := flag.Int("seconds", 60, "length of the 1080p30 test clip")
	keep := flag.Bool("keep", false, "keep the work directory")
	showCmd := flag.Bool("cmd", false, "print the ffmpeg CLI command of the peer on standard error")
	flag.Parse()
	if err := run(*seconds, *keep, *showCmd); err != nil {
		fmt.Fprintln(os.Stderr, "bench-vod:", err)
		os.Exit(1)
	}
}

func run(seconds int, keep, showCmd bool) error {
	if seconds <= 0 {
		return errors.New("-seconds must be positive")
	}
	log := slog.New(slog.DiscardHandler)
	ffmpeg.SetLogger(log)
	dir, err := os.MkdirTemp("", "bench-vod-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	} else {
		fmt.Fprintln(os.Stderr, "work dir:", dir)
	}
	src := filepath.Join(dir, "src.mp4")
	if err := makeSource(src, seconds); err != nil {
		return fmt.Errorf("making the source clip: %w", err)
	}
	ladder := media.DefaultLadder.For(srcHeight)

	oursRoot := filepath.Join(dir, "ours")
	if err := os.Mkdir(oursRoot, 0o755); err != nil {
		return err
	}
	oursCPU0 := selfCPU()
	oursS, err := benchutil.TimeIt(func() error {
		_, err := vod.Transcode(context.Background(), vod.Settings{
			Backend: ffmpeg.BackendSoftware, Preset: "veryfast", SegmentDuration: segment, Log: log,
			NewPackager: func(dir string, hub *stream.Hub, seg time.Duration, log *slog.Logger) (vod.Packager, error) {
				return packager.New(packager.Config{Dir: dir, SegmentDuration: seg, LiveWindow: 3, Format: packager.FormatFMP4},
					packager.Deps{Log: log, Hub: hub})
			},
		}, videoID, src, oursRoot, media.DefaultLadder, func(float64) {})
		return err
	})
	if err != nil {
		return fmt.Errorf("ours: %w", err)
	}
	oursCPU := selfCPU() - oursCPU0
	cliRoot := filepath.Join(dir, "ffmpeg")
	args := cliArgs(src, cliRoot, ladder)
	if showCmd {
		fmt.Fprintln(os.Stderr, "ffmpeg "+shellQuote(args))
	}
	var cliCPU float64
	cliS, err := benchutil.TimeIt(func() error {
		cmd := exec.Command("ffmpeg", args...)
		out, err := cmd.CombinedOutput()
		if err != nil {
			return fmt.Errorf("ffmpeg: %v\n%s", err, out)
		}
		cliCPU = (cmd.ProcessState.UserTime() + cmd.ProcessState.SystemTime()).Seconds()
		return nil
	})
	if err != nil {
		return fmt.Errorf("ffmpeg CLI: %w", err)
	}
	// CPU time is a second opinion when the machine is shared: other
	// processes stretch the wall-clock times much more than the CPU times.
	fmt.Fprintf(os.Stderr, "cpu: ours_cpu_s=%.2f ffmpeg_cpu_s=%.2f cpu_ratio=%.2f\n", oursCPU, cliCPU, cliCPU/oursCPU)

	if err := check("ours", filepath.Join(oursRoot, videoID, "master.m3u8"), seconds, ladder); err != nil {
		return err
	}
	if err := check("ffmpeg", filepath.Join(cliRoot, "master.m3u8"), seconds, ladder); err != nil {
		return err
	}
	// Ours also makes a poster and a storyboard (the peer does not): say so
	// when they are missing, as the timing then flatters us.
	for _, name := range []string{vod.PosterFile, vod.StoryboardFile} {
		if _, err := os.Stat(filepath.Join(oursRoot, videoID, name)); err != nil {
			fmt.Fprintf(os.Stderr, "ours: warning: no %s: %v\n", name, err)
		}
	}
	fmt.Printf("bench-vod ours_s=%.2f ffmpeg_s=%.2f ratio=%.2f realtime_x=%.2f clip_s=%d\n",
		oursS, cliS, cliS/oursS, float64(seconds)/oursS, seconds)
	return nil
}

// makeSource writes a 1080p30 testsrc2 clip with a sine tone: H.264 (x264
// veryfast CRF 18) and AAC in MP4 with the index up front, like an upload.
func makeSource(path string, seconds int) error {
	return benchutil.Sh("ffmpeg", "-v", "error", "-y",
		"-f", "lavfi", "-i", fmt.Sprintf("testsrc2=size=%dx%d:rate=30", srcWidth, srcHeight),
		"-f", "lavfi", "-i", "sine=frequency=440:sample_rate=48000",
		"-t", strconv.Itoa(seconds), "-map", "0:v", "-map", "1:a",
		"-c:v", "libx264", "-preset", "veryfast", "-crf", "18", "-pix_fmt", "yuv420p",
		"-c:a", "aac", "-b:a", "128k", "-ac", "2",
		"-movflags", "+faststart", path)
}

// cliArgs is the ffmpeg CLI doing the job of vod.Transcode in one process:
// the same ladder, encoder settings, keyframe grid and AAC audio, packaged
// as fMP4 HLS VOD with an audio group and a master playlist under root.
func cliArgs(src, root string, ladder media.Ladder) []string {
	var graph strings.Builder
	fmt.Fprintf(&graph, "[0:v]split=%d", len(ladder))
	for i := range ladder {
		fmt.Fprintf(&graph, "[s%d]", i)
	}
	for i, r := range ladder {
		fmt.Fprintf(&graph, ";[s%d]scale=%d:%d:flags=bilinear[o%d]",
			i, ffmpeg.EvenWidth(srcWidth, srcHeight, r.Height), r.Height, i)
	}
	args := []string{"-v", "error", "-y", "-i", src, "-filter_complex", graph.String()}
	for i := range ladder {
		args = append(args, "-map", fmt.Sprintf("[o%d]", i))
	}
	args = append(args, "-map", "0:a",
		"-c:v", "libx264", "-preset", "veryfast", "-profile:v", "high",
		"-x264-params", "scenecut=0:open-gop=0",
		"-force_key_frames", fmt.Sprintf("expr:gte(t,n_forced*%d)", int(segment/time.Second)),
		"-forced-idr", "1")
	for i, r := range ladder {
		args = append(args,
			fmt.Sprintf("-b:v:%d", i), strconv.Itoa(r.Bitrate),
			fmt.Sprintf("-maxrate:v:%d", i), strconv.Itoa(r.Bitrate*11/10),
			fmt.Sprintf("-bufsize:v:%d", i), strconv.Itoa(r.Bitrate*2))
	}
	streamMap := []string{"a:0,agroup:aud,name:audio"}
	for i, r := range ladder {
		streamMap = append(streamMap, fmt.Sprintf("v:%d,agroup:aud,name:%s", i, r.Name()))
	}
	args = append(args,
		"-c:a", "aac", "-b:a", strconv.Itoa(audioBitrate), "-ar", "48000", "-ac", "2",
		"-f", "hls", "-hls_time", strconv.Itoa(int(segment/time.Second)),
		"-hls_playlist_type", "vod", "-hls_segment_type", "fmp4",
		"-hls_segment_filename", filepath.Join(root, "%v", "seg%d.m4s"),
		"-master_pl_name", "master.m3u8",
		"-var_stream_map", strings.Join(streamMap, " "),
		filepath.Join(root, "%v", "index.m3u8"))
	return args
}

// check reads the master playlist with ffprobe: every rung of the ladder at
// its size, an audio stream, and a duration within durationTolerance of
// the source's.
func check(who, master string, seconds int, ladder media.Ladder) error {
	out, err := exec.Command("ffprobe", "-v", "error",
		"-show_entries", "format=duration:stream=codec_type,width,height",
		"-of", "compact=p=0", master).CombinedOutput()
	if err != nil {
		return fmt.Errorf("ffprobe of %s's %s: %v\n%s", who, master, err, out)
	}
	dur := math.NaN()
	heights := map[int]bool{}
	audio := false
	for _, line := range strings.Split(strings.TrimSpace(string(out)), "\n") {
		kv := map[string]string{}
		for _, f := range strings.Split(line, "|") {
			if k, v, ok := strings.Cut(f, "="); ok {
				kv[k] = v
			}
		}
		switch {
		case kv["duration"] != "":
			dur, _ = strconv.ParseFloat(kv["duration"], 64)
		case kv["codec_type"] == "video":
			h, _ := strconv.Atoi(kv["height"])
			heights[h] = true
		case kv["codec_type"] == "audio":
			audio = true
		}
	}
	if !(math.Abs(dur-float64(seconds)) <= durationTolerance) {
		return fmt.Errorf("%s: the master playlist lasts %.3f s, the source %d s", who, dur, seconds)
	}
	for _, r := range ladder {
		if !heights[r.Height] {
			return fmt.Errorf("%s: no %s rendition in the master playlist:\n%s", who, r.Name(), out)
		}
	}
	if !audio {
		return fmt.Errorf("%s: no audio in the master playlist:\n%s", who, out)
	}
	fmt.Fprintf(os.Stderr, "%s: %s lasts %.3f s, %d video renditions and audio\n", who, filepath.Base(master), dur, len(heights))
	return nil
}

// selfCPU is the user + system CPU time this process used so far, in
// seconds (child processes not included).
func selfCPU() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// shellQuote renders args for a shell, quoting those that need it.
func shellQuote(args []string) string {
	q := make([]string, len(args))
	for i, a := range args {
		if a == "" || strings.ContainsAny(a, " \t\n\"'\\$;()[]*?<>|&#~") {
			a = "'" + strings.ReplaceAll(a, "'", `'\''`) + "'"
		}
		q[i] = a
	}
	return strings.Join(q, " ")
}
