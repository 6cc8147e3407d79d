package main

import (
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"hash"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"slices"
	"strings"
	"sync"
	"syscall"
	"time"

	"golang.org/x/sync/errgroup"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/transcode"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/remote"
)

// The remote line: the same live ladder encoded in process (an
// ffmpeg.Pipeline, as the origin's transcoder runs it) and through a remote
// worker on the same machine (transcode/remote's LiveOrigin on the origin's
// side, its source and renditions bodies over loopback HTTP, EncodeLive on
// the worker's side), side by side in one process:
//
//	bench-transcode-remote clip_s=.. local_s=.. remote_s=.. ratio=.. cpu_ratio=.. latency_local_ms_p50=.. latency_local_ms_p95=.. latency_remote_ms_p50=.. latency_remote_ms_p95=.. added_ms_p50=.. added_ms_p95=.. start_added_ms=.. segments=..
//
// local_s and remote_s are the wall times of the whole clip pushed as fast as
// each takes it, the mean of two runs each, in the order local, remote,
// remote, local (ratio = local_s / remote_s: 1 when the remote path costs
// nothing); cpu_ratio is the same for the process's CPU time (both ends of
// the remote path are in it), less disturbed by other work on the machine. The latencies come from a second pair of runs that push the
// source at its frame rate: for each instant of the keyframe grid, the time
// from the source access unit at that instant being handed in to the first
// rung's keyframe at that instant coming out. The grid's first instant
// (the stream's start: claim, connections, encoders opening) is left out of
// the percentiles and given as start_added_ms; added_ms is remote minus
// local for the same instant.

// remoteConfig is what both sides of the remote line encode with.
type remoteConfig struct {
	// base is the pipeline's configuration before the keyframe grid (the
	// accel's PipelineConfig), the worker's base as well.
	base    ffmpeg.Config
	ladder  media.Ladder
	preset  string
	segment time.Duration
	log     *slog.Logger
}

// remoteFigures are the remote line's figures.
type remoteFigures struct {
	// localS and remoteS are each side's mean wall time over its two
	// throughput runs; cpuRatio is local over remote for their CPU time.
	localS, remoteS, cpuRatio float64
	// localLat and remoteLat are per grid instant (the first left out),
	// in the same order; startAdded is the first instant's remote minus
	// local.
	localLat, remoteLat []time.Duration
	startAdded          time.Duration
}

// line is the bench-transcode-remote line.
func (f remoteFigures) line(clipS int) string {
	added := make([]time.Duration, len(f.localLat))
	for i := range added {
		added[i] = f.remoteLat[i] - f.localLat[i]
	}
	return fmt.Sprintf("bench-transcode-remote clip_s=%d local_s=%.2f remote_s=%.2f ratio=%.2f cpu_ratio=%.2f "+
		"latency_local_ms_p50=%.1f latency_local_ms_p95=%.1f latency_remote_ms_p50=%.1f latency_remote_ms_p95=%.1f "+
		"added_ms_p50=%.1f added_ms_p95=%.1f start_added_ms=%.1f segments=%d",
		clipS, f.localS, f.remoteS, f.localS/f.remoteS, f.cpuRatio,
		ms(percentile(f.localLat, 50)), ms(percentile(f.localLat, 95)),
		ms(percentile(f.remoteLat, 50)), ms(percentile(f.remoteLat, 95)),
		ms(percentile(added, 50)), ms(percentile(added, 95)), ms(f.startAdded), len(added))
}

// ms is d in milliseconds to a tenth, never -0.
func ms(d time.Duration) float64 {
	v := math.Round(float64(d)/float64(time.Millisecond)*10) / 10
	if v == 0 {
		return 0
	}
	return v
}

