package edgecache

import (
	"context"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/shoal-video/shoal/packager/origin"
)

// TestForcedOpenDoesNotOverrideSignedObjects: the feed's last entry for a
// stream says open (a stale one: the stream is signed at the origin); a
// token holder fetches a segment, which the origin answers as signed: the
// next viewer without a token must not get it from the cache.
func TestForcedOpenDoesNotOverrideSignedObjects(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	seg := segment(50<<10, 31)
	o.putSigned(segPath, seg, origin.CacheImmutable)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) { d.Access = tokenAccess })
	e.c.Invalidate([]Invalidation{{ID: "abc", Signed: false}})
	if a := get(t, e.url+segPath+"?token=ok"); a.code != 200 {
		t.Fatalf("with a token: %d", a.code)
	}
	e.idle(t)
	if a := get(t, e.url+segPath); a.code != http.StatusForbidden {
		t.Fatalf("a segment the origin answered as signed served without a token: %d %q", a.code, a.cache)
	}
	// Nor kept: the origin answered under another policy than the feed
	// announced (one of the two lags), so the next viewer asks again.
	if a := get(t, e.url+segPath+"?token=ok"); a.code != 200 || a.cache == "shoal; hit" {
		t.Fatalf("with a token again: %d %q, want a fetch", a.code, a.cache)
	}
}

// TestFetchAcrossInvalidationIsNotStored: a fetch the origin answered
// before an invalidation of its stream (here: a policy change to open of a
// stream the origin answered as signed) and that ends after it is served
// to its viewers but not kept: the next request goes to the origin and
// gets the stream as it is now.
func TestFetchAcrossInvalidationIsNotStored(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	seg := segment(50<<10, 32)
	o.putSigned(segPath, seg, origin.CacheImmutable)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) { d.Access = tokenAccess })
	release := make(chan struct{})
	arrived := make(chan struct{})
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == segPath && r.URL.Query().Get("token") == "ok" {
			close(arrived)
			<-release // answered (signed) once the invalidation is applied
		}
		return false
	})
	done := make(chan answer, 1)
	go func() { done <- get(t, e.url+segPath+"?token=ok") }()
	<-arrived
	// The PATCH to public: the origin now answers the segment as open.
	o.put(segPath, seg, origin.CacheImmutable)
	e.c.Invalidate([]Invalidation{{ID: "abc", Signed: false}})
	close(release)
	if a := <-done; a.code != 200 {
		t.Fatalf("the token holder's request: %d", a.code)
	}
	e.idle(t)
	if a := get(t, e.url+segPath); a.code != 200 || a.cache == "shoal; hit" {
		t.Fatalf("without a token after the stream went public: %d %q (want a fetch, not the copy answered signed before)", a.code, a.cache)
	}
}

