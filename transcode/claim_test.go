package transcode

import (
	"context"
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// TestLaterWatchersSeeTheClaimDecision races the end of one job (which
// releases its ladder slot) against the start of the next source: a watcher
// registered after the transcoder (as the packager's is) must get the same
// answer as the transcoder's own, every time.
func TestLaterWatchersSeeTheClaimDecision(t *testing.T) {
	hub := newHub(t)
	tc := startTranscoder(t, hub, softwareConfig("360p:700k", 1))
	var mine bool
	w := hub.Watch(func(k media.StreamKey) bool {
		if k.Rendition == media.RenditionSource && k.Name[0] == 'b' {
			mine = tc.Claimed(k.Name) // as the packager's ServeSource does
		}
		return false
	})
	defer w.Close()
	copies := hub.Watch(func(k media.StreamKey) bool { return k.Rendition == CopyRendition && k.Name[0] == 'b' })
	defer copies.Close()
	au := &media.AccessUnit{Keyframe: true, Payload: [][]byte{{1}}}
	leaks, doubles := 0, 0
	idle := func(running float64) bool { return running == 0 }
	for i := range 3000 {
		if !tc.awaitMetric(t, "shoal_transcode_ladders_running", idle, 2*time.Second) {
			t.Fatalf("iteration %d: a claim leaked (running stays %v); mine=%v", i, metric(t, tc.reg, "shoal_transcode_ladders_running"), mine)
		}
		a := fmt.Sprintf("a%d", i)
		b := fmt.Sprintf("b%d", i)
		pa, _ := hub.Publish(media.StreamKey{Name: a, Rendition: media.RenditionSource}, []media.Track{aacTrack})
		pa.Close()
		spin := time.Now().Add(time.Duration(rand.IntN(30)) * time.Microsecond)
		for time.Now().Before(spin) {
		}
		pb, _ := hub.Publish(media.StreamKey{Name: b, Rendition: media.RenditionSource}, []media.Track{aacTrack})
		pb.Write(au)
		pb.Close()
		if !mine {
			// Did the transcoder take b anyway? Wait for its job to end.
			tc.awaitMetric(t, "shoal_transcode_ladders_running", idle, 2*time.Second)
			ctx, cancel := context.WithCancel(context.Background())
			cancel()
			if s, err := copies.Next(ctx); err == nil {
				doubles++
				t.Logf("iteration %d: packager-side Claimed(%s) false, but the transcoder transcoded %s", i, b, s.Key())
				s.Close()
			}
		} else {
			// The transcoder took b: its copy rendition appears.
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
			s, err := copies.Next(ctx)
			cancel()
			if err != nil {
				leaks++
				t.Logf("iteration %d: packager-side Claimed(%s) true but no transcoding job", i, b)
				continue
			}
			s.Close()
		}
	}
	if leaks+doubles > 0 {
		t.Fatalf("watchers disagreed: %d sources nobody served, %d served twice", leaks, doubles)
	}
}
