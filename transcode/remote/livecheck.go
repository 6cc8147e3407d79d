package remote

import (
	"bytes"
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"fmt"
	"math"
	"slices"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
	"github.com/shoal-video/shoal/transcode/verify"
)

// Verification of remote live ladders, in two parts.
//
// Structure, every frame: a worker's renditions must be the ladder's
// rungs at the sizes the ladder makes of the source, every rung must have
// a keyframe in every cell of the keyframe grid (one segment: from a grid
// keyframe to the next), and nothing may come out ahead of the source. A
// worker that breaks one is dropped from the stream at once (its
// assignment fails: the transcoder hands the ladder to another worker or
// its own CPU from the last source keyframe).
//
// Pictures, sampled: each cell of each rung is picked with probability
// VerifyFraction by verify.Picked, seeded with an HMAC of the assignment
// and the rung under a key the origin draws at start and never sends. For
// a picked cell the origin keeps the source from a keyframe a second or
// more before it and the worker's access units, and once the cell is
// whole and the source past it, checks it in the background as a VOD
// segment is checked (verify.CheckLive: timing, frames, keyframes, size,
// PSNR/SSIM against the source and a reference encode by the ladder's
// own code at the ladder's bitrate). A cell that fails drops the worker
// from the stream the same way (the cell itself was published: live
// segments go out as they are made) and counts towards its quarantine,
// once per assignment. An assignment that ends with no failure credits
// its pixels (each rung's frames, at most the source's, at the ladder's
// size) and its cells that passed.

// liveCheckTimeout bounds one cell's check.
const liveCheckTimeout = time.Minute

// liveWarmup is how much source before a cell the check keeps, so that
// its reference encoder is as warm as the worker's (see
// ffmpeg.LiveCompareConfig).
const liveWarmup = time.Second

// Bounds on what a sampler keeps: a cell's access units (a minute at 120
// fps), the source history (a minute at 60 fps, 64 MiB; a source whose
// keyframes are further apart is not checked where it lacks them).
const (
	maxCellAUs     = 7200
	maxSourceAUs   = 3600
	maxSourceBytes = 64 << 20
)

// liveQueuePerCheck: as many cells as this many times the checks that
// run at once may wait for one (each holds its source, a few megabytes);
// a pick past that is skipped.
const liveQueuePerCheck = 4

// liveCheckMargin is how far past a cell the source must reach before
// its check starts: a source with B-frames sends a frame before the
// cell's end after one past it.
const liveCheckMargin = 45000 // half a second

// aheadSlack is how far past the newest source frame a worker's output
// may be (an encoder's tick rounding is a frame at most).
const aheadSlack = 90000

// liveSampler checks one assignment's output. The assignment's Send (the
// transcoder's goroutine) and Recv (the job's reader) feed it (onSource,
// onOutput), under mu.
type liveSampler struct {
	mu    sync.Mutex
	o     *LiveOrigin
	a     *liveAssignment
	track media.Track // the source video, its latest parameter sets
	// sizes are the source's sizes, each from the source time it took
	// effect: the worker may still be encoding any of those since the
	// oldest frame it can be behind on.
	sizes    []sourceSize
	rate     int64 // its clock rate
	anchor   int64 // the grid, 90 kHz
	step     int64
	interval time.Duration
	preset   string
	lag      int64        // how far behind the source a worker's output may be, 90 kHz
	tol      int64        // half an encoder tick, 90 kHz (a keyframe's instant rounds that far before the grid's): the largest yet
	ladder   media.Ladder // the worker's rungs: the origin's ladder for the source's height at the start
	seeds    map[string][]byte
	anyPick  map[int64]bool // pickedAny's answers, while the cell may come

	// first is the first source access unit's PTS (90 kHz): cells
	// starting before it are not checked (the worker's encode starts
	// there, off the grid).
	first, newest int64
	started       bool
	src           []*media.AccessUnit // 90 kHz copies
	srcBytes      int
	srcFrames     int64 // source video access units sent
	rungs         []nodeproto.LiveRung
	bitrates      []int             // the ladder's, per rung index
	frames        []int64           // access units received, per rung index
	lastOut       []int64           // the latest PTS out, per rung index
	open          map[int]*liveCell // per rung index
	keyCell       map[int]int64     // per rung index: the cell of its latest keyframe
	ready         []*liveCell       // whole, waiting for the source to pass them
	pixels        int64             // credited so far
	verified      int64             // cells that passed
	failed        bool
	running       int  // checks under way
	ended         bool // the assignment closed
	credited      bool
}

