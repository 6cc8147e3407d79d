package verify

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"time"
)

// PlaylistSegment is one segment of a rendition's playlist.
type PlaylistSegment struct {
	URI      string
	Duration time.Duration // its EXTINF
}

// Pick is a segment chosen for checking, with its span on the timeline
// (the sum of the durations before it), as Request takes it.
type Pick struct {
	Index      int
	URI        string
	Start, End time.Duration
}

// MinSeedBytes is the shortest seed Sample takes: the seed is what keeps
// the sample unpredictable, so it must be a secret of the origin's (for
// example an HMAC of the job's id under a key only the origin holds).
const MinSeedBytes = 16

// Sample picks the segments of a rendition to check: each one
// independently with probability fraction, decided by an HMAC-SHA256 of
// its index keyed with seed, so that the same seed always picks the same
// segments while a worker, which does not know the seed, cannot tell which
// of its segments will be checked. At least one segment of a non-empty
// list is picked (the one whose HMAC is lowest, when no other was). A
// segment's pick does not depend on the others, so a live playlist that
// grows keeps its earlier picks (see Picked).
func Sample(segments []PlaylistSegment, fraction float64, seed []byte) ([]Pick, error) {
	if err := checkSample(fraction, seed); err != nil {
		return nil, err
	}
	var picks []Pick
	var at time.Duration
	lowest, lowestAt, lowestIndex := uint64(math.MaxUint64), time.Duration(0), -1
	for i, s := range segments {
		if s.Duration <= 0 {
			return nil, fmt.Errorf("verify: segment %d has a duration of %s", i, s.Duration)
		}
		h := sampleHash(seed, i)
		if picked(h, fraction) {
			picks = append(picks, Pick{Index: i, URI: s.URI, Start: at, End: at + s.Duration})
		}
		if lowestIndex < 0 || h < lowest {
			lowest, lowestAt, lowestIndex = h, at, i
		}
		at += s.Duration
	}
	if len(picks) == 0 && lowestIndex >= 0 {
		s := segments[lowestIndex]
		picks = append(picks, Pick{Index: lowestIndex, URI: s.URI, Start: lowestAt, End: lowestAt + s.Duration})
	}
	return picks, nil
}

// Picked tells whether segment index is picked with this seed and fraction
// on its own (Sample's rule without the at-least-one guarantee): for
// segments checked as they come, as in a live stream.
func Picked(seed []byte, index int, fraction float64) (bool, error) {
	if err := checkSample(fraction, seed); err != nil {
		return false, err
	}
	return picked(sampleHash(seed, index), fraction), nil
}

func checkSample(fraction float64, seed []byte) error {
	if math.IsNaN(fraction) || fraction <= 0 || fraction > 1 {
		return fmt.Errorf("verify: the sampled fraction %v is not in (0, 1]", fraction)
	}
	if len(seed) < MinSeedBytes {
		return errors.New("verify: the sampling seed must be a secret of at least 16 bytes")
	}
	return nil
}

// picked: a segment whose hash is h is picked with probability fraction.
func picked(h uint64, fraction float64) bool {
	return fraction >= 1 || h < uint64(fraction*(1<<64))
}

func sampleHash(seed []byte, index int) uint64 {
	m := hmac.New(sha256.New, seed)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(index))
	m.Write([]byte("shoal verify sample\x00"))
	m.Write(b[:])
	return binary.BigEndian.Uint64(m.Sum(nil))
}

// WindowFraction is where, in [0, 1), the part of segment index checked
// starts within the room a segment longer than the part checked leaves
// (the audio check compares at most MaxAudioWindow of a segment): a secret
// of seed's, as Sample's picks are, so that a worker cannot tell which
// part of a segment is compared.
func WindowFraction(seed []byte, index int) float64 {
	m := hmac.New(sha256.New, seed)
	var b [8]byte
	binary.BigEndian.PutUint64(b[:], uint64(index))
	m.Write([]byte("shoal verify window\x00"))
	m.Write(b[:])
	return float64(binary.BigEndian.Uint64(m.Sum(nil))>>11) / (1 << 53)
}
