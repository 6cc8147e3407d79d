package edgecache

import (
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
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

// pathsOwnedBy returns n segment paths that rendezvous hashing over
// {self, other} gives to other.
func pathsOwnedBy(self, other string, n int) []string {
	var paths []string
	for i := 0; len(paths) < n; i++ {
		p := fmt.Sprintf("/hls/abc/source/seg-%d.m4s", i)
		if weight(strings.TrimRight(other, "/"), p) > weight(strings.TrimRight(self, "/"), p) {
			paths = append(paths, p)
		}
	}
	return paths
}

// A sibling run by a stranger that refuses every object (a 404, a 403, or
// a Content-Length past MaxObjectBytes) while the origin's HEAD says it
// has it is marked bad after two refusals in a row: it was never held
// against it, so every miss of the keys it owns waited on it (up to
// SiblingTimeout when it answers slowly) before going to the origin,
// region-wide, for ever.
func TestSiblingRefusalsMarkItBad(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		refuse func(w http.ResponseWriter)
	}{
		{"404", func(w http.ResponseWriter) { http.Error(w, "not found", http.StatusNotFound) }},
		{"403", func(w http.ResponseWriter) { http.Error(w, "forbidden", http.StatusForbidden) }},
		{"too big", func(w http.ResponseWriter) {
			w.Header().Set("Content-Length", strconv.Itoa(2<<20))
			w.WriteHeader(http.StatusOK)
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			o := newFakeOrigin(t)
			var evilHits atomic.Int64
			evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				evilHits.Add(1)
				tc.refuse(w)
			}))
			t.Cleanup(evil.Close)
			e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
				c.MaxObjectBytes = 1 << 20
				d.Siblings = func() []Sibling { return []Sibling{{ID: "evil", URL: evil.URL}} }
			})
			for i, p := range pathsOwnedBy(e.url, evil.URL, 10) {
				body := segment(1000, byte(i))
				o.put(p, body, origin.CacheImmutable)
				a := get(t, e.url+p)
				wantBody(t, a, body)
				wantStatus(t, a, "shoal; fwd=miss; stored; detail=origin")
				e.idle(t) // the refusal is judged once the fetch is done
			}
			if n := evilHits.Load(); n != siblingMaxRefusals {
				t.Fatalf("a sibling refusing (%s) objects the origin has was asked %d times for 10 misses, want %d",
					tc.name, n, siblingMaxRefusals)
			}
			if s := e.c.Stats(); s.SiblingFailures != 1 || !e.c.isBad("evil", time.Now()) {
				t.Fatalf("the refusing sibling is not marked bad: %d failures, bad %v", s.SiblingFailures, e.c.isBad("evil", time.Now()))
			}
		})
	}
}

// A sibling's refusals are held against it only when the origin has the
// object (and, for a size too big to cache, when it is not), and only in
// a row: an honest sibling's 404 now and then (a 404 it remembered from
// just before the segment existed) never marks it bad.
func TestSiblingFairRefusalsForgiven(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	var urlS atomic.Value
	var hits atomic.Int64
	var mu sync.Mutex
	refuse := map[string]int{} // path -> what the sibling answers: 404, or 1 for "too big"
	sib := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		mu.Lock()
		how := refuse[r.URL.Path]
		mu.Unlock()
		switch how {
		case http.StatusNotFound:
			http.Error(w, "not found", http.StatusNotFound)
			return
		case 1:
			w.Header().Set("Content-Length", strconv.Itoa(2<<20))
			w.WriteHeader(http.StatusOK)
			return
		}
		resp, err := http.Get(o.srv.URL + r.URL.Path)
		if err != nil {
			http.Error(w, err.Error(), http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		w.Header().Set("Content-Type", "video/iso.segment")
		w.WriteHeader(resp.StatusCode)
		_, _ = io.Copy(w, resp.Body)
	}))
	t.Cleanup(sib.Close)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.MaxObjectBytes = 64 << 10
		d.Siblings = func() []Sibling { return []Sibling{{ID: "honest", URL: urlS.Load().(string)}} }
	})
	urlS.Store(sib.URL)
	paths := pathsOwnedBy(e.url, sib.URL, 11)
	bodies := map[string][]byte{}
	mu.Lock()
	// Objects the origin does not have either, then objects too big to
	// cache indeed: fair refusals, however many in a row.
	for _, p := range paths[:3] {
		refuse[p] = http.StatusNotFound
	}
	for i, p := range paths[3:6] {
		refuse[p] = 1
		bodies[p] = segment(100<<10, byte(i))
	}
	// Then a 404 of an object the origin has every other miss.
	for i, p := range paths[6:] {
		if i%2 == 0 {
			refuse[p] = http.StatusNotFound
		}
		bodies[p] = segment(1000, byte(i))
	}
	mu.Unlock()
	for p, body := range bodies {
		o.put(p, body, origin.CacheImmutable)
	}
	for _, p := range paths {
		a := get(t, e.url+p)
		if body, ok := bodies[p]; ok {
			wantBody(t, a, body)
		} else if a.code != http.StatusNotFound {
			t.Fatalf("%s, which the origin does not have: status %d", p, a.code)
		}
		e.idle(t) // a refusal is judged once its fetch is done
	}
	if n := hits.Load(); n != int64(len(paths)) {
		t.Fatalf("the sibling was asked %d times for %d misses, want every time", n, len(paths))
	}
	if s := e.c.Stats(); s.SiblingFailures != 0 || s.SiblingFetches != 2 || e.c.isBad("honest", time.Now()) {
		t.Fatalf("fair refusals held against the sibling: %d failures, %d fetches, bad %v",
			s.SiblingFailures, s.SiblingFetches, e.c.isBad("honest", time.Now()))
	}
}

// A sibling's refusal sends the miss to the origin at once: the answer
// does not wait for the origin's HEAD, which only decides, later, whether
// the refusal counts.
func TestSiblingRefusalDoesNotWaitForTheHead(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	release := make(chan struct{})
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method == http.MethodHead {
			select {
			case <-release:
			case <-r.Context().Done():
			}
		}
		return false
	})
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "not found", http.StatusNotFound)
	}))
	t.Cleanup(evil.Close)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		d.Siblings = func() []Sibling { return []Sibling{{ID: "evil", URL: evil.URL}} }
	})
	p := pathsOwnedBy(e.url, evil.URL, 1)[0]
	body := segment(1000, 15)
	o.put(p, body, origin.CacheImmutable)
	// The origin holds the HEAD until the answer has come.
	a := get(t, e.url+p)
	wantBody(t, a, body)
	wantStatus(t, a, "shoal; fwd=miss; stored; detail=origin")
	close(release)
	e.idle(t)
	e.c.badMu.Lock()
	n := e.c.refusals["evil"]
	e.c.badMu.Unlock()
	if n != 1 {
		t.Fatalf("the refusal, once the HEAD answered, counts %d against the sibling, want 1", n)
	}
}
