package routing

import (
	"context"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Remote workers (joined nodes of role "worker") take VOD jobs through an
// origin, which claims them from the job queue as the node (the consumer
// is the node id). What their jobs came to is kept per node, for
// GET /v1/nodes:
//
//	shoal:nodework:<node id>  hash  done, rejected, failed, segments_verified, verify_failed,
//	                                verify_errors, transcoded_pixels (counters), last_rejection,
//	                                last_rejection_at; expires workStatsTTL after the last change
//	shoal:jobavoid:<video id> hash  node id -> when its output of the video was refused (Unix ms);
//	                                expires with the newest entry (AvoidWorker)
const (
	nodeWorkPrefix = "nodework:"
	jobAvoidPrefix = "jobavoid:"
)

// workStatsTTL is how long a node's job figures are kept after the last
// change.
const workStatsTTL = 7 * 24 * time.Hour

// JobHolder is who holds a video's job now: the consumer that started the
// current attempt, its number and queue entry, and the video's status.
type JobHolder struct {
	Worker  string
	Attempt int
	Entry   string
	Status  string
}

// JobHolder returns who holds video id's job (ErrNotFound: no such video).
// An attempt's number, entry and consumer are set together when it
// starts, so an attempt found here with its consumer keeps that consumer:
// checking the holder, then acting with the attempt (TouchJob, FinishJob,
// FailJob fence by it) is safe.
func (s *Store) JobHolder(ctx context.Context, id string) (JobHolder, error) {
	v, err := s.rdb.HMGet(ctx, s.videoKey(id), "status", "worker", "attempts", "job").Result()
	if err != nil {
		return JobHolder{}, wrapErr("job holder", err)
	}
	str := func(i int) string { x, _ := v[i].(string); return x }
	if str(0) == "" {
		return JobHolder{}, ErrNotFound
	}
	n, _ := strconv.Atoi(str(2))
	return JobHolder{Status: str(0), Worker: str(1), Attempt: n, Entry: str(3)}, nil
}

// Outcomes of a remote worker's job (AddWorkerOutcome).
const (
	WorkDone     = "done"     // the output was published
	WorkRejected = "rejected" // the output failed the origin's checks
	WorkFailed   = "failed"   // the worker reported a failure
)

// Figures of a remote worker's outputs (AddWorkerFigures), kept beside
// the outcomes.
const (
	// WorkSegmentsVerified: segments of its published outputs that the
	// origin transcoded again and found matching (transcode/verify).
	WorkSegmentsVerified = "segments_verified"
	// WorkVerifyFailed: segments that failed that check (each refused its
	// output).
	WorkVerifyFailed = "verify_failed"
	// WorkVerifyErrors: checks the origin could not make (its own
	// trouble: the worker is not blamed).
	WorkVerifyErrors = "verify_errors"
	// WorkPixels: pixels of its published outputs, width x height x
	// frames summed over the renditions.
	WorkPixels = "transcoded_pixels"
)

// WorkerStats are what a remote worker's jobs came to.
type WorkerStats struct {
	Done     int64
	Rejected int64
	Failed   int64
	// SegmentsVerified, VerifyFailed, VerifyErrors and TranscodedPixels
	// are the Work* figures of the same names.
	SegmentsVerified int64
	VerifyFailed     int64
	VerifyErrors     int64
	TranscodedPixels int64
	// LastRejection is why the latest rejected output was refused.
	LastRejection   string
	LastRejectionAt time.Time
}

// AddWorkerOutcome counts an outcome of node id's job; a rejection keeps
// its reason.
func (s *Store) AddWorkerOutcome(ctx context.Context, id, outcome, reason string) error {
	key := s.k(nodeWorkPrefix) + id
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HIncrBy(ctx, key, outcome, 1)
		if outcome == WorkRejected {
			p.HSet(ctx, key, "last_rejection", reason, "last_rejection_at", formatTime(now()))
		}
		p.PExpire(ctx, key, workStatsTTL)
		return nil
	})
	return wrapErr("worker outcome", err)
}