// percentile is the nearest-rank p-th percentile of ds (0 when empty).
func percentile(ds []time.Duration, p int) time.Duration {
	if len(ds) == 0 {
		return 0
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	rank := (p*len(s) + 99) / 100 // ceil(p/100 * n)
	return s[max(rank, 1)-1]
}

// liveClip is a source video held in memory, so that neither side's time
// includes reading the file.
type liveClip struct {
	track media.Track
	aus   []*media.AccessUnit // decode order, 90 kHz
}

func loadClip(path string) (liveClip, error) {
	var c liveClip
	err := ffmpeg.DemuxVideo(path, func(tr media.Track, au *media.AccessUnit) error {
		c.track = tr
		c.aus = append(c.aus, au)
		return nil
	})
	if err == nil && len(c.aus) == 0 {
		err = errors.New("no video in the source")
	}
	return c, err
}

// anchor is the keyframe grid's origin: the first access unit's PTS, as the
// transcoder's job anchors it.
func (c liveClip) anchor() int64 { return c.aus[0].PTS }

// compareRemote measures the remote line over c: the four throughput runs,
// then the two paced runs, through one worker that claims over loopback
// HTTP for the whole comparison.
func compareRemote(ctx context.Context, c liveClip, cfg remoteConfig) (remoteFigures, error) {
	// No sampled re-checks (verify_fraction 0): the line measures the
	// transport and the worker, not the origin's checks.
	lo, err := remote.NewLiveOrigin(remote.LiveConfig{PollWait: 2 * time.Second, QueueLen: max(1200, len(c.aus)+1)}, remote.LiveDeps{Log: cfg.log})
	if err != nil {
		return remoteFigures{}, err
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return remoteFigures{}, err
	}
	srv := &http.Server{Handler: originHandler(lo, cfg.log), ReadHeaderTimeout: 10 * time.Second}
	w := &benchWorker{
		url:  "http://" + ln.Addr().String(),
		hc:   &http.Client{Transport: &http.Transport{DisableCompression: true}},
		base: cfg.base,
		log:  cfg.log,
	}
	defer w.hc.CloseIdleConnections()

	// A failure of the server or the worker ends the measurement too.
	g, gctx := errgroup.WithContext(ctx)
	wctx, stopWorker := context.WithCancel(gctx)
	defer stopWorker()
	g.Go(func() error {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			return fmt.Errorf("the origin's HTTP server: %w", err)
		}
		return nil
	})
	g.Go(func() error { return w.run(wctx) })
	var figs remoteFigures
	g.Go(func() error {
		defer func() {
			stopWorker() // its claim ends, then the server idles
			sctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			if srv.Shutdown(sctx) != nil {
				srv.Close()
			}
		}()
		var err error
		figs, err = measureRemote(gctx, c, cfg, lo)
		return err
	})
	return figs, g.Wait()
}

// measureRemote runs the throughput runs in the order local, remote,
// remote, local (a load that drifts during them weighs on both sides
// alike), then the paced runs, local then remote; every run must output
// the same frames.
func measureRemote(ctx context.Context, c liveClip, cfg remoteConfig, lo *remote.LiveOrigin) (remoteFigures, error) {
	local := func() ladderSide { return &localSide{cfg: cfg, track: c.track, anchor: c.anchor()} }
	remoteSide := func() ladderSide { return &remoteSide{cfg: cfg, track: c.track, anchor: c.anchor(), lo: lo} }
	var figs remoteFigures
	var first *recorder
	var localCPU, remoteCPU float64
	var localPaced, remotePaced *recorder
	for _, r := range []struct {
		name   string
		remote bool
		paced  bool
	}{{"local", false, false}, {"remote", true, false}, {"remote", true, false}, {"local", false, false},
		{"local paced", false, true}, {"remote paced", true, true}} {
		side := local
		if r.remote {
			side = remoteSide
			// Between two ladders the worker is free once it claims again.
			if err := waitWorker(ctx, lo); err != nil {
				return figs, err
			}
		}
		rec := newRecorder(c.anchor(), cfg.segment)
		cpu0 := cpuSeconds()
		wall, err := runSide(ctx, side(), c.aus, r.paced, rec)
		cpu := cpuSeconds() - cpu0
		if err != nil {
			return figs, fmt.Errorf("%s: %w", r.name, err)
		}
		if err := rec.check(c); err != nil {
			return figs, fmt.Errorf("%s: %w", r.name, err)
		}
		if first == nil {
			first = rec
		} else if err := first.same(rec); err != nil {
			return figs, fmt.Errorf("%s: the output differs from the first local run's: %w", r.name, err)
		}
		fmt.Fprintf(os.Stderr, "remote line: %s took %.2f s (%.2f s of CPU), output %s\n", r.name, wall.Seconds(), cpu, rec.sizes())
		switch {
		case r.paced && r.remote:
			remotePaced = rec
		case r.paced:
			localPaced = rec
		case r.remote:
			figs.remoteS += wall.Seconds() / 2
			remoteCPU += cpu / 2
		default:
			figs.localS += wall.Seconds() / 2
			localCPU += cpu / 2
		}
	}
	figs.cpuRatio = localCPU / remoteCPU
	localLat, remoteLat := localPaced.latencies(), remotePaced.latencies()
	figs.startAdded = remoteLat[0] - localLat[0]
	figs.localLat, figs.remoteLat = localLat[1:], remoteLat[1:]
	return figs, nil
}

