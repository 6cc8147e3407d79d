package packager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
	"github.com/shoal-video/shoal/packager/live"
	"github.com/shoal-video/shoal/packager/playlist"
)

// rendition packages one publication: its first video track into the
// rendition's directory and, when it owns the stream's audio group, its
// first audio track into AudioDir.
type rendition struct {
	p    *Packager
	st   *streamState
	name string
	log  *slog.Logger
	warn *logx.Limiter

	// prefix starts every file name of this run of the rendition: a
	// rendition that comes back within a session never rewrites a file.
	prefix string

	tracks     []media.Track
	vIdx, aIdx int // indexes into tracks, -1 when absent
	video      *trackOut
	audio      *trackOut

	// The output timeline: input time + offset. rebase is set at the start
	// and after a reconnect; the first accepted access unit then fixes the
	// offset so that the timeline continues where it stopped (end).
	offset  time.Duration
	rebase  bool
	end     time.Duration
	started bool            // a video keyframe was seen since the rebase
	cuts    []time.Duration // video cut instants the audio has not reached yet
	// audioQ is the audio held until the video reaches its time (videoAt,
	// the newest video sample's output time).
	audioQ  []*media.AccessUnit
	videoAt time.Duration
	// forcedCuts: a segment was cut between keyframes (logged once).
	forcedCuts bool
	// segments is how many segments it wrote (logged at the end).
	segments int
	// unplayable, when set, is why this publication is not packaged: its
	// video is of a kind no browser decodes (media.Unplayable).
	unplayable string
}

func (p *Packager) runRendition(ctx context.Context, sub *stream.Subscriber) {
	defer sub.Close()
	key := sub.Key()
	log := p.log.With("stream", key.Name, "rendition", key.Rendition)
	st, err := p.join(key.Name)
	if errors.Is(err, errRemoved) {
		log.Debug("not packaging a deleted stream")
		return
	}
	if err != nil {
		p.reportError(log, "starting HLS output", err)
		return
	}
	defer p.leave(st)
	// A rendition of the same name still finishing (a transcoder replacing
	// its encoders) hands its playlists over first.
	done := make(chan struct{})
	if prev := st.running(key.Rendition, done); prev != nil {
		<-prev
	}
	defer close(done)
	r := &rendition{p: p, st: st, name: key.Rendition, log: log, warn: logx.NewLimiter(5 * time.Second), vIdx: -1, aIdx: -1,
		prefix: st.session + "-" + strconv.Itoa(st.nextRun())}
	log.Info("packaging started", "files", r.prefix)
	_ = sub.Each(ctx, r.setTracks, r.handle) // ends with the publication (or ctx)
	r.finish()
	log.Info("packaging finished", "segments", r.segments)
}

func (r *rendition) segmentCount() int {
	if r.video != nil {
		return int(r.video.seq)
	}
	if r.audio != nil {
		return int(r.audio.seq)
	}
	return 0
}

func (r *rendition) warnf(msg string, args ...any) {
	if ok, n := r.warn.Allow(); ok {
		r.log.Warn(msg, append(args, "suppressed_since_last", n)...)
	}
}

func (r *rendition) setTracks(tracks []media.Track, restart bool) {
	if restart {
		r.flushAll()
		if r.video != nil {
			r.video.restart()
			r.video.publishPending()
		}
		if r.audio != nil {
			r.audio.restart()
			r.audio.publishPending()
		}
		r.log.Info("publisher reconnected: continuing after a discontinuity")
	}
	if r.unplayable != "" {
		return // ended for good (below); a new publication starts afresh
	}
	for _, t := range tracks {
		if why := media.Unplayable(t); why != "" && t.IsVideo() {
			r.unplayable = why
			msg := "the source is " + why + " and no transcoder took it: nothing is served; " +
				"set the encoder to 8-bit 4:2:0 (x264: profile high, yuv420p), or free a transcoder"
			r.p.setProblem(r.st.id, msg)
			r.log.Warn("not packaging a publication browsers cannot play", "reason", why)
			if restart {
				// A reconnect switched to such video: what was packaged
				// ends, and the audio group goes to another rendition.
				r.finish()
			}
			r.video, r.audio = nil, nil
			return
		}
	}
	if r.name == media.RenditionSource {
		r.p.setProblem(r.st.id, "")
	}
	r.tracks = tracks
	r.vIdx, r.aIdx = -1, -1
	for i, t := range tracks {
		switch {
		case t.IsVideo() && r.vIdx < 0:
			r.vIdx = i
		case t.Codec == media.CodecAAC && r.aIdx < 0:
			r.aIdx = i
		}
	}
	if r.vIdx >= 0 {
		t := tracks[r.vIdx]
		if r.video == nil {
			if r.video = r.st.resumeTrack(r.name, r); r.video != nil {
				r.video.setTrack(t)
				r.end = media.Duration(r.video.endTicks, r.video.track.ClockRate)
				r.log.Info("continuing the rendition's playlists after a discontinuity")
			} else {
				r.video = r.newTrackOut(filepath.Join(r.st.dir, r.name), t)
			}
		} else {
			r.video.setTrack(t)
		}
	}
	if r.aIdx >= 0 {
		if r.audio != nil {
			r.audio.setTrack(tracks[r.aIdx])
		} else {
			r.audio = r.st.claimAudio(r, tracks[r.aIdx])
		}
	}
	r.rebase, r.started, r.cuts = true, false, nil
}

func (r *rendition) newTrackOut(dir string, t media.Track) *trackOut {
	out := &trackOut{r: r, dir: dir, key: r.st.id + "/" + filepath.Base(dir), track: t, isAudio: !t.IsVideo(), segStart: -1}
	if res, ok := r.st.takeResumed(dir); ok {
		out.rec.resumeFrom(res)
	}
	out.makeDir()
	return out
}

// makeDir makes the track's directory if it is not made yet (a full disk
// may refuse it when the track starts) and reports whether it exists.
func (t *trackOut) makeDir() bool {
	if t.dirMade {
		return true
	}
	if t.dirErr = t.r.p.fs.mkdirAll(t.dir); t.dirErr != nil {
		t.r.p.reportError(t.r.log, "creating the rendition directory", t.dirErr)
		return false
	}
	t.dirMade = true
	return true
}

