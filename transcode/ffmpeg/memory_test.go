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
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatalf("reading RSS needs Linux's /proc: %v", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		v, ok := strings.CutPrefix(sc.Text(), "VmRSS:")
		if !ok {
			continue
		}
		fields := strings.Fields(v) // "12345 kB"
		if len(fields) != 2 || fields[1] != "kB" {
			t.Fatalf("unexpected VmRSS line %q", sc.Text())
		}
		kb, err := strconv.ParseInt(fields[0], 10, 64)
		if err != nil {
			t.Fatal(err)
		}
		return kb << 10
	}
	t.Fatal("no VmRSS in /proc/self/status")
	return 0
}

// The pipeline frees every C object it allocates: running it over and over
// (demux, decode, scale, encode, flush or abandon, close) does not make the
// process grow. Not parallel, so that no other test's memory is counted.
func TestPipelineDoesNotLeak(t *testing.T) {
	checkNoLeak(t, Config{Preset: "ultrafast", KeyframeInterval: 500 * time.Millisecond, Log: quiet})
}

// The same with the ladder's filter graph (the GPU path's plumbing, with
// the scale filter on the CPU).
func TestGraphPipelineDoesNotLeak(t *testing.T) {
	checkNoLeak(t, Config{Preset: "ultrafast", KeyframeInterval: 500 * time.Millisecond, Log: quiet, graphOnCPU: true})
}

func checkNoLeak(t *testing.T, cfg Config) {
	t.Helper()
	src := makeTS(t, 320, 240, 1, 15)
	rungs := []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}, {Name: "160p", Height: 160, Bitrate: 200_000}}
	const warmup, iterations = 10, 40
	var base, baseHeap int64
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
		heap, rss := CHeapInUse(), rssBytes(t)
		if i == warmup-1 {
			baseHeap, base = heap, rss
		}
		if i >= warmup {
			t.Logf("run %d: C heap %+.2f MiB, RSS %+.1f MiB since warm-up", i, float64(heap-baseHeap)/(1<<20), float64(rss-base)/(1<<20))
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
		}
	}
}