// startHeld runs a cache on dir whose disk tier waits for ReleaseDisk.
func startHeld(t *testing.T, originURL, dir string) *edge {
	t.Helper()
	e := &edge{answered: make(chan struct{}, 1)}
	c, err := New(Config{OriginURL: originURL, CacheDir: dir, HoldDisk: true}, Deps{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	e.srv = httptest.NewServer(c)
	t.Cleanup(e.srv.Close)
	e.url = e.srv.URL
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return e
}

func waitIndexed(t *testing.T, e *edge) {
	t.Helper()
	select {
	case <-e.c.scanned:
	case <-time.After(5 * time.Second):
		t.Fatal("disk scan did not finish")
	}
	if !e.c.Indexed() {
		t.Fatal("not indexed")
	}
}

// TestHeldDiskIsNotServedUntilReleased: with Config.HoldDisk, what the
// disk tier held before the start is not served until ReleaseDisk; with
// drop, it is removed instead of indexed.
func TestHeldDiskIsNotServedUntilReleased(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.put(segPath, segment(50<<10, 33), origin.CacheImmutable)
	dir := t.TempDir()
	first := startCache(t, o.srv.URL, dir, nil)
	get(t, first.url+segPath)
	first.stop(t)

	body := segment(50<<10, 33)
	for _, drop := range []bool{false, true} {
		e := startHeld(t, o.srv.URL, dir)
		// Answered no-store while held: what the disk has after the
		// release is from before this start only.
		o.put(segPath, body, "no-store")
		before := o.count(http.MethodGet, segPath)
		if a := get(t, e.url+segPath); a.code != 200 || a.cache == "shoal; hit" {
			t.Fatalf("held disk: %d %q (want a fetch)", a.code, a.cache)
		}
		if o.count(http.MethodGet, segPath) != before+1 {
			t.Fatal("held disk: the origin was not asked")
		}
		e.idle(t)
		o.put(segPath, body, origin.CacheImmutable)
		e.c.ReleaseDisk(drop)
		waitIndexed(t, e)
		a := get(t, e.url+segPath)
		switch {
		case drop && (a.code != 200 || a.cache == "shoal; hit"):
			t.Fatalf("after a drop: %d %q (want a fetch)", a.code, a.cache)
		case !drop && (a.code != 200 || a.cache != "shoal; hit"):
			t.Fatalf("released: %d %q", a.code, a.cache)
		}
		e.stop(t)
	}
}

// TestHeldDiskDropsInvalidatedAndReset: files of ids invalidated while the
// disk tier was held are removed by the scan, and after a Reset every file
// from before is.
func TestHeldDiskDropsInvalidatedAndReset(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	other := "/hls/xyz/source/seg-0.m4s"
	o.put(segPath, segment(50<<10, 34), origin.CacheImmutable)
	o.put(other, segment(50<<10, 35), origin.CacheImmutable)
	dir := t.TempDir()
	first := startCache(t, o.srv.URL, dir, nil)
	get(t, first.url+segPath)
	get(t, first.url+other)
	first.stop(t)

	e := startHeld(t, o.srv.URL, dir)
	e.c.Invalidate([]Invalidation{{ID: "abc", Deleted: true}})
	e.c.ReleaseDisk(false)
	waitIndexed(t, e)
	if e.c.disk.get(segPath) != nil || e.c.disk.get(other) == nil {
		t.Fatalf("after an invalidation while held: %v %v", e.c.disk.get(segPath) != nil, e.c.disk.get(other) != nil)
	}
	if a := get(t, e.url+other); a.code != 200 || a.cache != "shoal; hit" {
		t.Fatalf("other: %d %q", a.code, a.cache)
	}
	if n := e.c.Reset(); n == 0 {
		t.Fatal("Reset dropped nothing")
	}
	before := o.count(http.MethodGet, other)
	if a := get(t, e.url+other); a.code != 200 || a.cache == "shoal; hit" || o.count(http.MethodGet, other) != before+1 {
		t.Fatalf("after a reset: %d %q", a.code, a.cache)
	}
}

// TestDiskLoadKeepsStreamSigned: a stream known signed (from an answer of
// the origin) is not made open again by an open copy the scan loads.
func TestDiskLoadKeepsStreamSigned(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.put(segPath, segment(50<<10, 36), origin.CacheImmutable)
	dir := t.TempDir()
	first := startCache(t, o.srv.URL, dir, nil)
	get(t, first.url+segPath)
	first.stop(t)

	e := startHeld(t, o.srv.URL, dir)
	e.c.stream("abc").signed.Store(policySigned) // as an answer of the origin says now
	e.c.ReleaseDisk(false)
	waitIndexed(t, e)
	if got := e.c.stream("abc").signed.Load(); got != policySigned {
		t.Fatalf("stream policy after the scan loaded an open copy: %d", got)
	}
}

// tokenAccess lets a request through with ?token=ok, or when the object is
// not signed.
func tokenAccess(r *http.Request, id string, signed bool) (string, int) {
	if signed && r.URL.Query().Get("token") != "ok" {
		return "", http.StatusForbidden
	}
	return "", 0
}

// An origin's view of a stream's policy lags the feed by a few seconds
// (it caches it): an answer under another policy than the feed announced
// is served, under the stricter, and not kept (checkPolicy). Found by a
// review helper. PATCH signed -> public: the edge applies "open",
// a token holder's fetch is answered signed, the copy stays signed.
func TestLaggingOriginAfterSwitchToPublic(t *testing.T) {
	o := newFakeOrigin(t)
	seg := segment(50<<10, 41)
	o.putSigned(segPath, seg, origin.CacheImmutable)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) { d.Access = tokenAccess })
	e.c.Invalidate([]Invalidation{{ID: "abc", Signed: false}})
	if a := get(t, e.url+segPath+"?token=ok"); a.code != 200 {
		t.Fatalf("token holder: %d", a.code)
	}
	e.idle(t)
	o.put(segPath, seg, origin.CacheImmutable)
	if a := get(t, e.url+segPath); a.code != 200 {
		t.Fatalf("public stream (feed says open, origin says open) refused without a token: %d %q", a.code, a.cache)
	}
}

