package edgecache

import (
	"bytes"
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/hlspath"
	"github.com/shoal-video/shoal/internal/originset"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/packager/origin"
)

// gatedOrigin is a real origin handler (packager/origin) behind its own
// HTTP server, with a gate that makes it answer a status instead, as an
// origin (or the proxy in front of it) that cannot answer does; it counts
// the requests it received.
type gatedOrigin struct {
	srv  *httptest.Server
	fail atomic.Int32 // a status to answer instead of serving; 0: serve

	mu   sync.Mutex
	seen map[string]int // "METHOD path" -> requests
}

func newGatedOrigin(t *testing.T, h http.Handler) *gatedOrigin {
	t.Helper()
	g := &gatedOrigin{seen: map[string]int{}}
	g.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		g.mu.Lock()
		g.seen[r.Method+" "+r.URL.Path]++
		g.mu.Unlock()
		if code := int(g.fail.Load()); code != 0 {
			http.Error(w, http.StatusText(code), code)
			return
		}
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(g.srv.Close)
	return g
}

func (g *gatedOrigin) count(method, path string) int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.seen[method+" "+path]
}

// Two origins serving one HLS tree (as origins share a bucket): the cache
// fetches from the preferred one; when it answers 502, 503 or 504, or is
// closed, the request goes once more to the other one and the failing one
// is avoided for originset.AvoidFor, after which it is preferred again.
func TestOriginFailover(t *testing.T) {
	t.Parallel()
	store, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	const dir = "/hls/abc/source/"
	files := map[string][]byte{}
	var pl strings.Builder
	pl.WriteString("#EXTM3U\n#EXT-X-VERSION:7\n#EXT-X-TARGETDURATION:2\n#EXT-X-PLAYLIST-TYPE:VOD\n#EXT-X-MAP:URI=\"init.mp4\"\n")
	for i := range 7 {
		name := fmt.Sprintf("seg-%d.m4s", i)
		size := 4 << 10
		if i == 6 {
			size = 300 << 10 // bigger than MaxObjectBytes: passed through
		}
		files[name] = segment(size, byte(i))
		fmt.Fprintf(&pl, "#EXTINF:2.000,\n%s\n", name)
	}
	pl.WriteString("#EXT-X-ENDLIST\n")
	files["index.m3u8"] = []byte(pl.String())
	files["init.mp4"] = segment(1000, 99)
	for name, body := range files {
		if _, err := store.Put(context.Background(), "abc/source/"+name, bytes.NewReader(body), int64(len(body))); err != nil {
			t.Fatal(err)
		}
	}
	h := origin.NewHandler(store)
	a, b := newGatedOrigin(t, h), newGatedOrigin(t, h)
	clock := newFakeClock()
	e := startCache(t, a.srv.URL+", "+b.srv.URL+"/", t.TempDir(), func(c *Config, d *Deps) {
		d.Now = clock.Now
		c.MaxObjectBytes = 100 << 10
	})
	fetch := func(name string) answer {
		t.Helper()
		got := get(t, e.url+dir+name)
		wantBody(t, got, files[name])
		wantStatus(t, got, "shoal; fwd=miss; stored; detail=origin")
		return got
	}
	from := func(name string, wantA, wantB int) {
		t.Helper()
		if na, nb := a.count(http.MethodGet, dir+name), b.count(http.MethodGet, dir+name); na != wantA || nb != wantB {
			t.Fatalf("%s: GETs at A %d, at B %d; want %d and %d", name, na, nb, wantA, wantB)
		}
	}
	failovers := func(want int64) {
		t.Helper()
		if got := e.settled(t).OriginFailovers; got != want {
			t.Fatalf("OriginFailovers = %d, want %d", got, want)
		}
	}

	// The preferred origin (the first listed) serves.
	fetch("index.m3u8")
	from("index.m3u8", 1, 0)
	failovers(0)

	// A 502, 503 or 504 from A: the same request is sent to B.
	for i, code := range []int{http.StatusBadGateway, http.StatusServiceUnavailable, http.StatusGatewayTimeout} {
		a.fail.Store(int32(code))
		name := fmt.Sprintf("seg-%d.m4s", i)
		fetch(name)
		from(name, 1, 1)
		failovers(int64(i + 1))
		clock.Advance(originset.AvoidFor + time.Second) // A is tried first again
	}
	// Once A failed, it is avoided for AvoidFor even when it answers
	// again: the next fetch goes to B alone.
	a.fail.Store(http.StatusServiceUnavailable)
	fetch("seg-3.m4s")
	from("seg-3.m4s", 1, 1)
	a.fail.Store(0)
	fetch("seg-4.m4s")
	from("seg-4.m4s", 0, 1)
	failovers(4)
	// After AvoidFor, A is preferred again.
	clock.Advance(originset.AvoidFor + time.Second)
	fetch("init.mp4")
	from("init.mp4", 1, 0)

	// A dies: its connections are refused (it counts nothing more), and
	// B serves.
	a.srv.Close()
	fetch("seg-5.m4s")
	from("seg-5.m4s", 0, 1)
	failovers(5)
	// An object too big to cache is streamed through from B.
	clock.Advance(originset.AvoidFor + time.Second)
	big := get(t, e.url+dir+"seg-6.m4s")
	wantBody(t, big, files["seg-6.m4s"])
	if b.count(http.MethodGet, dir+"seg-6.m4s") == 0 {
		t.Fatal("the pass-through did not reach B")
	}
	// Both fail: the edge answers 502, as with one origin.
	clock.Advance(originset.AvoidFor + time.Second)
	b.fail.Store(http.StatusServiceUnavailable)
	got := get(t, e.url+"/hls/abc/other/seg-0.m4s")
	if got.code != http.StatusBadGateway || !strings.Contains(got.cache, "fwd-status=503") {
		t.Fatalf("both origins failing: %d %q, want 502 with fwd-status=503", got.code, got.cache)
	}
	if n := b.count(http.MethodGet, "/hls/abc/other/seg-0.m4s"); n != 1 {
		t.Fatalf("B got %d GETs for one failing request, want 1 (one retry only)", n)
	}
}