// timeline maps an input timestamp of track i to the output timeline.
func (r *rendition) timeline(i int, ticks int64) time.Duration {
	return media.Duration(ticks, r.tracks[i].ClockRate) + r.offset
}

func (r *rendition) handle(au *media.AccessUnit) {
	if r.unplayable != "" {
		return
	}
	switch {
	case au.Track == r.vIdx:
		r.handleVideo(au)
	case au.Track == r.aIdx:
		if r.audio == nil {
			// The audio group's owner may have ended: take it over.
			if r.st.audioOwned.Load() {
				return
			}
			if r.audio = r.st.claimAudio(r, r.tracks[r.aIdx]); r.audio == nil {
				return
			}
		}
		if r.vIdx >= 0 {
			r.queueAudio(au)
			return
		}
		r.handleAudio(au)
	}
}

// Audio waits for the video of the same instant: a transcoded rendition's
// video comes out of its encoder later than the source audio riding with
// it, and the audio must be cut where the video is. maxAudioAhead bounds
// the wait (video that stalls).
const maxAudioAhead = 2 * time.Second

// maxEarlyAudio bounds the audio held before the first video keyframe
// (about 5 s of AAC).
const maxEarlyAudio = 256

// queueAudio holds an audio access unit until the video reached its time.
func (r *rendition) queueAudio(au *media.AccessUnit) {
	if !r.started || r.rebase {
		// Audio starts with the first video keyframe. What comes before
		// it (a muxer that sends a frame's audio first, a loaded machine)
		// is held: what is not older than the keyframe is kept then.
		if len(r.audioQ) >= maxEarlyAudio {
			r.audioQ[0] = nil
			r.audioQ = r.audioQ[1:]
		}
		r.audioQ = append(r.audioQ, au)
		return
	}
	r.audioQ = append(r.audioQ, au)
	r.drainAudio(r.videoAt)
	for len(r.audioQ) > 0 && r.timeline(r.aIdx, au.DTS)-r.timeline(r.aIdx, r.audioQ[0].DTS) > maxAudioAhead {
		r.handleAudio(r.audioQ[0])
		r.audioQ = r.audioQ[1:]
	}
}

// dropAudioBefore drops the held audio older than output time at (the
// first video keyframe's).
func (r *rendition) dropAudioBefore(at time.Duration) {
	n := 0
	for n < len(r.audioQ) && r.timeline(r.aIdx, r.audioQ[n].DTS) < at {
		n++
	}
	if n > 0 {
		clear(r.audioQ[:n])
		r.audioQ = r.audioQ[n:]
	}
}

// drainAudio packages the held audio up to output time upTo.
func (r *rendition) drainAudio(upTo time.Duration) {
	n := 0
	for n < len(r.audioQ) && r.timeline(r.aIdx, r.audioQ[n].DTS) <= upTo {
		r.handleAudio(r.audioQ[n])
		n++
	}
	if n > 0 {
		clear(r.audioQ[:n])
		r.audioQ = r.audioQ[n:]
	}
}

func (r *rendition) handleVideo(au *media.AccessUnit) {
	t := r.video
	prev := t.track // the parameter sets the frames so far were encoded with
	nalus, changed := t.extractParams(au.Payload)
	if len(nalus) == 0 {
		return // parameter sets only
	}
	if !r.started {
		if !au.Keyframe {
			return // wait for the first keyframe
		}
		if r.rebase {
			r.offset = r.st.timelineOffset(r.end, media.Duration(au.DTS, t.track.ClockRate))
			r.rebase = false
		}
		if r.timeline(r.vIdx, au.DTS) < r.end {
			// On the stream's timeline it overlaps what this rendition
			// already wrote (a new encoder replaying the current GOP):
			// it starts at the first keyframe after that.
			return
		}
		r.started = true
		r.dropAudioBefore(r.timeline(r.vIdx, au.DTS))
	}
	at := r.timeline(r.vIdx, au.DTS)
	if at < 0 {
		return
	}
	dts := media.Ticks(at, t.track.ClockRate)
	if changed && au.Keyframe && t.segStart >= 0 {
		r.warnf("video parameters changed: new initialization section", "width", t.track.Width, "height", t.track.Height)
	}
	cut := au.Keyframe && t.segStart >= 0 &&
		(changed || dts-t.segStart >= r.targetTicks(t) || r.st.isBoundary(t.key, at) ||
			// A segment cut between keyframes ends at the next one.
			!t.segKey && dts-t.segStart >= media.Ticks(300*time.Millisecond, t.track.ClockRate)) && t.last != nil
	if !cut && t.overlong(dts) {
		// No keyframe in time (a source passed through with long GOPs):
		// the segment is cut here anyway, so that none exceeds
		// EXT-X-TARGETDURATION, which then never changes. It starts
		// without a keyframe (players decode on from the one before).
		// After a pause, push lists the time without frames as gaps.
		cut = true
		if !r.forcedCuts && !t.pausedBefore(dts) {
			r.forcedCuts = true
			r.log.Info("the source's keyframes are further apart than the segment duration: cutting segments between keyframes",
				"segment_duration", r.p.cfg.SegmentDuration)
		}
	}
	// A segment cut for new parameter sets starts after a discontinuity
	// (newInit, below): startSegment numbers it so.
	t.initChanging = cut && changed
	// The segment a cut closes is written (its parameter sets in front of
	// its keyframe, or its initialization section) with the parameter
	// sets it was encoded with; the new ones apply from this frame on.
	next := t.track
	if changed {
		t.track = prev
	}
	pushed := t.push(sample{dts: dts, ptsOff: int32(au.PTS - au.DTS), key: au.Keyframe, payload: nalus, byteSize: sizeOf(nalus), ntp: au.NTP}, cut)
	t.track = next
	t.initChanging = false
	if !pushed {
		r.warnf("video timestamps went backwards; frame dropped", "dts", au.DTS)
		return
	}
	defer t.publishPending()
	if cut {
		if changed {
			t.newInit(false)
		}
		if r.audio != nil {
			// Audio that stopped flowing must not make this list grow forever.
			if len(r.cuts) >= 8 {
				r.cuts = r.cuts[1:]
			}
			r.cuts = append(r.cuts, at)
		}
	}
	r.videoAt = at
	r.drainAudio(at)
}

