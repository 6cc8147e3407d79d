package edgecache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/packager/origin"
)

// pathOwnedBy returns a segment path that rendezvous hashing over {self,
// other} gives to want (one of the two).
func pathOwnedBy(t *testing.T, self, other, want string) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		p := fmt.Sprintf("/hls/abc/source/seg-%d.m4s", i)
		owner := self
		if weight(strings.TrimRight(other, "/"), p) > weight(strings.TrimRight(self, "/"), p) {
			owner = other
		}
		if owner == want {
			return p
		}
	}
	t.Fatal("no path found")
	return ""
}

func TestSiblingFetch(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	var urlA, urlB atomic.Value
	a := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.Name = "edge-a"
		d.Siblings = func() []Sibling { return []Sibling{{ID: "b", URL: urlB.Load().(string)}} }
	})
	b := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.Name = "edge-b"
		d.Siblings = func() []Sibling { return []Sibling{{ID: "a", URL: urlA.Load().(string)}} }
	})
	urlA.Store(a.url)
	urlB.Store(b.url)

	pB := pathOwnedBy(t, a.url, b.url, b.url)
	body := segment(200<<10, 8)
	o.put(pB, body, origin.CacheImmutable)
	r := get(t, a.url+pB)
	wantBody(t, r, body)
	if r.cache != "edge-a; fwd=miss; stored; detail=sibling-b" {
		t.Fatalf("A's Cache-Status %q", r.cache)
	}
	if g, h := o.count("GET", pB), o.count("HEAD", pB); g != 1 || h != 1 {
		t.Fatalf("origin saw %d GETs and %d HEADs, want 1 and 1", g, h)
	}
	wantStatus(t, get(t, b.url+pB), "edge-b; hit")
	wantStatus(t, get(t, a.url+pB), "edge-a; hit")
	if s := a.c.Stats(); s.SiblingFetches != 1 || s.SiblingFailures != 0 || s.OriginFetches != 0 {
		t.Fatalf("A's stats %+v", s)
	}

	// A path A owns is fetched from the origin, without a HEAD.
	pA := pathOwnedBy(t, a.url, b.url, a.url)
	o.put(pA, body, origin.CacheImmutable)
	if r := get(t, a.url+pA); r.cache != "edge-a; fwd=miss; stored; detail=origin" {
		t.Fatalf("owned path: %q", r.cache)
	}
	if o.count("HEAD", pA) != 0 {
		t.Fatal("HEAD for an owned path")
	}

	// A sibling's request never goes on to siblings: A serves B's path itself.
	pB2 := ""
	for i := 0; pB2 == ""; i++ {
		p := fmt.Sprintf("/hls/abd/source/seg-%d.m4s", i)
		if weight(b.url, p) > weight(a.url, p) {
			pB2 = p
		}
	}
	o.put(pB2, body, origin.CacheImmutable)
	bMisses := b.c.Stats().Misses
	r = do(t, "GET", a.url+pB2, map[string]string{HeaderSibling: "1"})
	wantBody(t, r, body)
	if r.cache != "edge-a; fwd=miss; stored; detail=origin" || o.count("HEAD", pB2) != 0 || b.c.Stats().Misses != bMisses {
		t.Fatalf("sibling request went on: %q, %d HEADs, B misses %d -> %d", r.cache, o.count("HEAD", pB2), bMisses, b.c.Stats().Misses)
	}
}

