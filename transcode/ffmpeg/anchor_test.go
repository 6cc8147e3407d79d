package ffmpeg

import (
	"slices"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// A pipeline that replaces another mid-stream (a remote worker's, a failed
// one) starts at a source keyframe that is not on the grid; with the
// same anchor it forces its keyframes at the grid instants the first one
// used, so the rungs' segments stay aligned across the switch.
func TestKeyframeAnchor(t *testing.T) {
	t.Parallel()
	src := makeTS(t, 640, 360, 6, 30)
	var track media.Track
	var aus []*media.AccessUnit
	if err := DemuxVideo(src, func(tr media.Track, au *media.AccessUnit) error {
		track = tr
		aus = append(aus, au)
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	// The replacement starts at the first source keyframe after 2 s.
	start := -1
	for i, au := range aus {
		if au.Keyframe && au.PTS-aus[0].PTS >= 2*90000 {
			start = i
			break
		}
	}
	if start < 0 {
		t.Fatal("no source keyframe after 2 s")
	}
	// The grid is half a second off that keyframe.
	anchor := aus[start].PTS + 45000
	rungs := []Rung{{Name: "240p", Height: 240, Bitrate: 400_000}, {Name: "180p", Height: 180, Bitrate: 300_000}}
	encode := func(cfg Config, from int) [][]int64 {
		t.Helper()
		p, err := New(cfg, track, rungs)
		if err != nil {
			t.Fatal(err)
		}
		defer p.Close()
		keys := make([][]int64, len(rungs))
		emit := func(i int, au *media.AccessUnit) {
			if au.Keyframe {
				keys[i] = append(keys[i], au.PTS)
			}
		}
		for _, au := range aus[from:] {
			if err := p.Push(au, emit); err != nil {
				t.Fatal(err)
			}
		}
		if err := p.Flush(emit); err != nil {
			t.Fatal(err)
		}
		return keys
	}
	cfg := Config{Backend: BackendSoftware, Preset: "ultrafast", KeyframeInterval: time.Second, Log: quiet,
		Anchored: true, KeyframeAnchor: anchor}
	first := encode(cfg, 0)
	second := encode(cfg, start)
	for i := range rungs {
		// The first: its first frame, then the grid instants (anchor ± k s).
		if first[i][0] != aus[0].PTS {
			t.Errorf("rung %d: first keyframe at %d, want the first frame %d", i, first[i][0], aus[0].PTS)
		}
		for _, k := range first[i][1:] {
			if (k-anchor)%90000 != 0 {
				t.Errorf("rung %d: keyframe at %d is off the grid anchored at %d: %v", i, k, anchor, first[i])
			}
		}
		if len(first[i]) < 6 {
			t.Errorf("rung %d: keyframes %v, want one a second", i, first[i])
		}
		// The replacement: its first frame, then exactly the first's
		// keyframes from there on.
		if second[i][0] != aus[start].PTS {
			t.Errorf("rung %d: the replacement starts at %d, want %d", i, second[i][0], aus[start].PTS)
		}
		var want []int64
		for _, k := range first[i] {
			if k > aus[start].PTS {
				want = append(want, k)
			}
		}
		if !slices.Equal(second[i][1:], want) {
			t.Errorf("rung %d: the replacement's keyframes %v, want %v (the first pipeline's)", i, second[i][1:], want)
		}
	}
	// Not anchored, the grid starts at the first frame: a replacement's
	// keyframes drift off the first's.
	cfg.Anchored = false
	if loose := encode(cfg, start); slices.Equal(loose[0][1:], second[0][1:]) {
		t.Errorf("unanchored keyframes %v match the anchored ones", loose[0])
	}
}
