package media

import (
	"strings"
	"testing"
)

func TestParseLadder(t *testing.T) {
	t.Parallel()
	l, err := ParseLadder(" 480p:1200k, 1080p:5M,720p:3000k ")
	if err != nil {
		t.Fatal(err)
	}
	if got := l.String(); got != "1080p:5000k,720p:3000k,480p:1200k" {
		t.Fatalf("ladder %s", got)
	}
	if DefaultLadder.String() != "1080p:5000k,720p:3000k,480p:1200k,360p:700k" {
		t.Fatal("default ladder changed")
	}
	nine := "2160p:20M,1440p:12M,1080p:5M,900p:4M,720p:3M,540p:2M,480p:1200k,360p:700k,240p:400k"
	if _, err := ParseLadder(nine); err == nil || !strings.Contains(err.Error(), "at most 8") {
		t.Errorf("a nine-rung ladder: %v", err)
	}
	if _, err := ParseLadder(nine[strings.IndexByte(nine, ',')+1:]); err != nil {
		t.Errorf("an eight-rung ladder: %v", err)
	}
	for _, bad := range []string{"", "720p", "721p:1M", "720p:1", "720p:1M,720p:2M", "99999p:1M", "720p:abc", strings.Repeat("720p:1M,", 500) + "720p:1M"} {
		if _, err := ParseLadder(bad); err == nil {
			t.Errorf("ParseLadder(%q) accepted", bad)
		}
	}
}

func TestLadderFor(t *testing.T) {
	t.Parallel()
	names := func(l Ladder) string {
		var s []string
		for _, r := range l {
			s = append(s, r.Name())
		}
		return strings.Join(s, ",")
	}
	for src, want := range map[int]string{1080: "1080p,720p,480p,360p", 720: "720p,480p,360p", 400: "360p", 240: "240p", 0: "1080p,720p,480p,360p"} {
		if got := names(DefaultLadder.For(src)); got != want {
			t.Errorf("For(%d) = %s, want %s", src, got, want)
		}
	}
}

func FuzzParseLadder(f *testing.F) {
	f.Add("1080p:5000k,720p:3000k")
	f.Add("360p:0.7M")
	f.Fuzz(func(t *testing.T, s string) {
		l, err := ParseLadder(s)
		if err != nil {
			return
		}
		again, err := ParseLadder(l.String())
		if err != nil || again.String() != l.String() {
			t.Fatalf("%q -> %q does not round-trip: %v", s, l.String(), err)
		}
	})
}
