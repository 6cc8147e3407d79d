package ffmpeg

import (
	"bytes"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/testutil"
)

// makeTS is testutil.MakeTS.
var makeTS = testutil.MakeTS

type rungOut struct {
	aus  []*media.AccessUnit
	keys []int64 // PTS of keyframes
	sps  []byte
}

func run(t testing.TB, cfg Config, path string, rungs []Rung, mutate func(i int, au *media.AccessUnit)) []rungOut {
	t.Helper()
	return runWith(t, cfg, path, rungs, mutate, nil)
}

// runWith is run; inspect, when set, sees the pipeline after the flush,
// before it closes.
func runWith(t testing.TB, cfg Config, path string, rungs []Rung, mutate func(i int, au *media.AccessUnit), inspect func(*Pipeline)) []rungOut {
	t.Helper()
	var p *Pipeline
	outs := make([]rungOut, len(rungs))
	emit := func(i int, au *media.AccessUnit) {
		outs[i].aus = append(outs[i].aus, au)
		if au.Keyframe {
			outs[i].keys = append(outs[i].keys, au.PTS)
		}
		for _, n := range au.Payload {
			if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS && outs[i].sps == nil {
				outs[i].sps = n
			}
		}
	}
	n := 0
	err := DemuxVideo(path, func(tr media.Track, au *media.AccessUnit) error {
		if p == nil {
			var err error
			if p, err = New(cfg, tr, rungs); err != nil {
				return err
			}
		}
		if mutate != nil {
			mutate(n, au)
		}
		n++
		return p.Push(au, emit)
	})
	if err != nil {
		t.Fatal(err)
	}
	if err := p.Flush(emit); err != nil {
		t.Fatal(err)
	}
	if inspect != nil {
		inspect(p)
	}
	p.Close()
	return outs
}

var quiet = slog.New(slog.DiscardHandler)

func TestLadderAlignedKeyframes(t *testing.T) {
	t.Parallel()
	outs := alignedLadder(t, Config{Backend: BackendSoftware, Preset: "veryfast", KeyframeInterval: time.Second, Log: quiet})
	for i, o := range outs {
		bframes := false
		for _, au := range o.aus {
			if au.PTS != au.DTS {
				bframes = true
			}
		}
		if !bframes {
			t.Errorf("rung %d: no reordered frames; B-frames expected with x264 defaults", i)
		}
	}
}

func TestCorruptInputIsSkipped(t *testing.T) {
	t.Parallel()
	src := makeTS(t, 640, 360, 4, 30)
	rungs := []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}}
	outs := run(t, Config{Preset: "ultrafast", KeyframeInterval: time.Second, Log: quiet}, src, rungs, func(i int, au *media.AccessUnit) {
		if i%7 == 3 { // garble some frames, keyframes included
			for j, n := range au.Payload {
				b := bytes.Clone(n)
				for k := 1; k < len(b); k += 3 {
					b[k] ^= 0xa5
				}
				au.Payload[j] = b
			}
		}
		if i == 50 {
			au.Payload = [][]byte{{0x65}} // a truncated IDR slice
		}
	})
	if n := len(outs[0].aus); n < 60 {
		t.Fatalf("only %d frames came out of a stream with some bad frames", n)
	}
}

func TestResolutionChangeRestartsEncoders(t *testing.T) {
	t.Parallel()
	checkResolutionChange(t, Config{Preset: "ultrafast", KeyframeInterval: time.Second, Log: quiet})
}

// checkResolutionChange runs a source that goes from 1280x720 to 640x480
// halfway through a 360p ladder with cfg: the encoders restart at the new
// size and every frame comes out.
func checkResolutionChange(t *testing.T, cfg Config) {
	t.Helper()
	dir := t.TempDir()
	a, b := makeTS(t, 1280, 720, 2, 30), makeTS(t, 640, 480, 2, 30)
	list := filepath.Join(dir, "list.txt")
	if err := os.WriteFile(list, []byte("file '"+a+"'\nfile '"+b+"'\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	joined := filepath.Join(dir, "joined.ts")
	if out, err := exec.Command("ffmpeg", "-v", "error", "-f", "concat", "-safe", "0", "-i", list, "-c", "copy", joined).CombinedOutput(); err != nil {
		t.Fatalf("concat: %v\n%s", err, out)
	}
	var sizes []string
	rungs := []Rung{{Name: "360p", Height: 360, Bitrate: 700_000}}
	outs := run(t, cfg, joined, rungs, nil)
	for _, au := range outs[0].aus {
		for _, n := range au.Payload {
			if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
				var sps h264.SPS
				if err := sps.Unmarshal(n); err == nil {
					s := strconv.Itoa(sps.Width()) + "x" + strconv.Itoa(sps.Height())
					if len(sizes) == 0 || sizes[len(sizes)-1] != s {
						sizes = append(sizes, s)
					}
				}
			}
		}
	}
	if strings.Join(sizes, ",") != "640x360,480x360" {
		t.Fatalf("output sizes %v, want 640x360 then 480x360", sizes)
	}
	if len(outs[0].aus) < 110 {
		t.Fatalf("%d frames, want about 120", len(outs[0].aus))
	}
}

func TestEvenWidth(t *testing.T) {
	t.Parallel()
	for _, c := range [][4]int{{1920, 1080, 720, 1280}, {1280, 720, 480, 854}, {1280, 720, 360, 640}, {640, 480, 360, 480}, {1080, 1920, 360, 204}, {0, 0, 360, 640}} {
		if got := EvenWidth(c[0], c[1], c[2]); got != c[3] {
			t.Errorf("EvenWidth(%d, %d, %d) = %d, want %d", c[0], c[1], c[2], got, c[3])
		}
	}
}