// cpuSeconds is the CPU time (user and system) this process has used.
func cpuSeconds() float64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano()).Seconds()
}

// waitWorker waits until the worker claims (with room).
func waitWorker(ctx context.Context, lo *remote.LiveOrigin) error {
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for lo.Available() == 0 {
		if time.Now().After(deadline) {
			return errors.New("the remote worker never claimed")
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-tick.C:
		}
	}
	return nil
}

// ladderSide is one way of encoding the ladder: start, push every source
// access unit, end (which returns once every output came out), close.
type ladderSide interface {
	start(rec *recorder) error
	push(au *media.AccessUnit) error
	end() error
	close()
}

// runSide pushes aus through side, at their frame rate (their DTS) when
// paced, as fast as side takes them otherwise, and returns the wall time
// from the start to the last output.
func runSide(ctx context.Context, side ladderSide, aus []*media.AccessUnit, paced bool, rec *recorder) (time.Duration, error) {
	defer side.close()
	t0 := time.Now()
	if err := side.start(rec); err != nil {
		return 0, err
	}
	timer := time.NewTimer(time.Hour)
	timer.Stop()
	defer timer.Stop()
	for _, au := range aus {
		if paced {
			if wait := time.Until(t0.Add(media.Duration(au.DTS-aus[0].DTS, 90000))); wait > 0 {
				timer.Reset(wait)
				select {
				case <-ctx.Done():
					return 0, ctx.Err()
				case <-timer.C:
				}
			}
		} else if err := ctx.Err(); err != nil {
			return 0, err
		}
		rec.handedIn(au, time.Now())
		if err := side.push(au); err != nil {
			return 0, err
		}
	}
	if err := side.end(); err != nil {
		return 0, err
	}
	return time.Since(t0), nil
}

// localSide is the ladder in process, as the origin's transcoder job runs
// it (ffmpeg.Pipeline, on the remote workers' keyframe grid).
type localSide struct {
	cfg    remoteConfig
	track  media.Track
	anchor int64
	p      *ffmpeg.Pipeline
	emit   ffmpeg.Emit
}

func (s *localSide) start(rec *recorder) error {
	fl := s.cfg.ladder.For(s.track.Height)
	rungs := make([]ffmpeg.Rung, len(fl))
	for i, g := range fl {
		rungs[i] = ffmpeg.Rung{Name: g.Name(), Height: g.Height, Bitrate: g.Bitrate}
	}
	cfg := s.cfg.base
	cfg.Preset, cfg.KeyframeInterval = s.cfg.preset, s.cfg.segment
	cfg.Anchored, cfg.KeyframeAnchor = true, s.anchor
	cfg.Log = s.cfg.log
	p, err := ffmpeg.New(cfg, s.track, rungs)
	if err != nil {
		return err
	}
	s.p = p
	s.emit = func(i int, au *media.AccessUnit) { rec.output(i, au, time.Now()) }
	return nil
}

func (s *localSide) push(au *media.AccessUnit) error { return s.p.Push(au, s.emit) }
func (s *localSide) end() error                      { return s.p.Flush(s.emit) }
func (s *localSide) close() {
	if s.p != nil {
		s.p.Close()
	}
}

// remoteSide is the ladder on the remote worker, as the origin's
// transcoder job drives it (transcode/remotejob.go): reserve the worker,
// start the assignment with the source header, send the source access
// units, end, and read the worker's frames until its body ends.
type remoteSide struct {
	cfg    remoteConfig
	track  media.Track
	anchor int64
	lo     *remote.LiveOrigin
	rl     transcode.RemoteLadder
	recvd  chan error // the reader's end: nil after a clean end
}

