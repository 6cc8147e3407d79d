package verify

import (
	"bytes"
	"math"
	"strconv"
	"testing"
	"time"
)

func playlist(n int, d time.Duration) []PlaylistSegment {
	segs := make([]PlaylistSegment, n)
	for i := range segs {
		segs[i] = PlaylistSegment{URI: "s" + strconv.Itoa(i) + ".m4s", Duration: d}
	}
	return segs
}

var seed = []byte("a secret of the origin, 32 bytes")

// The sample is deterministic for a seed, differs between seeds, picks
// about the fraction asked, says where each pick lies, and does not change
// the picks of segments already listed when the playlist grows.
func TestSample(t *testing.T) {
	t.Parallel()
	segs := playlist(10_000, 2*time.Second)
	a, err := Sample(segs, 0.02, seed)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := Sample(segs, 0.02, seed)
	if len(a) != len(b) {
		t.Fatal("two samples with one seed differ")
	}
	for i := range a {
		if a[i] != b[i] {
			t.Fatal("two samples with one seed differ")
		}
	}
	// 2% of 10,000: 200, a standard deviation of 14.
	if len(a) < 150 || len(a) > 250 {
		t.Fatalf("%d picks of 10000 at 2%%", len(a))
	}
	for _, p := range a {
		if p.Start != time.Duration(p.Index)*2*time.Second || p.End != p.Start+2*time.Second || p.URI != segs[p.Index].URI {
			t.Fatalf("pick %+v", p)
		}
		if ok, err := Picked(seed, p.Index, 0.02); err != nil || !ok {
			t.Fatalf("Picked(%d) = %v, %v", p.Index, ok, err)
		}
	}
	other, _ := Sample(segs, 0.02, bytes.Repeat([]byte{7}, 32))
	same := 0
	in := map[int]bool{}
	for _, p := range a {
		in[p.Index] = true
	}
	for _, p := range other {
		if in[p.Index] {
			same++
		}
	}
	// Two independent 2% samples share about 4 of 10,000.
	if same > 20 {
		t.Fatalf("another seed picks %d of the same segments", same)
	}
	// A longer playlist keeps the picks of its first segments.
	longer, _ := Sample(playlist(20_000, 2*time.Second), 0.02, seed)
	for i, p := range a {
		if longer[i] != p {
			t.Fatalf("pick %d: %+v, then %+v in a longer playlist", i, p, longer[i])
		}
	}
	all, _ := Sample(playlist(7, time.Second), 1, seed)
	if len(all) != 7 {
		t.Fatalf("%d picks of 7 at 100%%", len(all))
	}
}

// Every job gets at least one segment checked, even when the fraction
// picks none of its few segments; segment durations may differ.
func TestSampleAtLeastOne(t *testing.T) {
	t.Parallel()
	for n := 1; n <= 20; n++ {
		segs := playlist(n, 2*time.Second)
		segs[0].Duration = 1500 * time.Millisecond
		picks, err := Sample(segs, 0.0001, seed)
		if err != nil || len(picks) != 1 {
			t.Fatalf("%d segments: %v, %v", n, picks, err)
		}
		p := picks[0]
		want := time.Duration(0)
		if p.Index > 0 {
			want = 1500*time.Millisecond + time.Duration(p.Index-1)*2*time.Second
		}
		if p.Start != want || p.End-p.Start != segs[p.Index].Duration {
			t.Fatalf("pick %+v, want start %s", p, want)
		}
	}
	if picks, err := Sample(nil, 0.5, seed); err != nil || len(picks) != 0 {
		t.Fatalf("an empty playlist: %v, %v", picks, err)
	}
}

func TestSampleRefusesBadArguments(t *testing.T) {
	t.Parallel()
	segs := playlist(10, time.Second)
	for name, fn := range map[string]func() error{
		"short seed":      func() error { _, err := Sample(segs, 0.1, []byte("guessable")); return err },
		"no seed":         func() error { _, err := Sample(segs, 0.1, nil); return err },
		"zero fraction":   func() error { _, err := Sample(segs, 0, seed); return err },
		"fraction over 1": func() error { _, err := Sample(segs, 1.5, seed); return err },
		"NaN fraction":    func() error { _, err := Sample(segs, math.NaN(), seed); return err },
		"zero duration": func() error {
			bad := playlist(3, time.Second)
			bad[1].Duration = 0
			_, err := Sample(bad, 0.1, seed)
			return err
		},
		"Picked short seed": func() error { _, err := Picked([]byte("x"), 0, 0.1); return err },
	} {
		if err := fn(); err == nil {
			t.Errorf("%s: no error", name)
		}
	}
}
