package nodeproto

import (
	"bytes"
	"encoding/binary"
	"errors"
	"io"
	"reflect"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

func validLiveSource() LiveSource {
	return LiveSource{
		Stream: "s1",
		Tracks: []LiveTrack{
			{Codec: media.CodecH264, ClockRate: 90000, SPS: []byte{0x67, 1, 2}, PPS: []byte{0x68, 3}, Width: 1280, Height: 720},
			{Codec: media.CodecAAC, ClockRate: 48000, AudioConfig: []byte{0x11, 0x90}, SampleRate: 48000, Channels: 2},
		},
		Video: 0, Ladder: "720p:3000k,360p:700k", Preset: "veryfast", SegmentMillis: 2000, KeyframeAnchor: 123456,
	}
}

func validLiveRenditions() LiveRenditions {
	return LiveRenditions{Stream: "s1", Rungs: []LiveRung{{"720p", 1280, 720, 3_000_000}, {"360p", 640, 360, 700_000}}}
}

// liveSample is a body with every kind of frame.
func liveSample(t testing.TB) ([]byte, []LiveFrame) {
	var buf bytes.Buffer
	flushes := 0
	w := NewLiveWriter(&buf, func() error { flushes++; return nil })
	src, rend := validLiveSource(), validLiveRenditions()
	aus := []*media.AccessUnit{
		{Track: 0, PTS: 3000, DTS: 0, Keyframe: true, Payload: [][]byte{{0x67, 1, 2}, {0x68, 3}, {0x65, 9, 9, 9}},
			NTP: time.Unix(1700000000, 123456789)},
		{Track: 1, PTS: -20, DTS: -20, Keyframe: true, Payload: [][]byte{{1, 2, 3}}},
		{Track: 0, PTS: 9000, DTS: 3000, Payload: [][]byte{{0x41, 7}}},
	}
	want := []LiveFrame{{Kind: LiveKindSource, Source: &src}, {Kind: LiveKindRenditions, Renditions: &rend}}
	if err := w.WriteSource(src); err != nil {
		t.Fatal(err)
	}
	if err := w.WriteRenditions(rend); err != nil {
		t.Fatal(err)
	}
	for _, au := range aus {
		if err := w.WriteAU(au); err != nil {
			t.Fatal(err)
		}
		want = append(want, LiveFrame{Kind: LiveKindAU, AU: au})
	}
	if err := w.WriteTick(); err != nil {
		t.Fatal(err)
	}
	want = append(want, LiveFrame{Kind: LiveKindTick})
	if flushes != len(want) {
		t.Fatalf("%d flushes for %d frames", flushes, len(want))
	}
	return buf.Bytes(), want
}

func readAllLive(body []byte) ([]LiveFrame, error) {
	r := NewLiveReader(bytes.NewReader(body))
	var got []LiveFrame
	for {
		f, err := r.Next()
		if err != nil {
			return got, err
		}
		got = append(got, f)
	}
}

func TestLiveFramingRoundTrip(t *testing.T) {
	t.Parallel()
	body, want := liveSample(t)
	got, err := readAllLive(body)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("end: %v", err)
	}
	if len(got) != len(want) {
		t.Fatalf("%d frames, want %d", len(got), len(want))
	}
	for i := range want {
		if want[i].AU != nil && got[i].AU != nil && !want[i].AU.NTP.IsZero() {
			if !got[i].AU.NTP.Equal(want[i].AU.NTP) {
				t.Fatalf("frame %d NTP %v, want %v", i, got[i].AU.NTP, want[i].AU.NTP)
			}
			got[i].AU.NTP = want[i].AU.NTP
		}
		if !reflect.DeepEqual(got[i], want[i]) {
			t.Fatalf("frame %d:\n got %+v\nwant %+v", i, got[i], want[i])
		}
	}
	// Cut anywhere inside a frame: an unexpected EOF, never a frame made up.
	for cut := 1; cut < len(body); cut++ {
		frames, err := readAllLive(body[:cut])
		if errors.Is(err, io.EOF) {
			continue // a cut between two frames
		}
		if !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("cut at %d: %v", cut, err)
		}
		if len(frames) >= len(want) {
			t.Fatalf("cut at %d: %d frames", cut, len(frames))
		}
	}
}

