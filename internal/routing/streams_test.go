package routing

import (
	"sync/atomic"
	"testing"
	"time"
)

// finishJob runs job to ready as consumer.
func finishJob(t *testing.T, s *Store, j Job, consumer string) {
	t.Helper()
	if _, err := s.StartJob(t.Context(), j, consumer, 3); err != nil {
		t.Fatal(err)
	}
	if err := s.FinishJob(t.Context(), j, 1, JobOutcome{Duration: time.Second}); err != nil {
		t.Fatal(err)
	}
}

func xlen(t *testing.T, s *Store, key string) int64 {
	t.Helper()
	n, err := s.rdb.XLen(t.Context(), s.k(key)).Result()
	if err != nil {
		t.Fatal(err)
	}
	return n
}

func consumers(t *testing.T, s *Store, key, group string) map[string]int64 {
	t.Helper()
	cs, err := s.rdb.XInfoConsumers(t.Context(), s.k(key), group).Result()
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]int64{}
	for _, c := range cs {
		out[c.Name] = c.Pending
	}
	return out
}

// Acknowledged jobs are trimmed from the queue, never one not handed out or
// still pending; dead consumers (nothing pending, idle long enough) are
// removed, never one holding a job.
func TestMaintainStreamsJobQueue(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	if err := s.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	if m, err := s.MaintainStreams(ctx, 0); err != nil || m != (StreamMaintenance{}) {
		t.Fatalf("MaintainStreams on an empty queue = %+v, %v", m, err)
	}
	for range 4 {
		queuedVideo(t, s)
	}
	finishJob(t, s, mustNextJob(t, s, "w1", time.Hour), "w1")
	finishJob(t, s, mustNextJob(t, s, "w2", time.Hour), "w2")
	held := mustNextJob(t, s, "w3", time.Hour) // pending: w3 works on it
	// The fourth is not handed out yet.
	m, err := s.MaintainStreams(ctx, time.Hour)
	if err != nil || m != (StreamMaintenance{Trimmed: 2}) {
		t.Fatalf("MaintainStreams = %+v, %v, want the 2 acknowledged entries trimmed", m, err)
	}
	if n := xlen(t, s, jobsKey); n != 2 {
		t.Fatalf("%d entries left, want 2 (pending, waiting)", n)
	}
	if st, _ := s.JobQueue(ctx); st.Waiting != 1 || st.Running != 1 {
		t.Fatalf("queue stats after trimming = %+v", st)
	}
	// Idle for less than an hour: every consumer stays. With no idle
	// time required, those with nothing pending go; w3 stays.
	if got := consumers(t, s, jobsKey, jobsGroup); len(got) != 3 {
		t.Fatalf("consumers = %v", got)
	}
	m, err = s.MaintainStreams(ctx, 0)
	if err != nil || m != (StreamMaintenance{Consumers: 2}) {
		t.Fatalf("MaintainStreams(0) = %+v, %v, want 2 consumers removed", m, err)
	}
	if got := consumers(t, s, jobsKey, jobsGroup); len(got) != 1 || got["w3"] != 1 {
		t.Fatalf("consumers = %v, want w3 holding its job", got)
	}
	// The queue still works: w3 finishes, the last one is handed out and
	// finished, and all but the last handed out is trimmed.
	finishJob(t, s, held, "w3")
	finishJob(t, s, mustNextJob(t, s, "w4", time.Hour), "w4")
	if m, err := s.MaintainStreams(ctx, time.Hour); err != nil || m.Trimmed != 1 {
		t.Fatalf("MaintainStreams = %+v, %v", m, err)
	}
	if n := xlen(t, s, jobsKey); n != 1 {
		t.Fatalf("%d entries left, want 1 (the last handed out)", n)
	}
	if st, _ := s.JobQueue(ctx); st.Waiting != 0 || st.Running != 0 {
		t.Fatalf("queue stats = %+v", st)
	}
	v := queuedVideo(t, s)
	if j := mustNextJob(t, s, "w5", time.Hour); j.VideoID != v.ID {
		t.Fatalf("job after trimming = %+v, want video %s", j, v.ID)
	}
}

// Events the dispatchers fanned out are trimmed; unread ones stay and the
// backlog still counts them.
func TestMaintainStreamsEvents(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	if _, err := s.CreateWebhook(ctx, WebhookSpec{URL: "http://x", Events: []string{EventVideoReady}}); err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.PublishEvent(ctx, EventVideoReady, map[string]int{"n": i}); err != nil {
			t.Fatal(err)
		}
	}
	// d0 fans out the first event (it has nothing pending then), d1 reads
	// the second (pending at d1), the third is unread.
	var evs []WebhookEvent
	for _, c := range []string{"d0", "d1"} {
		ev, err := s.ReadWebhookEvents(ctx, c, 1, time.Millisecond)
		if err != nil || len(ev) != 1 {
			t.Fatalf("%s read %v, %v", c, ev, err)
		}
		evs = append(evs, ev[0])
	}
	fanOut(t, s, evs[0])
	m, err := s.MaintainStreams(ctx, 0)
	if err != nil || m != (StreamMaintenance{Trimmed: 1, Consumers: 1}) {
		t.Fatalf("MaintainStreams = %+v, %v, want 1 entry and d0 removed", m, err)
	}
	if n := xlen(t, s, eventsKey); n != 2 {
		t.Fatalf("%d events left, want 2", n)
	}
	if n, err := s.WebhookEventBacklog(ctx); err != nil || n != 2 {
		t.Fatalf("backlog = %d, %v, want 2 (one pending, one unread)", n, err)
	}
	fanOut(t, s, evs[1])
	if evs := readAll(t, s, "d1"); len(evs) != 1 {
		t.Fatalf("read %v after trimming", evs)
	}
}

// The readers (NextJob, ReadWebhookEvents) maintain the streams at most
// once every StreamMaintenanceInterval of the Store's clock.
func TestStreamsMaintainedByReaders(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	var clock atomic.Int64
	t0 := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	clock.Store(t0.UnixNano())
	s.clock = func() time.Time { return time.Unix(0, clock.Load()) }
	if err := s.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	queuedVideo(t, s)
	finishJob(t, s, mustNextJob(t, s, "w1", time.Hour), "w1") // maintains (nothing to trim)
	queuedVideo(t, s)
	clock.Store(t0.Add(StreamMaintenanceInterval / 2).UnixNano())
	finishJob(t, s, mustNextJob(t, s, "w1", time.Hour), "w1") // too soon: the first entry stays
	if n := xlen(t, s, jobsKey); n != 2 {
		t.Fatalf("%d entries, want 2: maintained too soon", n)
	}
	queuedVideo(t, s)
	clock.Store(t0.Add(StreamMaintenanceInterval + time.Second).UnixNano())
	mustNextJob(t, s, "w1", time.Hour) // maintains, then reads the third
	if n := xlen(t, s, jobsKey); n != 2 {
		t.Fatalf("%d entries, want 2 (the first trimmed)", n)
	}
}