// maxSegmentTicks is the longest a video segment may grow: its EXTINF must
// round to at most the stream's target duration.
func (r *rendition) maxSegmentTicks(t *trackOut) int64 {
	return media.Ticks(time.Duration((r.st.targetDuration(0)+0.5)*float64(time.Second))-time.Millisecond, t.track.ClockRate)
}

// overlong reports whether the segment being built, with a sample at dts,
// would reach the longest a segment may be: it is cut before that sample.
func (t *trackOut) overlong(dts int64) bool {
	return t.last != nil && t.segStart >= 0 && dts+t.lastDur-t.segStart >= t.r.maxSegmentTicks(t)
}

// pausedBefore reports whether a sample at dts comes after a pause of the
// track (a camera app sent to the background, a stalled source, a lost
// frame where a segment is cut): the segment being built cannot reach it
// without growing longer than a segment may be, and at least a sample's
// duration is missing before it. push then plans the hole (planHole).
func (t *trackOut) pausedBefore(dts int64) bool {
	return t.last != nil && t.segStart >= 0 && dts-t.segStart > t.r.maxSegmentTicks(t) &&
		dts-t.last.dts >= 2*t.sampleDur()
}

// sampleDur estimates a sample's duration: the one before's, or a typical
// one before there is one.
func (t *trackOut) sampleDur() int64 {
	if t.lastDur > 0 {
		return t.lastDur
	}
	if t.isAudio {
		return 1024
	}
	return int64(t.track.ClockRate) / 30
}

// maxPause is the longest hole in a track listed as gaps: a longer one is
// a jump of the source's timestamps (not a pause), and the segment after
// it starts after a discontinuity instead of after hours of gaps.
const maxPause = time.Hour

// holePlan is how the time without samples before a sample at d is
// listed: the segment before the hole ends with its last sample (of a
// typical duration, sampleDur), or at closeAt when later (where the other
// renditions' segment ends: its parts keep their samples' durations); gap
// segments (EXT-X-GAP) start at gaps[i] and end at gaps[i+1], the last one
// at next, where the segment after the hole starts (at d, or before d to
// cover a short rest of the hole).
type holePlan struct {
	closeAt int64
	gaps    []int64
	next    int64
	jump    bool // too long: a discontinuity instead (maxPause)
}

// maxCoveredHole is the longest hole (lost frames) the segment after it
// covers instead of a gap segment being listed.
const maxCoveredHole = 250 * time.Millisecond

// planHole plans the hole before a sample at d (pausedBefore). A video
// playlist follows the segments the stream's other video playlists cut
// within the hole (their media sequence numbers), so that a rendition that
// paused alone keeps the numbers of the others; otherwise the hole is cut
// in equal gaps of at most the segment duration, or covered by the next
// segment when shorter than maxCoveredHole. (With LL-HLS, a segment that
// covers part of a hole is longer than its parts.)
func (t *trackOut) planHole(d int64) holePlan {
	rate := t.track.ClockRate
	dur := t.sampleDur()
	end := t.last.dts + dur
	p := holePlan{next: d}
	if media.Duration(d-end, rate) > maxPause {
		p.jump = true
		return p
	}
	seg := media.Ticks(t.r.p.cfg.SegmentDuration, rate)
	tol := media.Ticks(boundaryTolerance, rate)
	from := end
	if !t.isAudio {
		bounds := t.r.st.startsWithin(t.key, media.Duration(end, rate)+boundaryTolerance, media.Duration(d, rate)+boundaryTolerance)
		ok := len(bounds) > 0
		for i, b := range bounds {
			at := min(media.Ticks(b.at, rate), d)
			// How many gaps start in from..b: before the first, the
			// segment before the hole (t.seq) is one of the others'.
			var n int64
			if i == 0 {
				n = int64(b.msn) - int64(t.seq) - 1
			} else {
				n = int64(b.msn) - int64(bounds[i-1].msn)
			}
			switch {
			case i == 0 && n == 0 && at-t.segStart <= t.r.maxSegmentTicks(t):
				p.closeAt = at // the segment before the hole ends at b
			case n >= 1 && at > from && (at-from)/n <= seg+tol:
				p.gaps = append(p.gaps, split(from, at, n)...)
			default:
				ok = false
			}
			if !ok {
				break
			}
			from = at
		}
		if ok && d-from <= seg+tol {
			// The segment after the hole starts where the others' does
			// (it covers the rest of the hole), and ends where theirs
			// does.
			p.next = from
			return p
		}
		if !ok {
			p.closeAt, p.gaps, from = 0, nil, end
		}
	}
	if d-from < media.Ticks(maxCoveredHole, rate) && len(p.gaps) == 0 && from == end {
		p.next = end // a short hole (lost frames): the next segment covers it
		return p
	}
	n := max(1, (d-from-tol+seg-1)/seg)
	p.gaps = append(p.gaps, split(from, d, n)...)
	return p
}

// split returns the starts of n equal pieces of from..to.
func split(from, to, n int64) []int64 {
	out := make([]int64, n)
	for i := range n {
		out[i] = from + (to-from)*i/n
	}
	return out
}

// listGaps lists gap segments (EXT-X-GAP) starting at starts, the last one
// ending at end: the time a track had no samples. The playlist's timeline
// goes on with the stream's (its other tracks do), EXT-X-TARGETDURATION
// never changes, and players skip the time. The playlists are written
// once, with the last.
func (t *trackOut) listGaps(starts []int64, end int64) {
	if len(starts) == 0 {
		return
	}
	kind := "video"
	if t.isAudio {
		kind = "audio"
	}
	t.r.warnf(kind+" paused: the time without samples is listed as gaps (EXT-X-GAP)",
		"seconds", fmt.Sprintf("%.3f", float64(end-starts[0])/float64(t.track.ClockRate)))
	// The discontinuity, if any, comes with the sample after the hole.
	changing := t.initChanging
	t.initChanging = false
	for i, from := range starts {
		to := end
		if i+1 < len(starts) {
			to = starts[i+1]
		}
		t.segStart, t.segEnd = from, to
		t.segFailed, t.segHole = true, true
		t.batching = i+1 < len(starts)
		if !t.isAudio {
			t.startSegment(from)
		}
		t.flush(false)
	}
	t.batching = false
	t.initChanging = changing
}

func (r *rendition) targetTicks(t *trackOut) int64 {
	target := media.Ticks(r.p.cfg.SegmentDuration, t.track.ClockRate)
	return target - target/10
}

