package routing

import (
	"errors"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/nodeproto"
)

// The holder of a job is the consumer that started its current attempt,
// with the attempt's number and queue entry; a claim without blocking
// (negative block) answers at once; a source's size recorded at upload
// comes back with the video.
func TestJobHolder(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	if err := s.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok, err := s.NextJob(ctx, "node-a", -1, time.Hour); ok || err != nil {
		t.Fatalf("NextJob without blocking on an empty queue: %v, %v", ok, err)
	}
	v, err := s.CreateVideo(ctx, VideoSpec{Title: "clip"})
	if err != nil {
		t.Fatal(err)
	}
	// Waiting: no attempt yet, no holder.
	if h, err := s.JobHolder(ctx, v.ID); err != nil || h != (JobHolder{Status: VideoWaiting}) {
		t.Fatalf("holder of a waiting video: %+v, %v", h, err)
	}
	if err := s.BeginUpload(ctx, v.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := s.SourceReceived(ctx, v.ID, "put", SourceInfo{Bytes: 10, Duration: 5 * time.Second, Width: 854, Height: 480, FrameRate: 29.97}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.GetVideo(ctx, v.ID); err != nil || got.SourceWidth != 854 || got.SourceHeight != 480 || got.SourceFrameRate != 29.97 || got.Duration != 5*time.Second {
		t.Fatalf("video after the upload: %+v, %v", got, err)
	}
	j, ok, err := s.NextJob(ctx, "node-a", -1, time.Hour)
	if !ok || err != nil {
		t.Fatalf("NextJob without blocking: %v, %v", ok, err)
	}
	if _, err := s.StartJob(ctx, j, "node-a", 3); err != nil {
		t.Fatal(err)
	}
	h, err := s.JobHolder(ctx, v.ID)
	if err != nil || h != (JobHolder{Worker: "node-a", Attempt: 1, Entry: j.EntryID, Status: VideoProcessing}) {
		t.Fatalf("holder: %+v, %v", h, err)
	}
	// Failed and queued again, then taken by another: the holder moves.
	if retry, err := s.FailJob(ctx, j, 1, "bad output", false, 3); err != nil || !retry {
		t.Fatalf("FailJob: %v %v", retry, err)
	}
	j2, ok, err := s.NextJob(ctx, "node-b", -1, time.Hour)
	if !ok || err != nil {
		t.Fatalf("NextJob after the retry: %v, %v", ok, err)
	}
	if _, err := s.StartJob(ctx, j2, "node-b", 3); err != nil {
		t.Fatal(err)
	}
	if h, _ := s.JobHolder(ctx, v.ID); h.Worker != "node-b" || h.Attempt != 2 || h.Entry != j2.EntryID {
		t.Fatalf("holder after the retry: %+v", h)
	}
	if _, err := s.JobHolder(ctx, "nosuchvideo"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("holder of no video: %v", err)
	}
}

// A worker's outcomes are counted, the last rejection's reason kept.
func TestWorkerStats(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	for _, o := range []struct{ outcome, reason string }{
		{WorkDone, ""}, {WorkRejected, "first"}, {WorkDone, ""}, {WorkRejected, "rendition 480p lasts 2 s"}, {WorkFailed, ""},
	} {
		if err := s.AddWorkerOutcome(ctx, "n1", o.outcome, o.reason); err != nil {
			t.Fatal(err)
		}
	}
	st, err := s.WorkerStats(ctx, []string{"n1", "n2"})
	if err != nil {
		t.Fatal(err)
	}
	got := st["n1"]
	if got.Done != 2 || got.Rejected != 2 || got.Failed != 1 || got.LastRejection != "rendition 480p lasts 2 s" || got.LastRejectionAt.IsZero() {
		t.Errorf("stats of n1: %+v", got)
	}
	if _, ok := st["n2"]; ok || len(st) != 1 {
		t.Errorf("stats: %+v", st)
	}
	// The verification figures add up, and each call returns the totals.
	if tot, err := s.AddWorkerFigures(ctx, "n1", map[string]int64{WorkSegmentsVerified: 4, WorkPixels: 1000}); err != nil || tot[WorkSegmentsVerified] != 4 || tot[WorkPixels] != 1000 || len(tot) != 2 {
		t.Fatalf("AddWorkerFigures: %v, %v", tot, err)
	}
	tot, err := s.AddWorkerFigures(ctx, "n1", map[string]int64{WorkSegmentsVerified: 2, WorkVerifyFailed: 1, WorkVerifyErrors: 0})
	if err != nil || tot[WorkSegmentsVerified] != 6 || tot[WorkVerifyFailed] != 1 || tot[WorkVerifyErrors] != 0 {
		t.Fatalf("AddWorkerFigures again: %v, %v", tot, err)
	}
	if _, err := s.AddWorkerFigures(ctx, "n1", map[string]int64{WorkVerifyFailed: -1}); err == nil {
		t.Error("a negative delta was taken")
	}
	st, err = s.WorkerStats(ctx, []string{"n1"})
	if got := st["n1"]; err != nil || got.SegmentsVerified != 6 || got.VerifyFailed != 1 || got.VerifyErrors != 0 || got.TranscodedPixels != 1000 || got.Done != 2 {
		t.Errorf("stats of n1 with figures: %+v, %v", got, err)
	}
}

// A job whose output a worker had refused is put back for another worker
// (DeferJob) without an attempt being started: the entry is acknowledged,
// the video queued again; an attempt that held the deferred entry is
// fenced off; a video no longer processing is not queued again. The
// workers to avoid are those recorded within their window.
func TestDeferJob(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	if err := s.EnsureJobQueue(ctx); err != nil {
		t.Fatal(err)
	}
	v, err := s.CreateVideo(ctx, VideoSpec{Title: "clip"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.BeginUpload(ctx, v.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := s.SourceReceived(ctx, v.ID, "put", SourceInfo{Bytes: 10, Duration: 5 * time.Second, Width: 640, Height: 360}); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AvoidedWorkers(ctx, v.ID); err != nil || len(got) != 0 {
		t.Fatalf("avoided before any refusal: %v, %v", got, err)
	}
	if err := s.AvoidWorker(ctx, v.ID, "cheat", time.Hour); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AvoidedWorkers(ctx, v.ID); err != nil || len(got) != 1 || got["cheat"].Before(time.Now().Add(59*time.Minute)) {
		t.Fatalf("avoided: %v, %v", got, err)
	}

	j, ok, err := s.NextJob(ctx, "cheat", -1, time.Hour)
	if !ok || err != nil {
		t.Fatalf("NextJob: %v %v", ok, err)
	}
	if ok, err := s.DeferJob(ctx, j); !ok || err != nil {
		t.Fatalf("DeferJob: %v %v", ok, err)
	}
	// No attempt began; the job is the next one read, under a new entry,
	// and nothing is pending for the deferring consumer.
	if got, _ := s.GetVideo(ctx, v.ID); got.Attempts != 0 || got.Status != VideoProcessing {
		t.Fatalf("video after the deferral: %+v", got)
	}
	q, err := s.JobQueue(ctx)
	if err != nil || q.Running != 0 {
		t.Fatalf("queue after the deferral: %+v %v", q, err)
	}
	j2, ok, err := s.NextJob(ctx, "honest", -1, time.Hour)
	if !ok || err != nil || j2.VideoID != v.ID || j2.EntryID == j.EntryID {
		t.Fatalf("the deferred job: %+v %v %v", j2, ok, err)
	}
	st, err := s.StartJob(ctx, j2, "honest", 3)
	if err != nil || st.Attempt != 1 {
		t.Fatalf("StartJob: %+v %v", st, err)
	}
	// An attempt whose entry is deferred (a reclaimed job) is fenced off.
	if ok, err := s.DeferJob(ctx, j2); !ok || err != nil {
		t.Fatalf("DeferJob of a held entry: %v %v", ok, err)
	}
	if err := s.TouchJob(ctx, j2, "honest", 1, 50); !errors.Is(err, ErrJobLost) {
		t.Fatalf("touching a deferred attempt: %v", err)
	}
	j3, ok, err := s.NextJob(ctx, "other", -1, time.Hour)
	if !ok || err != nil || j3.VideoID != v.ID {
		t.Fatalf("the job deferred again: %+v %v %v", j3, ok, err)
	}
	st, err = s.StartJob(ctx, j3, "other", 3)
	if err != nil || st.Attempt != 2 {
		t.Fatalf("StartJob after the fence: %+v %v", st, err)
	}
	if err := s.FinishJob(ctx, j3, 2, JobOutcome{Duration: 5 * time.Second}); err != nil {
		t.Fatal(err)
	}
	// A video no longer processing is not queued again.
	if err := s.rdb.XAdd(ctx, &redis.XAddArgs{Stream: s.k(jobsKey), Values: []any{"video", v.ID}}).Err(); err != nil {
		t.Fatal(err)
	}
	j4, ok, err := s.NextJob(ctx, "cheat", -1, time.Hour)
	if !ok || err != nil {
		t.Fatalf("NextJob of a duplicate: %v %v", ok, err)
	}
	if ok, err := s.DeferJob(ctx, j4); ok || err != nil {
		t.Fatalf("DeferJob of a ready video's entry: %v %v", ok, err)
	}
	if _, ok, _ := s.NextJob(ctx, "other", -1, time.Hour); ok {
		t.Fatal("a ready video's entry was queued again")
	}
	if q, _ := s.JobQueue(ctx); q.Running != 0 {
		t.Fatalf("pending after all: %+v", q)
	}
}

// What a worker says it transcodes with is kept with its load.
func TestNodeTranscode(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	tc := &nodeproto.Transcoding{Encoder: "software", Decode: "cpu", GPUs: []nodeproto.GPU{}, Ladders: 2, LaddersFrom: "configured"}
	n := Node{ID: "w1", Role: "worker", PublicKey: "k", TokenID: AdminTokenID, Load: NodeLoad{Transcode: tc}}
	if err := s.JoinNode(ctx, n, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetNode(ctx, "w1")
	if err != nil || got.Load.Transcode == nil || got.Load.Transcode.Ladders != 2 || got.Role != "worker" {
		t.Fatalf("joined worker: %+v, %v", got, err)
	}
	tc2 := *tc
	tc2.Ladders, tc2.LaddersFrom = 5, "measured"
	if err := s.NodeHeartbeat(ctx, "w1", NodeLoad{Transcode: &tc2}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if got, _ := s.GetNode(ctx, "w1"); got.Load.Transcode == nil || got.Load.Transcode.Ladders != 5 || got.Load.Transcode.LaddersFrom != "measured" {
		t.Fatalf("after a heartbeat: %+v", got.Load.Transcode)
	}
}
