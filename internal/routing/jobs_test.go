package routing

import (
	"errors"
	"testing"
	"time"
)

// queuedVideo creates a video whose source has arrived, so that a job is queued.
func queuedVideo(t *testing.T, s *Store) Video {
	t.Helper()
	ctx := t.Context()
	v, err := s.CreateVideo(ctx, VideoSpec{Title: "clip"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.BeginUpload(ctx, v.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := s.SourceReceived(ctx, v.ID, "put", SourceInfo{Bytes: 1}); err != nil {
		t.Fatal(err)
	}
	return v
}

func mustNextJob(t *testing.T, s *Store, consumer string, minIdle time.Duration) Job {
	t.Helper()
	j, ok, err := s.NextJob(t.Context(), consumer, 100*time.Millisecond, minIdle)
	if err != nil || !ok {
		t.Fatalf("NextJob(%s) = %+v, %v, %v", consumer, j, ok, err)
	}
	return j
}

func TestJobFinishesOnce(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	if err := s.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	if err := s.EnsureJobQueue(ctx); err != nil {
		t.Fatalf("EnsureJobQueue twice: %v", err)
	}
	v := queuedVideo(t, s)
	if st, _ := s.JobQueue(ctx); st.Waiting != 1 {
		t.Fatalf("queue stats = %+v, want 1 waiting", st)
	}
	j := mustNextJob(t, s, "w1", time.Hour)
	if j.VideoID != v.ID || j.Reclaimed {
		t.Fatalf("job = %+v", j)
	}
	if _, ok, _ := s.NextJob(ctx, "w2", 50*time.Millisecond, time.Hour); ok {
		t.Fatal("a second worker got the same job")
	}
	st, err := s.StartJob(ctx, j, "w1", 3)
	if err != nil || st.Attempt != 1 || st.Video.ID != v.ID {
		t.Fatalf("StartJob = %+v, %v", st, err)
	}
	if err := s.TouchJob(ctx, j, "w1", 1, 42); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetVideo(ctx, v.ID); got.Progress != 42 {
		t.Fatalf("progress = %d", got.Progress)
	}
	out := JobOutcome{Duration: 10 * time.Second, Renditions: []VideoRendition{{Name: "360p", Width: 640, Height: 360, Bitrate: 700000}}, Poster: true}
	if err := s.FinishJob(ctx, j, 1, out); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetVideo(ctx, v.ID)
	if got.Status != VideoReady || got.Progress != 100 || len(got.Renditions) != 1 || !got.Poster || got.Storyboard {
		t.Fatalf("ready video = %+v", got)
	}
	if err := s.FinishJob(ctx, j, 1, out); !errors.Is(err, ErrJobLost) {
		t.Fatalf("second FinishJob = %v, want ErrJobLost", err)
	}
	evs := readEvents(t, s)
	if len(evs) != 1 || evs[0]["type"] != EventVideoReady {
		t.Fatalf("events = %v", evs)
	}
	if st, _ := s.JobQueue(ctx); st.Waiting != 0 || st.Running != 0 {
		t.Fatalf("queue stats after finish = %+v", st)
	}
}

func TestJobReclaimedFromADeadWorker(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	_ = s.EnsureJobQueue(ctx)
	v := queuedVideo(t, s)
	j1 := mustNextJob(t, s, "dead", time.Hour)
	st1, _ := s.StartJob(ctx, j1, "dead", 3)
	// Not idle for an hour: it stays with its worker.
	if j, ok, err := s.NextJob(ctx, "alive", time.Millisecond, time.Hour); ok || err != nil {
		t.Fatalf("a job idle for less than minIdle was taken: %+v, %v", j, err)
	}
	// With no minimum idle time it is taken over at once (idle time is
	// reckoned by Redis's clock, which a test cannot advance).
	j2 := mustNextJob(t, s, "alive", 0)
	if !j2.Reclaimed || j2.From != "dead" || j2.EntryID != j1.EntryID {
		t.Fatalf("reclaimed job = %+v", j2)
	}
	st2, err := s.StartJob(ctx, j2, "alive", 3)
	if err != nil || st2.Attempt != 2 {
		t.Fatalf("StartJob after reclaim = %+v, %v", st2, err)
	}
	// The first attempt comes back: it is fenced out.
	if err := s.TouchJob(ctx, j1, "dead", st1.Attempt, 50); !errors.Is(err, ErrJobLost) {
		t.Fatalf("stale TouchJob = %v", err)
	}
	if err := s.FinishJob(ctx, j1, st1.Attempt, JobOutcome{}); !errors.Is(err, ErrJobLost) {
		t.Fatalf("stale FinishJob = %v", err)
	}
	if err := s.FinishJob(ctx, j2, st2.Attempt, JobOutcome{Duration: time.Second}); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetVideo(ctx, v.ID); got.Status != VideoReady || got.Attempts != 2 {
		t.Fatalf("video = %+v", got)
	}
}

func TestJobRetriesThenFails(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	_ = s.EnsureJobQueue(ctx)
	v := queuedVideo(t, s)
	for attempt := 1; attempt <= 2; attempt++ {
		j := mustNextJob(t, s, "w", time.Hour)
		st, err := s.StartJob(ctx, j, "w", 2)
		if err != nil || st.Attempt != attempt {
			t.Fatalf("attempt %d: StartJob = %+v, %v", attempt, st, err)
		}
		retry, err := s.FailJob(ctx, j, st.Attempt, "encoder exploded", false, 2)
		if err != nil || retry != (attempt < 2) {
			t.Fatalf("attempt %d: FailJob = %v, %v", attempt, retry, err)
		}
	}
	got, _ := s.GetVideo(ctx, v.ID)
	if got.Status != VideoFailed || got.Error != "encoder exploded" {
		t.Fatalf("video = %+v", got)
	}
	if _, ok, _ := s.NextJob(ctx, "w", 50*time.Millisecond, time.Hour); ok {
		t.Fatal("a failed video was queued again")
	}
}

// A failed attempt is fenced off by its failure: the same FailJob sent
// again (a lost reply retried) queues no second retry, and a late finish
// or touch of the failed attempt is stale. Before, the second FailJob
// queued the video twice (two attempts spent, two workers on it) and the
// failed attempt could still mark the video ready. (Found by a review
// helper.)
func TestFailedAttemptIsFencedOff(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	_ = s.EnsureJobQueue(ctx)
	v := queuedVideo(t, s)
	j := mustNextJob(t, s, "w1", time.Hour)
	st, err := s.StartJob(ctx, j, "w1", 5)
	if err != nil || st.Attempt != 1 {
		t.Fatalf("StartJob = %+v, %v", st, err)
	}
	if retry, err := s.FailJob(ctx, j, 1, "boom", false, 5); !retry || err != nil {
		t.Fatalf("FailJob = %v, %v", retry, err)
	}
	if _, err := s.FailJob(ctx, j, 1, "boom", false, 5); !errors.Is(err, ErrJobLost) {
		t.Fatalf("the same FailJob again: %v, want ErrJobLost", err)
	}
	if err := s.TouchJob(ctx, j, "w1", 1, 50); !errors.Is(err, ErrJobLost) {
		t.Fatalf("a touch of the failed attempt: %v, want ErrJobLost", err)
	}
	if err := s.FinishJob(ctx, j, 1, JobOutcome{Duration: time.Second}); !errors.Is(err, ErrJobLost) {
		t.Fatalf("a finish of the failed attempt: %v, want ErrJobLost", err)
	}
	if q, _ := s.JobQueue(ctx); q.Waiting != 1 {
		t.Fatalf("queue %+v: want the one retry waiting", q)
	}
	j2 := mustNextJob(t, s, "w2", time.Hour)
	if st, err := s.StartJob(ctx, j2, "w2", 5); err != nil || st.Attempt != 2 {
		t.Fatalf("the retry: %+v, %v", st, err)
	}
	if _, ok, _ := s.NextJob(ctx, "w3", 50*time.Millisecond, time.Hour); ok {
		t.Fatal("a second retry was queued")
	}
	if got, _ := s.GetVideo(ctx, v.ID); got.Status != VideoProcessing {
		t.Fatalf("video = %+v", got)
	}
}

func TestJobGivesUpAfterDeadWorkers(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	_ = s.EnsureJobQueue(ctx)
	v := queuedVideo(t, s)
	j := mustNextJob(t, s, "a", time.Hour)
	if st, _ := s.StartJob(ctx, j, "a", 1); st.Attempt != 1 {
		t.Fatalf("first start = %+v", st)
	}
	j = mustNextJob(t, s, "b", 0) // a's job, taken over
	st, err := s.StartJob(ctx, j, "b", 1)
	if err != nil || st.Skip != "gave_up" {
		t.Fatalf("start after too many attempts = %+v, %v", st, err)
	}
	got, _ := s.GetVideo(ctx, v.ID)
	if got.Status != VideoFailed || got.Error != "processing failed after 1 attempts: worker a stopped while processing" {
		t.Fatalf("video = %+v", got)
	}
}

func TestJobOfDeletedVideoIsDropped(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	_ = s.EnsureJobQueue(ctx)
	v := queuedVideo(t, s)
	_ = s.DeleteVideo(ctx, v.ID)
	j := mustNextJob(t, s, "w", time.Hour)
	if st, err := s.StartJob(ctx, j, "w", 3); err != nil || st.Skip != "deleted" {
		t.Fatalf("StartJob = %+v, %v", st, err)
	}
	if st, _ := s.JobQueue(ctx); st.Running != 0 {
		t.Fatalf("the dropped job is still pending: %+v", st)
	}
}

func TestJobQueueBeforeItExists(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	if st, err := s.JobQueue(t.Context()); err != nil || st != (JobQueueStats{}) {
		t.Fatalf("JobQueue before the queue exists = %+v, %v; want zeros", st, err)
	}
}
