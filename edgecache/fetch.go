package edgecache

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"
)

// fetch is one upstream fetch that any number of requests wait on. Its body
// grows in buf; readers take buf[:n] snapshots under mu and wait on notify,
// which is closed and replaced each time bytes arrive.
type fetch struct {
	key      string  // cache key: the URL path (and a blocking reload's parameters)
	id       string  // stream id
	token    string  // the leader's playback token, forwarded upstream
	viewerIP string  // the leader's address, vouched for with the token
	siblings bool    // a sibling may be asked
	prev     *object // revalidated with If-None-Match
	stale    *object // served if the origin fails (stale-if-error)
	// gen is the cache's and the stream's invalidation generations when
	// the fetch started: what it gets is stored only while no
	// invalidation of the stream (nor a Reset) came since.
	gen    generation
	ctx    context.Context
	cancel context.CancelFunc

	hdr chan struct{} // closed once res is set
	res result

	mu       sync.Mutex
	buf      []byte
	notify   chan struct{}
	complete bool
	failed   bool

	// A body too big to hold in memory with the other misses in flight
	// is spooled to a file instead of buf: spooled bytes are written so
	// far, readable with spool.ReadAt (spool is nil again once the body
	// moved to memory, after a failed write). refs counts the fill and
	// every request that joined the fetch (join takes the reference under
	// the flight table's lock); the last release closes file, the spool
	// file, which readers of an older snapshot may still be reading.
	spool   spooler
	file    spooler
	spooled int64
	refs    int

	done chan struct{} // closed when the fetch is over and its object stored
}

// result is what a fetch tells its readers once the upstream answered.
type result struct {
	status      int      // 200, 404, 502, or an upstream 4xx relayed
	obj         *object  // 200 and 404: metadata and header values (body nil)
	length      int64    // body length, -1 unknown
	cacheStatus []string // the leader's Cache-Status
	fwd         string   // "miss" or "stale"
	shareable   bool     // false: a reader with another token fetches for itself
	noStore     bool     // a 404 the upstream marked no-store: answered with no-store, not remembered
	passthrough bool     // too big to cache: each reader fetches for itself
}

func newFetch(ctx context.Context, key, id, token, viewerIP string, siblings bool, prev *object) *fetch {
	fctx, cancel := context.WithCancel(ctx)
	return &fetch{
		key: key, id: id, token: token, viewerIP: viewerIP, siblings: siblings, prev: prev,
		ctx: fctx, cancel: cancel,
		hdr:    make(chan struct{}),
		notify: make(chan struct{}),
		done:   make(chan struct{}),
		refs:   1, // the fill's
	}
}

func (f *fetch) publish(res result) {
	f.res = res
	close(f.hdr)
}

// grow publishes buf, which extends the bytes published so far.
func (f *fetch) grow(buf []byte) {
	f.mu.Lock()
	f.buf = buf
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
}

// end marks the body complete (or failed) and wakes every reader.
func (f *fetch) end(failed bool) {
	f.mu.Lock()
	f.complete = !failed
	f.failed = failed
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
}

// growSpool publishes that the spool file now holds n bytes.
func (f *fetch) growSpool(n int64) {
	f.mu.Lock()
	f.spooled = n
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
}

// unspool publishes buf, which holds the bytes spooled so far and more, as
// the body: readers read it from memory from now on.
func (f *fetch) unspool(buf []byte) {
	f.mu.Lock()
	f.spool, f.spooled = nil, 0
	f.buf = buf
	close(f.notify)
	f.notify = make(chan struct{})
	f.mu.Unlock()
}

// ref takes a reference on the fetch (its spool file).
func (f *fetch) ref() {
	f.mu.Lock()
	f.refs++
	f.mu.Unlock()
}

// release drops a reference on the fetch, closing its spool file with the
// last.
func (f *fetch) release() {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.refs--
	if f.refs == 0 && f.file != nil {
		f.file.Close()
	}
}

// progress is what a fetch has published so far.
type progress struct {
	buf      []byte  // the body so far, when held in memory
	spool    spooler // or the file it is spooled to
	spooled  int64   // with this many bytes written
	complete bool
	failed   bool
	changed  <-chan struct{} // closed at the next change
}