// AddWorkerFigures adds deltas (Work* figure name -> amount, each >= 0)
// to node id's figures and returns the totals of those figures after the
// change.
func (s *Store) AddWorkerFigures(ctx context.Context, id string, deltas map[string]int64) (map[string]int64, error) {
	names := make([]string, 0, len(deltas))
	for k, v := range deltas {
		if v < 0 {
			return nil, fmt.Errorf("routing: worker figure %s: negative delta %d", k, v)
		}
		names = append(names, k)
	}
	if len(names) == 0 {
		return map[string]int64{}, nil
	}
	slices.Sort(names)
	key := s.k(nodeWorkPrefix) + id
	cmds := make([]*redis.IntCmd, len(names))
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		for i, k := range names {
			cmds[i] = p.HIncrBy(ctx, key, k, deltas[k])
		}
		p.PExpire(ctx, key, workStatsTTL)
		return nil
	})
	if err != nil {
		return nil, wrapErr("worker figures", err)
	}
	out := make(map[string]int64, len(names))
	for i, k := range names {
		out[k] = cmds[i].Val()
	}
	return out, nil
}

// WorkerStats returns the job figures of each of the node ids that has
// some.
func (s *Store) WorkerStats(ctx context.Context, idList []string) (map[string]WorkerStats, error) {
	out := map[string]WorkerStats{}
	if len(idList) == 0 {
		return out, nil
	}
	cmds := make([]*redis.MapStringStringCmd, len(idList))
	_, err := s.rdb.Pipelined(ctx, func(p redis.Pipeliner) error {
		for i, id := range idList {
			cmds[i] = p.HGetAll(ctx, s.k(nodeWorkPrefix)+id)
		}
		return nil
	})
	if err != nil {
		return nil, wrapErr("worker stats", err)
	}
	for i, c := range cmds {
		f := c.Val()
		if len(f) == 0 {
			continue
		}
		n := func(k string) int64 { v, _ := strconv.ParseInt(f[k], 10, 64); return v }
		ws := WorkerStats{Done: n(WorkDone), Rejected: n(WorkRejected), Failed: n(WorkFailed), LastRejection: f["last_rejection"],
			SegmentsVerified: n(WorkSegmentsVerified), VerifyFailed: n(WorkVerifyFailed), VerifyErrors: n(WorkVerifyErrors), TranscodedPixels: n(WorkPixels)}
		ws.LastRejectionAt, _ = parseTime(f["last_rejection_at"])
		out[idList[i]] = ws
	}
	return out, nil
}

// AvoidWorker records that node's output of video id was refused: the
// job's next attempts should go to another worker while one is available
// (DeferJob), for avoidFor from now (the record of the video's refusals
// lasts as long as the latest).
func (s *Store) AvoidWorker(ctx context.Context, id, node string, avoidFor time.Duration) error {
	if avoidFor <= 0 {
		return nil
	}
	key := s.k(jobAvoidPrefix) + id
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HSet(ctx, key, node, now().Add(avoidFor).UnixMilli())
		p.PExpire(ctx, key, avoidFor)
		return nil
	})
	return wrapErr("avoid worker", err)
}

// AvoidedWorkers returns the nodes video id's job should avoid now (see
// AvoidWorker), each with when that ends.
func (s *Store) AvoidedWorkers(ctx context.Context, id string) (map[string]time.Time, error) {
	f, err := s.rdb.HGetAll(ctx, s.k(jobAvoidPrefix)+id).Result()
	if err != nil {
		return nil, wrapErr("avoided workers", err)
	}
	out := map[string]time.Time{}
	t := now()
	for node, v := range f {
		ms, err := strconv.ParseInt(v, 10, 64)
		if err != nil {
			continue
		}
		if until := time.UnixMilli(ms); until.After(t) {
			out[node] = until
		}
	}
	return out, nil
}