func TestSiblingCorruptBytes(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	var evilHits atomic.Int64
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		evilHits.Add(1)
		if r.Header.Get(HeaderSibling) != "1" {
			t.Errorf("sibling request without %s", HeaderSibling)
		}
		resp, err := http.Get(o.srv.URL + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), 500)
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		b[len(b)/2] ^= 0xff
		w.Header().Set("Content-Type", "video/iso.segment")
		w.Write(b)
	}))
	t.Cleanup(evil.Close)
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) {
		d.Siblings = func() []Sibling { return []Sibling{{ID: "evil", URL: evil.URL}} }
	})
	p1 := pathOwnedBy(t, e.url, evil.URL, evil.URL)
	body := segment(50<<10, 12)
	o.put(p1, body, origin.CacheImmutable)
	r := get(t, e.url+p1)
	wantBody(t, r, body)
	if r.cache != "shoal; fwd=miss; stored; detail=origin" {
		t.Fatalf("Cache-Status %q", r.cache)
	}
	if s := e.c.Stats(); s.SiblingFailures != 1 || s.SiblingFetches != 0 || evilHits.Load() != 1 {
		t.Fatalf("stats %+v, sibling asked %d times", s, evilHits.Load())
	}
	if !e.c.isBad("evil", time.Now()) {
		t.Fatal("the sibling was not marked bad")
	}
	// Marked bad: the next path it owns is not asked from it.
	p2 := ""
	for i := 0; p2 == ""; i++ {
		p := fmt.Sprintf("/hls/xyz/source/seg-%d.m4s", i)
		if weight(evil.URL, p) > weight(e.url, p) {
			p2 = p
		}
	}
	o.put(p2, body, origin.CacheImmutable)
	wantBody(t, get(t, e.url+p2), body)
	if evilHits.Load() != 1 || o.count("HEAD", p2) != 0 {
		t.Fatalf("a bad sibling was asked again (%d) or HEAD sent", evilHits.Load())
	}
}

func TestSiblingHangs(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	hang := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		select {
		case <-r.Context().Done():
		case <-time.After(10 * time.Second):
		}
	}))
	t.Cleanup(hang.Close)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.SiblingTimeout = 150 * time.Millisecond
		d.Siblings = func() []Sibling { return []Sibling{{ID: "slow", URL: hang.URL}} }
	})
	p := pathOwnedBy(t, e.url, hang.URL, hang.URL)
	body := segment(10<<10, 13)
	o.put(p, body, origin.CacheImmutable)
	start := time.Now()
	r := get(t, e.url+p)
	wantBody(t, r, body)
	if el := time.Since(start); el > 2*time.Second || el < 150*time.Millisecond {
		t.Fatalf("answered after %s", el)
	}
	if s := e.c.Stats(); s.SiblingFailures != 1 || !e.c.isBad("slow", time.Now()) {
		t.Fatalf("hanging sibling not counted: %+v", s)
	}
}

func TestSiblingWithoutDigest(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	var a, b *edge
	var urlB atomic.Value
	// This origin does not announce digests: sibling bytes cannot be
	// verified, so they are not used, and the sibling is not blamed.
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodHead {
			return false
		}
		w.Header().Set("Content-Type", "video/iso.segment")
		w.Header().Set("Cache-Control", origin.CacheImmutable)
		return true
	})
	b = startCache(t, o.srv.URL, t.TempDir(), nil)
	urlB.Store(b.url)
	a = startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) {
		d.Siblings = func() []Sibling { return []Sibling{{ID: "b", URL: urlB.Load().(string)}} }
	})
	p := pathOwnedBy(t, a.url, b.url, b.url)
	body := segment(1000, 14)
	o.put(p, body, origin.CacheImmutable)
	r := get(t, a.url+p)
	wantBody(t, r, body)
	if r.cache != "shoal; fwd=miss; stored; detail=origin" {
		t.Fatalf("Cache-Status %q", r.cache)
	}
	if s := a.c.Stats(); s.SiblingFailures != 0 || a.c.isBad("b", time.Now()) {
		t.Fatalf("sibling blamed for a missing digest: %+v", s)
	}
}

func TestRendezvousSpreads(t *testing.T) {
	t.Parallel()
	nodes := []string{"http://10.0.0.1:8081", "http://10.0.0.2:8081", "http://10.0.0.3:8081"}
	counts := map[string]int{}
	for i := 0; i < 3000; i++ {
		key := fmt.Sprintf("/hls/stream%d/720p/seg-%d.m4s", i%7, i)
		best, bw := "", uint64(0)
		for _, n := range nodes {
			if w := weight(n, key); best == "" || w > bw {
				best, bw = n, w
			}
		}
		counts[best]++
	}
	for _, n := range nodes {
		if counts[n] < 800 || counts[n] > 1200 {
			t.Fatalf("uneven spread: %v", counts)
		}
	}
}