func (r *rendition) handleAudio(au *media.AccessUnit) {
	t := r.audio
	if len(au.Payload) == 0 || len(au.Payload[0]) == 0 {
		return
	}
	if r.vIdx >= 0 && !r.started {
		return // audio starts with the first video keyframe
	}
	if r.rebase { // audio-only publication
		r.offset = r.st.timelineOffset(r.end, media.Duration(au.DTS, t.track.ClockRate))
		r.rebase = false
	}
	at := r.timeline(r.aIdx, au.DTS)
	if at < 0 {
		return
	}
	dts := media.Ticks(at, t.track.ClockRate)
	if dts < t.resumeAt {
		return // the previous owner of the audio group already wrote it
	}
	cut := false
	if t.last != nil && t.segStart >= 0 {
		if r.vIdx >= 0 {
			// Cut where the video was cut, but not into a segment of a few
			// frames (audio back from a pause just before a video cut);
			// while the video stalls (audio let through without it,
			// queueAudio), every segment duration as if there were no
			// video; and never longer than a segment may be.
			due := 0
			for due < len(r.cuts) && at >= r.cuts[due] {
				due++
			}
			if due > 0 && dts-t.segStart < r.targetTicks(t)/4 {
				r.cuts, due = r.cuts[due:], 0
			}
			cut = due > 0 ||
				at-r.videoAt >= maxAudioAhead && dts-t.segStart >= r.targetTicks(t) ||
				t.overlong(dts)
		} else {
			cut = dts-t.segStart >= r.targetTicks(t)
		}
	}
	if !t.push(sample{dts: dts, key: true, payload: au.Payload[:1], byteSize: len(au.Payload[0]), ntp: au.NTP}, cut) {
		r.warnf("audio timestamps went backwards; frame dropped", "dts", au.DTS)
		return
	}
	if cut {
		// Every video cut this audio reached is done with (audio that
		// paused over several).
		n := 0
		for n < len(r.cuts) && at >= r.cuts[n] {
			n++
		}
		r.cuts = r.cuts[n:]
	}
	t.publishPending()
}

// flushAll closes the current segments and records where the timeline ends.
func (r *rendition) flushAll() {
	if r.audio != nil {
		r.drainAudio(1<<63 - 1)
	}
	r.audioQ = nil
	for _, t := range []*trackOut{r.video, r.audio} {
		if t == nil {
			continue
		}
		t.flush(true)
		if e := media.Duration(t.endTicks, t.track.ClockRate); e > r.end {
			r.end = e
		}
	}
	r.cuts = nil
}

// finish ends the rendition's playlists. The audio group ends with it only
// when no other rendition of the stream is running; otherwise one of them
// takes it over (and the last one to finish ends it, see Packager.leave).
func (r *rendition) finish() {
	r.flushAll()
	r.segments = r.segmentCount()
	// The audio group is released before the video playlist says ENDLIST,
	// so that whoever sees this rendition ended can count on another one
	// having been able to take the audio over.
	var audioEnded *trackOut
	if r.audio != nil && r.st.releaseAudio(r) {
		r.audio.ended = true
		r.audio.writePlaylists()
		audioEnded = r.audio
	}
	if r.video != nil {
		if r.p.lingers(r.st) {
			// Live a moment longer: a rendition of this name starting
			// again (new encoders) continues it without an ENDLIST
			// players would stop at.
			r.st.keepTrack(r.name, r.video, true)
		} else {
			r.video.ended = true
			r.video.writePlaylists()
			r.st.keepTrack(r.name, r.video, false)
		}
		r.video = nil // handed over: another rendition may continue it
	}
	r.st.renditionEnded(r.name, audioEnded)
}

func sizeOf(p [][]byte) int {
	n := 0
	for _, b := range p {
		n += len(b)
	}
	return n
}

// trackOut is one media playlist: its segments, init sections and the
// samples of the segment being built.
//
// Its cost per segment does not grow with the stream's age: it keeps only
// the segments the live playlist lists (and a few before, for the parts and
// the manifest), the recording is appended to, never rewritten, and the
// live playlist is rendered from that bounded list.
type trackOut struct {
	r       *rendition
	dir     string
	key     string // "<id>/<dir name>": the playlist's key in the live registry, without "/index.m3u8"
	track   media.Track
	isAudio bool

	initGen  int
	initURI  string
	nextDisc bool

	// segs are the newest segments (at most keepSegments); segs[0] has
	// media sequence firstSeq and discontinuity sequence firstDisc.
	segs      []playlist.Segment
	firstSeq  uint64
	firstDisc uint64
	seq       uint32 // the next segment's number (and media sequence)
	frag      uint32 // the next fMP4 fragment's sequence number
	pending   []sample
	last      *sample // the newest sample; its duration is known with the next one
	lastDur   int64
	segStart  int64 // dts of the first sample of the current segment, -1 when none
	endTicks  int64 // where the last flushed segment ends
	resumeAt  int64 // samples before this are already in the playlist (an audio takeover)
	ended     bool
	finished  bool

	// LL-HLS: the parts of the segment being built, their bytes (the
	// segment is their concatenation), where the current part starts, and
	// the parts still served (oldest first).
	parts     []playlist.Part
	partData  []byte
	partStart int64
	segEnd    int64 // where the last sample of the segment being built that went out ends
	// lastNTP is when the newest sample (at lastNTPDTS) was ingested.
	lastNTP    time.Time
	lastNTPDTS int64
	segKey     bool // the segment being built starts with a keyframe
	served     []playlist.Part

	rec recording
	// unpublished: a segment ended and the live registry has not seen it.
	unpublished bool
	// lastSegParts is how many parts the last segment had.
	lastSegParts int
	// handover (with resumed) orders ending a kept track against a
	// rendition continuing it (timeline.go).
	handover sync.Mutex
	resumed  bool
	// initChanging: the sample being pushed starts a segment with new
	// parameter sets (a discontinuity).
	initChanging bool
	// segsDur is the duration of segs in seconds; dvrDirty: the DVR
	// playlist has a new segment to publish.
	segsDur  float64
	dvrDirty bool
	// aligned: the first segment's numbers were taken from the stream
	// (startSegment); discSeq is the discontinuity sequence number of the
	// last segment.
	aligned bool
	discSeq uint64
	// segFailed: samples of the segment being built were dropped (its
	// initialization section could not be written): it ends as a gap.
	// segHole: it is a gap because the track paused (listGaps).
	segFailed bool
	segHole   bool
	// batching: flush leaves the playlists to the next flush (listGaps).
	batching bool
	// closeAt, when after its last sample, is where the segment being
	// flushed ends (planHole).
	closeAt int64
	// dirMade: the track's directory exists; dirErr is why not.
	dirMade bool
	dirErr  error
}