// size is how many body bytes are available.
func (p progress) size() int64 {
	if p.spool != nil {
		return p.spooled
	}
	return int64(len(p.buf))
}

// read returns the available bytes from off on: a slice of buf, or what is
// read from the spool file into chunk.
func (p progress) read(off int64, chunk []byte) ([]byte, error) {
	if p.spool == nil {
		return p.buf[off:], nil
	}
	k, err := p.spool.ReadAt(chunk[:min(int64(len(chunk)), p.spooled-off)], off)
	if k > 0 {
		err = nil
	}
	return chunk[:k], err
}

// snapshot returns what the fetch has published so far.
func (f *fetch) snapshot() progress {
	f.mu.Lock()
	defer f.mu.Unlock()
	return progress{buf: f.buf, spool: f.spool, spooled: f.spooled, complete: f.complete, failed: f.failed, changed: f.notify}
}

// completed waits for the complete body (in memory, or spooled); false if
// the fetch failed or ctx ended.
func (f *fetch) completed(ctx context.Context) (progress, bool) {
	for {
		p := f.snapshot()
		switch {
		case p.complete:
			return p, true
		case p.failed:
			return progress{}, false
		}
		select {
		case <-p.changed:
		case <-ctx.Done():
			return progress{}, false
		}
	}
}

// watchdog cancels a context when kick is not called in time: first bounds
// the wait for an answer's headers, d every pause in its body (and the
// wait after each kick).
type watchdog struct {
	t      *time.Timer
	d      time.Duration
	cancel context.CancelCauseFunc
}

var errStalled = errors.New("upstream stalled")

func newWatchdog(parent context.Context, first, d time.Duration) (context.Context, *watchdog) {
	ctx, cancel := context.WithCancelCause(parent)
	w := &watchdog{d: d, cancel: cancel}
	w.t = time.AfterFunc(first, func() { cancel(errStalled) })
	return ctx, w
}

func (w *watchdog) kick() { w.t.Reset(w.d) }

func (w *watchdog) stop() {
	w.t.Stop()
	w.cancel(nil)
}

// fill runs the fetch to its end: it publishes a result, the body, and
// stores what may be stored, then leaves the flight table.
func (c *Cache) fill(f *fetch, flightKey string) {
	published := false
	defer func() {
		if !published {
			f.publish(result{status: http.StatusBadGateway, shareable: true, fwd: "miss",
				cacheStatus: c.cacheStatus("miss", 0, false, "origin")})
			f.end(true)
		}
		c.flightMu.Lock()
		if c.flights[flightKey] == f {
			delete(c.flights, flightKey)
		}
		c.flightMu.Unlock()
		f.cancel()
		close(f.done)
		f.release()
	}()
	var refused *refusal
	if f.siblings {
		if sib, ok := c.owner(f.key); ok {
			if published, refused = c.fromSibling(f, sib); published {
				return
			}
		}
	}
	published = c.fromOrigin(f)
	if refused != nil {
		c.judgeRefusal(f, refused)
	}
}

