package packager

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/packager/playlist"
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
			if err != nil || bytes.Contains(rec, []byte(playlist.Endlist)) {
				continue
			}
			if err := finishRecording(base); err != nil {
				log.Warn("could not finish a recording left open", "dir", base, "err", err)
				continue
			}
			n++
		}
	}
	return n
}

// finishRecording ends the recording in dir with ENDLIST (unless it has
// one) and writes index.m3u8 as the whole recording, a VOD playlist. The
// index goes first: a recording with ENDLIST always has its VOD index.
func finishRecording(dir string) error {
	path := filepath.Join(dir, "recording.m3u8")
	rec, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	ended := bytes.HasSuffix(rec, []byte(playlist.Endlist))
	tail := playlist.Endlist
	if len(rec) > 0 && rec[len(rec)-1] != '\n' {
		tail = "\n" + tail // a line cut short by a crash
	}
	if !ended {
		rec = append(rec, tail...)
	}
	vod := bytes.Replace(rec, []byte("#EXT-X-PLAYLIST-TYPE:EVENT"), []byte("#EXT-X-PLAYLIST-TYPE:VOD"), 1)
	if err := writeFile(filepath.Join(dir, "index.m3u8"), vod); err != nil {
		return err
	}
	if ended {
		return nil
	}
	return appendFile(path, []byte(tail))
}
