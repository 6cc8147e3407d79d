package packager

import (
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/packager/live"
)

// feedVideo publishes 30 fps video frames from..to (frame numbers, to
// excluded), a keyframe every gop frames, skipping the frames in skip.
func feedVideo(pub interface{ Write(*media.AccessUnit) }, from, to, gop int, skip map[int]bool) {
	for v := from; v < to; v++ {
		if skip[v] {
			continue
		}
		payload := [][]byte{{0x41, 0x9a, byte(v)}}
		if v%gop == 0 {
			payload = [][]byte{testSPS, testPPS, {0x65, 0x88, byte(v)}}
		}
		pub.Write(&media.AccessUnit{Track: 0, DTS: int64(v) * 3000, PTS: int64(v) * 3000, Keyframe: v%gop == 0, Payload: payload,
			NTP: feedEpoch.Add(time.Duration(v) * time.Second / 30)})
	}
}

// A source with keyframes 4 s apart (segments cut between keyframes) that
// loses one frame just where a segment is cut: one missing frame is not a
// pause. The segment after it covers the frame's time; nothing is listed
// as a gap and no segment outgrows the target duration.
func TestOneLostFrameIsNotAPause(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, 0)
	pub, err := r.hub.Publish(media.StreamKey{Name: "st", Rendition: media.RenditionSource}, tracks[:1])
	if err != nil {
		t.Fatal(err)
	}
	feedVideo(pub, 0, 300, 120, map[int]bool{74: true}) // frame 74 (2.467 s) lost
	pub.Close()
	dir := filepath.Join(r.dir, "st", "source")
	waitFor(t, "ENDLIST", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "index.m3u8"))
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	rec := parseMedia(t, mustRead(t, filepath.Join(dir, "recording.m3u8")))
	if rec.TargetDuration != 2 {
		t.Errorf("EXT-X-TARGETDURATION %d, want 2", rec.TargetDuration)
	}
	var sum time.Duration
	for i, s := range rec.Segments {
		if s.Gap || s.Duration > 2500*time.Millisecond {
			t.Errorf("segment %d (%s): gap %v, %v", i, s.URI, s.Gap, s.Duration)
		}
		sum += s.Duration
	}
	if sum < 9990*time.Millisecond || sum > 10010*time.Millisecond {
		t.Errorf("the segments last %v in all, want 10 s", sum)
	}
}

// msnAt returns the media sequence number of the segment of the live
// playlist key that starts at instant at (by its program date-time), once
// the playlist lists a segment after until; and the playlist.
func msnAt(t *testing.T, r *llRig, key string, at, until time.Duration) (uint64, string) {
	t.Helper()
	snap := r.waitSnap(t, key, func(s *live.Snapshot) bool {
		m := parseMedia(t, s.Data)
		n := len(m.Segments)
		return n > 0 && !m.Segments[n-1].Gap && m.Segments[n-1].DateTime.Sub(feedEpoch) >= until
	})
	m := parseMedia(t, snap.Data)
	for i, s := range m.Segments {
		if s.DateTime.Sub(feedEpoch) == at {
			return uint64(m.MediaSequence) + uint64(i), string(snap.Data)
		}
	}
	t.Fatalf("%s: no segment at %v\n%s", key, at, snap.Data)
	return 0, ""
}

// A ladder in which one rendition's video pauses (6.5 s to 36 s) while the
// other's goes on, keyframes every 2 s: the paused one follows the other's
// segments (its segment from 6 s ends at 8 s, gaps of 2 s from 8 to 36 s),
// so every instant has the same media sequence number in both (players
// switch renditions by it). Also when both pause: the second to come back
// follows the gaps the first listed; and when it comes back in the middle
// of the others' segment (35.5 s), its segment then starts with theirs.
func TestOneRenditionPausedKeepsMediaSequenceAligned(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		both   bool
		resume int
	}{{false, 36 * 30}, {true, 36 * 30}, {false, 35*30 + 15}} {
		both := c.both
		r := newLLRig(t, Config{})
		hi, _ := r.hub.Publish(media.StreamKey{Name: "lad", Rendition: "720p"}, tracks[:1])
		lo, _ := r.hub.Publish(media.StreamKey{Name: "lad", Rendition: "360p"}, tracks[:1])
		if both {
			feedVideo(hi, 0, 196, 60, nil)
			feedVideo(lo, 0, 196, 60, nil)
			feedVideo(hi, 36*30, 42*30, 60, nil)
		} else {
			feedVideo(hi, 0, 42*30, 60, nil)
			feedVideo(lo, 0, 196, 60, nil) // up to 6.5 s
		}
		// 720p is back (or never paused) before 360p comes back.
		h, hd := msnAt(t, r, "lad/720p/index.m3u8", 36*time.Second, 38*time.Second)
		feedVideo(lo, c.resume, 42*30, 60, nil)
		l, ld := msnAt(t, r, "lad/360p/index.m3u8", 36*time.Second, 38*time.Second)
		if h != l {
			t.Errorf("both paused %v, back at frame %d: the segment at 36 s is media sequence %d in 720p, %d in 360p\n720p:\n%s\n360p:\n%s", both, c.resume, h, l, hd, ld)
		}
		hi.Close()
		lo.Close()
		for _, name := range []string{"720p", "360p"} {
			index := filepath.Join(r.dir, "lad", name, "index.m3u8")
			waitFor(t, "ENDLIST", func() bool {
				b, _ := os.ReadFile(index)
				return strings.Contains(string(b), "#EXT-X-ENDLIST")
			})
		}
		// Every segment of the recordings starts at the same instant with
		// the same number, and lasts at most 2 s.
		starts := map[string]map[uint64]time.Duration{}
		for _, name := range []string{"720p", "360p"} {
			rec := parseMedia(t, mustRead(t, filepath.Join(r.dir, "lad", name, "recording.m3u8")))
			starts[name] = map[uint64]time.Duration{}
			at := time.Duration(0)
			for i, s := range rec.Segments {
				if s.Duration > 2*time.Second+time.Millisecond {
					t.Errorf("both paused %v, back at frame %d: %s segment %d lasts %v", both, c.resume, name, i, s.Duration)
				}
				starts[name][uint64(rec.MediaSequence)+uint64(i)] = at
				at += s.Duration
			}
		}
		for msn, at := range starts["360p"] {
			if hiAt, ok := starts["720p"][msn]; !ok || (hiAt-at).Abs() > 2*time.Millisecond {
				t.Errorf("both paused %v, back at frame %d: segment %d starts at %v in 360p, %v in 720p", both, c.resume, msn, at, hiAt)
			}
		}
	}
}

