package edgecache

import (
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/shoal-video/shoal/packager/origin"
)

// vouchEdge is an edge whose viewers' addresses come from X-Test-Viewer,
// and whose vouches the fake origin sees as X-Test-Vouch.
func vouchEdge(t *testing.T, o *fakeOrigin, mut func(*Config, *Deps)) *edge {
	return startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		d.ClientIP = func(r *http.Request) string { return r.Header.Get("X-Test-Viewer") }
		d.Vouch = func(req *http.Request, target, ip string) {
			req.Header.Set("X-Test-Vouch", req.Method+" "+target+" "+ip)
		}
		if mut != nil {
			mut(c, d)
		}
	})
}

// Misses that carry a token go to the origin vouched for the viewer's
// address (GET, and the passthrough of objects too big to cache); hits
// and requests without a token are not vouched for.
func TestVouchOnMisses(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.putSigned(segPath, segment(500, 1), origin.CacheImmutable)
	const big = "/hls/abc/source/seg-9.m4s"
	o.putSigned(big, segment(2000, 2), origin.CacheImmutable)
	o.put("/hls/open/source/seg-0.m4s", segment(500, 3), origin.CacheImmutable)
	var mu sync.Mutex
	var vouches []string
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		vouches = append(vouches, r.Header.Get("X-Test-Vouch"))
		mu.Unlock()
		return false
	})
	e := vouchEdge(t, o, func(c *Config, _ *Deps) { c.MaxObjectBytes = 1000 })
	viewer := map[string]string{"X-Test-Viewer": "203.0.113.7"}

	wantBody(t, do(t, http.MethodGet, e.url+segPath+"?token=t1", viewer), segment(500, 1))
	e.idle(t)
	wantStatus(t, do(t, http.MethodGet, e.url+segPath+"?token=t1", viewer), "shoal; hit")
	wantBody(t, do(t, http.MethodGet, e.url+"/hls/open/source/seg-0.m4s", viewer), segment(500, 3))
	// Too big: the first GET finds out, then each viewer's request passes
	// through.
	wantBody(t, do(t, http.MethodGet, e.url+big+"?token=t2", viewer), segment(2000, 2))
	wantBody(t, do(t, http.MethodGet, e.url+big+"?token=t2", map[string]string{"X-Test-Viewer": "198.51.100.4"}), segment(2000, 2))

	mu.Lock()
	defer mu.Unlock()
	want := []string{
		"GET " + segPath + "?token=t1 203.0.113.7",
		"",
		"GET " + big + "?token=t2 203.0.113.7",
		"GET " + big + "?token=t2 203.0.113.7",
		"GET " + big + "?token=t2 198.51.100.4",
	}
	if len(vouches) != len(want) {
		t.Fatalf("origin saw vouches %q, want %q", vouches, want)
	}
	for i := range want {
		if vouches[i] != want[i] {
			t.Errorf("origin request %d vouched %q, want %q", i, vouches[i], want[i])
		}
	}
}

// An origin's refusal of one viewer (its token, from its address) is not
// handed to another viewer with the same token from another address who
// joined the fetch: that one asks for itself.
func TestRefusalNotSharedAcrossAddresses(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.putSigned(segPath, segment(500, 1), origin.CacheImmutable)
	joined := make(chan struct{})
	var once sync.Once
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Header.Get("X-Test-Vouch") == "GET "+segPath+"?token=t1 198.51.100.4" {
			<-joined
			noStoreError(w, http.StatusForbidden)
			return true
		}
		return false
	})
	e := vouchEdge(t, o, func(_ *Config, d *Deps) { d.onJoin = func() { once.Do(func() { close(joined) }) } })

	arrived := o.watch()
	wrong := make(chan answer, 1)
	go func() {
		wrong <- do(t, http.MethodGet, e.url+segPath+"?token=t1", map[string]string{"X-Test-Viewer": "198.51.100.4"})
	}()
	// The second viewer joins the first one's fetch, which the origin
	// answers only then.
	<-arrived
	right := do(t, http.MethodGet, e.url+segPath+"?token=t1", map[string]string{"X-Test-Viewer": "203.0.113.7"})
	if a := <-wrong; a.code != http.StatusForbidden {
		t.Fatalf("the refused viewer: %d, want 403", a.code)
	}
	wantBody(t, right, segment(500, 1))
}

// An edge asking a sibling on behalf of a viewer with a token vouches for
// the viewer's address to the sibling too; a sibling that believes it
// (here: any vouch) checks the token with that address and vouches for it
// in turn to the origin.
func TestVouchToSibling(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	var mu sync.Mutex
	var vouches []string
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		mu.Lock()
		vouches = append(vouches, r.Header.Get("X-Test-Vouch"))
		mu.Unlock()
		return false
	})
	var urlA, urlB atomic.Value
	a := vouchEdge(t, o, func(c *Config, d *Deps) {
		c.Name = "edge-a"
		d.Siblings = func() []Sibling { return []Sibling{{ID: "b", URL: urlB.Load().(string)}} }
	})
	b := vouchEdge(t, o, func(c *Config, d *Deps) {
		c.Name = "edge-b"
		d.Siblings = func() []Sibling { return []Sibling{{ID: "a", URL: urlA.Load().(string)}} }
		d.ClientIP = func(r *http.Request) string {
			if v := r.Header.Get("X-Test-Vouch"); v != "" {
				return v[strings.LastIndexByte(v, ' ')+1:]
			}
			return "127.0.0.1"
		}
	})
	urlA.Store(a.url)
	urlB.Store(b.url)
	pB := pathOwnedBy(t, a.url, b.url, b.url)
	body := segment(2000, 5)
	o.put(pB, body, origin.CacheImmutable)

	r := do(t, http.MethodGet, a.url+pB+"?token=t1", map[string]string{"X-Test-Viewer": "203.0.113.7"})
	wantBody(t, r, body)
	if r.cache != "edge-a; fwd=miss; stored; detail=sibling-b" {
		t.Fatalf("A's Cache-Status %q", r.cache)
	}
	mu.Lock()
	defer mu.Unlock()
	got := strings.Join(vouches, "|")
	for _, want := range []string{"HEAD " + pB + "?token=t1 203.0.113.7", "GET " + pB + "?token=t1 203.0.113.7"} {
		if !strings.Contains(got, want) {
			t.Errorf("the origin saw vouches %q, none %q", vouches, want)
		}
	}
}
