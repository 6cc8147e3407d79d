package edgecache

import (
	"bufio"
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/packager/origin"
)

func TestHitAndRestart(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(300<<10, 1)
	o.put(segPath, body, origin.CacheImmutable)
	dir := t.TempDir()

	e := startCache(t, o.srv.URL, dir, nil)
	a := get(t, e.url+segPath)
	wantBody(t, a, body)
	if a.cache != "shoal; fwd=miss; stored; detail=origin" {
		t.Fatalf("first Cache-Status %q", a.cache)
	}
	if a.hdr.Get("Content-Type") != "video/iso.segment" || a.hdr.Get("Cache-Control") != origin.CacheImmutable || a.hdr.Get("ETag") == "" {
		t.Fatalf("headers not passed on: %v", a.hdr)
	}
	a = get(t, e.url+segPath)
	wantBody(t, a, body)
	if a.cache != "shoal; hit" {
		t.Fatalf("second Cache-Status %q, want hit", a.cache)
	}
	if n := o.count("GET", segPath); n != 1 {
		t.Fatalf("origin saw %d GETs, want 1", n)
	}
	if h := a.hdr.Get("Access-Control-Allow-Origin"); h != "*" {
		t.Fatalf("hit without CORS: %q", h)
	}
	e.stop(t)

	// A new cache on the same directory serves from disk: one tier too
	// small to hold the segment (sendfile path), one with room (promotion).
	for _, mem := range []int64{64 << 10, 64 << 20} {
		e2 := startCache(t, o.srv.URL, dir, func(c *Config, _ *Deps) { c.MemoryBytes = mem })
		for i := 0; i < 2; i++ {
			a = get(t, e2.url+segPath)
			wantBody(t, a, body)
			wantStatus(t, a, "shoal; hit")
		}
		if n := o.count("GET", segPath); n != 1 {
			t.Fatalf("after restart (memory %d) the origin saw %d GETs, want 1", mem, n)
		}
		// The client can read the whole body before the handler has
		// returned and counted it: wait for the request to be done.
		s := e2.settled(t)
		if s.Hits != 2 || s.CacheBytes < int64(len(body)) || s.BytesServed["abc"] != 2*int64(len(body)) {
			t.Fatalf("stats after restart: %+v", s)
		}
		e2.stop(t)
	}
}

func TestCoalescedMissStreams(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	const chunks, chunk = 10, 20 << 10
	body := segment(chunks*chunk, 3)
	// Times are read from the monotonic clock (since start): the wall
	// clock may be stepped while the test runs.
	start := time.Now()
	var originDone atomic.Int64 // nanoseconds after start when the origin wrote its last byte
	originFinished := make(chan struct{})
	// The origin holds the rest of the body until a client has its first
	// byte: a miss that is streamed gets there; one that is not never
	// does (the origin gives up waiting after a while, and the check
	// below fails).
	gotFirst := make(chan struct{})
	var firstOnce sync.Once
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Path != segPath {
			return false
		}
		w.Header().Set("Content-Type", "video/iso.segment")
		w.Header().Set("Cache-Control", origin.CacheImmutable)
		w.Header().Set("Content-Length", strconv.Itoa(len(body)))
		for i := 0; i < chunks; i++ {
			if i == 1 {
				select {
				case <-gotFirst:
				case <-r.Context().Done():
				case <-time.After(10 * time.Second):
				}
			}
			w.Write(body[i*chunk : (i+1)*chunk])
			w.(http.Flusher).Flush()
		}
		// Noted as soon as the last byte is out: a client may have read
		// the whole body before anything after this runs.
		originDone.Store(int64(time.Since(start)))
		close(originFinished)
		return true
	})
	e := startCache(t, o.srv.URL, t.TempDir(), nil)

	const n = 100
	tr := &http.Transport{MaxIdleConnsPerHost: n}
	defer tr.CloseIdleConnections()
	client := &http.Client{Transport: tr}
	var (
		wg        sync.WaitGroup
		firstByte [n]int64
		statuses  [n]string
		errs      = make(chan error, n)
	)
	for i := 0; i < n; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, err := client.Get(e.url + segPath)
			if err != nil {
				errs <- err
				return
			}
			defer resp.Body.Close()
			br := bufio.NewReader(resp.Body)
			if _, err := br.Peek(1); err != nil {
				errs <- err
				return
			}
			firstByte[i] = int64(time.Since(start))
			firstOnce.Do(func() { close(gotFirst) })
			got, err := io.ReadAll(br)
			if err != nil {
				errs <- err
				return
			}
			if string(got) != string(body) {
				errs <- fmt.Errorf("client %d: %d bytes differ", i, len(got))
				return
			}
			statuses[i] = resp.Header.Get("Cache-Status")
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	if got := o.count("GET", segPath); got != 1 {
		t.Fatalf("origin saw %d GETs for 100 concurrent requests, want 1", got)
	}
	<-originFinished
	early := 0
	for _, fb := range firstByte {
		if fb < originDone.Load() {
			early++
		}
	}
	if early == 0 {
		t.Fatalf("no client got a byte before the origin finished: the miss was not streamed (origin done at %v, first bytes %v)", time.Duration(originDone.Load()), firstByte[:5])
	}
	misses, collapsed := 0, 0
	for _, s := range statuses {
		switch s {
		case "shoal; fwd=miss; stored; detail=origin":
			misses++
		case "shoal; fwd=miss; collapsed":
			collapsed++
		}
	}
	if misses != 1 || collapsed == 0 {
		t.Fatalf("%d leaders and %d collapsed waiters, want 1 and some", misses, collapsed)
	}
	t.Logf("%d of %d clients got their first byte before the origin finished; %d collapsed", early, n, collapsed)
}

