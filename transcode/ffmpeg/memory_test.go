package ffmpeg

import (
	"bufio"
	"os"
	"runtime"
	"runtime/debug"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// rssBytes reads this process's resident set size from /proc/self/status.
func rssBytes(t *testing.T) int64 {
	t.Helper()
	return procStatus(t, "VmRSS:")
}

// shmemBytes is the shared memory resident in this process: where
// lavapipe keeps its Vulkan device memory (memfd), which the C heap does
// not count.
func shmemBytes(t *testing.T) int64 {
	t.Helper()
	return procStatus(t, "RssShmem:")
}

// procStatus reads a size in kB from a line of /proc/self/status.
func procStatus(t *testing.T, key string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatalf("reading RSS needs Linux's /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), key)
		if !ok {
			continue
		}
		fields := strings.Fields(v) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			t.Fatalf("unexpected %s line %q", key, sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return kb << 10
	}
	t.Fatalf("no %s in /proc/self/status", key)
	return 0
}

// The pipeline frees every C object it allocates: running it over and over
// (demux, decode, scale, encode, flush or abandon, close) does not make the
// process grow. Not parallel, so that no other test's memory is counted.
func TestPipelineDoesNotLeak(t *testing.T) {
	checkNoLeak(t, Config{Preset: "ultrafast", KeyframeInterval: 500 * time.Millisecond, Log: quiet}, 320, 240)
}

// The same with the ladder's filter graph (the GPU path's plumbing, with
// the scale filter on the CPU).
func TestGraphPipelineDoesNotLeak(t *testing.T) {
	checkNoLeak(t, Config{Preset: "ultrafast", KeyframeInterval: 500 * time.Millisecond, Log: quiet, graphOnCPU: true}, 320, 240)
}

// checkNoLeak runs a w x h source through a 240p/160p ladder 40 times. With
// a test device, its memory must not grow either.
func checkNoLeak(t *testing.T, cfg Config, w, h int) {
	t.Helper()
	src := makeTS(t, w, h, 1, 15)
	rungs := []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}, {Name: "160p", Height: 160, Bitrate: 200_000}}
	const warmup, iterations = 10, 40
	var base, baseHeap, baseDev int64
	for i := range iterations {
		var p *Pipeline
		frames := 0
		emit := func(int, *media.AccessUnit) { frames++ }
		err := DemuxVideo(src, func(tr media.Track, au *media.AccessUnit) error {
			if p == nil {
				var err error
				if p, err = New(cfg, tr, rungs); err != nil {
					return err
				}
			}
			return p.Push(au, emit)
		})
		if err != nil {
			t.Fatal(err)
		}
		// Every other run is abandoned without a flush, as a failed job
		// is: Close must free encoders that still hold frames.
		if i%2 == 0 {
			if err := p.Flush(emit); err != nil {
				t.Fatal(err)
			}
			if frames != 2*30 {
				t.Fatalf("run %d: %d frames out, want 60 (30 per rung)", i, frames)
			}
		}
		p.Close()
		runtime.GC()
		debug.FreeOSMemory()
		heap, rss, dev := CHeapInUse(), rssBytes(t), shmemBytes(t)
		if i == warmup-1 {
			baseHeap, base, baseDev = heap, rss, dev
		}
		if i >= warmup {
			t.Logf("run %d: C heap %+.2f MiB, RSS %+.1f MiB, shared memory %+.2f MiB since warm-up", i,
				float64(heap-baseHeap)/(1<<20), float64(rss-base)/(1<<20), float64(dev-baseDev)/(1<<20))
		}
		if i == iterations-1 {
			// The C heap is the measure: RSS also moves with the Go
			// runtime, allocator fragmentation and, under -race, the
			// detector's shadow memory (it grew by 11 to 30 MiB here
			// from one run to the next with no leak).
			const bound = 4 << 20
			if grew := heap - baseHeap; grew > bound {
				t.Fatalf("the C heap grew by %.1f MiB over %d runs after warm-up (bound %d MiB): C memory leaks", float64(grew)/(1<<20), iterations-warmup, bound>>20)
			}
			// One frame left on the device per run would be a frame's
			// size times 30.
			const devBound = 1 << 20
			if grew := dev - baseDev; cfg.testDevice != nil && grew > devBound {
				t.Fatalf("the device's memory (lavapipe's shared memory) grew by %.1f MiB over %d runs after warm-up (bound 1 MiB): hardware frames leak",
					float64(grew)/(1<<20), iterations-warmup)
			}
		}
	}
}
