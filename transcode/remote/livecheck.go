package remote

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/verify"
)

// Sampled verification of remote live ladders: of every rung a worker
// sends back, each cell of the keyframe grid (one segment: from a grid
// keyframe to the next) is picked with probability VerifyFraction by
// verify.Picked, seeded with an HMAC of the assignment and the rung under
// a key the origin draws at start and never sends. For a picked cell the
// origin keeps the source from a keyframe a second or more before it and
// the worker's access units for it, and once the cell's output is whole
// checks it in the background as a VOD segment is checked
// (verify.CheckLive: timing, frames, keyframes, size, PSNR/SSIM against
// the source and a reference encode by the ladder's own code). A cell that
// fails drops the worker from the stream: the assignment fails, and the
// transcoder hands the ladder to another worker or its own CPU from the
// last source keyframe (the cell was already published: live segments go
// out as they are made). The failure counts towards the worker's
// quarantine, as a VOD segment's does; an assignment that ends with no
// failed check credits the pixels it transcoded and the cells verified.

// liveCheckTimeout bounds one cell's check.
const liveCheckTimeout = time.Minute

// liveWarmup is how much source before a cell the check keeps, so that
// its reference encoder is as warm as the worker's (see
// ffmpeg.LiveCompareConfig).
const liveWarmup = time.Second

// maxCellAUs bounds the access units kept for a cell (a minute at 120
// fps): a worker that sends more has no cell to check there, and the
// transcoder replaces a worker that far off the grid anyway.
const maxCellAUs = 7200

// liveSampler samples and checks one assignment's output. The
// assignment's Send (the transcoder's goroutine) and Recv (the job's
// reader) feed it (onSource, onOutput), under mu.
type liveSampler struct {
	mu       sync.Mutex
	o        *LiveOrigin
	a        *liveAssignment
	track    media.Track // the source video, its parameter sets
	rate     int64       // its clock rate
	anchor   int64       // the grid, 90 kHz
	step     int64
	interval time.Duration
	preset   string
	lag      int64          // how far behind the source a worker's output may be, 90 kHz
	bitrates map[string]int // the ladder's, by rung name
	seeds    map[string][]byte
	anyPick  map[int64]bool // pickedAny's answers, while the cell may come

	// first is the first source access unit's PTS (90 kHz): cells
	// starting before it are not checked (the worker's encode starts
	// there, off the grid).
	first, newest int64
	started       bool
	src           []*media.AccessUnit // 90 kHz copies
	rungs         []nodeproto.LiveRung
	open          map[int]*liveCell // per rung index
	ready         []*liveCell       // whole, waiting for the source to pass them
	pixels        int64             // of every access unit received
	verified      int64             // cells that passed
	failed        bool
	running       int  // checks under way
	ended         bool // the assignment closed
}

// liveCell is a picked cell being collected.
type liveCell struct {
	rung nodeproto.LiveRung
	k    int64
	aus  []*media.AccessUnit
	next int64 // the PTS of the rung's next keyframe, once whole
}

// newLiveSampler samples a's output; nil when the origin checks none or
// the header gives no grid to check against.
func (o *LiveOrigin) newLiveSampler(a *liveAssignment, hdr nodeproto.LiveSource) *liveSampler {
	if o.cfg.VerifyFraction <= 0 || hdr.Video < 0 || hdr.Video >= len(hdr.Tracks) || hdr.SegmentMillis <= 0 {
		return nil
	}
	tr := hdr.Tracks[hdr.Video].Track()
	if tr.Codec != media.CodecH264 && tr.Codec != media.CodecH265 || tr.ClockRate <= 0 {
		return nil
	}
	ladder, err := hdr.ParsedLadder()
	if err != nil {
		return nil
	}
	// The ladder's bitrates, the origin's: never the worker's word (a
	// reference encoded at the bitrate a cheat claims would excuse it).
	bitrates := map[string]int{}
	for _, r := range ladder.For(tr.Height) {
		bitrates[r.Name()] = r.Bitrate
	}
	interval := time.Duration(hdr.SegmentMillis) * time.Millisecond
	step := media.Ticks(interval, 90000)
	s := &liveSampler{o: o, a: a, track: tr, rate: int64(tr.ClockRate), anchor: hdr.KeyframeAnchor, step: step,
		interval: interval, preset: hdr.Preset, lag: 3*step + media.Ticks(2*time.Second, 90000),
		bitrates: bitrates, seeds: map[string][]byte{}, anyPick: map[int64]bool{}, open: map[int]*liveCell{}}
	return s
}