// DeferJob puts job, which a worker has just read from the queue
// (NextJob) but should not run, back at the end of the queue for another
// worker, without starting an attempt: the entry is acknowledged and the
// video queued again. An attempt that held this very entry (a reclaimed
// job) is fenced off, as StartJob would. It reports false, changing
// nothing but acknowledging the entry, when the video is no longer
// processing or is gone.
func (s *Store) DeferJob(ctx context.Context, job Job) (bool, error) {
	res, err := deferJobScript.Run(ctx, s.rdb, []string{s.videoKey(job.VideoID), s.k(jobsKey)},
		job.EntryID, jobsGroup, job.VideoID).Text()
	if err != nil {
		return false, wrapErr("defer job", err)
	}
	return res == jobOK, nil
}

var deferJobScript = redis.NewScript(`
redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
local v = redis.call('HMGET', KEYS[1], 'status', 'job')
if not v[1] or v[1] ~= 'processing' then return 'done' end
local id = redis.call('XADD', KEYS[2], '*', 'video', ARGV[3])
if v[2] == ARGV[1] then redis.call('HSET', KEYS[1], 'job', id) end
return 'ok'`)

// Keys of remote workers' job limits:
//
//	shoal:jobfailers:<video id>   hash    node id -> failed or refused attempts of the video's
//	                                      job; expires jobFailersTTL after the last change
//	shoal:workerclaims:<node id>  string  jobs the node started in the current window (CountWorkerClaim)
const (
	jobFailersPrefix   = "jobfailers:"
	workerClaimsPrefix = "workerclaims:"
)

// jobFailersTTL is how long a video's record of the workers that failed
// its job is kept after the last change.
const jobFailersTTL = 7 * 24 * time.Hour

// AddJobFailure records that node failed an attempt at video id's job (it
// reported a failure, or its output was refused) and returns how many
// distinct nodes have failed it.
func (s *Store) AddJobFailure(ctx context.Context, id, node string) (int, error) {
	key := s.k(jobFailersPrefix) + id
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.HIncrBy(ctx, key, node, 1)
		p.PExpire(ctx, key, jobFailersTTL)
		n = p.HLen(ctx, key)
		return nil
	})
	if err != nil {
		return 0, wrapErr("job failure", err)
	}
	return int(n.Val()), nil
}

// CountWorkerClaim counts a job node started (add 1) or only reads the
// count (add 0), within a fixed window of the given length that begins
// at the first job counted, and returns the count.
func (s *Store) CountWorkerClaim(ctx context.Context, node string, add int64, window time.Duration) (int64, error) {
	key := s.k(workerClaimsPrefix) + node
	if add == 0 {
		n, err := s.rdb.Get(ctx, key).Int64()
		if errors.Is(err, redis.Nil) {
			return 0, nil
		}
		return n, wrapErr("worker claims", err)
	}
	var n *redis.IntCmd
	_, err := s.rdb.TxPipelined(ctx, func(p redis.Pipeliner) error {
		p.SetNX(ctx, key, 0, window)
		n = p.IncrBy(ctx, key, add)
		return nil
	})
	if err != nil {
		return 0, wrapErr("worker claims", err)
	}
	return n.Val(), nil
}

// WorkerJobsHeld counts the job queue entries consumer holds that were
// touched within idle (older ones go to the next worker that claims):
// the jobs it is running. It counts at most limit+1.
func (s *Store) WorkerJobsHeld(ctx context.Context, consumer string, idle time.Duration, limit int) (int, error) {
	pend, err := s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: s.k(jobsKey), Group: jobsGroup, Start: "-", End: "+", Count: 1000, Consumer: consumer,
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		if redis.HasErrorPrefix(err, "NOGROUP") {
			return 0, nil
		}
		return 0, wrapErr("worker jobs", err)
	}
	n := 0
	for _, p := range pend {
		if p.Idle < idle {
			if n++; n > limit {
				break
			}
		}
	}
	return n, nil
}
