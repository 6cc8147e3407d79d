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
}

// Media describes a media playlist.
type Media struct {
	Kind Kind
	// Version is EXT-X-VERSION (7 for fMP4, 3 for MPEG-TS).
	Version uint8
	// TargetDuration is the target in seconds; the rendered value is the
	// larger of it and every listed segment's duration rounded to the
	// nearest second (RFC 8216 4.3.3.1: EXTINF rounded to the nearest
	// integer must not exceed it). Callers pass a value that does not
	// change over a stream, so the tag does not either.
	TargetDuration float64
	// Segments is the whole list; FirstSeq is the media sequence number of
	// Segments[0].
	Segments []Segment
	FirstSeq uint64
	// Window, when positive, renders only the last Window segments.
	Window int
	// Ended appends EXT-X-ENDLIST.
	Ended bool
}

// EncodeMedia renders m.
func EncodeMedia(m Media) ([]byte, error) {
	segs := m.Segments
	start := 0
	if m.Window > 0 && len(segs) > m.Window {
		start = len(segs) - m.Window
	}
	disc := uint64(0)
	for _, s := range segs[:start] {
		if s.Discontinuity {
			disc++
		}
	}
	win := segs[start:]
	n := uint(len(win))
	if n == 0 {
		n = 1
	}
	p, err := m3u8.NewMediaPlaylist(0, n)
	if err != nil {
		return nil, fmt.Errorf("playlist: %w", err)
	}
	target := m.TargetDuration
	prevInit := ""
	if start > 0 {
		prevInit = segs[start-1].Init
	}
	for i, s := range win {
		seg := &m3u8.MediaSegment{URI: s.URI, Duration: s.Duration, Discontinuity: s.Discontinuity, ProgramDateTime: s.Time}
		if s.Init != "" && (i == 0 || s.Init != prevInit) {
			seg.Map = &m3u8.Map{URI: s.Init}
		}
		prevInit = s.Init
		if err := p.AppendSegment(seg); err != nil {
			return nil, fmt.Errorf("playlist: %w", err)
		}
		target = math.Max(target, math.Round(s.Duration))
	}
	p.TargetDuration = math.Max(1, math.Round(target))
	p.SeqNo = m.FirstSeq + uint64(start)
	p.DiscontinuitySeq = disc
	switch m.Kind {
	case Event:
		p.MediaType = m3u8.EVENT
	case VOD:
		p.MediaType = m3u8.VOD
	}
	if m.Ended || m.Kind == VOD {
		p.Close()
	}
	if m.Version != 0 {
		p.SetVersion(m.Version)
	}
	out := p.Encode().Bytes()
	// grafov adds EXT-X-ALLOW-CACHE to EVENT playlists; the tag was removed
	// from HLS in protocol version 7 and Shoal sets caching with HTTP headers.
	out = bytes.Replace(out, []byte("#EXT-X-ALLOW-CACHE:NO\n"), nil, 1)
	return bytes.Clone(out), nil
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
}

// EncodeMaster renders m. Variants are written in the order given.
func EncodeMaster(m Master) []byte {
	p := m3u8.NewMasterPlaylist()
	p.SetIndependentSegments(true)
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
