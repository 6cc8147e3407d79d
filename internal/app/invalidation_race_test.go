package app

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// TestBroadcastInvalidationDoesNotUndoPolicyChange: a broadcast of a
// public live stream starts (the announcer reads the record) and its owner
// PATCHes it to signed before the announcer appends its invalidation: the
// last word the feed gives edges about the stream must be "signed".
func TestBroadcastInvalidationDoesNotUndoPolicyChange(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	s, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "racy"})
	if err != nil {
		t.Fatal(err)
	}
	signed := routing.PlaybackSigned
	a := &liveAnnouncer{store: s, log: slog.New(slog.NewTextHandler(io.Discard, nil)), warn: logx.NewLimiter(time.Second),
		// seen runs between the announcer's read of the record and its
		// append to the feed: the PATCH lands there.
		seen: func(routing.LiveStream) {
			if _, err := s.UpdateLiveStream(ctx, ls.ID, routing.LiveStreamUpdate{PlaybackPolicy: &signed}); err != nil {
				t.Error(err)
			}
		}}
	a.announce(ls.ID, routing.EventLiveStreamStarted)

	invs, _, err := s.Invalidations(ctx, "", 100)
	if err != nil {
		t.Fatal(err)
	}
	var last *routing.Invalidation
	for i := range invs {
		if invs[i].ID == ls.ID {
			last = &invs[i]
		}
	}
	got, _ := s.GetLiveStream(ctx, ls.ID)
	if last == nil || (got.PlaybackPolicy == routing.PlaybackSigned && !last.Signed) {
		t.Fatalf("stream is %q, but the feed's last entry for it is %+v (all: %+v): edges force it open", got.PlaybackPolicy, last, invs)
	}
}
