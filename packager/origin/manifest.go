package origin

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"path"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/manifest"
	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/packager/live"
)

// WithContentKey makes the handler serve each rendition's signed manifest
// (package manifest) at /hls/<id>/<rendition>/manifest.txt, signed with
// key: the objects its index.m3u8 lists now, with their sizes and SHA-256.
func WithContentKey(key ed25519.PrivateKey) Option {
	return func(h *Handler) { h.contentKey = key }
}

// liveManifestExtra is how many segments before the live window a live
// manifest lists.
const liveManifestExtra = 4

// recordingTailBytes is how much of the end of recording.m3u8 a live
// manifest reads: a few hundred segments, so that its cost does not grow
// with the length of the broadcast.
const recordingTailBytes = 16 << 10

// liveObjects adds to the objects of a live window (objs, the next
// sequence number next) the liveManifestExtra segments before it, from the
// end of the recording: a player holding a playlist a second older than
// the manifest still finds every segment it names. The recording, written
// just after index.m3u8, may be a segment ahead: its newer segments are
// listed too and counted in the sequence. Without a usable recording, the
// window alone.
func liveObjects(ctx context.Context, s storage.Store, recording string, objs []manifest.Object, next uint64) ([]manifest.Object, uint64) {
	last := ""
	for _, o := range objs {
		if o.Kind == manifest.KindSegment {
			last = o.URI
		}
	}
	tail, err := readTail(ctx, s, recording, recordingTailBytes)
	if err != nil || last == "" {
		return objs, next
	}
	rec, _, ended := manifest.PlaylistObjects(tail)
	pos := -1
	for i, o := range rec {
		if o.Kind == manifest.KindSegment && o.URI == last {
			pos = i
		}
	}
	if ended || pos < 0 {
		return objs, next
	}
	ahead := countSegments(rec[pos+1:])
	out := manifest.Tail(rec, countSegments(objs)+liveManifestExtra+ahead)
	// The window's initialization sections are listed whatever the tail
	// held.
	have := map[string]bool{}
	for _, o := range out {
		have[o.URI] = true
	}
	var inits, parts []manifest.Object
	for _, o := range objs {
		switch {
		case o.Kind == manifest.KindInit && !have[o.URI]:
			inits = append(inits, o)
		case o.Kind == manifest.KindPart:
			// The recording has no parts: the playlist's go last.
			parts = append(parts, o)
		}
	}
	return append(append(inits, out...), parts...), next + uint64(ahead)
}

// readTail reads the last n bytes of the object at key (more if it grew
// meanwhile), from the first whole line, with a ranged Get.
func readTail(ctx context.Context, s storage.Store, key string, n int64) ([]byte, error) {
	info, err := s.Stat(ctx, key)
	if err != nil {
		return nil, err
	}
	off := max(0, info.Size-n)
	// To the end, whatever it is now: a line cut short would read as a
	// segment with a truncated name.
	rc, _, err := s.Get(ctx, key, storage.Range{Offset: off})
	if err != nil {
		return nil, err
	}
	defer rc.Close()
	b, err := io.ReadAll(rc)
	if err != nil {
		return nil, err
	}
	if off > 0 {
		if i := bytes.IndexByte(b, '\n'); i >= 0 {
			b = b[i+1:]
		}
	}
	return b, nil
}

func countSegments(objs []manifest.Object) int {
	n := 0
	for _, o := range objs {
		if o.Kind == manifest.KindSegment {
			n++
		}
	}
	return n
}

// liveManifestTTL is how long a live manifest is reused before it is
// signed again with a new time (the edges' cache lifetime, too).
const liveManifestTTL = time.Second

// maxManifests bounds the signed manifests kept.
const maxManifests = 4096

// manifestCache keeps signed manifests by the identity of the playlist
// they were made from.
type manifestCache struct {
	mu      sync.Mutex
	entries map[string]signedManifest
	ranges  map[string]rangeManifest
}

type signedManifest struct {
	playlist string // ETag and size of index.m3u8 (or the live snapshot's ETag)
	data     []byte
	ended    bool
	at       time.Time
}