// TestP2PMarkFollowsTheOrigin: the origin's Shoal-P2P mark is kept with
// a cached object and passed on, and a revalidation (304) takes the mark
// the origin sends now, so turning P2P off or on reaches objects the edge
// keeps revalidating.
func TestP2PMarkFollowsTheOrigin(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.put(livePath, []byte("#EXTM3U\n#EXTINF:2,\nseg-0.m4s\n"), origin.CacheLivePlaylist)
	var mu sync.Mutex
	off := true
	o.setHook(func(w http.ResponseWriter, _ *http.Request) bool {
		mu.Lock()
		defer mu.Unlock()
		if off {
			w.Header().Set(HeaderP2P, "off")
		}
		return false
	})
	clock := newFakeClock()
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { d.Now = clock.Now })
	mark := func(want string) {
		t.Helper()
		for _, m := range []string{"GET", "HEAD"} {
			resp := do(t, m, e.url+livePath, nil)
			if got := resp.hdr.Get(HeaderP2P); got != want {
				t.Fatalf("%s: Shoal-P2P %q (Cache-Status %q), want %q", m, got, resp.cache, want)
			}
		}
	}
	mark("off")
	mu.Lock()
	off = false
	mu.Unlock()
	clock.Advance(1100 * time.Millisecond)
	mark("") // revalidated: 304 without the mark
	if reqs := o.requests(); reqs[len(reqs)-1].inm == "" {
		t.Fatal("no revalidation")
	}
	mu.Lock()
	off = true
	mu.Unlock()
	clock.Advance(1100 * time.Millisecond)
	mark("off")
}

func TestFreshness(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	seg := segment(1000, 5)
	o.put(segPath, seg, origin.CacheImmutable)
	o.put(livePath, []byte("#EXTM3U\n#EXTINF:2,\nseg-0.m4s\n"), origin.CacheLivePlaylist)
	o.put("/hls/abc/master.m3u8", []byte("#EXTM3U\n"), "no-store")
	clock := newFakeClock()
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { d.Now = clock.Now })

	get(t, e.url+segPath)
	wantStatus(t, get(t, e.url+livePath), "shoal; fwd=miss; stored")
	wantStatus(t, get(t, e.url+livePath), "shoal; hit")
	for i := 0; i < 2; i++ {
		a := get(t, e.url+"/hls/abc/master.m3u8")
		if a.cache != "shoal; fwd=miss; detail=origin" {
			t.Fatalf("no-store answer: Cache-Status %q", a.cache)
		}
	}
	if n := o.count("GET", "/hls/abc/master.m3u8"); n != 2 {
		t.Fatalf("no-store object fetched %d times, want 2", n)
	}
	clock.Advance(1100 * time.Millisecond) // the playlist's second of freshness is over

	// Unchanged: revalidated with If-None-Match.
	a := get(t, e.url+livePath)
	if a.cache != "shoal; fwd=stale; fwd-status=304; stored; detail=origin" || !strings.Contains(string(a.body), "seg-0.m4s") {
		t.Fatalf("stale playlist: Cache-Status %q body %q", a.cache, a.body)
	}
	reqs := o.requests()
	if last := reqs[len(reqs)-1]; last.path != livePath || last.inm == "" {
		t.Fatalf("revalidation request %+v lacks If-None-Match", last)
	}
	wantStatus(t, get(t, e.url+livePath), "shoal; hit")
	// Changed: the new playlist is served after expiry.
	o.put(livePath, []byte("#EXTM3U\n#EXTINF:2,\nseg-1.m4s\n"), origin.CacheLivePlaylist)
	clock.Advance(1100 * time.Millisecond)
	a = get(t, e.url+livePath)
	if !strings.Contains(string(a.body), "seg-1.m4s") || a.cache != "shoal; fwd=stale; stored; detail=origin" {
		t.Fatalf("changed playlist: Cache-Status %q body %q", a.cache, a.body)
	}
	if n := o.count("GET", livePath); n != 3 {
		t.Fatalf("playlist fetched %d times, want 3", n)
	}
	// The immutable segment was never refetched.
	wantStatus(t, get(t, e.url+segPath), "shoal; hit")
	if n := o.count("GET", segPath); n != 1 {
		t.Fatalf("segment fetched %d times, want 1", n)
	}
}

func TestNegativeAndErrors(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	const missing, broken, slow = "/hls/abc/source/seg-9.m4s", "/hls/abc/source/seg-8.m4s", "/hls/abc/source/seg-7.m4s"
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		switch r.URL.Path {
		case broken:
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		case slow:
			select {
			case <-r.Context().Done():
			case <-time.After(5 * time.Second):
			}
			return true
		}
		return false
	})
	clock := newFakeClock()
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.NegativeTTL = 300 * time.Millisecond
		c.OriginTimeout = 200 * time.Millisecond
		d.Now = clock.Now
	})

	a := get(t, e.url+missing)
	if a.code != http.StatusNotFound || a.cache != "shoal; fwd=miss; fwd-status=404; stored; detail=origin" {
		t.Fatalf("404: %d %q", a.code, a.cache)
	}
	a = get(t, e.url+missing)
	if a.code != http.StatusNotFound || a.cache != "shoal; hit; detail=negative" {
		t.Fatalf("remembered 404: %d %q", a.code, a.cache)
	}
	if n := o.count("GET", missing); n != 1 {
		t.Fatalf("origin saw %d GETs for a remembered 404", n)
	}
	clock.Advance(350 * time.Millisecond)
	get(t, e.url+missing)
	if n := o.count("GET", missing); n != 2 {
		t.Fatalf("after NegativeTTL the origin saw %d GETs, want 2", n)
	}

	for i := 1; i <= 2; i++ {
		a = get(t, e.url+broken)
		if a.code != http.StatusBadGateway || a.cache != "shoal; fwd=miss; fwd-status=503; detail=origin" || a.hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("5xx: %d %q %q", a.code, a.cache, a.hdr.Get("Cache-Control"))
		}
		if n := o.count("GET", broken); n != i {
			t.Fatalf("5xx was cached: origin saw %d GETs after %d requests", n, i)
		}
	}

	start := time.Now()
	a = get(t, e.url+slow)
	if a.code != http.StatusBadGateway || time.Since(start) > 2*time.Second {
		t.Fatalf("hanging origin: %d after %s", a.code, time.Since(start))
	}
}

