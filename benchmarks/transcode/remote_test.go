package main

import (
	"context"
	"regexp"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// A smoke run of the remote line on a small clip: both sides encode the
// same ladder through the real LiveOrigin, loopback HTTP and EncodeLive,
// every run's output has the same frames (compareRemote checks it:
// timestamps, keyframes on the grid), one latency per grid instant after the first, and
// the line has every figure. The figures themselves are not checked.
func TestRemoteLine(t *testing.T) {
	t.Parallel()
	ffmpeg.SetLogger(discardLogger())
	clip, err := loadClip(shoaltest.MakeTS(t, 640, 360, 3, 30))
	if err != nil {
		t.Fatal(err)
	}
	cpu, err := transcode.PickAccel(transcode.HWNone, discardLogger())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	figs, err := compareRemote(ctx, clip, remoteConfig{
		base:   cpu.PipelineConfig("ultrafast", time.Second, discardLogger()),
		ladder: media.Ladder{{Height: 360, Bitrate: 700_000}, {Height: 240, Bitrate: 400_000}},
		preset: "ultrafast", segment: time.Second, log: discardLogger(),
	})
	if err != nil {
		t.Fatal(err)
	}
	// A 3 s clip on a 1 s grid: instants 0, 1 and 2 s; 0 is the start.
	if len(figs.localLat) != 2 || len(figs.remoteLat) != 2 {
		t.Fatalf("latencies %v and %v, want 2 each", figs.localLat, figs.remoteLat)
	}
	for i := range figs.localLat {
		if figs.localLat[i] <= 0 || figs.remoteLat[i] <= 0 {
			t.Errorf("instant %d: latencies %v and %v: a keyframe came out before its source went in", i+1, figs.localLat[i], figs.remoteLat[i])
		}
	}
	line := figs.line(3)
	t.Log(line)
	want := regexp.MustCompile(`^bench-transcode-remote clip_s=3 local_s=[0-9.]+ remote_s=[0-9.]+ ratio=[0-9.]+ cpu_ratio=[0-9.]+ ` +
		`latency_local_ms_p50=[0-9.]+ latency_local_ms_p95=[0-9.]+ latency_remote_ms_p50=[0-9.]+ latency_remote_ms_p95=[0-9.]+ ` +
		`added_ms_p50=-?[0-9.]+ added_ms_p95=-?[0-9.]+ start_added_ms=-?[0-9.]+ segments=2$`)
	if !want.MatchString(line) {
		t.Errorf("line %q does not match %s", line, want)
	}
}

func TestPercentile(t *testing.T) {
	t.Parallel()
	ms := func(v ...int) []time.Duration {
		out := make([]time.Duration, len(v))
		for i, x := range v {
			out[i] = time.Duration(x) * time.Millisecond
		}
		return out
	}
	for _, c := range []struct {
		in   []time.Duration
		p    int
		want time.Duration
	}{
		{nil, 50, 0},
		{ms(7), 95, 7 * time.Millisecond},
		{ms(30, 10, 20), 50, 20 * time.Millisecond},
		{ms(4, 3, 2, 1), 50, 2 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 95, 10 * time.Millisecond},
		{ms(1, 2, 3, 4, 5, 6, 7, 8, 9, 10), 90, 9 * time.Millisecond},
		{ms(-5, 5), 50, -5 * time.Millisecond},
	} {
		if got := percentile(c.in, c.p); got != c.want {
			t.Errorf("percentile(%v, %d) = %v, want %v", c.in, c.p, got, c.want)
		}
	}
}