// serveManifest answers a rendition's manifest: rel is
// "<id>/<rendition>/manifest.txt".
func (h *Handler) serveManifest(w http.ResponseWriter, r *http.Request, rel string) {
	if len(h.contentKey) != ed25519.PrivateKeySize {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	var snap *live.Snapshot
	blocked := false
	if h.live != nil {
		var ok bool
		if snap, blocked, ok = h.waitLive(w, r, path.Dir(rel)+"/index.m3u8"); !ok {
			return
		}
	}
	data, ended, err := h.manifest(r.Context(), rel, snap)
	cc := CacheLivePlaylist
	switch {
	case ended:
		cc = CacheEndedPlaylist
	case blocked:
		cc = blockingCache(snap)
	}
	serveManifestBytes(w, r, data, err, cc)
}

// serveManifestBytes answers a signed manifest (data, or err: see
// writeError; 404 when it has nothing to list) with Cache-Control cc and
// its ETag.
func serveManifestBytes(w http.ResponseWriter, r *http.Request, data []byte, err error, cc string) {
	if err != nil {
		writeError(w, err)
		return
	}
	hdr := w.Header()
	hdr.Set("Content-Type", manifest.ContentType)
	hdr.Set("Cache-Control", cc)
	hdr.Set("ETag", live.ETag(data))
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(data))
}

// manifest returns the signed manifest of rel's rendition, from the cache
// when its playlist has not changed (and, live, it is younger than
// liveManifestTTL). The playlist is snap, the live one in memory, or
// without it the stored one. Errors of the store are marked (storeError).
func (h *Handler) manifest(ctx context.Context, rel string, snap *live.Snapshot) ([]byte, bool, error) {
	dir := path.Dir(rel)
	id, rendition, _ := strings.Cut(dir, "/")
	plKey := dir + "/index.m3u8"
	var ident string
	if snap != nil {
		ident = "live-" + snap.ETag
	} else {
		info, err := h.store.Stat(ctx, plKey)
		if err != nil {
			return nil, false, storeError(err)
		}
		ident = info.ETag + "-" + strconv.FormatInt(info.Size, 10)
	}
	// Shared by every request that waits for it: one that leaves does not
	// cancel it.
	ctx = context.WithoutCancel(ctx)
	now := h.clock()
	h.manifests.mu.Lock()
	if h.manifests.entries == nil {
		h.manifests.entries = map[string]signedManifest{}
	}
	c, ok := h.manifests.entries[dir]
	h.manifests.mu.Unlock()
	if ok && c.playlist == ident && (c.ended || now.Sub(c.at) < liveManifestTTL) {
		return c.data, c.ended, nil
	}
	v, err, _ := h.hashGroup.Do("manifest\x00"+dir+"\x00"+ident, func() (any, error) {
		var pl []byte
		if snap != nil {
			pl = snap.Data
		} else {
			var err error
			if pl, _, err = storage.ReadAll(ctx, h.store, plKey); err != nil {
				return nil, storeError(err)
			}
		}
		objs, next, ended := manifest.PlaylistObjects(pl)
		if !ended {
			objs, next = liveObjects(ctx, h.store, dir+"/recording.m3u8", objs, next)
		}
		if snap != nil && len(snap.Served) > 0 {
			// Every part still served, not only those the playlist lists:
			// a player may hold a playlist a segment older.
			kept := objs[:0:0]
			for _, o := range objs {
				if o.Kind != manifest.KindPart {
					kept = append(kept, o)
				}
			}
			for _, p := range snap.Served {
				kept = append(kept, manifest.Object{Kind: manifest.KindPart, URI: p.Name, Duration: p.Duration})
			}
			objs = kept
		}
		m := manifest.Manifest{ID: id, Rendition: rendition, Seq: next, Time: now, Ended: ended,
			Entries: make([]manifest.Entry, 0, len(objs))}
		for _, o := range objs {
			e, err := h.entry(ctx, path.Join(dir, o.URI), o)
			if o.Kind == manifest.KindPart && errors.Is(err, storage.ErrNotFound) {
				// Dropped since the snapshot was taken: no longer served.
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("manifest of %s: %s: %w", dir, o.URI, err)
			}
			m.Entries = append(m.Entries, e)
		}
		data, err := manifest.Sign(m, h.contentKey)
		if err != nil {
			return nil, err
		}
		sm := signedManifest{playlist: ident, data: data, ended: ended, at: now}
		h.manifests.mu.Lock()
		if len(h.manifests.entries) >= maxManifests {
			clear(h.manifests.entries)
		}
		h.manifests.entries[dir] = sm
		h.manifests.mu.Unlock()
		return sm, nil
	})
	if err != nil {
		return nil, false, err
	}
	sm := v.(signedManifest)
	return sm.data, sm.ended, nil
}