func TestTruncatedOriginBody(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		w.Header().Set("Cache-Control", origin.CacheImmutable)
		w.Header().Set("Content-Length", "1000")
		w.Write(make([]byte, 500))
		return true // net/http closes the connection: the body is short
	})
	e := startCache(t, o.srv.URL, t.TempDir(), nil)
	for i := 1; i <= 2; i++ {
		resp, err := http.Get(e.url + segPath)
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		if err == nil {
			t.Fatal("a truncated upstream body was served as complete")
		}
		if n := o.count("GET", segPath); n != i {
			t.Fatalf("truncated body cached: %d GETs after %d requests", n, i)
		}
	}
}

func TestTooBigStreamsThrough(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(5000, 9)
	o.put(segPath, body, origin.CacheImmutable)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, _ *Deps) { c.MaxObjectBytes = 1000 })
	for i := 0; i < 2; i++ {
		a := get(t, e.url+segPath)
		wantBody(t, a, body)
		if a.cache != "shoal; fwd=miss; detail=origin" {
			t.Fatalf("Cache-Status %q", a.cache)
		}
	}
	a := do(t, "GET", e.url+segPath, map[string]string{"Range": "bytes=100-199"})
	if a.code != http.StatusPartialContent || string(a.body) != string(body[100:200]) {
		t.Fatalf("range through: %d, %d bytes", a.code, len(a.body))
	}
	if s := e.c.Stats(); s.CacheBytes != 0 {
		t.Fatalf("a too-big object was cached: %d bytes", s.CacheBytes)
	}
}

func TestRangeAndConditional(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(100<<10, 11)
	o.put(segPath, body, origin.CacheImmutable)
	dir := t.TempDir()
	for _, mem := range []int64{64 << 20, 64 << 10} { // memory hit, then disk-only hit
		e := startCache(t, o.srv.URL, dir, func(c *Config, _ *Deps) { c.MemoryBytes = mem })
		get(t, e.url+segPath)
		a := do(t, "GET", e.url+segPath, map[string]string{"Range": "bytes=10-19"})
		if a.code != http.StatusPartialContent || string(a.body) != string(body[10:20]) || a.hdr.Get("Content-Range") != fmt.Sprintf("bytes 10-19/%d", len(body)) {
			t.Fatalf("memory %d: range: %d %q %q", mem, a.code, a.body, a.hdr.Get("Content-Range"))
		}
		wantStatus(t, a, "shoal; hit")
		etag := a.hdr.Get("ETag")
		a = do(t, "GET", e.url+segPath, map[string]string{"If-None-Match": etag})
		if a.code != http.StatusNotModified {
			t.Fatalf("memory %d: If-None-Match: %d", mem, a.code)
		}
		a = do(t, "HEAD", e.url+segPath, nil)
		if a.code != 200 || a.hdr.Get("Content-Length") != strconv.Itoa(len(body)) || len(a.body) != 0 {
			t.Fatalf("memory %d: HEAD: %d %v", mem, a.code, a.hdr)
		}
		e.stop(t)
	}
	// A Range on an object in flight waits for it.
	o2 := newFakeOrigin(t)
	o2.put(segPath, body, origin.CacheImmutable)
	e := startCache(t, o2.srv.URL, t.TempDir(), nil)
	a := do(t, "GET", e.url+segPath, map[string]string{"Range": "bytes=5-9"})
	if a.code != http.StatusPartialContent || string(a.body) != string(body[5:10]) {
		t.Fatalf("range on a miss: %d %q", a.code, a.body)
	}
}

func TestCORSAndMethods(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	e := startCache(t, o.srv.URL, t.TempDir(), nil)
	ref := httptest.NewRecorder()
	hlsStore, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	origin.NewHandler(hlsStore).ServeHTTP(ref, httptest.NewRequest(http.MethodOptions, segPath, nil))
	for _, method := range []string{http.MethodOptions, http.MethodPost} {
		rec := httptest.NewRecorder()
		e.c.ServeHTTP(rec, httptest.NewRequest(method, segPath, nil))
		want := http.StatusNoContent
		if method == http.MethodPost {
			want = http.StatusMethodNotAllowed
			if rec.Header().Get("Allow") != "GET, HEAD, OPTIONS" {
				t.Fatalf("405 without Allow: %v", rec.Header())
			}
		}
		if rec.Code != want {
			t.Fatalf("%s: %d, want %d", method, rec.Code, want)
		}
		for k, v := range ref.Header() {
			if strings.HasPrefix(k, "Access-Control-") && rec.Header().Get(k) != v[0] {
				t.Fatalf("%s: %s = %q, origin says %q", method, k, rec.Header().Get(k), v[0])
			}
		}
	}
	if len(o.requests()) != 0 {
		t.Fatal("OPTIONS or POST reached the origin")
	}
}

func TestPathTricks(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	e := startCache(t, o.srv.URL, t.TempDir(), nil)
	cases := []struct {
		target string
		want   int
	}{
		{"/hls/abc/%2e%2e/secret.m3u8", 400},
		{"/hls/abc/source%2fx.m4s", 400},
		{"/hls/abc/source/seg%2d0.m4s", 400},
		{"/hls/../etc/passwd", 404},
		{"/hls/abc/../../secret.m3u8", 404},
		{"/hls/abc/source/x.exe", 404},
		{"/hls/ABC/master.m3u8", 404},
		{"/hls/abc/source/sub/x.m4s", 404},
		{"/hls/abc//x.m4s", 404},
		{"/other/abc/master.m3u8", 404},
		{"/hls/abc/source/.m4s", 404},
	}
	for _, tc := range cases {
		rec := httptest.NewRecorder()
		e.c.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, tc.target, nil))
		if rec.Code != tc.want || rec.Header().Get("Cache-Status") != "shoal" {
			t.Errorf("%s: %d %q, want %d \"shoal\"", tc.target, rec.Code, rec.Header().Get("Cache-Status"), tc.want)
		}
	}
	if r := o.requests(); len(r) != 0 {
		t.Fatalf("path tricks reached the origin: %+v", r)
	}
}

