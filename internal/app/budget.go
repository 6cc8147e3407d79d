package app

import (
	"context"
	"sync"
)

// ladderBudget shares a remote worker's ladders (its measured capacity)
// between its VOD jobs and its live ladders: a VOD claim is made only
// while a ladder is free, and each live claim tells the origin how many
// VOD jobs run (claims in flight do not count), so that it hands a live
// ladder only to a worker with room beside them. A live claim is a long
// poll (up to 20 s): VOD jobs claimed while it waits are not in the figure
// it carries, so until the next claim the origin may hand it as many live
// ladders as it has room for beside the jobs it knew of.
type ladderBudget struct {
	capacity func() int // at least 1 is used

	mu        sync.Mutex
	vod, live int           // ladders taken: VOD claims and jobs, live ladders
	running   int           // VOD jobs claimed and running
	changed   chan struct{} // closed and replaced when a ladder frees
}

func newLadderBudget(capacity func() int) *ladderBudget {
	return &ladderBudget{capacity: capacity, changed: make(chan struct{})}
}

// vodBusy is how many VOD jobs run now.
func (b *ladderBudget) vodBusy() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.running
}

// acquireVOD waits for a free ladder (or ctx) and takes it for a VOD
// claim: hold(true) says a job was claimed and runs, hold(false) frees
// the ladder (remote.WorkerDeps.Gate).
func (b *ladderBudget) acquireVOD(ctx context.Context) (hold func(running bool), err error) {
	for {
		b.mu.Lock()
		if b.vod+b.live < max(1, b.capacity()) {
			b.vod++
			b.mu.Unlock()
			return b.vodHold(), nil
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

func (b *ladderBudget) vodHold() func(bool) {
	running, freed := false, false
	return func(run bool) {
		b.mu.Lock()
		defer b.mu.Unlock()
		switch {
		case freed:
		case run && !running:
			running = true
			b.running++
		case !run:
			freed = true
			if running {
				b.running--
			}
			b.vod--
			b.freed()
		}
	}
}

// liveStarted takes a ladder for a live ladder until release.
func (b *ladderBudget) liveStarted() (release func()) {
	b.mu.Lock()
	b.live++
	b.mu.Unlock()
	var once sync.Once
	return func() {
		once.Do(func() {
			b.mu.Lock()
			defer b.mu.Unlock()
			b.live--
			b.freed()
		})
	}
}

// freed wakes the claims waiting for a ladder. Called with mu held.
func (b *ladderBudget) freed() {
	close(b.changed)
	b.changed = make(chan struct{})
}