// PATCH public -> signed: the edge applies "signed", a token holder's
// fetch is answered open by the lagging origin and stored on disk as
// open; after a restart with a kept cursor past that entry it is served
// to anyone.
func TestLaggingOriginAfterSwitchToSigned(t *testing.T) {
	o := newFakeOrigin(t)
	seg := segment(50<<10, 42)
	o.put(segPath, seg, origin.CacheImmutable)
	dir := t.TempDir()
	first := startCache(t, o.srv.URL, dir, func(c *Config, d *Deps) { d.Access = tokenAccess })
	first.c.Invalidate([]Invalidation{{ID: "abc", Signed: true}})
	if a := get(t, first.url+segPath+"?token=ok"); a.code != 200 {
		t.Fatalf("token holder: %d", a.code)
	}
	first.idle(t)
	if a := get(t, first.url+segPath); a.code != http.StatusForbidden {
		t.Fatalf("before restart, without a token: %d", a.code)
	}
	o.putSigned(segPath, seg, origin.CacheImmutable)
	first.stop(t)

	c, err := New(Config{OriginURL: o.srv.URL, CacheDir: dir, HoldDisk: true}, Deps{Log: quietLog(), Access: tokenAccess})
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(c)
	defer srv.Close()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	defer func() { cancel(); <-done }()
	c.ReleaseDisk(false) // caught up, kept cursor: what edgeFeed.apply does
	<-c.scanned
	if a := get(t, srv.URL+segPath); a.code != http.StatusForbidden {
		t.Fatalf("signed stream's segment served without a token after restart: %d %q", a.code, a.cache)
	}
}

// Reset keeps feed-derived policies: forced signed from an entry applied
// before the gap outlives the entry (lost in the gap) that made it public.
func TestResetForgetsFeedPolicies(t *testing.T) {
	o := newFakeOrigin(t)
	o.put(segPath, segment(50<<10, 43), origin.CacheImmutable)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) { d.Access = tokenAccess })
	e.c.Invalidate([]Invalidation{{ID: "abc", Signed: true}})
	e.c.Reset()
	if a := get(t, e.url+segPath); a.code != 200 {
		t.Fatalf("public stream refused after a reset: %d %q (origin asked %d times)", a.code, a.cache, o.count(http.MethodGet, segPath))
	}
}

// TestOtherStreamsInvalidationKeepsTheFetch: an invalidation of another
// stream does not keep a fetch in flight from being stored (each stream
// has its own generation; on a busy platform an entry comes with most
// heartbeats).
func TestOtherStreamsInvalidationKeepsTheFetch(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	seg := segment(50<<10, 33)
	o.put(segPath, seg, origin.CacheImmutable)
	e := startCache(t, o.srv.URL, t.TempDir(), nil)
	release := make(chan struct{})
	arrived := make(chan struct{})
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path == segPath {
			close(arrived)
			<-release
		}
		return false
	})
	done := make(chan answer, 1)
	go func() { done <- get(t, e.url+segPath) }()
	<-arrived
	e.c.Invalidate([]Invalidation{{ID: "another1", Signed: true}})
	close(release)
	if a := <-done; a.code != 200 {
		t.Fatalf("the request: %d", a.code)
	}
	e.idle(t)
	o.setHook(nil)
	if a := get(t, e.url+segPath); a.code != 200 || a.cache != "shoal; hit" {
		t.Fatalf("after another stream's invalidation: %d %q, want a hit", a.code, a.cache)
	}
}