func TestEviction(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	const memCap, diskCap, size, count = 64 << 10, 100 << 10, 6 << 10, 40
	for i := 0; i < count; i++ {
		o.put(fmt.Sprintf("/hls/abc/source/seg-%d.m4s", i), segment(size, byte(i)), origin.CacheImmutable)
	}
	dir := t.TempDir()
	e := startCache(t, o.srv.URL, dir, func(c *Config, _ *Deps) { c.MemoryBytes = memCap; c.DiskBytes = diskCap })
	for i := 0; i < count; i++ {
		p := fmt.Sprintf("/hls/abc/source/seg-%d.m4s", i)
		wantBody(t, get(t, e.url+p), segment(size, byte(i)))
		e.idle(t)
		if m, d := e.c.mem.bytes(), e.c.disk.bytes(); m > memCap || d > diskCap {
			t.Fatalf("after %d objects: memory %d (cap %d), disk %d (cap %d)", i+1, m, memCap, d, diskCap)
		}
	}
	var onDisk int64
	filepath.Walk(filepath.Join(dir, objectsDir), func(_ string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			onDisk += fi.Size()
		}
		return nil
	})
	if onDisk > diskCap || onDisk != e.c.disk.bytes() {
		t.Fatalf("files on disk: %d bytes, index says %d, cap %d", onDisk, e.c.disk.bytes(), diskCap)
	}
	if e.c.mem.bytes() < memCap/2 || onDisk < diskCap/2 {
		t.Fatalf("tiers barely used: memory %d disk %d", e.c.mem.bytes(), onDisk)
	}
	// The most recent object is still a hit, the first one was evicted.
	wantStatus(t, get(t, e.url+fmt.Sprintf("/hls/abc/source/seg-%d.m4s", count-1)), "shoal; hit")
	wantStatus(t, get(t, e.url+"/hls/abc/source/seg-0.m4s"), "shoal; fwd=miss")
}

func TestScanDropsBadFiles(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(5000, 2)
	o.put(segPath, body, origin.CacheImmutable)
	dir := t.TempDir()
	e := startCache(t, o.srv.URL, dir, nil)
	get(t, e.url+segPath)
	e.stop(t)
	// Corrupt the stored file's length, and leave junk around.
	var file string
	filepath.Walk(filepath.Join(dir, objectsDir), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			file = p
		}
		return nil
	})
	if file == "" {
		t.Fatal("no cache file written")
	}
	if err := os.Truncate(file, 100); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, objectsDir, "zz-junk"), []byte("junk"), 0o644)
	os.WriteFile(filepath.Join(dir, tmpDir, "obj-123"), []byte("half"), 0o644)
	e2 := startCache(t, o.srv.URL, dir, nil)
	wantStatus(t, get(t, e2.url+segPath), "shoal; fwd=miss")
	if _, err := os.Stat(file); err == nil {
		t.Fatal("the truncated file was kept")
	}
	if _, err := os.Stat(filepath.Join(dir, tmpDir, "obj-123")); err == nil {
		t.Fatal("a temporary file was kept")
	}
	if _, err := os.Stat(filepath.Join(dir, objectsDir, "zz-junk")); err == nil {
		t.Fatal("junk was kept")
	}
}

func TestAccess(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	playlist := "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4\"\n#EXTINF:2,\nseg-0.m4s\n"
	o.putSigned(livePath, []byte(playlist), origin.CacheEndedPlaylist)
	o.putSigned(segPath, segment(2000, 4), origin.CacheImmutable)
	type call struct {
		id     string
		signed bool
	}
	var mu sync.Mutex
	var calls []call
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) {
		d.Access = func(r *http.Request, id string, signed bool) (string, int) {
			mu.Lock()
			calls = append(calls, call{id, signed})
			mu.Unlock()
			tok := r.URL.Query().Get("token")
			if signed && tok != "good" {
				return "", http.StatusForbidden
			}
			return tok, 0
		}
	})
	a := get(t, e.url+livePath+"?token=good")
	want := "#EXTM3U\n#EXT-X-MAP:URI=\"init-0.mp4?token=good\"\n#EXTINF:2,\nseg-0.m4s?token=good\n"
	if a.code != 200 || string(a.body) != want {
		t.Fatalf("rewritten playlist: %d %q", a.code, a.body)
	}
	if a.hdr.Get("Content-Length") != strconv.Itoa(len(want)) {
		t.Fatalf("Content-Length %q for %d bytes", a.hdr.Get("Content-Length"), len(want))
	}
	if a = get(t, e.url+livePath+"?token=good"); string(a.body) != want || a.cache != "shoal; hit" {
		t.Fatalf("rewritten hit: %q %q", a.cache, a.body)
	}
	if a = get(t, e.url+livePath+"?token=bad"); a.code != http.StatusForbidden || a.cache != "shoal; detail=refused" {
		t.Fatalf("bad token on a hit: %d", a.code)
	}
	if a = get(t, e.url+livePath); a.code != http.StatusForbidden {
		t.Fatalf("no token on a hit: %d", a.code)
	}
	// The stream is known to be signed: a miss without a token is refused
	// before the origin is asked.
	before := len(o.requests())
	if a = get(t, e.url+segPath); a.code != http.StatusForbidden {
		t.Fatalf("no token on a miss: %d", a.code)
	}
	if len(o.requests()) != before {
		t.Fatal("a refused viewer reached the origin")
	}
	wantBody(t, get(t, e.url+segPath+"?token=good"), segment(2000, 4))
	for _, s := range o.requests() {
		if s.token != "good" || s.edge != "1" {
			t.Fatalf("upstream request %+v lacks the token or Shoal-Edge", s)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	for _, c := range calls {
		if c.id != "abc" || !c.signed {
			t.Fatalf("Access called with %+v", c)
		}
	}
}

func TestAccessOpenStream(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.put(livePath, []byte("#EXTM3U\nseg-0.m4s\n"), origin.CacheLivePlaylist)
	var signedSeen atomic.Bool
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) {
		d.Access = func(r *http.Request, id string, signed bool) (string, int) {
			if signed {
				signedSeen.Store(true)
			}
			return "", 0
		}
	})
	a := get(t, e.url+livePath)
	if string(a.body) != "#EXTM3U\nseg-0.m4s\n" || signedSeen.Load() {
		t.Fatalf("open stream: %q signed=%v", a.body, signedSeen.Load())
	}
}

