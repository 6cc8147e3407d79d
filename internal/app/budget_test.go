package app

import (
	"context"
	"testing"
	"time"
)

// VOD jobs take a ladder each while one is free beside the live ladders;
// a VOD job waits until a ladder frees, and the origin is told how many
// VOD jobs run.
func TestLadderBudget(t *testing.T) {
	t.Parallel()
	b := newLadderBudget(func() int { return 2 })
	done, cancel := context.WithCancel(t.Context())
	cancel()
	r1, err := b.acquireVOD(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	endLive := b.liveStarted()
	if b.vodBusy() != 1 {
		t.Fatalf("vod busy %d, want 1", b.vodBusy())
	}
	if _, err := b.acquireVOD(done); err == nil {
		t.Fatal("a second VOD job beside a VOD job and a live ladder on 2 ladders")
	}
	type acquired struct {
		release func()
		err     error
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
		a.release()
	case <-time.After(30 * time.Second):
		t.Fatal("the waiting VOD job did not get the live ladder's ladder")
	}
	r1()
	if b.vodBusy() != 0 {
		t.Fatalf("vod busy %d after every job ended", b.vodBusy())
	}
}
