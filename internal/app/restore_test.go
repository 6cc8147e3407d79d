package app

import (
	"errors"
	"log/slog"
	"path/filepath"
	"sync/atomic"
	"testing"

	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode/vod"
)

// TestLiveRecordsRestored: the record of a stream live here that Redis
// lost is written back at the next check, with its key; one no longer
// live is forgotten and not restored.
func TestLiveRecordsRestored(t *testing.T) {
	t.Parallel()
	store, rs := newTestStore(t)
	ctx := t.Context()
	ls, err := store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "on air"})
	if err != nil {
		t.Fatal(err)
	}
	snap, _ := store.GetLiveStream(ctx, ls.ID)
	var live atomic.Bool
	live.Store(true)
	logs := &testutil.Buffer{}
	r := newLiveRecords(store, func(id string) bool { return id == ls.ID && live.Load() }, vod.Files{RecordDir: t.TempDir()},
		filepath.Join(t.TempDir(), "redis-epoch"), slog.New(slog.NewTextHandler(logs, nil)))
	r.seen(snap)
	r.check(ctx) // the record is there: nothing to do
	// Mid-broadcast, the key is reset and the stream made signed: the
	// copy follows at the next check.
	reset, err := store.ResetStreamKey(ctx, ls.ID)
	if err != nil {
		t.Fatal(err)
	}
	signed := routing.PlaybackSigned
	if _, err := store.UpdateLiveStream(ctx, ls.ID, routing.LiveStreamUpdate{PlaybackPolicy: &signed}); err != nil {
		t.Fatal(err)
	}
	r.check(ctx)
	rs.FlushAll(t)
	r.check(ctx)
	got, err := store.GetLiveStream(ctx, ls.ID)
	if err != nil || got.Name != "on air" || got.PlaybackPolicy != routing.PlaybackSigned {
		t.Fatalf("after the check: %+v %v", got, err)
	}
	if id, err := store.LiveStreamIDByKey(ctx, reset.StreamKey); id != ls.ID || err != nil {
		t.Fatalf("the stream key after the restore: %q %v", id, err)
	}
	if _, err := store.LiveStreamIDByKey(ctx, ls.StreamKey); !errors.Is(err, routing.ErrNotFound) {
		t.Fatalf("the key reset before the flush works again: %v", err)
	}
	// Over: forgotten, and not restored again.
	live.Store(false)
	r.check(ctx)
	rs.FlushAll(t)
	live.Store(true)
	r.check(ctx)
	if _, err := store.GetLiveStream(ctx, ls.ID); !errors.Is(err, routing.ErrNotFound) {
		t.Fatalf("a stream that ended was restored: %v", err)
	}
}

// TestVideoRecordsRestored: a Redis that lost its data gets back the video
// records kept next to their sources, and the video being processed is
// queued again; records Redis still has are left alone.
func TestVideoRecordsRestored(t *testing.T) {
	t.Parallel()
	store, rs := newTestStore(t)
	ctx := t.Context()
	files := vod.Files{RecordDir: t.TempDir()}
	keep := func(id string) {
		t.Helper()
		f, err := store.VideoFields(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		if err := files.SaveRecord(id, f); err != nil {
			t.Fatal(err)
		}
	}
	waiting, _ := store.CreateVideo(ctx, routing.VideoSpec{Title: "waiting", PlaybackPolicy: routing.PlaybackSigned})
	keep(waiting.ID)
	processing, _ := store.CreateVideo(ctx, routing.VideoSpec{Title: "processing"})
	if err := store.BeginUpload(ctx, processing.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := store.SourceReceived(ctx, processing.ID, "put", routing.SourceInfo{Bytes: 1000}); err != nil {
		t.Fatal(err)
	}
	keep(processing.ID)
	// A worker made the queue (the workers make it again after a flush).
	if err := store.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	epochFile := filepath.Join(t.TempDir(), "redis-epoch")
	r := newLiveRecords(store, func(string) bool { return false }, files, epochFile, slog.New(slog.NewTextHandler(&testutil.Buffer{}, nil)))
	r.check(ctx) // Redis is new to this origin: nothing to restore
	if q, _ := store.JobQueue(ctx); q.Waiting != 1 {
		t.Fatalf("jobs before the flush: %+v", q)
	}
	rs.FlushAll(t)
	r.check(ctx)
	if err := store.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	for _, want := range []routing.Video{waiting, processing} {
		got, err := store.GetVideo(ctx, want.ID)
		if err != nil || got.Title != want.Title {
			t.Fatalf("%s after the restore: %+v %v", want.Title, got, err)
		}
	}
	if got, _ := store.GetVideo(ctx, waiting.ID); got.PlaybackPolicy != routing.PlaybackSigned || got.Status != routing.VideoWaiting {
		t.Fatalf("the waiting video restored as %+v", got)
	}
	if got, _ := store.GetVideo(ctx, processing.ID); got.Status != routing.VideoProcessing || got.SourceBytes != 1000 {
		t.Fatalf("the processing video restored as %+v", got)
	}
	if q, err := store.JobQueue(ctx); err != nil || q.Waiting != 1 {
		t.Fatalf("jobs after the restore: %+v %v, want the processing video queued again", q, err)
	}
	if list, _ := store.ListVideos(ctx, "", 10); len(list.Videos) != 2 {
		t.Fatalf("%d videos listed after the restore", len(list.Videos))
	}
	// Once restored, a later check changes nothing.
	r.check(ctx)
	if q, _ := store.JobQueue(ctx); q.Waiting != 1 {
		t.Fatalf("jobs after a second check: %+v", q)
	}
	// Flushed again, and another origin marked the empty Redis first:
	// this origin (restarted, reading its mark from disk) restores all
	// the same.
	rs.FlushAll(t)
	if _, err := store.MarkEpoch(ctx); err != nil {
		t.Fatal(err)
	}
	restarted := newLiveRecords(store, func(string) bool { return false }, files, epochFile, slog.New(slog.NewTextHandler(&testutil.Buffer{}, nil)))
	restarted.check(ctx)
	if _, err := store.GetVideo(ctx, waiting.ID); err != nil {
		t.Fatalf("after a flush another origin marked: %v", err)
	}
}