// liveCell is a picked cell being collected.
type liveCell struct {
	rung    nodeproto.LiveRung
	bitrate int // the ladder's
	k       int64
	aus     []*media.AccessUnit
	next    int64 // the PTS of the rung's next keyframe, once whole
}

// newLiveSampler checks a's output (its structure always, its pictures at
// VerifyFraction); nil when the header gives nothing to check against (a
// source of unknown size).
func (o *LiveOrigin) newLiveSampler(a *liveAssignment, hdr nodeproto.LiveSource) *liveSampler {
	if hdr.Video < 0 || hdr.Video >= len(hdr.Tracks) || hdr.SegmentMillis <= 0 {
		return nil
	}
	tr := hdr.Tracks[hdr.Video].Track()
	if tr.Codec != media.CodecH264 && tr.Codec != media.CodecH265 || tr.ClockRate <= 0 {
		return nil
	}
	w, h, err := ffmpeg.TrackSize(tr)
	if err != nil {
		return nil
	}
	ladder, err := hdr.ParsedLadder()
	if err != nil {
		return nil
	}
	interval := time.Duration(hdr.SegmentMillis) * time.Millisecond
	step := media.Ticks(interval, 90000)
	return &liveSampler{o: o, a: a, track: tr, rate: int64(tr.ClockRate), anchor: hdr.KeyframeAnchor, step: step,
		interval: interval, preset: hdr.Preset, lag: 3*step + media.Ticks(2*time.Second, 90000), ladder: ladder.For(tr.Height),
		tol: ffmpeg.EncoderTick(tr)/2 + 1, sizes: []sourceSize{{from: math.MinInt64, w: w, h: h}},
		seeds: map[string][]byte{}, anyPick: map[int64]bool{}, open: map[int]*liveCell{}, keyCell: map[int]int64{}}
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
	if k < 0 || s.o.cfg.VerifyFraction <= 0 {
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

// onSource keeps a source video access unit the worker is about to be
// sent: an error says the worker must be dropped (a rung of its stopped
// or fell behind the others).
func (s *liveSampler) onSource(au *media.AccessUnit) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.failed {
		return nil
	}
	s.source(au)
	// A rung far behind the others (they go out within a few frames of
	// each other); the whole ladder behind is the transcoder's to judge
	// (sendRemote), a gap in the source being no fault of the worker's.
	var lead int64 = math.MinInt64
	for _, t := range s.lastOut {
		lead = max(lead, t)
	}
	for i, r := range s.rungs {
		if behind := lead - s.lastOut[i]; behind > s.lag {
			s.failed = true
			s.o.liveChecks.WithLabelValues("refused").Inc()
			err := fmt.Errorf("its %s output stopped at %s, %s behind its other rungs", r.Name,
				media.Duration(s.lastOut[i], 90000), media.Duration(behind, 90000))
			s.o.log.Warn("a remote worker's live output breaks the ladder's structure: it is dropped from the stream",
				"node", s.a.worker, "stream", s.a.stream, "err", err)
			return err
		}
	}
	return nil
}

// onOutput watches a frame of the worker's renditions body, before the
// transcoder publishes it: an error says why the worker must be dropped.
func (s *liveSampler) onOutput(f nodeproto.LiveFrame) error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.ended || s.failed {
		return nil
	}
	err := s.output(f)
	if err != nil {
		s.failed = true
		s.o.liveChecks.WithLabelValues("refused").Inc()
		s.o.log.Warn("a remote worker's live output breaks the ladder's structure: it is dropped from the stream",
			"node", s.a.worker, "stream", s.a.stream, "err", err)
	}
	return err
}

func (s *liveSampler) source(au *media.AccessUnit) {
	c := *au
	c.PTS, c.DTS = c.PTS*90000/s.rate, c.DTS*90000/s.rate
	if c.Keyframe {
		s.parameterSets(c.Payload)
	}
	if !s.started {
		if !c.Keyframe {
			return // the worker skips to the first keyframe too
		}
		if s.srcFrames == 0 {
			s.first = c.PTS
		}
		s.started = true
	}
	s.srcFrames++
	s.newest = max(s.newest, c.PTS)
	s.src = append(s.src, &c)
	for _, n := range c.Payload {
		s.srcBytes += len(n)
	}
	s.startChecks()
	s.trim()
}