// A video timestamp that jumps 12 hours forward (an encoder's clock, a
// relay) is not a 12-hour pause: the segment after it starts after a
// discontinuity, at once, instead of after 21,600 gap segments (which held
// the rendition for half a minute and could not be signed in a manifest).
func TestTimestampJumpIsADiscontinuity(t *testing.T) {
	t.Parallel()
	r := newRig(t, FormatFMP4, 0)
	pub, err := r.hub.Publish(media.StreamKey{Name: "j", Rendition: media.RenditionSource}, tracks[:1])
	if err != nil {
		t.Fatal(err)
	}
	feedVideo(pub, 0, 150, 60, nil)
	jump := 12 * 3600 * 30
	feedVideo(pub, jump, jump+150, 60, nil)
	pub.Close()
	dir := filepath.Join(r.dir, "j", "source")
	waitFor(t, "the stream to end after the jump", func() bool {
		b, _ := os.ReadFile(filepath.Join(dir, "index.m3u8"))
		return strings.Contains(string(b), "#EXT-X-ENDLIST")
	})
	rec := mustRead(t, filepath.Join(dir, "recording.m3u8"))
	m := parseMedia(t, rec)
	if n := strings.Count(string(rec), "#EXT-X-GAP"); n > 0 || m.TargetDuration != 2 {
		t.Errorf("%d gap segments, target duration %d\n%s", n, m.TargetDuration, rec)
	}
	if n := strings.Count(string(rec), "#EXT-X-DISCONTINUITY\n"); n != 1 {
		t.Errorf("%d discontinuities, want 1\n%s", n, rec)
	}
}

// With LL-HLS, the segment a paused rendition ends where the others' does
// (6 s to 8 s, its video paused at 6.5 s) keeps its parts within
// PART-TARGET: its last sample keeps its own duration (it lasted 1.5 s, a
// part of 1.5 s under a 0.5 s target), and only the segment is longer.
func TestPausedRenditionPartsWithinPartTarget(t *testing.T) {
	t.Parallel()
	r := newLLRig(t, Config{PartDuration: 500 * time.Millisecond})
	hi, _ := r.hub.Publish(media.StreamKey{Name: "lad", Rendition: "720p"}, tracks[:1])
	lo, _ := r.hub.Publish(media.StreamKey{Name: "lad", Rendition: "360p"}, tracks[:1])
	feedVideo(hi, 0, 14*30, 60, nil)
	feedVideo(lo, 0, 196, 60, nil) // up to 6.5 s
	r.waitSnap(t, "lad/720p/index.m3u8", func(s *live.Snapshot) bool { return strings.Contains(string(s.Data), "T12:00:08Z") })
	feedVideo(lo, 10*30, 14*30, 60, nil)
	snap := r.waitSnap(t, "lad/360p/index.m3u8", func(s *live.Snapshot) bool {
		return strings.Contains(string(s.Data), "#EXT-X-GAP") && strings.Contains(string(s.Data), "#EXT-X-PART:")
	})
	text := string(snap.Data)
	target, _ := strconv.ParseFloat(regexp.MustCompile(`PART-TARGET=([0-9.]+)`).FindStringSubmatch(text)[1], 64)
	for _, m := range regexp.MustCompile(`#EXT-X-PART:DURATION=([0-9.]+),URI="([^"]+)"`).FindAllStringSubmatch(text, -1) {
		if d, _ := strconv.ParseFloat(m[1], 64); d > target {
			t.Errorf("part %s lasts %v s, over PART-TARGET %v s\n%s", m[2], d, target, text)
		}
	}
	if !strings.Contains(text, "T12:00:06Z\n#EXTINF:2.000,") {
		t.Errorf("the segment from 6 s does not end at 8 s:\n%s", text)
	}
	hi.Close()
	lo.Close()
}
