package ingest

import (
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
)

func TestStreamKeyFromPath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{"/live/abc": "abc", "live/abc": "abc", "/live/abc/": "abc", "/live/": "", "/x/abc": "", "/live/a/b": "", "/live/a?b": ""} {
		got, err := StreamKeyFromPath("rtsp", path)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%q: %q %v, want %q", path, got, err, want)
		}
	}
	if _, err := StreamKeyFromPath("rtmp", "/x/abc"); err == nil || !strings.Contains(err.Error(), "rtmp://HOST/live/<stream_key>") {
		t.Errorf("error %v does not say where to publish", err)
	}
}

func TestDescribeAndMetrics(t *testing.T) {
	t.Parallel()
	got := Describe([]media.Track{{Codec: media.CodecH264, Width: 1280, Height: 720}, {Codec: media.CodecAAC, SampleRate: 48000, Channels: 2}})
	if strings.Join(got, ", ") != "h264 1280x720, aac 48000Hz 2ch" {
		t.Fatalf("Describe = %v", got)
	}
	reg := prometheus.NewRegistry()
	// Two protocols share the metric names, told apart by their label.
	if _, err := NewMetrics("rtmp", reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics("rtsp", reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics("rtsp", reg); err == nil {
		t.Fatal("registering one protocol twice was accepted")
	}
}
