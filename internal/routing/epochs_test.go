package routing

import (
	"context"
	"sync"
	"testing"
	"time"
)

func TestEpochStartAndID(t *testing.T) {
	t.Parallel()
	at := time.Date(2026, 12, 5, 7, 41, 13, 5, time.UTC)
	for _, c := range []struct {
		d    time.Duration
		want string
	}{
		{time.Hour, "20261205T070000Z"},
		{24 * time.Hour, "20261205T000000Z"},
		{10 * time.Second, "20261205T074110Z"},
		{time.Second, "20261205T074113Z"},
	} {
		start := EpochStart(at, c.d)
		if got := EpochID(start); got != c.want {
			t.Errorf("epoch of %s: %s, want %s", c.d, got, c.want)
		}
		back, err := ParseEpochID(c.want)
		if err != nil || !back.Equal(start) {
			t.Errorf("ParseEpochID(%s) = %v, %v; want %v", c.want, back, err, start)
		}
	}
	if got := EpochStart(time.Unix(-1, 0), time.Hour); !got.Equal(time.Unix(-3600, 0)) {
		t.Errorf("before 1970: %v", got)
	}
	for _, bad := range []string{"", "2026-12-05T07:00:00Z", "20261205T0700Z", "20261305T070000Z", "../x", "20261205T070000Z/.."} {
		if _, err := ParseEpochID(bad); err == nil {
			t.Errorf("ParseEpochID(%q) accepted", bad)
		}
	}
}

