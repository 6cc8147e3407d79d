package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"regexp"
	"sync/atomic"
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
	// Stopped before the playhead needs the next: no stall.
	tl.stop(t0.Add(6 * time.Second))
	if tl.rebuffer != time.Second || tl.stalls != 1 {
		t.Fatalf("rebuffer %v in %d stalls after a stop in time", tl.rebuffer, tl.stalls)
	}
	// The run ends at 10 s, the viewer still waiting since 7 s: 3 s more.
	tl.stop(t0.Add(10 * time.Second))
	if tl.rebuffer != 4*time.Second || tl.stalls != 2 {
		t.Fatalf("rebuffer %v in %d stalls, want the stall in progress (4 s in 2)", tl.rebuffer, tl.stalls)
	}
	var never timeline
	never.stop(t0)
	if never.rebuffer != 0 || never.stalls != 0 {
		t.Fatal("a stall before playback started")
	}
}

// The reference the benchmark checks players against is the origin's own
// copy: bytes that differ from it are counted, whatever the peer said.
func TestOriginCopy(t *testing.T) {
	var gets atomic.Int32
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if gets.Add(1) == 1 {
			http.Error(w, "a transient failure", http.StatusServiceUnavailable)
			return
		}
		_, _ = w.Write([]byte("the origin's bytes"))
	}))
	defer srv.Close()
	o := &originCopy{base: srv.URL + "/hls/x/source/", client: srv.Client(), sums: map[string]*originSum{}}
	ctx := context.Background()
	// A failed read is not kept: the next check reads the origin again.
	if _, err := o.matches(ctx, "seg-1.m4s", []byte("the origin's bytes")); err == nil {
		t.Fatal("no error from an origin answering 503")
	}
	for _, c := range []struct {
		data string
		want bool
	}{{"the origin's bytes", true}, {"the origin's bytez", false}, {"", false}} {
		ok, err := o.matches(ctx, "seg-1.m4s", []byte(c.data))
		if err != nil || ok != c.want {
			t.Fatalf("%q: %v, %v; want %v", c.data, ok, err, c.want)
		}
	}
	if n := gets.Load(); n != 2 {
		t.Fatalf("%d origin GETs, want 2 (the failure, then hashed once)", n)
	}
}

func TestMain(m *testing.M) {
	runNodeChild() // the benchmark re-executes itself as the node
	os.Exit(m.Run())
}

var lineRE = regexp.MustCompile(`^bench-swarm viewers=3 segment=2s offload=[0-9.]+% http_bytes=([0-9]+) p2p_bytes=([0-9]+) tampered_accepted=0 rebuffer_p2p=[0-9.]+s rebuffer_http=[0-9.]+s errors=[0-9]+\n$`)

// TestSmoke runs the whole benchmark small (3 viewers, one malicious, 6 s
// of media each): redis-server, shoal dev with its edge, the ffmpeg
// publisher, the P2P and HTTP-only runs; it checks the line it prints,
// not the figures (too few viewers, too short).
func TestSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts a node, Redis and ffmpeg (about 30 s)")
	}
	o := runOpts{viewers: 3, segment: 2 * time.Second, seconds: 6 * time.Second, malicious: 0.34, holdBack: 1,
		httpMargin: 1500 * time.Millisecond, uploadKbps: 4000, maxPeers: 8, peerTimeout: 3 * time.Second,
		seedWindow: time.Second, maxUploads: 1, bitrateKbps: 300, seed: 1}
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	var out bytes.Buffer
	if err := run(ctx, []runOpts{o}, &out); err != nil {
		t.Fatal(err)
	}
	m := lineRE.FindStringSubmatch(out.String())
	if m == nil {
		t.Fatalf("output %q", out.String())
	}
	if m[1] == "0" && m[2] == "0" {
		t.Fatalf("no bytes played: %q", out.String())
	}
}
