package packager

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/packager/playlist"
)

// finishOrphans closes recordings that an earlier run left open (a crash or
// kill while a stream was live): every recording.m3u8 without ENDLIST gets
// one, and index.m3u8 becomes the whole recording as VOD, so the stream stays
// playable as a recording. It returns the recordings it finished as they
// were before, by stream, for a publisher that comes back to continue.
func finishOrphans(fs *storage, dir string, log *slog.Logger) map[string]orphan {
	streams, err := os.ReadDir(dir)
	if err != nil {
		return nil
	}
	out := map[string]orphan{}
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
			recPath := filepath.Join(base, "recording.m3u8")
			rec, err := os.ReadFile(recPath)
			if err != nil || bytes.Contains(rec, []byte(playlist.Endlist)) {
				continue
			}
			fi, err := os.Stat(recPath)
			if err != nil {
				continue
			}
			if err := finishRecording(fs, base); err != nil {
				log.Warn("could not finish a recording left open", "dir", base, "err", err)
				continue
			}
			o, ok := out[s.Name()]
			if !ok {
				o.recs = map[string][]byte{}
			}
			o.recs[sub.Name()] = rec
			if t := fi.ModTime(); t.After(o.cut) {
				o.cut = t
			}
			out[s.Name()] = o
		}
	}
	return out
}

// orphan is a broadcast a crash cut: its recordings as they were left
// open, by playlist directory, and about when it was cut (their last
// write).
type orphan struct {
	recs map[string][]byte
	cut  time.Time
}

// orphanReturn is how long after a crash cut a broadcast its publisher may
// come back to continue it (an encoder retries for a few minutes); later,
// a broadcast is a new one and replaces the recording.
const orphanReturn = 30 * time.Minute

// finishRecording ends the recording in dir with ENDLIST (unless it has
// one) and writes index.m3u8 as the whole recording, a VOD playlist. The
// index goes first: a recording with ENDLIST always has its VOD index.
func finishRecording(fs *storage, dir string) error {
	path := filepath.Join(dir, "recording.m3u8")
	rec, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	ended := bytes.HasSuffix(rec, []byte(playlist.Endlist))
	whole := true
	if !ended {
		// A crash may have cut the last segment's lines short: the
		// recording ends after its last whole segment (URI line).
		cut := lastSegmentEnd(rec)
		whole = cut == len(rec)
		rec = append(rec[:cut:cut], playlist.Endlist...)
	}
	vod := bytes.Replace(rec, []byte("#EXT-X-PLAYLIST-TYPE:EVENT"), []byte("#EXT-X-PLAYLIST-TYPE:VOD"), 1)
	if err := fs.writeFile(filepath.Join(dir, "index.m3u8"), vod); err != nil {
		return err
	}
	switch {
	case ended:
		return nil
	case whole:
		return fs.appendFile(path, []byte(playlist.Endlist))
	default:
		return fs.writeFile(path, rec)
	}
}

// lastSegmentEnd returns the offset just after the last complete segment
// URI line of a playlist (a line ending in a newline that is not a tag),
// or after the header when there is none.
func lastSegmentEnd(pl []byte) int {
	end, headerEnd := 0, 0
	for off := 0; off < len(pl); {
		nl := bytes.IndexByte(pl[off:], '\n')
		if nl < 0 {
			break // an unfinished line
		}
		line := pl[off : off+nl]
		off += nl + 1
		switch {
		case len(line) > 0 && line[0] != '#':
			end = off
		case bytes.HasPrefix(line, []byte("#EXT-X-TARGETDURATION:")) && end == 0:
			headerEnd = off
		}
	}
	return max(end, headerEnd)
}
