package rtsp

import (
	"context"
	"log/slog"
	"sync"
	"testing"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/stream"
)

// TestPullerStopIsFinal: Stop ends a pull and waits for it, and the next
// refreshes do not start it again although the list of sources (read a
// moment before the deletion) still names it; a new source starts.
func TestPullerStopIsFinal(t *testing.T) {
	t.Parallel()
	hub, err := stream.New(stream.Config{QueueSize: 16}, stream.Deps{Log: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	sources := []Source{{ID: "gone", URL: "rtsp://127.0.0.1:1/none"}}
	p, err := NewPuller(PullConfig{}, PullDeps{Log: slog.New(slog.DiscardHandler), Hub: hub,
		Sources: func(context.Context) ([]Source, error) {
			mu.Lock()
			defer mu.Unlock()
			return append([]Source(nil), sources...), nil
		}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(t.Context())
	var g errgroup.Group
	defer func() { cancel(); _ = g.Wait() }()
	p.refresh(ctx, &g)
	if _, ok := p.Status("gone"); !ok {
		t.Fatal("a listed source is not pulled")
	}
	p.Stop("gone")
	if _, ok := p.Status("gone"); ok {
		t.Fatal("a stopped pull still has a status")
	}
	mu.Lock()
	sources = append(sources, Source{ID: "new", URL: "rtsp://127.0.0.1:1/other"})
	mu.Unlock()
	for range 3 {
		p.refresh(ctx, &g)
	}
	if _, ok := p.Status("gone"); ok {
		t.Fatal("a stopped pull was started again")
	}
	if st, ok := p.Status("new"); !ok || st.Since.After(time.Now()) {
		t.Fatalf("the new source is not pulled: %+v %v", st, ok)
	}
}