// publishPending publishes the live playlist if a segment ended since the
// last publication.
func (t *trackOut) publishPending() {
	if t != nil && t.unpublished {
		t.unpublished = false
		t.publish()
	}
}

// keepSegments is how many segments a trackOut keeps beyond the live
// window: enough for the parts still announced and a margin.
const keepSegments = 4

// partSegments is how many finished segments keep their parts in the
// playlist (about three target durations, RFC 8216bis 6.2.2), and
// servedSegments how many keep them available (a player may hold an older
// playlist).
const (
	partSegments   = 2
	servedSegments = 5
)

func (t *trackOut) setTrack(tr media.Track) {
	t.track = tr
	t.newInit(false)
}

// restart prepares the track for a new timeline after a reconnect.
func (t *trackOut) restart() {
	t.newInit(true)
	t.segStart = -1
}

// newInit makes the next segment use a new initialization section.
func (t *trackOut) newInit(discontinuity bool) {
	t.initURI = ""
	t.nextDisc = t.nextDisc || discontinuity || t.seq > 0
}

// extractParams removes parameter sets and delimiters from a video access
// unit, updating the track's parameters; changed reports a new SPS/PPS/VPS.
func (t *trackOut) extractParams(nalus [][]byte) (out [][]byte, changed bool) {
	out = nalus[:0:0]
	for _, n := range nalus {
		if len(n) == 0 {
			continue
		}
		var slot *[]byte
		switch t.track.Codec {
		case media.CodecH264:
			switch h264.NALUType(n[0] & 0x1f) {
			case h264.NALUTypeSPS:
				slot = &t.track.SPS
			case h264.NALUTypePPS:
				slot = &t.track.PPS
			case h264.NALUTypeAccessUnitDelimiter:
				continue
			}
		case media.CodecH265:
			switch h265.NALUType((n[0] >> 1) & 0x3f) {
			case h265.NALUType_VPS_NUT:
				slot = &t.track.VPS
			case h265.NALUType_SPS_NUT:
				slot = &t.track.SPS
			case h265.NALUType_PPS_NUT:
				slot = &t.track.PPS
			case h265.NALUType_AUD_NUT:
				continue
			}
		}
		if slot == nil {
			out = append(out, n)
			continue
		}
		if !bytes.Equal(*slot, n) {
			if len(*slot) > 0 {
				changed = true
			}
			*slot = bytes.Clone(n)
			if t.track.Codec == media.CodecH264 && slot == &t.track.SPS {
				var sps h264.SPS
				if err := sps.Unmarshal(n); err == nil {
					t.track.Width, t.track.Height = sps.Width(), sps.Height()
				}
			}
		}
	}
	return out, changed
}

// startSegment notes the start of a video segment at output time dts on
// the stream's timeline. The first segment of a playlist that joins a
// stream already running takes the media and discontinuity sequence
// numbers of the segment the others started at or just before it.
func (t *trackOut) startSegment(dts int64) {
	at := media.Duration(dts, t.track.ClockRate)
	st := t.r.st
	if !t.aligned {
		t.aligned = true
		span := time.Duration(st.targetDuration(0) * float64(time.Second))
		if s, ok := st.segmentAt(t.key, at, span); ok && len(t.segs) == 0 && s.msn >= uint64(t.seq) {
			t.seq, t.firstSeq = uint32(s.msn), s.msn
			t.firstDisc, t.discSeq = s.disc, s.disc
			t.nextDisc = false
		}
	}
	disc := t.discSeq
	if t.nextDisc || t.initChanging && t.seq > 0 {
		disc++
	}
	st.noteSegmentStart(t.key, uint64(t.seq), at, disc)
}

// endNTP estimates when output time end was ingested, from the newest
// sample's ingest time (zero when unknown).
func (t *trackOut) endNTP(end int64) time.Time {
	if t.lastNTP.IsZero() {
		return time.Time{}
	}
	return t.lastNTP.Add(media.Duration(end-t.lastNTPDTS, t.track.ClockRate))
}

// partTicks is the part target in the track's clock, 0 without LL-HLS.
func (t *trackOut) partTicks() int64 {
	d := t.r.p.partDuration()
	if d <= 0 {
		return 0
	}
	return media.Ticks(d, t.track.ClockRate)
}

// push adds s; with cut, the segment being built is closed before s. It
// returns false (and drops s) when s does not move forward in time. With
// LL-HLS, a part is closed before s when s would make it longer than the
// part target (judged by the previous sample's duration).
func (t *trackOut) push(s sample, cut bool) bool {
	var hole *holePlan
	if t.last != nil {
		if s.dts <= t.last.dts {
			return false
		}
		t.last.dur = s.dts - t.last.dts
		if cut && t.pausedBefore(s.dts) {
			// The segment ends with its last sample, not at s.
			plan := t.planHole(s.dts)
			hole, t.last.dur, t.closeAt = &plan, t.sampleDur(), plan.closeAt
		}
		t.lastDur = t.last.dur
		t.pending = append(t.pending, *t.last)
	}
	if cut {
		t.flush(false)
		switch {
		case hole == nil:
		case hole.jump:
			t.r.warnf("timestamps jumped forward: a discontinuity", "seconds",
				fmt.Sprintf("%.3f", float64(s.dts-t.endTicks)/float64(t.track.ClockRate)))
			t.nextDisc = true
		default:
			t.listGaps(hole.gaps, hole.next)
		}
	} else if pt := t.partTicks(); pt > 0 && len(t.pending) > 0 && s.dts+t.lastDur-t.partStart > pt {
		t.flushPart(true)
	}
	if !s.ntp.IsZero() {
		t.lastNTP, t.lastNTPDTS = s.ntp, s.dts
	}
	if t.segStart < 0 || cut {
		t.segStart, t.segKey = s.dts, s.key
		if hole != nil && !hole.jump {
			t.segStart = hole.next // it covers the rest of the hole
		}
		if !t.isAudio {
			t.startSegment(t.segStart)
		}
	}
	if len(t.pending) == 0 {
		t.partStart = s.dts
	}
	t.last = &s
	return true
}

