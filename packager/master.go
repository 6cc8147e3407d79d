package packager

import (
	"bytes"
	"encoding/hex"
	"fmt"
	"math"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h265"
	"github.com/bluenviron/mediacommon/v2/pkg/codecs/mpeg4audio"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/packager/live"
	"github.com/shoal-video/shoal/packager/playlist"
)

// streamState is what the renditions of one stream share: the session id,
// the audio group's owner and what the master playlist says of each variant.
type streamState struct {
	p       *Packager
	id, dir string
	session string
	active  int  // guarded by p.mu
	removed bool // guarded by p.mu: delete the output once every rendition finished
	// linger (guarded by p.mu) ends the session when no rendition came
	// back in time (Config.Linger).
	linger *time.Timer

	mu   sync.Mutex
	runs int // rendition runs started in this session
	// resumed: what the tracks' recordings continue (Config.Resume), by
	// directory name, each taken once (under resumedMu).
	resumed    map[string]resumed
	resumedMu  sync.Mutex
	renditions map[string]*variantInfo
	// The audio group is one media playlist for the whole stream: the
	// rendition that owns it writes it; when the owner ends while the
	// stream goes on, another rendition takes it over (discontinuity).
	audioOwner *rendition
	audioOut   *trackOut
	// audioOwned mirrors audioOwner != nil so that renditions that do not
	// write the audio group check it per audio frame without the lock.
	audioOwned atomic.Bool
	// audioEnded: audioOut was ended (releaseAudio); it is never taken
	// over.
	audioEnded bool
	audio      *variantInfo
	lastMaster []byte
	// masterUnwritten: the last master playlist could not be written (a
	// full disk): it is written again at the next segment.
	masterUnwritten bool
	// epoch is the wall-clock time of the start of the stream's output
	// timeline, which every rendition and the audio group share: a
	// segment's EXT-X-PROGRAM-DATE-TIME is epoch plus its start.
	epoch time.Time
	// target is the stream's EXT-X-TARGETDURATION, in whole seconds: the
	// segment duration, raised (never lowered) when a segment of any of
	// its playlists rounds to more, so that it stays put over the stream
	// and is the same in every variant.
	target float64
	// positions are the live playlists' positions, for rendition reports.
	positions map[string]position
	// The stream's timeline (timeline.go): the offset every rendition
	// shares, the latest end of any track, recent video segment starts,
	// and ended video tracks a rendition coming back continues.
	offset    time.Duration
	hasOffset bool
	tlEnd     time.Duration
	segStarts []segStart
	ended     map[string]*trackOut
	// runningRenditions: closed when the rendition of that name finishes.
	runningRenditions map[string]chan struct{}
}

// targetDuration notes a segment of the given length and returns the
// stream's target duration.
func (st *streamState) targetDuration(seconds float64) float64 {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.target == 0 {
		st.target = max(1, math.Round(st.p.cfg.SegmentDuration.Seconds()))
	}
	st.target = max(st.target, math.Round(seconds))
	return st.target
}

// programTime is the wall-clock time (EXT-X-PROGRAM-DATE-TIME) of output
// time start, in a segment that ends at end (ticks of rate) and whose end
// was ingested at endNTP (zero: unknown, now is used). One epoch per
// stream maps the timeline to the wall clock, so that times follow the
// segments' durations and every variant gives an instant the same time:
// the first segment of the session fixes it, from the ingest time of its
// end (a publisher's start-up burst arrives ahead of real time: the end
// of the first segment came in when the source was live).
func (st *streamState) programTime(endNTP time.Time, start, end int64, rate int) time.Time {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.epoch.IsZero() {
		at := endNTP
		if at.IsZero() {
			at = st.p.now()
		}
		st.epoch = at.Add(-media.Duration(end, rate)).UTC().Truncate(time.Millisecond)
	}
	return st.epoch.Add(media.Duration(start, rate)).Truncate(time.Millisecond) // ISO 8601 with milliseconds
}

// variantInfo is what the master playlist needs of one video or audio track.
type variantInfo struct {
	codec         string
	channels      int // audio
	width, height int
	fps           float64
	sps           []byte // the SPS fps was read from
	segments      int
	bytes         int64
	seconds       float64
	peak          float64 // highest bits/s of a segment
	declared      float64 // peak last written to the master playlist
	ended         bool
}