// fromOrigin fetches f from the origin. It reports whether it published.
func (c *Cache) fromOrigin(f *fetch) bool {
	fwd := "miss"
	if f.prev != nil {
		fwd = "stale"
	}
	revalidate := f.prev != nil && f.prev.ETag != "" && f.prev.body != nil
	var prep func(*http.Request)
	if revalidate {
		prep = func(req *http.Request) { req.Header.Set("If-None-Match", f.prev.ETag) }
	}
	resp, ctx, wd, err := c.originDo(f.ctx, http.MethodGet, f.key, f.token, f.viewerIP, c.headerTimeout(f.key), prep, true)
	if err != nil {
		if ctx == nil {
			return false
		}
		c.reportError("origin fetch failed", "path", f.key, "err", upstreamErr(ctx, err))
		if c.publishStale(f, 0) {
			return true
		}
		f.publish(result{status: http.StatusBadGateway, shareable: true, fwd: fwd,
			cacheStatus: c.cacheStatus(fwd, 0, false, "origin")})
		f.end(true)
		return true
	}
	defer wd.stop()
	defer resp.Body.Close()
	wd.kick()
	if strings.EqualFold(resp.Header.Get(HeaderPolicy), "signed") {
		// Remembered even from a 403 or 404: later viewers of the stream
		// are checked before anything goes upstream.
		c.stream(f.id).signed.Store(policySigned)
	}
	c.checkPolicy(f, resp.Header)
	code := resp.StatusCode
	switch {
	case code == http.StatusNotModified && revalidate:
		ttl, ok := freshness(resp.Header)
		if !ok {
			ttl = 0
		}
		m := f.prev.meta
		m.Stored = c.now().UnixNano()
		m.TTL = ttl
		if cc := resp.Header.Get("Cache-Control"); cc != "" {
			m.CacheControl = cc
		}
		if et := resp.Header.Get("ETag"); et != "" {
			m.ETag = et
		}
		// The stream's marks as the origin says them now: a change (P2P
		// turned off or on, a policy) reaches copies kept by revalidation.
		m.Signed = strings.EqualFold(resp.Header.Get(HeaderPolicy), "signed")
		m.NoP2P = strings.EqualFold(resp.Header.Get(HeaderP2P), "off")
		o := c.newObject(m, http.StatusOK, f.prev.body)
		stored := c.mem.putIf(o, c.current(f.gen))
		f.grow(o.body)
		f.publish(result{status: http.StatusOK, obj: o, length: o.Size, shareable: true, fwd: fwd,
			cacheStatus: c.cacheStatus(fwd, code, stored, "origin")})
		f.end(false)
		return true
	case code == http.StatusOK:
		c.originBody(f, resp, wd, fwd)
		return true
	case code == http.StatusNotFound:
		// A 404 the origin marks no-store (a part that does not exist
		// yet) is not remembered: it is answered to the viewers waiting
		// on this fetch only.
		o := c.negative(f.key)
		noStore := noStore(resp.Header.Get("Cache-Control"))
		stored := !noStore && c.mem.putIf(o, c.current(f.gen))
		f.publish(result{status: http.StatusNotFound, obj: o, shareable: true, noStore: noStore, fwd: fwd,
			cacheStatus: c.cacheStatus(fwd, code, stored, "origin")})
		f.end(false)
		return true
	case code == http.StatusBadRequest && isBlockingKey(f.key):
		// A blocking reload for a segment too far ahead: the answer is the
		// same for every viewer of the key (Deps.Access still decides who
		// sees it), and is never cached.
		f.publish(result{status: code, shareable: true, fwd: fwd,
			cacheStatus: c.cacheStatus(fwd, code, false, "origin")})
		f.end(true)
		return true
	case code >= 400 && code < 500:
		f.publish(result{status: code, shareable: false, fwd: fwd,
			cacheStatus: c.cacheStatus(fwd, code, false, "origin")})
		f.end(true)
		return true
	case code == http.StatusServiceUnavailable && isBlockingKey(f.key):
		// The playlist did not get there within the origin's bound (three
		// target durations): every waiter is told so, as the origin said
		// it, and asks again. Not an error of the origin, not cached.
		f.publish(result{status: code, shareable: true, fwd: fwd,
			cacheStatus: c.cacheStatus(fwd, code, false, "origin")})
		f.end(true)
		return true
	default:
		c.reportError("origin answered with an error", "path", f.key, "status", code)
		if c.publishStale(f, code) {
			return true
		}
		f.publish(result{status: http.StatusBadGateway, shareable: true, fwd: fwd,
			cacheStatus: c.cacheStatus(fwd, code, false, "origin")})
		f.end(true)
		return true
	}
}

// MaxLiveStale bounds how long past its freshness a live playlist or
// manifest (fresh for less than liveTTL) is served stale: well under the
// 30 s after which players refuse a live manifest as a replay.
const MaxLiveStale = 20 * time.Second

// liveTTL: objects fresh for less than this are live playlists and
// manifests.
const liveTTL = 10 * time.Second

