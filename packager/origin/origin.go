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
// they reach the store: nothing outside the HLS tree is reachable.
//
// Every file is read through a storage.Store whose keys are the paths
// below Prefix ("<id>/<rendition>/<file>", "<id>/master.m3u8"): a local
// directory (fsstore) or a bucket (s3store), so that any origin sharing the
// bucket serves any finished video. A missing object is 404; any other
// error of the store (S3 down, a disk I/O error) is 503 "unavailable" with
// Retry-After: 1 and no-store, never an answer a cache keeps.
//
// Immutable objects (segments, init sections, poster and storyboard files)
// carry Shoal-Content-SHA256, the hex SHA-256 of the whole object, on GET
// and HEAD, so that an edge can check bytes a sibling edge relayed, and the
// store's ETag (which changes when the object is overwritten). Each object
// is hashed once: the sums are kept in a bounded LRU keyed by key, ETag and
// size.
//
// # Signed playback
//
// With WithSignedPlayback, every request for an id the Signed function
// reports as signed (master and rendition playlists, segments, init
// sections, poster and storyboard) needs "?token=<t>", a playback token
// (package playback) valid for that id, or it is answered 403 with a short
// text/plain reason. Answers for signed ids carry
// "Shoal-Playback-Policy: signed" and their usual Cache-Control: edges may
// cache them, since they verify tokens themselves. The playlists of a signed
// id are rewritten so that every URI in them carries the request's token,
// except for requests with "Shoal-Edge: 1": an edge caches the playlist as
// stored and rewrites it per viewer. The ETag always matches the bytes sent.
package origin

import (
	"bytes"
	"container/list"
	"context"
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/packager/live"
)

// Prefix is the URL path prefix of HLS.
const Prefix = hlspath.Prefix

// Cache-Control values.
const (
	CacheImmutable     = "public, max-age=31536000, immutable"
	CacheLivePlaylist  = "public, max-age=1"
	CacheEndedPlaylist = "public, max-age=60"
	CacheMaster        = "public, max-age=2"
	CacheStill         = "public, max-age=3600"
)

// Headers of the origin contract besides the standard ones (see hlspath).
const (
	PolicyHeader        = hlspath.PolicyHeader
	EdgeHeader          = hlspath.EdgeHeader
	ContentSHA256Header = hlspath.ContentSHA256Header
)

// DefaultHashCacheEntries is how many content hashes a handler keeps when
// WithHashCacheEntries is not given.
const DefaultHashCacheEntries = 8192

// Handler serves the HLS tree of a store. Create it with NewHandler.
type Handler struct {
	store storage.Store

	signed   func(id string) bool
	known    func(id string) bool
	p2pOff   func(id string) bool
	pub      ed25519.PublicKey
	clientIP func(*http.Request) string
	now      func() time.Time

	contentKey ed25519.PrivateKey
	manifests  manifestCache
	live       *live.Registry

	hashOnce    sync.Once
	hashEntries int
	hashes      *hashCache
	hashGroup   singleflight.Group
	hashReads   atomic.Int64 // files hashed (tests)
}

// Option configures a Handler.
type Option func(*Handler)

// WithSignedPlayback enforces signed playback: signed tells whether an id
// needs tokens (it is called on every request, so it should answer from a
// short-lived cache; when it cannot tell, answering true fails closed), and
// pub is the origin's playback public key that tokens are verified with.
// With an invalid pub every request for a signed id is refused (500).
func WithSignedPlayback(signed func(id string) bool, pub ed25519.PublicKey) Option {
	return func(h *Handler) { h.signed, h.pub = signed, pub }
}

// WithKnown makes the handler answer 404 for ids known says do not exist
// (a deleted video or stream whose files are still being removed, or never
// made): nothing is served for an id without a record. known is called on
// every request, so it should answer from a short-lived cache.
func WithKnown(known func(id string) bool) Option {
	return func(h *Handler) { h.known = known }
}

// WithP2P marks every answer for an id whose peer-assisted delivery is
// off (off tells; it is called on every request, so it should answer from
// a short-lived cache) with "Shoal-P2P: off" (hlspath.P2PHeader).
func WithP2P(off func(id string) bool) Option {
	return func(h *Handler) { h.p2pOff = off }
}

// WithClientIP sets how the viewer's address is found, for tokens bound to
// an IP. The default is the host of the request's RemoteAddr; set this
// when the origin is behind a proxy or edges relay requests for viewers.
func WithClientIP(f func(*http.Request) string) Option {
	return func(h *Handler) { h.clientIP = f }
}

// WithHashCacheEntries bounds the number of content hashes kept (a few
// hundred bytes each); n <= 0 means DefaultHashCacheEntries.
func WithHashCacheEntries(n int) Option {
	return func(h *Handler) { h.hashEntries = n }
}

