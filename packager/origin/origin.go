// Package origin serves the packager's HLS tree over HTTP: the origin
// contract edges and players rely on.
//
//	GET /hls/<id>/master.m3u8
//	GET /hls/<id>/<rendition>/<file>   (index.m3u8, recording.m3u8, init-*.mp4, *.m4s, *.ts)
//	GET /hls/<id>/poster.jpg, storyboard.vtt, storyboard-<n>.jpg   (videos: poster and scrub previews)
//
// Segments and init sections never change once written, so they are served
// as immutable; playlists of a live stream are cacheable for one second and
// finished ones for a minute. Every answer allows any origin (CORS) and
// byte ranges. Ids and names are checked against strict patterns before
// they touch the file system: nothing outside the HLS directory is reachable.
package origin

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/ids"
)

// Prefix is the URL path prefix of HLS.
const Prefix = "/hls/"

var fileRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}\.(m3u8|m4s|mp4|ts)$`)

// stillRe matches the files next to master.m3u8 that a VOD job writes.
var stillRe = regexp.MustCompile(`^(poster\.jpg|storyboard\.vtt|storyboard-[0-9]{1,6}\.jpg)$`)

var contentTypes = map[string]string{
	".jpg":  "image/jpeg",
	".vtt":  "text/vtt; charset=utf-8",
	".m3u8": "application/vnd.apple.mpegurl",
	".m4s":  "video/iso.segment",
	".mp4":  "video/mp4",
	".ts":   "video/mp2t",
}

// Cache-Control values.
const (
	CacheImmutable     = "public, max-age=31536000, immutable"
	CacheLivePlaylist  = "public, max-age=1"
	CacheEndedPlaylist = "public, max-age=60"
	CacheMaster        = "public, max-age=2"
	CacheStill         = "public, max-age=3600"
)

// Handler serves files under Dir.
type Handler struct {
	Dir string
}

// NewHandler returns a handler for the HLS tree at dir.
func NewHandler(dir string) *Handler { return &Handler{Dir: dir} }

// ParsePath validates a request path below Prefix and returns the file's
// path relative to the HLS directory. It accepts only /hls/<id>/master.m3u8,
// a video's poster and storyboard files next to it, and
// /hls/<id>/<rendition>/<file>.
func ParsePath(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, Prefix)
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	switch len(parts) {
	case 2:
		if ids.Valid(parts[0]) && (parts[1] == "master.m3u8" || stillRe.MatchString(parts[1])) {
			return parts[0] + "/" + parts[1], true
		}
	case 3:
		if ids.Valid(parts[0]) && ids.Valid(parts[1]) && fileRe.MatchString(parts[2]) {
			return strings.Join(parts, "/"), true
		}
	}
	return "", false
}

func setCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Range, If-None-Match, If-Modified-Since")
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Range, ETag, Cache-Status")
	h.Set("Access-Control-Max-Age", "86400")
}

func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	setCORS(w.Header())
	switch r.Method {
	case http.MethodGet, http.MethodHead:
	case http.MethodOptions:
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		w.Header().Set("Allow", "GET, HEAD, OPTIONS")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	// Escapes in the path ("%2e%2e", "%2f") are never legitimate here.
	if r.URL.RawPath != "" || strings.Contains(r.URL.Path, "%") {
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	rel, ok := ParsePath(r.URL.Path)
	if !ok {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	full := filepath.Join(h.Dir, filepath.FromSlash(rel))
	f, err := os.Open(full)
	if err != nil {
		if errors.Is(err, fs.ErrNotExist) {
			http.Error(w, "not found", http.StatusNotFound)
		} else {
			http.Error(w, "unavailable", http.StatusInternalServerError)
		}
		return
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	ext := filepath.Ext(rel)
	hdr := w.Header()
	hdr.Set("Content-Type", contentTypes[ext])
	if ext != ".m3u8" {
		hdr.Set("Cache-Control", CacheImmutable)
		if ext == ".jpg" || ext == ".vtt" {
			hdr.Set("Cache-Control", CacheStill)
		}
		hdr.Set("ETag", `"`+strconv.FormatInt(st.Size(), 36)+"-"+strconv.FormatInt(st.ModTime().UnixNano(), 36)+`"`)
		http.ServeContent(w, r, "", st.ModTime(), f)
		return
	}
	// Playlists are small: read them whole so the ETag matches the bytes.
	data, err := os.ReadFile(full)
	if err != nil {
		http.Error(w, "unavailable", http.StatusInternalServerError)
		return
	}
	sum := sha256.Sum256(data)
	hdr.Set("ETag", `"`+hex.EncodeToString(sum[:12])+`"`)
	switch {
	case strings.HasSuffix(rel, "/master.m3u8"):
		hdr.Set("Cache-Control", CacheMaster)
	case bytes.Contains(data, []byte("#EXT-X-ENDLIST")):
		hdr.Set("Cache-Control", CacheEndedPlaylist)
	default:
		hdr.Set("Cache-Control", CacheLivePlaylist)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}
