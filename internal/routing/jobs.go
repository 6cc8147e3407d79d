package routing

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/redis/go-redis/v9"
)

// The VOD job queue is a Redis stream read through one consumer group, so
// that every job is handed to one worker at a time and stays in the group's
// pending list until that worker acknowledges it. A worker that dies leaves
// its job pending; once the job has been idle for longer than the workers'
// idle timeout, another worker takes it over with XAUTOCLAIM. Workers touch
// the jobs they hold while they work, which keeps them from looking idle.
//
// The video's hash is the job's state: "attempts" counts the attempts
// started, and each attempt is fenced by its number, so a worker that was
// taken for dead and comes back can neither report progress nor finish a
// job that another attempt now owns.
const (
	jobsKey   = "jobs:vod"
	jobsGroup = "workers"
)

// Job is one entry of the job queue.
type Job struct {
	EntryID string
	VideoID string
	// Reclaimed is set when the job was taken over from a worker that
	// stopped touching it.
	Reclaimed bool
	// From is the consumer that held a reclaimed job.
	From string
}

// JobStart is the outcome of StartJob.
type JobStart struct {
	// Attempt is the attempt number this worker owns (from 1); zero when
	// the job is not to be run (see Skip).
	Attempt int
	// Skip says why the job is not to be run: "deleted" (the video is
	// gone), "done" (it is no longer processing: a duplicate entry) or
	// "gave_up" (too many attempts: the video is now failed).
	Skip  string
	Video Video
}

// JobOutcome is what a finished job produced.
type JobOutcome struct {
	Duration   time.Duration
	Renditions []VideoRendition
	Poster     bool
	Storyboard bool
}

// Job fencing outcomes.
const (
	jobOK      = "ok"
	jobStale   = "stale"
	jobDeleted = "deleted"
)

// ErrJobLost is returned by TouchJob and FinishJob when the attempt no
// longer owns its job: another worker took it over, the video was deleted
// or it is no longer processing. The worker must stop and discard its work.
var ErrJobLost = errors.New("the job is no longer held by this attempt")

// ErrVideoDeleted is wrapped, with ErrJobLost, when the job's video was
// deleted.
var ErrVideoDeleted = errors.New("the video was deleted")

// jobLost is the error for a fencing outcome other than jobOK.
func jobLost(res string) error {
	if res == jobDeleted {
		return fmt.Errorf("%w: %w", ErrJobLost, ErrVideoDeleted)
	}
	return fmt.Errorf("%w (another attempt owns it or it is no longer processing)", ErrJobLost)
}

// EnsureJobQueue creates the job stream and its consumer group when they do
// not exist yet.
func (s *Store) EnsureJobQueue(ctx context.Context) error {
	err := s.rdb.XGroupCreateMkStream(ctx, s.k(jobsKey), jobsGroup, "0").Err()
	if err != nil && !redis.HasErrorPrefix(err, "BUSYGROUP") {
		return wrapErr("create job queue", err)
	}
	return nil
}

// NextJob returns the next job for consumer: first a job another worker has
// left idle for longer than minIdle, otherwise a new one, waiting up to
// block for it. ok is false when none arrived in time.
func (s *Store) NextJob(ctx context.Context, consumer string, block, minIdle time.Duration) (job Job, ok bool, err error) {
	s.maybeMaintainStreams(ctx)
	// Whose job it was is asked first: XAUTOCLAIM does not say.
	pend, err := s.rdb.XPendingExt(ctx, &redis.XPendingExtArgs{
		Stream: s.k(jobsKey), Group: jobsGroup, Idle: minIdle, Start: "-", End: "+", Count: 1,
	}).Result()
	if err != nil && !errors.Is(err, redis.Nil) {
		return Job{}, false, wrapErr("read job queue", err)
	}
	if len(pend) > 0 {
		msgs, _, err := s.rdb.XAutoClaim(ctx, &redis.XAutoClaimArgs{
			Stream: s.k(jobsKey), Group: jobsGroup, Consumer: consumer, MinIdle: minIdle, Start: pend[0].ID, Count: 1,
		}).Result()
		if err != nil {
			return Job{}, false, wrapErr("reclaim job", err)
		}
		if len(msgs) > 0 && msgs[0].ID == pend[0].ID {
			j := jobFromMessage(msgs[0])
			j.Reclaimed, j.From = true, pend[0].Consumer
			return j, true, nil
		}
	}
	streams, err := s.rdb.XReadGroup(ctx, &redis.XReadGroupArgs{
		Group: jobsGroup, Consumer: consumer, Streams: []string{s.k(jobsKey), ">"}, Count: 1, Block: block,
	}).Result()
	if errors.Is(err, redis.Nil) {
		return Job{}, false, nil
	}
	if err != nil {
		return Job{}, false, wrapErr("read job queue", err)
	}
	for _, st := range streams {
		for _, m := range st.Messages {
			return jobFromMessage(m), true, nil
		}
	}
	return Job{}, false, nil
}

