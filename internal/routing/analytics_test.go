package routing

import (
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"
)

func TestSessionSecretIsShared(t *testing.T) {
	t.Parallel()
	s, srv := newTestStore(t)
	other := secondStore(t, srv)
	a, err := s.SessionSecret(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	b, err := other.SessionSecret(t.Context())
	if err != nil || string(a) != string(b) || len(a) != 32 {
		t.Fatalf("secrets %x %x %v", a, b, err)
	}
	p, _ := s.PlacementSecret(t.Context())
	if string(p) == string(a) {
		t.Fatal("the session secret is the placement secret")
	}
}

func TestSessionOffersAndUpdates(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	var nodes []string
	for i := range MaxSessionOffers + 5 {
		nodes = append(nodes, fmt.Sprintf("node%02d", i))
	}
	if err := s.OfferSession(ctx, "sid", nodes[:2]); err != nil {
		t.Fatal(err)
	}
	if err := s.OfferSession(ctx, "sid", nodes); err != nil {
		t.Fatal(err)
	}
	var offered map[string]bool
	if err := s.UpdateSession(ctx, "sid", func(st *SessionState, o map[string]bool) error {
		offered = o
		if st.Started {
			t.Error("a new session is started")
		}
		st.Kind, st.Item, st.Seq, st.Home, st.Hour = "video", "abc", 1, "node00", time.Unix(3600, 0).UTC()
		st.Counters["watch_ms"], st.Bytes["node00"] = 5, 7
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if len(offered) != MaxSessionOffers || !offered["node00"] || offered[nodes[MaxSessionOffers]] {
		t.Fatalf("%d offered: %v", len(offered), offered)
	}
	if ttl := s.rdb.PTTL(ctx, s.sessionKey("sid")).Val(); ttl <= 0 || ttl > SessionTTL {
		t.Fatalf("session TTL %s", ttl)
	}
	// An update that fails writes nothing.
	stop := errors.New("ignored")
	if err := s.UpdateSession(ctx, "sid", func(st *SessionState, _ map[string]bool) error {
		st.Seq = 99
		return stop
	}); !errors.Is(err, stop) {
		t.Fatalf("failed update: %v", err)
	}
	// Concurrent updates each see the previous one's state (or are
	// refused as busy, never lost).
	var wg sync.WaitGroup
	var mu sync.Mutex
	done := 0
	for range 4 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 10 {
				err := s.UpdateSession(ctx, "sid", func(st *SessionState, _ map[string]bool) error {
					st.Seq++
					st.Counters["watch_ms"]++
					return nil
				})
				if err != nil && !errors.Is(err, ErrSessionBusy) {
					t.Error(err)
				}
				if err == nil {
					mu.Lock()
					done++
					mu.Unlock()
				}
			}
		}()
	}
	wg.Wait()
	_ = s.UpdateSession(ctx, "sid", func(st *SessionState, _ map[string]bool) error {
		if !st.Started || st.Seq != int64(1+done) || st.Counters["watch_ms"] != int64(5+done) || st.Bytes["node00"] != 7 ||
			st.Kind != "video" || st.Item != "abc" || st.Home != "node00" || !st.Hour.Equal(time.Unix(3600, 0)) {
			t.Errorf("after %d updates: %+v", done, st)
		}
		return stop
	})
}

func TestAnalyticsStorage(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	h := time.Date(2026, 12, 5, 7, 0, 0, 0, time.UTC)
	var adds []AnalyticsAdd
	for i := range MaxBreakdownValues + 3 {
		adds = append(adds, AnalyticsAdd{Scope: "video:abc", Hour: h, Fields: map[string]int64{"views": 1},
			Viewer: fmt.Sprintf("v%d", i%10), Item: true, ItemViews: 1, ItemWatchMs: 10,
			Breakdown: []BreakdownAdd{{Dim: "country", Value: fmt.Sprintf("c%02d", i), Views: 1, WatchMs: 10}}})
	}
	adds = append(adds, AnalyticsAdd{Scope: "live:def", Hour: h.Add(time.Hour), Fields: map[string]int64{"views": 1, "r1": -1},
		Item: true, ItemViews: 100})
	if err := s.AddAnalytics(ctx, adds, 48*time.Hour); err != nil {
		t.Fatal(err)
	}
	figs, err := s.AnalyticsHours(ctx, "video:abc", []time.Time{h, h.Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	f := figs[0]
	if f["views"] != MaxBreakdownValues+3 || f["n:country"] != MaxBreakdownValues || f["x:country:c00:v"] != 1 ||
		f["x:country:other:v"] != 3 || f["x:country:other:w"] != 30 || len(figs[1]) != 0 {
		t.Fatalf("figures %v", f)
	}
	if n, err := s.UniqueViewers(ctx, "video:abc", [][]time.Time{{h, h.Add(time.Hour)}, {h.Add(time.Hour)}, nil}); err != nil ||
		len(n) != 3 || n[0] != 10 || n[1] != 0 || n[2] != 0 {
		t.Fatalf("unique viewers %v %v", n, err)
	}
	top, err := s.TopItems(ctx, []time.Time{h, h.Add(time.Hour)}, 1)
	if err != nil || len(top) != 1 || top[0] != (ItemFigures{Scope: "live:def", Views: 100}) {
		t.Fatalf("top %+v %v", top, err)
	}
	top, _ = s.TopItems(ctx, []time.Time{h}, 5)
	if len(top) != 1 || top[0] != (ItemFigures{Scope: "video:abc", Views: MaxBreakdownValues + 3, WatchMs: 10 * (MaxBreakdownValues + 3)}) {
		t.Fatalf("top of the first hour %+v", top)
	}
	c := s.rdb
	for _, k := range []string{s.analyticsKey("video:abc", h), s.analyticsKey("video:abc", h) + ":hll", s.itemsKey(h), s.itemsKey(h) + ":w"} {
		if ttl := c.PTTL(ctx, k).Val(); ttl <= 47*time.Hour || ttl > 48*time.Hour {
			t.Errorf("%s TTL %s", k, ttl)
		}
	}
}

func TestReloadSessionSecret(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	first, err := s.SessionSecret(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReloadSessionSecret(ctx, first); err != nil || string(got) != string(first) {
		t.Fatalf("reload: %x %v", got, err)
	}
	// The store lost it: the reload writes back the one the origin holds,
	// and the next origin to start finds it.
	if err := s.rdb.Del(ctx, s.k(sessionSecretKey)).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.ReloadSessionSecret(ctx, first); err != nil || string(got) != string(first) {
		t.Fatalf("reload after the loss: %x %v", got, err)
	}
	if got, err := s.SessionSecret(ctx); err != nil || string(got) != string(first) {
		t.Fatalf("a new origin's secret %x, want the restored one", got)
	}
}
