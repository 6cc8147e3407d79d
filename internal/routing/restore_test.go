package routing

import (
	"errors"
	"testing"
	"time"
)

// TestRestoreLiveStream: a live stream's record lost with Redis's data is
// written back as it was, with its key working again; an existing record
// and a deleted stream are left alone.
func TestRestoreLiveStream(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "show", PlaybackPolicy: PlaybackSigned, Ladder: "360p:700k", P2POff: true})
	if err != nil {
		t.Fatal(err)
	}
	snap, err := s.GetLiveStream(ctx, ls.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ok, err := s.RestoreLiveStream(ctx, snap); ok || err != nil {
		t.Fatalf("restoring an existing record: %v %v, want false", ok, err)
	}
	if err := flushAll(ctx, s); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetLiveStream(ctx, ls.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("after FLUSHALL: %v", err)
	}
	if ok, err := s.RestoreLiveStream(ctx, snap); !ok || err != nil {
		t.Fatalf("restore: %v %v", ok, err)
	}
	got, err := s.GetLiveStream(ctx, ls.ID)
	if err != nil || got.Name != "show" || got.PlaybackPolicy != PlaybackSigned || got.Ladder != "360p:700k" || !got.P2POff ||
		got.StreamKeyHash != snap.StreamKeyHash || !got.CreatedAt.Equal(snap.CreatedAt) {
		t.Fatalf("restored %+v (%v), want %+v", got, err, snap)
	}
	if id, err := s.LiveStreamIDByKey(ctx, ls.StreamKey); id != ls.ID || err != nil {
		t.Fatalf("the key after the restore: %q %v", id, err)
	}
	if list, err := s.ListLiveStreams(ctx); err != nil || len(list) != 1 {
		t.Fatalf("list after the restore: %d %v", len(list), err)
	}
	// Deleted meanwhile: not brought back.
	if err := s.DeleteLiveStream(ctx, ls.ID); err != nil {
		t.Fatal(err)
	}
	if ok, err := s.RestoreLiveStream(ctx, snap); ok || err != nil {
		t.Fatalf("restoring a deleted stream: %v %v, want false", ok, err)
	}
	if _, err := s.RestoreLiveStream(ctx, LiveStream{ID: "../x", StreamKeyHash: "h", PlaybackPolicy: PlaybackPublic}); err == nil {
		t.Fatal("a bad id was restored")
	}
}

// TestRestoreVideo: a video record copy is written back only where Redis
// has none and the video was not deleted; Epoch tells a Redis that lost
// its data.
func TestRestoreVideo(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	if e, err := s.Epoch(ctx); e != "" || err != nil {
		t.Fatalf("Epoch of a new Redis: %q %v, want none", e, err)
	}
	mark, err := s.MarkEpoch(ctx)
	if mark == "" || err != nil {
		t.Fatalf("MarkEpoch: %q %v", mark, err)
	}
	if again, _ := s.MarkEpoch(ctx); again != mark {
		t.Fatalf("a second MarkEpoch changed the mark: %q, was %q", again, mark)
	}
	v, _ := s.CreateVideo(ctx, VideoSpec{Title: "kept"})
	fields, err := s.VideoFields(ctx, v.ID)
	if err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.RestoreVideo(ctx, v.ID, fields); ok || err != nil {
		t.Fatalf("restoring over an existing record: %v %v", ok, err)
	}
	if err := s.DeleteVideo(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if ok, _, err := s.RestoreVideo(ctx, v.ID, fields); ok || err != nil {
		t.Fatalf("restoring a deleted video: %v %v", ok, err)
	}
	if err := flushAll(ctx, s); err != nil {
		t.Fatal(err)
	}
	if e, _ := s.Epoch(ctx); e != "" {
		t.Fatalf("Epoch after FLUSHALL: %q, want none", e)
	}
	if ok, queued, err := s.RestoreVideo(ctx, v.ID, fields); !ok || queued || err != nil {
		t.Fatalf("restore after FLUSHALL: %v %v %v", ok, queued, err)
	}
	if got, err := s.GetVideo(ctx, v.ID); err != nil || got.Title != "kept" {
		t.Fatalf("restored %+v %v", got, err)
	}
	if _, _, err := s.RestoreVideo(ctx, "x", map[string]string{"title": "no date"}); err == nil {
		t.Fatal("a record without created_at was restored")
	}
}

// TestRestoredJobFencesTheOldAttempt: a video restored as processing is
// queued again; the attempt that ran before Redis lost its data, whatever
// its attempt number, can neither touch nor finish the new one.
func TestRestoredJobFencesTheOldAttempt(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	if err := s.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	v, _ := s.CreateVideo(ctx, VideoSpec{Title: "v"})
	if err := s.BeginUpload(ctx, v.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := s.SourceReceived(ctx, v.ID, "put", SourceInfo{Bytes: 10}); err != nil {
		t.Fatal(err)
	}
	fields, err := s.VideoFields(ctx, v.ID) // the copy, taken at arrival
	if err != nil {
		t.Fatal(err)
	}
	old := mustNextJob(t, s, "w1", time.Hour)
	if st, err := s.StartJob(ctx, old, "w1", 3); err != nil || st.Attempt != 1 {
		t.Fatalf("start: %+v %v", st, err)
	}
	if err := flushAll(ctx, s); err != nil {
		t.Fatal(err)
	}
	if ok, queued, err := s.RestoreVideo(ctx, v.ID, fields); !ok || !queued || err != nil {
		t.Fatalf("restore: %v %v %v", ok, queued, err)
	}
	if err := s.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	fresh := mustNextJob(t, s, "w2", time.Hour)
	if st, err := s.StartJob(ctx, fresh, "w2", 3); err != nil || st.Attempt != 1 {
		t.Fatalf("start after the restore: %+v %v", st, err)
	}
	if err := s.TouchJob(ctx, old, "w1", 1, 50); !errors.Is(err, ErrJobLost) {
		t.Fatalf("the old attempt's touch: %v, want ErrJobLost", err)
	}
	if err := s.FinishJob(ctx, old, 1, JobOutcome{}); !errors.Is(err, ErrJobLost) {
		t.Fatalf("the old attempt's finish: %v, want ErrJobLost", err)
	}
	if err := s.TouchJob(ctx, fresh, "w2", 1, 50); err != nil {
		t.Fatalf("the new attempt's touch: %v", err)
	}
}
