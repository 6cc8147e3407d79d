package remote

import (
	"context"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	shoaltest "github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// A worker that encodes the ladder at a quarter of its bitrates is caught
// by the origin's sampled checks (of every cell here): it is dropped from
// the stream and the honest worker takes over, with no frame missing and
// the keyframes on the grid, equal across rungs (testRemoteLiveFailover's
// checks). The failed check counts in the cheat's record and, its third,
// quarantines it; it is credited nothing. The honest worker's checked
// cells pass, and its pixels and verified cells are credited.
func TestRemoteLiveCheatCaught(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	store, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	ctx := t.Context()
	if _, err := store.AddWorkerFigures(ctx, "cheat", map[string]int64{routing.WorkVerifyFailed: QuarantineAfter - 1}); err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	credited := map[string]map[string]int64{}
	figures := func(_ context.Context, node string, deltas map[string]int64) error {
		mu.Lock()
		defer mu.Unlock()
		if credited[node] == nil {
			credited[node] = map[string]int64{}
		}
		for k, v := range deltas {
			credited[node][k] += v
		}
		return nil
	}
	sc := &liveScenario{workers: []string{"cheat", "honest"}, to: "worker", cheat: "cheat", verify: 1,
		deps: LiveDeps{Queue: store, Figures: figures}}
	reg := testRemoteLiveFailover(t, sc)
	sc.lo.WaitChecks()

	failed := counterValue(t, reg, "shoal_transcode_remote_live_checks_total", "failed")
	passed := counterValue(t, reg, "shoal_transcode_remote_live_checks_total", "passed")
	errs := counterValue(t, reg, "shoal_transcode_remote_live_checks_total", "error")
	skipped := counterValue(t, reg, "shoal_transcode_remote_live_checks_total", "skipped")
	t.Logf("checks: %v passed, %v failed, %v errors, %v skipped", passed, failed, errs, skipped)
	if failed < 1 || passed < 1 || errs != 0 {
		t.Errorf("checks: %v passed, %v failed, %v errors; want the cheat's to fail, the honest worker's to pass", passed, failed, errs)
	}
	stats, err := store.WorkerStats(ctx, []string{"cheat", "honest"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("records: cheat %+v, honest %+v", stats["cheat"], stats["honest"])
	q, err := store.Quarantines(ctx, []string{"cheat", "honest"})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := q["cheat"]; !ok {
		t.Error("the cheat is not quarantined after its third failed check")
	}
	if _, ok := q["honest"]; ok {
		t.Error("the honest worker is quarantined")
	}
	mu.Lock()
	defer mu.Unlock()
	if c := credited["cheat"]; c != nil {
		t.Errorf("the cheat was credited %v", c)
	}
	h := credited["honest"]
	if h[routing.FigureTranscodedPixels] <= 0 || h[routing.FigureSegmentsVerified] < 1 {
		t.Errorf("the honest worker was credited %v, want its pixels and verified cells", h)
	}
}

// samplerEnv is a live origin with one assignment started for a 640x360
// source on a 1 s grid anchored at 0, its sampler fed by hand.
type samplerEnv struct {
	lo    *LiveOrigin
	a     *liveAssignment
	s     *liveSampler
	store *routing.Store
	reg   *prometheus.Registry
	key   *media.AccessUnit // a source keyframe (parameter sets in band)
	delta *media.AccessUnit // a source non-keyframe
}

func newSamplerEnv(t *testing.T, fraction float64) *samplerEnv {
	t.Helper()
	return newSamplerEnvSized(t, fraction, 640, 360)
}

// newSamplerEnvSized is newSamplerEnv for a w x h source.
func newSamplerEnvSized(t *testing.T, fraction float64, w, h int) *samplerEnv {
	t.Helper()
	rs := redistest.Start(t)
	store, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	track, aus := demuxClip(t, shoaltest.MakeTS(t, w, h, 1, 30))
	reg := prometheus.NewRegistry()
	lo, err := NewLiveOrigin(LiveConfig{VerifyFraction: fraction}, LiveDeps{Log: slog.New(slog.DiscardHandler), Registerer: reg, Queue: store})
	if err != nil {
		t.Fatal(err)
	}
	if _, ok, _ := claimSoon(t, lo, "w1"); ok {
		t.Fatal("a claim with no ladder handed out")
	}
	rl, ok := lo.Reserve("s1", nil)
	if !ok {
		t.Fatal("no worker reserved")
	}
	a := rl.(*liveAssignment)
	a.Start(nodeproto.LiveSource{Stream: "s1", Tracks: []nodeproto.LiveTrack{nodeproto.LiveTrackOf(track)}, Video: 0,
		Ladder: "360p:700k,240p:400k", Preset: "ultrafast", SegmentMillis: 1000})
	if a.sampler == nil {
		t.Fatal("no sampler")
	}
	e := &samplerEnv{lo: lo, a: a, s: a.sampler, store: store, reg: reg}
	for _, au := range aus {
		if au.Keyframe && e.key == nil {
			e.key = au
		}
		if !au.Keyframe && e.delta == nil {
			e.delta = au
		}
	}
	return e
}

// claimSoon makes worker id known to lo: a claim that finds nothing.
func claimSoon(t *testing.T, lo *LiveOrigin, id string) (nodeproto.LiveAssignment, bool, error) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	return lo.ClaimLive(ctx, nodeproto.LiveWorker{ID: id, Ladders: 2, LastSeen: time.Now()})
}

// sourceAt feeds the sampler a source frame at pts (90 kHz).
func (e *samplerEnv) sourceAt(pts int64, key bool) {
	au := *e.delta
	if key {
		au = *e.key
	}
	au.PTS, au.DTS = pts, pts
	e.s.onSource(&au)
}

func rungsHeader(w360 int) nodeproto.LiveFrame {
	return nodeproto.LiveFrame{Renditions: &nodeproto.LiveRenditions{Stream: "s1", Rungs: []nodeproto.LiveRung{
		{Name: "360p", Width: w360, Height: 360, Bitrate: 700_000}, {Name: "240p", Width: 428, Height: 240, Bitrate: 400_000}}}}
}

func outAU(rung int, pts int64, key bool) nodeproto.LiveFrame {
	return nodeproto.LiveFrame{AU: &media.AccessUnit{Track: rung, PTS: pts, DTS: pts, Keyframe: key, Payload: [][]byte{{0x65, 1}}}}
}

// Output that breaks the ladder's structure drops the worker at once,
// sampled or not: rungs at other sizes than the ladder makes, rungs not
// in the ladder, frames ahead of the source, a rung with no keyframe for
// a whole cell.
func TestLiveStructureRefused(t *testing.T) {
	t.Parallel()
	for name, c := range map[string]struct {
		frames []nodeproto.LiveFrame
		want   string
	}{
		"claimed width": {[]nodeproto.LiveFrame{rungsHeader(8192)}, "the ladder's is 360p, 640x360 at 700000 b/s"},
		"a rung short": {[]nodeproto.LiveFrame{{Renditions: &nodeproto.LiveRenditions{Stream: "s1", Rungs: []nodeproto.LiveRung{
			{Name: "240p", Width: 428, Height: 240, Bitrate: 400_000}}}}}, "it sent 1 rungs; the ladder has 2"},
		"unknown rung": {[]nodeproto.LiveFrame{{Renditions: &nodeproto.LiveRenditions{Stream: "s1", Rungs: []nodeproto.LiveRung{
			{Name: "1080p", Width: 1920, Height: 1080, Bitrate: 5_000_000}, {Name: "240p", Width: 428, Height: 240, Bitrate: 400_000}}}}},
			"its rung 0 is 1080p"},
		"another bitrate": {[]nodeproto.LiveFrame{rungsHeader(640), func() nodeproto.LiveFrame {
			f := rungsHeader(640)
			f.Renditions.Rungs[1].Bitrate++
			return f
		}()}, "its rung 1 is 240p, 428x240 at 400001 b/s"},
		"swapped rungs": {[]nodeproto.LiveFrame{func() nodeproto.LiveFrame {
			f := rungsHeader(640)
			r := f.Renditions.Rungs
			r[0], r[1] = r[1], r[0]
			return f
		}()}, "its rung 0 is 240p"},
		"ahead of the source": {[]nodeproto.LiveFrame{rungsHeader(640), outAU(0, 0, true), outAU(0, 400_000, false)}, "ahead of the source"},
		"no keyframe": {[]nodeproto.LiveFrame{rungsHeader(640), outAU(1, 0, true), outAU(1, 90_000, false), outAU(1, 183_000, false)},
			"no keyframe since 0s"},
	} {
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			e := newSamplerEnv(t, 0)
			for pts := int64(0); pts <= 270_000; pts += 3000 {
				e.sourceAt(pts, pts%90_000 == 0)
			}
			var err error
			for _, f := range c.frames {
				if err = e.s.onOutput(f); err != nil {
					break
				}
			}
			if err == nil || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("err %v, want %q", err, c.want)
			}
			if n := counterValue(t, e.reg, "shoal_transcode_remote_live_checks_total", "refused"); n != 1 {
				t.Errorf("refused: %v", n)
			}
		})
	}
}