func (v *variantInfo) add(bytes int, seconds float64) {
	v.segments++
	v.bytes += int64(bytes)
	v.seconds += seconds
	if seconds >= 0.25 {
		if bps := float64(bytes) * 8 / seconds; bps > v.peak {
			v.peak = bps
		}
	}
}

func (v *variantInfo) average() float64 {
	if v.seconds <= 0 {
		return 0
	}
	return float64(v.bytes) * 8 / v.seconds
}

// nextRun numbers a run of a rendition within the session.
func (st *streamState) nextRun() int {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.runs++
	return st.runs - 1
}

// claimAudio makes r the owner of the audio group unless another rendition
// owns it, and returns the audio playlist r now writes (nil when it does
// not own it). Taking over from an ended owner continues the playlist after
// a discontinuity, under r's file names.
func (st *streamState) claimAudio(r *rendition, tr media.Track) *trackOut {
	st.mu.Lock()
	defer st.mu.Unlock()
	switch {
	case st.audioOwner == r:
		return st.audioOut
	case st.audioOwner != nil:
		return nil
	case st.audioOut == nil || st.audioEnded:
		st.audio = &variantInfo{}
		st.audioOut = r.newTrackOut(filepath.Join(st.dir, AudioDir), tr)
		st.audioEnded = false
	default:
		st.audioOut.r = r
		st.audioOut.track = tr
		st.audioOut.restart()
		// Continue where the previous owner stopped, not before it.
		st.audioOut.resumeAt = st.audioOut.endTicks
		r.log.Info("taking over the audio group from a rendition that ended")
	}
	st.audioOwner = r
	st.audioOwned.Store(true)
	return st.audioOut
}

// releaseAudio gives up r's ownership of the audio group and reports
// whether the group ends with it (no other rendition runs). The check and
// the end are one step under both locks: a rendition joining a moment later
// starts a new audio playlist instead of taking over an ended one (whose
// recording already has ENDLIST).
func (st *streamState) releaseAudio(r *rendition) bool {
	st.p.mu.Lock()
	defer st.p.mu.Unlock()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.audioOwner == r {
		st.audioOwner = nil
		st.audioOwned.Store(false)
	}
	if st.active > 1 || st.p.cfg.Linger > 0 && !st.removed && !st.p.stopping {
		// Another rendition, or one starting while the session lingers,
		// takes it over; else it ends with the session (endLocked).
		return false
	}
	st.audioEnded = true
	return true
}

// segmentDone records a finished segment and rewrites the master playlist
// when what it says changed enough.
func (st *streamState) segmentDone(rendition string, t media.Track, isAudio bool, bytes int, seconds float64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	var v *variantInfo
	if isAudio {
		v = st.audio
	} else {
		v = st.renditions[rendition]
		if v == nil {
			v = &variantInfo{}
			st.renditions[rendition] = v
		}
	}
	v.codec = codecString(t)
	if !t.IsVideo() {
		v.channels = t.Channels
	}
	if t.IsVideo() {
		v.width, v.height = t.Width, t.Height
		if !slices.Equal(v.sps, t.SPS) { // parse the SPS only when it changes
			v.sps, v.fps = t.SPS, frameRate(t)
		}
	}
	v.add(bytes, seconds)
	st.writeMasterLocked(false)
}

// renditionEnded records that a rendition ended, with the audio group
// when audio is the group's playlist it ended (nil: the group goes on, or
// the rendition did not own it), and writes the final master playlist.
func (st *streamState) renditionEnded(rendition string, audio *trackOut) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if v := st.renditions[rendition]; v != nil {
		v.ended = true
	}
	if audio != nil && st.audioOut == audio && st.audio != nil {
		st.audio.ended = true
		st.dropEmptyAudioLocked(audio)
	}
	st.writeMasterLocked(true)
}