func TestEpochFigures(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := context.Background()
	e := EpochStart(time.Now(), time.Hour)
	next := e.Add(time.Hour)
	if err := s.AddEpochFigures(ctx, e, "nodea", map[string]int64{FigureClaimedBytes: 100, FigureViewerBytes: 0}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEpochFigures(ctx, e, "nodea", map[string]int64{FigureClaimedBytes: 50, FigureAuditsPassed: 1}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEpochFigures(ctx, e, "nodeb", map[string]int64{FigureViewerBytes: maxFigure}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEpochFigures(ctx, e, "nodeb", map[string]int64{FigureViewerBytes: 10}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEpochFigures(ctx, next, "nodec", map[string]int64{FigureUptimeMs: 7}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEpochFigures(ctx, e, "nodea", map[string]int64{FigureClaimedBytes: -1}, time.Hour); err == nil {
		t.Error("a negative delta was accepted")
	}
	got, err := s.EpochFigures(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 2 || got["nodea"][FigureClaimedBytes] != 150 || got["nodea"][FigureAuditsPassed] != 1 ||
		len(got["nodea"]) != 2 || got["nodeb"][FigureViewerBytes] != maxFigure {
		t.Fatalf("figures: %v", got)
	}
	if got, _ := s.EpochFigures(ctx, next.Add(time.Hour)); len(got) != 0 {
		t.Fatalf("an empty epoch has %v", got)
	}
}

func TestEpochsIndexAndSeal(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := context.Background()
	e := EpochStart(time.Now(), time.Minute)
	for i := range 3 {
		if err := s.AddEpochFigures(ctx, e.Add(time.Duration(-i)*time.Minute), "nodea", map[string]int64{FigureAuditsPassed: 1}, time.Hour); err != nil {
			t.Fatal(err)
		}
	}
	// An epoch older than the retention leaves the index.
	if err := s.AddEpochFigures(ctx, e.Add(-2*time.Hour), "nodea", map[string]int64{FigureAuditsPassed: 1}, time.Hour); err != nil {
		t.Fatal(err)
	}
	if err := s.AddEpochFigures(ctx, e.Add(time.Minute), "nodea", map[string]int64{FigureAuditsPassed: 1}, time.Hour); err != nil {
		t.Fatal(err)
	}
	list, err := s.Epochs(ctx, 3)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 3 || !list[0].Equal(e.Add(time.Minute)) || !list[1].Equal(e) || !list[2].Equal(e.Add(-time.Minute)) {
		t.Fatalf("epochs: %v", list)
	}
	if all, _ := s.Epochs(ctx, 100); len(all) != 4 {
		t.Fatalf("the index kept %d epochs, want 4 (one expired)", len(all))
	}
	if _, err := s.SealedEpochReport(ctx, e); err != ErrNotFound {
		t.Fatalf("unsealed: %v", err)
	}
	got, err := s.SealEpochReport(ctx, e, []byte("first"), time.Hour)
	if err != nil || string(got) != "first" {
		t.Fatalf("seal: %q %v", got, err)
	}
	got, err = s.SealEpochReport(ctx, e, []byte("second"), time.Hour)
	if err != nil || string(got) != "first" {
		t.Fatalf("a second seal: %q %v, want the first", got, err)
	}
	if got, err := s.SealedEpochReport(ctx, e); err != nil || string(got) != "first" {
		t.Fatalf("sealed: %q %v", got, err)
	}
}

func TestAccountHeartbeat(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := context.Background()
	e := EpochStart(time.Now(), time.Hour)
	t0 := e.Add(time.Minute)
	const gap = 7 * time.Second
	beat := func(sent, at time.Duration, bytes int64) Accounted {
		t.Helper()
		a, err := s.AccountHeartbeat(ctx, "nodea", HeartbeatFigures{Sent: t0.Add(sent), BytesServed: bytes, TokenID: "tok1"}, t0.Add(at), time.Hour, gap, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		return a
	}
	want := func(a Accounted, counted bool, claimed, up, q int64) {
		t.Helper()
		if a.Counted != counted || a.ClaimedBytes != claimed || a.UptimeMs != up || a.Quarantine != q {
			t.Fatalf("accounted %+v, want counted %v claimed %d uptime %d quarantine %d", a, counted, claimed, up, q)
		}
	}
	want(beat(0, 0, 1000), true, 1000, 0, 0) // first: all of it, no uptime yet
	want(beat(2*time.Second, 2*time.Second, 1500), true, 500, 2000, 0)
	want(beat(2*time.Second, 3*time.Second, 9000), false, 0, 0, 0) // replayed (same signed time)
	want(beat(time.Second, 3*time.Second, 9000), false, 0, 0, 0)   // late
	want(beat(4*time.Second, 30*time.Second, 1600), true, 100, gap.Milliseconds(), 0)
	want(beat(5*time.Second, 31*time.Second, 300), true, 300, 1000, 0) // restarted: its counter began again
	if err := s.QuarantineNode(ctx, "nodea", "test"); err != nil {
		t.Fatal(err)
	}
	want(beat(6*time.Second, 33*time.Second, 300), true, 0, 2000, 2000)
	// Another origin's clock behind: no negative uptime, and the later
	// clock stays the reference.
	want(beat(7*time.Second, 32*time.Second, 400), true, 100, 0, 0)
	want(beat(8*time.Second, 34*time.Second, 400), true, 0, 1000, 1000)
	f, err := s.EpochFigures(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	a := f["nodea"]
	if a[FigureClaimedBytes] != 1000+500+100+300+100 || a[FigureUptimeMs] != 2000+7000+1000+2000+1000 || a[FigureQuarantineMs] != 3000 {
		t.Fatalf("figures %v", a)
	}
	if tok, err := s.NodeAccountToken(ctx, "nodea"); err != nil || tok != "tok1" {
		t.Fatalf("token %q %v", tok, err)
	}
	if _, err := s.NodeAccountToken(ctx, "nodeb"); err != ErrNotFound {
		t.Fatalf("unknown node's token: %v", err)
	}
	if _, err := s.AccountHeartbeat(ctx, "nodea", HeartbeatFigures{Sent: t0.Add(time.Hour), BytesServed: -1}, t0, time.Hour, gap, time.Hour); err == nil {
		t.Fatal("negative bytes accepted")
	}
}

// TestAccountHeartbeatConcurrent: heartbeats of one node reaching two
// origins (two clients) at once, in any order, claim exactly its last
// cumulative figure in all, never a "restart".
func TestAccountHeartbeatConcurrent(t *testing.T) {
	t.Parallel()
	s1, srv := newTestStore(t)
	s2 := secondStore(t, srv)
	ctx := context.Background()
	e := EpochStart(time.Now(), time.Hour)
	t0 := e.Add(time.Minute)
	const n = 200
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			s := s1
			if i%2 == 1 {
				s = s2
			}
			hb := HeartbeatFigures{Sent: t0.Add(time.Duration(i) * time.Millisecond), BytesServed: int64(i+1) * 1000}
			if _, err := s.AccountHeartbeat(ctx, "nodea", hb, t0, time.Hour, 7*time.Second, time.Hour); err != nil {
				errs <- err
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	f, err := s1.EpochFigures(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if got := f["nodea"][FigureClaimedBytes]; got != n*1000 {
		t.Fatalf("claimed %d, want %d", got, n*1000)
	}
}

// TestAccountHeartbeatSplit: uptime counts from the join, and a heartbeat
// whose interval began in the previous epoch shares its figures between
// the two epochs in proportion to the time in each.
func TestAccountHeartbeatSplit(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := context.Background()
	const epoch = 10 * time.Second
	e := EpochStart(time.Now(), epoch)
	prev := e.Add(-epoch)
	if err := s.AccountJoin(ctx, "nodea", "tok1", e.Add(-3*time.Second), time.Hour); err != nil {
		t.Fatal(err)
	}
	// An older join (another origin's late write) does not move it back.
	if err := s.AccountJoin(ctx, "nodea", "tok1", e.Add(-5*time.Second), time.Hour); err != nil {
		t.Fatal(err)
	}
	if tok, err := s.NodeAccountToken(ctx, "nodea"); err != nil || tok != "tok1" {
		t.Fatalf("token after the join: %q %v", tok, err)
	}
	a, err := s.AccountHeartbeat(ctx, "nodea", HeartbeatFigures{Sent: e, BytesServed: 4000, TokenID: "tok1"}, e.Add(time.Second), epoch, 7*time.Second, time.Hour)
	if err != nil || !a.Counted || a.ClaimedBytes != 4000 || a.UptimeMs != 4000 {
		t.Fatalf("accounted %+v %v", a, err)
	}
	if err := s.QuarantineNode(ctx, "nodea", "test"); err != nil {
		t.Fatal(err)
	}
	if _, err := s.AccountHeartbeat(ctx, "nodea", HeartbeatFigures{Sent: e.Add(2 * time.Second), BytesServed: 6000, TokenID: "tok1"}, e.Add(3*time.Second), epoch, 7*time.Second, time.Hour); err != nil {
		t.Fatal(err)
	}
	before, err := s.EpochFigures(ctx, prev)
	if err != nil {
		t.Fatal(err)
	}
	now, err := s.EpochFigures(ctx, e)
	if err != nil {
		t.Fatal(err)
	}
	if b := before["nodea"]; b[FigureClaimedBytes] != 3000 || b[FigureUptimeMs] != 3000 || b[FigureQuarantineMs] != 0 {
		t.Errorf("the previous epoch's share: %v", b)
	}
	if c := now["nodea"]; c[FigureClaimedBytes] != 1000+2000 || c[FigureUptimeMs] != 1000+2000 || c[FigureQuarantineMs] != 2000 {
		t.Errorf("this epoch's share: %v", c)
	}
	list, err := s.Epochs(ctx, 10)
	if err != nil || len(list) != 2 || !list[0].Equal(e) || !list[1].Equal(prev) {
		t.Fatalf("epochs %v %v", list, err)
	}
}

func TestEpochShares(t *testing.T) {
	t.Parallel()
	at := func(m int) time.Time {
		return time.Date(2026, 12, 5, 10, 0, 0, 0, time.UTC).Add(time.Duration(m) * time.Minute)
	}
	for _, c := range []struct {
		from, to int
		amount   int64
		want     map[int]int64 // epoch start (minutes) -> share
	}{
		{5, 50, 1000, map[int]int64{0: 1000}},                   // one epoch
		{50, 70, 1000, map[int]int64{0: 500, 60: 500}},          // half in each
		{5, 70, 500_000, map[int]int64{0: 423_076, 60: 76_924}}, // 55 of 65 minutes, rounding to the last
		{-70, 10, 800, map[int]int64{-120: 100, -60: 600, 0: 100}},
		{70, 50, 9, map[int]int64{0: 9}}, // backwards: all in to's epoch
	} {
		got := EpochShares(at(c.from), at(c.to), time.Hour, c.amount)
		want := map[time.Time]int64{}
		for m, v := range c.want {
			want[at(m)] = v
		}
		if len(got) != len(want) {
			t.Errorf("%d..%d: %v, want %v", c.from, c.to, got, want)
			continue
		}
		for k, v := range want {
			if got[k] != v {
				t.Errorf("%d..%d: %v, want %v", c.from, c.to, got, want)
			}
		}
	}
	// A span of days counts from a day back.
	got := EpochShares(at(0).Add(-72*time.Hour), at(0), time.Hour, 2400)
	var sum int64
	for _, v := range got {
		sum += v
	}
	if sum != 2400 || got[at(-60)] != 100 || got[at(-25*60)] != 0 {
		t.Errorf("three days: %v", got)
	}
}

func TestAddViewerBytesNetworkCap(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := context.Background()
	e := EpochStart(time.Now(), time.Hour)
	for _, c := range []struct {
		network   string
		n, wanted int64
	}{{"198.51.100", 600, 600}, {"198.51.100", 600, 400}, {"198.51.100", 5, 0}, {"203.0.113", 700, 700}} {
		got, err := s.AddViewerBytes(ctx, e, time.Hour, "nodea", c.network, c.n, 1000, time.Hour)
		if err != nil || got != c.wanted {
			t.Fatalf("%s adds %d: %d (%v), want %d", c.network, c.n, got, err, c.wanted)
		}
	}
	if f, _ := s.EpochFigures(ctx, e); f["nodea"][FigureViewerBytes] != 1700 {
		t.Fatalf("figures %v", f)
	}
}
