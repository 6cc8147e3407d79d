package restream

import (
	"context"
	"slices"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// The start of a broadcast reaches the hub before any pusher can subscribe:
// the RTMP ingest reads a couple of seconds to learn the tracks and then
// publishes them in one burst, and the targets are read from Redis after
// the publication started. So each stream keeps its source's access units
// from the first one, for a while (the start window), and a target that has
// not received anything yet starts from there: its pusher splices the
// buffered access units in front of its own subscription, cut exactly
// where that subscription begins (the hub hands every subscriber the same
// *media.AccessUnit).
const (
	startWindow   = 10 * time.Second // after the publication started
	startMaxAUs   = 4096
	startMaxBytes = 64 << 20
	// startSpliceWait bounds how long a pusher waits for the stream's
	// reader to reach the first access unit of its own subscription.
	startSpliceWait = 2 * time.Second
)

// startBuffer holds the access units of a publication's start window.
type startBuffer struct {
	mu     sync.Mutex
	open   bool
	began  time.Time
	aus    []*media.AccessUnit
	bytes  int
	notify chan struct{} // closed and replaced when aus grows or the window closes
}

func newStartBuffer(now time.Time) *startBuffer {
	return &startBuffer{open: true, began: now, notify: make(chan struct{})}
}

// add appends au while the window is open.
func (b *startBuffer) add(au *media.AccessUnit, now time.Time) {
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.open {
		return
	}
	if now.Sub(b.began) > startWindow || len(b.aus) >= startMaxAUs || b.bytes+au.Size() > startMaxBytes {
		b.closeLocked()
		return
	}
	b.aus = append(b.aus, au)
	b.bytes += au.Size()
	close(b.notify)
	b.notify = make(chan struct{})
}

// close ends the window (a restart, the end of the stream) and frees it.
func (b *startBuffer) close() {
	b.mu.Lock()
	defer b.mu.Unlock()
	b.closeLocked()
}

func (b *startBuffer) closeLocked() {
	if !b.open {
		return
	}
	b.open = false
	b.aus = nil
	b.bytes = 0
	close(b.notify)
}

// before returns the buffered access units published before first, the
// first access unit of a subscription; nil once the window closed, or when
// the stream's reader does not reach first in time.
func (b *startBuffer) before(ctx context.Context, first *media.AccessUnit) []*media.AccessUnit {
	timer := time.NewTimer(startSpliceWait)
	defer timer.Stop()
	for {
		b.mu.Lock()
		if !b.open {
			b.mu.Unlock()
			return nil
		}
		// The subscription began near the end of what is buffered.
		for i := len(b.aus) - 1; i >= 0; i-- {
			if b.aus[i] == first {
				out := slices.Clone(b.aus[:i])
				b.mu.Unlock()
				return out
			}
		}
		ch := b.notify
		b.mu.Unlock()
		select {
		case <-ch:
		case <-ctx.Done():
			return nil
		case <-timer.C:
			return nil
		}
	}
}
