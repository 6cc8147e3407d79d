package playlist

import (
	"bytes"
	"flag"
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