// seed is the sampling seed of a rung of this assignment.
func (s *liveSampler) seed(rung string) []byte {
	if b, ok := s.seeds[rung]; ok {
		return b
	}
	m := hmac.New(sha256.New, s.o.seedKey)
	m.Write([]byte(s.a.id + "\x00" + rung))
	b := m.Sum(nil)
	s.seeds[rung] = b
	return b
}

func (s *liveSampler) cellOf(pts int64) int64 { return floorDiv(pts-s.anchor, s.step) }
func (s *liveSampler) start(k int64) int64    { return s.anchor + k*s.step }

// picked tells whether cell k of a rung is checked.
func (s *liveSampler) picked(rung string, k int64) bool {
	if k < 0 {
		return false
	}
	ok, err := verify.Picked(s.seed(rung), int(k), s.o.cfg.VerifyFraction)
	return err == nil && ok
}

// pickedAny tells whether any rung checks cell k (before the worker's
// header names the rungs, every cell is kept for).
func (s *liveSampler) pickedAny(k int64) bool {
	if s.rungs == nil {
		return true
	}
	if v, ok := s.anyPick[k]; ok {
		return v
	}
	v := false
	for _, r := range s.rungs {
		v = v || s.picked(r.Name, k)
	}
	s.anyPick[k] = v
	return v
}

// onSource keeps a source video access unit the worker is sent.
func (s *liveSampler) onSource(au *media.AccessUnit) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.source(au)
}

// onOutput watches a frame of the worker's renditions body, before the
// transcoder publishes it.
func (s *liveSampler) onOutput(f nodeproto.LiveFrame) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.output(f)
}

func (s *liveSampler) source(au *media.AccessUnit) {
	c := *au
	c.PTS, c.DTS = c.PTS*90000/s.rate, c.DTS*90000/s.rate
	if !s.started {
		if !c.Keyframe {
			return // the worker skips to the first keyframe too
		}
		s.first, s.started = c.PTS, true
	}
	s.newest = max(s.newest, c.PTS)
	s.src = append(s.src, &c)
	s.startChecks()
	s.trim()
}

// trim drops the source no cell still to be checked needs: it keeps from
// the latest keyframe a warm-up before the earliest picked cell whose
// output may still come (the transcoder replaces a worker more than two
// cells behind), or before the next cell.
func (s *liveSampler) trim() {
	next := s.cellOf(s.newest) + 1
	need := s.start(next)
	oldest := s.cellOf(s.newest - s.lag)
	for k := range s.anyPick {
		if k < oldest {
			delete(s.anyPick, k)
		}
	}
	for k := oldest; k <= next; k++ {
		if s.pickedAny(k) {
			need = s.start(k)
			break
		}
	}
	for _, c := range s.open {
		need = min(need, s.start(c.k))
	}
	for _, c := range s.ready {
		need = min(need, s.start(c.k))
	}
	need -= media.Ticks(liveWarmup, 90000)
	cut := 0
	for i, au := range s.src {
		if au.PTS > need {
			break
		}
		if au.Keyframe {
			cut = i
		}
	}
	if cut > 0 {
		clear(s.src[:cut])
		s.src = append(s.src[:0], s.src[cut:]...)
	}
}

