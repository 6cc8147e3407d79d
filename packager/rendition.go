package packager

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strconv"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"

	"github.com/shoal-video/shoal/internal/logx"
	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
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
	r := &rendition{p: p, st: st, name: key.Rendition, log: log, warn: logx.NewLimiter(5 * time.Second), vIdx: -1, aIdx: -1,
		prefix: st.session + "-" + strconv.Itoa(st.nextRun())}
	log.Info("packaging started", "files", r.prefix)
	_ = sub.Each(ctx, r.setTracks, r.handle) // ends with the publication (or ctx)
	r.finish()
	log.Info("packaging finished", "segments", r.segmentCount())
}

func (r *rendition) segmentCount() int {
	if r.video != nil {
		return len(r.video.segs)
	}
	if r.audio != nil {
		return len(r.audio.segs)
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
		}
		if r.audio != nil {
			r.audio.restart()
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
			r.video = r.newTrackOut(filepath.Join(r.st.dir, r.name), t)
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
	if err := os.MkdirAll(dir, 0o755); err != nil {
		r.p.reportError(r.log, "creating the rendition directory", err)
	}
	return &trackOut{r: r, dir: dir, track: t, isAudio: !t.IsVideo(), segStart: -1}
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
		r.handleAudio(au)
	}
}

func (r *rendition) handleVideo(au *media.AccessUnit) {
	t := r.video
	nalus, changed := t.extractParams(au.Payload)
	if len(nalus) == 0 {
		return // parameter sets only
	}
	if !r.started {
		if !au.Keyframe {
			return // wait for the first keyframe
		}
		r.started = true
		if r.rebase {
			r.offset = r.end - media.Duration(au.DTS, t.track.ClockRate)
			r.rebase = false
		}
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
		(changed || dts-t.segStart >= r.targetTicks(t)) && t.last != nil
	if !t.push(sample{dts: dts, ptsOff: int32(au.PTS - au.DTS), key: au.Keyframe, payload: nalus, byteSize: sizeOf(nalus)}, cut) {
		r.warnf("video timestamps went backwards; frame dropped", "dts", au.DTS)
		return
	}
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
		r.offset = r.end - media.Duration(au.DTS, t.track.ClockRate)
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
			cut = len(r.cuts) > 0 && at >= r.cuts[0]
		} else {
			cut = dts-t.segStart >= r.targetTicks(t)
		}
	}
	if !t.push(sample{dts: dts, key: true, payload: au.Payload[:1], byteSize: len(au.Payload[0])}, cut) {
		r.warnf("audio timestamps went backwards; frame dropped", "dts", au.DTS)
		return
	}
	if cut && len(r.cuts) > 0 {
		r.cuts = r.cuts[1:]
	}
}

