package packager

import (
	"bytes"
	"cmp"
	"os"
	"slices"
	"time"

	"github.com/shoal-video/shoal/packager/playlist"
)

// One timeline per stream. Every rendition of a stream maps its input
// timestamps to the output timeline with the same offset, so that the same
// instant has the same time (and EXT-X-PROGRAM-DATE-TIME) in every
// variant and the audio group; a rendition that starts late (a transcoder
// falling back to another encoder, or to copying the source) lands on it
// too, takes the media and discontinuity sequence numbers the others gave
// the segment it starts in, and cuts where they cut. A rendition that comes
// back within the session continues its own playlists and recording.

// timelineTolerance is how far from the stream's end a rendition's first
// keyframe may land with the shared offset for it to be the same timeline
// (the same publication); further, its input restarted (a reconnect) and
// it continues after the end instead.
const timelineTolerance = 30 * time.Second

// boundaryTolerance is how close two segment starts must be to be the same
// boundary (a fraction of a frame).
const boundaryTolerance = 20 * time.Millisecond

// maxSegStarts bounds the segment starts a stream remembers.
const maxSegStarts = 64

// segStart is where a video segment starts on the stream's timeline.
type segStart struct {
	msn  uint64
	at   time.Duration
	disc uint64 // its discontinuity sequence number
	key  string // the playlist that started it
}

// timelineOffset returns the offset of a rendition whose own output ends
// at end and whose first (key)frame after a start or restart has input
// time in: the stream's offset when that lands it on the stream's timeline
// (at or after its own end, near the stream's), else one that continues
// after both ends (and becomes the stream's).
func (st *streamState) timelineOffset(end, in time.Duration) time.Duration {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.hasOffset {
		t := st.offset + in
		if t >= end-500*time.Millisecond && t >= st.tlEnd-timelineTolerance && t <= st.tlEnd+timelineTolerance {
			return st.offset
		}
	}
	st.offset, st.hasOffset = max(end, st.tlEnd)-in, true
	return st.offset
}

// noteEnd records that a track's output reached end.
func (st *streamState) noteEnd(end time.Duration) {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.tlEnd = max(st.tlEnd, end)
}

// noteSegmentStart records that the video playlist key started segment
// msn (discontinuity sequence disc) at time at.
func (st *streamState) noteSegmentStart(key string, msn uint64, at time.Duration, disc uint64) {
	st.mu.Lock()
	defer st.mu.Unlock()
	if len(st.segStarts) >= maxSegStarts {
		st.segStarts = st.segStarts[1:]
	}
	st.segStarts = append(st.segStarts, segStart{msn: msn, at: at, disc: disc, key: key})
}

// segmentAt returns the segment another video playlist of the stream
// started at or before at, within span of it: the segment a playlist
// starting at at joins.
func (st *streamState) segmentAt(key string, at, span time.Duration) (segStart, bool) {
	st.mu.Lock()
	defer st.mu.Unlock()
	var best segStart
	found := false
	for _, s := range st.segStarts {
		if s.key == key || s.at > at+boundaryTolerance || at-s.at >= span {
			continue
		}
		if !found || s.at > best.at || s.at == best.at && s.msn > best.msn {
			best, found = s, true
		}
	}
	return best, found
}

// startsWithin returns the segments other video playlists of the stream
// started after from and up to to, in time order, one per media sequence
// number (the first noted).
func (st *streamState) startsWithin(key string, from, to time.Duration) []segStart {
	st.mu.Lock()
	var out []segStart
	for _, s := range st.segStarts {
		if s.key != key && s.at > from && s.at <= to {
			out = append(out, s)
		}
	}
	st.mu.Unlock()
	slices.SortStableFunc(out, func(a, b segStart) int { return cmp.Compare(a.at, b.at) })
	kept := out[:0]
	for _, s := range out {
		if len(kept) == 0 || s.msn > kept[len(kept)-1].msn {
			kept = append(kept, s)
		}
	}
	return kept
}