func TestMetricsAndStats(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(1000, 6)
	o.put(segPath, body, origin.CacheImmutable)
	reg := prometheus.NewRegistry()
	clock := newFakeClock()
	ticks, ticked := make(chan time.Time), make(chan struct{})
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) {
		d.Registerer, d.Now = reg, clock.Now
		d.ticks, d.ticked = ticks, func() { ticked <- struct{}{} }
	})
	get(t, e.url+segPath)
	get(t, e.url+segPath)
	get(t, e.url+segPath)
	get(t, e.url+"/hls/abc/source/seg-5.m4s")
	get(t, e.url+"/hls/abc/source/seg-5.m4s")
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]float64{}
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			name := mf.GetName()
			for _, l := range m.GetLabel() {
				name += "{" + l.GetName() + "=" + l.GetValue() + "}"
			}
			switch {
			case m.GetCounter() != nil:
				got[name] = m.GetCounter().GetValue()
			case m.GetGauge() != nil:
				got[name] = m.GetGauge().GetValue()
			}
		}
	}
	want := map[string]float64{
		"shoal_edge_requests_total{cache=hit}":      2,
		"shoal_edge_requests_total{cache=miss}":     2,
		"shoal_edge_requests_total{cache=negative}": 1,
		"shoal_edge_bytes_served_total":             3000,
		"shoal_edge_origin_fetches_total":           2,
	}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("%s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	if got["shoal_edge_cache_bytes{tier=memory}"] <= 1000 || got["shoal_edge_cache_bytes{tier=disk}"] <= 1000 {
		t.Errorf("cache bytes gauges: %v", got)
	}
	s := e.settled(t)
	if s.Hits != 3 || s.Misses != 2 || s.OriginFetches != 2 || s.BytesServed["abc"] != 3000 || s.Connections != 0 {
		t.Fatalf("stats: %+v", s)
	}
	// The egress rate is computed each second by Run: 3000 bytes served in
	// the first second.
	if r := e.c.Stats().EgressBytesPerSec; r != 0 {
		t.Fatalf("egress rate %v before Run's first tick", r)
	}
	clock.Advance(time.Second)
	ticks <- clock.Now()
	<-ticked
	if r := e.c.Stats().EgressBytesPerSec; r != 3000 {
		t.Fatalf("egress rate %v, want 3000", r)
	}
	// A second cache on the same registry is refused, not a panic.
	if _, err := New(Config{OriginURL: o.srv.URL, CacheDir: t.TempDir()}, Deps{Registerer: reg}); err == nil {
		t.Fatal("duplicate registration accepted")
	}
}

func TestNewValidates(t *testing.T) {
	t.Parallel()
	bad := []Config{
		{CacheDir: "x"},
		{OriginURL: "ftp://origin", CacheDir: "x"},
		{OriginURL: "http://origin"},
		{OriginURL: "http://origin", CacheDir: "x", DiskBytes: -1},
		{OriginURL: "http://origin", CacheDir: "x", SiblingTimeout: -time.Second},
		{OriginURL: "http://origin", CacheDir: "x", Name: "bad name"},
	}
	for _, cfg := range bad {
		if _, err := New(cfg, Deps{}); err == nil {
			t.Errorf("%+v accepted", cfg)
		}
	}
	if _, err := New(Config{OriginURL: "http://origin", CacheDir: "x"}, Deps{Siblings: func() []Sibling { return nil }}); err == nil {
		t.Error("siblings without Self accepted")
	}
	c, err := New(Config{OriginURL: "http://origin:8080/", CacheDir: "x", Name: "edge-1"}, Deps{})
	if err != nil {
		t.Fatal(err)
	}
	if c.cfg.NegativeTTL != time.Second || c.cfg.MaxObjectBytes != 64<<20 || c.cfg.SiblingTimeout != time.Second || c.csHit[0] != "edge-1; hit" {
		t.Fatalf("defaults: %+v", c.cfg)
	}
	if _, err := os.Stat("x"); err == nil {
		t.Fatal("New created the cache directory")
	}
}

func TestFreshnessParsing(t *testing.T) {
	t.Parallel()
	cases := []struct {
		cc, age  string
		ttl      time.Duration
		storable bool
	}{
		{origin.CacheImmutable, "", 31536000 * time.Second, true},
		{origin.CacheLivePlaylist, "", time.Second, true},
		{"public, max-age=60, s-maxage=5", "", 5 * time.Second, true},
		{"max-age=10", "4", 6 * time.Second, true},
		{"no-store", "", 0, false},
		{"private, max-age=60", "", 0, false},
		{"no-cache", "", 0, true},
		{"", "", 0, false},
		{"public", "", 0, false},
		{"max-age=abc", "", 0, false},
	}
	for _, tc := range cases {
		h := http.Header{}
		if tc.cc != "" {
			h.Set("Cache-Control", tc.cc)
		}
		if tc.age != "" {
			h.Set("Age", tc.age)
		}
		ttl, ok := freshness(h)
		if ttl != tc.ttl || ok != tc.storable {
			t.Errorf("%q: %s %v, want %s %v", tc.cc, ttl, ok, tc.ttl, tc.storable)
		}
	}
}

