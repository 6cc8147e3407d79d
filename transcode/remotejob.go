package transcode

import (
	"errors"
	"fmt"
	"io"
	"slices"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// Remote modes (Config.Remote): who encodes a new stream's ladder.
const (
	// RemoteOff: this node.
	RemoteOff = "off"
	// RemotePrefer: a remote worker with room, else this node.
	RemotePrefer = "prefer"
	// RemoteOnly: a remote worker; with none free the source is served as
	// it came, as at the node's limit.
	RemoteOnly = "only"
)

// RemoteLadders hands live ladders to remote workers (transcode/remote's
// LiveOrigin implements it).
type RemoteLadders interface {
	// Reserve takes a slot for stream id on the remote worker best placed
	// to carry its ladder, none of exclude: ok is false when no worker
	// has room.
	Reserve(id string, exclude []string) (RemoteLadder, bool)
}

// RemoteLadder is one stream's ladder on one remote worker.
type RemoteLadder interface {
	// Worker is the node id of the worker.
	Worker() string
	// Start hands the ladder to the worker (it sees it at its next
	// claim); the source body starts with hdr.
	Start(hdr nodeproto.LiveSource)
	// Send queues a source video access unit for the worker; false once
	// the worker is gone or too far behind to queue more.
	Send(au *media.AccessUnit) bool
	// End ends the source body: the worker flushes its encoders and ends
	// its renditions body.
	End()
	// Recv returns the next frame of the worker's renditions body: io.EOF
	// when it ended cleanly after End, another error when the worker
	// failed, stopped early or the assignment was closed.
	Recv() (nodeproto.LiveFrame, error)
	// Close drops the assignment and frees the worker's slot.
	Close()
}

// failoverWait bounds how long a job that ended waits for its remote
// worker to flush its renditions.
const failoverWait = 10 * time.Second

// outPos is where a rung's output stands: its latest access unit's PTS
// and DTS (90 kHz).
type outPos struct{ pts, dts int64 }

// anchor90k is the keyframe grid's anchor in 90 kHz ticks.
func (j *job) anchor90k() int64 {
	return j.anchor * 90000 / int64(j.tracks[j.vIdx].ClockRate)
}

// sourceHeader is the remote source body's header.
func (j *job) sourceHeader() nodeproto.LiveSource {
	h := nodeproto.LiveSource{
		Stream: j.id, Video: j.vIdx, Ladder: j.ladder.String(), Preset: j.t.cfg.Preset,
		SegmentMillis: j.t.cfg.SegmentDuration.Milliseconds(), KeyframeAnchor: j.anchor90k(),
	}
	for _, tr := range j.tracks {
		h.Tracks = append(h.Tracks, nodeproto.LiveTrackOf(tr))
	}
	return h
}

// startRemote hands the ladder to rl from the current GOP on. Called with
// j.mu held, once the anchor is known.
func (j *job) startRemote(rl RemoteLadder) {
	j.remote = rl
	from := j.replayFrom()
	// The worker's lag is counted from now (the newest source frame), so
	// that a long replay does not count against it.
	start := j.anchor90k()
	if len(from) > 0 {
		start = from[len(from)-1].PTS * 90000 / int64(j.tracks[j.vIdx].ClockRate)
	}
	j.remoteOut = &outPos{pts: start}
	rl.Start(j.sourceHeader())
	j.log.Info("transcoding on a remote worker", "worker", rl.Worker(), "ladder", j.ladder.For(j.tracks[j.vIdx].Height).String())
	j.frames.Add(1)
	go j.readRemote(rl)
	for _, au := range from {
		if !rl.Send(au) {
			j.remoteFailed(rl, errors.New("the worker could not take the current GOP"))
			return
		}
	}
}

// sendRemote sends a source video access unit to the remote ladder, and
// replaces a worker that fell behind: source frames went in for more than
// two segments (and a margin for the encoders' delay) past its latest
// output.
func (j *job) sendRemote(au *media.AccessUnit) {
	rl := j.remote
	if !rl.Send(au) {
		j.remoteFailed(rl, errors.New("the worker stopped taking the source"))
		return
	}
	pts := au.PTS * 90000 / int64(j.tracks[j.vIdx].ClockRate)
	last := j.remoteOut.pts
	slack := (2*j.t.cfg.SegmentDuration + 2*time.Second).Microseconds() * 9 / 100
	if pts-last > slack {
		j.remoteFailed(rl, fmt.Errorf("the worker fell behind: no output for %s of source", media.Duration(pts-last, 90000)))
	}
}

// readRemote publishes what the worker rl sends back, until its body
// ends. It runs beside the subscriber's goroutine: everything it touches
// is under j.mu.
func (j *job) readRemote(rl RemoteLadder) {
	defer j.frames.Done()
	var rungs []ffmpeg.Rung
	for {
		f, err := rl.Recv()
		j.mu.Lock()
		if j.remote != rl { // replaced, or the job ended
			j.mu.Unlock()
			if err == nil {
				continue // drain until the assignment ends
			}
			return
		}
		if err != nil {
			if !j.ending || !errors.Is(err, io.EOF) {
				j.remoteFailed(rl, err)
			}
			j.mu.Unlock()
			return
		}
		switch {
		case f.Renditions != nil:
			now := make([]ffmpeg.Rung, len(f.Renditions.Rungs))
			want := j.ladder.For(j.tracks[j.vIdx].Height)
			for i, r := range f.Renditions.Rungs {
				now[i] = ffmpeg.Rung{Name: r.Name, Width: r.Width, Height: r.Height, Bitrate: r.Bitrate}
				if !slices.ContainsFunc(want, func(g media.Rung) bool { return g.Name() == r.Name && r.Height >= 2 && r.Height <= g.Height }) {
					// A worker publishes only the rungs it was asked for,
					// at their heights or below (a source that shrank caps
					// them; transcode/remote checks the exact sizes).
					j.remoteFailed(rl, fmt.Errorf("the worker sent rung %q (%dp), not one of the ladder's", r.Name, r.Height))
					j.mu.Unlock()
					return
				}
			}
			if rungs != nil && !slices.Equal(now, rungs) {
				// The source changed size: the rungs publish again.
				j.closePubs()
			}
			rungs = now
			names := make([]string, len(now))
			for i, r := range now {
				names[i] = r.Name
			}
			j.t.setRungs(j.id, j.gen, names)
		case f.AU != nil && f.AU.Track < len(rungs):
			r := rungs[f.AU.Track]
			f.AU.Track = 0 // the rung's video is its publication's track 0
			j.emitRung(r, f.AU)
			if f.AU.PTS > j.remoteOut.pts {
				j.remoteOut.pts = f.AU.PTS
			}
		}
		j.mu.Unlock()
	}
}

// remoteFailed replaces the worker rl, which died, stopped or fell
// behind: another worker, or this node's CPU, encodes from the last
// source keyframe on the same keyframe grid, and each rung goes on from
// its first keyframe after what rl published (emitRung), so no segment
// is missing and the rungs stay aligned. Called with j.mu held.
func (j *job) remoteFailed(rl RemoteLadder, err error) {
	if j.remote != rl {
		return
	}
	rl.Close()
	j.remote, j.remoteOut = nil, nil
	j.failedWorkers = append(j.failedWorkers, rl.Worker())
	j.resume = map[string]outPos{}
	for name, p := range j.lastOut {
		j.resume[name] = p
	}
	if j.ending {
		return
	}
	if next, ok := j.t.reserve(j.id, j.failedWorkers); ok {
		j.log.Warn("a remote worker failed; another takes over from the last source keyframe", "worker", rl.Worker(), "next", next.Worker(), "err", err)
		j.t.failovers.WithLabelValues("worker").Inc()
		j.t.metricsChanged()
		j.startRemote(next)
		return
	}
	j.log.Warn("a remote worker failed and no other has room; this node's CPU takes over from the last source keyframe", "worker", rl.Worker(), "err", err)
	j.t.failovers.WithLabelValues("cpu").Inc()
	j.t.metricsChanged()
	j.cpuOnly = true
	j.openPipe()
	j.replay()
}

// keyFloor is the earliest of the rungs' latest published keyframes (90
// kHz), ok false before any.
func (j *job) keyFloor() (int64, bool) {
	var floor int64
	ok := false
	for _, k := range j.lastKey {
		if !ok || k < floor {
			floor, ok = k, true
		}
	}
	return floor, ok
}

// replayFrom is the source video a replacement encodes first: from the
// latest source keyframe at or before every rung's latest keyframe (the
// whole history when it does not reach that far).
func (j *job) replayFrom() []*media.AccessUnit {
	floor, ok := j.keyFloor()
	if !ok {
		return j.gop
	}
	rate := int64(j.tracks[j.vIdx].ClockRate)
	start := 0
	for i, au := range j.gop {
		if au.Keyframe && au.PTS*90000/rate <= floor {
			start = i
		}
	}
	return j.gop[start:]
}

// trimGOP drops the source history before replayFrom's start, and bounds
// it by maxGOP (a replacement then starts later, after a freeze).
func (j *job) trimGOP() {
	from := j.replayFrom()
	if len(j.gop) >= maxGOP {
		from = nil
	}
	cut := len(j.gop) - len(from)
	if cut > 0 {
		clear(j.gop[:cut])
		j.gop = append(j.gop[:0], j.gop[cut:]...)
	}
}

// endRemote ends the remote ladder with the source: the worker flushes,
// and the job waits (at most failoverWait) for the rest of its output.
func (j *job) endRemote() {
	j.mu.Lock()
	j.ending = true
	rl := j.remote
	if rl != nil {
		rl.End()
	}
	j.mu.Unlock()
	done := make(chan struct{})
	go func() {
		j.frames.Wait()
		close(done)
	}()
	t := time.NewTimer(failoverWait)
	defer t.Stop()
	select {
	case <-done:
	case <-t.C:
		j.log.Warn("the remote worker did not end its renditions in time")
	}
	j.mu.Lock()
	if j.remote != nil {
		j.remote.Close()
		j.remote = nil
	}
	j.mu.Unlock()
	<-done
}

// restartRemote hands a reconnected source (new tracks, a new timeline)
// to a remote worker afresh: the old assignment ends, the grid is anchored
// again at the new connection's first video access unit. With no worker
// free, a prefer job encodes here and an only job serves the source as it
// came. Called with j.mu held.
func (j *job) restartRemote() {
	if rl := j.remote; rl != nil {
		j.remote = nil
		rl.Close()
	}
	j.remoteOut, j.haveAnchor, j.failedWorkers = nil, false, nil
	clear(j.lastOut)
	clear(j.lastKey)
	if j.pending != nil {
		return
	}
	if rl, ok := j.t.reserve(j.id, nil); ok {
		j.pending = rl
		return
	}
	if j.t.cfg.Remote == RemoteOnly {
		j.t.setProblem(j.id, j.gen, "no remote worker has room for the ladder: the source is served as it came")
		j.copy = true
	}
}