func (s *liveSampler) output(f nodeproto.LiveFrame) {
	switch {
	case f.Renditions != nil:
		// New rungs (the source changed size): cells being collected are
		// dropped.
		s.rungs = f.Renditions.Rungs
		clear(s.open)
		clear(s.anyPick)
	case f.AU != nil && f.AU.Track >= 0 && f.AU.Track < len(s.rungs):
		i := f.AU.Track
		r := s.rungs[i]
		s.pixels += int64(r.Width) * int64(r.Height)
		c := *f.AU
		if c.Keyframe {
			if cell := s.open[i]; cell != nil {
				delete(s.open, i)
				s.whole(cell, c.PTS)
			}
			// A grid keyframe (its instant is the cell's start, to half a
			// frame at 24 fps) of a cell the worker encoded from its
			// start.
			k := s.cellOf(c.PTS + 1875)
			if at := c.PTS - s.start(k); at <= 1875 && at >= -1875 && s.start(k) >= s.first && s.bitrates[r.Name] > 0 && s.picked(r.Name, k) {
				s.open[i] = &liveCell{rung: r, k: k, aus: []*media.AccessUnit{&c}}
			}
			return
		}
		if cell := s.open[i]; cell != nil {
			if len(cell.aus) >= maxCellAUs {
				delete(s.open, i)
				s.o.liveChecks.WithLabelValues("skipped").Inc()
				return
			}
			cell.aus = append(cell.aus, &c)
		}
	}
}

// liveQueuePerCheck: as many cells as this many times the checks that
// run at once may wait for one (each holds its source, a few megabytes);
// a pick past that is skipped.
const liveQueuePerCheck = 4

// liveCheckMargin is how far past a cell the source must reach before
// its check starts: a source with B-frames sends a frame before the
// cell's end after one past it.
const liveCheckMargin = 45000 // half a second

// whole queues a cell whose output is whole (next is its next keyframe's
// PTS) for its check, which starts once the source reaches past it.
func (s *liveSampler) whole(cell *liveCell, next int64) {
	cell.next = next
	s.ready = append(s.ready, cell)
	s.startChecks()
}

// startChecks starts the checks of the whole cells the source reaches
// past.
func (s *liveSampler) startChecks() {
	for len(s.ready) > 0 && s.newest >= s.start(s.ready[0].k+1)+liveCheckMargin {
		cell := s.ready[0]
		s.ready = s.ready[1:]
		s.check(cell)
	}
}

// check checks a whole cell in the background (skipped when too many
// wait for a check already). The source goes from the latest
// keyframe a warm-up before the cell (or the earliest kept, when the
// worker started later) to the newest.
func (s *liveSampler) check(cell *liveCell) {
	start, end := s.start(cell.k), s.start(cell.k+1)
	first := -1
	for i, au := range s.src {
		if au.Keyframe && au.PTS <= start-media.Ticks(liveWarmup, 90000) {
			first = i
		}
	}
	if first < 0 && len(s.src) > 0 && s.src[0].PTS <= start {
		first = 0
	}
	if first < 0 {
		s.o.liveChecks.WithLabelValues("skipped").Inc()
		return
	}
	req := verify.LiveRequest{
		Source: s.track, SourceAUs: append([]*media.AccessUnit(nil), s.src[first:]...),
		Start: start, End: end, Anchor: s.anchor, AUs: cell.aus, Next: cell.next,
		Rung:     ffmpeg.Rung{Name: cell.rung.Name, Height: cell.rung.Height, Bitrate: s.bitrates[cell.rung.Name]},
		Settings: verify.Settings{Preset: s.preset, SegmentDuration: s.interval},
	}
	if s.o.checkQueued.Add(1) > int64(liveQueuePerCheck*cap(s.o.checkSem)) {
		s.o.checkQueued.Add(-1)
		s.o.liveChecks.WithLabelValues("skipped").Inc()
		return
	}
	s.o.checking.Add(1)
	s.running++
	go func() {
		defer s.o.checking.Done()
		defer s.checkDone()
		s.o.checkSem <- struct{}{}
		s.o.checkQueued.Add(-1)
		defer func() { <-s.o.checkSem }()
		ctx, cancel := context.WithTimeout(context.Background(), liveCheckTimeout)
		defer cancel()
		began := time.Now()
		rep, err := verify.CheckLive(ctx, req)
		s.o.liveCheckSeconds.Observe(time.Since(began).Seconds())
		s.verdict(ctx, cell, rep, err)
	}()
}