// withClock sets the clock tokens are checked against (tests).
func withClock(now func() time.Time) Option {
	return func(h *Handler) { h.now = now }
}

// NewHandler returns a handler for the HLS tree held by store, whose keys
// are the paths below Prefix: "<id>/master.m3u8", "<id>/poster.jpg",
// "<id>/<rendition>/<file>".
func NewHandler(store storage.Store, opts ...Option) *Handler {
	h := &Handler{store: store}
	for _, o := range opts {
		o(h)
	}
	return h
}

// ParsePath validates a request path below Prefix (see hlspath.Parse).
func ParsePath(p string) (string, bool) { return hlspath.Parse(p) }

func setCORS(h http.Header) { hlspath.SetCORS(h) }

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
	id, _, _ := strings.Cut(rel, "/")
	if h.known != nil && !h.known(id) {
		refuse(w, http.StatusNotFound, "not found")
		return
	}
	if h.p2pOff != nil && h.p2pOff(id) {
		w.Header().Set(hlspath.P2PHeader, "off")
	}
	token, signed := "", h.signed != nil && h.signed(id)
	if signed {
		w.Header().Set(PolicyHeader, "signed")
		if token, ok = h.authorize(w, r, id); !ok {
			return
		}
	}
	if strings.HasSuffix(rel, "/"+hlspath.ManifestFile) {
		h.serveManifest(w, r, rel)
		return
	}
	if n, ok := hlspath.RangeManifest(path.Base(rel)); ok {
		h.serveRangeManifest(w, r, rel, n)
		return
	}
	if h.live != nil {
		if hlspath.IsPart(rel) {
			h.servePart(w, r, rel)
			return
		}
		if strings.HasSuffix(rel, ".m3u8") && h.serveLivePlaylist(w, r, rel, token, signed) {
			return
		}
	}
	ext := path.Ext(rel)
	if ext != ".m3u8" {
		h.serveObject(w, r, rel, ext)
		return
	}
	// Playlists are small: read them whole so the ETag matches the bytes.
	data, _, err := storage.ReadAll(r.Context(), h.store, rel)
	if err != nil {
		writeError(w, storeError(err))
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", hlspath.ContentType(rel))
	if signed {
		// The answer depends on Shoal-Edge; it is the same for every
		// viewer holding the same token (the token is in the URL).
		hdr.Add("Vary", EdgeHeader)
		if r.Header.Get(EdgeHeader) != "1" {
			data = playback.RewritePlaylist(data, token)
		}
	}
	hdr.Set("ETag", live.ETag(data))
	switch {
	case hlspath.IsMaster(rel):
		hdr.Set("Cache-Control", CacheMaster)
	case bytes.Contains(data, []byte("#EXT-X-ENDLIST")):
		hdr.Set("Cache-Control", CacheEndedPlaylist)
	default:
		hdr.Set("Cache-Control", CacheLivePlaylist)
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// serveObject answers an immutable object (a segment, an init section, a
// poster or storyboard file): ranges, HEAD and conditional requests read
// only what they need from the store.
func (h *Handler) serveObject(w http.ResponseWriter, r *http.Request, rel, ext string) {
	ctx := r.Context()
	info, err := h.store.Stat(ctx, rel)
	if err != nil {
		writeError(w, storeError(err))
		return
	}
	sum, err := h.contentSHA256(ctx, rel, info)
	if err != nil {
		writeError(w, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", hlspath.ContentType(rel))
	hdr.Set(ContentSHA256Header, sum)
	hdr.Set("Cache-Control", CacheImmutable)
	if ext == ".jpg" || ext == ".vtt" {
		hdr.Set("Cache-Control", CacheStill)
	}
	hdr.Set("ETag", info.ETag) // a new one when the object is overwritten
	content := storage.NewSeeker(ctx, h.store, info)
	defer content.Close()
	http.ServeContent(w, r, "", info.ModTime, content)
}

// unavailableError is an error of the store other than a missing object
// (S3 down or slow, a disk I/O error): answered 503, to be retried.
type unavailableError struct{ err error }

func (e *unavailableError) Error() string { return e.err.Error() }
func (e *unavailableError) Unwrap() error { return e.err }

// storeError marks an error of the store that is not a missing object (or
// an invalid key, which is one that cannot exist) as unavailable.
func storeError(err error) error {
	if err == nil || errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidKey) {
		return err
	}
	var u *unavailableError
	if errors.As(err, &u) {
		return err
	}
	return &unavailableError{err}
}

// writeError answers err: 404 for a missing object, 503 with Retry-After
// when the store is unavailable (see storeError), 500 otherwise (a
// playlist that names a file outside its directory, a signing failure).
func writeError(w http.ResponseWriter, err error) {
	var u *unavailableError
	switch {
	case errors.Is(err, storage.ErrNotFound) || errors.Is(err, storage.ErrInvalidKey):
		http.Error(w, "not found", http.StatusNotFound)
	case errors.As(err, &u):
		w.Header().Set("Retry-After", "1")
		refuse(w, http.StatusServiceUnavailable, "unavailable")
	default:
		http.Error(w, "unavailable", http.StatusInternalServerError)
	}
}

// authorize checks the request's playback token for id. It returns the
// token, or answers 403 (500 when misconfigured) and returns false.
func (h *Handler) authorize(w http.ResponseWriter, r *http.Request, id string) (string, bool) {
	if len(h.pub) != ed25519.PublicKeySize {
		http.Error(w, "signed playback is not configured on this origin", http.StatusInternalServerError)
		return "", false
	}
	token := r.URL.Query().Get(playback.TokenParam)
	if token == "" {
		forbid(w, "a playback token is required: add ?token=<token> (POST /v1/playback-tokens)")
		return "", false
	}
	now := time.Now
	if h.now != nil {
		now = h.now
	}
	ip := ""
	if h.clientIP != nil {
		ip = h.clientIP(r)
	} else if host, _, err := net.SplitHostPort(r.RemoteAddr); err == nil {
		ip = host
	}
	_, err := playback.Verify(h.pub, token, id, now(), ip)
	switch {
	case err == nil:
		return token, true
	case errors.Is(err, playback.ErrExpired):
		forbid(w, "the playback token has expired")
	case errors.Is(err, playback.ErrWrongID):
		forbid(w, "the playback token is for another video or live stream")
	case errors.Is(err, playback.ErrWrongIP):
		forbid(w, "the playback token is bound to another IP address")
	case errors.Is(err, playback.ErrBadSignature):
		forbid(w, "the playback token's signature is invalid")
	default:
		forbid(w, "the playback token is malformed")
	}
	return "", false
}

// forbid answers 403 with a short reason that no cache keeps.
func forbid(w http.ResponseWriter, reason string) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, reason, http.StatusForbidden)
}

// contentSHA256 returns the hex SHA-256 of the object at key (described by
// info), from the cache or by reading it once; concurrent misses for the
// same object share one read, which a client that leaves does not cancel.
// Errors of the store are marked (storeError).
func (h *Handler) contentSHA256(ctx context.Context, key string, info storage.Info) (string, error) {
	h.hashOnce.Do(func() { h.hashes = newHashCache(h.hashEntries) })
	ck := key + "\x00" + info.ETag + "\x00" + strconv.FormatInt(info.Size, 10)
	if sum, ok := h.hashes.get(ck); ok {
		return sum, nil
	}
	ctx = context.WithoutCancel(ctx)
	v, err, _ := h.hashGroup.Do(ck, func() (any, error) {
		if sum, ok := h.hashes.get(ck); ok {
			return sum, nil
		}
		h.hashReads.Add(1)
		rc, got, err := h.store.Get(ctx, key, storage.Range{})
		if err != nil {
			return "", storeError(err)
		}
		defer rc.Close()
		if got.ETag != info.ETag || got.Size != info.Size {
			return "", storeError(fmt.Errorf("origin: %s changed while it was hashed", key))
		}
		d := sha256.New()
		n, err := io.Copy(d, rc)
		if err == nil && n != info.Size {
			err = io.ErrUnexpectedEOF
		}
		if err != nil {
			return "", storeError(fmt.Errorf("origin: hash %s: %w", key, err))
		}
		sum := hex.EncodeToString(d.Sum(nil))
		h.hashes.add(ck, sum)
		return sum, nil
	})
	if err != nil {
		return "", err
	}
	return v.(string), nil
}

// hashCache is a bounded LRU of content hashes, keyed by key, ETag and
// size (so a replaced object is never answered with its predecessor's
// hash). It is safe for concurrent use.
type hashCache struct {
	mu    sync.Mutex
	max   int
	order *list.List // front: most recently used; values are *hashEntry
	byKey map[string]*list.Element
}

type hashEntry struct {
	key, sum string
}

func newHashCache(max int) *hashCache {
	if max <= 0 {
		max = DefaultHashCacheEntries
	}
	return &hashCache{max: max, order: list.New(), byKey: make(map[string]*list.Element)}
}

func (c *hashCache) get(key string) (string, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	e, ok := c.byKey[key]
	if !ok {
		return "", false
	}
	c.order.MoveToFront(e)
	return e.Value.(*hashEntry).sum, true
}

func (c *hashCache) add(key, sum string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if e, ok := c.byKey[key]; ok {
		e.Value.(*hashEntry).sum = sum
		c.order.MoveToFront(e)
		return
	}
	c.byKey[key] = c.order.PushFront(&hashEntry{key: key, sum: sum})
	for c.order.Len() > c.max {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.byKey, last.Value.(*hashEntry).key)
	}
}

func (c *hashCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
