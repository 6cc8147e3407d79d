// Package playlist renders HLS playlists. It wraps grafov/m3u8 so that the
// output is deterministic: every render builds a fresh grafov playlist from
// plain values (grafov caches its encoded output and orders custom tags by
// map iteration, so a long-lived grafov object is never reused), and the
// returned bytes are a new immutable snapshot that callers publish whole.
package playlist

import (
	"bytes"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/grafov/m3u8"
)

// Kind selects the playlist type.
type Kind int

const (
	// Live is a sliding window without EXT-X-PLAYLIST-TYPE.
	Live Kind = iota
	// Event keeps every segment (EXT-X-PLAYLIST-TYPE:EVENT).
	Event
	// VOD is a finished presentation (EXT-X-PLAYLIST-TYPE:VOD, ENDLIST).
	VOD
)

// Segment is one media segment.
type Segment struct {
	URI      string
	Duration float64 // seconds
	// Discontinuity marks a break in timestamps or encoding before it.
	Discontinuity bool
	// Init is the URI of the initialization section (fMP4); empty for TS.
	Init string
	// Time is the wall-clock time of the segment's first sample
	// (EXT-X-PROGRAM-DATE-TIME); zero leaves the tag out.
	Time time.Time
	// Parts are the segment's partial segments (LL-HLS), listed before it;
	// nil for segments whose parts are no longer announced.
	Parts []Part
	// Gap marks a segment that could not be written (EXT-X-GAP, RFC
	// 8216bis 4.4.4.7): listed with its URI and duration, so that the
	// media sequence numbers go on, but never to be loaded. Its parts, if
	// any, were served before it failed.
	Gap bool
}

// Part is a partial segment (EXT-X-PART).
type Part struct {
	URI         string
	Duration    float64 // seconds
	Independent bool    // starts with a keyframe
}

// RenditionReport is an EXT-X-RENDITION-REPORT: where another rendition of
// the same presentation stands.
type RenditionReport struct {
	URI      string
	LastMSN  uint64
	LastPart int // -1 leaves LAST-PART out
}

// Media describes a media playlist.
type Media struct {
	Kind Kind
	// Version is EXT-X-VERSION (7 for fMP4, 3 for MPEG-TS; at least 9 is
	// written when PartTarget is set).
	Version uint8
	// TargetDuration is the target in seconds; the rendered value is the
	// larger of it and every listed segment's duration rounded to the
	// nearest second (RFC 8216 4.3.3.1: EXTINF rounded to the nearest
	// integer must not exceed it). Callers pass a value that does not
	// change over a stream, so the tag does not either.
	TargetDuration float64
	// Segments is the whole list; FirstSeq is the media sequence number of
	// Segments[0] and FirstDisc the discontinuity sequence number there
	// (discontinuities before it).
	Segments  []Segment
	FirstSeq  uint64
	FirstDisc uint64
	// Window, when positive, renders only the last Window segments.
	Window int
	// Ended appends EXT-X-ENDLIST.
	Ended bool

	// LL-HLS (all zero without partial segments). PartTarget is
	// EXT-X-PART-INF's PART-TARGET in seconds; with it the playlist
	// declares blocking reloads and a PART-HOLD-BACK of three part targets.
	PartTarget float64
	// Pending are the parts of the segment being built (after the last
	// segment); Hint is the URI of the next part (EXT-X-PRELOAD-HINT).
	Pending []Part
	Hint    string
	Reports []RenditionReport
	// NextDiscontinuity puts EXT-X-DISCONTINUITY before the pending parts
	// (the segment being built starts a new timeline).
	NextDiscontinuity bool
	// NextInit is the initialization section of the segment being built,
	// when it differs from the last segment's.
	NextInit string

	// CanSkipUntil, in seconds, declares delta updates
	// (EXT-X-SERVER-CONTROL CAN-SKIP-UNTIL, at least six target durations)
	// and blocking reloads; with Skip the segments that start more than
	// CanSkipUntil before the end are replaced by EXT-X-SKIP (the answer
	// to _HLS_skip=YES).
	CanSkipUntil float64
	Skip         bool
}