func (s *remoteSide) start(rec *recorder) error {
	rl, ok := s.lo.Reserve(ids.New(), nil)
	if !ok {
		return errors.New("the remote worker has no room")
	}
	s.rl = rl
	hdr := nodeproto.LiveSource{
		Stream: ids.New(), Tracks: []nodeproto.LiveTrack{nodeproto.LiveTrackOf(s.track)}, Video: 0,
		Ladder: s.cfg.ladder.String(), Preset: s.cfg.preset, SegmentMillis: s.cfg.segment.Milliseconds(),
		KeyframeAnchor: s.anchor,
	}
	rl.Start(hdr)
	s.recvd = make(chan error, 1)
	go func() { // waited for by end or close
		s.recvd <- s.read(rec)
	}()
	return nil
}

// read takes the worker's frames until its body ends.
func (s *remoteSide) read(rec *recorder) error {
	var rungs []nodeproto.LiveRung
	want := s.cfg.ladder.For(s.track.Height)
	for {
		f, err := s.rl.Recv()
		if errors.Is(err, io.EOF) {
			return nil
		}
		if err != nil {
			return err
		}
		switch {
		case f.Renditions != nil:
			rungs = f.Renditions.Rungs
			if len(rungs) != len(want) {
				return fmt.Errorf("the worker encodes %d rungs, not %d", len(rungs), len(want))
			}
			for i, g := range rungs {
				if g.Name != want[i].Name() {
					return fmt.Errorf("the worker's rung %d is %s, not %s", i, g.Name, want[i].Name())
				}
			}
		case f.AU != nil && f.AU.Track < len(rungs):
			rec.output(f.AU.Track, f.AU, time.Now())
		case f.AU != nil:
			return fmt.Errorf("an access unit of rung %d before its header", f.AU.Track)
		}
	}
}

func (s *remoteSide) push(au *media.AccessUnit) error {
	if !s.rl.Send(au) {
		return fmt.Errorf("the worker stopped taking the source: %w", s.wait())
	}
	return nil
}

func (s *remoteSide) end() error {
	s.rl.End()
	return s.wait()
}

// wait waits for the reader's end; the ladder's error if it failed.
func (s *remoteSide) wait() error {
	err := <-s.recvd
	s.recvd = nil
	return err
}

func (s *remoteSide) close() {
	if s.rl == nil {
		return
	}
	s.rl.Close()
	if s.recvd != nil {
		<-s.recvd
	}
}

// recorder notes when each grid instant's source access unit went in and
// when the first rung's keyframe at that instant came out, and what every
// rung output. Not the bytes: x264 with VBV (maxrate and bufsize, as every
// rung has) and frame threads is not bit-exact from one run to the next,
// even in one process, so runs are compared by their frames' timestamps
// and keyframes.
type recorder struct {
	anchor, step int64 // the keyframe grid, 90 kHz

	mu  sync.Mutex
	in  map[int64]time.Time
	out map[int64]time.Time
	// Per rung: a hash of the timestamps and keyframe flags of its frames
	// in order, how many, their bytes, the keyframes' PTS.
	sums  []hash.Hash
	count []int
	bytes []int
	keys  [][]int64
}

func newRecorder(anchor int64, segment time.Duration) *recorder {
	return &recorder{anchor: anchor, step: segment.Microseconds() * 9 / 100,
		in: map[int64]time.Time{}, out: map[int64]time.Time{}}
}

func (r *recorder) onGrid(pts int64) bool { return pts >= r.anchor && (pts-r.anchor)%r.step == 0 }

func (r *recorder) handedIn(au *media.AccessUnit, at time.Time) {
	if !r.onGrid(au.PTS) {
		return
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	r.in[au.PTS] = at
}

func (r *recorder) output(rung int, au *media.AccessUnit, at time.Time) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for len(r.sums) <= rung {
		r.sums = append(r.sums, sha256.New())
		r.count = append(r.count, 0)
		r.bytes = append(r.bytes, 0)
		r.keys = append(r.keys, nil)
	}
	var b [8 + 8 + 1]byte
	binary.BigEndian.PutUint64(b[0:], uint64(au.PTS))
	binary.BigEndian.PutUint64(b[8:], uint64(au.DTS))
	if au.Keyframe {
		b[16] = 1
	}
	r.sums[rung].Write(b[:])
	for _, n := range au.Payload {
		r.bytes[rung] += len(n)
	}
	r.count[rung]++
	if au.Keyframe {
		r.keys[rung] = append(r.keys[rung], au.PTS)
		if _, seen := r.out[au.PTS]; rung == 0 && !seen && r.onGrid(au.PTS) {
			r.out[au.PTS] = at
		}
	}
}

