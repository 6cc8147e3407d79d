package transcode

import (
	"context"
	"errors"
	"log/slog"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// job transcodes one source publication.
type job struct {
	t   *Transcoder
	id  string
	gen uint64 // its claim's generation
	// cpuOnly is set once the hardware failed for this job: it decodes,
	// scales and encodes on the CPU from then on.
	cpuOnly bool
	log     *slog.Logger
	ladder  media.Ladder

	tracks []media.Track
	vIdx   int
	aIdx   int
	// noVideo: the problem set is that the connection had no video (a
	// reconnect with video clears it).
	noVideo bool
	pipe    *ffmpeg.Pipeline
	copy    bool // forward the source unchanged (no video, or the ladder failed)
	// unplayable says why browsers cannot decode the source video ("":
	// they can); such a source is never forwarded unchanged.
	unplayable string
	broken     bool // the encoders failed: stay in copy mode after reconnects
	// gop holds the source video since its last keyframe, so that a
	// pipeline that replaces a failed one starts where it failed.
	gop []*media.AccessUnit

	// dropped is how many source access units the hub had dropped for this
	// job when last checked; behindLog rate-limits the warning.
	dropped   uint64
	behindLog *logx.Limiter

	// recentAudio is the source's latest audio (about maxAudioBacklog):
	// a rung published when its encoder's first keyframe comes out (the
	// encoder's delay after the source) gets the audio from that
	// keyframe's time on, so its audio starts with its video.
	recentAudio []*media.AccessUnit

	// srcZero is the wall-clock time (AccessUnit.NTP) of media time 0 of
	// the source's timeline, which the rungs keep: a rung's frame gets the
	// time of the source frame at its DTS, so every variant gives an
	// instant the same time. Zero until the source had one.
	srcZero time.Time

	pubs map[string]*stream.Publisher // rendition -> publisher
	// last is the latest publisher of every rendition this job published,
	// to end them all when the job ends.
	last map[string]*stream.Publisher

	// mu guards the job's state when a remote worker carries the ladder:
	// its renditions are published from a goroutine of their own
	// (readRemote) beside the subscriber's.
	mu sync.Mutex
	// remoteJob: the ladder was handed to remote workers. anchor (the
	// source video's clock) is the keyframe grid's origin, the PTS of the
	// first source video access unit of the connection, so that whoever
	// takes over keys at the same instants.
	remoteJob  bool
	anchor     int64
	haveAnchor bool
	// pending is the remote worker reserved for this job, started once the
	// anchor is known; remote is the one carrying the ladder now, and
	// remoteOut where its output stands.
	pending       RemoteLadder
	remote        RemoteLadder
	remoteOut     *outPos
	failedWorkers []string
	// lastOut is where each rung's published output stands; resume, after
	// a failover, makes a rung go on only from its replacement's first
	// keyframe past it.
	lastOut map[string]outPos
	resume  map[string]outPos
	// lastKey is the PTS of each rung's latest published keyframe: a
	// replacement starts from a source keyframe at or before the
	// earliest of them, so that it re-encodes the segment its
	// predecessor was in.
	lastKey map[string]int64
	ending  bool
	frames  sync.WaitGroup // readRemote goroutines
}

func (j *job) run(ctx context.Context, sub *stream.Subscriber) {
	defer sub.Close()
	defer j.t.setRungs(j.id, j.gen, nil)
	j.t.setProblem(j.id, j.gen, "") // a new broadcast starts clean
	j.pubs = map[string]*stream.Publisher{}
	j.last = map[string]*stream.Publisher{}
	j.lastOut = map[string]outPos{}
	j.lastKey = map[string]int64{}
	defer j.endAll()
	defer func() {
		if j.pending != nil {
			j.pending.Close()
			j.pending = nil
		}
	}()
	_ = sub.Each(ctx, func(tracks []media.Track, restart bool) {
		j.mu.Lock()
		defer j.mu.Unlock()
		j.start(tracks, restart)
	}, func(au *media.AccessUnit) {
		j.mu.Lock()
		defer j.mu.Unlock()
		if au.Keyframe && au.Track == j.vIdx {
			j.checkBehind(sub.Dropped())
		}
		j.handle(au)
	}) // ends with the source (or ctx)
	if j.remoteJob {
		j.endRemote()
	}
	j.mu.Lock()
	defer j.mu.Unlock()
	j.flush()
	j.closePipe()
}

// start sets up the pipeline for a (re)started source. After a reconnect the
// rung publishers reconnect too, so the packager marks a discontinuity.
func (j *job) start(tracks []media.Track, restart bool) {
	if restart {
		j.flush()
		j.closePipe()
		clear(j.gop) // the old connection's frames must not be replayed
		j.gop = j.gop[:0]
		clear(j.recentAudio)
		j.recentAudio = j.recentAudio[:0]
		j.copy = j.broken
		j.closePubs() // the hub waits for the reconnect that emit makes
		if j.remoteJob {
			j.restartRemote()
		}
	}
	j.tracks, j.vIdx, j.aIdx = tracks, -1, -1
	for i, tr := range tracks {
		switch {
		case tr.IsVideo() && j.vIdx < 0:
			j.vIdx = i
		case tr.Codec == media.CodecAAC && j.aIdx < 0:
			j.aIdx = i
		}
	}
	j.unplayable = ""
	if j.vIdx >= 0 {
		j.unplayable = media.Unplayable(tracks[j.vIdx])
	}
	if j.vIdx < 0 {
		j.t.setProblem(j.id, j.gen, "no H.264 or H.265 video in the stream: nothing to transcode, the source is served as it came")
		j.copy, j.noVideo = true, true
		return
	}
	if j.noVideo {
		j.noVideo = false
		if !j.broken {
			j.t.setProblem(j.id, j.gen, "")
		}
	}
	if j.copy || j.pending != nil {
		return // a remote worker starts with the first video access unit
	}
	j.openPipe()
}

func (j *job) openPipe() {
	src := j.tracks[j.vIdx]
	ladder := j.ladder.For(src.Height)
	rungs := make([]ffmpeg.Rung, len(ladder))
	for i, r := range ladder {
		rungs[i] = ffmpeg.Rung{Name: r.Name(), Height: r.Height, Bitrate: r.Bitrate}
	}
	cfg := j.t.accel.PipelineConfig(j.t.cfg.Preset, j.t.cfg.SegmentDuration, j.t.log)
	if j.remoteJob && j.haveAnchor { // on the remote workers' grid
		cfg.Anchored, cfg.KeyframeAnchor = true, j.anchor90k()
	}
	if j.cpuOnly { // after a hardware failure
		cfg.Backend, cfg.GPU = ffmpeg.BackendSoftware, nil
	}
	p, err := ffmpeg.New(cfg, src, rungs)
	if err != nil {
		j.fail(err)
		return
	}
	j.pipe = p
	names := make([]string, len(rungs))
	for i, r := range rungs {
		names[i] = r.Name
	}
	j.t.setRungs(j.id, j.gen, names)
	gpu := ""
	if cfg.GPU != nil && cfg.GPU.Decodes(src.Codec) {
		gpu = cfg.GPU.Name
	}
	j.log.Info("transcoding started", "backend", cfg.Backend, "gpu", gpu, "ladder", ladder.String(), "source", src.Codec)
}

// fail handles a pipeline error: a pipeline using hardware (a GPU that
// decodes and scales, a hardware encoder) falls back to the CPU, replaying
// the current GOP; the CPU falls back to forwarding the source unchanged.
func (j *job) fail(err error) {
	j.closePipe()
	if !j.cpuOnly && (j.t.accel.Backend != ffmpeg.BackendSoftware || len(j.t.accel.GPUs) > 0) {
		j.log.Error("hardware transcoding failed; falling back to the CPU (x264)", "backend", j.t.accel.Backend,
			"decode", j.t.accel.Decode(), "err", err)
		j.t.fallbacks.WithLabelValues(ffmpeg.BackendSoftware).Inc()
		j.cpuOnly = true
		j.closePubs() // new encoders: the rungs continue after a discontinuity
		j.openPipe()
		j.replay()
		return
	}
	j.t.setRungs(j.id, j.gen, nil)
	j.log.Error("transcoding failed; serving the source as it came", "err", err)
	j.t.fallbacks.WithLabelValues(CopyRendition).Inc()
	if j.unplayable != "" {
		j.t.setProblem(j.id, j.gen, "transcoding failed ("+err.Error()+"), and the source is "+j.unplayable+", so nothing is served")
	} else {
		j.t.setProblem(j.id, j.gen, "transcoding failed, the source is served as it came: "+err.Error())
	}
	// The rungs end now (ENDLIST) rather than freeze as "live".
	j.endAll()
	j.copy, j.broken = true, true
}

// checkBehind reports a ladder that cannot keep up with live: the hub drops
// the source for it until the next keyframe, so its renditions skip.
func (j *job) checkBehind(dropped uint64) {
	if dropped <= j.dropped {
		return
	}
	j.t.behind.Add(float64(dropped - j.dropped))
	j.t.metricsChanged()
	j.dropped = dropped
	if j.behindLog == nil {
		j.behindLog = logx.NewLimiter(30 * time.Second)
	}
	if ok, _ := j.behindLog.Allow(); ok {
		j.log.Warn("transcoding is falling behind live: source frames were dropped; use a faster preset, a smaller ladder or a GPU",
			"backend", j.pipeBackend(), "dropped_total", dropped)
	}
}

// maxGOP bounds the source video kept for a replay (10 s at 60 fps).
const maxGOP = 600

// replay feeds the current GOP to a pipeline that replaced a failed one.
func (j *job) replay() {
	for _, au := range j.replayFrom() {
		if j.pipe == nil {
			return
		}
		if err := j.pipe.Push(au, j.emit); err != nil {
			j.fail(err)
			return
		}
	}
}

// pipeBackend names the encoder the pipeline uses now.
func (j *job) pipeBackend() string {
	if j.pipe != nil {
		return j.pipe.Backend()
	}
	return ""
}

func (j *job) closePipe() {
	if j.pipe != nil {
		j.pipe.Close()
		j.pipe = nil
	}
}

func (j *job) handle(au *media.AccessUnit) {
	if j.copy {
		j.forwardCopy(au)
		return
	}
	switch au.Track {
	case j.vIdx:
		if !au.NTP.IsZero() {
			j.srcZero = au.NTP.Add(-media.Duration(au.DTS, j.tracks[j.vIdx].ClockRate))
		}
		switch {
		case j.remoteJob && au.Keyframe:
			j.trimGOP() // back to the rungs' latest keyframe
		case au.Keyframe || len(j.gop) >= maxGOP:
			clear(j.gop)
			j.gop = j.gop[:0]
		}
		j.gop = append(j.gop, au)
		if !j.haveAnchor {
			j.anchor, j.haveAnchor = au.PTS, true
			if rl := j.pending; rl != nil {
				j.pending = nil
				j.startRemote(rl) // sends the GOP, this access unit included
				return
			}
		}
		if j.remote != nil {
			j.sendRemote(au)
			return
		}
		if j.pipe == nil {
			return
		}
		if err := j.pipe.Push(au, j.emit); err != nil {
			j.fail(err)
		}
	case j.aIdx:
		// The source's audio rides along with every rung, unchanged.
		out := *au
		out.Track = 1
		for _, p := range j.pubs {
			p.Write(&out)
		}
		j.keepAudio(&out)
	}
}

// maxAudioBacklog bounds the audio kept for rungs that start late: more
// than any encoder's delay.
const maxAudioBacklog = 5 * time.Second

// maxAudioKept bounds the frames kept however their timestamps go (AAC at
// 96 kHz: 94 frames a second).
const maxAudioKept = int(maxAudioBacklog/time.Second) * 100

// keepAudio adds au to the recent audio, dropping what is older than
// maxAudioBacklog. A step back of the audio clock starts it over: what
// was kept is ahead of it (and, trimmed by age from the newest frame,
// would be kept until the clock came back to it).
func (j *job) keepAudio(au *media.AccessUnit) {
	rate := j.tracks[j.aIdx].ClockRate
	if n := len(j.recentAudio); n > 0 && au.PTS < j.recentAudio[n-1].PTS {
		clear(j.recentAudio)
		j.recentAudio = j.recentAudio[:0]
	}
	j.recentAudio = append(j.recentAudio, au)
	cut := max(len(j.recentAudio)-maxAudioKept, 0)
	for cut < len(j.recentAudio) && media.Duration(au.PTS-j.recentAudio[cut].PTS, rate) > maxAudioBacklog {
		cut++
	}
	if cut > 0 {
		clear(j.recentAudio[:cut])
		j.recentAudio = j.recentAudio[cut:]
	}
}

// writeRecentAudio sends a newly published rung the source audio from its
// first keyframe's time (90 kHz) on.
func (j *job) writeRecentAudio(p *stream.Publisher, keyPTS int64) {
	if j.aIdx < 0 {
		return
	}
	from := keyPTS * int64(j.tracks[j.aIdx].ClockRate) / 90000
	for _, au := range j.recentAudio {
		if au.PTS >= from {
			p.Write(au)
		}
	}
}

func (j *job) flush() {
	if j.pipe != nil {
		if err := j.pipe.Flush(j.emit); err != nil {
			j.log.Warn("flushing the encoders", "err", err)
		}
	}
}

// emit publishes an encoded access unit of rung i, publishing the rung when
// its first keyframe (which carries SPS and PPS) arrives.
func (j *job) emit(i int, au *media.AccessUnit) {
	rungs := j.pipe.OutputRungs()
	if i >= len(rungs) {
		return
	}
	j.emitRung(rungs[i], au)
}

// emitRung publishes an encoded access unit of rung r (this node's
// pipeline's or a remote worker's). After a failover a rung goes on from
// its replacement's first keyframe past what it published, in the same
// publication: the segment the failed encoder was in ends at that
// keyframe, none is missing, and the keyframes stay on the grid.
func (j *job) emitRung(r ffmpeg.Rung, au *media.AccessUnit) {
	name := r.Name
	if from, ok := j.resume[name]; ok {
		if !au.Keyframe || au.PTS <= from.pts || au.DTS <= from.dts {
			return
		}
		delete(j.resume, name)
	}
	j.lastOut[name] = outPos{au.PTS, au.DTS}
	if au.Keyframe {
		j.lastKey[name] = au.PTS
	}
	if au.NTP.IsZero() && !j.srcZero.IsZero() {
		au.NTP = j.srcZero.Add(media.Duration(au.DTS, j.tracks[j.vIdx].ClockRate))
	}
	p := j.pubs[name]
	if p == nil {
		if !au.Keyframe {
			return
		}
		tracks := []media.Track{r.Track(au)}
		if j.aIdx >= 0 {
			tracks = append(tracks, j.tracks[j.aIdx])
		}
		var err error
		if p, err = j.publish(name, tracks); err != nil {
			return
		}
		p.Write(au)
		j.writeRecentAudio(p, au.PTS)
		return
	}
	p.Write(au)
}

// forwardCopy forwards the source unchanged as the CopyRendition, unless
// browsers could not play it (then nothing is served, and Problem says
// why).
func (j *job) forwardCopy(au *media.AccessUnit) {
	p := j.pubs[CopyRendition]
	if p == nil {
		if j.unplayable != "" {
			return // Problem says why (see fail)
		}
		var err error
		if p, err = j.publish(CopyRendition, j.tracks); err != nil {
			return
		}
	}
	p.Write(au)
}

func (j *job) publish(name string, tracks []media.Track) (*stream.Publisher, error) {
	key := media.StreamKey{Name: j.id, Rendition: name}
	p, err := j.t.hub.Publish(key, tracks)
	if err != nil {
		if !errors.Is(err, stream.ErrClosed) {
			j.log.Error("publishing a rendition", "rendition", name, "err", err)
		}
		return nil, err
	}
	j.pubs[name] = p
	j.last[name] = p
	return p, nil
}

// closePubs closes the rung publishers: the next access unit of each
// publishes it again (the hub waits for that reconnect), after a
// discontinuity.
func (j *job) closePubs() {
	for name, p := range j.pubs {
		p.Close()
		delete(j.pubs, name)
	}
	clear(j.resume)
}

// endAll ends every rendition this job published at once (no reconnect
// grace: the source already had its own).
func (j *job) endAll() {
	for name, p := range j.pubs {
		p.Close()
		delete(j.pubs, name)
	}
	for name, p := range j.last {
		p.End() // only if no newer publisher (another job of the same id) took over
		delete(j.last, name)
	}
}