// The same renditions header sent again keeps the cells being collected
// (a worker cannot shed its picks that way); the credit is paid once, at
// most one frame per source frame per rung, at the ladder's sizes.
func TestLiveSamplerHeaderAndCredit(t *testing.T) {
	t.Parallel()
	e := newSamplerEnv(t, 1)
	for pts := int64(0); pts < 90_000; pts += 3000 {
		e.sourceAt(pts, pts == 0)
	}
	if err := e.s.onOutput(rungsHeader(640)); err != nil {
		t.Fatal(err)
	}
	if err := e.s.onOutput(outAU(0, 0, true)); err != nil {
		t.Fatal(err)
	}
	if err := e.s.onOutput(rungsHeader(640)); err != nil {
		t.Fatal(err)
	}
	e.s.mu.Lock()
	open := len(e.s.open)
	e.s.mu.Unlock()
	if open != 1 {
		t.Fatalf("%d cells open after the same header again, want 1", open)
	}
	// 30 source frames; the worker sends 60 of the 240p rung.
	for i := range 59 {
		if err := e.s.onOutput(outAU(1, int64(i)*1500, i == 0)); err != nil {
			t.Fatal(err)
		}
	}
	e.a.Close()
	e.a.Close()
	e.lo.WaitChecks()
	stats, err := e.store.WorkerStats(t.Context(), []string{"w1"})
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(1*640*360 + 30*428*240); stats["w1"].TranscodedPixels != want {
		t.Errorf("credited %d pixels, want %d (one 360p frame, 30 of 240p)", stats["w1"].TranscodedPixels, want)
	}
}

