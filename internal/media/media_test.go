package media

import (
	"testing"
	"time"
)

func TestTicksAndDuration(t *testing.T) {
	t.Parallel()
	cases := []struct {
		d     time.Duration
		rate  int
		ticks int64
	}{
		{0, 90000, 0},
		{time.Second, 90000, 90000},
		{33 * time.Millisecond, 90000, 2970},
		{21333 * time.Microsecond, 48000, 1023},
		{-40 * time.Millisecond, 90000, -3600},
		{30 * time.Hour, 90000, 30 * 3600 * 90000}, // no overflow on long streams
	}
	for _, c := range cases {
		if got := Ticks(c.d, c.rate); got != c.ticks {
			t.Errorf("Ticks(%s, %d) = %d, want %d", c.d, c.rate, got, c.ticks)
		}
	}
	if got := Duration(90000*3600*30, 90000); got != 30*time.Hour {
		t.Errorf("Duration = %s, want 30h", got)
	}
	if got := Duration(1024, 48000); got != 21333333*time.Nanosecond {
		t.Errorf("Duration(1024, 48000) = %s", got)
	}
	if Duration(5, 0) != 0 {
		t.Error("Duration with rate 0 must be 0")
	}
	if !CodecH264.IsVideo() || CodecAAC.IsVideo() || (Track{Codec: CodecH265}).IsVideo() == false {
		t.Error("IsVideo is wrong")
	}
	au := AccessUnit{Payload: [][]byte{{1, 2}, {3}}}
	if au.Size() != 3 {
		t.Errorf("Size = %d", au.Size())
	}
}
