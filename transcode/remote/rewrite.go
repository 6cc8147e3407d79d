package remote

import (
	"bytes"
	"cmp"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
)

// What is published is what was checked: the origin does not publish a
// worker's playlists as they came. It writes the master playlist and every
// rendition's playlists itself, in the format of the VOD packager
// (packager/playlist), from what its checks found: the renditions, their
// initialization sections, segment names and durations; the BANDWIDTH of
// the segments' sizes over their durations, the CODECS of the video's SPS
// and the audio's initialization section. Tags a worker may have added
// (keys, byte ranges, session data, steering, date ranges, other groups)
// go nowhere.

// audioTrack is the audio rendition's codec as its initialization section
// declares it (checkAudioSegments).
type audioTrack struct {
	codec    string // RFC 6381
	channels int
}

// rates are the peak (one segment) and average bit rates of a rendition's
// segments.
func (c *checker) rates(r string) (peak, avg float64) {
	var bytes int64
	var d time.Duration
	for _, s := range c.segments[r] {
		size := c.files[r+"/"+s.uri].Size
		peak = math.Max(peak, float64(size)*8/s.duration.Seconds())
		bytes += size
		d += s.duration
	}
	if d > 0 {
		avg = float64(bytes) * 8 / d.Seconds()
	}
	return peak, avg
}

// playlists are the playlists the origin publishes for the output, by
// path: every rendition's index.m3u8 (and recording.m3u8 where the worker
// sent one) and master.m3u8.
func (c *checker) playlists() map[string][]byte {
	out := map[string][]byte{}
	renditions := make([]string, 0, len(c.rungs)+1)
	for _, r := range c.rungs {
		renditions = append(renditions, r.Name())
	}
	if c.audio {
		renditions = append(renditions, nodeproto.AudioRendition)
	}
	for _, r := range renditions {
		out[r+"/index.m3u8"] = c.mediaPlaylistOf(r, "VOD")
		if _, ok := c.files[r+"/recording.m3u8"]; ok {
			out[r+"/recording.m3u8"] = c.mediaPlaylistOf(r, "EVENT")
		}
	}
	audio := c.audioTrack // checkAudioSegments'
	var audioPeak, audioAvg float64
	if c.audio {
		audioPeak, audioAvg = c.rates(nodeproto.AudioRendition)
	}
	type variant struct {
		name, codecs  string
		peak, avg     uint32
		width, height int
		frameRate     float64
	}
	var variants []variant
	for _, rung := range c.rungs {
		name := rung.Name()
		peak, avg := c.rates(name)
		v := variant{name: name, codecs: c.codecs[name], peak: uint32(min(peak+audioPeak, math.MaxUint32)),
			avg: uint32(min(avg+audioAvg, math.MaxUint32))}
		for _, r := range c.manifest.Renditions {
			if r.Name == name {
				v.width, v.height = r.Width, r.Height
			}
		}
		if d := c.durations[name]; d > 0 {
			v.frameRate = float64(c.frames[name]) / d.Seconds()
		}
		if c.audio {
			v.codecs += "," + audio.codec
		}
		variants = append(variants, v)
	}
	slices.SortStableFunc(variants, func(a, b variant) int {
		if a.peak != b.peak {
			return cmp.Compare(b.peak, a.peak)
		}
		return strings.Compare(a.name, b.name)
	})
	var b bytes.Buffer
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-INDEPENDENT-SEGMENTS\n")
	group := ""
	if c.audio {
		group = `,AUDIO="audio"`
		fmt.Fprintf(&b, `#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID="audio",NAME="default",DEFAULT=YES,AUTOSELECT=YES,URI="%s/index.m3u8"`, nodeproto.AudioRendition)
		if audio.channels > 0 {
			fmt.Fprintf(&b, `,CHANNELS="%d"`, audio.channels)
		}
		b.WriteByte('\n')
	}
	for _, v := range variants {
		fmt.Fprintf(&b, `#EXT-X-STREAM-INF:BANDWIDTH=%d,AVERAGE-BANDWIDTH=%d,CODECS="%s",RESOLUTION=%dx%d%s,NAME="%s"`,
			v.peak, v.avg, v.codecs, v.width, v.height, group, v.name)
		if v.frameRate > 0 {
			fmt.Fprintf(&b, ",FRAME-RATE=%.3f", v.frameRate)
		}
		fmt.Fprintf(&b, "\n%s/index.m3u8\n", v.name)
	}
	out["master.m3u8"] = b.Bytes()
	return out
}

// mediaPlaylistOf writes rendition r's playlist of the given type (VOD or
// EVENT, ended) as the VOD packager does, from its checked segments.
func (c *checker) mediaPlaylistOf(r, kind string) []byte {
	segs := c.segments[r]
	version, target := 3, c.segment.Seconds()
	if segs[0].init != "" {
		version = 7
	}
	for _, s := range segs {
		target = math.Max(target, math.Round(s.duration.Seconds()))
	}
	var b bytes.Buffer
	fmt.Fprintf(&b, "#EXTM3U\n#EXT-X-VERSION:%d\n#EXT-X-PLAYLIST-TYPE:%s\n#EXT-X-MEDIA-SEQUENCE:0\n#EXT-X-TARGETDURATION:%d\n",
		version, kind, int64(math.Max(1, math.Round(target))))
	prev := ""
	for _, s := range segs {
		if s.init != "" && s.init != prev {
			fmt.Fprintf(&b, "#EXT-X-MAP:URI=%q\n", s.init)
			prev = s.init
		}
		fmt.Fprintf(&b, "#EXTINF:%.3f,\n%s\n", s.duration.Seconds(), s.uri)
	}
	b.WriteString("#EXT-X-ENDLIST\n")
	return b.Bytes()
}

// unicodeLineBreak finds U+2028 or U+2029 in a playlist: hls.js ends a
// line there (as at a carriage return), hiding what follows from the
// origin's reading.
func unicodeLineBreak(b []byte) (int, bool) {
	i := bytes.Index(b, []byte("\u2028"))
	if j := bytes.Index(b, []byte("\u2029")); j >= 0 && (i < 0 || j < i) {
		i = j
	}
	return i, i >= 0
}

// controlChar finds a byte of a playlist other than printable ASCII, a
// line feed or UTF-8: a carriage return hides a line from some readers.
func controlChar(b []byte) (int, bool) {
	for i, x := range b {
		if (x < 0x20 && x != '\n') || x == 0x7f {
			return i, true
		}
	}
	return 0, false
}