// flushAll closes the current segments and records where the timeline ends.
func (r *rendition) flushAll() {
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
	// The audio group is released before the video playlist says ENDLIST,
	// so that whoever sees this rendition ended can count on another one
	// having been able to take the audio over.
	audioEnded := false
	if r.audio != nil {
		r.st.releaseAudio(r)
		if !r.p.othersActive(r.st) {
			r.audio.ended = true
			r.audio.writePlaylists()
			audioEnded = true
		}
	}
	if r.video != nil {
		r.video.ended = true
		r.video.writePlaylists()
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
type trackOut struct {
	r       *rendition
	dir     string
	track   media.Track
	isAudio bool

	initGen  int
	initURI  string
	nextDisc bool

	segs     []playlist.Segment
	seq      uint32
	pending  []sample
	last     *sample // the newest sample; its duration is known with the next one
	lastDur  int64
	segStart int64 // dts of the first sample of the current segment, -1 when none
	endTicks int64 // where the last flushed segment ends
	resumeAt int64 // samples before this are already in the playlist (an audio takeover)
	ended    bool
}

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
	t.nextDisc = t.nextDisc || discontinuity || len(t.segs) > 0
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

// push adds s; with cut, the segment being built is closed before s. It
// returns false (and drops s) when s does not move forward in time.
func (t *trackOut) push(s sample, cut bool) bool {
	if t.last != nil {
		if s.dts <= t.last.dts {
			return false
		}
		t.last.dur = s.dts - t.last.dts
		t.lastDur = t.last.dur
		t.pending = append(t.pending, *t.last)
	}
	if cut {
		t.flush(false)
	}
	if t.segStart < 0 || cut {
		t.segStart = s.dts
	}
	t.last = &s
	return true
}

// flush writes the segment being built; withLast also closes the newest
// sample, whose duration is then estimated from the one before.
func (t *trackOut) flush(withLast bool) {
	if withLast && t.last != nil {
		d := t.lastDur
		if d <= 0 {
			d = int64(t.track.ClockRate) / 30
			if t.isAudio {
				d = 1024
			}
		}
		t.last.dur = d
		t.pending = append(t.pending, *t.last)
		t.last = nil
	}
	if len(t.pending) == 0 {
		return
	}
	samples := t.pending
	t.pending = nil
	first := samples[0].dts
	endTicks := samples[len(samples)-1].dts + samples[len(samples)-1].dur
	t.endTicks = endTicks
	log := t.r.log
	p := t.r.p
	if t.initURI == "" {
		data, err := p.format.init(t.track)
		if err != nil {
			p.reportError(log, "building the initialization section", err)
			return
		}
		if data != nil {
			name := fmt.Sprintf("init-%s-%d.mp4", t.r.prefix, t.initGen)
			t.initGen++
			if err := writeFile(filepath.Join(t.dir, name), data); err != nil {
				p.reportError(log, "writing the initialization section", err)
				return
			}
			t.initURI = name
		}
	}
	data, err := p.format.segment(t.track, t.seq, samples)
	if err != nil {
		p.reportError(log, "building a segment", err)
		return
	}
	name := t.r.prefix + "-" + strconv.FormatUint(uint64(t.seq), 10) + p.format.ext()
	if err := writeFile(filepath.Join(t.dir, name), data); err != nil {
		p.reportError(log, "writing a segment", err)
		return
	}
	t.seq++
	seconds := float64(endTicks-first) / float64(t.track.ClockRate)
	t.segs = append(t.segs, playlist.Segment{URI: name, Duration: seconds, Discontinuity: t.nextDisc, Init: t.initURI,
		Time: t.r.st.programTime(first, endTicks, t.track.ClockRate)})
	t.nextDisc = false
	kind := "video"
	if t.isAudio {
		kind = "audio"
	}
	p.segments.WithLabelValues(kind).Inc()
	t.writePlaylists()
	t.r.st.segmentDone(t.r.name, t.track, t.isAudio, len(data), seconds)
}

// writePlaylists publishes index.m3u8 (the live window, or the whole
// recording once ended) and recording.m3u8.
func (t *trackOut) writePlaylists() {
	p := t.r.p
	var last float64
	if n := len(t.segs); n > 0 {
		last = t.segs[n-1].Duration
	}
	target := t.r.st.targetDuration(last)
	live := playlist.Media{Kind: playlist.Live, Version: p.format.version(), TargetDuration: target, Segments: t.segs, Window: p.cfg.LiveWindow}
	rec := playlist.Media{Kind: playlist.Event, Version: p.format.version(), TargetDuration: target, Segments: t.segs, Ended: t.ended}
	if t.ended {
		live = playlist.Media{Kind: playlist.VOD, Version: p.format.version(), TargetDuration: target, Segments: t.segs, Ended: true}
	}
	for name, m := range map[string]playlist.Media{"index.m3u8": live, "recording.m3u8": rec} {
		out, err := playlist.EncodeMedia(m)
		if err == nil {
			err = writeFile(filepath.Join(t.dir, name), out)
		}
		if err != nil {
			p.reportError(t.r.log, "writing a playlist", err)
		}
	}
}
