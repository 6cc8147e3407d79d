package routing

import (
	"context"
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
