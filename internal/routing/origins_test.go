package routing

import (
	"slices"
	"testing"
	"time"
)

func TestOrigins(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s.clock = func() time.Time { return now }
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