func jobFromMessage(m redis.XMessage) Job {
	id, _ := m.Values["video"].(string)
	return Job{EntryID: m.ID, VideoID: id}
}

// StartJob begins an attempt at job for consumer. At most maxAttempts
// attempts start: the one after fails the video with the last error.
func (s *Store) StartJob(ctx context.Context, job Job, consumer string, maxAttempts int) (JobStart, error) {
	reason := ""
	if job.Reclaimed {
		reason = fmt.Sprintf("worker %s stopped while processing", job.From)
	}
	res, err := startJobScript.Run(ctx, s.rdb, []string{s.videoKey(job.VideoID), s.k(jobsKey), s.k(eventsKey)},
		job.EntryID, jobsGroup, consumer, maxAttempts, formatTime(now()), eventsMaxLen, job.VideoID, reason).StringSlice()
	if err != nil {
		return JobStart{}, wrapErr("start job", err)
	}
	if res[0] != jobOK {
		return JobStart{Skip: res[0]}, nil
	}
	n, _ := strconv.Atoi(res[1])
	v, err := s.GetVideo(ctx, job.VideoID)
	if err != nil {
		return JobStart{}, err
	}
	return JobStart{Attempt: n, Video: v}, nil
}

var startJobScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'title', 'last_error')
if not v[1] then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
  return {'deleted'}
end
if v[1] ~= 'processing' then
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
  return {'done'}
end
local last = v[3] or ''
if ARGV[8] ~= '' then last = ARGV[8]; redis.call('HSET', KEYS[1], 'last_error', last) end
local a = redis.call('HINCRBY', KEYS[1], 'attempts', 1)
if a > tonumber(ARGV[4]) then
  local msg = 'processing failed after ' .. (a - 1) .. ' attempts: ' .. last
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', msg, 'progress', 0, 'attempts', a - 1, 'updated_at', ARGV[5])
  local data = cjson.encode({id = ARGV[7], title = v[2], status = 'failed', error = msg})
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[6], '*', 'type', 'video.failed', 'data', data, 'at', ARGV[5])
  redis.call('XACK', KEYS[2], ARGV[2], ARGV[1])
  return {'gave_up'}
end
redis.call('HSET', KEYS[1], 'worker', ARGV[3], 'job', ARGV[1], 'progress', 0, 'updated_at', ARGV[5])
return {'ok', tostring(a)}`)

// TouchJob records the progress (0-100) of attempt and resets the job's
// idle time so that no other worker reclaims it. It returns ErrJobLost when
// the attempt no longer owns the job.
func (s *Store) TouchJob(ctx context.Context, job Job, consumer string, attempt, progress int) error {
	res, err := touchJobScript.Run(ctx, s.rdb, []string{s.videoKey(job.VideoID), s.k(jobsKey)},
		attempt, progress, formatTime(now()), job.EntryID, jobsGroup, consumer).Text()
	if err != nil {
		return wrapErr("touch job", err)
	}
	if res != jobOK {
		return jobLost(res)
	}
	return nil
}

var touchJobScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'job')
if not v[1] then
  redis.call('XACK', KEYS[2], ARGV[5], ARGV[4])
  return 'deleted'
end
if v[1] ~= 'processing' or v[2] ~= ARGV[1] or (v[3] and v[3] ~= ARGV[4]) then return 'stale' end
redis.call('HSET', KEYS[1], 'progress', ARGV[2], 'updated_at', ARGV[3])
redis.call('XCLAIM', KEYS[2], ARGV[5], ARGV[6], 0, ARGV[4], 'JUSTID')
return 'ok'`)

// FinishJob makes the video ready with out, acknowledges the job and
// announces video.ready, in one step, if attempt still owns the job;
// otherwise it returns ErrJobLost and changes nothing.
func (s *Store) FinishJob(ctx context.Context, job Job, attempt int, out JobOutcome) error {
	rend, err := json.Marshal(out.Renditions)
	if err != nil {
		return fmt.Errorf("routing: finish job: %w", err)
	}
	res, err := finishJobScript.Run(ctx, s.rdb, []string{s.videoKey(job.VideoID), s.k(jobsKey), s.k(eventsKey)},
		attempt, job.EntryID, jobsGroup, formatSeconds(out.Duration), string(rend),
		boolField(out.Poster), boolField(out.Storyboard), formatTime(now()), eventsMaxLen, job.VideoID).Text()
	if err != nil {
		return wrapErr("finish job", err)
	}
	if res != jobOK {
		return jobLost(res)
	}
	return nil
}

