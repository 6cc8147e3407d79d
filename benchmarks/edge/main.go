// Command edge benchmarks Shoal's edge cache (package edgecache) against
// nginx serving the same files, side by side on the same machine with the
// same load generator, then measures how well three sibling edges shield
// the origin from a live stream's viewers. It prints one line:
//
//	bench-edge seg_ratio=.. playlist_ratio=.. origin_fetches_per_segment=.. ours_seg_rps=.. nginx_seg_rps=.. ours_playlist_rps=.. nginx_playlist_rps=..
//
// Static serving: one 2 MB segment and one 1 KB playlist, written under a
// temporary HLS tree. nginx (one worker, sendfile, keep-alive) serves the
// tree from disk; ours is a real edgecache.Cache in a child process with
// GOMAXPROCS=1, filled from an origin.NewHandler over the same tree and
// serving from its memory tier. Each is loaded by 32 keep-alive
// connections reading full bodies for -duration; the two alternate, -reps
// times, and the medians are compared: seg_ratio = ours_seg_rps /
// nginx_seg_rps, playlist_ratio likewise (above 1: we are faster).
//
// Live fan-out: the benchmark writes a 2 MB segment and a new live playlist
// every 2 s (temporary name + rename, like the packager) under a real
// origin.NewHandler; three in-process caches, siblings of each other, serve
// 200 viewers polling the playlist every 500 ms and fetching each new
// segment once. origin_fetches_per_segment is the origin's segment GETs
// over the segments the viewers fetched (1.0: each segment left the origin
// once); the HEADs edges send to verify a sibling's bytes are reported on
// standard error.
//
// Details of every run (requests, errors, CPU used by each server, load
// average) go to standard error.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"math"
	"os"
	"os/signal"
	"slices"
	"syscall"
	"time"
)

type options struct {
	duration   time.Duration
	reps       int
	conns      int
	live       time.Duration
	viewers    int
	nginx      string
	profile    string
	keep       bool
	skipLive   bool
	skipStat   bool
	segBytes   int
	playBytes  int
	edgeMemory int64
	wrk        string
}

func main() {
	if os.Getenv(childEnv) != "" {
		if err := edgeChild(); err != nil {
			fmt.Fprintln(os.Stderr, "bench-edge child:", err)
			os.Exit(1)
		}
		return
	}
	var o options
	flag.DurationVar(&o.duration, "duration", 10*time.Second, "length of each static load run")
	flag.IntVar(&o.reps, "reps", 3, "static runs per server and object (the median is kept)")
	flag.IntVar(&o.conns, "conns", 32, "concurrent keep-alive connections of the static load")
	flag.DurationVar(&o.live, "live", 20*time.Second, "length of the live stream (one segment every 2 s)")
	flag.IntVar(&o.viewers, "viewers", 200, "live viewers, spread evenly over the three edges")
	flag.StringVar(&o.nginx, "nginx", "/usr/sbin/nginx", "the nginx binary")
	flag.StringVar(&o.wrk, "wrk", "/usr/bin/wrk", "the wrk binary that loads both servers in the static part (\"\": the built-in generator)")
	flag.StringVar(&o.profile, "profile", "", "write CPU profiles of our edge (first static run of each object) into this directory")
	flag.Int64Var(&o.edgeMemory, "edge-memory", edgeMemoryBytes, "MemoryBytes of our static edge (objects above 1/8 of it are served from disk)")
	flag.BoolVar(&o.keep, "keep", false, "keep the work directory")
	flag.BoolVar(&o.skipLive, "skip-live", false, "skip the live fan-out (origin_fetches_per_segment=NaN)")
	flag.BoolVar(&o.skipStat, "skip-static", false, "skip the static comparison (ratios NaN)")
	flag.Parse()
	o.segBytes, o.playBytes = 2<<20, 1<<10
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	err := run(ctx, o)
	stop()
	if err != nil {
		fmt.Fprintln(os.Stderr, "bench-edge:", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, o options) error {
	if o.duration <= 0 || o.reps <= 0 || o.conns <= 0 || o.viewers <= 0 {
		return errors.New("-duration, -reps, -conns and -viewers must be positive")
	}
	dir, err := os.MkdirTemp("", "bench-edge-")
	if err != nil {
		return err
	}
	if o.keep {
		fmt.Fprintln(os.Stderr, "work dir:", dir)
	} else {
		defer os.RemoveAll(dir)
	}
	logf("load average at start: %s", loadAvg())

	st := staticResult{nan(), nan(), nan(), nan(), nan(), nan()}
	if !o.skipStat {
		if st, err = staticBench(ctx, dir, o); err != nil {
			return fmt.Errorf("static: %w", err)
		}
	}
	lv := liveResult{perSegment: nan(), verifyUS: nan()}
	if !o.skipLive {
		if lv, err = liveBench(ctx, dir, o); err != nil {
			return fmt.Errorf("live: %w", err)
		}
	}
	logf("load average at end: %s", loadAvg())
	fmt.Printf("bench-edge seg_ratio=%.2f playlist_ratio=%.2f origin_fetches_per_segment=%.2f verify_us_per_segment=%.0f ours_seg_rps=%.0f nginx_seg_rps=%.0f ours_playlist_rps=%.0f nginx_playlist_rps=%.0f ours_playlist_p99_ms=%.2f nginx_playlist_p99_ms=%.2f\n",
		st.oursSeg/st.nginxSeg, st.oursPlay/st.nginxPlay, lv.perSegment, lv.verifyUS, st.oursSeg, st.nginxSeg, st.oursPlay, st.nginxPlay, st.oursPlayP99, st.nginxPlayP99)
	return nil
}

func logf(format string, args ...any) {
	fmt.Fprintf(os.Stderr, "bench-edge: "+format+"\n", args...)
}

func median(v []float64) float64 {
	if len(v) == 0 {
		return nan()
	}
	s := slices.Clone(v)
	slices.Sort(s)
	if len(s)%2 == 1 {
		return s[len(s)/2]
	}
	return (s[len(s)/2-1] + s[len(s)/2]) / 2
}

func nan() float64 { return math.NaN() }

// loadAvg is the first three fields of /proc/loadavg.
func loadAvg() string {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := string(b)
	n := 0
	for i := range f {
		if f[i] == ' ' {
			if n++; n == 3 {
				return f[:i]
			}
		}
	}
	return f
}
