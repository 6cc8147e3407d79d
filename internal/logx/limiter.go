// Package logx has logging helpers shared by every stage.
package logx

import (
	"sync"
	"time"
)

// Limiter rate-limits a repeating log line: Allow returns true at most once
// per interval and reports how many calls it swallowed since the last true.
// Per-packet errors go through a Limiter so bad input never floods the log.
type Limiter struct {
	interval time.Duration

	mu         sync.Mutex
	last       time.Time
	suppressed int
}

// NewLimiter returns a limiter that lets one line through per interval.
func NewLimiter(interval time.Duration) *Limiter { return &Limiter{interval: interval} }

// Allow reports whether to log now and how many lines were suppressed before.
func (l *Limiter) Allow() (ok bool, suppressed int) {
	l.mu.Lock()
	defer l.mu.Unlock()
	now := time.Now()
	if !l.last.IsZero() && now.Sub(l.last) < l.interval {
		l.suppressed++
		return false, 0
	}
	l.last = now
	s := l.suppressed
	l.suppressed = 0
	return true, s
}
