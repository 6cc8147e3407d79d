package app

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-video/shoal/internal/storage/fsstore"
)

// resumeFrom finds a dead origin's unfinished recordings: through the
// master playlist, or by listing before there is one; never a finished
// one, nor this origin's own (still in its spool).
func TestResumeFrom(t *testing.T) {
	t.Parallel()
	remote, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	spool := t.TempDir()
	resume := resumeFrom(spool, remote)
	put := func(key, data string) {
		t.Helper()
		if _, err := remote.Put(t.Context(), key, strings.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	const young, grown, ended, mine = "young1abcdefghijklmn", "grown1abcdefghijklmn", "ended1abcdefghijklmn", "mine01abcdefghijklmn"
	put(young+"/720p/recording.m3u8", "#EXTM3U\n#EXTINF:2.000,\na.m4s\n")
	put(grown+"/master.m3u8", "#EXTM3U\n#EXT-X-MEDIA:TYPE=AUDIO,GROUP-ID=\"audio\",URI=\"audio/index.m3u8\"\n#EXT-X-STREAM-INF:BANDWIDTH=1\n720p/index.m3u8\n")
	put(grown+"/720p/recording.m3u8", "#EXTM3U\n#EXTINF:2.000,\nv.m4s\n")
	put(grown+"/audio/recording.m3u8", "#EXTM3U\n#EXTINF:2.000,\na.m4s\n")
	put(grown+"/480p/recording.m3u8", "#EXTM3U\n#EXTINF:2.000,\nnot-in-the-master.m4s\n")
	put(ended+"/master.m3u8", "#EXTM3U\n#EXT-X-STREAM-INF:BANDWIDTH=1\nsource/index.m3u8\n")
	put(ended+"/source/recording.m3u8", "#EXTM3U\n#EXTINF:2.000,\na.m4s\n#EXT-X-ENDLIST\n")
	put(mine+"/source/recording.m3u8", "#EXTM3U\n#EXTINF:2.000,\na.m4s\n")
	if err := os.MkdirAll(filepath.Join(spool, mine), 0o755); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string][]string{young: {"720p"}, grown: {"720p", "audio"}, ended: nil, mine: nil, "absent1abcdefghijklm": nil} {
		got, err := resume(id)
		if err != nil {
			t.Fatalf("%s: %v", id, err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: resumes %d playlists, want %v", id, len(got), want)
		}
		for _, dir := range want {
			if !strings.Contains(string(got[dir]), ".m4s") {
				t.Fatalf("%s: %s: %q", id, dir, got[dir])
			}
		}
	}
}
