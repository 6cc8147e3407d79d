package edgecache

import (
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"runtime"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/packager/origin"
)

// A sibling run by a stranger that trickles its body (a byte at a time,
// every pause shorter than SiblingTimeout) no longer holds the viewers of
// the segments it owns: the whole fetch has a deadline (siblingDeadline),
// past which the sibling counts as failed and the origin serves the
// segment. Before, the 10 KiB body below took 17 minutes, and a real
// segment days. (Found by a review helper.)
func TestSiblingTrickleFallsBackToTheOrigin(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	slow := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(10<<10))
		w.WriteHeader(http.StatusOK)
		tick := time.NewTicker(100 * time.Millisecond) // its pace, under SiblingTimeout
		defer tick.Stop()
		for range 10 << 10 {
			if _, err := w.Write([]byte{0}); err != nil {
				return
			}
			w.(http.Flusher).Flush()
			select {
			case <-tick.C:
			case <-r.Context().Done():
				return
			}
		}
	}))
	t.Cleanup(slow.Close)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.SiblingTimeout = 300 * time.Millisecond
		d.Siblings = func() []Sibling { return []Sibling{{ID: "slow", URL: slow.URL}} }
	})
	p := pathOwnedBy(t, e.url, slow.URL, slow.URL)
	body := segment(10<<10, 13)
	o.put(p, body, origin.CacheImmutable)
	// A bound for failing, not a measure: the fix answers in about 1.2 s.
	cl := &http.Client{Timeout: 2 * time.Minute}
	resp, err := cl.Get(e.url + p)
	if err != nil {
		t.Fatalf("the viewer of a segment the trickling sibling owns: %v", err)
	}
	got, err := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK || err != nil || !bytes.Equal(got, body) {
		t.Fatalf("the viewer got %d, %d bytes (%v); want the origin's segment", resp.StatusCode, len(got), err)
	}
	if st := e.c.Stats(); st.SiblingFailures != 1 {
		t.Fatalf("sibling failures %d, want 1 (the trickling sibling)", st.SiblingFailures)
	}
}

// A sibling's Content-Length no longer sizes the edge's buffer: eight
// misses of segments a stranger sibling claims are 60 MiB each (it sends
// one byte, then hangs) reserved 480 MiB before; the buffer now grows
// with what arrives. Not parallel: it reads the heap.
func TestSiblingClaimedSizeAllocatesNothing(t *testing.T) {
	o := newFakeOrigin(t)
	release := make(chan struct{})
	sent := make(chan struct{}, 16)
	evil := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(60<<20))
		w.WriteHeader(http.StatusOK)
		_, _ = w.Write([]byte{0})
		w.(http.Flusher).Flush()
		sent <- struct{}{}
		select {
		case <-release:
		case <-r.Context().Done():
		}
	}))
	t.Cleanup(evil.Close)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.SiblingTimeout = time.Minute // the sibling never pauses too long here
		d.Siblings = func() []Sibling { return []Sibling{{ID: "evil", URL: evil.URL}} }
	})
	var paths []string
	for i := 0; len(paths) < 8; i++ {
		p := fmt.Sprintf("/hls/abc/source/seg-%d.m4s", i)
		if weight(strings.TrimRight(evil.URL, "/"), p) > weight(strings.TrimRight(e.url, "/"), p) {
			paths = append(paths, p)
			o.put(p, segment(1000, byte(i)), origin.CacheImmutable)
		}
	}
	runtime.GC()
	var before, during runtime.MemStats
	runtime.ReadMemStats(&before)
	var wg sync.WaitGroup
	for _, p := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r, err := http.Get(e.url + p); err == nil {
				r.Body.Close()
			}
		}()
	}
	for range paths {
		<-sent // every fetch has its headers and a byte
	}
	runtime.ReadMemStats(&during)
	close(release) // the sibling bodies end short: the origin serves
	wg.Wait()
	grew := int64(during.HeapAlloc) - int64(before.HeapAlloc)
	t.Logf("heap grew by %.1f MiB for 8 sibling misses claiming 60 MiB each", float64(grew)/(1<<20))
	if grew > 64<<20 {
		t.Fatalf("8 sibling misses hold %d MiB: the claimed size was reserved", grew>>20)
	}
}

