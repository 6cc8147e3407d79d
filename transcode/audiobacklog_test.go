package transcode

import (
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/media"
	"github.com/shoal-video/shoal/internal/stream"
)

// The audio kept for rungs that start late stays about maxAudioBacklog
// long even when the source's audio timestamps step back (an encoder
// that restarts its clock without reconnecting, a camera, or a publisher
// doing it on purpose): the ingests pass a step back of more than a
// second through as it comes.
func TestRecentAudioBoundedAfterTimestampStepBack(t *testing.T) {
	t.Parallel()
	video := media.Track{Codec: media.CodecH264, ClockRate: 90000, Width: 320, Height: 240}
	j := &job{t: &Transcoder{}, id: "x", log: quiet, tracks: []media.Track{video, aacTrack}, vIdx: 0, aIdx: 1,
		pubs: map[string]*stream.Publisher{}}
	const frame = 1024         // samples per AAC frame at 48 kHz
	pts := int64(3600 * 48000) // an hour into the broadcast
	for range 500 {            // about 10 s
		j.handle(&media.AccessUnit{Track: 1, PTS: pts, DTS: pts, Keyframe: true, Payload: [][]byte{make([]byte, 4096)}})
		pts += frame
	}
	// The audio clock steps back to zero and runs on for ten minutes.
	pts = 0
	for range 10 * 60 * 48000 / frame {
		j.handle(&media.AccessUnit{Track: 1, PTS: pts, DTS: pts, Keyframe: true, Payload: [][]byte{make([]byte, 4096)}})
		pts += frame
	}
	limit := int(2 * maxAudioBacklog / (time.Second * frame / 48000)) // twice the backlog, in frames
	if n := len(j.recentAudio); n > limit {
		t.Fatalf("%d audio frames (%s, %d KiB) kept for late rungs after a step back of the audio clock; want at most %d (about %s)",
			n, media.Duration(int64(n)*frame, 48000), n*4096/1024, limit, 2*maxAudioBacklog)
	}
}
