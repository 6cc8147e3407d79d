package verify

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Segments of Shoal's packager (fMP4, MPEG-TS) and of FFmpeg's HLS muxer
// (which marks the keyframe with a trun's first-sample flags) parse to
// their samples, decode times and durations.
func TestParseSegment(t *testing.T) {
	t.Parallel()
	src := source(t)
	shoal := readRendition(t, filepath.Join(shoalOutput(t), videoID, "360p"))
	cli := readRendition(t, cliHLS(t, src, x264Args("veryfast", 640, 360, 700_000, "")...))
	for name, seg := range map[string]Segment{
		"shoal": {Init: shoal.init, Media: shoal.segs[1].data},
		"cli":   {Init: cli.init, Media: cli.segs[1].data},
	} {
		p, err := ParseSegment(seg)
		if err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		idr, sync := 0, 0
		for _, s := range p.Samples {
			if s.IDR {
				idr++
			}
			if s.Sync {
				sync++
			}
		}
		// Shoal's tfdt is 1 tick short of 2 s (timestamps rounded
		// through the encoders' time base); FFmpeg's is 2 s.
		if len(p.Samples) != 60 || idr != 1 || sync != 1 || !p.Samples[0].IDR || p.Start < 179998 || p.Start > 180000 ||
			p.Duration < 179998 || p.Duration > 180002 || p.Track.Width != 640 || p.Track.Height != 360 || p.Format != FormatFMP4 {
			t.Fatalf("%s: %d samples, %d IDR, %d sync, start %d, duration %d, %dx%d", name, len(p.Samples), idr, sync,
				p.Start, p.Duration, p.Track.Width, p.Track.Height)
		}
	}
	for name, seg := range map[string]Segment{
		"empty":          {},
		"too large":      {Media: make([]byte, maxSegmentBytes+1)},
		"init too large": {Init: make([]byte, maxInitBytes+1), Media: shoal.segs[0].data},
		"not a segment":  {Init: shoal.init, Media: []byte("hello")},
		"truncated":      {Init: shoal.init, Media: shoal.segs[0].data[:1000]},
		"no init":        {Media: shoal.segs[0].data},
		"init as media":  {Init: shoal.init, Media: shoal.init},
	} {
		if _, err := ParseSegment(seg); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", name, err)
		}
	}
}

// Malformed segment bytes give an error, never a panic or a hang. Seeds:
// testdata/fuzz/FuzzParseSegment (small segments of Shoal's packager, in
// fMP4 and MPEG-TS, and of FFmpeg's HLS muxer).
func FuzzParseSegment(f *testing.F) {
	f.Add([]byte{}, []byte("not a segment"))
	f.Fuzz(func(t *testing.T, init, media []byte) {
		seg := Segment{Media: media}
		if len(init) > 0 {
			seg.Init = init
		}
		p, err := ParseSegment(seg)
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("an error that does not wrap ErrMalformed: %v", err)
			}
			return
		}
		if len(p.Samples) == 0 || len(p.Samples) > maxSamples || p.Track.SPS == nil || p.Track.PPS == nil || p.Duration <= 0 {
			t.Fatalf("accepted %+v", p)
		}
		for i := 1; i < len(p.Samples); i++ {
			if p.Samples[i].DTS <= p.Samples[i-1].DTS {
				t.Fatalf("sample %d goes back in decode time", i)
			}
		}
	})
}

var tinyOnce once

// tinySource is the source the seeds of FuzzCheck were made from: 1 s of
// testsrc2 at 96x64, 10 fps.
func tinySource(t testing.TB) string {
	return tinyOnce.get(t, func(p string) error { return clip(p, "testsrc2", 96, 64, "10", 1) }, "tiny.mp4")
}

// The whole check (parsing, then decoding with FFmpeg's libraries) of
// malformed segment bytes gives a report, never a panic, a hang or an
// error (the source is fine). Besides the bytes, the fuzzer drives damage
// XORed into the segment at an offset: most of a segment is coded video,
// so damaged but parseable segments reach the decoder. Seeds: the files
// of testdata/fuzz/FuzzParseSegment.
func FuzzCheck(f *testing.F) {
	addSeeds(f)
	var mu sync.Mutex // one check at a time: each decodes the source
	f.Fuzz(func(t *testing.T, init, media, damage []byte, at uint) {
		mu.Lock()
		defer mu.Unlock()
		media = bytes.Clone(media)
		for i, b := range damage {
			if len(media) > 0 {
				media[(at+uint(i))%uint(len(media))] ^= b
			}
		}
		seg := Segment{Media: media}
		if len(init) > 0 {
			seg.Init = init
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		rep, err := Check(ctx, Request{Source: tinySource(t), Segment: seg, Start: 0, End: time.Second,
			Rung:     ffmpeg.Rung{Name: "64p", Height: 64, Bitrate: 100_000},
			Settings: Settings{Preset: "ultrafast", SegmentDuration: 2 * time.Second}, NoReference: true})
		if err != nil {
			t.Fatalf("Check: %v", err)
		}
		if len(rep.Checks) != 7 {
			t.Fatalf("%d checks", len(rep.Checks))
		}
	})
}

// addSeeds adds FuzzParseSegment's seed files to f.
func addSeeds(f *testing.F) {
	files, err := filepath.Glob("testdata/fuzz/FuzzParseSegment/*")
	if err != nil || len(files) == 0 {
		f.Fatalf("no seeds: %v", err)
	}
	for _, file := range files {
		init, media, err := readSeed(file)
		if err != nil {
			f.Fatalf("%s: %v", file, err)
		}
		f.Add(init, media, []byte(nil), uint(0))
		f.Add(init, media, []byte{0x5a, 0, 0, 0x5a, 0xff}, uint(len(media)/2))
		f.Add(init, bytes.Clone(media[:len(media)/2]), []byte(nil), uint(0))
	}
}

// readSeed reads a seed file of go test's corpus format holding two
// []byte values.
func readSeed(path string) (init, media []byte, err error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	lines := strings.Split(strings.TrimSpace(string(data)), "\n")
	if len(lines) != 3 || lines[0] != "go test fuzz v1" {
		return nil, nil, errors.New("not a corpus file of two values")
	}
	var vals [2][]byte
	for i, l := range lines[1:] {
		q, ok := strings.CutPrefix(l, "[]byte(")
		if q, ok2 := strings.CutSuffix(q, ")"); ok && ok2 {
			s, err := strconv.Unquote(q)
			if err != nil {
				return nil, nil, err
			}
			vals[i] = []byte(s)
			continue
		}
		return nil, nil, errors.New("not a []byte value")
	}
	return vals[0], vals[1], nil
}
