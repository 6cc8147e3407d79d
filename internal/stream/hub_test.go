package stream

import (
	"context"
	"errors"
	"io"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/media"
)

var (
	testKey    = media.StreamKey{Name: "abc", Rendition: media.RenditionSource}
	testTracks = []media.Track{{Codec: media.CodecH264, ClockRate: 90000}, {Codec: media.CodecAAC, ClockRate: 48000}}
)

func newHub(t *testing.T, cfg Config) (*Hub, *prometheus.Registry) {
	t.Helper()
	reg := prometheus.NewRegistry()
	h, err := New(cfg, Deps{Registerer: reg})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = h.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })
	return h, reg
}

func next(t *testing.T, s *Subscriber) Event {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	ev, err := s.Next(ctx)
	if err != nil {
		t.Fatalf("Next: %v", err)
	}
	return ev
}

func au(track int, dts int64, key bool) *media.AccessUnit {
	return &media.AccessUnit{Track: track, DTS: dts, PTS: dts, Keyframe: key, Payload: [][]byte{{1}}}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	if _, err := New(Config{QueueSize: 0}, Deps{}); err == nil {
		t.Fatal("queue size 0 accepted")
	}
	if _, err := New(Config{QueueSize: 1, Grace: -1}, Deps{}); err == nil {
		t.Fatal("negative grace accepted")
	}
}

func TestWatchSeesEverythingFromTheStart(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, Config{QueueSize: 16})
	w := h.Watch(func(k media.StreamKey) bool { return k.Rendition == media.RenditionSource })
	defer w.Close()
	other := h.Watch(func(media.StreamKey) bool { return false })
	defer other.Close()

	pub, err := h.Publish(testKey, testTracks)
	if err != nil {
		t.Fatal(err)
	}
	pub.Write(au(0, 0, true))
	if !h.IsLive("abc") || h.IsLive("other") {
		t.Fatal("IsLive is wrong")
	}
	if _, err := h.Publish(testKey, testTracks); !errors.Is(err, ErrBusy) {
		t.Fatalf("second publisher: err = %v, want ErrBusy", err)
	}

	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sub, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, sub); len(ev.Tracks) != 2 || ev.Restart {
		t.Fatalf("first event = %+v, want the tracks", ev)
	}
	if ev := next(t, sub); ev.AU == nil || ev.AU.DTS != 0 {
		t.Fatalf("second event = %+v, want the first AU", ev)
	}
	pub.Close() // grace 0: ends at once
	if _, err := sub.Next(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after end: err = %v, want EOF", err)
	}
	if h.IsLive("abc") {
		t.Fatal("still live after end")
	}
}

func TestSlowReaderDropsUntilKeyframe(t *testing.T) {
	t.Parallel()
	h, reg := newHub(t, Config{QueueSize: 4})
	pub, err := h.Publish(testKey, testTracks)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := h.Subscribe(testKey)
	if err != nil {
		t.Fatal(err)
	}
	next(t, sub) // tracks
	// 4 fit, then the queue is full: the rest of the GOP is dropped,
	// audio included, until the next video keyframe.
	pub.Write(au(0, 0, true))
	for i := int64(1); i <= 3; i++ {
		pub.Write(au(0, i, false))
	}
	pub.Write(au(0, 4, false))
	pub.Write(au(1, 4, true))
	for i := 0; i < 4; i++ {
		next(t, sub)
	}
	pub.Write(au(0, 5, false)) // still waiting for a keyframe
	pub.Write(au(0, 6, true))
	if ev := next(t, sub); ev.AU.DTS != 6 || !ev.AU.Keyframe {
		t.Fatalf("after drops got %+v, want the keyframe at 6", ev.AU)
	}
	if sub.Dropped() != 3 {
		t.Fatalf("Dropped = %d, want 3", sub.Dropped())
	}
	if got := testutil.ToFloat64(h.dropped.WithLabelValues(media.RenditionSource)); got != 3 {
		t.Fatalf("metric = %v, want 3", got)
	}
	if n, _ := testutil.GatherAndCount(reg, "shoal_hub_dropped_access_units_total"); n != 1 {
		t.Fatalf("metric not registered")
	}
}

func TestReconnectWithinGraceContinues(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, Config{QueueSize: 16, Grace: time.Hour})
	pub, _ := h.Publish(testKey, testTracks)
	sub, _ := h.Subscribe(testKey)
	next(t, sub)
	pub.Write(au(0, 0, true))
	pub.Close()
	if !h.IsLive("abc") {
		t.Fatal("not live during grace")
	}
	pub2, err := h.Publish(testKey, testTracks[:1])
	if err != nil {
		t.Fatal(err)
	}
	pub.Write(au(0, 99, true)) // the old publisher is ignored
	pub2.Write(au(0, 0, true))
	next(t, sub)
	if ev := next(t, sub); !ev.Restart || len(ev.Tracks) != 1 {
		t.Fatalf("got %+v, want a restart with 1 track", ev)
	}
	if ev := next(t, sub); ev.AU == nil || ev.AU.DTS != 0 {
		t.Fatalf("got %+v, want the new publisher's AU", ev)
	}
}

func TestGraceExpiryEnds(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, Config{QueueSize: 16, Grace: 50 * time.Millisecond})
	pub, _ := h.Publish(testKey, testTracks)
	sub, _ := h.Subscribe(testKey)
	next(t, sub)
	pub.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if _, err := sub.Next(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want EOF after grace", err)
	}
	if _, err := h.Publish(testKey, testTracks); err != nil {
		t.Fatalf("publishing after the end: %v", err)
	}
}