// entry describes one object of a manifest, hashing it (once) if needed.
// Errors of the store are marked (storeError).
func (h *Handler) entry(ctx context.Context, rel string, o manifest.Object) (manifest.Entry, error) {
	if _, ok := ParsePath(Prefix + rel); !ok || strings.HasSuffix(rel, ".m3u8") {
		return manifest.Entry{}, errors.New("not a media file name")
	}
	if o.Gap {
		// Never written: it holds its place, with nothing to hash.
		return manifest.Entry{Kind: manifest.KindGap, URI: o.URI, Duration: o.Duration}, nil
	}
	if o.Kind == manifest.KindPart {
		if h.live == nil {
			return manifest.Entry{}, errors.New("a part without a live registry")
		}
		p, ok := h.live.LookupPart(rel)
		if !ok {
			return manifest.Entry{}, fmt.Errorf("part %s: %w", rel, storage.ErrNotFound)
		}
		e := manifest.Entry{Kind: o.Kind, URI: o.URI, Size: int64(len(p.Data)), Duration: o.Duration}
		if _, err := hex.Decode(e.SHA256[:], []byte(p.SHA256)); err != nil {
			return manifest.Entry{}, err
		}
		return e, nil
	}
	info, err := h.store.Stat(ctx, rel)
	if err != nil {
		return manifest.Entry{}, storeError(err)
	}
	sum, err := h.contentSHA256(ctx, rel, info)
	if err != nil {
		return manifest.Entry{}, err
	}
	e := manifest.Entry{Kind: o.Kind, URI: o.URI, Size: info.Size, Duration: o.Duration}
	if _, err := hex.Decode(e.SHA256[:], []byte(sum)); err != nil {
		return manifest.Entry{}, err
	}
	return e, nil
}

func (h *Handler) clock() time.Time {
	if h.now != nil {
		return h.now()
	}
	return time.Now()
}

// rangeManifest is a signed range manifest and what it was made from.
type rangeManifest struct {
	from  storage.Info // the recording it was made from
	data  []byte
	final bool
	// end and mark identify a final range's recording without its inode:
	// mark is the bytes of the recording just before offset end, which
	// ends with the line of the range's last segment. A recording is only
	// appended to while its stream lasts and segment names carry the
	// session, so a recording with the same bytes there holds the same
	// range; a new broadcast's recording does not.
	end  int64
	mark []byte
}

// rangeMarkBytes is how much of the recording before a final range's end
// identifies it (rangeManifest.mark).
const rangeMarkBytes = 256