func TestLRU(t *testing.T) {
	t.Parallel()
	l := newLRU[string](10)
	l.add("a", 4, "a", nil)
	l.add("b", 4, "b", nil)
	l.get("a") // b is now the oldest
	ev := l.add("c", 4, "c", nil)
	if len(ev) != 1 || ev[0] != "b" || l.used != 8 {
		t.Fatalf("evicted %v, used %d", ev, l.used)
	}
	if ev := l.add("huge", 11, "huge", nil); len(ev) != 1 || ev[0] != "huge" || l.len() != 2 {
		t.Fatalf("oversized entry: %v, %d entries", ev, l.len())
	}
	if ev := l.add("a", 2, "a2", nil); len(ev) != 1 || ev[0] != "a" || l.used != 6 {
		t.Fatalf("replace: %v used %d", ev, l.used)
	}
	if !l.addOldest("d", 4, "d") || l.addOldest("e", 1, "e") {
		t.Fatal("addOldest ignores the cap")
	}
	if ev := l.add("f", 3, "f", nil); len(ev) != 1 || ev[0] != "d" {
		t.Fatalf("addOldest entry not evicted first: %v", ev)
	}
	if _, ok := l.remove("c"); !ok || l.used != 5 {
		t.Fatalf("remove: used %d", l.used)
	}
}

// TestRunCancelsFlights checks that a fetch in flight ends with Run.
func TestRunCancelsFlights(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done()
		return true
	})
	c, err := New(Config{OriginURL: o.srv.URL, CacheDir: t.TempDir(), OriginTimeout: time.Minute}, Deps{Log: quietLog()})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	<-c.scanned
	srv := httptest.NewServer(c)
	defer srv.Close()
	arrived := o.watch()
	got := make(chan int, 1)
	go func() {
		resp, err := http.Get(srv.URL + segPath)
		if err != nil {
			got <- 0
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	<-arrived // the fetch is in flight
	cancel()
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	select {
	case code := <-got:
		if code != http.StatusBadGateway {
			t.Fatalf("status %d", code)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the fetch outlived Run")
	}
}

// TestRefusalNotShared: an origin 403 answers one viewer's token; a waiter
// with another token fetches for itself.
func TestRefusalNotShared(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(1000, 21)
	o.put(segPath, body, origin.CacheImmutable)
	// The origin refuses the bad token once the good one's request has
	// joined the bad one's fetch.
	joined := make(chan struct{})
	var once sync.Once
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("token") != "good" {
			select {
			case <-joined:
			case <-r.Context().Done():
				return true
			}
			http.Error(w, "forbidden", http.StatusForbidden)
			return true
		}
		return false
	})
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) {
		d.onJoin = func() { once.Do(func() { close(joined) }) }
	})
	arrived := o.watch()
	bad := make(chan answer, 1)
	go func() { bad <- get(t, e.url+segPath+"?token=bad") }()
	<-arrived // the bad token's fetch is in flight
	good := get(t, e.url+segPath+"?token=good")
	wantBody(t, good, body)
	if b := <-bad; b.code != http.StatusForbidden || b.cache != "shoal; fwd=miss; fwd-status=403; detail=origin" {
		t.Fatalf("bad token: %d %q", b.code, b.cache)
	}
	if n := o.count("GET", segPath); n != 2 {
		t.Fatalf("origin saw %d GETs, want 2", n)
	}
}

func TestDiskFileVanished(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(50<<10, 22)
	o.put(segPath, body, origin.CacheImmutable)
	dir := t.TempDir()
	e := startCache(t, o.srv.URL, dir, func(c *Config, _ *Deps) { c.MemoryBytes = 64 << 10 }) // disk only
	get(t, e.url+segPath)
	e.idle(t)
	wantStatus(t, get(t, e.url+segPath), "shoal; hit")
	if err := errors.Join(os.RemoveAll(filepath.Join(dir, objectsDir)), os.RemoveAll(filepath.Join(dir, tmpDir))); err != nil {
		t.Fatal(err)
	}
	a := get(t, e.url+segPath)
	wantBody(t, a, body)
	wantStatus(t, a, "shoal; fwd=miss")
	if n := o.count("GET", segPath); n != 2 {
		t.Fatalf("origin saw %d GETs, want 2", n)
	}
	e.idle(t)
	wantStatus(t, get(t, e.url+segPath), "shoal; hit")
}