func TestRunEndsEverything(t *testing.T) {
	t.Parallel()
	h, err := New(Config{QueueSize: 4, Grace: time.Hour}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error)
	go func() { done <- h.Run(ctx) }()
	w := h.Watch(func(media.StreamKey) bool { return true })
	if _, err := h.Publish(testKey, testTracks); err != nil {
		t.Fatal(err)
	}
	sub, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	next(t, sub)
	if _, err := sub.Next(context.Background()); !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want EOF", err)
	}
	if _, err := w.Next(context.Background()); !errors.Is(err, ErrClosed) {
		t.Fatalf("watcher err = %v, want ErrClosed", err)
	}
	if _, err := h.Publish(testKey, testTracks); !errors.Is(err, ErrClosed) {
		t.Fatalf("publish after close: %v", err)
	}
}

func TestEndSkipsTheGrace(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, Config{QueueSize: 16, Grace: time.Hour})
	pub, _ := h.Publish(testKey, testTracks)
	sub, _ := h.Subscribe(testKey)
	next(t, sub)
	if !h.End(testKey) || h.End(testKey) {
		t.Fatal("End reported the wrong thing")
	}
	pub.Write(au(0, 0, true)) // ignored
	pub.Close()
	if _, err := sub.Next(context.Background()); !errors.Is(err, io.EOF) {
		t.Fatalf("err = %v, want EOF", err)
	}
	if h.IsLive("abc") {
		t.Fatal("still live after End")
	}
}

func TestPublisherEndLeavesANewerPublisherAlone(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, Config{QueueSize: 16, Grace: time.Hour})
	old, _ := h.Publish(testKey, testTracks)
	old.Close()
	cur, err := h.Publish(testKey, testTracks) // a reconnect takes the publication over
	if err != nil {
		t.Fatal(err)
	}
	old.End()
	if !h.IsLive("abc") {
		t.Fatal("an old publisher's End ended the reconnected publication")
	}
	cur.End()
	if h.IsLive("abc") {
		t.Fatal("End by the latest publisher did not end the publication")
	}
}

func TestLosslessWaitsForTheReader(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, Config{QueueSize: 2, Lossless: true})
	pub, err := h.Publish(testKey, testTracks)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := h.Subscribe(testKey)
	if err != nil {
		t.Fatal(err)
	}
	const n = 200
	// written counts the Writes that returned; wrote is signalled after
	// each.
	var written atomic.Int64
	wrote := make(chan struct{}, 1)
	go func() {
		for i := range int64(n) {
			pub.Write(au(0, i, i%10 == 0))
			written.Add(1)
			signal(wrote)
		}
		pub.End()
	}()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	got := int64(0)
	for {
		ev, err := sub.Next(ctx)
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		if ev.AU == nil {
			continue
		}
		if ev.AU.DTS != got {
			t.Fatalf("got DTS %d, want %d: something was dropped", ev.AU.DTS, got)
		}
		got++
		if got%50 == 0 {
			// A slow reader: it reads on only once the publisher has
			// filled its queue of 2 (written - got access units are queued),
			// so the next Write finds no room.
			for written.Load() < min(n, got+2) {
				select {
				case <-wrote:
				case <-ctx.Done():
					t.Fatalf("the publisher stopped at %d writes", written.Load())
				}
			}
		}
	}
	if got != n || sub.Dropped() != 0 {
		t.Fatalf("read %d of %d, dropped %d", got, n, sub.Dropped())
	}
}

func TestLosslessPublisherReleasedWhenReaderCloses(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, Config{QueueSize: 1, Lossless: true})
	pub, err := h.Publish(testKey, testTracks)
	if err != nil {
		t.Fatal(err)
	}
	sub, err := h.Subscribe(testKey)
	if err != nil {
		t.Fatal(err)
	}
	// The second Write finds the queue full and waits.
	waiting := make(chan struct{}, 1)
	h.onLosslessWait = func() { signal(waiting) }
	done := make(chan struct{})
	go func() {
		for i := range int64(10) {
			pub.Write(au(0, i, true))
		}
		close(done)
	}()
	select {
	case <-waiting:
	case <-time.After(5 * time.Second):
		t.Fatal("the publisher never waited for room")
	}
	sub.Close()
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("publisher still blocked after the only reader closed")
	}
}

func TestWatchStartsSeesStartAndEndOnly(t *testing.T) {
	t.Parallel()
	h, _ := newHub(t, Config{QueueSize: 2})
	w := h.WatchStarts(func(media.StreamKey) bool { return true })
	defer w.Close()
	pub, err := h.Publish(testKey, testTracks)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	sub, err := w.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if ev := next(t, sub); ev.Tracks == nil {
		t.Fatalf("first event %+v, want the tracks", ev)
	}
	for i := range int64(100) {
		pub.Write(au(0, i, i%10 == 0))
	}
	pub.End()
	if _, err := sub.Next(ctx); !errors.Is(err, io.EOF) {
		t.Fatalf("after the end: %v, want io.EOF with no access unit before it", err)
	}
	if sub.Dropped() != 0 {
		t.Fatalf("dropped %d: access units were offered to a start watcher", sub.Dropped())
	}
}
