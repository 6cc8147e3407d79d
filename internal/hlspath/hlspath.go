// Package hlspath is the origin contract that the origin and the edges
// share without sharing code paths: which /hls/ paths exist, the Shoal
// headers on top of HTTP and the CORS answer. It is a leaf: the packager and
// the edge meet only over HTTP and through this description of it.
package hlspath

import (
	"net/http"
	"path"
	"regexp"
	"strconv"
	"strings"

	"github.com/shoal-video/shoal/internal/ids"
)

// Prefix is the URL path prefix of HLS.
const Prefix = "/hls/"

// Headers of the origin contract besides the standard ones.
const (
	// PolicyHeader is "signed" on every answer for a signed id.
	PolicyHeader = "Shoal-Playback-Policy"
	// P2PHeader is "off" on every answer for an id whose owner turned
	// peer-assisted delivery off; edges keep it with what they cache, and
	// the nodes' P2P trackers refuse the id's swarms.
	P2PHeader = "Shoal-P2P"
	// EdgeHeader, "1" on a request, asks for playlists as stored, without
	// the request's token written into them.
	EdgeHeader = "Shoal-Edge"
	// ContentSHA256Header is the hex SHA-256 of an immutable object's
	// whole file (not of a range).
	ContentSHA256Header = "Shoal-Content-SHA256"
)

var fileRe = regexp.MustCompile(`^[a-z0-9][a-z0-9-]{0,63}\.(m3u8|m4s|mp4|ts)$`)

// stillRe matches the files next to master.m3u8 that a VOD job writes.
var stillRe = regexp.MustCompile(`^(poster\.jpg|storyboard\.vtt|storyboard-[0-9]{1,6}\.jpg)$`)

// ManifestFile is the signed manifest of a rendition (package manifest),
// next to its index.m3u8.
const ManifestFile = "manifest.txt"

// RangeManifestSegments is how many segments a range manifest covers:
// manifest-<N>.txt lists the segments with media sequence N to N+99 of
// the rendition's recording (N a multiple of it), for verifying segments
// of long playlists (DVR) without a manifest of them all.
const RangeManifestSegments = 100

var rangeManifestRe = regexp.MustCompile(`^manifest-(0|[1-9][0-9]{0,8}00)\.txt$`)

// RangeManifest reports whether name is a range manifest and the first
// media sequence number it covers.
func RangeManifest(name string) (uint64, bool) {
	m := rangeManifestRe.FindStringSubmatch(name)
	if m == nil {
		return 0, false
	}
	n, err := strconv.ParseUint(m[1], 10, 64)
	return n, err == nil
}

// DVRMaster is the master playlist of a live stream's DVR playlists,
// next to master.m3u8 (each rendition's is <rendition>/dvr.m3u8).
const DVRMaster = "dvr.m3u8"

// IsPart reports whether name (a file name, or a path ending in one)
// names an LL-HLS partial segment, "<segment>-p<k>.m4s".
func IsPart(name string) bool {
	name, ok := strings.CutSuffix(name, ".m4s")
	if !ok {
		return false
	}
	i := strings.LastIndex(name, "-p")
	if i < 0 || i+2 == len(name) {
		return false
	}
	for _, c := range name[i+2:] {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// IsMaster reports whether rel, a path Parse returned, is a master
// playlist.
func IsMaster(rel string) bool {
	return strings.Count(rel, "/") == 1 && strings.HasSuffix(rel, ".m3u8")
}

// Parse validates a request path below Prefix and returns the file's path
// relative to the HLS directory. It accepts only /hls/<id>/master.m3u8 (and
// the DVR master, dvr.m3u8), a
// video's poster and storyboard files next to it, and
// /hls/<id>/<rendition>/<file>, the rendition's manifest included.
func Parse(p string) (string, bool) {
	rest, ok := strings.CutPrefix(p, Prefix)
	if !ok {
		return "", false
	}
	parts := strings.Split(rest, "/")
	switch len(parts) {
	case 2:
		if ids.Valid(parts[0]) && (parts[1] == "master.m3u8" || parts[1] == DVRMaster || stillRe.MatchString(parts[1])) {
			return parts[0] + "/" + parts[1], true
		}
	case 3:
		if ids.Valid(parts[0]) && ids.Valid(parts[1]) && (fileRe.MatchString(parts[2]) || parts[2] == ManifestFile || rangeManifestRe.MatchString(parts[2])) {
			return strings.Join(parts, "/"), true
		}
	}
	return "", false
}

// SetCORS sets the CORS headers every /hls/ answer carries.
func SetCORS(h http.Header) {
	h.Set("Access-Control-Allow-Origin", "*")
	h.Set("Access-Control-Allow-Methods", "GET, HEAD, OPTIONS")
	h.Set("Access-Control-Allow-Headers", "Range, If-None-Match, If-Modified-Since")
	// Players may read the content sum (to check bytes from peers), the
	// policy and the P2P mark.
	h.Set("Access-Control-Expose-Headers", "Content-Length, Content-Range, ETag, Cache-Status, "+ContentSHA256Header+", "+PolicyHeader+", "+P2PHeader)
	h.Set("Access-Control-Max-Age", "86400")
}

// contentTypes are the media types of the files of an HLS tree, by
// extension.
var contentTypes = map[string]string{
	".jpg":  "image/jpeg",
	".vtt":  "text/vtt; charset=utf-8",
	".m3u8": "application/vnd.apple.mpegurl",
	".m4s":  "video/iso.segment",
	".mp4":  "video/mp4",
	".ts":   "video/mp2t",
}

// ContentType is the media type of an HLS tree's file named name (by its
// extension: ".m3u8", ".m4s", ".mp4", ".ts", ".jpg", ".vtt"), "" for
// another extension.
func ContentType(name string) string { return contentTypes[path.Ext(name)] }
