package transcode

import (
	"context"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// A publisher starts audio-only (a camera whose video encoder is still
// starting, OBS with the video source off), drops and reconnects within the
// grace with video: the ladder runs, and the stream's error (Problem,
// shown as the live stream's "error" in the API) no longer says it has no video.
func TestProblemClearedWhenVideoArrivesAfterReconnect(t *testing.T) {
	hub, err := stream.New(stream.Config{QueueSize: 1 << 16, Grace: time.Minute}, stream.Deps{Log: quiet})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() { _ = hub.Run(ctx); close(done) }()
	t.Cleanup(func() { cancel(); <-done })

	tc := startTranscoder(t, hub, softwareConfig("240p:400k", 1))
	rungs := hub.Watch(func(k media.StreamKey) bool { return k.Rendition == "240p" })
	defer rungs.Close()
	key := media.StreamKey{Name: "cam", Rendition: media.RenditionSource}

	pub, err := hub.Publish(key, []media.Track{aacTrack})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 10 {
		pub.Write(&media.AccessUnit{PTS: int64(i) * 1024, DTS: int64(i) * 1024, Keyframe: true, Payload: [][]byte{{0x21, 0x10, byte(i), 0x80}}})
	}
	pub.Close() // drops; reconnects within the grace, now with video

	track, aus := demux(t, makeTS(t, 640, 360, 2, 30))
	pub, err = hub.Publish(key, []media.Track{track, aacTrack})
	if err != nil {
		t.Fatal(err)
	}
	for _, au := range aus {
		pub.Write(au)
	}
	sub := nextRendition(t, rungs) // the ladder runs
	defer sub.Close()
	p := tc.Problem("cam")
	pub.End()
	if p != "" {
		t.Fatalf("the ladder is running (rendition %s published), yet Problem = %q", sub.Key(), p)
	}
}