// serveRangeManifest answers /hls/<id>/<rendition>/manifest-<n>.txt: the
// signed manifest of the recording's segments n to n+99 (see
// hlspath.RangeManifest), final once all exist or the recording ended.
func (h *Handler) serveRangeManifest(w http.ResponseWriter, r *http.Request, rel string, n uint64) {
	if len(h.contentKey) != ed25519.PrivateKeySize {
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	data, final, err := h.rangeManifest(r.Context(), rel, n)
	cc := CacheLivePlaylist
	if final {
		cc = CacheEndedPlaylist
	}
	serveManifestBytes(w, r, data, err, cc)
}

// rangeManifest returns the range manifest of rel (n: its first segment).
// Errors of the store are marked (storeError).
func (h *Handler) rangeManifest(ctx context.Context, rel string, n uint64) ([]byte, bool, error) {
	dir := path.Dir(rel)
	id, rendition, _ := strings.Cut(dir, "/")
	recKey := dir + "/recording.m3u8"
	st, err := h.store.Stat(ctx, recKey)
	if err != nil {
		return nil, false, storeError(err)
	}
	key := dir + "\x00" + strconv.FormatUint(n, 10)
	h.manifests.mu.Lock()
	c, ok := h.manifests.ranges[key]
	h.manifests.mu.Unlock()
	// Any range stays valid while the recording is unchanged; a final one
	// while the recording is the same broadcast's (appends keep it; a new
	// broadcast replaces it).
	if ok && c.from.ETag == st.ETag && c.from.Size == st.Size {
		return c.data, c.final, nil
	}
	if ok && c.final && h.sameRecording(ctx, recKey, st, c) {
		h.manifests.mu.Lock()
		if cur, ok := h.manifests.ranges[key]; ok && cur.from.ETag == c.from.ETag {
			cur.from = st // checked: the next request needs only the Stat
			h.manifests.ranges[key] = cur
		}
		h.manifests.mu.Unlock()
		return c.data, c.final, nil
	}
	// Shared by every request that waits for it: one that leaves does not
	// cancel it.
	ctx = context.WithoutCancel(ctx)
	v, err, _ := h.hashGroup.Do("range\x00"+key, func() (any, error) {
		rec, from, err := storage.ReadAll(ctx, h.store, recKey)
		if err != nil {
			return nil, storeError(err)
		}
		objs, next, ended := manifest.PlaylistObjects(rec)
		total := countSegments(objs)
		first := next - uint64(total) // the recording's media sequence
		// A recording may start mid-range (a rendition that joined the
		// stream late): the range lists what it has.
		if n+hlspath.RangeManifestSegments <= first || n >= next {
			return nil, fmt.Errorf("range manifest %d of %s: %w", n, dir, storage.ErrNotFound)
		}
		m := manifest.Manifest{ID: id, Rendition: rendition, Time: h.clock()}
		seq, init, listedInit, last := first, "", "", ""
		count := 0
		for _, o := range objs {
			switch o.Kind {
			case manifest.KindInit:
				init = o.URI
				continue
			case manifest.KindPart:
				continue
			}
			if seq >= n && seq < n+hlspath.RangeManifestSegments {
				if init != "" && init != listedInit {
					e, err := h.entry(ctx, path.Join(dir, init), manifest.Object{Kind: manifest.KindInit, URI: init})
					if err != nil {
						return nil, fmt.Errorf("range manifest of %s: %s: %w", dir, init, err)
					}
					m.Entries = append(m.Entries, e)
					listedInit = init
				}
				e, err := h.entry(ctx, path.Join(dir, o.URI), o)
				if err != nil {
					return nil, fmt.Errorf("range manifest of %s: %s: %w", dir, o.URI, err)
				}
				m.Entries = append(m.Entries, e)
				last = o.URI
				count++
			}
			seq++
		}
		m.Seq = max(n, first) + uint64(count) // after the last listed
		m.Ended = ended || m.Seq == n+hlspath.RangeManifestSegments
		data, err := manifest.Sign(m, h.contentKey)
		if err != nil {
			return nil, err
		}
		rm := rangeManifest{from: from, data: data, final: m.Ended}
		if rm.final && last != "" {
			// The end of the last segment's line (names are unique in a
			// recording).
			if i := bytes.Index(rec, []byte("\n"+last+"\n")); i >= 0 {
				rm.end = int64(i + len(last) + 2)
				rm.mark = bytes.Clone(rec[max(0, rm.end-rangeMarkBytes):rm.end])
			}
		}
		h.manifests.mu.Lock()
		if h.manifests.ranges == nil || len(h.manifests.ranges) >= maxManifests {
			h.manifests.ranges = map[string]rangeManifest{}
		}
		h.manifests.ranges[key] = rm
		h.manifests.mu.Unlock()
		return rm, nil
	})
	if err != nil {
		return nil, false, err
	}
	rm := v.(rangeManifest)
	return rm.data, rm.final, nil
}

// sameRecording tells whether the recording at key (now st) still holds
// the final range c: it has c's mark at the same place. Any error reads as
// no (the range is made again).
func (h *Handler) sameRecording(ctx context.Context, key string, st storage.Info, c rangeManifest) bool {
	if len(c.mark) == 0 || st.Size < c.end {
		return false
	}
	off := c.end - int64(len(c.mark))
	rc, got, err := h.store.Get(ctx, key, storage.Range{Offset: off, Length: int64(len(c.mark))})
	if err != nil {
		return false
	}
	defer rc.Close()
	b, err := io.ReadAll(io.LimitReader(rc, int64(len(c.mark))+1))
	return err == nil && got.Size >= c.end && bytes.Equal(b, c.mark)
}