// ensureInit writes the initialization section the next segment uses, if
// it is not written yet. It reports false when that failed.
func (t *trackOut) ensureInit() bool {
	if t.initURI != "" {
		return true
	}
	p := t.r.p
	data, err := p.format.init(t.track)
	if err != nil {
		p.reportError(t.r.log, "building the initialization section", err)
		return false
	}
	if data != nil {
		if !t.makeDir() {
			return false
		}
		name := fmt.Sprintf("init-%s-%d.mp4", t.r.prefix, t.initGen)
		t.initGen++
		if err := t.r.p.writeFile(filepath.Join(t.dir, name), data); err != nil {
			p.reportError(t.r.log, "writing the initialization section", err)
			return false
		}
		t.initURI = name
	}
	return true
}

func (t *trackOut) segmentName() string {
	return t.r.prefix + "-" + strconv.FormatUint(uint64(t.seq), 10) + t.r.p.format.ext()
}

// flushPart closes the part being built (LL-HLS): it is stored in the live
// registry and, with publish, announced.
func (t *trackOut) flushPart(publish bool) {
	// A part is never longer than the part target (RFC 8216bis 4.4.4.9):
	// when the newest sample overshot it (timestamps with jitter), it
	// starts the next part instead.
	if n := len(t.pending); n > 1 {
		last := t.pending[n-1]
		if last.dts+last.dur-t.pending[0].dts > t.partTicks() {
			t.pending = t.pending[:n-1]
			t.emitPart(false)
			t.pending = append(t.pending, last)
		}
	}
	t.emitPart(publish)
}

// emitPart is flushPart without the length check.
func (t *trackOut) emitPart(publish bool) {
	if len(t.pending) == 0 {
		return
	}
	if t.segFailed || !t.ensureInit() {
		// No part without its initialization section: the rest of the
		// segment is dropped and the segment ends as a gap.
		t.dropPending()
		return
	}
	samples := t.pending
	t.pending = nil
	p := t.r.p
	data, err := p.format.segment(t.track, t.frag, samples)
	if err != nil {
		p.reportError(t.r.log, "building a partial segment", err)
		t.pending = samples
		t.dropPending()
		return
	}
	t.frag++
	name := strings.TrimSuffix(t.segmentName(), p.format.ext()) + "-p" + strconv.Itoa(len(t.parts)) + p.format.ext()
	last := samples[len(samples)-1]
	t.segEnd = last.dts + last.dur
	dur := float64(t.segEnd-samples[0].dts) / float64(t.track.ClockRate)
	if p.live != nil {
		p.live.AddPart(t.key+"/"+name, data)
	}
	t.parts = append(t.parts, playlist.Part{URI: name, Duration: dur, Independent: samples[0].key})
	t.served = append(t.served, t.parts[len(t.parts)-1])
	t.partData = append(t.partData, data...)
	if publish {
		t.publish()
	}
}

// dropPending drops the samples of the segment being built that are not
// out yet, which makes the segment a gap.
func (t *trackOut) dropPending() {
	last := t.pending[len(t.pending)-1]
	t.segEnd = last.dts + last.dur
	t.pending = nil
	t.segFailed = true
}

// flush writes the segment being built; withLast also closes the newest
// sample, whose duration is then estimated from the one before. A segment
// that cannot be written (a full disk) is listed all the same, as a gap
// (EXT-X-GAP) with its URI and duration: the media sequence numbers go on
// as in every other rendition of the stream, and the next segment is
// written as usual once there is space again.
func (t *trackOut) flush(withLast bool) {
	if withLast && t.last != nil {
		t.last.dur = t.sampleDur()
		t.pending = append(t.pending, *t.last)
		t.last = nil
	}
	p := t.r.p
	var data []byte
	first := t.segStart
	if n := len(t.pending); n > 0 {
		t.segEnd = t.pending[n-1].dts + t.pending[n-1].dur
	}
	endTicks := t.segEnd
	if t.partTicks() > 0 {
		t.flushPart(false)
		data, t.partData = t.partData, nil
		endTicks = t.segEnd
	} else if len(t.pending) > 0 {
		if t.ensureInit() {
			var err error
			if data, err = p.format.segment(t.track, t.frag, t.pending); err != nil {
				p.reportError(t.r.log, "building a segment", err)
				data, t.segFailed = nil, true
			}
			t.frag++
		} else {
			t.segFailed = true
		}
		t.pending = nil
	}
	if t.closeAt > endTicks {
		endTicks = t.closeAt // the segment before a hole (planHole)
	}
	t.closeAt = 0
	gap, hole := t.segFailed, t.segHole
	t.segFailed, t.segHole = false, false
	parts := t.parts
	t.parts = nil
	t.lastSegParts = len(parts)
	if len(data) == 0 && !gap {
		return
	}
	t.endTicks = endTicks
	name := t.segmentName()
	if !gap && !t.makeDir() {
		gap = true
	}
	if !gap {
		if err := t.r.p.writeFile(filepath.Join(t.dir, name), data); err != nil {
			p.reportError(t.r.log, "writing a segment", err)
			gap = true
		} else {
			p.spaceBack()
		}
	}
	t.seq++
	seconds := float64(endTicks-first) / float64(t.track.ClockRate)
	seg := playlist.Segment{URI: name, Duration: seconds, Discontinuity: t.nextDisc, Init: t.initURI,
		Time: t.r.st.programTime(t.endNTP(endTicks), first, endTicks, t.track.ClockRate), Parts: parts, Gap: gap}
	t.nextDisc = false
	if seg.Discontinuity {
		t.discSeq++
	}
	t.r.st.noteEnd(media.Duration(endTicks, t.track.ClockRate))
	t.segs = append(t.segs, seg)
	t.segsDur += seconds
	// Keep the live window and a few more, and with a DVR window every
	// segment within it.
	n := 0
	for len(t.segs)-n > p.cfg.LiveWindow+keepSegments &&
		(p.cfg.DVRWindow <= 0 || t.segsDur-t.segs[n].Duration >= p.cfg.DVRWindow.Seconds()) {
		t.segsDur -= t.segs[n].Duration
		t.firstSeq++
		if t.segs[n].Discontinuity {
			t.firstDisc++
		}
		n++
	}
	if n > 0 {
		t.segs = slices.Delete(t.segs, 0, n)
	}
	t.dvrDirty = p.cfg.DVRWindow > 0
	if n := len(t.segs) - partSegments; n > 0 {
		t.segs[n-1].Parts = nil
	}
	t.dropServedParts()
	kind := "video"
	if t.isAudio {
		kind = "audio"
	}
	if gap {
		if !hole {
			p.gaps.WithLabelValues(kind).Inc()
		}
		data = nil // nothing served: the bandwidth figures leave it out
	} else {
		p.segments.WithLabelValues(kind).Inc()
	}
	target := t.r.st.targetDuration(seconds)
	t.rec.add(t, seg, target)
	if !t.batching {
		t.writeLive(target)
	}
	// Published by the caller once the next segment's init section and
	// discontinuity are known (publishPending): the preload hint must not
	// announce a part of a new timeline under the old EXT-X-MAP.
	t.unpublished = true
	if gap {
		seconds = 0
	}
	t.r.st.segmentDone(t.r.name, t.track, t.isAudio, len(data), seconds)
}

