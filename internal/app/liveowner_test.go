package app

import (
	"log/slog"
	"sync/atomic"
	"testing"
	"time"
)

// A stream that ended here keeps its lease while its files are still on
// their way to the store, and while the origin drains; then it is released.
func TestLiveOwnersKeepLeasesWhileSpooled(t *testing.T) {
	t.Parallel()
	store, _ := newTestStore(t)
	ctx := t.Context()
	const id = "spool1abcdefghijklmn"
	var live, spooled atomic.Bool
	o := newLiveOwners(store, "http://origin-a:8080", func(string) bool { return live.Load() }, slog.New(slog.DiscardHandler))
	o.ttl = time.Minute
	o.spooled = func(string) bool { return spooled.Load() }
	if err := o.claim(ctx, id); err != nil {
		t.Fatal(err)
	}
	owner := func() string {
		t.Helper()
		owners, err := store.LiveStreamOwners(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return owners[id]
	}
	// Authorized long ago, not live: released unless spooled or draining.
	o.mu.Lock()
	o.held[id] = time.Now().Add(-time.Hour)
	o.mu.Unlock()
	spooled.Store(true)
	o.renew(ctx)
	if got := owner(); got != "http://origin-a:8080" {
		t.Fatalf("owner while the stream is spooled = %q", got)
	}
	spooled.Store(false)
	o.draining.Store(true)
	o.renew(ctx)
	if got := owner(); got != "http://origin-a:8080" {
		t.Fatalf("owner while the origin drains = %q", got)
	}
	o.draining.Store(false)
	o.renew(ctx)
	if got := owner(); got != "" {
		t.Fatalf("owner once nothing holds the stream = %q", got)
	}
	// Here, a lease alone is not a live stream.
	if err := o.claim(ctx, id); err != nil {
		t.Fatal(err)
	}
	if o.isLiveAnywhere(id) {
		t.Fatal("a stream leased here but not in the hub is live")
	}
	live.Store(true)
	if !o.isLiveAnywhere(id) {
		t.Fatal("a stream in the hub is not live")
	}
}
