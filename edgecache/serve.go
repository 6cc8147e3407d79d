package edgecache

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
)

// Header values shared by every answer (net/http never modifies them).
var (
	hvAllowMethods = []string{"GET, HEAD, OPTIONS"}
	hvBytes        = []string{"bytes"}
	hvNoStore      = []string{"no-store"}
)

// cors holds the contract's CORS headers (hlspath.SetCORS, as the origin
// sends them), computed once.
var cors = func() (kv []struct {
	k string
	v []string
}) {
	h := http.Header{}
	hlspath.SetCORS(h)
	for k, v := range h {
		if strings.HasPrefix(k, "Access-Control-") {
			kv = append(kv, struct {
				k string
				v []string
			}{k, slices.Clip(slices.Clone(v))})
		}
	}
	return kv
}()

type headerRecorder struct{ h http.Header }

func (r *headerRecorder) Header() http.Header         { return r.h }
func (r *headerRecorder) Write(p []byte) (int, error) { return len(p), nil }
func (r *headerRecorder) WriteHeader(int)             {}

var hvP2POff, keyP2P = []string{"off"}, http.CanonicalHeaderKey(HeaderP2P)

var hvACAO, hvACEH = corsValue("Access-Control-Allow-Origin"), corsValue("Access-Control-Expose-Headers")

func corsValue(k string) []string {
	for _, kv := range cors {
		if kv.k == k {
			return kv.v
		}
	}
	return nil
}

// setCORS sets the same CORS headers as the origin.
func setCORS(h http.Header) {
	for i := range cors {
		h[cors[i].k] = cors[i].v
	}
}