// grid is the clip's grid instants: the PTS on the grid of a source
// access unit.
func (r *recorder) grid(c liveClip) []int64 {
	var g []int64
	for _, au := range c.aus {
		if r.onGrid(au.PTS) {
			g = append(g, au.PTS)
		}
	}
	slices.Sort(g)
	return g
}

// check checks that every rung has a frame per source frame and a
// keyframe at every grid instant.
func (r *recorder) check(c liveClip) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.count) == 0 {
		return errors.New("no output")
	}
	grid := r.grid(c)
	for i, n := range r.count {
		if n != len(c.aus) {
			return fmt.Errorf("rung %d output %d frames for %d source frames", i, n, len(c.aus))
		}
		for _, k := range grid {
			if !slices.Contains(r.keys[i], k) {
				return fmt.Errorf("rung %d has no keyframe at %d (the grid from %d every %d)", i, k, r.anchor, r.step)
			}
		}
	}
	for _, k := range grid {
		if _, ok := r.in[k]; !ok {
			return fmt.Errorf("no source frame handed in at %d", k)
		}
	}
	return nil
}

// same compares two runs' outputs: the same frames, timestamps and
// keyframes in every rung.
func (r *recorder) same(o *recorder) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	o.mu.Lock()
	defer o.mu.Unlock()
	if len(r.sums) != len(o.sums) {
		return fmt.Errorf("%d rungs, not %d", len(o.sums), len(r.sums))
	}
	for i := range r.sums {
		if string(r.sums[i].Sum(nil)) != string(o.sums[i].Sum(nil)) {
			return fmt.Errorf("rung %d has other timestamps or keyframes (%d frames, keyframes %v; against %d, %v)", i, o.count[i], o.keys[i], r.count[i], r.keys[i])
		}
	}
	return nil
}

// sizes is each rung's frames and bytes.
func (r *recorder) sizes() string {
	r.mu.Lock()
	defer r.mu.Unlock()
	parts := make([]string, len(r.count))
	for i := range r.count {
		parts[i] = fmt.Sprintf("rung %d: %d frames, %d bytes", i, r.count[i], r.bytes[i])
	}
	return strings.Join(parts, "; ")
}

// latencies is, per grid instant in order, from the source frame in to
// the first rung's keyframe out.
func (r *recorder) latencies() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	ks := make([]int64, 0, len(r.in))
	for k := range r.in {
		ks = append(ks, k)
	}
	slices.Sort(ks)
	out := make([]time.Duration, len(ks))
	for i, k := range ks {
		out[i] = r.out[k].Sub(r.in[k])
	}
	return out
}

// benchWorker is a remote worker's side as `shoal worker` runs it
// (internal/app/remotelive.go), over plain HTTP and without the node's
// request signing: it claims a ladder (a long poll), reads the source body
// and posts the renditions body as a streamed request while EncodeLive
// encodes.
type benchWorker struct {
	url  string
	hc   *http.Client
	base ffmpeg.Config
	log  *slog.Logger
}

// run claims and encodes ladders one at a time until ctx ends.
func (w *benchWorker) run(ctx context.Context) error {
	for ctx.Err() == nil {
		a, ok, err := w.claim(ctx)
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("the worker's claim: %w", err)
		}
		if !ok {
			continue
		}
		if err := w.encode(ctx, a); err != nil && ctx.Err() == nil {
			return fmt.Errorf("the worker's ladder: %w", err)
		}
	}
	return nil
}

