package transcode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"reflect"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// The capacity self-benchmark.
//
// A node with transcode.max_ladders -1 measures how many live ladders it
// keeps in real time, with its own ladder, preset, keyframe interval and
// pipeline configuration (Accel.PipelineConfig: the path every live ladder
// takes, GPU decoding and scaling included once they exist), on a synthetic
// source made in memory with the FFmpeg libraries: 1080p30 H.264 (the
// ladder's top rung when taller), moving textured pictures, 6 Mb/s scaled
// by area, as OBS sends.
//
// How the figure is found. One ladder alone does not tell: its decoder,
// scalers and encoders run on threads of their own, so it may use a few
// cores, or leave most of a GPU idle, and N ladders do not run N times
// slower. Counting CPU-seconds per media-second assumes that N ladders cost
// N times one (they do not: shared cores, caches, memory bandwidth and
// lower clocks under full load) and misses the GPU's engines altogether.
// So the benchmark runs the ladder k times at once on the same clip, fed
// as fast as the ladders take it, and times them all to the end: the k
// ladders keep real time when they are all done within the clip's length,
// and k x clip / wall is the aggregate throughput in ladders of real time.
// It starts with k = 1 (whose speed is the "real-time factor" the node
// reports) and, while the ladders keep real time, grows k to 1.5 x that
// throughput (at least k+1), so that the next round saturates the machine
// and lasts about 1.5 clips at most. The first round that falls behind
// measured the saturated throughput R; the figure is floor(R), kept
// between the largest k that kept real time and the smallest that did not.
// On a 16-core machine whose single ladder runs 10x real time that is two
// rounds (1, then 15 ladders), about 3 s after the clip is made; on 2
// cores, where one full 1080p ladder runs near real time, one or two.
//
// A ladder fed as fast as it goes is a fair stand-in for a live one fed at
// the frame rate: both keep up exactly when their throughput reaches the
// frame rate. The figure leaves no headroom beyond floor(); what the node
// does besides (demuxing, packaging, serving) is small next to encoding.
// It is measured while nothing else runs on the node, at start: a figure
// measured while ladders ran is used but not cached.

// CapacityConfig is what the self-benchmark measures.
type CapacityConfig struct {
	// Ladder, Preset and KeyframeInterval are the node's (see Config).
	Ladder           media.Ladder
	Preset           string
	KeyframeInterval time.Duration
	// SourceHeight is the synthetic source's height (16:9, 30 fps); 0:
	// 1080, or the ladder's top rung when that is taller.
	SourceHeight int
	// Clip is the synthetic source's length; 0: 2 s.
	Clip time.Duration
	// Deadline bounds the whole measurement; 0: 60 s. A measurement cut
	// short after some ladders kept real time gives that count.
	Deadline time.Duration
	// MaxLadders caps how many ladders run at once (and so the figure);
	// 0: 64.
	MaxLadders int
	Log        *slog.Logger
}

// Capacity is what the self-benchmark found.
type Capacity struct {
	// Ladders is how many ladders keep real time at once, at least 1.
	Ladders int
	// RealtimeX is how many times faster than real time one ladder ran
	// alone; below 1, even one ladder falls behind live.
	RealtimeX float64
	// Took is how long the measurement took, making the source included.
	Took time.Duration
	// Rounds lists the rounds: how many ladders ran and how long they took.
	Rounds []CapacityRound
	// Cut says the deadline stopped the search before a round fell
	// behind: Ladders is a lower bound.
	Cut bool
}

// CapacityRound is one round of the self-benchmark.
type CapacityRound struct {
	Ladders int
	Wall    time.Duration
}

func (c *CapacityConfig) defaults() {
	if c.SourceHeight <= 0 {
		c.SourceHeight = 1080
		if len(c.Ladder) > 0 && c.Ladder[0].Height > c.SourceHeight {
			c.SourceHeight = c.Ladder[0].Height
		}
	}
	if c.Clip <= 0 {
		c.Clip = 2 * time.Second
	}
	if c.Deadline <= 0 {
		c.Deadline = 60 * time.Second
	}
	if c.MaxLadders <= 0 {
		c.MaxLadders = 64
	}
	if c.Log == nil {
		c.Log = slog.Default()
	}
}

