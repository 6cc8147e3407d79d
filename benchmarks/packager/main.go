// Command packager measures whether the packager's cost per segment stays
// flat over a long stream: it packages 24 hours of synthetic live video
// (a clock injected through the timestamps: it runs as fast as the machine
// allows) with LL-HLS parts and the recording on, and compares the CPU time
// and the bytes written per segment over the first and the last stretch,
// and the wall-clock time per segment (where the fsync of every finished
// file and of its directory shows: -nosync leaves them out, to measure
// what they cost).
//
//	bench-packager hours=24 segments=43200 sync=1 cpu_us_per_seg_start=.. cpu_us_per_seg_end=.. wall_us_per_seg_start=.. wall_us_per_seg_end=.. bytes_per_seg_start=.. bytes_per_seg_end=.. cpu_ratio=.. bytes_ratio=..
//
// The ratios are end / start: 1.0 is flat; the packager this replaced
// rewrote the whole recording at every segment (ratio in the thousands).
package main

import (
	"context"
	"encoding/hex"
	"flag"
	"fmt"
	"log"
	"log/slog"
	"os"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager"
	"github.com/shoal-video/shoal/packager/live"
)

func main() {
	hours := flag.Float64("hours", 24, "stream length in hours of media time")
	fps := flag.Int("fps", 5, "video frames per second (a keyframe every 2 s)")
	stretch := flag.Int("stretch", 1000, "segments measured at the start and at the end")
	keep := flag.Bool("keep", false, "keep the output directory")
	noSync := flag.Bool("nosync", false, "leave out the fsync of finished files and directories (to measure their cost)")
	dir := flag.String("dir", "", "where to write (a directory on the disk to measure; default: the temporary directory)")
	flag.Parse()
	if err := run(*hours, *fps, *stretch, *keep, *noSync, *dir); err != nil {
		log.Fatal(err)
	}
}

// Parameter sets of a 320x240 x264 stream.
var (
	sps, _ = hex.DecodeString("6764000dacd94141fb0110000003001000000303c0f1429960")
	pps, _ = hex.DecodeString("68ebe3cb22c0")
)

func run(hours float64, fps, stretch int, keep, noSync bool, parent string) error {
	dir, err := os.MkdirTemp(parent, "bench-packager-")
	if err != nil {
		return err
	}
	if !keep {
		defer os.RemoveAll(dir)
	}
	hub, err := stream.New(stream.Config{QueueSize: 1 << 16}, stream.Deps{})
	if err != nil {
		return err
	}
	reg := live.New()
	metrics := prometheus.NewRegistry()
	pkg, err := packager.New(packager.Config{Dir: dir, SegmentDuration: 2 * time.Second, LiveWindow: 6, Format: packager.FormatFMP4,
		PartDuration: 500 * time.Millisecond, NoSync: noSync}, packager.Deps{Hub: hub, Log: slog.New(slog.DiscardHandler), Live: reg, Registerer: metrics})
	if err != nil {
		return err
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	go func() { _ = hub.Run(ctx) }()
	done := make(chan struct{})
	go func() { _ = pkg.Run(ctx); close(done) }()
	defer func() { cancel(); <-done }()

	pub, err := hub.Publish(media.StreamKey{Name: "flat", Rendition: "720p"},
		[]media.Track{{Codec: media.CodecH264, ClockRate: 90000, SPS: sps, PPS: pps, Width: 320, Height: 240}})
	if err != nil {
		return err
	}
	defer pub.End()
	total := int(hours * 3600 / 2)
	if total < 3*stretch {
		return fmt.Errorf("%g hours is %d segments, fewer than 3 stretches of %d", hours, total, stretch)
	}
	gop := 2 * fps
	frame := 0
	key := "flat/720p/index.m3u8"
	// step feeds frames until segment n is finished and waits for the
	// packager to publish it; n is at most a few thousand frames ahead (the
	// hub drops what a subscriber's queue cannot hold).
	step := func(n int) error {
		for ; frame <= n*gop; frame++ {
			payload := [][]byte{{0x41, 0x9a, byte(frame)}}
			if frame%gop == 0 {
				payload = [][]byte{sps, pps, {0x65, 0x88, byte(frame)}}
			}
			ts := int64(frame) * 90000 / int64(fps)
			pub.Write(&media.AccessUnit{Track: 0, DTS: ts, PTS: ts, Keyframe: frame%gop == 0, Payload: payload})
		}
		wctx, wcancel := context.WithTimeout(ctx, time.Minute)
		defer wcancel()
		for {
			s, err := reg.Wait(wctx, key, func(s *live.Snapshot) bool { return s.NextMSN >= uint64(n) })
			if err != nil {
				return fmt.Errorf("segment %d was not packaged: %w", n, err)
			}
			if s != nil {
				return nil
			}
			select { // not published yet
			case <-wctx.Done():
				return fmt.Errorf("the stream was never published")
			case <-time.After(10 * time.Millisecond):
			}
		}
	}
	upTo := func(n int) error {
		for next := frame/gop + 500; next < n; next += 500 {
			if err := step(next); err != nil {
				return err
			}
		}
		return step(n)
	}
	measure := func(from, to int) (cpuUS, wallUS, bytes float64, err error) {
		if err := upTo(from); err != nil {
			return 0, 0, 0, err
		}
		c0, w0, b0 := cpu(), time.Now(), written(metrics)
		if err := upTo(to); err != nil {
			return 0, 0, 0, err
		}
		n := float64(to - from)
		return float64(cpu()-c0) / float64(time.Microsecond) / n, float64(time.Since(w0)) / float64(time.Microsecond) / n,
			(written(metrics) - b0) / n, nil
	}
	startCPU, startWall, startBytes, err := measure(stretch, 2*stretch)
	if err != nil {
		return err
	}
	endCPU, endWall, endBytes, err := measure(total-stretch, total)
	if err != nil {
		return err
	}
	syncOn := 1
	if noSync {
		syncOn = 0
	}
	fmt.Printf("bench-packager hours=%g segments=%d sync=%d cpu_us_per_seg_start=%.0f cpu_us_per_seg_end=%.0f wall_us_per_seg_start=%.0f wall_us_per_seg_end=%.0f bytes_per_seg_start=%.0f bytes_per_seg_end=%.0f cpu_ratio=%.2f bytes_ratio=%.3f\n",
		hours, total, syncOn, startCPU, endCPU, startWall, endWall, startBytes, endBytes, endCPU/startCPU, endBytes/startBytes)
	return nil
}

// cpu is the process's user and system CPU time so far.
func cpu() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

func written(reg *prometheus.Registry) float64 {
	mfs, err := reg.Gather()
	if err != nil {
		return 0
	}
	for _, mf := range mfs {
		if mf.GetName() == "shoal_packager_written_bytes_total" {
			return mf.GetMetric()[0].GetCounter().GetValue()
		}
	}
	return 0
}