func (w *benchWorker) claim(ctx context.Context) (nodeproto.LiveAssignment, bool, error) {
	var a nodeproto.LiveAssignment
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url+claimPath, nil)
	if err != nil {
		return a, false, err
	}
	resp, err := w.hc.Do(req)
	if err != nil {
		return a, false, err
	}
	defer resp.Body.Close()
	switch resp.StatusCode {
	case http.StatusNoContent:
		return a, false, nil
	case http.StatusOK:
		if err := json.NewDecoder(resp.Body).Decode(&a); err != nil {
			return a, false, err
		}
		return a, true, a.Check()
	default:
		return a, false, fmt.Errorf("claim: %s", resp.Status)
	}
}

// encode runs one assignment: the source body in, the renditions body out.
func (w *benchWorker) encode(ctx context.Context, a nodeproto.LiveAssignment) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, w.url+"/live/"+a.Assignment+"/source", nil)
	if err != nil {
		return err
	}
	src, err := w.hc.Do(req)
	if err != nil {
		return fmt.Errorf("the source: %w", err)
	}
	defer src.Body.Close()
	if src.StatusCode != http.StatusOK {
		return fmt.Errorf("the source: %s", src.Status)
	}
	pr, pw := io.Pipe()
	posted := make(chan error, 1)
	go func() { // waited for below
		posted <- w.post(ctx, a.Assignment, pr)
		pr.CloseWithError(errors.New("the renditions request ended"))
		cancel() // the origin stopped taking renditions: stop reading
	}()
	err = remote.EncodeLive(ctx, w.base, src.Body, nodeproto.NewLiveWriter(pw, nil), w.log)
	pw.CloseWithError(err) // nil: the body ends cleanly
	if perr := <-posted; err == nil {
		err = perr
	}
	return err
}

// post streams body as the assignment's renditions (chunked: its length
// is not known).
func (w *benchWorker) post(ctx context.Context, assignment string, body io.Reader) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.url+"/live/"+assignment+"/renditions", body)
	if err != nil {
		return err
	}
	req.Header.Set("Content-Type", "application/octet-stream")
	resp, err := w.hc.Do(req)
	if err != nil {
		return fmt.Errorf("the renditions: %w", err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusNoContent {
		msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4096))
		return fmt.Errorf("the renditions: %s: %s", resp.Status, msg)
	}
	return nil
}

const (
	claimPath = "/live/claim"
	// benchNode is the worker's node id: the real routes take it from the
	// request's signature.
	benchNode = "benchworker"
)

// originHandler is the origin's side of the three worker routes
// (player-api/workerlive.go) on a bare net/http mux: no node
// authentication, one worker.
func originHandler(lo *remote.LiveOrigin, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("POST "+claimPath, func(w http.ResponseWriter, r *http.Request) {
		a, ok, err := lo.ClaimLive(r.Context(), nodeproto.LiveWorker{ID: benchNode, Ladders: 1, LastSeen: time.Now()})
		switch {
		case err != nil:
			workerError(w, err)
		case !ok:
			w.WriteHeader(http.StatusNoContent)
		default:
			w.Header().Set("Content-Type", "application/json")
			_ = json.NewEncoder(w).Encode(a)
		}
	})
	mux.HandleFunc("GET /live/{assignment}/source", func(w http.ResponseWriter, r *http.Request) {
		rc := http.NewResponseController(w)
		started := false
		start := func() {
			started = true
			w.Header().Set("Content-Type", "application/octet-stream")
			w.Header().Set("Cache-Control", "no-store")
			w.WriteHeader(http.StatusOK)
			_ = rc.Flush()
		}
		err := lo.ServeSource(r.Context(), benchNode, r.PathValue("assignment"), start, nodeproto.NewLiveWriter(w, rc.Flush))
		if err != nil && !started {
			workerError(w, err)
			return
		}
		if err != nil && r.Context().Err() == nil {
			log.Info("a live source body to the worker ended early", "err", err)
		}
	})
	mux.HandleFunc("POST /live/{assignment}/renditions", func(w http.ResponseWriter, r *http.Request) {
		if err := lo.ReceiveRenditions(r.Context(), benchNode, r.PathValue("assignment"), r.Body); err != nil {
			workerError(w, err)
			return
		}
		w.WriteHeader(http.StatusNoContent)
	})
	return mux
}

func workerError(w http.ResponseWriter, err error) {
	status := http.StatusInternalServerError
	var we *nodeproto.WorkerError
	if errors.As(err, &we) {
		status = we.Status
	}
	http.Error(w, err.Error(), status)
}
