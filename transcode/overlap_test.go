package transcode

import (
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
)

// A broadcast that starts again while the last one's ladder still drains
// (no reconnect grace, or the stream ended by the API and the encoder
// reconnecting) keeps its rungs and its slot: the old job ending must not
// clear what the new job set (Rungs feeds the master playlist's wait for
// the ladder). Both jobs took the generation of the newest claim when the
// old one's subscription was delivered after the new claim.
func TestOldJobEndingKeepsTheNewJobsRungs(t *testing.T) {
	t.Parallel()
	track, aus := demux(t, makeTS(t, 640, 360, 6, 30))
	hub := newHub(t) // no grace: Close ends the publication at once
	ended := make(chan uint64, 4)
	tc := startTranscoderWith(t, hub, softwareConfig("360p:700k,240p:400k", 2), quiet, func(tc *Transcoder) {
		tc.onJobEnd = func(_ string, gen uint64) { ended <- gen }
	})
	w := hub.Watch(func(k media.StreamKey) bool { return k.Rendition == "240p" })
	defer w.Close()
	key := media.StreamKey{Name: "again", Rendition: media.RenditionSource}

	a, err := hub.Publish(key, []media.Track{track})
	if err != nil {
		t.Fatal(err)
	}
	for _, au := range aus {
		a.Write(au)
	}
	a.Close() // job A has seconds of source queued to encode still

	b, err := hub.Publish(key, []media.Track{track}) // job B starts while A drains
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	first := nextRendition(t, w) // A's 240p
	readAll(t, first)            // ends when A's job ends its renditions
	first.Close()
	// B's rungs publish from its next keyframe on: feed it.
	go func() {
		for _, au := range aus {
			b.Write(au)
		}
	}()
	second := nextRendition(t, w) // B's 240p
	defer second.Close()
	select {
	case <-ended: // A's job, done with its clean-up
	case <-time.After(30 * time.Second):
		t.Fatal("the first job did not end")
	}
	if got := tc.Rungs("again"); len(got) != 2 {
		t.Fatalf("Rungs = %v while the new broadcast's ladder runs, want [360p 240p]", got)
	}
	// Nor does it free the new job's slot.
	if !tc.Claimed("again") {
		t.Fatal("the old job's end freed the slot of the new job, still running")
	}
}