func boolField(b bool) string {
	if b {
		return "1"
	}
	return "0"
}

var finishJobScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'title', 'job')
if not v[1] then
  redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
  return 'deleted'
end
if v[1] ~= 'processing' or v[2] ~= ARGV[1] or (v[4] and v[4] ~= ARGV[2]) then return 'stale' end
redis.call('HSET', KEYS[1], 'status', 'ready', 'progress', 100, 'error', '', 'duration', ARGV[4],
  'renditions', ARGV[5], 'poster', ARGV[6], 'storyboard', ARGV[7], 'updated_at', ARGV[8])
redis.call('HDEL', KEYS[1], 'worker', 'last_error')
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
local data = cjson.encode({id = ARGV[10], title = v[3], status = 'ready',
  duration = tonumber(ARGV[4]), renditions = cjson.decode(ARGV[5])})
redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[9], '*', 'type', 'video.ready', 'data', data, 'at', ARGV[8])
return 'ok'`)

// FailJob ends attempt with the error msg (for people). A permanent error,
// or the last allowed attempt, fails the video and announces video.failed;
// otherwise the job is queued again for a new attempt. retry tells which
// happened. ErrJobLost is returned when attempt no longer owns the job.
func (s *Store) FailJob(ctx context.Context, job Job, attempt int, msg string, permanent bool, maxAttempts int) (retry bool, err error) {
	res, err := failJobScript.Run(ctx, s.rdb, []string{s.videoKey(job.VideoID), s.k(jobsKey), s.k(eventsKey)},
		attempt, job.EntryID, jobsGroup, msg, boolField(permanent), maxAttempts, formatTime(now()),
		eventsMaxLen, job.VideoID).Text()
	if err != nil {
		return false, wrapErr("fail job", err)
	}
	switch res {
	case "retry":
		return true, nil
	case "failed":
		return false, nil
	default:
		return false, jobLost(res)
	}
}

var failJobScript = redis.NewScript(`
local v = redis.call('HMGET', KEYS[1], 'status', 'attempts', 'title', 'job')
if not v[1] then
  redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
  return 'deleted'
end
if v[1] ~= 'processing' or v[2] ~= ARGV[1] or (v[4] and v[4] ~= ARGV[2]) then return 'stale' end
redis.call('XACK', KEYS[2], ARGV[3], ARGV[2])
if ARGV[5] == '1' or tonumber(ARGV[1]) >= tonumber(ARGV[6]) then
  redis.call('HSET', KEYS[1], 'status', 'failed', 'error', ARGV[4], 'progress', 0, 'updated_at', ARGV[7])
  redis.call('HDEL', KEYS[1], 'worker')
  local data = cjson.encode({id = ARGV[9], title = v[3], status = 'failed', error = ARGV[4]})
  redis.call('XADD', KEYS[3], 'MAXLEN', '~', ARGV[8], '*', 'type', 'video.failed', 'data', data, 'at', ARGV[7])
  return 'failed'
end
-- The failed attempt is fenced off at once (as DeferJob does): the job is
-- the new entry's, so the same failure sent again, or a late finish or
-- touch of the failed attempt, is stale.
local id = redis.call('XADD', KEYS[2], '*', 'video', ARGV[9])
redis.call('HSET', KEYS[1], 'last_error', ARGV[4], 'progress', 0, 'updated_at', ARGV[7], 'job', id)
redis.call('HDEL', KEYS[1], 'worker')
return 'retry'`)

// JobQueueStats are the queue's figures for metrics.
type JobQueueStats struct {
	Waiting int64 // entries not yet handed to a worker
	Running int64 // entries handed out and not acknowledged
}

// JobQueue returns the queue's figures (zero before the queue exists).
func (s *Store) JobQueue(ctx context.Context) (JobQueueStats, error) {
	groups, err := s.rdb.XInfoGroups(ctx, s.k(jobsKey)).Result()
	if err != nil {
		if redis.HasErrorPrefix(err, "no such key") { // HasErrorPrefix drops "ERR "
			return JobQueueStats{}, nil
		}
		return JobQueueStats{}, wrapErr("job queue stats", err)
	}
	for _, g := range groups {
		if g.Name == jobsGroup {
			return JobQueueStats{Waiting: max(g.Lag, 0), Running: g.Pending}, nil
		}
	}
	return JobQueueStats{}, nil
}