// dropServedParts forgets the parts of segments older than servedSegments.
func (t *trackOut) dropServedParts() {
	keep := map[string]bool{}
	for i := max(0, len(t.segs)-servedSegments); i < len(t.segs); i++ {
		prefix := strings.TrimSuffix(t.segs[i].URI, t.r.p.format.ext()) + "-p"
		for _, part := range t.served {
			if strings.HasPrefix(part.URI, prefix) {
				keep[part.URI] = true
			}
		}
	}
	out := t.served[:0]
	for _, part := range t.served {
		if keep[part.URI] {
			out = append(out, part)
		} else if t.r.p.live != nil {
			t.r.p.live.DropPart(t.key + "/" + part.URI)
		}
	}
	t.served = out
}

// liveMedia is the live playlist as it stands.
func (t *trackOut) liveMedia(target float64, withParts bool) playlist.Media {
	p := t.r.p
	m := playlist.Media{Kind: playlist.Live, Version: p.format.version(), TargetDuration: target,
		Segments: t.segs, FirstSeq: t.firstSeq, FirstDisc: t.firstDisc, Window: p.cfg.LiveWindow}
	if !withParts {
		segs := slices.Clone(t.segs)
		for i := range segs {
			segs[i].Parts = nil
		}
		m.Segments = segs
		return m
	}
	if pd := p.partDuration(); pd > 0 {
		m.PartTarget = pd.Seconds()
		m.Pending = t.parts
		m.NextDiscontinuity = t.nextDisc
		m.NextInit = t.initURI
		m.Hint = strings.TrimSuffix(t.segmentName(), p.format.ext()) + "-p" + strconv.Itoa(len(t.parts)) + p.format.ext()
	}
	return m
}

// writeLive writes the live playlist file (without parts: the live registry
// serves those) at a segment's end.
func (t *trackOut) writeLive(target float64) {
	if !t.dirMade {
		return // a full disk refused the directory (makeDir)
	}
	out, err := playlist.EncodeMedia(t.liveMedia(target, false))
	if err == nil {
		err = t.r.p.writeFile(filepath.Join(t.dir, "index.m3u8"), out)
	}
	if err != nil {
		t.r.p.reportError(t.r.log, "writing a playlist", err)
	}
}

// publish puts the live playlist, with its parts, in the live registry.
func (t *trackOut) publish() {
	p := t.r.p
	if p.live == nil || t.finished {
		return
	}
	target := t.r.st.targetDuration(0)
	m := t.liveMedia(target, true)
	m.Reports = t.r.st.reports(t.key, uint64(t.seq), len(t.parts), t.lastSegParts)
	out, err := playlist.EncodeMedia(m)
	if err != nil {
		p.reportError(t.r.log, "rendering a playlist", err)
		return
	}
	snap := live.Snapshot{Data: out, NextMSN: uint64(t.seq), Parts: len(t.parts),
		Target: time.Duration(target * float64(time.Second)), PartTarget: p.partDuration(),
		Served: make([]live.PartRef, len(t.served))}
	for i, part := range t.served {
		snap.Served[i] = live.PartRef{Name: part.URI, Duration: time.Duration(math.Round(part.Duration*1000)) * time.Millisecond}
	}
	if m.Hint != "" {
		snap.Hint = t.key + "/" + m.Hint
	}
	p.live.Publish(t.key+"/index.m3u8", snap)
	if t.dvrDirty {
		t.dvrDirty = false
		t.publishDVR(target)
	}
}

// dvrMedia is the DVR playlist: every segment of the last DVRWindow, with
// delta updates declared (a long playlist is reloaded without its older
// part: _HLS_skip=YES).
func (t *trackOut) dvrMedia(target float64) playlist.Media {
	p := t.r.p
	start, d := len(t.segs), 0.0
	for start > 0 && d+t.segs[start-1].Duration <= p.cfg.DVRWindow.Seconds()+0.001 {
		start--
		d += t.segs[start].Duration
	}
	disc := t.firstDisc
	for _, s := range t.segs[:start] {
		if s.Discontinuity {
			disc++
		}
	}
	segs := slices.Clone(t.segs[start:])
	for i := range segs {
		segs[i].Parts = nil
	}
	return playlist.Media{Kind: playlist.Live, Version: p.format.version(), TargetDuration: target,
		Segments: segs, FirstSeq: t.firstSeq + uint64(start), FirstDisc: disc, CanSkipUntil: 6 * target}
}

// publishDVR puts the DVR playlist (and its delta update) in the live
// registry.
func (t *trackOut) publishDVR(target float64) {
	p := t.r.p
	m := t.dvrMedia(target)
	full, err := playlist.EncodeMedia(m)
	if err != nil {
		p.reportError(t.r.log, "rendering the DVR playlist", err)
		return
	}
	m.Skip = true
	delta, err := playlist.EncodeMedia(m)
	if err != nil {
		p.reportError(t.r.log, "rendering the DVR playlist", err)
		return
	}
	p.live.Publish(t.key+"/"+DVRPlaylist, live.Snapshot{Data: full, Delta: delta, NextMSN: uint64(t.seq),
		Target: time.Duration(target * float64(time.Second))})
}