// ServeHTTP serves GET, HEAD and OPTIONS for the paths origin.ParsePath
// accepts. The http.Server should set MaxHeaderBytes: header size is its job.
func (c *Cache) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	c.conns.Add(1)
	defer c.conns.Add(-1)
	h := w.Header()
	switch r.Method {
	case http.MethodGet, http.MethodHead:
		// Only what a simple request needs: the rest of the CORS headers
		// matter to preflights, and at most 8 header keys keep net/http's
		// header map (and its clone) from growing past one group.
		h["Access-Control-Allow-Origin"] = hvACAO
		h["Access-Control-Expose-Headers"] = hvACEH
	case http.MethodOptions:
		setCORS(h)
		h[HeaderCacheStatus] = c.csLocal
		w.WriteHeader(http.StatusNoContent)
		return
	default:
		setCORS(h)
		h["Allow"] = hvAllowMethods
		h[HeaderCacheStatus] = c.csLocal
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	p := r.URL.Path
	// Escapes in the path ("%2e%2e", "%2f") are never legitimate here.
	if r.URL.RawPath != "" || strings.IndexByte(p, '%') >= 0 {
		h[HeaderCacheStatus] = c.csLocal
		http.Error(w, "bad path", http.StatusBadRequest)
		return
	}
	// A blocking playlist reload is cached under its own key (blocking.go);
	// malformed parameters never go upstream.
	key, ok := blockingKey(p, r.URL.RawQuery)
	if !ok {
		h[HeaderCacheStatus] = c.csLocal
		h["Cache-Control"] = hvNoStore
		http.Error(w, "bad "+paramMSN+" or "+paramPart, http.StatusBadRequest)
		return
	}
	// Only paths ParsePath accepted are ever stored, so a hit needs no parsing.
	now := c.now()
	// Every viewer asks for playlists every few seconds: counting those
	// (of valid paths only) counts viewers at a fraction of the cost of
	// every request.
	countViewer := r.Header[HeaderSibling] == nil && strings.HasSuffix(p, ".m3u8")
	o := c.mem.get(key)
	if (o == nil || !o.fresh(now)) && isBlockingKey(key) {
		if eo := c.endedCopy(key, now); eo != nil {
			// The playlist has ended: it holds every position.
			o = eo
		} else if nk := c.marks.newer(key); nk != "" {
			// A position already passed: the newest answer holds it.
			if no := c.mem.get(nk); no != nil && no.fresh(now) && now.Sub(time.Unix(0, no.meta.Stored)) < passedAnswerAge {
				o = no
			}
		}
	}
	if o != nil && o.fresh(now) && !o.stream.deleted.Load() {
		if countViewer {
			c.sawViewer(c.viewerIP(r), now.Unix())
		}
		var a access
		c.serveHit(w, r, o, &a)
		return
	}
	rel, ok := hlspath.Parse(p)
	if !ok {
		h[HeaderCacheStatus] = c.csLocal
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if countViewer {
		c.sawViewer(c.viewerIP(r), now.Unix())
	}
	c.serveMiss(w, r, key, rel[:strings.IndexByte(rel, '/')], now)
}

// access is the outcome of asking Deps.Access.
type access struct {
	asked  bool
	signed bool
	token  string
}

// authorize asks Deps.Access (once per policy) and writes the refusal.
func (c *Cache) authorize(w http.ResponseWriter, r *http.Request, id string, signed bool, a *access) bool {
	if c.access == nil || (a.asked && a.signed == signed) {
		return true
	}
	tok, status := c.access(r, id, signed)
	if status != 0 {
		h := w.Header()
		h[HeaderCacheStatus] = c.csRefused
		h["Cache-Control"] = hvNoStore
		http.Error(w, http.StatusText(status), status)
		return false
	}
	*a = access{asked: true, signed: signed, token: tok}
	return true
}

func (c *Cache) countServed(o *object, n int64) {
	if n <= 0 {
		return
	}
	c.served.Add(n)
	o.stream.served.Add(n)
	c.m.bytesServed.Add(float64(n))
}

// serveHit answers from a memory object.
func (c *Cache) serveHit(w http.ResponseWriter, r *http.Request, o *object, a *access) {
	if !c.authorize(w, r, o.id, c.signedFor(o), a) {
		return
	}
	h := w.Header()
	c.hits.Add(1)
	if o.status == http.StatusNotFound {
		c.m.negative.Inc()
		h[HeaderCacheStatus] = c.csNegative
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	c.m.hit.Inc()
	h[HeaderCacheStatus] = c.csHit
	if o.stale {
		h[HeaderCacheStatus] = c.csStaleHit
		c.setAge(h, o)
	}
	c.writeBody(w, r, o, o.body, a.token)
}

// setAge sets the Age of an answer from a copy served stale.
func (c *Cache) setAge(h http.Header, o *object) {
	age := max(0, (c.now().UnixNano()-o.Stored)/int64(time.Second))
	h["Age"] = []string{strconv.FormatInt(age, 10)}
}

// revalidateGrace is how long past its freshness a playlist is served to
// viewers while another request revalidates it, instead of making them
// wait on the origin.
const revalidateGrace = 2 * time.Second

// serveRevalidating answers a playlist from its copy that expired less
// than revalidateGrace ago, while f revalidates it. Manifests are not: a
// player that finds a new segment missing from one asks again a second
// later and must then get the new one.
func (c *Cache) serveRevalidating(w http.ResponseWriter, r *http.Request, f *fetch, now time.Time, a *access) bool {
	s := f.stale
	if s == nil || s.body == nil || s.status != http.StatusOK || r.Header.Get(HeaderSibling) != "" ||
		!s.playlist || now.UnixNano() > s.expires+int64(revalidateGrace) {
		return false
	}
	if !c.authorize(w, r, s.id, c.signedFor(s), a) {
		return true
	}
	c.hits.Add(1)
	c.m.hit.Inc()
	w.Header()[HeaderCacheStatus] = c.csRevalidating
	c.writeBody(w, r, s, s.body, a.token)
	return true
}

// signedFor is the policy passed to Access for an object: signed when the
// invalidation feed says so, or, for a 200, when the origin answered it
// as signed (an "open" from the feed does not override that: it fails
// closed); for a 404, the feed's or else the stream's last known one.
func (c *Cache) signedFor(o *object) bool {
	f := o.stream.forced.Load()
	if o.status == http.StatusOK {
		return f == policySigned || o.Signed
	}
	if f != policyUnknown {
		return f == policySigned
	}
	return o.stream.signed.Load() == policySigned
}

// writeBody writes a complete body with o's headers: the fast path for a
// plain GET, http.ServeContent for ranges and conditional requests.
func (c *Cache) writeBody(w http.ResponseWriter, r *http.Request, o *object, body []byte, token string) {
	h := w.Header()
	h["Content-Type"] = o.hType
	if o.NoP2P {
		h[keyP2P] = hvP2POff
	}
	h["Cache-Control"] = o.hCC
	if token != "" && o.playlist {
		// The rewritten bytes are this viewer's: another ETag would be needed.
		body = RewritePlaylist(body, token)
	} else if o.hETag != nil {
		h["Etag"] = o.hETag
	}
	if r.Header["Range"] != nil || r.Header["If-None-Match"] != nil {
		cw := &countingWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", time.Time{}, bytes.NewReader(body))
		c.countServed(o, cw.n)
		return
	}
	if len(body) == int(o.Size) && o.hLen != nil {
		h["Content-Length"] = o.hLen
	} else {
		h["Content-Length"] = []string{strconv.Itoa(len(body))}
	}
	h["Accept-Ranges"] = hvBytes
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return
	}
	n, _ := w.Write(body)
	c.countServed(o, int64(n))
}

// serveSpool answers r (a range, a conditional request) with the
// complete body p spooled to disk.
func (c *Cache) serveSpool(w http.ResponseWriter, r *http.Request, o *object, p progress) {
	objectHeaders(w.Header(), o)
	cw := &countingWriter{ResponseWriter: w}
	http.ServeContent(cw, r, "", time.Time{}, io.NewSectionReader(p.spool, 0, p.spooled))
	c.countServed(o, cw.n)
}

// objectHeaders sets o's own headers on an answer of its bytes as stored.
func objectHeaders(h http.Header, o *object) {
	h["Content-Type"] = o.hType
	if o.NoP2P {
		h[keyP2P] = hvP2POff
	}
	h["Cache-Control"] = o.hCC
	if o.hETag != nil {
		h["Etag"] = o.hETag
	}
}

type countingWriter struct {
	http.ResponseWriter
	n int64
}

func (cw *countingWriter) Write(p []byte) (int, error) {
	n, err := cw.ResponseWriter.Write(p)
	cw.n += int64(n)
	return n, err
}

// serveMiss answers what memory did not have: from disk, from a fetch in
// flight, or by starting one. key is the cache key: the path, or the path
// and the parameters of a blocking reload.
func (c *Cache) serveMiss(w http.ResponseWriter, r *http.Request, key, id string, now time.Time) {
	var a access
	st := c.stream(id)
	if st.deleted.Load() {
		// The origin deleted it: nothing of it is served or fetched again.
		w.Header()[HeaderCacheStatus] = c.csLocal
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	if st.isSigned() && !c.authorize(w, r, id, true, &a) {
		// Refuse viewers of a signed stream before anything goes upstream.
		return
	}
	if c.isBig(key) {
		c.passthrough(w, r, key, id, &a)
		return
	}
	token := r.URL.Query().Get("token")
	ip := ""
	if token != "" {
		ip = c.viewerIP(r)
	}
	fromSibling := r.Header.Get(HeaderSibling) != ""
	segment := isSegment(key)
	// Parts come from the origin only: the one named by the playlist's
	// preload hint is held there until it exists, longer than a sibling
	// is given (SiblingTimeout) before it is skipped as failing.
	siblings := segment && !hlspath.IsPart(key)
	flightKey := key
	if siblings && (fromSibling || c.selfOwns(key)) {
		// A sibling's request must not wait on a fetch that may be waiting
		// on that sibling; the owner's own viewers share that fetch.
		flightKey = key + "\x00origin"
	}
	for attempt := 0; attempt < 3; attempt++ {
		gen := c.genOf(id) // before the entry is looked up: see serveDisk
		if e := c.disk.get(key); e != nil && e.obj.fresh(now) && c.serveDisk(w, r, e, &a, gen) {
			return
		}
		if isBlockingKey(key) {
			// A playlist that has ended, kept on disk only.
			if e := c.disk.get(keyPath(key)); e != nil && e.obj.Ended && e.obj.fresh(now) && c.serveDisk(w, r, e, &a, gen) {
				return
			}
		}
		f, leader, o := c.join(r.Context(), flightKey, key, id, token, ip, siblings && flightKey == key, now)
		if o != nil {
			// Stored while we looked.
			c.serveHit(w, r, o, &a)
			return
		}
		if f == nil {
			continue
		}
		// The reference join took on f is dropped however the answer ends
		// (an aborted one panics).
		retry, answered := func() (bool, bool) {
			defer f.release()
			switch {
			case leader:
				return c.lead(w, r, f, flightKey, token, ip, &a), false
			case c.serveRevalidating(w, r, f, now, &a):
				return false, true
			default:
				return c.serveFetch(w, r, f, false, token, ip, &a), false
			}
		}()
		if answered || !retry {
			return
		}
		// Fetch again once that fetch has left the table.
		select {
		case <-f.done:
		case <-r.Context().Done():
			return
		}
		now = c.now()
	}
	w.Header()[HeaderCacheStatus] = []string{c.cachePrefix + "fwd=miss"}
	http.Error(w, "upstream busy", http.StatusBadGateway)
}

// lead runs fetch f, which this request started, and answers from it. The
// fetch goroutine is this request's: it is waited for even when the client
// is gone or the answer is aborted.
func (c *Cache) lead(w http.ResponseWriter, r *http.Request, f *fetch, flightKey, token, ip string, a *access) bool {
	go c.fill(f, flightKey)
	defer func() { <-f.done }()
	return c.serveFetch(w, r, f, true, token, ip, a)
}

func isSegment(key string) bool {
	return strings.HasSuffix(key, ".m4s") || strings.HasSuffix(key, ".mp4") || strings.HasSuffix(key, ".ts")
}

// join returns the fetch in flight for flightKey, or starts one (leader),
// or returns the object that a fetch stored meanwhile.
func (c *Cache) join(ctx context.Context, flightKey, key, id, token, ip string, siblings bool, now time.Time) (f *fetch, leader bool, o *object) {
	c.flightMu.Lock()
	defer c.flightMu.Unlock()
	if f := c.flights[flightKey]; f != nil {
		f.ref()
		if c.onJoin != nil {
			c.onJoin()
		}
		return f, false, nil
	}
	prev := c.mem.peek(key)
	if prev != nil && prev.fresh(now) {
		return nil, false, prev
	}
	if isBlockingKey(key) {
		if eo := c.endedCopy(key, now); eo != nil {
			return nil, false, eo
		}
	}
	if e := c.disk.get(key); e != nil && e.obj.fresh(now) {
		return nil, false, nil // the caller tries the disk again
	}
	var stale *object
	if prev != nil && prev.status == http.StatusOK && prev.body != nil {
		stale = prev
	}
	if prev != nil && (prev.status != http.StatusOK || prev.ETag == "") {
		prev = nil
	}
	// The fetch outlives this request (others may wait on it) but ends with
	// the cache's Run (cancelFlights) and its own watchdogs.
	f = newFetch(context.WithoutCancel(ctx), key, id, token, ip, siblings && c.siblings != nil, prev)
	f.gen = c.genOf(id)
	f.stale = stale
	f.ref() // the leader's
	c.flights[flightKey] = f
	return f, true, nil
}

// serveDisk answers from a disk entry looked up at generation gen. It
// reports false when the file is gone (the caller fetches). An entry
// promoted to memory is not if an invalidation came since the lookup.
func (c *Cache) serveDisk(w http.ResponseWriter, r *http.Request, e *diskEntry, a *access, gen generation) bool {
	o := e.obj
	// An object not yet checked against its SHA-256 since the edge started
	// is checked first, once however many ask (hashing the file as it is
	// read, without holding it in memory): a file altered or damaged on
	// disk is dropped (and fetched again), never served.
	if !e.checked.Load() {
		if err := c.disk.check(e); err != nil {
			if errors.Is(err, errCorrupt) {
				c.corrupt.Add(1)
				c.m.corrupt.Inc()
				c.reportError("dropped a disk cache object that does not match its SHA-256", "path", o.Key, "file", e.file)
			}
			c.disk.drop(e)
			return false
		}
	}
	// An object hit twice on disk is promoted to memory; one hit does not
	// justify reading it whole (sendfile serves it without a copy).
	if c.mem.fits(o.Size) && e.hits.Add(1) >= 2 {
		body, err := c.disk.readBody(e)
		if err != nil {
			c.disk.drop(e)
			return false
		}
		mo := c.withBody(o, body)
		c.mem.putIf(mo, c.current(gen))
		c.serveHit(w, r, mo, a)
		return true
	}
	f, err := c.disk.open(e)
	if err != nil {
		c.disk.drop(e)
		return false
	}
	defer f.Close()
	if !c.authorize(w, r, o.id, c.signedFor(o), a) {
		return true
	}
	c.hits.Add(1)
	c.m.hit.Inc()
	h := w.Header()
	h[HeaderCacheStatus] = c.csHit
	h["Content-Type"] = o.hType
	if o.NoP2P {
		h[keyP2P] = hvP2POff
	}
	h["Cache-Control"] = o.hCC
	// A playlist rewritten for the viewer's token is other bytes than the
	// stored copy: its ETag would answer 304 to a viewer holding the copy
	// of another token (writeBody sets none).
	if o.hETag != nil && !(a.token != "" && o.playlist) {
		h["Etag"] = o.hETag
	}
	size := e.size - e.off
	if (a.token != "" && o.playlist) || r.Header["Range"] != nil || r.Header["If-None-Match"] != nil {
		if a.token != "" && o.playlist {
			body, err := c.disk.readBody(e)
			if err != nil {
				http.Error(w, "unavailable", http.StatusInternalServerError)
				return true
			}
			c.writeBody(w, r, o, body, a.token)
			return true
		}
		cw := &countingWriter{ResponseWriter: w}
		http.ServeContent(cw, r, "", time.Time{}, io.NewSectionReader(f, e.off, size))
		c.countServed(o, cw.n)
		return true
	}
	h["Content-Length"] = o.hLen
	h["Accept-Ranges"] = hvBytes
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return true
	}
	if _, err := f.Seek(e.off, io.SeekStart); err != nil {
		return true
	}
	// io.Copy from an *os.File (via LimitedReader) lets net/http sendfile.
	n, _ := io.Copy(w, io.LimitReader(f, size))
	c.countServed(o, n)
	return true
}

// serveFetch answers from a fetch, streaming the body as it arrives. It
// reports true when the caller should fetch again for itself (the result was
// an answer to another viewer's token, or to the same token from another
// address).
func (c *Cache) serveFetch(w http.ResponseWriter, r *http.Request, f *fetch, leader bool, token, ip string, a *access) bool {
	select {
	case <-f.hdr:
	case <-r.Context().Done():
		return false
	}
	res := f.res
	if res.passthrough {
		c.passthrough(w, r, f.key, f.id, a)
		return false
	}
	if !res.shareable && !leader && (token != f.token || ip != f.viewerIP) {
		return true
	}
	signed := c.stream(f.id).isSigned()
	if res.obj != nil {
		signed = c.signedFor(res.obj)
	}
	if !c.authorize(w, r, f.id, signed, a) {
		return false
	}
	h := w.Header()
	c.misses.Add(1)
	if leader {
		c.m.miss.Inc()
		h[HeaderCacheStatus] = res.cacheStatus
	} else {
		c.m.collapsed.Inc()
		if res.fwd == "stale" {
			h[HeaderCacheStatus] = c.csStaleCollapsed
		} else {
			h[HeaderCacheStatus] = c.csCollapsed
		}
	}
	switch res.status {
	case http.StatusOK:
	case http.StatusNotFound:
		if res.noStore {
			h["Cache-Control"] = hvNoStore
		}
		http.Error(w, "not found", http.StatusNotFound)
		return false
	default:
		h["Cache-Control"] = hvNoStore
		http.Error(w, http.StatusText(res.status), res.status)
		return false
	}
	o := res.obj
	if r.Header["Range"] != nil || r.Header["If-None-Match"] != nil || (a.token != "" && o.playlist) || (res.length < 0 && r.Method == http.MethodHead) {
		p, ok := f.completed(r.Context())
		if !ok {
			if r.Context().Err() == nil {
				h["Cache-Control"] = hvNoStore
				http.Error(w, "upstream failed", http.StatusBadGateway)
			}
			return false
		}
		if p.spool != nil && !(a.token != "" && o.playlist) {
			// A large body spooled to disk is served from there: read
			// whole into memory for every range asked, it would let
			// viewers pile copies of it up past MaxInFlightBytes.
			c.serveSpool(w, r, o, p)
			return false
		}
		body := p.buf
		if p.spool != nil {
			var err error
			if body, err = p.read(0, make([]byte, p.spooled)); err != nil {
				h["Cache-Control"] = hvNoStore
				http.Error(w, "upstream failed", http.StatusBadGateway)
				return false
			}
		}
		c.writeBody(w, r, c.withBody(o, body), body, a.token)
		return false
	}
	objectHeaders(h, o)
	if o.stale {
		c.setAge(h, o)
	}
	if o.hLen != nil {
		h["Content-Length"] = o.hLen
		h["Accept-Ranges"] = hvBytes
	}
	w.WriteHeader(http.StatusOK)
	if r.Method == http.MethodHead {
		return false
	}
	rc := http.NewResponseController(w)
	var off int
	var chunk []byte
	for {
		p := f.snapshot()
		if int64(off) < p.size() {
			if p.spool != nil && chunk == nil {
				chunk = make([]byte, 64<<10)
			}
			next, err := p.read(int64(off), chunk)
			if err != nil {
				panic(http.ErrAbortHandler)
			}
			n, err := w.Write(next)
			off += n
			c.countServed(o, int64(n))
			if err != nil {
				return false
			}
			_ = rc.Flush()
			continue
		}
		if p.complete {
			return false
		}
		if p.failed {
			// The client must see a truncated answer, not a short one.
			panic(http.ErrAbortHandler)
		}
		select {
		case <-p.changed:
		case <-r.Context().Done():
			return false
		}
	}
}

// passthrough streams an object too big to cache from the origin.
func (c *Cache) passthrough(w http.ResponseWriter, r *http.Request, key, id string, a *access) {
	token := r.URL.Query().Get("token")
	ip := ""
	if token != "" {
		ip = c.viewerIP(r)
	}
	prep := func(req *http.Request) {
		for _, k := range []string{"Range", "If-Range", "If-None-Match", "If-Modified-Since"} {
			if v := r.Header[k]; v != nil {
				req.Header[k] = v
			}
		}
	}
	h := w.Header()
	h[HeaderCacheStatus] = []string{c.cachePrefix + "fwd=miss; detail=origin"}
	c.misses.Add(1)
	c.m.miss.Inc()
	resp, ctx, wd, err := c.originDo(r.Context(), r.Method, key, token, ip, c.headerTimeout(key), prep, true)
	if err != nil {
		if r.Context().Err() == nil && ctx != nil {
			c.reportError("origin fetch failed", "path", key, "err", upstreamErr(ctx, err))
			h["Cache-Control"] = hvNoStore
			http.Error(w, "bad gateway", http.StatusBadGateway)
		} else if ctx == nil {
			http.Error(w, "bad request", http.StatusBadRequest)
		}
		return
	}
	defer wd.stop()
	defer resp.Body.Close()
	wd.kick()
	if !c.authorize(w, r, id, strings.EqualFold(resp.Header.Get(HeaderPolicy), "signed"), a) {
		return
	}
	switch code := resp.StatusCode; {
	case code == http.StatusOK || code == http.StatusPartialContent || code == http.StatusNotModified ||
		code == http.StatusRequestedRangeNotSatisfiable || (code >= 400 && code < 500):
		for _, k := range []string{"Content-Type", "Content-Length", "Content-Range", "Cache-Control", "Etag", "Accept-Ranges", "Last-Modified", keyP2P} {
			if v := resp.Header[k]; v != nil {
				h[k] = v
			}
		}
		w.WriteHeader(code)
	default:
		h["Cache-Control"] = hvNoStore
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return
	}
	st := c.stream(id)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			wd.kick()
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			c.served.Add(int64(n))
			st.served.Add(int64(n))
			c.m.bytesServed.Add(float64(n))
		}
		if err == io.EOF {
			return
		}
		if err != nil {
			panic(http.ErrAbortHandler)
		}
	}
}

// selfOwns reports whether this edge owns key among its siblings.
func (c *Cache) selfOwns(key string) bool {
	if c.siblings == nil {
		return false
	}
	_, ok := c.owner(key)
	return !ok
}
