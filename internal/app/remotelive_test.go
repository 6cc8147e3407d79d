package app

import (
	"bufio"
	"math"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/shoal-video/shoal/transcode/verify"
)

// rungSegment is one segment of a rendition playlist, parsed.
type rungSegment struct {
	uri      string
	extinf   float64
	start    int64 // tfdt, 90 kHz
	duration int64
	idr      bool
}

// rungSegments reads rendition name's playlist of stream id and every
// segment's first decode time.
func (n *node) rungSegments(t *testing.T, id, name string) (seq int, segs []rungSegment, pl string) {
	t.Helper()
	pl = n.playlist(id, name+"/index.m3u8")
	var init []byte
	sc := bufio.NewScanner(strings.NewReader(pl))
	var extinf float64
	seq = -1
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"):
			seq, _ = strconv.Atoi(strings.TrimPrefix(line, "#EXT-X-MEDIA-SEQUENCE:"))
		case strings.HasPrefix(line, "#EXT-X-MAP:URI=\""):
			uri := strings.TrimSuffix(strings.TrimPrefix(line, "#EXT-X-MAP:URI=\""), "\"")
			uri, _, _ = strings.Cut(uri, "\"")
			_, b := n.get("/hls/"+id+"/"+name+"/"+uri, "")
			init = b
		case strings.HasPrefix(line, "#EXTINF:"):
			v, _, _ := strings.Cut(strings.TrimPrefix(line, "#EXTINF:"), ",")
			extinf, _ = strconv.ParseFloat(v, 64)
		case line != "" && !strings.HasPrefix(line, "#"):
			code, b := n.get("/hls/"+id+"/"+name+"/"+line, "")
			if code != 200 {
				t.Fatalf("%s/%s: %d", name, line, code)
			}
			p, err := verify.ParseSegment(verify.Segment{Init: init, Media: b})
			if err != nil {
				t.Fatalf("%s/%s: %v", name, line, err)
			}
			s := rungSegment{uri: line, extinf: extinf, start: p.Start, duration: p.Duration}
			if len(p.Samples) > 0 {
				s.idr = p.Samples[0].IDR
			}
			segs = append(segs, s)
		}
	}
	return seq, segs, pl
}

// A live ladder on remote workers, all real processes: an origin that
// encodes nothing itself (transcode.remote only, max_ladders 0) and two
// `shoal worker`s; ffmpeg publishes over RTMP. The stream gets its full
// ladder; the worker carrying it is killed (-9) mid-stream and the other
// takes over: each rung's recording has every segment (decode times
// contiguous, no discontinuity, durations summing to the stream's), and
// every segment starts with an IDR at the same decode time in every rung.
func TestRemoteLiveLadderSurvivesAWorker(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_VOD_WORKERS=0", "SHOAL_TRANSCODE_REMOTE=only", "SHOAL_TRANSCODE_MAX_LADDERS=0",
		"SHOAL_TRANSCODE_LADDER=360p:700k,240p:400k", "SHOAL_TRANSCODE_PRESET=ultrafast", "SHOAL_HLS_SEGMENT_DURATION=1s")
	token, _ := n.nodeTokenWithID("live workers")
	workers := []*remoteWorker{
		startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0", "SHOAL_TRANSCODE_PRESET=ultrafast"),
		startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0", "SHOAL_TRANSCODE_PRESET=ultrafast"),
	}
	n.waitFor("both workers waiting for live ladders", 60*time.Second, func() bool {
		return strings.Count(n.stderr.String(), "a remote worker waits for live ladders") >= 2
	})
	const seconds = 16
	ls := n.createStream("remote ladder")
	pub := publish(t, clipSized(t, 640, 360, seconds), n.rtmp+"/"+ls.StreamKey)

	_, other := n.killBusy(t, "a worker to carry the ladder for a few segments", [2]*workerProc{workers[0].workerProc, workers[1].workerProc},
		func() bool { return strings.Count(n.playlist(ls.ID, "240p/index.m3u8"), "#EXTINF") >= 4 }, "encoding a live ladder")
	if err := pub.Wait(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	n.waitLadderEnd(ls.ID)
	if i := strings.Index(n.stderr.String(), "a remote worker failed; another takes over"); i < 0 {
		t.Errorf("the origin did not hand the ladder to the other worker:\n%s", n.stderr.String())
	} else {
		line, _, _ := strings.Cut(n.stderr.String()[i:], "\n")
		t.Logf("takeover: %s", line)
	}
	if !strings.Contains(other.stderr.String(), "encoding a live ladder") {
		t.Errorf("the surviving worker never encoded the ladder:\n%s", other.stderr.String())
	}
	n.checkLadderWhole(t, ls.ID, seconds)
}