func TestLiveFramingBounds(t *testing.T) {
	t.Parallel()
	frame := func(kind byte, body []byte) []byte {
		b := []byte{kind, 0, 0, 0, 0}
		binary.BigEndian.PutUint32(b[1:], uint32(len(body)))
		return append(b, body...)
	}
	au := func(track, flags byte, nalus ...[]byte) []byte {
		b := []byte{track, flags}
		b = binary.BigEndian.AppendUint64(b, 90000)
		b = binary.BigEndian.AppendUint64(b, 90000)
		if flags&2 != 0 {
			b = binary.BigEndian.AppendUint64(b, 1)
		}
		b = binary.BigEndian.AppendUint16(b, uint16(len(nalus)))
		for _, n := range nalus {
			b = binary.BigEndian.AppendUint32(b, uint32(len(n)))
			b = append(b, n...)
		}
		return b
	}
	if _, err := readAllLive(frame(LiveKindAU, au(0, 3, []byte{1}))); !errors.Is(err, io.EOF) {
		t.Fatalf("a good access unit: %v", err)
	}
	huge := []byte{LiveKindAU, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(huge[1:], MaxLiveFrameBytes+1)
	bigHeader := []byte{LiveKindSource, 0, 0, 0, 0}
	binary.BigEndian.PutUint32(bigHeader[1:], MaxLiveHeaderBytes+1)
	manyNALUs := make([][]byte, MaxLiveNALUs+1)
	for i := range manyNALUs {
		manyNALUs[i] = []byte{1}
	}
	src := validLiveSource()
	src.SegmentMillis = 0
	badSrc := mustJSON(src)
	src = validLiveSource()
	src.Video = 1
	audioAsVideo := mustJSON(src)
	rend := validLiveRenditions()
	rend.Rungs[1].Name = rend.Rungs[0].Name
	dupRung := mustJSON(rend)
	ts := au(0, 0, []byte{1})
	binary.BigEndian.PutUint64(ts[2:], uint64(MaxLiveTimestamp+1))
	for name, c := range map[string]struct {
		body []byte
		want string
	}{
		"unknown kind":        {frame(9, nil), "unknown kind"},
		"frame too large":     {huge, "at most"},
		"header too large":    {bigHeader, "at most"},
		"tick with a body":    {frame(LiveKindTick, []byte{1}), "at most 0"},
		"no NAL unit":         {frame(LiveKindAU, au(0, 0)), "NAL units"},
		"too many NAL units":  {frame(LiveKindAU, au(0, 0, manyNALUs...)), "NAL units"},
		"empty NAL unit":      {frame(LiveKindAU, au(0, 0, []byte{})), "empty"},
		"unknown flag":        {frame(LiveKindAU, au(0, 4, []byte{1})), "flags"},
		"truncated":           {frame(LiveKindAU, []byte{0, 0, 1}), "truncated"},
		"trailing bytes":      {frame(LiveKindAU, append(au(0, 0, []byte{1}), 7)), "after the last"},
		"NALU past the end":   {frame(LiveKindAU, au(0, 0, []byte{1})[:24]), "longer than the frame"},
		"timestamp too large": {frame(LiveKindAU, ts), "timestamp"},
		"bad source header":   {frame(LiveKindSource, badSrc), "segment_ms"},
		"audio as video":      {frame(LiveKindSource, audioAsVideo), `"video"`},
		"unknown field":       {frame(LiveKindSource, []byte(`{"stream":"a","x":1}`)), "unknown field"},
		"duplicate rung":      {frame(LiveKindRenditions, dupRung), "distinct"},
		"header not JSON":     {frame(LiveKindRenditions, []byte("{")), "JSON"},
	} {
		_, err := readAllLive(c.body)
		if err == nil || errors.Is(err, io.EOF) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want an error with %q", name, err, c.want)
		}
	}
	var buf bytes.Buffer
	w := NewLiveWriter(&buf, nil)
	if err := w.WriteAU(&media.AccessUnit{Track: 256, Payload: [][]byte{{1}}}); err == nil {
		t.Error("wrote track 256")
	}
	if err := w.WriteAU(&media.AccessUnit{Payload: manyNALUs}); err == nil {
		t.Error("wrote too many NAL units")
	}
	if err := w.WriteSource(LiveSource{}); err == nil {
		t.Error("wrote an empty source header")
	}
}

// The origin and workers read live bodies from each other: whatever the
// bytes, reading never panics and what it accepts is written back the
// same. Seeds: testdata/fuzz/FuzzDecodeLiveFrames.
func FuzzDecodeLiveFrames(f *testing.F) {
	body, _ := liveSample(f)
	f.Add(body)
	f.Add([]byte{LiveKindAU, 0, 0, 0, 3, 0, 0, 0})
	f.Fuzz(func(t *testing.T, body []byte) {
		frames, _ := readAllLive(body)
		var buf bytes.Buffer
		w := NewLiveWriter(&buf, nil)
		for _, fr := range frames {
			var err error
			switch fr.Kind {
			case LiveKindSource:
				err = w.WriteSource(*fr.Source)
			case LiveKindRenditions:
				err = w.WriteRenditions(*fr.Renditions)
			case LiveKindAU:
				if len(fr.AU.Payload) == 0 || len(fr.AU.Payload) > MaxLiveNALUs {
					t.Fatalf("accepted %d NAL units", len(fr.AU.Payload))
				}
				err = w.WriteAU(fr.AU)
			case LiveKindTick:
				err = w.WriteTick()
			}
			if err != nil {
				t.Fatalf("accepted a frame it cannot write: %v", err)
			}
		}
		again, err := readAllLive(buf.Bytes())
		if !errors.Is(err, io.EOF) || len(again) != len(frames) {
			t.Fatalf("round trip: %d frames of %d, %v", len(again), len(frames), err)
		}
		for i := range frames {
			if !reflect.DeepEqual(again[i], frames[i]) {
				t.Fatalf("round trip of frame %d:\n%+v\n%+v", i, again[i], frames[i])
			}
		}
	})
}
