package routing

import (
	"context"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// Remote workers (joined nodes of role "worker") take VOD jobs through an
// origin, which claims them from the job queue as the node (the consumer
// is the node id). What their jobs came to is kept per node, for
// GET /v1/nodes:
//
//	shoal:nodework:<node id>  hash  done, rejected, failed (counters), last_rejection, last_rejection_at;
//	                                expires workStatsTTL after the last change
const nodeWorkPrefix = "nodework:"

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

// WorkerStats are what a remote worker's jobs came to.
type WorkerStats struct {
	Done     int64
	Rejected int64
	Failed   int64
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
		ws := WorkerStats{Done: n(WorkDone), Rejected: n(WorkRejected), Failed: n(WorkFailed), LastRejection: f["last_rejection"]}
		ws.LastRejectionAt, _ = parseTime(f["last_rejection_at"])
		out[idList[i]] = ws
	}
	return out, nil
}