// A cell's latency runs from the source frame that starts it going out to
// the first rung's keyframe for it coming back; the cell the worker
// started in, cells that started before its output began, other rungs and
// other frames are not samples.
func TestLatencyProbe(t *testing.T) {
	t.Parallel()
	var p latencyProbe
	p.start(nodeproto.LiveSource{Tracks: []nodeproto.LiveTrack{{Codec: media.CodecH264, ClockRate: 90000}}, SegmentMillis: 1000, KeyframeAnchor: 0})
	t0 := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	at := func(ms int) time.Time { return t0.Add(time.Duration(ms) * time.Millisecond) }
	for i := range 60 { // 2 s at 30 fps, sent in real time
		p.sent(&media.AccessUnit{PTS: int64(i) * 3000}, at(i*33))
		if i == 5 { // the worker's output begins
			if _, ok := p.received(nodeproto.LiveFrame{AU: &media.AccessUnit{Track: 0, PTS: 0, Keyframe: true}}, at(170)); ok {
				t.Error("the first cell (the worker's start) was timed")
			}
		}
	}
	if _, ok := p.received(nodeproto.LiveFrame{AU: &media.AccessUnit{Track: 1, PTS: 90000, Keyframe: true}}, at(1300)); ok {
		t.Error("another rung's keyframe was timed")
	}
	if _, ok := p.received(nodeproto.LiveFrame{AU: &media.AccessUnit{Track: 0, PTS: 96000}}, at(1300)); ok {
		t.Error("a frame that is no keyframe was timed")
	}
	// The source frame at 90000 (the grid instant) went out at 30 x 33 ms.
	d, ok := p.received(nodeproto.LiveFrame{AU: &media.AccessUnit{Track: 0, PTS: 90000, Keyframe: true}}, at(990+300))
	if !ok || d != 300*time.Millisecond {
		t.Errorf("latency %v %v, want 300ms", d, ok)
	}
	if _, ok := p.received(nodeproto.LiveFrame{AU: &media.AccessUnit{Track: 0, PTS: 90000, Keyframe: true}}, at(1700)); ok {
		t.Error("a cell was timed twice")
	}
}