// verdict acts on a cell's check.
func (s *liveSampler) verdict(ctx context.Context, cell *liveCell, rep verify.Report, err error) {
	o, a := s.o, s.a
	log := o.log.With("node", a.worker, "stream", a.stream, "rung", cell.rung.Name, "cell", cell.k)
	switch {
	case err != nil:
		o.liveChecks.WithLabelValues("error").Inc()
		log.Warn("the origin could not re-check a remote worker's live output", "err", err)
		return
	case rep.Passed:
		o.liveChecks.WithLabelValues("passed").Inc()
		log.Debug("a remote worker's live output passed the re-check", "psnr", rep.Figures.PSNR, "reference_psnr", rep.Figures.RefPSNR)
		s.mu.Lock()
		s.verified++
		s.mu.Unlock()
		return
	}
	o.liveChecks.WithLabelValues("failed").Inc()
	reason := rep.Reason()
	s.mu.Lock()
	already := s.failed
	s.failed = true
	s.mu.Unlock()
	if already {
		// Another cell of the assignment failed first: the worker was
		// dropped and counted once.
		log.Info("another cell of a dropped remote worker failed the re-check", "reason", reason)
		return
	}
	log.Warn("a remote worker's live output failed the re-check: it is dropped from the stream", "reason", reason)
	a.fail(fmt.Errorf("its %s output for %s failed the origin's re-check: %s", cell.rung.Name,
		media.Duration(s.start(cell.k), 90000), clip(reason, 300)))
	if o.queue == nil {
		return
	}
	if countVerifyFailure(ctx, o.queue, a.worker, reason, log) {
		o.forget(a.worker)
	}
}

// closed is told that the assignment closed: once its checks are done,
// the worker is credited.
func (s *liveSampler) closed() {
	s.mu.Lock()
	s.ended = true
	done := s.running == 0
	s.mu.Unlock()
	if done {
		s.creditLater()
	}
}

// creditLater credits the worker in the background: Close may be called
// with the transcoder's job locked.
func (s *liveSampler) creditLater() {
	s.o.checking.Add(1)
	go func() {
		defer s.o.checking.Done()
		s.credit()
	}()
}

// checkDone is told that one of the assignment's checks ended.
func (s *liveSampler) checkDone() {
	s.mu.Lock()
	s.running--
	done := s.ended && s.running == 0
	s.mu.Unlock()
	if done {
		s.creditLater()
	}
}

// credit adds what the assignment's worker transcoded to its figures and
// to the accounting epoch's, unless a check of it failed. Called once,
// after the assignment closed and its checks ended.
func (s *liveSampler) credit() {
	s.mu.Lock()
	failed, pixels, verified := s.failed, s.pixels, s.verified
	s.mu.Unlock()
	o, a := s.o, s.a
	if failed || pixels == 0 || o.queue == nil {
		return
	}
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	log := o.log.With("node", a.worker, "stream", a.stream)
	if _, err := o.queue.AddWorkerFigures(ctx, a.worker, map[string]int64{
		routing.WorkSegmentsVerified: verified, routing.WorkPixels: pixels}); err != nil {
		log.Warn("counting a worker's live output", "err", err)
	}
	if o.figures == nil {
		return
	}
	if err := o.figures(ctx, a.worker, map[string]int64{
		routing.FigureSegmentsVerified: verified, routing.FigureTranscodedPixels: pixels}); err != nil {
		log.Warn("crediting a worker's live output to the accounting epoch", "err", err)
	}
}

func floorDiv(a, b int64) int64 {
	q := a / b
	if a%b != 0 && (a < 0) != (b < 0) {
		q--
	}
	return q
}
