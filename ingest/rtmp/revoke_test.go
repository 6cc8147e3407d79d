package rtmp

import (
	"context"
	"net/url"
	"testing"
	"time"

	"github.com/bluenviron/gortmplib"
	"github.com/bluenviron/gortmplib/pkg/codecs"

	"github.com/shoal-video/shoal/internal/media"
)

var testH264 = &codecs.H264{
	SPS: []byte{0x67, 0x64, 0x00, 0x0c, 0xac, 0x3b, 0x50, 0xb0, 0x4b, 0x42, 0x00, 0x00, 0x03, 0x00, 0x02, 0x00, 0x00, 0x03, 0x00, 0x3d, 0x08},
	PPS: []byte{0x68, 0xee, 0x3c, 0x80},
}

// publishTo connects a gortmplib client publishing to r with the test key
// (its key accepted once the server has checked it); both end with t.
func publishTo(t *testing.T, r *rig) (context.Context, *gortmplib.Client) {
	t.Helper()
	u, _ := url.Parse("rtmp://" + r.srv.Addr().String() + "/live/" + testKey)
	c := &gortmplib.Client{URL: u, Publish: true}
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	t.Cleanup(cancel)
	if err := c.Initialize(ctx); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	return ctx, c
}

// A key reset or a deleted stream (Disconnect) that lands after the key
// was accepted but before the publisher sent its tracks reaches it: its
// connection is closed and it never goes live. Before, Disconnect found
// nothing until the publication started, and a client holding the track
// detection open (a frame every few seconds) went live with a revoked key.
// (Found by a review helper.)
func TestDisconnectReachesAPublisherReadingItsTracks(t *testing.T) {
	t.Parallel()
	r := newRig(t, 5*time.Second)
	ctx, c := publishTo(t, r)
	// The server checks the key once the client's publish is in: the
	// reset comes once it is accepted.
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for !r.srv.Disconnect("stream1") {
		select {
		case <-ctx.Done():
			t.Fatal("Disconnect never found the publisher whose key was accepted")
		case <-tick.C:
		}
	}
	tr := &gortmplib.Track{Codec: testH264}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{tr}}
	failed := w.Initialize() != nil
	for i := 0; !failed && ctx.Err() == nil; i++ {
		d := time.Duration(i) * 33 * time.Millisecond
		failed = w.WriteH264(tr, d, d, [][]byte{{0x65, 0x88, 0x84, 0x00}}) != nil
	}
	if !failed {
		t.Fatal("the disconnected publisher could go on writing")
	}
	if r.hub.Publishing(media.StreamKey{Name: "stream1", Rendition: media.RenditionSource}) {
		t.Fatal("a publisher disconnected before its tracks is live")
	}
}

// RTMP timestamps are 32-bit milliseconds: they wrap after 49.7 days of
// streaming (or soon for an encoder that starts high). The hub sees a
// decoding time that keeps going forward; before, it jumped back by 2^32
// ms and the packager dropped every frame after it, freezing a 24/7
// stream. (Found by a review helper.)
func TestTimestampWrapKeepsTimeGoingForward(t *testing.T) {
	t.Parallel()
	r := newRig(t, 5*time.Second)
	watch := r.hub.Watch(func(media.StreamKey) bool { return true })
	defer watch.Close()
	ctx, c := publishTo(t, r)
	tr := &gortmplib.Track{Codec: testH264}
	w := &gortmplib.Writer{Conn: c, Tracks: []*gortmplib.Track{tr}}
	if err := w.Initialize(); err != nil {
		t.Fatal(err)
	}
	start := time.Duration(1<<32-3000) * time.Millisecond // 3 s before the wrap
	go func() {
		for i := range 200 {
			d := start + time.Duration(i)*40*time.Millisecond
			if w.WriteH264(tr, d, d, [][]byte{{0x65, 0x88, 0x84, 0x00}}) != nil {
				return
			}
		}
	}()
	sub, err := watch.Next(ctx)
	if err != nil {
		t.Fatal(err)
	}
	defer sub.Close()
	last := int64(-1 << 62)
	for n := 0; n < 150; {
		ev, err := sub.Next(ctx)
		if err != nil {
			t.Fatal(err)
		}
		if ev.AU == nil || ev.AU.Payload[len(ev.AU.Payload)-1][0]&0x1f != 5 {
			continue // the parameter sets of the sequence header (at time 0)
		}
		n++
		if step := ev.AU.DTS - last; last > -1<<62 && step != media.Ticks(40*time.Millisecond, 90000) {
			t.Fatalf("frame %d: DTS went from %d to %d (a step of %d ticks, want 3600)", n, last, ev.AU.DTS, step)
		}
		last = ev.AU.DTS
	}
}