// TestDiskObjectCorrupt: a disk object altered while the edge was stopped
// fails its SHA-256 when it is first read back: it is dropped and fetched
// again, never served.
func TestDiskObjectCorrupt(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(50<<10, 23)
	o.put(segPath, body, origin.CacheImmutable)
	dir := t.TempDir()
	small := func(c *Config, _ *Deps) { c.MemoryBytes = 64 << 10 } // disk only
	e := startCache(t, o.srv.URL, dir, small)
	wantBody(t, get(t, e.url+segPath), body)
	e.idle(t)
	e.stop(t)
	files, _ := filepath.Glob(filepath.Join(dir, objectsDir, "*", "*"))
	if len(files) != 1 {
		t.Fatalf("disk files %v", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-100] ^= 0xff // one flipped byte, same size
	if err := os.WriteFile(files[0], b, 0o644); err != nil {
		t.Fatal(err)
	}
	e2 := startCache(t, o.srv.URL, dir, small)
	a := get(t, e2.url+segPath)
	wantBody(t, a, body)
	wantStatus(t, a, "shoal; fwd=miss")
	if s := e2.settled(t); s.CorruptObjects != 1 {
		t.Fatalf("corrupt objects %d", s.CorruptObjects)
	}
	e2.idle(t)
	wantBody(t, get(t, e2.url+segPath), body)
}

// TestStaleIfError: while the origin fails, a live playlist the edge held
// is served stale with Age (RFC 5861), the origin being retried once a
// second, not once per viewer; once the origin is back the edge follows it.
// Without a stale-if-error window the failure is a 502.
func TestStaleIfError(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	pl := []byte("#EXTM3U\n#EXTINF:2,\nseg-0.m4s\n")
	o.put(livePath, pl, origin.CacheLivePlaylist)
	clock := newFakeClock()
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { d.Now = clock.Now })
	never := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) { c.StaleIfError, d.Now = -1, clock.Now })
	wantStatus(t, get(t, e.url+livePath), "shoal; fwd=miss; stored")
	wantStatus(t, get(t, never.url+livePath), "shoal; fwd=miss; stored")
	clock.Advance(1100 * time.Millisecond) // the playlist's second of freshness is over

	var down atomic.Bool
	down.Store(true)
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if down.Load() {
			http.Error(w, "down", http.StatusServiceUnavailable)
			return true
		}
		return false
	})
	before := o.count("GET", livePath)
	start := clock.Now()
	a := get(t, e.url+livePath)
	if a.code != 200 || string(a.body) != string(pl) || a.cache != "shoal; fwd=stale; fwd-status=503; detail=stale-if-error" || a.hdr.Get("Age") == "" {
		t.Fatalf("origin down: %d %q Cache-Status %q Age %q", a.code, a.body, a.cache, a.hdr.Get("Age"))
	}
	for range 20 {
		a := get(t, e.url+livePath)
		if a.code != 200 || string(a.body) != string(pl) {
			t.Fatalf("origin down, again: %d %q", a.code, a.cache)
		}
	}
	// One origin attempt per staleRetry, whatever the number of viewers.
	if n, most := o.count("GET", livePath)-before, 1+int(clock.Now().Sub(start)/staleRetry)+1; n > most {
		t.Fatalf("21 viewer requests during the outage sent %d to the origin (at most %d in %s)", n, most, clock.Now().Sub(start))
	}
	if a := get(t, never.url+livePath); a.code != http.StatusBadGateway {
		t.Fatalf("without stale-if-error: %d %q", a.code, a.cache)
	}
	if s := e.c.Stats(); s.StaleServed == 0 {
		t.Fatal("no stale answer counted")
	}
	// The origin comes back with a new playlist.
	pl2 := []byte("#EXTM3U\n#EXTINF:2,\nseg-1.m4s\n")
	o.put(livePath, pl2, origin.CacheLivePlaylist)
	down.Store(false)
	clock.Advance(staleRetry + 100*time.Millisecond)
	if a := get(t, e.url+livePath); string(a.body) != string(pl2) || a.hdr.Get("Age") != "" {
		t.Fatalf("origin back: %q %q Age %q", a.body, a.cache, a.hdr.Get("Age"))
	}
}

// TestStaleWhileRevalidate: viewers of a live playlist that just expired
// get the last copy at once while one request revalidates it.
func TestStaleWhileRevalidate(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	pl := []byte("#EXTM3U\n#EXTINF:2,\nseg-0.m4s\n")
	o.put(livePath, pl, origin.CacheLivePlaylist)
	clock := newFakeClock()
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { d.Now = clock.Now })
	wantStatus(t, get(t, e.url+livePath), "shoal; fwd=miss; stored")
	clock.Advance(1100 * time.Millisecond)
	arrived, release := make(chan struct{}), make(chan struct{})
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		close(arrived) // the one revalidation
		<-release
		return false
	})
	first := make(chan answer, 1)
	go func() { first <- get(t, e.url+livePath) }()
	<-arrived
	a := get(t, e.url+livePath)
	if a.cache != "shoal; hit; detail=stale-while-revalidate" || string(a.body) != string(pl) {
		t.Fatalf("during revalidation: %q %q", a.cache, a.body)
	}
	close(release)
	if b := <-first; b.code != 200 || string(b.body) != string(pl) {
		t.Fatalf("revalidating request: %d %q", b.code, b.cache)
	}
}

// TestInvalidate: a deleted id is answered 404 at once, from memory and
// disk alike, and never fetched again; an id whose policy became signed is
// refused without a token even for objects cached as public.
func TestInvalidate(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	seg := segment(50<<10, 31)
	other := "/hls/xyz/source/seg-0.m4s"
	o.put(segPath, seg, origin.CacheImmutable)
	o.put(livePath, []byte("#EXTM3U\n"), origin.CacheLivePlaylist)
	o.put(other, seg, origin.CacheImmutable)
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		d.Access = func(r *http.Request, id string, signed bool) (string, int) {
			if signed && r.URL.Query().Get("token") != "ok" {
				return "", http.StatusForbidden
			}
			return "", 0
		}
	})
	for _, p := range []string{segPath, livePath, other} {
		get(t, e.url+p)
	}
	e.idle(t)
	wantStatus(t, get(t, e.url+segPath), "shoal; hit")
	wantStatus(t, get(t, e.url+other), "shoal; hit")

	e.c.Invalidate([]Invalidation{{ID: "xyz", Signed: true}})
	if a := get(t, e.url+other); a.code != http.StatusForbidden {
		t.Fatalf("re-policied id without a token: %d %q", a.code, a.cache)
	}
	if a := get(t, e.url+other+"?token=ok"); a.code != 200 || string(a.body) != string(seg) {
		t.Fatalf("re-policied id with a token: %d", a.code)
	}
	before := o.count("GET", segPath)
	e.c.Invalidate([]Invalidation{{ID: "abc", Deleted: true}})
	for _, p := range []string{segPath, livePath} {
		if a := get(t, e.url+p); a.code != http.StatusNotFound {
			t.Fatalf("deleted id %s: %d %q", p, a.code, a.cache)
		}
	}
	if n := o.count("GET", segPath); n != before {
		t.Fatalf("a deleted id was fetched again (%d GETs)", n-before)
	}
	if e.c.mem.peek(segPath) != nil || e.c.disk.get(segPath) != nil || e.c.mem.peek(livePath) != nil {
		t.Fatal("the deleted id's objects are still cached")
	}
}