// audioGroupEnded writes the final master playlist once the session's end
// ended the audio group audio (its owner having ended while other
// renditions ran).
func (st *streamState) audioGroupEnded(audio *trackOut) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.audioOut != audio || st.audio == nil {
		return
	}
	st.audio.ended = true
	if st.dropEmptyAudioLocked(audio) {
		st.writeMasterLocked(true)
	}
}

// dropEmptyAudioLocked leaves the ended audio group audio out of the master
// playlist when it holds no segment (a source whose audio track never
// decoded): the master playlist waits for the audio group's first segment,
// so it would never be written, and the stream would have no master
// playlist at all instead of playing without sound. It reports whether it
// dropped the group.
func (st *streamState) dropEmptyAudioLocked(audio *trackOut) bool {
	if st.audio == nil || st.audio.segments > 0 || audio.rec.started {
		return false
	}
	st.p.log.Warn("the audio track gave no audio at all: the stream is published without audio", "stream", st.id)
	st.audio = nil
	return true
}

// waitForRenditionsLocked reports whether the first master playlist should
// wait: a rendition it is to list has no segment yet, and none of those
// that have is more than two segments ahead.
func (st *streamState) waitForRenditionsLocked() bool {
	if st.p.cfg.Renditions == nil {
		return false
	}
	want := st.p.cfg.Renditions(st.id)
	missing := false
	for _, name := range want {
		if v := st.renditions[name]; v == nil || v.segments == 0 {
			missing = true
		}
	}
	if !missing {
		return false
	}
	for _, v := range st.renditions {
		if v.segments > 2 {
			return false
		}
	}
	return true
}

// writeMasterLocked renders the master playlist once every listed playlist
// has a segment; it rewrites it when a peak grew by more than 10% or, with
// final, to record exact averages.
func (st *streamState) writeMasterLocked(final bool) {
	if st.audio != nil && st.audio.segments == 0 {
		return
	}
	names := make([]string, 0, len(st.renditions))
	changed := final || st.masterUnwritten
	for name, v := range st.renditions {
		if v.segments == 0 {
			continue
		}
		names = append(names, name)
		if v.peak > v.declared*1.1 {
			changed = true
		}
	}
	if len(names) == 0 || !changed && st.lastMaster != nil {
		return
	}
	if !final && st.lastMaster == nil && st.waitForRenditionsLocked() {
		return
	}
	if st.audio != nil && st.audio.peak > st.audio.declared*1.1 {
		st.audio.declared = st.audio.peak
	}
	m := playlist.Master{Version: st.p.format.version()}
	for _, name := range names {
		// Renditions not made by the transcoder keep the source's
		// keyframes: their segments may be cut between them.
		if name == media.RenditionSource || name == copyRendition {
			m.DependentSegments = true
		}
	}
	var audioPeak, audioAvg float64
	if st.audio != nil {
		m.Audio = &playlist.Audio{URI: AudioDir + "/index.m3u8", Name: "default", Channels: st.audio.channels}
		audioPeak, audioAvg = st.audio.declared, st.audio.average()
	}
	for _, name := range names {
		v := st.renditions[name]
		if v.peak > v.declared {
			v.declared = v.peak
		}
		codecs := []string{v.codec}
		if st.audio != nil && st.audio.codec != "" {
			codecs = append(codecs, st.audio.codec)
		}
		variant := playlist.Variant{
			URI:       name + "/index.m3u8",
			Bandwidth: uint32(v.declared + audioPeak),
			Codecs:    codecs, Width: v.width, Height: v.height, FrameRate: v.fps, Name: name,
		}
		if final {
			variant.AverageBandwidth = uint32(v.average() + audioAvg)
		}
		m.Variants = append(m.Variants, variant)
	}
	sort.SliceStable(m.Variants, func(i, j int) bool {
		if m.Variants[i].Bandwidth != m.Variants[j].Bandwidth {
			return m.Variants[i].Bandwidth > m.Variants[j].Bandwidth
		}
		return m.Variants[i].Name < m.Variants[j].Name
	})
	out := playlist.EncodeMaster(m)
	if bytes.Equal(out, st.lastMaster) && !st.masterUnwritten {
		return
	}
	// A failed write (a full disk) is tried again at the next segment;
	// live, the registry serves the playlist meanwhile.
	if err := st.p.writeFile(filepath.Join(st.dir, "master.m3u8"), out); err != nil {
		st.p.reportError(st.p.log.With("stream", st.id), "writing the master playlist", err)
		st.masterUnwritten = true
	} else {
		st.masterUnwritten = false
	}
	st.lastMaster = out
	if st.p.live != nil && !final {
		st.p.live.Publish(st.id+"/master.m3u8", live.Snapshot{Data: out})
	}
	if st.p.cfg.DVRWindow > 0 {
		// The same ladder, each variant's DVR playlist.
		if m.Audio != nil {
			m.Audio.URI = AudioDir + "/" + DVRPlaylist
		}
		for i := range m.Variants {
			m.Variants[i].URI = m.Variants[i].Name + "/" + DVRPlaylist
		}
		dvr := playlist.EncodeMaster(m)
		if err := st.p.writeFile(filepath.Join(st.dir, DVRPlaylist), dvr); err != nil {
			st.p.reportError(st.p.log.With("stream", st.id), "writing the DVR master playlist", err)
		}
		if st.p.live != nil && !final {
			st.p.live.Publish(st.id+"/"+DVRPlaylist, live.Snapshot{Data: dvr})
		}
	}
}

