package routing

import (
	"testing"
)

func TestP2PStats(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "live"})
	if err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVideo(ctx, VideoSpec{Title: "vod"})
	if err != nil {
		t.Fatal(err)
	}
	add := func(source, batch string, d map[string]P2PBytes) (P2PBytes, bool) {
		t.Helper()
		got, repeat, err := s.AddP2PStats(ctx, source, batch, d)
		if err != nil {
			t.Fatal(err)
		}
		return got, repeat
	}
	// Unknown ids are skipped; what was added is returned.
	got, repeat := add("edge1", "b1", map[string]P2PBytes{ls.ID: {HTTP: 100, P2P: 300}, v.ID: {HTTP: 5}, "nosuchstream": {HTTP: 1 << 40, P2P: 1}})
	if repeat || got != (P2PBytes{HTTP: 105, P2P: 300}) {
		t.Fatalf("first batch added %+v (repeat %v)", got, repeat)
	}
	// The same batch again (its answer was lost) is not counted twice;
	// another source's batch of the same name is.
	if got, repeat = add("edge1", "b1", map[string]P2PBytes{ls.ID: {HTTP: 100, P2P: 300}}); !repeat || got != (P2PBytes{}) {
		t.Fatalf("repeated batch added %+v (repeat %v)", got, repeat)
	}
	if got, _ = add("edge2", "b1", map[string]P2PBytes{ls.ID: {HTTP: 1, P2P: 2}}); got != (P2PBytes{HTTP: 1, P2P: 2}) {
		t.Fatalf("other source added %+v", got)
	}
	if got, _ = add("edge1", "b2", map[string]P2PBytes{ls.ID: {P2P: 10}}); got != (P2PBytes{P2P: 10}) {
		t.Fatalf("next batch added %+v", got)
	}
	stats, err := s.P2PStats(ctx, []string{ls.ID, v.ID, "nosuchstream"})
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]P2PBytes{ls.ID: {HTTP: 101, P2P: 312}, v.ID: {HTTP: 5}, "nosuchstream": {}}
	for id, w := range want {
		if stats[id] != w {
			t.Fatalf("P2PStats[%s] = %+v, want %+v (all %v)", id, stats[id], w, stats)
		}
	}
	if o := stats[ls.ID].Offload(); o < 0.755 || o > 0.756 {
		t.Fatalf("offload %v, want 312/413", o)
	}
	if o := (P2PBytes{}).Offload(); o != 0 {
		t.Fatalf("offload of nothing = %v", o)
	}
	// Sequenced batches (<boot>-<seq>): a late or repeated one is not
	// counted, another run's is.
	for _, c := range []struct {
		batch  string
		repeat bool
	}{{"runa-1", false}, {"runa-2", false}, {"runa-1", true}, {"runa-2", true}, {"runb-1", false}, {"runa-3", false}, {"runa-3", true}} {
		if got, repeat = add("edge3", c.batch, map[string]P2PBytes{ls.ID: {HTTP: 1}}); repeat != c.repeat || (got == P2PBytes{}) == !c.repeat {
			t.Fatalf("batch %s: added %+v, repeat %v", c.batch, got, repeat)
		}
	}
	if stats, _ = s.P2PStats(ctx, []string{ls.ID}); stats[ls.ID].HTTP != 101+4 {
		t.Fatalf("after sequenced batches: %+v", stats[ls.ID])
	}
	// Counters saturate instead of overflowing.
	for _, b := range []string{"b3", "b4", "b5"} {
		add("edge1", b, map[string]P2PBytes{v.ID: {P2P: 1 << 61}})
	}
	if stats, _ = s.P2PStats(ctx, []string{v.ID}); stats[v.ID].P2P != maxP2PCounter {
		t.Fatalf("saturated counter %d, want %d", stats[v.ID].P2P, int64(maxP2PCounter))
	}
	// Deleting the stream or video deletes its stats, and later reports
	// for it are skipped.
	if err := s.DeleteLiveStream(ctx, ls.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteVideo(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{s.p2pKey(ls.ID), s.p2pKey(v.ID), s.p2pKey("nosuchstream")} {
		if n, err := s.rdb.Exists(ctx, k).Result(); err != nil || n != 0 {
			t.Fatalf("%s still exists (%d, %v)", k, n, err)
		}
	}
	if got, _ = add("edge1", "b6", map[string]P2PBytes{ls.ID: {HTTP: 1}, v.ID: {P2P: 1}}); got != (P2PBytes{}) {
		t.Fatalf("added %+v for deleted ids", got)
	}
	for _, k := range []string{s.p2pKey(ls.ID), s.p2pKey(v.ID)} {
		if n, _ := s.rdb.Exists(ctx, k).Result(); n != 0 {
			t.Fatalf("%s recreated after the delete", k)
		}
	}
}