// parameterSets follows the source's in-band parameter sets: a source that
// changes size is checked at its new size.
func (s *liveSampler) parameterSets(nalus [][]byte) {
	tr := s.track
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		if tr.Codec == media.CodecH264 {
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				tr.SPS = n
			case h264.NALUTypePPS:
				tr.PPS = n
			}
			continue
		}
		if len(n) < 2 {
			continue
		}
		switch h265.NALUType((n[0] >> 1) & 0x3f) {
		case h265.NALUType_VPS_NUT:
			tr.VPS = n
		case h265.NALUType_SPS_NUT:
			tr.SPS = n
		case h265.NALUType_PPS_NUT:
			tr.PPS = n
		}
	}
	if bytes.Equal(tr.SPS, s.track.SPS) && bytes.Equal(tr.PPS, s.track.PPS) && bytes.Equal(tr.VPS, s.track.VPS) {
		return
	}
	w, h, err := ffmpeg.TrackSize(tr)
	if err != nil {
		return // the old ones stay: checks across the change cannot be made
	}
	tr.Width, tr.Height = w, h
	s.track = tr
	// The worker's encoders take a new frame rate only when they reopen
	// for a new size: the tolerance never shrinks.
	s.tol = max(s.tol, ffmpeg.EncoderTick(tr)/2+1)
	s.sizes = append(s.sizes, sourceSize{from: s.newest, w: w, h: h})
}

// trim drops the source no cell still to be checked needs: it keeps from
// the latest keyframe a warm-up before the earliest picked cell whose
// output may still come (the transcoder replaces a worker more than two
// cells behind), or before the next cell; within maxSourceAUs and
// maxSourceBytes. Cells open on a rung that stopped are dropped.
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
	for i, c := range s.open {
		if c.k < oldest-1 {
			delete(s.open, i)
			s.o.liveChecks.WithLabelValues("skipped").Inc()
			continue
		}
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
	s.drop(cut)
	for len(s.src) > maxSourceAUs || s.srcBytes > maxSourceBytes {
		// Too much: from the next keyframe on, or nothing until the
		// next one comes.
		cut = len(s.src)
		for i := 1; i < len(s.src); i++ {
			if s.src[i].Keyframe {
				cut = i
				break
			}
		}
		s.drop(cut)
		if len(s.src) == 0 {
			s.started = false
		}
	}
}

// drop drops the first n source access units.
func (s *liveSampler) drop(n int) {
	if n <= 0 {
		return
	}
	for _, au := range s.src[:n] {
		for _, nal := range au.Payload {
			s.srcBytes -= len(nal)
		}
	}
	clear(s.src[:n])
	s.src = append(s.src[:0], s.src[n:]...)
}

func (s *liveSampler) output(f nodeproto.LiveFrame) error {
	switch {
	case f.Renditions != nil:
		return s.renditions(f.Renditions.Rungs)
	case f.AU == nil || f.AU.Track < 0 || f.AU.Track >= len(s.rungs):
		return nil
	}
	i := f.AU.Track
	r := s.rungs[i]
	c := *f.AU
	if s.started && c.PTS > s.newest+aheadSlack {
		return fmt.Errorf("its %s output at %s is ahead of the source (at %s)", r.Name,
			media.Duration(c.PTS, 90000), media.Duration(s.newest, 90000))
	}
	if s.frames[i] < s.srcFrames {
		s.pixels += int64(r.Width) * int64(r.Height)
	}
	s.frames[i]++
	s.lastOut[i] = max(s.lastOut[i], c.PTS)
	k := s.cellOf(c.PTS + s.tol)
	last, seen := s.keyCell[i]
	if !c.Keyframe {
		if !seen {
			s.keyCell[i] = k // its first frame (EncodeLive starts with a keyframe)
		} else if k > last+1 {
			return fmt.Errorf("its %s output at %s has had no keyframe since %s: the grid forces one every %s", r.Name,
				media.Duration(c.PTS, 90000), media.Duration(s.start(last), 90000), s.interval)
		}
		if cell := s.open[i]; cell != nil {
			if len(cell.aus) >= maxCellAUs {
				delete(s.open, i)
				s.o.liveChecks.WithLabelValues("skipped").Inc()
				return nil
			}
			cell.aus = append(cell.aus, &c)
		}
		return nil
	}
	if cell := s.open[i]; cell != nil {
		delete(s.open, i)
		cell.next = c.PTS
		s.ready = append(s.ready, cell)
		s.startChecks()
	}
	// The rung's first keyframe in a cell the worker encoded from its
	// start is the cell's: the first frame at or after the grid instant,
	// at its encoder tick (rounded: up to half a tick before the
	// instant). The check says whether it is where the grid puts it.
	s.keyCell[i] = k
	if (!seen || k > last) && s.start(k) >= s.first && s.picked(r.Name, k) {
		s.open[i] = &liveCell{rung: r, bitrate: s.bitrates[i], k: k, aus: []*media.AccessUnit{&c}}
	}
	return nil
}