// TestSpoolLargeBodies: with the memory held by misses at its cap, a large
// segment is spooled to disk while several viewers are streamed from the
// file; all get the right bytes, and the object lands in the disk tier.
func TestSpoolLargeBodies(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(3<<20, 41)
	o.put(segPath, body, origin.CacheImmutable)
	// The origin answers once the other three viewers have joined the
	// first one's fetch.
	joined := make(chan struct{}, 8)
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		for range 3 {
			<-joined
		}
		return false
	})
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.MaxInFlightBytes = 1 << 20
		c.MemoryBytes = 8 << 20 // the segment is disk only
		d.onJoin = func() { joined <- struct{}{} }
	})
	var wg sync.WaitGroup
	answers := make([]answer, 4)
	for i := range answers {
		wg.Go(func() { answers[i] = get(t, e.url+segPath) })
	}
	wg.Wait()
	for _, a := range answers {
		wantBody(t, a, body)
	}
	e.idle(t)
	if s := e.settled(t); s.Spooled != 1 {
		t.Fatalf("spooled %d bodies, want 1", s.Spooled)
	}
	if n := o.count("GET", segPath); n != 1 {
		t.Fatalf("origin saw %d GETs, want 1", n)
	}
	a := get(t, e.url+segPath)
	wantBody(t, a, body)
	wantStatus(t, a, "shoal; hit")
}

// When no spool file can be made (a full or failing disk), a large body
// is held in memory past MaxInFlightBytes: its viewer gets all of it, not
// a 200 cut off, and it is cached.
func TestSpoolFileFailureHoldsInMemory(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(3<<20, 43)
	o.put(segPath, body, origin.CacheImmutable)
	dir := t.TempDir()
	e := startCache(t, o.srv.URL, dir, func(c *Config, d *Deps) {
		c.MaxInFlightBytes = 1 << 20 // a 3 MiB body is spooled
	})
	// The disk becomes unusable: nothing can be created under tmp/.
	tmp := filepath.Join(dir, tmpDir)
	if err := os.RemoveAll(tmp); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(tmp, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	resp, err := http.Get(e.url + segPath)
	if err != nil {
		t.Fatalf("with no spool file: %v", err)
	}
	got, rerr := io.ReadAll(resp.Body)
	resp.Body.Close()
	if rerr != nil || resp.StatusCode != http.StatusOK || !bytes.Equal(got, body) {
		t.Fatalf("with no spool file: status %d, %d of %d bytes, read error %v (Cache-Status %q)",
			resp.StatusCode, len(got), len(body), rerr, resp.Header.Get("Cache-Status"))
	}
	e.idle(t)
	a := get(t, e.url+segPath)
	wantBody(t, a, body)
	wantStatus(t, a, "shoal; hit")
	if n := o.count(http.MethodGet, segPath); n != 1 {
		t.Fatalf("origin saw %d GETs, want 1", n)
	}
	if s := e.settled(t); s.SpoolFailures != 1 || s.Spooled != 0 {
		t.Fatalf("stats: %d spool failures, %d spooled; want 1 and 0", s.SpoolFailures, s.Spooled)
	}
}

// failingSpool is a spool file whose writes fail past at bytes (a disk
// that fills up); failed is closed at the first failure.
type failingSpool struct {
	*os.File
	at     int64
	once   sync.Once
	failed chan struct{}
}

func (s *failingSpool) WriteAt(p []byte, off int64) (int, error) {
	if off+int64(len(p)) <= s.at {
		return s.File.WriteAt(p, off)
	}
	s.once.Do(func() { close(s.failed) })
	n, _ := s.File.WriteAt(p[:max(0, s.at-off)], off)
	return n, errors.New("write: no space left on device")
}

// When a spool write fails part-way, the fetch goes on in memory with
// what was written: the viewers that were streamed from the spool file get
// the whole body, and it is cached.
func TestSpoolWriteFailureGoesOnInMemory(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	body := segment(3<<20, 44)
	const half = 3 << 19
	spool := &failingSpool{at: 1 << 20, failed: make(chan struct{})}
	// The origin sends half of the body once every viewer has joined the
	// first one's fetch, and the rest once the spool has failed.
	joined := make(chan struct{}, 8)
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.Method != http.MethodGet {
			return false
		}
		for range 3 {
			<-joined
		}
		h := w.Header()
		h.Set("Content-Type", "video/iso.segment")
		h.Set("Cache-Control", origin.CacheImmutable)
		h.Set("Content-Length", strconv.Itoa(len(body)))
		w.Write(body[:half])
		http.NewResponseController(w).Flush()
		select {
		case <-spool.failed:
		case <-r.Context().Done():
			return true
		}
		w.Write(body[half:])
		return true
	})
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, d *Deps) {
		c.MaxInFlightBytes = 1 << 20
		d.onJoin = func() { joined <- struct{}{} }
		d.spool = func() (spooler, error) {
			f, err := os.CreateTemp(c.CacheDir, "spool-*")
			spool.File = f
			return spool, err
		}
	})
	client := waitersClient(t, 4)
	var chs []<-chan answerOrErr
	for range 4 {
		chs = append(chs, getAsync(client, e.url+segPath))
	}
	for _, a := range collect(t, chs) {
		wantBody(t, a, body)
	}
	e.idle(t)
	a := get(t, e.url+segPath)
	wantBody(t, a, body)
	wantStatus(t, a, "shoal; hit")
	if n := o.count(http.MethodGet, segPath); n != 1 {
		t.Fatalf("origin saw %d GETs, want 1", n)
	}
	if s := e.settled(t); s.SpoolFailures != 1 || s.Spooled != 1 {
		t.Fatalf("stats: %d spool failures, %d spooled; want 1 and 1", s.SpoolFailures, s.Spooled)
	}
}

// Stats carries the MaxStatsStreams streams that served the most (a
// heartbeat stays small however many streams an edge saw), and the total.
func TestStatsTopStreams(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	c := startCache(t, o.srv.URL, t.TempDir(), nil).c
	var total int64
	for i := range 3 * MaxStatsStreams {
		st := c.stream(fmt.Sprintf("s%05d", i))
		st.served.Store(int64(i))
		total += int64(i)
	}
	c.served.Store(total)
	s := c.Stats()
	if len(s.BytesServed) != MaxStatsStreams || s.TotalBytesServed != total {
		t.Fatalf("%d streams, total %d", len(s.BytesServed), s.TotalBytesServed)
	}
	for id, n := range s.BytesServed {
		if n < int64(2*MaxStatsStreams) {
			t.Fatalf("%s (%d bytes) is not among the top", id, n)
		}
	}
}
