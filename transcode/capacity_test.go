package transcode

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// The self-benchmark, on this machine with the real FFmpeg libraries and a
// tiny ladder, finds that at least one ladder keeps real time, with rounds
// that are consistent with its figure.
func TestMeasureCapacity(t *testing.T) {
	t.Parallel()
	l, _ := media.ParseLadder("144p:200k")
	c, err := MeasureCapacity(context.Background(), Accel{Backend: ffmpeg.BackendSoftware},
		CapacityConfig{Ladder: l, Preset: "ultrafast", KeyframeInterval: time.Second, Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("%+v", c)
	if c.Ladders < 1 || c.RealtimeX <= 0 || len(c.Rounds) == 0 || c.Rounds[0].Ladders != 1 {
		t.Fatalf("capacity %+v: want at least one ladder, a positive real-time factor and a first round of one ladder", c)
	}
}

// quickBench makes tc's self-benchmark short for the tests below: a 360p
// source of one second, at most 4 ladders at once. It is the same
// measurement, of a smaller source.
func quickBench(tc *Transcoder) {
	tc.bench.SourceHeight, tc.bench.Clip, tc.bench.MaxLadders = 360, time.Second, 4
}

type measured struct {
	c   Capacity
	err error
}

// awaitMeasured waits for the measurement that ch reports.
func awaitMeasured(t *testing.T, ch <-chan measured) measured {
	t.Helper()
	select {
	case m := <-ch:
		return m
	case <-time.After(waitLimit):
		t.Fatalf("no capacity measurement ended within %s", waitLimit)
	}
	return measured{}
}

// writeCache caches c as the capacity measured for cfg in cfg.CacheDir, as
// a transcoder with cfg would after measuring it.
func writeCache(t *testing.T, hub *stream.Hub, cfg Config, c Capacity) {
	t.Helper()
	tc, err := New(cfg, Deps{Log: quiet, Hub: hub})
	if err != nil {
		t.Fatal(err)
	}
	defer tc.watcher.Close()
	if err := tc.cacheCapacity(c); err != nil {
		t.Fatal(err)
	}
}

// With max_ladders -1 the transcoder starts with the default limit,
// measures its capacity while it runs and then takes, advertises and
// enforces the measured figure; a second transcoder with the same cache
// directory takes the figure from the cache at once and measures nothing.
func TestCapacityMeasuredThenCached(t *testing.T) {
	t.Parallel()
	hub := newHub(t)
	cfg := softwareConfig("144p:200k", -1)
	cfg.CacheDir = t.TempDir()
	var logs shoaltest.Buffer
	done := make(chan measured, 1)
	first := startTranscoderWith(t, hub, cfg, slog.New(slog.NewTextHandler(&logs, nil)), func(tc *Transcoder) {
		quickBench(tc)
		if c := tc.Capabilities(); c.LaddersFrom != "default" || c.Ladders != defaultLimit(ffmpeg.BackendSoftware) || c.RealtimeX != 0 {
			t.Errorf("before measuring: %+v, want the default limit", c)
		}
		tc.onMeasured = func(c Capacity, err error) { done <- measured{c, err} }
	})
	m := awaitMeasured(t, done)
	if m.err != nil {
		t.Fatal(m.err)
	}
	n := m.c.Ladders
	caps := first.Capabilities()
	if caps.LaddersFrom != "measured" || caps.Ladders != n || n < 1 || caps.RealtimeX != m.c.RealtimeX || !(caps.RealtimeX > 0) {
		t.Fatalf("after measuring %+v: capabilities %+v", m.c, caps)
	}
	if first.Limit() != n || metric(t, first.reg, "shoal_transcode_ladders_limit") != float64(n) ||
		metric(t, first.reg, "shoal_transcode_ladder_realtime_factor") != m.c.RealtimeX {
		t.Errorf("limit %d, limit gauge %v, real-time factor gauge %v; want %d and %v", first.Limit(),
			metric(t, first.reg, "shoal_transcode_ladders_limit"), metric(t, first.reg, "shoal_transcode_ladder_realtime_factor"), n, m.c.RealtimeX)
	}
	if want := "transcoding capacity measured: " + ladders(n) + " of 144p:200k in real time (one ladder ran "; !strings.Contains(logs.String(), want) {
		t.Errorf("the log does not say %q:\n%s", want, logs.String())
	}
	// The measured figure is the limit claims meet.
	for i := range n {
		if !first.Claim(fmt.Sprint("s", i)) {
			t.Fatalf("claim %d of %d refused", i+1, n)
		}
	}
	if first.Claim("one-too-many") {
		t.Fatalf("a claim past the measured %d was granted", n)
	}
	first.stop()

	var logs2 shoaltest.Buffer
	var again atomic.Int32
	second := startTranscoderWith(t, hub, cfg, slog.New(slog.NewTextHandler(&logs2, nil)), func(tc *Transcoder) {
		quickBench(tc)
		tc.onMeasured = func(Capacity, error) { again.Add(1) }
	})
	if c := second.Capabilities(); c.LaddersFrom != "measured" || c.Ladders != n || c.RealtimeX != m.c.RealtimeX {
		t.Errorf("from the cache: %+v, want %d measured ladders at %vx", c, n, m.c.RealtimeX)
	}
	if metric(t, second.reg, "shoal_transcode_ladder_realtime_factor") != m.c.RealtimeX {
		t.Errorf("real-time factor gauge %v from the cache, want %v", metric(t, second.reg, "shoal_transcode_ladder_realtime_factor"), m.c.RealtimeX)
	}
	second.stop() // Run returns only once any measurement it started ended
	if again.Load() != 0 {
		t.Errorf("the second transcoder measured again instead of using the cache")
	}
	if !strings.Contains(logs2.String(), "cached): "+ladders(n)+" of 144p:200k in real time") {
		t.Errorf("the second transcoder's log does not say it used the cache:\n%s", logs2.String())
	}
}

// A cache that is corrupt, implausible or for another setup is ignored: the
// default limit holds and the capacity is measured again, and cached anew.
func TestCapacityCacheIgnoredWhenUnusable(t *testing.T) {
	t.Parallel()
	hub := newHub(t)
	other := softwareConfig("720p:3000k", -1)
	for _, c := range []struct {
		name    string
		write   func(cfg Config)
		logs    string
		measure bool // let the measurement run and check the new cache
	}{
		{"corrupt", func(cfg Config) {
			if err := os.WriteFile(filepath.Join(cfg.CacheDir, capacityFile), []byte(`{"key":{"method":1,`), 0o644); err != nil {
				t.Fatal(err)
			}
		}, "ignoring the cached transcoding capacity", true},
		{"implausible", func(cfg Config) { writeCache(t, hub, cfg, Capacity{Ladders: 0, RealtimeX: 3}) }, "implausible figures", false},
		{"another setup", func(cfg Config) {
			other.CacheDir = cfg.CacheDir
			writeCache(t, hub, other, Capacity{Ladders: 5, RealtimeX: 3})
		}, "measured for another setup", false},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := softwareConfig("144p:200k", -1)
			cfg.CacheDir = t.TempDir()
			c.write(cfg)
			var logs shoaltest.Buffer
			done := make(chan measured, 1)
			tc := startTranscoderWith(t, hub, cfg, slog.New(slog.NewTextHandler(&logs, nil)), func(tc *Transcoder) {
				quickBench(tc)
				tc.onMeasured = func(c Capacity, err error) { done <- measured{c, err} }
				if caps := tc.Capabilities(); caps.LaddersFrom != "default" || !tc.measure {
					t.Errorf("with the cache %s: %+v (measuring: %v), want the default until measured", c.name, caps, tc.measure)
				}
			})
			if !strings.Contains(logs.String(), c.logs) {
				t.Errorf("the log does not say %q:\n%s", c.logs, logs.String())
			}
			if !c.measure {
				tc.stop()
				return
			}
			m := awaitMeasured(t, done)
			if m.err != nil {
				t.Fatal(m.err)
			}
			b, err := os.ReadFile(filepath.Join(cfg.CacheDir, capacityFile))
			if err != nil {
				t.Fatal(err)
			}
			var cached capacityCache
			if err := json.Unmarshal(b, &cached); err != nil || cached.Ladders != m.c.Ladders || cached.Key.Ladder != "144p:200k" {
				t.Fatalf("the cache after measuring %+v: %v\n%s", m.c, err, b)
			}
		})
	}
}