// A signed playlist served from disk, rewritten with the viewer's token,
// carries no ETag: the stored copy's would answer 304 to a viewer whose
// token changed, who would keep the playlist of the old token. (Found by a
// review helper.)
func TestDiskPlaylistRewrittenHasNoETag(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	p := "/hls/abc/source/index.m3u8"
	pl := []byte("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg-0.m4s\n#EXT-X-ENDLIST\n")
	o.putSigned(p, pl, "public, max-age=3600")
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.MemoryBytes = 512 // objects over 64 bytes stay on disk only
		d.Access = func(r *http.Request, id string, signed bool) (string, int) {
			return r.URL.Query().Get("token"), 0
		}
	})
	get(t, e.url+p+"?token=old")
	e.idle(t)
	b := get(t, e.url+p+"?token=old") // from disk
	if b.code != http.StatusOK || b.hdr.Get("ETag") != "" || !strings.Contains(string(b.body), "token=old") {
		t.Fatalf("a disk hit rewritten for its token: %d, ETag %q, body %q", b.code, b.hdr.Get("ETag"), b.body)
	}
	sum := sha256.Sum256(pl)
	stored := `"` + hex.EncodeToString(sum[:12]) + `"` // the copy's, as the origin gave it
	c := do(t, http.MethodGet, e.url+p+"?token=new", map[string]string{"If-None-Match": stored})
	if c.code != http.StatusOK || !strings.Contains(string(c.body), "token=new") {
		t.Fatalf("a viewer with a new token and the stored copy's ETag got %d: %q", c.code, c.body)
	}
}

// Range requests for a large object spooled to disk while it arrives are
// answered from the spool file: each used to read the whole body into
// memory, so viewers asking for ranges piled copies of it up past
// MaxInFlightBytes. Not parallel: it counts the allocations.
func TestSpooledRangesReadNoWholeCopies(t *testing.T) {
	o := newFakeOrigin(t)
	p := "/hls/abc/source/big.m4s"
	body := segment(8<<20, 7)
	sum := sha256.Sum256(body)
	half := make(chan struct{})
	rest := make(chan struct{})
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != p {
			return false
		}
		h := w.Header()
		h.Set("Content-Type", "video/iso.segment")
		h.Set("Cache-Control", origin.CacheImmutable)
		h.Set(HeaderDigest, hex.EncodeToString(sum[:]))
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.WriteHeader(http.StatusOK)
		if r.Method == http.MethodHead {
			return true
		}
		_, _ = w.Write(body[:len(body)/2])
		w.(http.Flusher).Flush()
		close(half)
		<-rest
		_, _ = w.Write(body[len(body)/2:])
		return true
	})
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.MaxInFlightBytes = 2 << 20 // an 8 MiB body is spooled
	})
	lead := make(chan answer, 1)
	go func() { lead <- get(t, e.url+p) }()
	<-half
	var before, after runtime.MemStats
	runtime.GC()
	runtime.ReadMemStats(&before)
	const viewers = 16
	var wg sync.WaitGroup
	ranges := make([]answer, viewers)
	for i := range viewers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			ranges[i] = do(t, http.MethodGet, e.url+p, map[string]string{"Range": "bytes=100-199"})
		}()
	}
	waitCollapsed(t, e, viewers)
	close(rest)
	wg.Wait()
	runtime.ReadMemStats(&after)
	if a := <-lead; a.code != http.StatusOK || !bytes.Equal(a.body, body) {
		t.Fatalf("the first viewer got %d, %d bytes", a.code, len(a.body))
	}
	for i, a := range ranges {
		if a.code != http.StatusPartialContent || !bytes.Equal(a.body, body[100:200]) {
			t.Fatalf("range viewer %d got %d, %d bytes", i, a.code, len(a.body))
		}
	}
	allocated := int64(after.TotalAlloc - before.TotalAlloc)
	t.Logf("%d range requests of a spooled 8 MiB body allocated %.1f MiB", viewers, float64(allocated)/(1<<20))
	if allocated > 64<<20 {
		t.Fatalf("%d range requests allocated %d MiB: each read the whole body", viewers, allocated>>20)
	}
}

// waitCollapsed waits until n requests have joined the fetch in flight
// (counted as collapsed once they have its answer's headers).
func waitCollapsed(t *testing.T, e *edge, n int) {
	t.Helper()
	joined := func() int { return int(promtest.ToFloat64(e.c.m.collapsed)) }
	deadline := time.Now().Add(30 * time.Second)
	tick := time.NewTicker(5 * time.Millisecond)
	defer tick.Stop()
	for joined() < n {
		if time.Now().After(deadline) {
			t.Fatalf("only %d of %d requests joined the fetch", joined(), n)
		}
		<-tick.C
	}
}