// writePlaylists finishes the playlists once the track ended: the
// recording gets ENDLIST and index.m3u8 becomes the whole recording as
// VOD; the live registry forgets the track.
func (t *trackOut) writePlaylists() {
	if !t.ended || t.finished {
		return
	}
	t.finished = true
	p := t.r.p
	if err := t.rec.finish(t); err != nil {
		p.reportError(t.r.log, "finishing the recording", err)
	}
	t.r.st.forgetPosition(t.key)
	if p.cfg.DVRWindow > 0 {
		// A DVR viewer at the end gets the whole recording, ended.
		if err := p.fs.copyFile(filepath.Join(t.dir, "index.m3u8"), filepath.Join(t.dir, DVRPlaylist)); err != nil {
			p.reportError(t.r.log, "finishing the DVR playlist", err)
		}
	}
	if p.live != nil {
		// Parts first: whoever the playlist's removal wakes finds the
		// track ended whole.
		for _, part := range t.served {
			p.live.DropPart(t.key + "/" + part.URI)
		}
		t.served = nil
		p.live.Remove(t.key + "/" + DVRPlaylist)
		p.live.Remove(t.key + "/index.m3u8")
	}
}

// recording is a track's recording.m3u8: written once, then appended to at
// every segment, so that its cost per segment stays flat however long the
// stream runs. Segments that could not be appended (a full disk) wait in
// backlog and go with the next append that succeeds: the recording has
// every segment, in order, those that could not be written as gaps.
type recording struct {
	started  bool
	target   float64 // the EXT-X-TARGETDURATION in its header
	prevInit string
	// firstSeq and firstDisc are the header's media and discontinuity
	// sequence numbers (known from the first segment, written or not).
	firstSeq, firstDisc uint64
	numbered            bool
	backlog             []playlist.Segment
	failed              bool
	// resume: the segment lines of the recording this one continues,
	// written once before its own segments (resume.go), with its target
	// duration.
	resume       []byte
	resumeTarget float64
}

// maxRecordingBacklog bounds the segments a recording holds while the disk
// is full (100 minutes of 2 s segments); past it the recording
// stops.
const maxRecordingBacklog = 3000

func (rc *recording) path(t *trackOut) string { return filepath.Join(t.dir, "recording.m3u8") }

func (rc *recording) media(t *trackOut, target float64) playlist.Media {
	return playlist.Media{Kind: playlist.Event, Version: t.r.p.format.version(), TargetDuration: target,
		FirstSeq: rc.firstSeq, FirstDisc: rc.firstDisc}
}

// add appends seg. A target duration above the header's (a segment longer
// than any before) rewrites the header line, once per raise.
func (rc *recording) add(t *trackOut, seg playlist.Segment, target float64) {
	if rc.failed {
		return
	}
	if !rc.numbered {
		// The media and discontinuity sequence numbers of its first
		// segment (a playlist that joined the stream late).
		rc.numbered = true
		rc.firstSeq, rc.firstDisc = t.firstSeq, t.firstDisc
	}
	rc.backlog = append(rc.backlog, seg)
	if t.batching {
		return // written with the next segment
	}
	err := t.dirErr // no directory yet: it waits with the segment
	if t.dirMade {
		err = rc.flush(t, target)
	}
	switch {
	case err == nil:
	case noSpace(err) && len(rc.backlog) <= maxRecordingBacklog:
		// Kept for the next append, once there is space.
		t.r.p.reportError(t.r.log, "writing the recording", err)
	default:
		// A recording with a hole would mislead: stop it and say so.
		rc.failed = true
		rc.backlog = nil
		t.r.p.reportError(t.r.log, "writing the recording (it stops here)", err)
	}
}

// flush writes the segments of the backlog; on failure the file is as it
// was and they stay in the backlog.
func (rc *recording) flush(t *trackOut, target float64) error {
	if len(rc.backlog) == 0 {
		return nil
	}
	path := rc.path(t)
	prevInit := rc.prevInit
	lines := func(dst []byte) []byte {
		for _, s := range rc.backlog {
			dst = playlist.AppendSegment(dst, s, prevInit)
			prevInit = s.Init
		}
		return dst
	}
	var err error
	target = max(target, rc.target, rc.resumeTarget)
	switch {
	case !rc.started && rc.resume != nil:
		// The recording taken over, then a discontinuity.
		rc.backlog[0].Discontinuity = true
		err = t.r.p.writeFile(path, lines(append(playlist.Header(rc.media(t, target)), rc.resume...)))
	case !rc.started:
		err = t.r.p.writeFile(path, lines(playlist.Header(rc.media(t, target))))
	case target > rc.target:
		var data []byte
		if data, err = os.ReadFile(path); err == nil {
			old, now := playlist.Header(rc.media(t, rc.target)), playlist.Header(rc.media(t, target))
			if !bytes.HasPrefix(data, old) {
				return errors.New("recording.m3u8 does not start with its header")
			}
			err = t.r.p.writeFile(path, lines(append(now, data[len(old):]...)))
		}
	default:
		err = t.r.p.appendFile(path, lines(nil))
	}
	if err != nil {
		return err
	}
	rc.started, rc.target, rc.prevInit = true, target, prevInit
	rc.backlog = rc.backlog[:0]
	rc.resume = nil
	return nil
}

// finish ends the recording and makes index.m3u8 the whole of it as VOD.
// Segments still in the backlog go first.
func (rc *recording) finish(t *trackOut) error {
	if !rc.failed {
		if err := rc.flush(t, t.r.st.targetDuration(0)); err != nil {
			return err
		}
	}
	if !rc.started && rc.resume != nil && !rc.failed {
		// Nothing recorded in this session: the recording taken over,
		// as it was, is the whole of it.
		data := append(playlist.Header(rc.media(t, max(rc.target, rc.resumeTarget))), rc.resume...)
		if err := t.r.p.writeFile(rc.path(t), data); err != nil {
			return err
		}
		rc.started, rc.resume = true, nil
	}
	if !rc.started {
		// Nothing was recorded: an empty VOD playlist says so.
		out, err := playlist.EncodeMedia(playlist.Media{Kind: playlist.VOD, Version: t.r.p.format.version(),
			TargetDuration: t.r.st.targetDuration(0), Ended: true})
		if err == nil {
			err = t.r.p.writeFile(filepath.Join(t.dir, "index.m3u8"), out)
		}
		return err
	}
	return finishRecording(&t.r.p.fs, t.dir)
}