// isBoundary reports whether another video playlist of the stream started
// a segment at time at.
func (st *streamState) isBoundary(key string, at time.Duration) bool {
	st.mu.Lock()
	defer st.mu.Unlock()
	for _, s := range st.segStarts {
		if s.key != key && s.at-at < boundaryTolerance && at-s.at < boundaryTolerance {
			return true
		}
	}
	return false
}

// keepTrack remembers the video track of a rendition that ended, for a
// rendition of the same name that starts again within the session. With
// live, the track stays live (no ENDLIST) while the session lingers: it
// ends after Config.Linger unless a rendition continued it.
func (st *streamState) keepTrack(name string, t *trackOut, live bool) {
	st.mu.Lock()
	if st.ended == nil {
		st.ended = map[string]*trackOut{}
	}
	st.ended[name] = t
	st.mu.Unlock()
	if live {
		time.AfterFunc(st.p.cfg.Linger, func() { st.finalizeTrack(name, t) })
	}
}

// finalizeTrack ends a kept track (ENDLIST, the whole recording as VOD)
// unless a rendition continued it since.
func (st *streamState) finalizeTrack(name string, t *trackOut) {
	st.mu.Lock()
	kept := st.ended[name] == t
	st.mu.Unlock()
	if !kept {
		return
	}
	t.handover.Lock()
	defer t.handover.Unlock()
	if t.resumed || t.ended {
		return
	}
	t.ended = true
	t.writePlaylists()
}

// finalizeKept ends every kept track still live (the session ends).
func (st *streamState) finalizeKept() {
	st.mu.Lock()
	kept := make(map[string]*trackOut, len(st.ended))
	for name, t := range st.ended {
		kept[name] = t
	}
	st.mu.Unlock()
	for name, t := range kept {
		st.finalizeTrack(name, t)
	}
}

// running registers done as the channel closed when the rendition name
// of this session finishes, and returns the previous one's (nil when none
// runs): a rendition of the same name starting while the last one is still
// finishing waits for it to hand its playlists over.
func (st *streamState) running(name string, done chan struct{}) chan struct{} {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.runningRenditions == nil {
		st.runningRenditions = map[string]chan struct{}{}
	}
	prev := st.runningRenditions[name]
	st.runningRenditions[name] = done
	return prev
}

// resumeTrack returns the ended video track of rendition name, bound to r
// and reopened (nil when there is none): its playlists and recording go on
// after a discontinuity.
func (st *streamState) resumeTrack(name string, r *rendition) *trackOut {
	st.mu.Lock()
	t := st.ended[name]
	delete(st.ended, name)
	st.mu.Unlock()
	if t == nil {
		return nil
	}
	t.handover.Lock()
	defer t.handover.Unlock()
	t.resumed = true
	wasEnded := t.ended
	t.r, t.ended, t.finished = r, false, false
	t.unpublished, t.dvrDirty = false, false
	t.pending, t.last, t.parts, t.partData = nil, nil, nil, nil
	for i := range t.segs {
		t.segs[i].Parts = nil // no longer served
	}
	t.restart()
	if wasEnded {
		if err := t.rec.reopen(t); err != nil {
			r.p.reportError(r.log, "reopening the recording (it stops here)", err)
		}
	}
	return t
}

// reopen takes the ENDLIST off a recording that a rendition coming back
// continues. It writes a new file (a rename), so that whoever keyed
// something on the ended one (a final range manifest) sees a new file.
func (rc *recording) reopen(t *trackOut) error {
	if !rc.started || rc.failed {
		return nil
	}
	path := rc.path(t)
	data, err := os.ReadFile(path)
	if err == nil {
		if trimmed, ok := bytes.CutSuffix(data, []byte(playlist.Endlist)); ok {
			err = t.r.p.writeFile(path, trimmed)
		}
	}
	if err != nil {
		rc.failed = true
	}
	return err
}
