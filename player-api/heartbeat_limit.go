package playerapi

import (
	"math"
	"sync"
	"time"
)

// Heartbeats are limited per node: a burst of heartbeatBurst, then
// heartbeatRate per second (nodes send one every
// nodeproto.HeartbeatInterval, and retry after a second at the soonest);
// the excess is answered 429 with Retry-After. Only heartbeats signed by
// the node's own key are counted, so nobody else can use up its budget.
const (
	heartbeatBurst = 5
	heartbeatRate  = 1.0
	// maxHeartbeatNodes bounds the buckets kept; idle ones (full again)
	// are dropped when it is reached.
	maxHeartbeatNodes = 10_000
)

type heartbeatLimiter struct {
	now     func() time.Time
	mu      sync.Mutex
	buckets map[string]*bucket
}

func newHeartbeatLimiter(now func() time.Time) *heartbeatLimiter {
	return &heartbeatLimiter{now: now, buckets: map[string]*bucket{}}
}

// allow takes a heartbeat of node id from its bucket. When there is none
// left it returns false and how long until there is.
func (l *heartbeatLimiter) allow(id string) (bool, time.Duration) {
	l.mu.Lock()
	defer l.mu.Unlock()
	t := l.now()
	b := l.buckets[id]
	if b == nil {
		if len(l.buckets) >= maxHeartbeatNodes {
			full := time.Duration(heartbeatBurst / heartbeatRate * float64(time.Second))
			for k, old := range l.buckets {
				if t.Sub(old.at) >= full {
					delete(l.buckets, k)
				}
			}
			// Still full: live nodes only reach here (their heartbeats
			// are signed), so this many is already beyond any network;
			// the newcomer is not limited rather than refused.
			if len(l.buckets) >= maxHeartbeatNodes {
				return true, 0
			}
		}
		b = &bucket{tokens: heartbeatBurst, at: t}
		l.buckets[id] = b
	}
	b.refill(t, heartbeatBurst, heartbeatRate)
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / heartbeatRate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// retryAfter is a Retry-After value for a wait of d: whole seconds, at
// least 1.
func retryAfter(d time.Duration) int {
	return max(1, int(math.Ceil(d.Seconds())))
}
