package routing

import (
	"context"
	"fmt"
	"testing"

	"github.com/redis/go-redis/v9"
)

// appendInvalidations appends n deletions of ids that do not exist.
func appendInvalidations(t *testing.T, s *Store, from, n int) {
	t.Helper()
	ctx := t.Context()
	for i := range n {
		if _, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
			s.addInvalidation(ctx, p, fmt.Sprintf("gone%05d", from+i), true, false)
			return nil
		}); err != nil {
			t.Fatal(err)
		}
	}
}

func readFeed(ctx context.Context, t *testing.T, s *Store, cursor string) (InvalidationPage, int) {
	t.Helper()
	first, pages := InvalidationPage{}, 0
	for {
		p, err := s.InvalidationsAfter(ctx, cursor, 1000)
		if err != nil {
			t.Fatal(err)
		}
		if pages == 0 {
			first = p
		}
		pages++
		cursor = p.Cursor
		if !p.More {
			return first, pages
		}
	}
}

// TestInvalidationsTellAGap: a reader whose cursor the feed no longer
// holds (trimmed past it, or the feed emptied or restored from an older
// copy) is told it missed entries; one that reads on in time is not; a
// reader from the start is told when entries were ever trimmed.
func TestInvalidationsTellAGap(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()

	// An empty feed: nothing missed.
	if p, err := s.InvalidationsAfter(ctx, "", 1000); err != nil || p.Reset || p.More || len(p.Entries) != 0 || p.Cursor != "" {
		t.Fatalf("empty feed: %+v %v", p, err)
	}
	appendInvalidations(t, s, 0, 1500)
	p, pages := readFeed(ctx, t, s, "")
	if p.Reset || !p.More || len(p.Entries) != 1000 || pages != 2 {
		t.Fatalf("from the start, untrimmed: reset %v more %v %d entries, %d pages", p.Reset, p.More, len(p.Entries), pages)
	}
	all, _, _ := s.Invalidations(ctx, "", 2000)
	mid := all[700].Cursor
	if p, err := s.InvalidationsAfter(ctx, mid, 1000); err != nil || p.Reset || p.More || len(p.Entries) != 799 || p.Entries[0].Cursor != all[701].Cursor {
		t.Fatalf("after a kept cursor: reset %v more %v %d entries %v", p.Reset, p.More, len(p.Entries), err)
	}
	last := all[len(all)-1].Cursor
	if p, err := s.InvalidationsAfter(ctx, last, 1000); err != nil || p.Reset || len(p.Entries) != 0 || p.Cursor != last {
		t.Fatalf("at the end: %+v %v", p, err)
	}

	// Trimmed past mid (and far past the feed's start).
	appendInvalidations(t, s, 1500, MaxInvalidations+500)
	if p, err := s.InvalidationsAfter(ctx, mid, 1000); err != nil || !p.Reset || !p.More || len(p.Entries) != 1000 {
		t.Fatalf("after a trimmed cursor: reset %v more %v %d entries %v", p.Reset, p.More, len(p.Entries), err)
	}
	if p, err := s.InvalidationsAfter(ctx, "", 1000); err != nil || !p.Reset {
		t.Fatalf("from the start of a trimmed feed: reset %v %v", p.Reset, err)
	}
	now, _, _ := s.Invalidations(ctx, "", 1)
	if p, err := s.InvalidationsAfter(ctx, now[0].Cursor, 1000); err != nil || p.Reset {
		t.Fatalf("after the first kept entry: reset %v %v", p.Reset, err)
	}

	// A cursor past the feed's end (Redis restored from an older copy).
	if p, err := s.InvalidationsAfter(ctx, "99999999999999-0", 1000); err != nil || !p.Reset || len(p.Entries) != 0 || p.Cursor == "" || p.Cursor == "99999999999999-0" {
		t.Fatalf("past the end: %+v %v", p, err)
	}
	// The feed lost its history (Redis emptied).
	if err := s.rdb.Del(ctx, s.k(invalidationsKey)).Err(); err != nil {
		t.Fatal(err)
	}
	if p, err := s.InvalidationsAfter(ctx, last, 1000); err != nil || !p.Reset || p.Cursor != "" {
		t.Fatalf("after the feed was emptied: %+v %v", p, err)
	}
	appendInvalidations(t, s, 9000, 3)
	if p, err := s.InvalidationsAfter(ctx, last, 1000); err != nil || !p.Reset || len(p.Entries) != 3 {
		t.Fatalf("after the feed was emptied and appended to: %+v %v", p, err)
	}
}

// TestInvalidateCachedReadsThePolicy: the entry of a new broadcast
// carries the stream's policy as it is when appended.
func TestInvalidateCachedReadsThePolicy(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "x", PlaybackPolicy: PlaybackSigned})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.InvalidateCached(ctx, ls.ID); err != nil {
		t.Fatal(err)
	}
	invs, _, _ := s.Invalidations(ctx, "", 10)
	if len(invs) != 1 || invs[0].ID != ls.ID || !invs[0].Signed || invs[0].Deleted {
		t.Fatalf("entries: %+v", invs)
	}
	if err := s.InvalidateCached(ctx, "nosuchstream"); err != ErrNotFound {
		t.Fatalf("a stream that does not exist: %v", err)
	}
}