// benchFPS is the synthetic source's frame rate.
const benchFPS = 30

// MeasureCapacity runs the capacity self-benchmark (see above) for a node
// transcoding with a.
func MeasureCapacity(ctx context.Context, a Accel, cfg CapacityConfig) (Capacity, error) {
	cfg.defaults()
	if len(cfg.Ladder) == 0 {
		return Capacity{}, errors.New("capacity: the ladder is empty")
	}
	if cfg.KeyframeInterval <= 0 {
		return Capacity{}, errors.New("capacity: the keyframe interval must be positive")
	}
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, cfg.Deadline)
	defer cancel()
	h := cfg.SourceHeight &^ 1
	w := ffmpeg.EvenWidth(16, 9, h)
	frames := max(1, int(cfg.Clip.Seconds()*benchFPS+0.5))
	clipLen := time.Duration(frames) * time.Second / benchFPS
	src, err := ffmpeg.Synthesize(ctx, ffmpeg.SynthConfig{
		Width: w, Height: h, FPS: benchFPS, Frames: frames, GOP: 2 * benchFPS,
		Bitrate: max(500_000, int(6_000_000*float64(w*h)/(1920*1080))),
	})
	if err != nil {
		return Capacity{}, fmt.Errorf("capacity: making the source: %w", err)
	}
	ladder := cfg.Ladder.For(h)
	rungs := make([]ffmpeg.Rung, len(ladder))
	for i, r := range ladder {
		rungs[i] = ffmpeg.Rung{Name: r.Name(), Height: r.Height, Bitrate: r.Bitrate}
	}
	pcfg := a.PipelineConfig(cfg.Preset, cfg.KeyframeInterval, cfg.Log)

	var c Capacity
	pass, fail, rFail := 0, 0, 0.0
	for k := 1; ; {
		wall, err := runLadders(ctx, pcfg, src, rungs, k)
		if err != nil {
			if ctx.Err() != nil && pass > 0 && errors.Is(err, context.DeadlineExceeded) {
				c.Cut = true
				break
			}
			return Capacity{}, fmt.Errorf("capacity: running %d ladders: %w", k, err)
		}
		c.Rounds = append(c.Rounds, CapacityRound{Ladders: k, Wall: wall})
		r := float64(k) * clipLen.Seconds() / wall.Seconds()
		if k == 1 {
			c.RealtimeX = r
		}
		if wall > clipLen {
			fail, rFail = k, r
			break
		}
		pass = k
		if k >= cfg.MaxLadders {
			break
		}
		k = min(cfg.MaxLadders, max(k+1, int(math.Ceil(1.5*r))))
	}
	n := pass
	if fail > 0 {
		n = min(fail-1, max(pass, int(math.Floor(rFail))))
	}
	c.Ladders = max(1, n)
	c.Took = time.Since(start)
	return c, nil
}

// runLadders runs k ladders at once over src, each fed as fast as it
// takes it, and returns how long they took to the last.
func runLadders(ctx context.Context, pcfg ffmpeg.Config, src *ffmpeg.SynthClip, rungs []ffmpeg.Rung, k int) (time.Duration, error) {
	errs := make([]error, k)
	var wg sync.WaitGroup
	start := time.Now()
	for i := range k {
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = runLadder(ctx, pcfg, src, rungs)
		}()
	}
	wg.Wait()
	wall := time.Since(start)
	return wall, errors.Join(errs...)
}

func runLadder(ctx context.Context, pcfg ffmpeg.Config, src *ffmpeg.SynthClip, rungs []ffmpeg.Rung) error {
	p, err := ffmpeg.New(pcfg, src.Track, rungs)
	if err != nil {
		return err
	}
	defer p.Close()
	out := make([]int, len(rungs))
	emit := func(i int, _ *media.AccessUnit) { out[i]++ }
	for _, au := range src.AUs {
		if err := ctx.Err(); err != nil {
			return err
		}
		if err := p.Push(au, emit); err != nil {
			return err
		}
	}
	if err := p.Flush(emit); err != nil {
		return err
	}
	for i, n := range out {
		if n == 0 {
			return fmt.Errorf("rung %s produced nothing", rungs[i].Name)
		}
	}
	return nil
}

