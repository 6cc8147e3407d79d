package routing

import (
	"context"
	"fmt"
	"time"

	"github.com/redis/go-redis/v9"
)

// The streams read through consumer groups (the VOD job queue, read by the
// workers; the events, read by the webhook dispatchers) are trimmed and
// their dead consumers removed, so neither grows forever:
//
//   - entries every consumer of the group has acknowledged are trimmed
//     (XTRIM MINID: those before the oldest pending entry, or before the
//     last entry handed out when none is pending); entries not handed out
//     yet are never trimmed. The events stream is bounded besides by
//     XADD MAXLEN ~ eventsMaxLen.
//   - consumers with nothing pending and idle for DeadConsumerIdle
//     (workers and dispatchers that are gone: each process reads under a
//     name of its own) are deleted (XGROUP DELCONSUMER).
//
// Both run in one script per stream, so a consumer that reads while it
// runs keeps what it read. NextJob and ReadWebhookEvents run them at most
// once every StreamMaintenanceInterval on each Store.
const (
	// StreamMaintenanceInterval is how often a Store's readers trim the
	// streams they read.
	StreamMaintenanceInterval = time.Minute
	// DeadConsumerIdle is how long a consumer with nothing pending must
	// have been idle before it is removed from its group.
	DeadConsumerIdle = time.Hour
)

// StreamMaintenance is what MaintainStreams removed.
type StreamMaintenance struct {
	Trimmed   int64 // stream entries
	Consumers int64 // dead consumers
}

// MaintainStreams trims the acknowledged entries of the job queue and the
// events stream and removes their consumers that have nothing pending and
// have been idle for at least consumerIdle. Streams or groups that do not
// exist yet are left alone.
func (s *Store) MaintainStreams(ctx context.Context, consumerIdle time.Duration) (StreamMaintenance, error) {
	var out StreamMaintenance
	for _, st := range []struct{ key, group string }{
		{s.k(jobsKey), jobsGroup},
		{s.k(eventsKey), webhookEventsGroup},
	} {
		res, err := maintainStreamScript.Run(ctx, s.rdb, []string{st.key}, st.group, consumerIdle.Milliseconds()).Int64Slice()
		if err != nil {
			return out, wrapErr("maintain stream "+st.key, err)
		}
		if len(res) != 2 {
			return out, fmt.Errorf("routing: maintain stream %s: unexpected reply %v", st.key, res)
		}
		out.Trimmed += res[0]
		out.Consumers += res[1]
	}
	return out, nil
}

// maybeMaintainStreams runs MaintainStreams (DeadConsumerIdle) when this
// Store has not for StreamMaintenanceInterval. Failures are left for the
// next time: maintenance never fails a read.
func (s *Store) maybeMaintainStreams(ctx context.Context) {
	now := s.nowMs()
	last := s.maintainedAt.Load()
	if last != 0 && now-last < StreamMaintenanceInterval.Milliseconds() {
		return
	}
	if !s.maintainedAt.CompareAndSwap(last, now) {
		return // another goroutine does it
	}
	_, _ = s.MaintainStreams(ctx, DeadConsumerIdle)
}

// KEYS: 1 stream. ARGV: 1 group, 2 consumer idle (ms).
// Answers {entries trimmed, consumers deleted}.
var maintainStreamScript = redis.NewScript(`
if redis.call('EXISTS', KEYS[1]) == 0 then return {0, 0} end
local function field(list, name)
  for i = 1, #list, 2 do
    if list[i] == name then return list[i + 1] end
  end
  return nil
end
local g
for _, info in ipairs(redis.call('XINFO', 'GROUPS', KEYS[1])) do
  if field(info, 'name') == ARGV[1] then g = info end
end
if not g then return {0, 0} end
local trimmed = 0
local minid = field(g, 'last-delivered-id')
if field(g, 'pending') > 0 then
  minid = redis.call('XPENDING', KEYS[1], ARGV[1])[2]
end
if minid ~= '0-0' then
  trimmed = redis.call('XTRIM', KEYS[1], 'MINID', minid)
end
local idle = tonumber(ARGV[2])
local deleted = 0
for _, c in ipairs(redis.call('XINFO', 'CONSUMERS', KEYS[1], ARGV[1])) do
  if field(c, 'pending') == 0 and field(c, 'idle') >= idle then
    redis.call('XGROUP', 'DELCONSUMER', KEYS[1], ARGV[1], field(c, 'name'))
    deleted = deleted + 1
  end
end
return {trimmed, deleted}`)
