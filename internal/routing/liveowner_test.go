package routing

import (
	"errors"
	"testing"
	"time"
)

func TestLiveStreamOwner(t *testing.T) {
	t.Parallel()
	s, rs := newTestStore(t)
	ctx := t.Context()
	const id, a, b = "stream1abc", "http://origin-a:8080", "http://origin-b:8080"
	if got, err := s.ClaimLiveStream(ctx, id, a, time.Minute); err != nil || got != a {
		t.Fatalf("A's claim: %q %v", got, err)
	}
	if got, err := s.ClaimLiveStream(ctx, id, b, time.Minute); err != nil || got != a {
		t.Fatalf("B's claim while A holds it: %q %v, want A", got, err)
	}
	if got, err := s.ClaimLiveStream(ctx, id, a, time.Minute); err != nil || got != a {
		t.Fatalf("A's renewal: %q %v", got, err)
	}
	owners, err := s.LiveStreamOwners(ctx, id, "other1abc", "../bad")
	if err != nil || len(owners) != 1 || owners[id] != a {
		t.Fatalf("owners: %v %v", owners, err)
	}
	// B's release does nothing; A's ends the lease and B may claim.
	if err := s.ReleaseLiveStream(ctx, id, b); err != nil {
		t.Fatal(err)
	}
	if owners, _ := s.LiveStreamOwners(ctx, id); owners[id] != a {
		t.Fatalf("B's release removed A's lease: %v", owners)
	}
	if err := s.ReleaseLiveStream(ctx, id, a); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ClaimLiveStream(ctx, id, b, 50*time.Millisecond); err != nil || got != b {
		t.Fatalf("B's claim after A's release: %q %v", got, err)
	}
	// B dies: its lease expires (Redis's clock), and A may claim the
	// stream again.
	tick := time.NewTicker(10 * time.Millisecond)
	defer tick.Stop()
	timeout := time.After(5 * time.Second)
	for got := b; got != a; {
		select {
		case <-tick.C:
		case <-timeout:
			t.Fatal("B's lease did not expire")
		}
		var err error
		if got, err = s.ClaimLiveStream(ctx, id, a, time.Minute); err != nil {
			t.Fatal(err)
		}
	}
	if _, err := s.ClaimLiveStream(ctx, "../x", a, 0); err == nil {
		t.Fatal("an invalid id was accepted")
	}
	if !rs.killable() {
		return // a shared cluster: Redis down is tested in the other runs
	}
	rs.Kill()
	if _, err := s.ClaimLiveStream(ctx, id, a, 0); !errors.Is(err, ErrUnavailable) {
		t.Fatalf("claim with Redis down: %v, want ErrUnavailable", err)
	}
}
