package routing

import (
	"errors"
	"slices"
	"testing"
	"time"
)

func TestOrigins(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s.redisClock = func() time.Time { return now }
	for _, u := range []string{"http://b:8080", "http://a:8080"} {
		if err := s.AnnounceOrigin(ctx, u, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.AnnounceOrigin(ctx, "ftp://x", 0); err == nil {
		t.Fatal("a non-http URL was announced")
	}
	got, err := s.ListOrigins(ctx)
	if err != nil || !slices.Equal(got, []string{"http://a:8080", "http://b:8080"}) {
		t.Fatalf("origins: %q %v", got, err)
	}
	// b stops announcing: 31 s later only a, which announced again, is up.
	now = now.Add(31 * time.Second)
	if err := s.AnnounceOrigin(ctx, "http://a:8080", 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListOrigins(ctx); !slices.Equal(got, []string{"http://a:8080"}) {
		t.Fatalf("after b expired: %q", got)
	}
	if err := s.WithdrawOrigin(ctx, "http://a:8080"); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.ListOrigins(ctx); len(got) != 0 {
		t.Fatalf("after a withdrew: %q", got)
	}
}

// Nodes whose clocks disagree still agree on who is up and who holds an
// upload: announcements and upload leases are reckoned on Redis's clock.
// Before, an origin whose clock ran a minute ahead pruned every other
// origin's announcement (edges lost their failover targets) and took over
// uploads other origins were still receiving.
func TestLeasesIgnoreNodeClocks(t *testing.T) {
	t.Parallel()
	a, srv := newTestStore(t)
	b := secondStore(t, srv)
	ahead := time.Now().Add(time.Hour)
	a.clock = func() time.Time { return ahead } // a's machine clock is an hour ahead
	ctx := t.Context()
	if err := b.AnnounceOrigin(ctx, "http://b:8080", 0); err != nil {
		t.Fatal(err)
	}
	if err := a.AnnounceOrigin(ctx, "http://a:8080", 0); err != nil {
		t.Fatal(err)
	}
	for name, s := range map[string]*Store{"a": a, "b": b} {
		if got, err := s.ListOrigins(ctx); err != nil || !slices.Equal(got, []string{"http://a:8080", "http://b:8080"}) {
			t.Errorf("origins listed by %s: %q %v", name, got, err)
		}
	}
	for _, n := range []AnnouncedNode{{ID: "b", Role: RoleWorker}, {ID: "a", Role: RoleWorker}} {
		s := map[string]*Store{"a": a, "b": b}[n.ID]
		if err := s.AnnounceNode(ctx, n, 0); err != nil {
			t.Fatal(err)
		}
	}
	if got, err := b.AnnouncedNodes(ctx); err != nil || len(got) != 2 {
		t.Errorf("nodes listed by b: %v %v", got, err)
	}
	v, err := b.CreateVideo(ctx, VideoSpec{Title: "skew"})
	if err != nil {
		t.Fatal(err)
	}
	if err := b.BeginUpload(ctx, v.ID, "put:b"); err != nil {
		t.Fatal(err)
	}
	if err := a.BeginUpload(ctx, v.ID, "put:a"); !errors.Is(err, ErrConflict) {
		t.Fatalf("a took over b's upload a moment after it began: %v", err)
	}
}