// EncodeMedia renders m. The output is deterministic: the same Media
// always gives the same bytes.
func EncodeMedia(m Media) ([]byte, error) {
	segs := m.Segments
	start := 0
	if m.Window > 0 && len(segs) > m.Window {
		start = len(segs) - m.Window
	}
	disc := m.FirstDisc
	for _, s := range segs[:start] {
		if s.Discontinuity {
			disc++
		}
	}
	win := segs[start:]
	target := m.TargetDuration
	for _, s := range win {
		target = math.Max(target, math.Round(s.Duration))
	}
	var b bytes.Buffer
	b.Grow(256 + 96*len(win))
	writeHeader(&b, m, m.FirstSeq+uint64(start), disc, target)
	skipped := 0
	if m.Skip && m.CanSkipUntil > 0 {
		// Segments that start more than CanSkipUntil before the end.
		end := 0.0
		for _, s := range win {
			end += s.Duration
		}
		at := 0.0
		for skipped < len(win) && end-at > m.CanSkipUntil {
			at += win[skipped].Duration
			skipped++
		}
		if skipped > 0 {
			fmt.Fprintf(&b, "#EXT-X-SKIP:SKIPPED-SEGMENTS=%d\n", skipped)
		}
	}
	prevInit := ""
	for _, s := range win[skipped:] {
		writeSegment(&b, s, prevInit)
		prevInit = s.Init
	}
	if m.PartTarget > 0 && !m.Ended && m.Kind != VOD {
		if len(m.Pending) > 0 || m.Hint != "" {
			if m.NextDiscontinuity {
				b.WriteString("#EXT-X-DISCONTINUITY\n")
			}
			if m.NextInit != "" && m.NextInit != prevInit {
				fmt.Fprintf(&b, "#EXT-X-MAP:URI=%q\n", m.NextInit)
			}
		}
		writeParts(&b, m.Pending)
		if m.Hint != "" {
			fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=%q\n", m.Hint)
		}
		for _, r := range m.Reports {
			fmt.Fprintf(&b, "#EXT-X-RENDITION-REPORT:URI=%q,LAST-MSN=%d", r.URI, r.LastMSN)
			if r.LastPart >= 0 {
				fmt.Fprintf(&b, ",LAST-PART=%d", r.LastPart)
			}
			b.WriteByte('\n')
		}
	}
	if m.Ended || m.Kind == VOD {
		b.WriteString("#EXT-X-ENDLIST\n")
	}
	return b.Bytes(), nil
}

// Header renders the lines of m before its first segment, for a playlist
// that is written once and then appended to with AppendSegment (a
// recording): the media sequence is m.FirstSeq and the discontinuity
// sequence m.FirstDisc.
func Header(m Media) []byte {
	var b bytes.Buffer
	writeHeader(&b, m, m.FirstSeq, m.FirstDisc, math.Max(1, math.Round(m.TargetDuration)))
	return b.Bytes()
}

// AppendSegment appends the lines of s to a playlist whose previous segment
// used the initialization section prevInit ("" at the first segment):
// EncodeMedia renders a list of segments as Header followed by one
// AppendSegment per segment (parts left out).
func AppendSegment(dst []byte, s Segment, prevInit string) []byte {
	var b bytes.Buffer
	s.Parts = nil
	writeSegment(&b, s, prevInit)
	return append(dst, b.Bytes()...)
}

// Endlist is the line that ends a playlist.
const Endlist = "#EXT-X-ENDLIST\n"

func writeHeader(b *bytes.Buffer, m Media, seq, disc uint64, target float64) {
	version := m.Version
	if (m.PartTarget > 0 || m.CanSkipUntil > 0) && version < 9 {
		version = 9
	}
	b.WriteString("#EXTM3U\n")
	if version != 0 {
		fmt.Fprintf(b, "#EXT-X-VERSION:%d\n", version)
	}
	switch m.Kind {
	case Event:
		b.WriteString("#EXT-X-PLAYLIST-TYPE:EVENT\n")
	case VOD:
		b.WriteString("#EXT-X-PLAYLIST-TYPE:VOD\n")
	}
	fmt.Fprintf(b, "#EXT-X-MEDIA-SEQUENCE:%d\n", seq)
	fmt.Fprintf(b, "#EXT-X-TARGETDURATION:%d\n", int64(math.Max(1, math.Round(target))))
	if (m.PartTarget > 0 || m.CanSkipUntil > 0) && !m.Ended && m.Kind != VOD {
		b.WriteString("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES")
		if m.CanSkipUntil > 0 {
			fmt.Fprintf(b, ",CAN-SKIP-UNTIL=%s", seconds(m.CanSkipUntil))
		}
		if m.PartTarget > 0 {
			fmt.Fprintf(b, ",PART-HOLD-BACK=%s", seconds(3*m.PartTarget))
		}
		b.WriteByte('\n')
	}
	if m.PartTarget > 0 && !m.Ended && m.Kind != VOD {
		fmt.Fprintf(b, "#EXT-X-PART-INF:PART-TARGET=%s\n", seconds(m.PartTarget))
	}
	if disc > 0 {
		fmt.Fprintf(b, "#EXT-X-DISCONTINUITY-SEQUENCE:%d\n", disc)
	}
}

