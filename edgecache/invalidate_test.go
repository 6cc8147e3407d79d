package edgecache

import (
	"net/http"
	"testing"

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
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		d.Access = func(r *http.Request, id string, signed bool) (string, int) {
			if signed && r.URL.Query().Get("token") != "ok" {
				return "", http.StatusForbidden
			}
			return "", 0
		}
	})
	e.c.Invalidate([]Invalidation{{ID: "abc", Signed: false}})
	if a := get(t, e.url+segPath+"?token=ok"); a.code != 200 {
		t.Fatalf("with a token: %d", a.code)
	}
	e.idle(t)
	if a := get(t, e.url+segPath); a.code != http.StatusForbidden {
		t.Fatalf("a segment the origin answered as signed served without a token: %d %q", a.code, a.cache)
	}
	if a := get(t, e.url+segPath+"?token=ok"); a.code != 200 || a.cache != "shoal; hit" {
		t.Fatalf("with a token again: %d %q", a.code, a.cache)
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
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		d.Access = func(r *http.Request, id string, signed bool) (string, int) {
			if signed && r.URL.Query().Get("token") != "ok" {
				return "", http.StatusForbidden
			}
			return "", 0
		}
	})
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
