package routing

import (
	"context"
	"errors"
	"fmt"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
)

// Restoring what Redis lost. Redis without persistence, restarted, comes
// back empty: the origin notices (Epoch) and writes back what it kept
// elsewhere: the records of the streams live on it (RestoreLiveStream) and
// those of the videos it keeps a copy of next to their sources
// (VideoFields, RestoreVideo), re-queueing the ones being processed.

const epochKey = "epoch"

// Epoch is the mark of this Redis's data ("" when there is none: a Redis
// used for the first time, or one that lost its data). An origin that
// sees it change or go restores what it kept, then calls MarkEpoch.
func (s *Store) Epoch(ctx context.Context) (string, error) {
	v, err := s.rdb.Get(ctx, s.k(epochKey)).Result()
	if errors.Is(err, redis.Nil) {
		return "", nil
	}
	if err != nil {
		return "", wrapErr("epoch", err)
	}
	return v, nil
}

// MarkEpoch gives this Redis a mark if it has none and returns the mark.
func (s *Store) MarkEpoch(ctx context.Context) (string, error) {
	if err := s.rdb.SetNX(ctx, s.k(epochKey), ids.New(), 0).Err(); err != nil {
		return "", wrapErr("epoch", err)
	}
	return s.Epoch(ctx)
}

// VideoFields is the record of video id as Redis holds it (for a copy that
// RestoreVideo can write back), or ErrNotFound.
func (s *Store) VideoFields(ctx context.Context, id string) (map[string]string, error) {
	f, err := s.rdb.HGetAll(ctx, s.videoKey(id)).Result()
	if err != nil {
		return nil, wrapErr("get video", err)
	}
	if len(f) == 0 {
		return nil, ErrNotFound
	}
	if _, err := s.decodeVideo(id, f); err != nil {
		return nil, err
	}
	return f, nil
}

// RestoreVideo writes back the record fields of video id (a copy made by
// VideoFields) when Redis has none and the video was not deleted; a video
// that was being processed is queued again. It reports whether it wrote
// the record and whether it queued a job.
func (s *Store) RestoreVideo(ctx context.Context, id string, fields map[string]string) (restored, queued bool, err error) {
	v, err := s.decodeVideo(id, fields)
	if err != nil || !ids.Valid(id) {
		return false, false, fmt.Errorf("restore video %q: not a video record (%v)", id, err)
	}
	args := []any{id, v.CreatedAt.UnixMicro(), v.Status}
	for k, val := range fields {
		if v.Status == VideoProcessing {
			// Processed again from the start, by whichever worker.
			switch k {
			case fieldAttempts, fieldProgress:
				val = "0"
			case "worker", "job":
				continue
			}
		}
		args = append(args, k, val)
	}
	n, err := restoreVideoScript.Run(ctx, s.rdb, []string{s.videoKey(id), s.deletedKey(id), s.k(videosIndex), s.k(jobsKey)}, args...).Int()
	if err != nil {
		return false, false, wrapErr("restore video", err)
	}
	return n > 0, n == 2, nil
}

var restoreVideoScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 1 or redis.call('EXISTS', KEYS[2]) == 1 then return 0 end
for i = 4, #ARGV, 2 do redis.call('HSET', KEYS[1], ARGV[i], ARGV[i+1]) end
redis.call('ZADD', KEYS[3], ARGV[2], ARGV[1])
if ARGV[3] == '` + VideoProcessing + `' then
  redis.call('XADD', KEYS[4], '*', 'video', ARGV[1])
  return 2
end
return 1`)