func writeSegment(b *bytes.Buffer, s Segment, prevInit string) {
	if s.Discontinuity {
		b.WriteString("#EXT-X-DISCONTINUITY\n")
	}
	if s.Init != "" && s.Init != prevInit {
		fmt.Fprintf(b, "#EXT-X-MAP:URI=%q\n", s.Init)
	}
	writeParts(b, s.Parts)
	if !s.Time.IsZero() {
		b.WriteString("#EXT-X-PROGRAM-DATE-TIME:")
		b.WriteString(s.Time.UTC().Format("2006-01-02T15:04:05.999Z07:00"))
		b.WriteByte('\n')
	}
	if s.Gap {
		b.WriteString("#EXT-X-GAP\n")
	}
	fmt.Fprintf(b, "#EXTINF:%.3f,\n%s\n", s.Duration, s.URI)
}

func writeParts(b *bytes.Buffer, parts []Part) {
	for _, p := range parts {
		fmt.Fprintf(b, "#EXT-X-PART:DURATION=%s,URI=%q", seconds(p.Duration), p.URI)
		if p.Independent {
			b.WriteString(",INDEPENDENT=YES")
		}
		b.WriteByte('\n')
	}
}

// seconds renders a duration in seconds with up to 5 decimals, without
// trailing zeros.
func seconds(s float64) string {
	return strconv.FormatFloat(math.Round(s*1e5)/1e5, 'f', -1, 64)
}

// Variant is one video rendition of a master playlist.
type Variant struct {
	URI              string
	Bandwidth        uint32 // peak bits per second, audio included
	AverageBandwidth uint32
	Codecs           []string
	Width, Height    int
	FrameRate        float64
	Name             string
}

// Audio is the single audio rendition of the master playlist's audio group.
type Audio struct {
	URI  string
	Name string
	// Channels is the audio's channel count (the CHANNELS attribute);
	// 0 leaves it out.
	Channels int
}

// AudioGroup is the GROUP-ID of the audio rendition.
const AudioGroup = "audio"

// Master describes a master playlist.
type Master struct {
	Version  uint8
	Variants []Variant
	// Audio, when set, is referenced by every variant through AudioGroup.
	Audio *Audio
	// DependentSegments leaves EXT-X-INDEPENDENT-SEGMENTS out: some
	// segment may not start with a keyframe (a source passed through).
	DependentSegments bool
}

// EncodeMaster renders m. Variants are written in the order given.
func EncodeMaster(m Master) []byte {
	p := m3u8.NewMasterPlaylist()
	p.SetIndependentSegments(!m.DependentSegments)
	var alts []*m3u8.Alternative
	audioGroup := ""
	if m.Audio != nil {
		audioGroup = AudioGroup
		alts = []*m3u8.Alternative{{
			GroupId: AudioGroup, URI: m.Audio.URI, Type: "AUDIO", Name: m.Audio.Name,
			Default: true, Autoselect: "YES",
		}}
	}
	for _, v := range m.Variants {
		params := m3u8.VariantParams{
			Bandwidth:        v.Bandwidth,
			AverageBandwidth: v.AverageBandwidth,
			Codecs:           strings.Join(v.Codecs, ","),
			Audio:            audioGroup,
			FrameRate:        v.FrameRate,
			Name:             v.Name,
			Alternatives:     alts,
		}
		if v.Width > 0 && v.Height > 0 {
			params.Resolution = fmt.Sprintf("%dx%d", v.Width, v.Height)
		}
		p.Append(v.URI, nil, params)
	}
	if m.Version != 0 {
		p.SetVersion(m.Version)
	}
	out := bytes.Clone(p.Encode().Bytes())
	// PROGRAM-ID was removed from HLS in protocol version 6.
	out = bytes.ReplaceAll(out, []byte("PROGRAM-ID=0,"), nil)
	if m.Audio != nil && m.Audio.Channels > 0 {
		// grafov has no CHANNELS attribute: it goes at the end of the
		// audio group's EXT-X-MEDIA line.
		var lines [][]byte
		for _, l := range bytes.Split(out, []byte("\n")) {
			if bytes.HasPrefix(l, []byte("#EXT-X-MEDIA:")) && bytes.Contains(l, []byte(`GROUP-ID="`+AudioGroup+`"`)) {
				l = append(l, fmt.Sprintf(`,CHANNELS="%d"`, m.Audio.Channels)...)
			}
			lines = append(lines, l)
		}
		out = bytes.Join(lines, []byte("\n"))
	}
	return out
}