// capacityMethod versions the self-benchmark: a change to how it measures
// makes the figures cached by older versions stale.
const capacityMethod = 1

// capacityFile is the cache's file name in Config.CacheDir.
const capacityFile = "transcode-capacity.json"

// capacityKey is what a measured capacity depends on: a cached figure is
// used only where all of it is the same. The synthetic source follows from
// the ladder and the method.
type capacityKey struct {
	Method           int      `json:"method"`
	Ladder           string   `json:"ladder"`
	Preset           string   `json:"preset"`
	KeyframeInterval string   `json:"keyframe_interval"`
	Encoder          string   `json:"encoder"`
	Decode           string   `json:"decode"`
	GPUs             []string `json:"gpus"`
	CPUs             int      `json:"cpus"`
	CPU              string   `json:"cpu"`
	FFmpeg           string   `json:"ffmpeg"`
}

// capacityCache is the cache file's content.
type capacityCache struct {
	Key        capacityKey `json:"key"`
	Ladders    int         `json:"ladders"`
	RealtimeX  float64     `json:"realtime_x"`
	TookS      float64     `json:"took_s"`
	MeasuredAt time.Time   `json:"measured_at"`
}

func (t *Transcoder) capacityKey() capacityKey {
	caps := t.accel.Capabilities(0, "")
	gpus := make([]string, 0, len(caps.GPUs))
	for _, g := range caps.GPUs {
		gpus = append(gpus, fmt.Sprintf("%s nvdec=%s nvenc=%v sessions=%d", g.Name, strings.Join(g.NVDEC, "/"), g.NVENC, g.NVENCSessions))
	}
	return capacityKey{
		Method: capacityMethod, Ladder: t.cfg.Ladder.String(), Preset: t.cfg.Preset,
		KeyframeInterval: t.cfg.SegmentDuration.String(),
		Encoder:          caps.Encoder, Decode: caps.Decode, GPUs: gpus,
		CPUs: runtime.NumCPU(), CPU: cpuModel(), FFmpeg: ffmpeg.LibraryVersion(),
	}
}

// cpuModel is the CPU's model name ("" where /proc/cpuinfo does not say).
func cpuModel() string {
	b, err := os.ReadFile("/proc/cpuinfo")
	if err != nil {
		return ""
	}
	for line := range strings.Lines(string(b)) {
		if k, v, ok := strings.Cut(line, ":"); ok && strings.TrimSpace(k) == "model name" {
			return strings.TrimSpace(v)
		}
	}
	return ""
}

func (t *Transcoder) capacityPath() string { return filepath.Join(t.cfg.CacheDir, capacityFile) }

// useCachedCapacity takes the capacity measured for this very setup by an
// earlier run, if the cache holds one, and reports whether it did. A cache
// that cannot be read or is for another setup is ignored (and replaced
// once the capacity is measured again).
func (t *Transcoder) useCachedCapacity() bool {
	if t.cfg.CacheDir == "" {
		return false
	}
	b, err := os.ReadFile(t.capacityPath())
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	var c capacityCache
	if err == nil {
		err = json.Unmarshal(b, &c)
	}
	if err == nil && (c.Ladders < 1 || c.Ladders > 1000 || !(c.RealtimeX > 0) || math.IsInf(c.RealtimeX, 0)) {
		err = fmt.Errorf("implausible figures (%d ladders, real-time factor %v)", c.Ladders, c.RealtimeX)
	}
	if err != nil {
		t.log.Warn("ignoring the cached transcoding capacity; measuring it again", "file", t.capacityPath(), "err", err)
		return false
	}
	if !reflect.DeepEqual(c.Key, t.capacityKey()) {
		t.log.Info("the cached transcoding capacity was measured for another setup; measuring it again", "file", t.capacityPath())
		return false
	}
	t.limit, t.limitFrom, t.realtimeX = c.Ladders, "measured", c.RealtimeX
	t.log.Info(fmt.Sprintf("transcoding capacity (measured %s, cached): %s of %s in real time (%s)",
		c.MeasuredAt.Format(time.DateOnly), ladders(c.Ladders), t.cfg.Ladder, oneLadder(c.RealtimeX)), "file", t.capacityPath())
	return true
}

