package remote

import (
	"context"
	"sync"
	"testing"

	"github.com/shoal-video/shoal/internal/routing"
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