// copyRendition is the transcoder's rendition of a source it forwards
// unchanged after its encoders failed (transcode.CopyRendition).
const copyRendition = "copy"

// reports returns the EXT-X-RENDITION-REPORTs for the playlist at key (its
// position is next segment msn with parts parts): where every other
// playlist of the stream stood when it was last published.
func (st *streamState) reports(key string, msn uint64, parts, prevParts int) []playlist.RenditionReport {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.positions == nil {
		st.positions = map[string]position{}
	}
	st.positions[key] = position{msn: msn, parts: parts, prevParts: prevParts}
	var out []playlist.RenditionReport
	for k, pos := range st.positions {
		if k == key {
			continue
		}
		r := playlist.RenditionReport{URI: "../" + k[strings.LastIndexByte(k, '/')+1:] + "/index.m3u8", LastMSN: pos.msn, LastPart: pos.parts - 1}
		if pos.parts == 0 {
			// No part of segment msn yet: the last part is the previous
			// segment's.
			if pos.msn == 0 {
				continue
			}
			r.LastMSN, r.LastPart = pos.msn-1, pos.prevParts-1
		}
		out = append(out, r)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].URI < out[j].URI })
	return out
}

// forgetPosition drops the playlist at key from the rendition reports (it
// ended).
func (st *streamState) forgetPosition(key string) {
	st.mu.Lock()
	defer st.mu.Unlock()
	delete(st.positions, key)
}

// position is where a live playlist stands: the segment being built, how
// many of its parts are out, and how many parts the segment before had.
type position struct {
	msn       uint64
	parts     int
	prevParts int
}

// codecString is the RFC 6381 codec name used in CODECS attributes.
func codecString(t media.Track) string {
	switch t.Codec {
	case media.CodecH264:
		if len(t.SPS) >= 4 {
			return "avc1." + hex.EncodeToString(t.SPS[1:4])
		}
		return "avc1.42e01f"
	case media.CodecH265:
		var sps h265.SPS
		if err := sps.Unmarshal(t.SPS); err == nil {
			ptl := sps.ProfileTierLevel
			compat := "6"
			if ptl.GeneralProfileIdc == 2 {
				compat = "4"
			}
			return fmt.Sprintf("hvc1.%d.%s.L%d.B0", ptl.GeneralProfileIdc, compat, ptl.GeneralLevelIdc)
		}
		return "hvc1.1.6.L93.B0"
	case media.CodecAAC:
		var cfg mpeg4audio.AudioSpecificConfig
		if err := cfg.Unmarshal(t.AudioConfig); err == nil {
			return fmt.Sprintf("mp4a.40.%d", cfg.Type)
		}
		return "mp4a.40.2"
	}
	return string(t.Codec)
}

func frameRate(t media.Track) float64 {
	if t.Codec != media.CodecH264 {
		return 0
	}
	var sps h264.SPS
	if err := sps.Unmarshal(t.SPS); err != nil {
		return 0
	}
	return sps.FPS()
}
