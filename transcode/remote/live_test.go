package remote

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"
	"time"

	"github.com/bluenviron/mediacommon/v2/pkg/codecs/h264"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/transcode/ffmpeg"
)

// liveSourceBody frames a real H.264 clip as the origin sends it: the
// header, then the video's access units from the first at or after from
// seconds that is a keyframe (as a replacement gets the current GOP).
func liveSourceBody(t *testing.T, anchor func(first int64) int64, from time.Duration) (body []byte, aus []*media.AccessUnit, hdr nodeproto.LiveSource) {
	t.Helper()
	src := testutil.MakeTS(t, 640, 360, 5, 45)
	var track media.Track
	if err := ffmpeg.DemuxVideo(src, func(tr media.Track, au *media.AccessUnit) error {
		track = tr
		aus = append(aus, au)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	start := 0
	for start < len(aus) && (!aus[start].Keyframe || media.Duration(aus[start].PTS-aus[0].PTS, 90000) < from) {
		start++
	}
	hdr = nodeproto.LiveSource{Stream: "live1", Tracks: []nodeproto.LiveTrack{nodeproto.LiveTrackOf(track)},
		Ladder: "240p:400k,180p:300k", Preset: "ultrafast", SegmentMillis: 1000, KeyframeAnchor: anchor(aus[0].PTS)}
	var buf bytes.Buffer
	w := nodeproto.NewLiveWriter(&buf, nil)
	if err := w.WriteSource(hdr); err != nil {
		t.Fatal(err)
	}
	for _, au := range aus[start:] {
		if err := w.WriteAU(au); err != nil {
			t.Fatal(err)
		}
	}
	return buf.Bytes(), aus[start:], hdr
}

type liveRungs struct {
	hdr  nodeproto.LiveRenditions
	aus  [][]*media.AccessUnit
	keys [][]int64
}

func readRenditions(t *testing.T, body []byte) liveRungs {
	t.Helper()
	r := nodeproto.NewLiveReader(bytes.NewReader(body))
	var out liveRungs
	for {
		f, err := r.Next()
		if errors.Is(err, io.EOF) {
			return out
		}
		if err != nil {
			t.Fatal(err)
		}
		switch {
		case f.Renditions != nil:
			if out.hdr.Stream != "" {
				t.Fatalf("a second renditions header: %+v", f.Renditions)
			}
			out.hdr = *f.Renditions
			out.aus = make([][]*media.AccessUnit, len(out.hdr.Rungs))
			out.keys = make([][]int64, len(out.hdr.Rungs))
		case f.AU != nil:
			if out.aus == nil || f.AU.Track >= len(out.aus) {
				t.Fatalf("access unit of rung %d before or outside the header", f.AU.Track)
			}
			out.aus[f.AU.Track] = append(out.aus[f.AU.Track], f.AU)
			if f.AU.Keyframe {
				out.keys[f.AU.Track] = append(out.keys[f.AU.Track], f.AU.PTS)
			}
		default:
			t.Fatalf("unexpected frame %+v", f)
		}
	}
}

// A worker encodes a framed source into framed rungs: every frame of
// every rung comes back, keyed on the header's grid; a worker that takes
// over from a source keyframe off that grid keys where the first did.
func TestEncodeLive(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	base := ffmpeg.Config{Backend: ffmpeg.BackendSoftware}
	encode := func(body []byte) liveRungs {
		var out bytes.Buffer
		if err := EncodeLive(t.Context(), base, bytes.NewReader(body), nodeproto.NewLiveWriter(&out, nil), log); err != nil {
			t.Fatal(err)
		}
		return readRenditions(t, out.Bytes())
	}
	// The grid is half a second after the first frame.
	anchor := func(first int64) int64 { return first + 45000 }
	body, aus, hdr := liveSourceBody(t, anchor, 0)
	whole := encode(body)
	if len(whole.hdr.Rungs) != 2 || whole.hdr.Rungs[0].Name != "240p" || whole.hdr.Rungs[0].Height != 240 || whole.hdr.Rungs[0].Bitrate != 400_000 ||
		whole.hdr.Rungs[1].Name != "180p" || whole.hdr.Stream != "live1" {
		t.Fatalf("renditions header %+v", whole.hdr)
	}
	for i, rung := range whole.aus {
		if len(rung) != len(aus) {
			t.Errorf("rung %d: %d frames, want %d", i, len(rung), len(aus))
		}
		var sps h264.SPS
		for _, n := range rung[0].Payload {
			if h264.NALUType(n[0]&0x1f) == h264.NALUTypeSPS {
				if err := sps.Unmarshal(n); err != nil {
					t.Fatal(err)
				}
			}
		}
		if sps.Height() != whole.hdr.Rungs[i].Height || sps.Width() != whole.hdr.Rungs[i].Width {
			t.Errorf("rung %d: SPS %dx%d, header %+v", i, sps.Width(), sps.Height(), whole.hdr.Rungs[i])
		}
		keys := whole.keys[i]
		if keys[0] != aus[0].PTS || len(keys) < 5 {
			t.Errorf("rung %d: keyframes %v", i, keys)
		}
		for _, k := range keys[1:] {
			if (k-hdr.KeyframeAnchor)%90000 != 0 {
				t.Errorf("rung %d: keyframe %d off the grid at %d", i, k, hdr.KeyframeAnchor)
			}
		}
	}
	if !slicesEqual(whole.keys[0], whole.keys[1]) {
		t.Errorf("rungs keyed apart: %v vs %v", whole.keys[0], whole.keys[1])
	}
	// A replacement from the source's keyframe after 2.5 s (off the grid).
	body, rest, _ := liveSourceBody(t, anchor, 2500*time.Millisecond)
	if (rest[0].PTS-hdr.KeyframeAnchor)%90000 == 0 {
		t.Fatalf("the replacement starts on the grid (%d): the test proves nothing", rest[0].PTS)
	}
	again := encode(body)
	for i := range again.keys {
		var want []int64
		for _, k := range whole.keys[i] {
			if k > rest[0].PTS {
				want = append(want, k)
			}
		}
		if again.keys[i][0] != rest[0].PTS || !slicesEqual(again.keys[i][1:], want) {
			t.Errorf("rung %d: the replacement keyed at %v, want %d then %v", i, again.keys[i], rest[0].PTS, want)
		}
	}
}

func slicesEqual(a, b []int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// A broken source body is an error (the origin then fails over), never a
// clean end.
func TestEncodeLiveBrokenSource(t *testing.T) {
	t.Parallel()
	log := slog.New(slog.DiscardHandler)
	base := ffmpeg.Config{Backend: ffmpeg.BackendSoftware}
	body, _, hdr := liveSourceBody(t, func(first int64) int64 { return first }, 0)
	var audio, wrongTrack bytes.Buffer
	aw, ww := nodeproto.NewLiveWriter(&audio, nil), nodeproto.NewLiveWriter(&wrongTrack, nil)
	if err := ww.WriteSource(hdr); err != nil {
		t.Fatal(err)
	}
	for _, w := range []*nodeproto.LiveWriter{aw, ww} {
		if err := w.WriteAU(&media.AccessUnit{Track: 1, Payload: [][]byte{{1}}}); err != nil {
			t.Fatal(err)
		}
	}
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	for name, c := range map[string]struct {
		ctx  context.Context
		body []byte
		want string
	}{
		"cut mid-frame":    {t.Context(), body[:len(body)/2+3], "unexpected EOF"},
		"no header":        {t.Context(), nil, "EOF"},
		"not the video":    {t.Context(), wrongTrack.Bytes(), "not the video"},
		"context ended":    {ctx, body, "context canceled"},
		"header not first": {t.Context(), audio.Bytes(), "does not start with its header"},
	} {
		err := EncodeLive(c.ctx, base, bytes.NewReader(c.body), nodeproto.NewLiveWriter(io.Discard, nil), log)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: %v, want %q", name, err, c.want)
		}
	}
}