// claiming makes worker id, with 4 ladders and its heartbeat at seen, one
// that claims live ladders (a claim that returns at once).
func claiming(t *testing.T, lo *LiveOrigin, id string, seen time.Time) {
	t.Helper()
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	if _, _, err := lo.ClaimLive(ctx, nodeproto.LiveWorker{ID: id, Ladders: 4, LastSeen: seen}); err != nil {
		t.Fatal(err)
	}
}

// Between workers with as much room, of the same region, the faster (by
// more than latencyMargin) takes the ladder; within the margin, the
// latest heartbeat does.
func TestReservePrefersTheFaster(t *testing.T) {
	t.Parallel()
	lo, err := NewLiveOrigin(LiveConfig{}, LiveDeps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	claiming(t, lo, "slow", now)
	claiming(t, lo, "fast", now.Add(-time.Second))
	pick := func() string {
		rl, ok := lo.Reserve("s", nil)
		if !ok {
			t.Fatal("no worker")
		}
		defer rl.Close()
		return rl.Worker()
	}
	if got := pick(); got != "slow" {
		t.Fatalf("unmeasured: %s took it, want the latest heartbeat's (slow)", got)
	}
	lo.measured("slow", 900*time.Millisecond)
	lo.measured("fast", 300*time.Millisecond)
	if got := pick(); got != "fast" {
		t.Fatalf("measured 900 ms and 300 ms: %s took it", got)
	}
	for range 20 {
		lo.measured("fast", 850*time.Millisecond) // it slowed down
	}
	if l := lo.Latency("fast"); l < 800*time.Millisecond || l > 900*time.Millisecond {
		t.Fatalf("the moving average is %v after 20 samples of 850 ms", l)
	}
	if got := pick(); got != "slow" {
		t.Fatalf("within the margin: %s took it, want the latest heartbeat's (slow)", got)
	}
}

// A worker whose VOD jobs take its ladders (its claim says) is handed no
// live ladder; one with room beside them is, up to that room.
func TestReserveLeavesRoomForVOD(t *testing.T) {
	t.Parallel()
	lo, err := NewLiveOrigin(LiveConfig{}, LiveDeps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	claim := func(busy int) {
		ctx, cancel := context.WithCancel(t.Context())
		cancel()
		if _, _, err := lo.ClaimLive(ctx, nodeproto.LiveWorker{ID: "w", Ladders: 2, VODBusy: busy, LastSeen: time.Now()}); err != nil {
			t.Fatal(err)
		}
	}
	claim(2)
	if _, ok := lo.Reserve("s", nil); ok || lo.Available() != 0 {
		t.Fatal("a worker whose VOD jobs take both its ladders was handed a live one")
	}
	claim(1)
	rl, ok := lo.Reserve("s", nil)
	if !ok {
		t.Fatal("a worker with a ladder free beside its VOD job was handed none")
	}
	defer rl.Close()
	if _, ok := lo.Reserve("s2", nil); ok {
		t.Fatal("a worker was handed more live ladders than it has room for")
	}
}

// A rung that stops (or falls more than three cells and 2 s behind the
// source) drops the worker, though its other rungs keep up.
func TestLiveStoppedRungRefused(t *testing.T) {
	t.Parallel()
	e := newSamplerEnv(t, 0)
	e.sourceAt(0, true)
	if err := e.s.onOutput(rungsHeader(640)); err != nil {
		t.Fatal(err)
	}
	var err error
	for pts := int64(3000); pts <= 900_000 && err == nil; pts += 3000 {
		au := *e.delta
		if pts%90_000 == 0 {
			au = *e.key
		}
		au.PTS, au.DTS = pts, pts
		if err = e.s.onSource(&au); err != nil {
			break
		}
		if oerr := e.s.onOutput(outAU(1, pts, pts%90_000 == 0)); oerr != nil { // 240p only
			t.Fatal(oerr)
		}
	}
	if err == nil || !strings.Contains(err.Error(), "its 360p output stopped at 0s") || !strings.Contains(err.Error(), "behind its other rungs") {
		t.Fatalf("err %v, want the stopped 360p rung refused", err)
	}
}

// A source below the ladder's lowest rung gets one rung at its own
// height (media.Ladder.For): the worker's header for it passes.
func TestLiveSmallSourceRung(t *testing.T) {
	t.Parallel()
	e := newSamplerEnvSized(t, 0, 320, 180)
	e.sourceAt(0, true)
	hdr := nodeproto.LiveFrame{Renditions: &nodeproto.LiveRenditions{Stream: "s1", Rungs: []nodeproto.LiveRung{
		{Name: "180p", Width: 320, Height: 180, Bitrate: 400_000}}}}
	if err := e.s.onOutput(hdr); err != nil {
		t.Fatalf("an honest header for a 320x180 source: %v", err)
	}
}

// A keyframe whose instant rounds to just before the grid instant (up to
// half an encoder tick) starts the cell of that instant, not the one
// before.
func TestLiveKeyframeTolerance(t *testing.T) {
	t.Parallel()
	e := newSamplerEnv(t, 1)
	for pts := int64(0); pts < 200_000; pts += 3000 {
		e.sourceAt(pts, pts%90_000 == 0)
	}
	if err := e.s.onOutput(rungsHeader(640)); err != nil {
		t.Fatal(err)
	}
	for _, f := range []nodeproto.LiveFrame{outAU(0, 0, true), outAU(0, 3000, false), outAU(0, 90_000-1400, true)} {
		if err := e.s.onOutput(f); err != nil {
			t.Fatal(err)
		}
	}
	e.s.mu.Lock()
	defer e.s.mu.Unlock()
	if c := e.s.open[0]; c == nil || c.k != 1 {
		t.Fatalf("the open cell %+v, want cell 1", c)
	}
}

// A source that shrinks mid-stream (new parameter sets in band) is
// followed: the worker's header for the smaller pictures (the rungs of the
// ladder handed out, capped at the new height) passes; the old sizes pass
// while the worker may still be that far behind, not after.
func TestLiveSourceShrinks(t *testing.T) {
	t.Parallel()
	e := newSamplerEnv(t, 0)
	e.sourceAt(0, true)
	if err := e.s.onOutput(rungsHeader(640)); err != nil {
		t.Fatal(err)
	}
	_, small := demuxClip(t, shoaltest.MakeTS(t, 320, 180, 1, 30))
	key := *small[0]
	key.PTS, key.DTS = 90_000, 90_000
	if err := e.s.onSource(&key); err != nil {
		t.Fatal(err)
	}
	capped := nodeproto.LiveFrame{Renditions: &nodeproto.LiveRenditions{Stream: "s1", Rungs: []nodeproto.LiveRung{
		{Name: "360p", Width: 320, Height: 180, Bitrate: 700_000}, {Name: "240p", Width: 320, Height: 180, Bitrate: 400_000}}}}
	if err := e.s.onOutput(capped); err != nil {
		t.Fatalf("the honest header after the source shrank: %v", err)
	}
	// The worker may still be encoding the old size (a failover's replay,
	// a size that flapped back): its header passes while it can be that
	// far behind...
	if err := e.s.onOutput(rungsHeader(640)); err != nil {
		t.Fatalf("the old sizes just after the source shrank: %v", err)
	}
	// ...and no longer once the source is further on than that.
	for pts := int64(93_000); pts <= 90_000+e.s.lag+3000; pts += 3000 {
		au := *small[1]
		au.PTS, au.DTS = pts, pts
		if err := e.s.onSource(&au); err != nil {
			t.Fatal(err)
		}
	}
	if err := e.s.onOutput(capped); err != nil {
		t.Fatal(err)
	}
	if err := e.s.onOutput(rungsHeader(640)); err == nil || !strings.Contains(err.Error(), "for this 320x180 source") {
		t.Fatalf("the old sizes long after the source shrank: %v", err)
	}
}

// A gap in the source (its timestamps jump while the worker keeps up) is
// no fault of the worker's: the sampler refuses nothing (the transcoder's
// own lag rule judges the ladder as a whole).
func TestLiveSourceGapNotRefused(t *testing.T) {
	t.Parallel()
	e := newSamplerEnv(t, 0)
	for pts := int64(0); pts <= 270_000; pts += 3000 {
		e.sourceAt(pts, pts%90_000 == 0)
		if pts == 0 {
			if err := e.s.onOutput(rungsHeader(640)); err != nil {
				t.Fatal(err)
			}
		}
		for rung := range 2 {
			if err := e.s.onOutput(outAU(rung, pts, pts%90_000 == 0)); err != nil {
				t.Fatal(err)
			}
		}
	}
	au := *e.key
	au.PTS, au.DTS = 270_000+9*90_000, 270_000+9*90_000 // 9 s later
	if err := e.s.onSource(&au); err != nil {
		t.Fatalf("a 9 s gap in the source: %v", err)
	}
}

// Three workers whose latencies are each within the margin of the next
// (100, 115 and 130 ms) but not all of the fastest: the one slower than
// the fastest by more than the margin (130 ms) is left out, and of the
// others the latest heartbeat takes the ladder, whatever order the origin
// looks at them in. (Compared two by two, the three made a cycle: the
// pick then depended on map order.)
func TestReserveIsTransitive(t *testing.T) {
	t.Parallel()
	lo, err := NewLiveOrigin(LiveConfig{}, LiveDeps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	now := time.Now()
	for _, w := range []struct {
		id      string
		seen    time.Time
		latency time.Duration
	}{{"a", now.Add(-2 * time.Second), 100 * time.Millisecond}, {"b", now.Add(-time.Second), 115 * time.Millisecond}, {"c", now, 130 * time.Millisecond}} {
		claiming(t, lo, w.id, w.seen)
		lo.measured(w.id, w.latency)
	}
	for i := range 50 {
		rl, ok := lo.Reserve("s", nil)
		if !ok {
			t.Fatal("no worker")
		}
		got := rl.Worker()
		rl.Close()
		if got != "b" {
			t.Fatalf("pick %d: %s took it, want b (within the margin of the fastest, the latest heartbeat)", i, got)
		}
	}
}