// staleRetry is how long a copy served stale is reused before the origin
// is tried again: an outage costs one origin attempt per object per
// staleRetry, not one per viewer request.
const staleRetry = time.Second

// publishStale answers f with its stale copy when the origin failed (code:
// its status, 0 for no answer), if that copy is within its stale-if-error
// window. It reports whether it did.
func (c *Cache) publishStale(f *fetch, code int) bool {
	s := f.stale
	if s == nil || s.status != http.StatusOK || s.body == nil {
		return false
	}
	now := c.now().UnixNano()
	limit := s.staleLimit
	if limit == 0 {
		window, ok := staleIfError(s.CacheControl)
		if !ok {
			window = c.cfg.StaleIfError
		}
		if s.TTL < liveTTL {
			// Live playlists and manifests: a player refuses a live
			// manifest 30 s old, and an edge serving one is reported.
			window = min(window, MaxLiveStale)
		}
		if window <= 0 {
			return false
		}
		limit = expiry(s.expires, window)
	}
	if now > limit {
		return false
	}
	m := s.meta
	m.TTL = time.Duration(now-m.Stored) + staleRetry
	o := c.newObject(m, http.StatusOK, s.body)
	o.stale, o.staleLimit = true, limit
	c.mem.putIf(o, c.current(f.gen))
	c.staleServed.Add(1)
	c.m.stale.Inc()
	f.grow(o.body)
	f.publish(result{status: http.StatusOK, obj: o, length: o.Size, shareable: true, fwd: "stale",
		cacheStatus: c.cacheStatus("stale", code, false, "stale-if-error")})
	f.end(false)
	return true
}

func upstreamErr(ctx context.Context, err error) error {
	if cause := context.Cause(ctx); errors.Is(cause, errStalled) || errors.Is(cause, errSiblingSlow) {
		return cause
	}
	return err
}

// checkPolicy keeps f from storing what it got when the origin answered
// under another policy than its invalidation feed last announced for the
// stream: an origin's view of a stream's policy may lag a change by a few
// seconds (it caches it), and a copy kept from such an answer would keep
// the old policy for its whole life (open ones outlive the feed's
// "signed" across a restart of the edge; signed ones would never turn
// public). The answer is served, under the stricter of the two
// (signedFor), and not kept.
func (c *Cache) checkPolicy(f *fetch, h http.Header) {
	forced := c.stream(f.id).forced.Load()
	if forced == policyUnknown || (forced == policySigned) == strings.EqualFold(h.Get(HeaderPolicy), "signed") {
		return
	}
	f.gen.never = true
}

// metaFrom reads the headers the cache keeps.
func metaFrom(key string, h http.Header, size int64, ttl time.Duration, now time.Time) meta {
	ct := h.Get("Content-Type")
	if ct == "" {
		ct = "application/octet-stream"
	}
	return meta{
		Key:          key,
		ContentType:  ct,
		ETag:         h.Get("ETag"),
		CacheControl: h.Get("Cache-Control"),
		Signed:       strings.EqualFold(h.Get(HeaderPolicy), "signed"),
		NoP2P:        strings.EqualFold(h.Get(HeaderP2P), "off"),
		Size:         size,
		Stored:       now.UnixNano(),
		TTL:          ttl,
	}
}

// storable predicts whether an object of key and size bytes (-1 unknown)
// fresh for ttl is kept by a tier.
func (c *Cache) storable(key string, size int64, ttl time.Duration) bool {
	if size < 0 {
		return true
	}
	return c.mem.fits(size) || c.diskOK(key, size, ttl)
}

// diskOK reports whether the disk tier keeps an object: one fresh for at
// least diskMinTTL that fits, and not a blocking reload's answer (its key
// is no path; it lives a few target durations, in memory only).
func (c *Cache) diskOK(key string, size int64, ttl time.Duration) bool {
	return ttl >= diskMinTTL && !isBlockingKey(key) && c.disk.fits(size)
}