// oneLadder says how fast one ladder ran alone.
func oneLadder(x float64) string {
	if x < 1 {
		return fmt.Sprintf("one ladder ran at only %.2f times real time", x)
	}
	return fmt.Sprintf("one ladder ran %.1f times faster than real time", x)
}

func ladders(n int) string {
	if n == 1 {
		return "1 ladder"
	}
	return strconv.Itoa(n) + " ladders"
}

// measureCapacity runs the self-benchmark and puts its figure in effect;
// on failure the default stays.
func (t *Transcoder) measureCapacity(ctx context.Context) {
	t.mu.Lock()
	gen, busy := t.claimGen, len(t.claims) > 0
	t.mu.Unlock()
	c, err := MeasureCapacity(ctx, t.accel, t.bench)
	if t.onMeasured != nil {
		defer t.onMeasured(c, err)
	}
	if err != nil {
		if ctx.Err() != nil && errors.Is(err, context.Canceled) {
			t.log.Debug("transcoding capacity not measured: stopping", "err", err)
			return
		}
		t.log.Warn("transcoding capacity could not be measured; keeping the default", "max_ladders", t.Limit(), "err", err)
		return
	}
	t.mu.Lock()
	busy = busy || t.claimGen != gen
	t.limit, t.limitFrom, t.realtimeX = c.Ladders, "measured", c.RealtimeX
	t.limitG.Set(float64(c.Ladders))
	t.realtimeG.Set(c.RealtimeX)
	t.metricsChanged()
	t.mu.Unlock()

	rounds := make([]string, len(c.Rounds))
	for i, r := range c.Rounds {
		rounds[i] = fmt.Sprintf("%d in %.2f s", r.Ladders, r.Wall.Seconds())
	}
	figure := ladders(c.Ladders)
	if c.Cut {
		figure = "at least " + figure
	}
	t.log.Info(fmt.Sprintf("transcoding capacity measured: %s of %s in real time (%s, %.1f s)",
		figure, t.cfg.Ladder, oneLadder(c.RealtimeX), c.Took.Seconds()), "rounds", strings.Join(rounds, ", "))
	if c.RealtimeX < 1 {
		t.log.Warn("even one ladder falls behind real time on this node; it is allowed one anyway: use a faster preset, a smaller ladder or a GPU",
			"realtime_x", c.RealtimeX, "preset", t.cfg.Preset)
	}
	if t.cfg.CacheDir == "" {
		return
	}
	if busy {
		t.log.Info("the transcoding capacity was measured while ladders ran: it is not cached, and is measured again at the next start")
		return
	}
	if err := t.cacheCapacity(c); err != nil {
		t.log.Warn("could not cache the transcoding capacity; it is measured again at the next start", "err", err)
	}
}

func (t *Transcoder) cacheCapacity(c Capacity) error {
	b, err := json.MarshalIndent(capacityCache{Key: t.capacityKey(), Ladders: c.Ladders, RealtimeX: c.RealtimeX,
		TookS: c.Took.Seconds(), MeasuredAt: time.Now().UTC()}, "", "  ")
	if err != nil {
		return err
	}
	if err := os.MkdirAll(t.cfg.CacheDir, 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(t.cfg.CacheDir, "."+capacityFile+"-*")
	if err != nil {
		return err
	}
	_, err = f.Write(append(b, '\n'))
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), t.capacityPath())
	}
	if err != nil {
		_ = os.Remove(f.Name())
		return fmt.Errorf("writing %s: %w", t.capacityPath(), err)
	}
	return nil
}
