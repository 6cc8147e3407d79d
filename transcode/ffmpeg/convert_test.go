package ffmpeg

import (
	"errors"
	"io"
	"os"
	"testing"
	"time"

	"github.com/pion/webrtc/v4/pkg/media/ivfreader"
	"github.com/pion/webrtc/v4/pkg/media/oggreader"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/testutil"
)

// readOpus returns the Opus packets of an Ogg file made by MakeOpusOgg with
// their PTS (48 kHz).
func readOpus(t *testing.T, path string) []*media.AccessUnit {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, _, err := oggreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	var aus []*media.AccessUnit
	var pts int64
	for {
		page, _, err := r.ParseNextPage()
		if errors.Is(err, io.EOF) {
			return aus
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(page) == 0 || string(page[:min(8, len(page))]) == "OpusTags" {
			continue
		}
		aus = append(aus, &media.AccessUnit{PTS: pts, DTS: pts, Keyframe: true, Payload: [][]byte{page}})
		pts += 960
	}
}

func TestAudioConverterOpusToAAC(t *testing.T) {
	t.Parallel()
	aus := readOpus(t, testutil.MakeOpusOgg(t, 3))
	if len(aus) < 140 {
		t.Fatalf("only %d Opus packets in 3 s", len(aus))
	}
	c, err := NewAudioConverter(media.Track{Codec: media.CodecOpus, ClockRate: 48000, SampleRate: 48000, Channels: 2}, 96000, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if tr := c.Track(); tr.Codec != media.CodecAAC || tr.SampleRate != 48000 || len(tr.AudioConfig) == 0 {
		t.Fatalf("track %+v", tr)
	}
	var out []*media.AccessUnit
	emit := func(au *media.AccessUnit) { out = append(out, au) }
	// The stream starts 1 s in, and 500 ms of packets (25) are lost in the
	// middle: the output starts where the input did and jumps over the gap.
	const offset = 48000
	lostFrom, lostTo := 50, 75
	for i, au := range aus {
		if i >= lostFrom && i < lostTo {
			continue
		}
		in := *au
		in.PTS += offset
		in.DTS = in.PTS
		if err := c.Push(&in, emit); err != nil {
			t.Fatal(err)
		}
	}
	// Garbage is skipped, not fatal.
	if err := c.Push(&media.AccessUnit{PTS: aus[len(aus)-1].PTS + offset + 960, Payload: [][]byte{{0xff, 0xfe, 0xfd}}}, emit); err != nil {
		t.Fatal(err)
	}
	if err := c.Flush(emit); err != nil {
		t.Fatal(err)
	}
	if len(out) == 0 {
		t.Fatal("no AAC frames")
	}
	// The first frame carries the encoder's priming: 1024 samples early.
	if got := out[0].PTS; got < offset-2048 || got > offset {
		t.Errorf("first AAC frame at %d samples, want about %d", got, offset)
	}
	end := out[len(out)-1].PTS + 1024
	want := int64(offset + len(aus)*960)
	if d := time.Duration(end-want) * time.Second / 48000; d < -100*time.Millisecond || d > 100*time.Millisecond {
		t.Errorf("AAC ends at %d samples, want about %d (the gap kept): off by %s", end, want, d)
	}
	jumps := 0
	for i := 1; i < len(out); i++ {
		switch d := out[i].PTS - out[i-1].PTS; {
		case d < 1024:
			t.Fatalf("AAC frame %d at %d after %d", i, out[i].PTS, out[i-1].PTS)
		case d > 1024:
			jumps++
		}
	}
	if jumps != 1 {
		t.Errorf("%d jumps in the AAC timeline, want 1 (the lost packets)", jumps)
	}
}

func TestPipelineDecodesVP8(t *testing.T) {
	t.Parallel()
	f, err := os.Open(testutil.MakeVP8IVF(t, 320, 240, 2, 30))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	r, hdr, err := ivfreader.NewWith(f)
	if err != nil {
		t.Fatal(err)
	}
	src := media.Track{Codec: media.CodecVP8, ClockRate: 90000, Width: int(hdr.Width), Height: int(hdr.Height)}
	p, err := New(Config{Backend: BackendSoftware, Preset: "ultrafast", KeyframeInterval: time.Second}, src,
		[]Rung{{Name: "src", Height: 240, Bitrate: 500_000}})
	if err != nil {
		t.Fatal(err)
	}
	defer p.Close()
	var keys, frames int
	emit := func(_ int, au *media.AccessUnit) {
		frames++
		if au.Keyframe {
			keys++
			if tr := p.OutputRungs()[0].Track(au); len(tr.SPS) == 0 || len(tr.PPS) == 0 {
				t.Error("an H.264 keyframe without SPS and PPS")
			}
		}
	}
	n := 0
	for {
		frame, fh, err := r.ParseNextFrame()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		pts := int64(fh.Timestamp) * 90000 * int64(hdr.TimebaseNumerator) / int64(hdr.TimebaseDenominator)
		au := &media.AccessUnit{PTS: pts, DTS: pts, Keyframe: frame[0]&1 == 0, Payload: [][]byte{frame}}
		if err := p.Push(au, emit); err != nil {
			t.Fatal(err)
		}
		n++
	}
	if err := p.Flush(emit); err != nil {
		t.Fatal(err)
	}
	if frames != n || keys < 2 {
		t.Errorf("%d H.264 frames (%d keyframes) from %d VP8 frames", frames, keys, n)
	}
}

func TestAudioConverterAACToOpus(t *testing.T) {
	t.Parallel()
	// AAC from an Opus tone, then back to Opus: what a WHEP viewer of an
	// RTMP source gets.
	toAAC, err := NewAudioConverter(media.Track{Codec: media.CodecOpus, ClockRate: 48000, SampleRate: 48000, Channels: 2}, 128000, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer toAAC.Close()
	var aac []*media.AccessUnit
	for _, au := range readOpus(t, testutil.MakeOpusOgg(t, 2)) {
		if err := toAAC.Push(au, func(a *media.AccessUnit) { aac = append(aac, a) }); err != nil {
			t.Fatal(err)
		}
	}
	toOpus, err := NewAudioConverterTo(toAAC.Track(), media.CodecOpus, 64000, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer toOpus.Close()
	var opus []*media.AccessUnit
	for _, au := range aac {
		if err := toOpus.Push(au, func(a *media.AccessUnit) { opus = append(opus, a) }); err != nil {
			t.Fatal(err)
		}
	}
	if tr := toOpus.Track(); tr.Codec != media.CodecOpus || tr.ClockRate != 48000 {
		t.Fatalf("track %+v", tr)
	}
	if err := toOpus.Flush(func(a *media.AccessUnit) { opus = append(opus, a) }); err != nil {
		t.Fatal(err)
	}
	if len(opus) < 80 {
		t.Fatalf("%d Opus frames from 2 s", len(opus))
	}
	for i := 1; i < len(opus); i++ {
		if d := opus[i].PTS - opus[i-1].PTS; d != 960 {
			t.Fatalf("Opus frame %d is %d samples after the last", i, d)
		}
	}
}
