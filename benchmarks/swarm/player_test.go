package main

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"
)

// The player model: segments play back to back from the first; a segment
// ready after the playhead reached it stalls the playhead until it is.
func TestTimeline(t *testing.T) {
	t0 := time.Unix(1_800_000_000, 0)
	var tl timeline
	if !tl.needAt().IsZero() {
		t.Fatal("a deadline before playback started")
	}
	tl.arrive(t0, 2*time.Second) // start-up: not a stall
	if got := tl.needAt(); !got.Equal(t0.Add(2 * time.Second)) {
		t.Fatalf("next needed at %v", got.Sub(t0))
	}
	tl.arrive(t0.Add(time.Second), 2*time.Second) // early: plays at 2 s
	tl.arrive(t0.Add(5*time.Second), 2*time.Second)
	if tl.rebuffer != time.Second || tl.stalls != 1 {
		t.Fatalf("rebuffer %v in %d stalls, want 1 s in 1", tl.rebuffer, tl.stalls)
	}
	// The stall moved the playhead: the next is needed at 5 + 2 s.
	if got := tl.needAt(); !got.Equal(t0.Add(7 * time.Second)) {
		t.Fatalf("next needed at %v, want 7 s", got.Sub(t0))
	}
}

// The reference the benchmark checks players against is the origin's own
// copy: bytes that differ from it are counted, whatever the peer said.
func TestOriginCopy(t *testing.T) {
	gets := 0
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		gets++
		_, _ = w.Write([]byte("the origin's bytes"))
	}))
	defer srv.Close()
	o := &originCopy{base: srv.URL + "/hls/x/source/", client: srv.Client(), sums: map[string]*originSum{}}
	ctx := context.Background()
	for _, c := range []struct {
		data string
		want bool
	}{{"the origin's bytes", true}, {"the origin's bytez", false}, {"", false}} {
		ok, err := o.matches(ctx, "seg-1.m4s", []byte(c.data))
		if err != nil || ok != c.want {
			t.Fatalf("%q: %v, %v; want %v", c.data, ok, err, c.want)
		}
	}
	if gets != 1 {
		t.Fatalf("%d origin GETs, want 1 (hashed once)", gets)
	}
}