// An explicit max_ladders is never measured nor replaced, not even by a
// figure cached for the very same setup.
func TestCapacityConfiguredIsNotMeasured(t *testing.T) {
	t.Parallel()
	hub := newHub(t)
	auto := softwareConfig("144p:200k", -1)
	auto.CacheDir = t.TempDir()
	writeCache(t, hub, auto, Capacity{Ladders: 7, RealtimeX: 3})
	cfg := softwareConfig("144p:200k", 2)
	cfg.CacheDir = auto.CacheDir
	var measured atomic.Int32
	tc := startTranscoderWith(t, hub, cfg, quiet, func(tc *Transcoder) {
		quickBench(tc)
		tc.onMeasured = func(Capacity, error) { measured.Add(1) }
	})
	tc.stop()
	if c := tc.Capabilities(); c.Ladders != 2 || c.LaddersFrom != "configured" || c.RealtimeX != 0 {
		t.Errorf("capabilities %+v, want 2 configured ladders", c)
	}
	if tc.Limit() != 2 || metric(t, tc.reg, "shoal_transcode_ladders_limit") != 2 || measured.Load() != 0 {
		t.Errorf("limit %d, gauge %v, measurements %d; want 2, 2, 0", tc.Limit(), metric(t, tc.reg, "shoal_transcode_ladders_limit"), measured.Load())
	}
}