// originBody streams a 200 from the origin into f, then stores it.
func (c *Cache) originBody(f *fetch, resp *http.Response, wd *watchdog, fwd string) {
	length := resp.ContentLength
	if length > c.cfg.MaxObjectBytes {
		c.markBig(f.key)
		f.publish(result{passthrough: true, shareable: true, fwd: fwd})
		f.end(true)
		return
	}
	ttl, cacheable := freshness(resp.Header)
	m := metaFrom(f.key, resp.Header, length, ttl, c.now())
	o := c.newObject(m, http.StatusOK, nil)
	cacheable = cacheable && c.storable(f.key, length, ttl)
	f.publish(result{status: http.StatusOK, obj: o, length: length, shareable: true, fwd: fwd,
		cacheStatus: c.cacheStatus(fwd, 0, cacheable, "origin")})

	var buf []byte
	if length > spoolAbove && c.inflight.Load()+length > c.cfg.MaxInFlightBytes {
		var done bool
		if buf, done = c.spoolBody(f, resp, wd, o, length, ttl, cacheable); done {
			return
		}
		// The disk tier could not take it: the body is held in memory
		// (over MaxInFlightBytes, a soft cap), not cut off for every
		// viewer of it.
	}
	size := length
	if size < 0 {
		size = 64 << 10
	}
	c.inflight.Add(size)
	defer func() { c.inflight.Add(-size) }()
	if buf == nil {
		buf = make([]byte, 0, size)
	}
	for {
		if len(buf) == cap(buf) {
			if length >= 0 {
				// Past the announced length: read one more byte to tell.
				var one [1]byte
				n, err := io.ReadFull(resp.Body, one[:])
				if n > 0 || (err != io.EOF && err != io.ErrUnexpectedEOF) {
					c.reportError("origin body longer than announced", "path", f.key)
					f.end(true)
					return
				}
				break
			}
			if int64(len(buf)) > c.cfg.MaxObjectBytes {
				c.markBig(f.key)
				c.reportError("object too big to cache, streaming it through from now on", "path", f.key)
				f.end(true)
				return
			}
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		if n > 0 {
			wd.kick()
			buf = buf[:len(buf)+n]
			f.grow(buf)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			c.reportError("origin body failed", "path", f.key, "err", upstreamErr(resp.Request.Context(), err))
			f.end(true)
			return
		}
	}
	if length >= 0 && int64(len(buf)) != length {
		c.reportError("origin body shorter than announced", "path", f.key)
		f.end(true)
		return
	}
	f.end(false)
	if cacheable {
		c.store(c.withBody(o, buf), ttl, f.gen)
	}
}

// spoolAbove: bodies up to this size are always held in memory while
// they arrive.
const spoolAbove = 1 << 20

// spooler is a spool file: an *os.File of the disk tier's tmp directory
// (tests wrap one).
type spooler interface {
	io.ReaderAt
	io.WriterAt
	io.Closer
	Name() string
}

// spoolBody streams a 200 of known length from the origin into a file of
// the disk tier's tmp directory, readers following it there, then moves it
// into the disk tier: the bytes held in memory by misses stay under
// Config.MaxInFlightBytes however many large objects are fetched at once.
// done is false when the disk could not take the body (the file could not
// be made, or a write failed): the caller reads the rest into buf, which
// holds what came so far (nil: nothing) with room for the whole body, and
// which the fetch's readers now read from.
func (c *Cache) spoolBody(f *fetch, resp *http.Response, wd *watchdog, o *object, length int64, ttl time.Duration, cacheable bool) (buf []byte, done bool) {
	file, err := c.newSpool()
	if err != nil {
		c.spoolFailed(f.key, "cannot create a spool file, holding the body in memory", err)
		return nil, false
	}
	c.spooled.Add(1)
	c.m.spooled.Inc()
	f.mu.Lock()
	f.spool, f.file = file, file
	f.mu.Unlock()
	// The name goes now; the file stays open until the last reader of
	// the fetch is done with it.
	defer os.Remove(file.Name())
	h := sha256.New()
	chunk := make([]byte, 64<<10)
	var n int64
	for n < length {
		k, err := resp.Body.Read(chunk[:min(int64(len(chunk)), length-n)])
		if k > 0 {
			wd.kick()
			if _, werr := file.WriteAt(chunk[:k], n); werr != nil {
				// What was written is read back, and the rest is
				// held in memory with it.
				buf = make([]byte, n, length)
				if _, rerr := file.ReadAt(buf, 0); rerr != nil && n > 0 {
					c.spoolFailed(f.key, "spool write failed, and reading back what was written too", errors.Join(werr, rerr))
					f.end(true)
					return nil, true
				}
				c.spoolFailed(f.key, "spool write failed, holding the body in memory", werr)
				buf = append(buf, chunk[:k]...)
				f.unspool(buf)
				if err != nil && err != io.EOF {
					c.reportError("origin body failed", "path", f.key, "err", upstreamErr(resp.Request.Context(), err))
					f.end(true)
					return nil, true
				}
				return buf, false
			}
			h.Write(chunk[:k])
			n += int64(k)
			f.growSpool(n)
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			c.reportError("origin body failed", "path", f.key, "err", upstreamErr(resp.Request.Context(), err))
			f.end(true)
			return nil, true
		}
	}
	if n != length {
		c.reportError("origin body shorter than announced", "path", f.key)
		f.end(true)
		return nil, true
	}
	f.end(false)
	if cacheable && c.diskOK(o.Key, length, ttl) {
		if err := c.disk.storeSpooled(o, file, length, hex.EncodeToString(h.Sum(nil)), c.current(f.gen)); err != nil {
			c.reportError("disk cache write failed", "path", o.Key, "err", err)
		}
	}
	return nil, true
}

// spoolFailed counts and reports (rate-limited) a body the disk tier could
// not take on its way.
func (c *Cache) spoolFailed(key, msg string, err error) {
	c.spoolFails.Add(1)
	c.m.spoolFailed.Inc()
	c.reportError(msg, "path", key, "err", err)
}

// store keeps o (with its body) in the tiers it fits, unless an
// invalidation came since generation gen (when its fetch started). A
// playlist that has ended is kept as its plain path's answer, whatever the
// key it was fetched for (blocking.go).
func (c *Cache) store(o *object, ttl time.Duration, gen generation) {
	if o.status == http.StatusOK && finished(o.Key, o.body) {
		m := o.meta
		m.Key, m.Ended = keyPath(m.Key), true
		o = c.newObject(m, o.status, o.body)
	}
	valid := c.current(gen)
	c.mem.putIf(o, valid)
	if isBlockingKey(o.Key) {
		c.marks.note(o.Key)
	}
	if c.diskOK(o.Key, o.Size, ttl) {
		if err := c.disk.store(o, valid); err != nil {
			c.reportError("disk cache write failed", "path", o.Key, "err", err)
		}
	}
}

// negative returns the remembered 404 of key.
func (c *Cache) negative(key string) *object {
	m := meta{Key: key, Size: -1, Stored: c.now().UnixNano(), TTL: c.cfg.NegativeTTL}
	return c.newObject(m, http.StatusNotFound, nil)
}

// fromSibling fetches f from sib while asking the origin (HEAD) for the
// object's digest; it publishes only verified bytes and reports whether it
// did. A sibling that fails is marked bad. A refusal (a 4xx, or a size too
// big to cache) is returned with the HEAD still on its way: the origin is
// asked at once, and the refusal judged after (judgeRefusal).
func (c *Cache) fromSibling(f *fetch, sib Sibling) (bool, *refusal) {
	hctx, hcancel := context.WithCancel(f.ctx)
	headc := make(chan headResult, 1)
	go func() { headc <- c.originHead(hctx, f) }()

	body, sum, serr := c.siblingGet(f, sib)
	var refused *siblingRefusal
	if errors.Is(serr, errTooBig) || errors.As(serr, &refused) {
		// Maybe not the sibling's fault (a 404 it remembered from before
		// the segment existed, an object too big indeed): judged once the
		// HEAD has answered, while the origin is asked.
		return false, &refusal{sib: sib, err: serr, head: headc, cancel: hcancel}
	}
	defer hcancel()
	if serr != nil {
		hcancel()
		<-headc
		c.siblingFailed(sib, f.key, serr)
		return false, nil
	}
	h := <-headc
	if h.err != nil || h.status != http.StatusOK || h.digest == "" {
		// Nothing to verify against: not the sibling's fault.
		return false, nil
	}
	if (h.length >= 0 && int64(len(body)) != h.length) || hex.EncodeToString(sum) != h.digest {
		c.siblingFailed(sib, f.key, errors.New("digest mismatch"))
		return false, nil
	}
	c.siblingServed(sib)
	c.checkPolicy(f, h.header)
	ttl, cacheable := freshness(h.header)
	o := c.newObject(metaFrom(f.key, h.header, int64(len(body)), ttl, c.now()), http.StatusOK, nil)
	f.grow(body)
	f.publish(result{status: http.StatusOK, obj: o, length: o.Size, shareable: true, fwd: "miss",
		cacheStatus: c.cacheStatus("miss", 0, cacheable && c.storable(f.key, o.Size, ttl), "sibling-"+sib.ID)})
	f.end(false)
	if cacheable {
		c.store(c.withBody(o, body), ttl, f.gen)
	}
	return true, nil
}

var errTooBig = errors.New("object too big to cache")

// siblingRefusal is a 4xx from a sibling.
type siblingRefusal struct{ status int }

func (e *siblingRefusal) Error() string { return fmt.Sprintf("sibling answered %d", e.status) }

// refusal is a sibling's refusal of an object (err: a *siblingRefusal or
// errTooBig), with the origin's HEAD of it, still on its way (cancel ends
// it).
type refusal struct {
	sib    Sibling
	err    error
	head   <-chan headResult
	cancel context.CancelFunc
}

// siblingMaxRefusals is how many refusals in a row of objects the origin
// has mark a sibling bad: an honest one refuses one now and then (a 404
// it remembered from just before the segment existed).
const siblingMaxRefusals = 2

// maxRefusalCounts bounds the siblings whose refusals are counted.
const maxRefusalCounts = 4096

// judgeRefusal holds a sibling's refusal of f's object against it when
// the origin's HEAD says the object exists (a 200 with its digest) and,
// for a size too big to cache, that it is not; siblingMaxRefusals of them
// in a row mark the sibling bad. Otherwise the refusal was fair: a 404 of
// an object the origin does not have, an object too big indeed, or one
// whose bytes nobody could verify.
func (c *Cache) judgeRefusal(f *fetch, r *refusal) {
	h := <-r.head
	r.cancel()
	if h.err != nil || h.status != http.StatusOK || h.digest == "" {
		return
	}
	if errors.Is(r.err, errTooBig) && (h.length < 0 || h.length > c.cfg.MaxObjectBytes) {
		return
	}
	c.badMu.Lock()
	n := c.refusals[r.sib.ID] + 1
	if n >= siblingMaxRefusals {
		delete(c.refusals, r.sib.ID)
	} else {
		if len(c.refusals) >= maxRefusalCounts {
			clear(c.refusals)
		}
		c.refusals[r.sib.ID] = n
	}
	c.badMu.Unlock()
	if n >= siblingMaxRefusals {
		c.siblingFailed(r.sib, f.key, fmt.Errorf("%w for objects the origin has, %d times in a row", r.err, n))
	}
}

// siblingServed counts an object a sibling sent and that was verified;
// its refusals are no longer in a row.
func (c *Cache) siblingServed(sib Sibling) {
	c.siblingOK.Add(1)
	c.m.siblingOK.Inc()
	c.badMu.Lock()
	delete(c.refusals, sib.ID)
	c.badMu.Unlock()
}

func (c *Cache) siblingFailed(sib Sibling, key string, err error) {
	c.siblingFail.Add(1)
	c.m.siblingFailed.Inc()
	c.markBad(sib.ID)
	c.reportError("sibling fetch failed, skipping the sibling for 30s", "sibling", sib.ID, "path", key, "err", err)
}

type headResult struct {
	status int
	digest string
	length int64
	header http.Header
	err    error
}

// originHead asks the origin for an object's headers and digest.
func (c *Cache) originHead(ctx context.Context, f *fetch) headResult {
	// The whole HEAD within OriginTimeout (its watchdog is never kicked).
	resp, _, wd, err := c.originDo(ctx, http.MethodHead, f.key, f.token, f.viewerIP, c.cfg.OriginTimeout, nil, false)
	if err != nil {
		return headResult{err: err}
	}
	resp.Body.Close()
	wd.stop()
	d := strings.ToLower(strings.TrimSpace(resp.Header.Get(HeaderDigest)))
	if len(d) != 64 {
		d = ""
	} else if _, err := hex.DecodeString(d); err != nil {
		d = ""
	}
	return headResult{status: resp.StatusCode, digest: d, length: resp.ContentLength, header: resp.Header}
}

// siblingMinRate is the slowest a sibling may send a body (bytes a
// second, on average over the whole body) before it counts as failed.
const siblingMinRate = 1 << 20

// errSiblingSlow is the cause of a sibling fetch that ran past its
// deadline.
var errSiblingSlow = errors.New("the sibling sends too slowly")

// siblingDeadline bounds a whole sibling fetch of size bytes (-1:
// unknown): the watchdog bounds each pause only, and a sibling trickling
// a byte at a time would hold the object's viewers for days, although the
// origin has it.
func (c *Cache) siblingDeadline(size int64) time.Duration {
	if size < 0 {
		size = 8 << 20
	}
	return 4*c.cfg.SiblingTimeout + time.Duration(size)*time.Second/siblingMinRate
}

// siblingGet fetches f's object from sib, hashing it as it arrives.
func (c *Cache) siblingGet(f *fetch, sib Sibling) ([]byte, []byte, error) {
	wctx, wd := newWatchdog(f.ctx, c.cfg.SiblingTimeout, c.cfg.SiblingTimeout)
	defer wd.stop()
	ctx, cancel := context.WithCancelCause(wctx)
	defer cancel(nil)
	base := strings.TrimRight(sib.URL, "/")
	u := upstreamURL(base, f.key, f.token)
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, nil, err
	}
	req.Header.Set(HeaderSibling, "1")
	req.Header.Set(HeaderEdge, "1")
	if f.token != "" && c.vouch != nil && f.viewerIP != "" {
		c.vouch(req, u[len(base):], f.viewerIP)
	}
	resp, err := c.client.Do(req)
	if err != nil {
		return nil, nil, upstreamErr(ctx, err)
	}
	defer resp.Body.Close()
	if resp.StatusCode >= 400 && resp.StatusCode < 500 {
		return nil, nil, &siblingRefusal{resp.StatusCode}
	}
	if resp.StatusCode != http.StatusOK {
		return nil, nil, fmt.Errorf("status %d", resp.StatusCode)
	}
	if resp.ContentLength > c.cfg.MaxObjectBytes {
		return nil, nil, errTooBig
	}
	slow := time.AfterFunc(c.siblingDeadline(resp.ContentLength), func() { cancel(errSiblingSlow) })
	defer slow.Stop()
	// Memory grows with what arrives, never with what the sibling claims.
	size := min(resp.ContentLength, 1<<20)
	if size < 0 {
		size = 64 << 10
	}
	h := sha256.New()
	buf := make([]byte, 0, size+1)
	for {
		if len(buf) == cap(buf) {
			buf = append(buf, make([]byte, cap(buf))...)[:len(buf)]
		}
		n, err := resp.Body.Read(buf[len(buf):cap(buf)])
		if n > 0 {
			wd.kick()
			h.Write(buf[len(buf) : len(buf)+n])
			buf = buf[:len(buf)+n]
			if int64(len(buf)) > c.cfg.MaxObjectBytes {
				return nil, nil, errors.New("sibling body too long")
			}
		}
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, nil, upstreamErr(ctx, err)
		}
	}
	if resp.ContentLength >= 0 && int64(len(buf)) != resp.ContentLength {
		return nil, nil, errors.New("sibling body length differs from its Content-Length")
	}
	return buf, h.Sum(nil), nil
}
