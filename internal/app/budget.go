package app

import (
	"context"
	"sync"
)

// ladderBudget shares a remote worker's ladders (its measured capacity)
// between its VOD jobs and its live ladders: a VOD job is claimed only
// while a ladder is free, and each live claim tells the origin how many
// the VOD jobs take, so that it hands a live ladder only to a worker with
// room beside them. A live ladder handed out while a VOD job started (the
// claim is a long poll) runs anyway: one ladder over, until a job ends.
type ladderBudget struct {
	capacity func() int // at least 1 is used

	mu        sync.Mutex
	vod, live int
	changed   chan struct{} // closed and replaced when a ladder frees
}

func newLadderBudget(capacity func() int) *ladderBudget {
	return &ladderBudget{capacity: capacity, changed: make(chan struct{})}
}

// vodBusy is how many ladders VOD jobs take now.
func (b *ladderBudget) vodBusy() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.vod
}

// acquireVOD waits for a free ladder (or ctx) and takes it for a VOD job
// until release.
func (b *ladderBudget) acquireVOD(ctx context.Context) (release func(), err error) {
	for {
		b.mu.Lock()
		if b.vod+b.live < max(1, b.capacity()) {
			b.vod++
			b.mu.Unlock()
			return b.releaser(&b.vod), nil
		}
		wait := b.changed
		b.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-wait:
		}
	}
}

// liveStarted takes a ladder for a live ladder until release.
func (b *ladderBudget) liveStarted() (release func()) {
	b.mu.Lock()
	b.live++
	b.mu.Unlock()
	return b.releaser(&b.live)
}

func (b *ladderBudget) releaser(n *int) func() {
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			*n--
			close(b.changed)
			b.changed = make(chan struct{})
			b.mu.Unlock()
		})
	}
}
