package origin

import (
	"bytes"
	"context"
	"errors"
	"net/http"
	"net/url"
	"path"
	"strconv"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/packager/live"
)

// WithLive makes the handler serve live playlists and LL-HLS partial
// segments from reg (what the packager publishes there), and answer
// blocking playlist reloads. What reg does not hold is served from the
// store.
func WithLive(reg *live.Registry) Option {
	return func(h *Handler) { h.live = reg }
}

// Blocking reload query parameters (RFC 8216bis 6.2.5.2).
const (
	ParamMSN  = "_HLS_msn"
	ParamPart = "_HLS_part"
	// ParamSkip=YES (or v2) asks for a delta update of a playlist that
	// declares CAN-SKIP-UNTIL (the DVR playlists).
	ParamSkip = "_HLS_skip"
)

// blocking is a parsed blocking reload request.
type blocking struct {
	msn  uint64
	part int // -1: the whole segment
}

// parseBlocking reads _HLS_msn and _HLS_part. ok is false when the request
// is not a blocking one; err says why the parameters are malformed.
func parseBlocking(q url.Values) (b blocking, ok bool, err error) {
	msn, part := q.Get(ParamMSN), q.Get(ParamPart)
	if msn == "" {
		if part != "" {
			return b, false, errors.New(ParamPart + " needs " + ParamMSN)
		}
		return b, false, nil
	}
	if !decimal(msn) || (part != "" && !decimal(part)) {
		return b, false, errors.New(ParamMSN + " and " + ParamPart + " must be decimal integers")
	}
	b.msn, _ = strconv.ParseUint(msn, 10, 64)
	b.part = -1
	if part != "" {
		n, _ := strconv.ParseUint(part, 10, 31)
		b.part = int(n)
	}
	return b, true, nil
}

func decimal(s string) bool {
	if s == "" || len(s) > 9 {
		return false
	}
	for i := 0; i < len(s); i++ {
		if s[i] < '0' || s[i] > '9' {
			return false
		}
	}
	return true
}

// blockingTimeout is how long a blocking reload may wait: three target
// durations (RFC 8216bis 6.2.5.2), within bounds.
func blockingTimeout(s *live.Snapshot) time.Duration {
	return min(max(3*s.Target, 3*time.Second), 30*time.Second)
}

// blockingCache is the Cache-Control of an answer to a blocking reload:
// it is an answer for that (msn, part) for good, reused by edges for as
// long as a player could ask.
func blockingCache(s *live.Snapshot) string {
	return "public, max-age=" + strconv.Itoa(int(blockingTimeout(s)/time.Second))
}

// waitLive returns the snapshot of the live playlist key that r asks for:
// the current one, or with _HLS_msn the first that holds what it names. It
// returns nil, true when the playlist is not live here (serve the store),
// and false when it answered r itself (an error, or the client left).
func (h *Handler) waitLive(w http.ResponseWriter, r *http.Request, key string) (*live.Snapshot, bool, bool) {
	snap := h.live.Get(key)
	b, isBlocking, err := parseBlocking(r.URL.Query())
	if err != nil {
		refuse(w, http.StatusBadRequest, err.Error())
		return nil, false, false
	}
	if snap == nil || !isBlocking {
		return snap, false, true
	}
	if snap.TooFar(b.msn) {
		refuse(w, http.StatusBadRequest, "_HLS_msn is more than two segments past the live edge")
		return nil, false, false
	}
	if b.part > maxPart(snap) {
		// No segment has that many parts: refused, so that clients
		// cannot make endless distinct requests (and edge cache keys).
		refuse(w, http.StatusBadRequest, "_HLS_part is past the parts a segment can have")
		return nil, false, false
	}
	ctx, cancel := context.WithTimeout(r.Context(), blockingTimeout(snap))
	defer cancel()
	got, err := h.live.Wait(ctx, key, func(s *live.Snapshot) bool { return s.Has(b.msn, b.part) })
	switch {
	case r.Context().Err() != nil:
		return nil, false, false
	case err != nil:
		refuse(w, http.StatusServiceUnavailable, "the playlist did not reach _HLS_msn/_HLS_part in time")
		return nil, false, false
	}
	// nil: the playlist ended while waiting; the store has the answer.
	return got, got != nil, true
}

// maxPart is the highest part index a segment of s's playlist can have:
// a segment lasts at most the target duration (rounded), parts at most
// the part target.
func maxPart(s *live.Snapshot) int {
	if s.PartTarget <= 0 {
		return 0
	}
	return int((s.Target+s.Target/2)/s.PartTarget) + 1
}

// refuse answers an error that no cache keeps.
func refuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, msg, code)
}

// serveLivePlaylist answers a playlist from the live registry; false when
// the registry does not hold it (the caller serves the store).
func (h *Handler) serveLivePlaylist(w http.ResponseWriter, r *http.Request, rel, token string, signed bool) bool {
	snap, blocked, ok := h.waitLive(w, r, rel)
	if !ok {
		return true
	}
	if snap == nil {
		return false
	}
	hdr := w.Header()
	hdr.Set("Content-Type", hlspath.ContentType(".m3u8"))
	data, etag := snap.Data, snap.ETag
	if skip := r.URL.Query().Get(ParamSkip); snap.Delta != nil && (skip == "YES" || skip == "v2") {
		data, etag = snap.Delta, snap.DeltaETag
	}
	if signed {
		hdr.Add("Vary", EdgeHeader)
		if r.Header.Get(EdgeHeader) != "1" {
			data = playback.RewritePlaylist(data, token)
			etag = live.ETag(data)
		}
	}
	hdr.Set("ETag", etag)
	switch {
	case hlspath.IsMaster(rel):
		hdr.Set("Cache-Control", CacheMaster)
	case blocked:
		hdr.Set("Cache-Control", blockingCache(snap))
	default:
		hdr.Set("Cache-Control", CacheLivePlaylist)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
	return true
}

// servePart answers a partial segment from the live registry, waiting for
// the one the playlist's preload hint announces.
func (h *Handler) servePart(w http.ResponseWriter, r *http.Request, rel string) {
	playlist := path.Dir(rel) + "/index.m3u8"
	wait := time.Duration(0)
	if s := h.live.Get(playlist); s != nil {
		wait = blockingTimeout(s)
	}
	ctx, cancel := context.WithTimeout(r.Context(), wait)
	defer cancel()
	p, ok := h.live.Part(ctx, rel, playlist)
	if r.Context().Err() != nil {
		return
	}
	if !ok {
		refuse(w, http.StatusNotFound, "not found")
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", hlspath.ContentType(".m4s"))
	hdr.Set(ContentSHA256Header, p.SHA256)
	hdr.Set("Cache-Control", CacheImmutable)
	hdr.Set("ETag", `"`+p.SHA256[:24]+`"`)
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(p.Data))
}
