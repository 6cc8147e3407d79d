package ingest

import (
	"fmt"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/media"
)

func TestStreamKeyFromPath(t *testing.T) {
	t.Parallel()
	for path, want := range map[string]string{"/live/abc": "abc", "live/abc": "abc", "/live/abc/": "abc", "/live/": "", "/x/abc": "", "/live/a/b": "", "/live/a?b": ""} {
		got, err := StreamKeyFromPath("rtsp", path)
		if got != want || (want == "") != (err != nil) {
			t.Errorf("%q: %q %v, want %q", path, got, err, want)
		}
	}
	if _, err := StreamKeyFromPath("rtmp", "/x/abc"); err == nil || !strings.Contains(err.Error(), "rtmp://HOST/live/<stream_key>") {
		t.Errorf("error %v does not say where to publish", err)
	}
}

func TestDescribeAndMetrics(t *testing.T) {
	t.Parallel()
	got := Describe([]media.Track{{Codec: media.CodecH264, Width: 1280, Height: 720}, {Codec: media.CodecAAC, SampleRate: 48000, Channels: 2}})
	if strings.Join(got, ", ") != "h264 1280x720, aac 48000Hz 2ch" {
		t.Fatalf("Describe = %v", got)
	}
	reg := prometheus.NewRegistry()
	// Two protocols share the metric names, told apart by their label.
	if _, err := NewMetrics("rtmp", reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics("rtsp", reg); err != nil {
		t.Fatal(err)
	}
	if _, err := NewMetrics("rtsp", reg); err == nil {
		t.Fatal("registering one protocol twice was accepted")
	}
}

func TestConnLimiter(t *testing.T) {
	l := NewConnLimiter(3, 2)
	r1, ok1 := l.Acquire("192.0.2.1:1000")
	_, ok2 := l.Acquire("192.0.2.1:1001")
	_, ok3 := l.Acquire("192.0.2.1:1002")
	if !ok1 || !ok2 || ok3 {
		t.Fatalf("per address: %v %v %v, want the third refused", ok1, ok2, ok3)
	}
	_, ok4 := l.Acquire("[2001:db8::1]:5")
	_, ok5 := l.Acquire("198.51.100.1:5")
	if !ok4 || ok5 {
		t.Fatalf("in total: %v %v, want the fourth refused", ok4, ok5)
	}
	r1()
	r1() // releasing twice counts once
	if _, ok := l.Acquire("198.51.100.1:5"); !ok {
		t.Fatal("a released slot was not reused")
	}
	if _, ok := l.Acquire("203.0.113.9:1"); ok {
		t.Fatal("the total bound was exceeded after a double release")
	}
	var none *ConnLimiter
	if rel, ok := none.Acquire("x"); !ok {
		t.Fatal("a nil limiter refused")
	} else {
		rel()
	}
}

func TestAACClock(t *testing.T) {
	const rate = 44100
	ms := func(samples int64) int64 { return samples * 1000 / rate * rate / 1000 } // FLV's rounding, back in samples
	c := NewAACClock(1024)
	// Millisecond-rounded times of consecutive frames come out exact.
	at := func(ts int64) int64 {
		t.Helper()
		got, ok := c.Time(ts)
		if !ok {
			t.Fatalf("the frame at %d was dropped", ts)
		}
		return got
	}
	for i := int64(0); i < 200; i++ {
		if got := at(ms(i * 1024)); got != i*1024 {
			t.Fatalf("frame %d at %d, want %d", i, got, i*1024)
		}
	}
	// Two frames with the same millisecond (avenc_aac): the second follows
	// the first.
	base := int64(200 * 1024)
	if got := at(ms(base)); got != base {
		t.Fatalf("got %d want %d", got, base)
	}
	if got := at(ms(base)); got != base+1024 {
		t.Fatalf("a repeated time: %d, want %d", got, base+1024)
	}
	// A gap of a second restarts the count at the frame's own time, and a
	// jump back (a reconnect) too.
	gap := base + 1024 + rate
	if got := at(gap); got != gap {
		t.Fatalf("after a gap: %d, want %d", got, gap)
	}
	if got := at(0); got != 0 {
		t.Fatalf("after a jump back: %d, want 0", got)
	}
	// A source whose audio runs 0.1% fast against its timestamps for ten
	// minutes: frames are dropped now and then, never placed back in time.
	c = NewAACClock(1024)
	var last int64 = -1
	dropped := 0
	for i := int64(0); i < 10*60*rate/1024; i++ {
		ts := ms(i * 1024 * 999 / 1000)
		got, ok := c.Time(ts)
		if !ok {
			dropped++
			continue
		}
		if got <= last {
			t.Fatalf("frame %d at %d after %d", i, got, last)
		}
		last = got
	}
	if dropped == 0 || dropped > 40 {
		t.Errorf("%d frames dropped over 10 min at 0.1%% drift, want a few", dropped)
	}
}

// An IPv6 /64 is one address for the per-address connection limit, as for
// the key guard: one subscriber holds a whole /64, and rotating addresses
// in it took every slot of the node before. An IPv4-mapped address is the
// IPv4 address. (Found by a review helper.)
func TestConnLimiterCountsAnIPv6Slash64Once(t *testing.T) {
	t.Parallel()
	l := NewConnLimiter(1000, 16)
	n := 0
	for i := 1; i <= 200; i++ {
		if _, ok := l.Acquire(fmt.Sprintf("[2001:db8:1:2::%x]:5000", i)); ok {
			n++
		}
	}
	if n != 16 {
		t.Fatalf("one IPv6 /64 holds %d connections; the per-address limit is 16", n)
	}
	if _, ok := l.Acquire("[2001:db8:1:3::1]:5000"); !ok {
		t.Fatal("another /64 was refused")
	}
	for range 16 {
		if _, ok := l.Acquire("[::ffff:192.0.2.7]:5000"); !ok {
			t.Fatal("an IPv4-mapped address was refused early")
		}
	}
	if _, ok := l.Acquire("192.0.2.7:6000"); ok {
		t.Fatal("192.0.2.7 and ::ffff:192.0.2.7 are counted apart")
	}
}