// Blocking playlist reloads and parts fail over like every other fetch;
// a blocking reload's 503 (the playlist did not get there in time) is the
// origin's answer and is relayed, not retried.
func TestBlockingReloadAndPartFailover(t *testing.T) {
	t.Parallel()
	o1, o2 := newFakeOrigin(t), newFakeOrigin(t)
	pl := []byte("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXT-X-MEDIA-SEQUENCE:0\n#EXTINF:2.0,\ns1-0-5.m4s\n")
	for _, o := range []*fakeOrigin{o1, o2} {
		o.publish(livePath, 5, 2, pl, false)
	}
	const part = "/hls/abc/source/s1-0-6-p0.m4s"
	partBody := segment(3000, 7)
	o2.put(part, partBody, origin.CacheImmutable)
	// o1 is up but its answers to blocking reloads and parts fail, as
	// when the proxy in front of it cannot reach it.
	o1.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch {
		case strings.Contains(r.URL.RawQuery, "_HLS_msn"):
			noStoreError(w, http.StatusBadGateway)
			return true
		case hlspath.IsPart(r.URL.Path):
			noStoreError(w, http.StatusGatewayTimeout)
			return true
		}
		return false
	})
	clock := newFakeClock()
	e := startCache(t, o1.srv.URL+","+o2.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { d.Now = clock.Now })

	got := get(t, e.url+livePath+"?_HLS_msn=5&_HLS_part=1")
	wantBody(t, got, pl)
	if n1, n2 := o1.countQuery(livePath, "_HLS_msn=5&_HLS_part=1"), o2.countQuery(livePath, "_HLS_msn=5&_HLS_part=1"); n1 != 1 || n2 != 1 {
		t.Fatalf("blocking reload: %d at the first origin, %d at the second; want 1 and 1", n1, n2)
	}
	clock.Advance(originset.AvoidFor + time.Second)
	got = get(t, e.url+part)
	wantBody(t, got, partBody)
	if n1, n2 := o1.count(http.MethodGet, part), o2.count(http.MethodGet, part); n1 != 1 || n2 != 1 {
		t.Fatalf("part: %d at the first origin, %d at the second; want 1 and 1", n1, n2)
	}
	if s := e.settled(t); s.OriginFailovers != 2 {
		t.Fatalf("OriginFailovers = %d, want 2", s.OriginFailovers)
	}

	// The origin holds a reload for the next segment, then answers 503:
	// relayed to the viewer, the other origin not asked.
	clock.Advance(originset.AvoidFor + time.Second)
	o1.setHook(nil)
	arrived := o1.watch()
	done := make(chan answer, 1)
	go func() { done <- get(t, e.url+livePath+"?_HLS_msn=6") }()
	for s := range arrived {
		if s.query == "_HLS_msn=6" {
			break
		}
	}
	o1.expireWaits()
	got = <-done
	if got.code != http.StatusServiceUnavailable || !strings.Contains(got.cache, "fwd-status=503") {
		t.Fatalf("blocking reload past its wait: %d %q, want the origin's 503", got.code, got.cache)
	}
	if n := o2.countQuery(livePath, "_HLS_msn=6"); n != 0 {
		t.Fatalf("a blocking reload's 503 was retried at the other origin (%d)", n)
	}
	if s := e.settled(t); s.OriginFailovers != 2 {
		t.Fatalf("OriginFailovers = %d after a blocking 503, want 2", s.OriginFailovers)
	}
}

// Learned origins (Deps.Origins, shared with the node client) are fetched
// from when the configured one is down; a learned origin no longer listed
// is dropped.
func TestLearnedOrigins(t *testing.T) {
	t.Parallel()
	dead := httptest.NewServer(http.NotFoundHandler())
	dead.Close()
	o := newFakeOrigin(t)
	o.put(segPath, segment(2000, 3), origin.CacheImmutable)
	clock := newFakeClock()
	set, err := originset.New([]string{dead.URL}, clock.Now)
	if err != nil {
		t.Fatal(err)
	}
	e := startCache(t, "", t.TempDir(), func(_ *Config, d *Deps) { d.Now, d.Origins = clock.Now, set })
	if got := get(t, e.url+segPath); got.code != http.StatusBadGateway {
		t.Fatalf("only a dead origin known: %d, want 502", got.code)
	}
	if !set.Learn([]string{o.srv.URL + "/", dead.URL}) {
		t.Fatal("Learn reported no change")
	}
	if all := set.All(); len(all) != 2 || all[0] != dead.URL || all[1] != o.srv.URL {
		t.Fatalf("origins %q", all)
	}
	wantBody(t, get(t, e.url+segPath), segment(2000, 3))
	// No longer listed: dropped; the configured one stays.
	set.Learn([]string{"https://other.example"})
	if all := set.All(); len(all) != 2 || all[0] != dead.URL || all[1] != "https://other.example" {
		t.Fatalf("origins after a new list %q", all)
	}
}
