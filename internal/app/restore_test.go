package app

import (
	"errors"
	"log/slog"
	"os/exec"
	"sync/atomic"
	"testing"

	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// TestLiveRecordsRestored: the record of a stream live here that Redis
// lost is written back at the next check, with its key; one no longer
// live is forgotten and not restored.
func TestLiveRecordsRestored(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	store, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := t.Context()
	ls, err := store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "on air"})
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := store.GetLiveStream(ctx, ls.ID)
	var live atomic.Bool
	live.Store(true)
	logs := &testutil.Buffer{}
	r := newLiveRecords(store, func(id string) bool { return id == ls.ID && live.Load() }, slog.New(slog.NewTextHandler(logs, nil)))
	r.seen(snap)
	r.check(ctx) // the record is there: nothing to do
	if out, err := exec.Command("redis-cli", "-u", rs.URL, "FLUSHALL").CombinedOutput(); err != nil {
		t.Fatalf("FLUSHALL: %v %s", err, out)
	}
	r.check(ctx)
	got, err := store.GetLiveStream(ctx, ls.ID)
	if err != nil || got.Name != "on air" {
		t.Fatalf("after the check: %+v %v", got, err)
	}
	if id, err := store.LiveStreamIDByKey(ctx, ls.StreamKey); id != ls.ID || err != nil {
		t.Fatalf("the stream key after the restore: %q %v", id, err)
	}
	// Over: forgotten, and not restored again.
	live.Store(false)
	r.check(ctx)
	if out, err := exec.Command("redis-cli", "-u", rs.URL, "FLUSHALL").CombinedOutput(); err != nil {
		t.Fatalf("FLUSHALL: %v %s", err, out)
	}
	live.Store(true)
	r.check(ctx)
	if _, err := store.GetLiveStream(ctx, ls.ID); !errors.Is(err, routing.ErrNotFound) {
		t.Fatalf("a stream that ended was restored: %v", err)
	}
}