// checkLadderWhole checks stream id's recorded ladder (360p and 240p of a
// 640x360 source of seconds): each rung plays (ffprobe), has every
// segment (decode times contiguous, no discontinuity, durations summing
// to the stream's), and every segment starts with an IDR at the same
// decode time in every rung.
func (n *node) checkLadderWhole(t *testing.T, id string, seconds int) {
	t.Helper()
	for name, want := range map[string]string{"360p": "h264,640,360", "240p": "h264,428,240"} {
		if got := probeVideo(t, n.http+"/hls/"+id+"/"+name+"/index.m3u8"); got != want {
			t.Errorf("ffprobe %s: %q, want %q", name, got, want)
		}
	}
	var starts [][]int64
	for _, name := range []string{"360p", "240p"} {
		seq, segs, pl := n.rungSegments(t, id, name)
		if strings.Contains(pl, "#EXT-X-DISCONTINUITY") || seq != 0 {
			t.Errorf("%s: media sequence %d, discontinuity %v, want one timeline from 0:\n%s", name, seq, strings.Contains(pl, "#EXT-X-DISCONTINUITY"), pl)
		}
		var sum float64
		var st []int64
		for i, s := range segs {
			sum += s.extinf
			st = append(st, s.start)
			if !s.idr {
				t.Errorf("%s: segment %s does not start with an IDR", name, s.uri)
			}
			if i > 0 && segs[i-1].start+segs[i-1].duration != s.start {
				t.Errorf("%s: segment %s starts at %d, the one before ends at %d: a gap", name, s.uri, s.start, segs[i-1].start+segs[i-1].duration)
			}
		}
		if math.Abs(sum-float64(seconds)) > 1 {
			t.Errorf("%s: the segments last %.3f s, want %d s within a segment", name, sum, seconds)
		}
		t.Logf("%s: %d segments from sequence %d, %.3f s, decode times %v", name, len(segs), seq, sum, st)
		starts = append(starts, st)
	}
	if !slices.Equal(starts[0], starts[1]) {
		t.Errorf("segments start at different decode times across rungs: 360p %v, 240p %v", starts[0], starts[1])
	}
}

// waitLadderEnd waits for stream id's 360p and 240p recordings to end.
func (n *node) waitLadderEnd(id string) {
	n.waitFor("both rungs to end", 60*time.Second, func() bool {
		return strings.Contains(n.playlist(id, "360p/index.m3u8"), "#EXT-X-ENDLIST") &&
			strings.Contains(n.playlist(id, "240p/index.m3u8"), "#EXT-X-ENDLIST")
	})
}

// A live ladder's cheat, all real processes: a `shoal worker` that
// encodes at a quarter of the ladder's bitrates (a test option) takes the
// stream; an honest one joins. The origin re-checks every cell
// (verify_fraction 1): the cheat fails, is dropped from the stream and
// the honest worker takes over; the recording has every segment, aligned
// across rungs. The cheat's record counts the failed check and no credit;
// the honest worker's, its verified cells and pixels.
func TestRemoteLiveCheatCaught(t *testing.T) {
	t.Parallel()
	n := startNode(t, "SHOAL_VOD_WORKERS=0", "SHOAL_TRANSCODE_REMOTE=only", "SHOAL_TRANSCODE_MAX_LADDERS=0",
		"SHOAL_TRANSCODE_LADDER=360p:700k,240p:400k", "SHOAL_TRANSCODE_PRESET=ultrafast", "SHOAL_HLS_SEGMENT_DURATION=1s",
		"SHOAL_TRANSCODE_VERIFY_FRACTION=1")
	token, _ := n.nodeTokenWithID("live workers")
	cheat := startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0", "SHOAL_TRANSCODE_PRESET=ultrafast", liveCheatEnv+"=1")
	n.waitFor("the cheat waiting for live ladders", 60*time.Second, func() bool {
		return strings.Contains(n.stderr.String(), "a remote worker waits for live ladders")
	})
	const seconds = 16
	ls := n.createStream("cheated ladder")
	pub := publish(t, clipSized(t, 640, 360, seconds), n.rtmp+"/"+ls.StreamKey)
	n.waitFor("the cheat to take the ladder", 60*time.Second, func() bool {
		return strings.Contains(cheat.stderr.String(), "encoding a live ladder")
	})
	honest := startRemoteWorker(t, n, token, "SHOAL_TRANSCODE_MAX_LADDERS=0", "SHOAL_TRANSCODE_PRESET=ultrafast")
	n.waitFor("the cheat to be caught and the honest worker to take over", 60*time.Second, func() bool {
		return strings.Contains(n.stderr.String(), "failed the re-check: it is dropped from the stream") &&
			strings.Contains(honest.stderr.String(), "encoding a live ladder")
	})
	if err := pub.Wait(); err != nil {
		t.Fatalf("publisher: %v", err)
	}
	n.waitLadderEnd(ls.ID)
	for _, l := range strings.Split(n.stderr.String(), "\n") {
		if strings.Contains(l, "failed the re-check") || strings.Contains(l, "another takes over") {
			t.Logf("origin: %s", l)
		}
	}
	n.checkLadderWhole(t, ls.ID, seconds)

	cid, hid := nodeIDOf(t, cheat), nodeIDOf(t, honest)
	n.waitFor("the honest worker's credit", 30*time.Second, func() bool {
		h := n.joinedWorkers()[hid]
		return h.Jobs != nil && h.Jobs.TranscodedPixels > 0
	})
	jw := n.joinedWorkers()
	c, h := jw[cid], jw[hid]
	t.Logf("cheat: %+v; honest: %+v", *c.Jobs, *h.Jobs)
	if c.Jobs.VerifyFailed != 1 || c.Jobs.TranscodedPixels != 0 || c.Jobs.SegmentsVerified != 0 || c.State != "active" {
		t.Errorf("the cheat in /v1/nodes: %s %+v, want one failed check, no credit, not yet quarantined", c.State, *c.Jobs)
	}
	if h.Jobs.VerifyFailed != 0 || h.Jobs.SegmentsVerified < 1 || h.Jobs.TranscodedPixels <= 0 {
		t.Errorf("the honest worker in /v1/nodes: %+v, want verified cells and pixels, no failure", *h.Jobs)
	}
}
