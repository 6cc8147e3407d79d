package packager

import (
	"bytes"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/shoal-video/shoal/packager/playlist"
)

// Taking a broadcast over. When the origin that packaged a stream dies
// mid-broadcast, another origin may take the stream over (the publisher
// reconnects there). Config.Resume then hands the new session the
// recordings the dead origin left unfinished, by playlist directory; each
// track's recording starts with the segments of the old one (which stay
// where they are: their names carry the old session), then a
// discontinuity, then the new session's segments. The live playlists start
// afresh; the recording, and the VOD made of it at the end, have both
// parts.

// resumed is what a track's recording continues: the segment lines of an
// unfinished recording.
type resumed struct {
	body      []byte // the segment lines, each whole, no ENDLIST
	firstSeq  uint64
	firstDisc uint64
	target    float64
	lastInit  string // the URI of the last EXT-X-MAP, "" when none
}

// parseResumed splits an unfinished recording into its header figures and
// its segment lines, cut after the last whole segment (a copy taken while
// a segment was being appended ends mid-line). ok is false when it holds
// no segment.
func parseResumed(data []byte) (resumed, bool) {
	var r resumed
	lines := bytes.SplitAfter(data, []byte("\n"))
	bodyStart, bodyEnd := -1, -1
	off := 0
	for _, raw := range lines {
		line := strings.TrimRight(string(raw), "\r\n")
		complete := bytes.HasSuffix(raw, []byte("\n"))
		next := off + len(raw)
		switch {
		case !complete:
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			r.firstSeq, _ = strconv.ParseUint(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(line, "#EXT-X-DISCONTINUITY-SEQUENCE:"):
			r.firstDisc, _ = strconv.ParseUint(strings.TrimPrefix(line, "#EXT-X-DISCONTINUITY-SEQUENCE:"), 10, 64)
		case strings.HasPrefix(line, "#EXT-X-TARGETDURATION:"):
			r.target, _ = strconv.ParseFloat(strings.TrimPrefix(line, "#EXT-X-TARGETDURATION:"), 64)
		case line == strings.TrimSpace(playlist.Endlist):
		case strings.HasPrefix(line, "#EXT-X-MAP:"), strings.HasPrefix(line, "#EXTINF:"), line == "#EXT-X-DISCONTINUITY",
			strings.HasPrefix(line, "#EXT-X-PROGRAM-DATE-TIME:"), line == "#EXT-X-GAP":
			if bodyStart < 0 {
				bodyStart = off
			}
			if uri, ok := strings.CutPrefix(line, `#EXT-X-MAP:URI="`); ok {
				r.lastInit, _, _ = strings.Cut(uri, `"`)
			}
		case line != "" && !strings.HasPrefix(line, "#") && bodyStart >= 0:
			bodyEnd = next // a segment's URI: everything up to here is whole
		}
		off = next
	}
	if bodyStart < 0 || bodyEnd < 0 {
		return resumed{}, false
	}
	r.body = bytes.Clone(data[bodyStart:bodyEnd])
	// The last EXT-X-MAP kept (one after the cut does not count).
	r.lastInit = ""
	for _, line := range strings.Split(string(r.body), "\n") {
		if uri, ok := strings.CutPrefix(line, `#EXT-X-MAP:URI="`); ok {
			r.lastInit, _, _ = strings.Cut(uri, `"`)
		}
	}
	return r, true
}

// takeResumed gives the track at dir what its recording continues, once
// per session (a rendition that restarts within the session continues its
// own recording).
func (st *streamState) takeResumed(dir string) (resumed, bool) {
	st.resumedMu.Lock() // not st.mu: tracks are made with it held
	defer st.resumedMu.Unlock()
	name := filepath.Base(dir)
	r, ok := st.resumed[name]
	delete(st.resumed, name)
	return r, ok
}

// resumeFrom sets the recording to continue r.
func (rc *recording) resumeFrom(r resumed) {
	rc.resume = r.body
	rc.numbered = true
	rc.firstSeq, rc.firstDisc = r.firstSeq, r.firstDisc
	rc.prevInit = r.lastInit
	rc.resumeTarget = r.target
}

// parseAll parses the recordings Config.Resume gave, by directory; nil
// when none holds a segment.
func parseAll(recs map[string][]byte) map[string]resumed {
	out := map[string]resumed{}
	for dir, data := range recs {
		if r, ok := parseResumed(data); ok {
			out[dir] = r
		}
	}
	if len(out) == 0 {
		return nil
	}
	return out
}
