package media

import (
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
)

// Rung is one video rendition of an ABR ladder, before the source is known:
// the output width follows the source's aspect ratio.
type Rung struct {
	Height  int // pixels
	Bitrate int // bits per second
}

// Name is the rendition name of the rung, e.g. "720p".
func (r Rung) Name() string { return strconv.Itoa(r.Height) + "p" }

// Ladder is an ordered list of rungs, highest first.
type Ladder []Rung

// DefaultLadder is used when neither the node nor the stream names one.
var DefaultLadder = Ladder{{1080, 5_000_000}, {720, 3_000_000}, {480, 1_200_000}, {360, 700_000}}

// String renders l in the form ParseLadder reads.
func (l Ladder) String() string {
	parts := make([]string, len(l))
	for i, r := range l {
		if r.Bitrate%1000 == 0 {
			parts[i] = fmt.Sprintf("%dp:%dk", r.Height, r.Bitrate/1000)
		} else {
			parts[i] = fmt.Sprintf("%dp:%d", r.Height, r.Bitrate)
		}
	}
	return strings.Join(parts, ",")
}

// MaxRungs caps a ladder: every rung is an encoder running for the whole
// broadcast, and a ladder from an API request must not make one stream
// take a whole node.
const MaxRungs = 8

// ParseLadder reads "1080p:5000k,720p:3000k,480p:1200k" (bitrates in k or M
// bits per second). Heights must be even, 144 to 4320, and distinct; bitrates
// 100k to 100M; at most MaxRungs rungs. The result is sorted highest first.
func ParseLadder(s string) (Ladder, error) {
	s = strings.TrimSpace(s)
	if s == "" {
		return nil, errors.New("empty ladder")
	}
	if n := strings.Count(s, ",") + 1; n > MaxRungs {
		return nil, fmt.Errorf("%d rungs: a ladder has at most %d", n, MaxRungs)
	}
	var l Ladder
	for _, part := range strings.Split(s, ",") {
		part = strings.TrimSpace(part)
		hs, bs, ok := strings.Cut(part, ":")
		if !ok {
			return nil, fmt.Errorf("rung %q: want HEIGHTp:BITRATE, e.g. 720p:3000k", part)
		}
		h, err := strconv.Atoi(strings.TrimSuffix(strings.ToLower(hs), "p"))
		if err != nil || h < 144 || h > 4320 || h%2 != 0 {
			return nil, fmt.Errorf("rung %q: height must be an even number of pixels from 144 to 4320", part)
		}
		bs = strings.ToLower(strings.TrimSpace(bs))
		mult := 1
		switch {
		case strings.HasSuffix(bs, "k"):
			mult, bs = 1000, strings.TrimSuffix(bs, "k")
		case strings.HasSuffix(bs, "m"):
			mult, bs = 1_000_000, strings.TrimSuffix(bs, "m")
		}
		f, err := strconv.ParseFloat(bs, 64)
		b := int(f * float64(mult))
		if err != nil || b < 100_000 || b > 100_000_000 {
			return nil, fmt.Errorf("rung %q: bitrate must be 100k to 100M", part)
		}
		if slices.ContainsFunc(l, func(r Rung) bool { return r.Height == h }) {
			return nil, fmt.Errorf("rung %q: height %dp appears twice", part, h)
		}
		l = append(l, Rung{Height: h, Bitrate: b})
	}
	slices.SortFunc(l, func(a, b Rung) int { return b.Height - a.Height })
	return l, nil
}

// For returns the rungs to encode for a source of the given height: never
// upscale; a source below every rung gets one rung at its own height with
// the lowest rung's bitrate.
func (l Ladder) For(srcHeight int) Ladder {
	if srcHeight <= 0 {
		return l
	}
	var out Ladder
	for _, r := range l {
		if r.Height <= srcHeight {
			out = append(out, r)
		}
	}
	if len(out) == 0 && len(l) > 0 {
		out = Ladder{{Height: srcHeight &^ 1, Bitrate: l[len(l)-1].Bitrate}}
	}
	return out
}
