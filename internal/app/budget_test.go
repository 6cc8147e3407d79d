package app

import (
	"context"
	"testing"
	"time"
)

// VOD claims take a ladder each while one is free beside the live
// ladders; a VOD claim waits until a ladder frees, and the origin is told
// how many VOD jobs run (claims that found none do not count).
func TestLadderBudget(t *testing.T) {
	t.Parallel()
	b := newLadderBudget(func() int { return 2 })
	done, cancel := context.WithCancel(t.Context())
	cancel()
	r1, err := b.acquireVOD(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if b.vodBusy() != 0 {
		t.Fatalf("vod busy %d while claiming, want 0", b.vodBusy())
	}
	r1(true)
	endLive := b.liveStarted()
	if b.vodBusy() != 1 {
		t.Fatalf("vod busy %d, want 1", b.vodBusy())
	}
	if _, err := b.acquireVOD(done); err == nil {
		t.Fatal("a second VOD job beside a VOD job and a live ladder on 2 ladders")
	}
	type acquired struct {
		hold func(bool)
		err  error
	}
	got := make(chan acquired, 1)
	go func() {
		r, err := b.acquireVOD(t.Context())
		got <- acquired{r, err}
	}()
	endLive()
	endLive() // a release counts once
	select {
	case a := <-got:
		if a.err != nil {
			t.Fatal(a.err)
		}
		a.hold(false) // the claim found no job
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting VOD job did not get the live ladder's ladder")
	}
	r1(false)
	r1(false) // a release counts once
	if b.vodBusy() != 0 {
		t.Fatalf("vod busy %d after every job ended", b.vodBusy())
	}
}

// A claim that finds no job frees its ladder: the next claim need not
// wait, and the origin is never told of a VOD job.
func TestLadderBudgetIdleClaims(t *testing.T) {
	t.Parallel()
	b := newLadderBudget(func() int { return 1 })
	for range 3 {
		hold, err := b.acquireVOD(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if b.vodBusy() != 0 {
			t.Fatal("a claim in flight reported as a VOD job")
		}
		hold(false)
	}
}
