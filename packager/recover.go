package packager

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/shoal-video/shoal/internal/ids"
)

// finishOrphans closes recordings that an earlier run left open (a crash or
// kill while a stream was live): every recording.m3u8 without ENDLIST gets
// one, and index.m3u8 becomes the whole recording as VOD, so the stream stays
// playable as a recording. It returns how many playlists it finished.
func finishOrphans(dir string, log *slog.Logger) int {
	streams, err := os.ReadDir(dir)
	if err != nil {
		return 0
	}
	n := 0
	for _, s := range streams {
		if !s.IsDir() || !ids.Valid(s.Name()) {
			continue
		}
		subs, err := os.ReadDir(filepath.Join(dir, s.Name()))
		if err != nil {
			continue
		}
		for _, sub := range subs {
			if !sub.IsDir() || !ids.Valid(sub.Name()) {
				continue
			}
			base := filepath.Join(dir, s.Name(), sub.Name())
			rec, err := os.ReadFile(filepath.Join(base, "recording.m3u8"))
			if err != nil || bytes.Contains(rec, []byte("#EXT-X-ENDLIST")) {
				continue
			}
			rec = append(rec, "#EXT-X-ENDLIST\n"...)
			vod := bytes.Replace(rec, []byte("#EXT-X-PLAYLIST-TYPE:EVENT"), []byte("#EXT-X-PLAYLIST-TYPE:VOD"), 1)
			if err := writeFile(filepath.Join(base, "index.m3u8"), vod); err != nil {
				log.Warn("could not finish a recording left open", "dir", base, "err", err)
				continue
			}
			if err := writeFile(filepath.Join(base, "recording.m3u8"), rec); err != nil {
				log.Warn("could not finish a recording left open", "dir", base, "err", err)
				continue
			}
			n++
		}
	}
	return n
}
