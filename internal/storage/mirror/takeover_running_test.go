package mirror_test

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// Origin A ingests a stream; its lease runs out under it (a GC pause, a
// partition from Redis) and origin B takes the broadcast over, continuing
// A's recording from the bucket. A only learns it at its next renewal and
// then ends its session: its packager finishes A's recording (ENDLIST) and
// A's still-running mirror uploads it, replacing the recording B continued
// (B's part gone from the bucket's recording once B has ended; a late
// upload after a partition lands any time later). On the old code the
// judgment that keeps a taken-over recording (takenOver) was made only for
// an earlier run's leftovers, never for a running origin's own session.
// (Most of its time is the shared S3 server's start, when run alone.)
func TestRunningMirrorKeepsARecordingTakenOver(t *testing.T) {
	t.Parallel()
	e := start(t, false)
	e.run()
	const id = "stream9abc"
	// A's broadcast, up to its 2nd segment, in the bucket.
	e.write(id+"/720p/a-0-0.m4s", "A segment 0")
	e.write(id+"/720p/recording.m3u8", "a-0-0\n")
	e.waitFor("A's first uploads", 20*time.Second, func() bool { return e.m.Pending() == 0 })
	// B takes the broadcast over and finishes it: A's part, a
	// discontinuity, B's part.
	taken := "a-0-0\n#EXT-X-DISCONTINUITY\nb-0-0\nb-0-1\n#EXT-X-ENDLIST\n"
	if _, err := e.store.Store.Put(t.Context(), id+"/720p/recording.m3u8", strings.NewReader(taken), int64(len(taken))); err != nil {
		t.Fatal(err)
	}
	// A learns it lost the lease: its session ends, its recording is
	// finished and goes up.
	e.write(id+"/720p/a-0-1.m4s", "A segment 1")
	e.write(id+"/720p/recording.m3u8", "a-0-0\na-0-1\n#EXT-X-ENDLIST\n")
	e.m.Ended(id)
	e.waitFor("A's spool to empty", 20*time.Second, func() bool {
		_, err := os.Stat(filepath.Join(e.dir, id))
		return os.IsNotExist(err)
	})
	if got, _ := e.object(id + "/720p/recording.m3u8"); got != taken {
		t.Fatalf("the recording B continued was replaced by A's: %q", got)
	}
}