// renditions checks a renditions header: the worker's rungs (the
// origin's ladder for the source's height when the ladder was handed
// out), in order, with the ladder's bitrates, at the sizes the pipeline
// makes (heights capped at the source's) of a size the source had since
// the oldest frame the worker may still be encoding (it sends a header
// when its first frame of a new size comes out, after the origin sent
// it). A header the same as the last changes nothing; one that differs
// (the source changed size) drops the cells being collected.
func (s *liveSampler) renditions(rungs []nodeproto.LiveRung) error {
	if slices.Equal(rungs, s.rungs) {
		return nil
	}
	if len(rungs) != len(s.ladder) {
		return fmt.Errorf("it sent %d rungs; the ladder has %d for this source", len(rungs), len(s.ladder))
	}
	// The sizes the worker may be at: the latest in effect lag ago, and
	// every one since.
	from := 0
	for i, z := range s.sizes {
		if z.from <= s.newest-s.lag {
			from = i
		}
	}
	s.sizes = s.sizes[from:]
	var err error
	for k := len(s.sizes) - 1; k >= 0; k-- {
		if err = s.rungsFit(rungs, s.sizes[k]); err == nil {
			break
		}
	}
	if err != nil {
		return err
	}
	bitrates := make([]int, len(rungs))
	for j := range rungs {
		bitrates[j] = s.ladder[j].Bitrate
	}
	if s.frames == nil {
		s.frames, s.lastOut = make([]int64, len(rungs)), make([]int64, len(rungs))
		for i := range s.lastOut {
			s.lastOut[i] = s.newest
		}
	}
	s.rungs, s.bitrates = rungs, bitrates
	clear(s.open)
	clear(s.keyCell)
	clear(s.anyPick)
	return nil
}

// sourceSize is a size the source took at a time (90 kHz).
type sourceSize struct {
	from int64
	w, h int
}

// rungsFit tells whether rungs are the ladder's for a source of size z.
func (s *liveSampler) rungsFit(rungs []nodeproto.LiveRung, z sourceSize) error {
	for j, r := range rungs {
		g := s.ladder[j]
		h := min(g.Height, z.h&^1)
		w := ffmpeg.EvenWidth(z.w, z.h, h)
		if r.Name != g.Name() || r.Width != w || r.Height != h || r.Bitrate != g.Bitrate {
			return fmt.Errorf("its rung %d is %s, %dx%d at %d b/s; the ladder's is %s, %dx%d at %d b/s for this %dx%d source",
				j, r.Name, r.Width, r.Height, r.Bitrate, g.Name(), w, h, g.Bitrate, z.w, z.h)
		}
	}
	return nil
}

// startChecks starts the checks of the whole cells the source reaches
// past.
func (s *liveSampler) startChecks() {
	s.ready = slices.DeleteFunc(s.ready, func(cell *liveCell) bool {
		if s.newest < s.start(cell.k+1)+liveCheckMargin {
			return false
		}
		s.check(cell)
		return true
	})
}

// check checks a whole cell in the background (skipped when too many
// wait for a check already, or the source kept does not reach back to
// the cell). The source goes from the latest keyframe a warm-up before
// the cell (or the earliest kept, when the worker started later) to the
// newest.
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
		Rung:     ffmpeg.Rung{Name: cell.rung.Name, Height: cell.rung.Height, Bitrate: cell.bitrate},
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
		s.verdict(cell, rep, err)
	}()
}

// verdict acts on a cell's check.
func (s *liveSampler) verdict(cell *liveCell, rep verify.Report, err error) {
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
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
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

// creditLater credits the worker in the background (Close may be called
// with the transcoder's job locked), once.
func (s *liveSampler) creditLater() {
	s.mu.Lock()
	if s.credited {
		s.mu.Unlock()
		return
	}
	s.credited = true
	failed, pixels, verified := s.failed, s.pixels, s.verified
	s.mu.Unlock()
	if failed || pixels == 0 || s.o.queue == nil {
		return
	}
	s.o.checking.Add(1)
	go func() {
		defer s.o.checking.Done()
		s.credit(pixels, verified)
	}()
}

// credit adds what the assignment's worker transcoded to its figures and
// to the accounting epoch's.
func (s *liveSampler) credit(pixels, verified int64) {
	o, a := s.o, s.a
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
