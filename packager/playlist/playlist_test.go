package playlist

import (
	"bytes"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func golden(t *testing.T, name string, got []byte) {
	t.Helper()
	path := filepath.Join("testdata", name)
	if *update {
		if err := os.WriteFile(path, got, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("%v (run with -update to create)", err)
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("%s differs from golden file:\n--- got\n%s\n--- want\n%s", name, got, want)
	}
}

func segs() []Segment {
	return []Segment{
		{URI: "a-0.m4s", Duration: 2.0, Init: "init-a-0.mp4"},
		{URI: "a-1.m4s", Duration: 2.002, Init: "init-a-0.mp4"},
		{URI: "b-2.m4s", Duration: 1.5, Init: "init-b-0.mp4", Discontinuity: true},
		{URI: "b-3.m4s", Duration: 2.0, Init: "init-b-0.mp4"},
		{URI: "b-4.m4s", Duration: 2.4, Init: "init-b-0.mp4"},
	}
}

func TestGoldenMedia(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name string
		m    Media
	}{
		{"live_window.m3u8", Media{Kind: Live, Version: 7, TargetDuration: 2, Segments: segs(), Window: 3}},
		{"live_window_after_disc.m3u8", Media{Kind: Live, Version: 7, TargetDuration: 2, Segments: segs(), Window: 2}},
		{"event.m3u8", Media{Kind: Event, Version: 7, TargetDuration: 2, Segments: segs()}},
		{"event_ended.m3u8", Media{Kind: Event, Version: 7, TargetDuration: 2, Segments: segs(), Ended: true}},
		{"vod.m3u8", Media{Kind: VOD, Version: 7, TargetDuration: 2, Segments: segs()}},
		{"ts_live.m3u8", Media{Kind: Live, Version: 3, TargetDuration: 2, Segments: []Segment{{URI: "x-0.ts", Duration: 2}}, FirstSeq: 10}},
		{"empty_live.m3u8", Media{Kind: Live, Version: 7, TargetDuration: 2}},
		{"live_pdt.m3u8", Media{Kind: Live, Version: 7, TargetDuration: 2, Window: 2, Segments: []Segment{
			{URI: "s-0.m4s", Duration: 2, Init: "init.mp4", Time: time.Date(2026, 12, 4, 20, 0, 0, 0, time.UTC)},
			{URI: "s-1.m4s", Duration: 2.002, Init: "init.mp4", Time: time.Date(2026, 12, 4, 20, 0, 2, 0, time.UTC)},
			{URI: "s-2.m4s", Duration: 1.998, Init: "init.mp4", Time: time.Date(2026, 12, 4, 20, 0, 4, 2e6, time.UTC)},
		}}},
	}
	for _, c := range cases {
		got, err := EncodeMedia(c.m)
		if err != nil {
			t.Fatal(err)
		}
		again, _ := EncodeMedia(c.m)
		if !bytes.Equal(got, again) {
			t.Fatalf("%s: output is not deterministic", c.name)
		}
		golden(t, c.name, got)
	}
}

func TestGoldenMaster(t *testing.T) {
	t.Parallel()
	m := Master{
		Version: 7,
		Variants: []Variant{
			{URI: "source/index.m3u8", Bandwidth: 3200000, AverageBandwidth: 2900000, Codecs: []string{"avc1.64001f", "mp4a.40.2"}, Width: 1280, Height: 720, FrameRate: 30, Name: "source"},
			{URI: "360p/index.m3u8", Bandwidth: 800000, Codecs: []string{"avc1.42c01e", "mp4a.40.2"}, Width: 640, Height: 360, Name: "360p"},
		},
		Audio: &Audio{URI: "audio/index.m3u8", Name: "default", Channels: 2},
	}
	golden(t, "master.m3u8", EncodeMaster(m))
	golden(t, "master_video_only.m3u8", EncodeMaster(Master{Version: 7, Variants: m.Variants[:1]}))
}

func llMedia() Media {
	s := segs()
	s[3].Parts = []Part{{URI: "b-3-p0.m4s", Duration: 0.5, Independent: true}, {URI: "b-3-p1.m4s", Duration: 0.5}, {URI: "b-3-p2.m4s", Duration: 0.5}, {URI: "b-3-p3.m4s", Duration: 0.5}}
	s[4].Parts = []Part{{URI: "b-4-p0.m4s", Duration: 0.5, Independent: true}, {URI: "b-4-p1.m4s", Duration: 0.5}, {URI: "b-4-p2.m4s", Duration: 0.5}, {URI: "b-4-p3.m4s", Duration: 0.5}, {URI: "b-4-p4.m4s", Duration: 0.4}}
	return Media{Kind: Live, Version: 7, TargetDuration: 2, Segments: s, Window: 3, FirstSeq: 10, PartTarget: 0.5,
		Pending: []Part{{URI: "b-5-p0.m4s", Duration: 0.5, Independent: true}}, Hint: "b-5-p1.m4s",
		Reports: []RenditionReport{{URI: "../360p/index.m3u8", LastMSN: 15, LastPart: 0}, {URI: "../audio/index.m3u8", LastMSN: 14, LastPart: -1}}}
}

func TestGoldenLowLatency(t *testing.T) {
	t.Parallel()
	got, err := EncodeMedia(llMedia())
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "ll_live.m3u8", got)
	m := llMedia()
	m.Pending, m.Hint, m.NextDiscontinuity, m.NextInit = nil, "b-5-p0.m4s", true, "init-c-0.mp4"
	got, err = EncodeMedia(m)
	if err != nil {
		t.Fatal(err)
	}
	golden(t, "ll_live_next_discontinuity.m3u8", got)
}

// A recording written as Header plus one AppendSegment per segment is
// byte for byte what EncodeMedia renders for the whole list.
func TestAppendMatchesEncode(t *testing.T) {
	t.Parallel()
	m := Media{Kind: Event, Version: 7, TargetDuration: 3, Segments: segs()}
	want, err := EncodeMedia(m)
	if err != nil {
		t.Fatal(err)
	}
	got := Header(m)
	prev := ""
	for _, s := range m.Segments {
		got = AppendSegment(got, s, prev)
		prev = s.Init
	}
	if !bytes.Equal(got, want) {
		t.Fatalf("appended:\n%s\nencoded:\n%s", got, want)
	}
}

// A DVR playlist declares delta updates; its _HLS_skip=YES answer replaces
// the segments older than CAN-SKIP-UNTIL with EXT-X-SKIP.
func TestGoldenDelta(t *testing.T) {
	t.Parallel()
	var s []Segment
	for i := 0; i < 10; i++ {
		s = append(s, Segment{URI: fmt.Sprintf("d-%d.m4s", i), Duration: 2, Init: "init-d-0.mp4", Discontinuity: i == 3})
	}
	m := Media{Kind: Live, Version: 7, TargetDuration: 2, Segments: s, FirstSeq: 40, FirstDisc: 2, CanSkipUntil: 12}
	full, _ := EncodeMedia(m)
	golden(t, "dvr_full.m3u8", full)
	m.Skip = true
	delta, _ := EncodeMedia(m)
	golden(t, "dvr_delta.m3u8", delta)
}
