package edgecache

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/packager/origin"

	"github.com/shoal-video/shoal/internal/hlspath"
)

// fakeFile is one object of the fake origin.
type fakeFile struct {
	body   []byte
	cc     string
	ctype  string
	signed bool
}

// seen is one request the fake origin received.
type seen struct {
	method, path, token, edge, inm string
	query                          string // the raw query
}

// fakeOrigin serves files like the real origin, plus the digest header the
// edge verifies sibling bytes with.
type fakeOrigin struct {
	srv *httptest.Server

	mu    sync.Mutex
	files map[string]fakeFile
	reqs  []seen
	// hook, when set, may answer a request itself (return true).
	hook func(w http.ResponseWriter, r *http.Request) bool

	// Blocking mode (LL-HLS, the origin contract): live holds the
	// playlists that answer blocking reloads, hinted the parts whose
	// requests wait until they are put. changed is closed and replaced at
	// each put and publish, expire by expireWaits; arrived, when set, gets
	// every request as it comes in.
	live    map[string]liveState
	hinted  map[string]bool
	changed chan struct{}
	expire  chan struct{}
	arrived chan seen
}

// liveState is the version of a live playlist the fake origin serves: it
// lists part `part` of segment `msn` last (segments before msn are whole).
type liveState struct {
	msn, part int
	body      []byte
	signed    bool
}

func newFakeOrigin(t *testing.T) *fakeOrigin {
	t.Helper()
	o := &fakeOrigin{files: map[string]fakeFile{}, live: map[string]liveState{}, hinted: map[string]bool{},
		changed: make(chan struct{}), expire: make(chan struct{})}
	o.srv = httptest.NewServer(http.HandlerFunc(o.serve))
	t.Cleanup(o.srv.Close)
	return o
}

func (o *fakeOrigin) put(path string, body []byte, cc string) {
	ctype := "video/iso.segment"
	if strings.HasSuffix(path, ".m3u8") {
		ctype = "application/vnd.apple.mpegurl"
	}
	o.mu.Lock()
	o.files[path] = fakeFile{body: body, cc: cc, ctype: ctype}
	o.broadcast()
	o.mu.Unlock()
}

// broadcast wakes the requests waiting for a change; o.mu is held.
func (o *fakeOrigin) broadcast() {
	close(o.changed)
	o.changed = make(chan struct{})
}

// publish makes body the current version of the live playlist at path,
// listing part `part` of segment `msn` last; blocking reloads it satisfies
// are answered.
func (o *fakeOrigin) publish(path string, msn, part int, body []byte, signed bool) {
	o.mu.Lock()
	o.live[path] = liveState{msn: msn, part: part, body: body, signed: signed}
	o.broadcast()
	o.mu.Unlock()
}

// hint makes requests for the part at path wait until it is put; unhint
// answers them 404 (the hint moved on without it).
func (o *fakeOrigin) hint(path string) {
	o.mu.Lock()
	o.hinted[path] = true
	o.mu.Unlock()
}

func (o *fakeOrigin) unhint(path string) {
	o.mu.Lock()
	delete(o.hinted, path)
	o.broadcast()
	o.mu.Unlock()
}

// expireWaits answers 503 to the blocking reloads waiting now, as the
// origin does after three target durations.
func (o *fakeOrigin) expireWaits() {
	o.mu.Lock()
	close(o.expire)
	o.expire = make(chan struct{})
	o.mu.Unlock()
}

// watch returns a channel that gets every request the origin receives from
// now on (buffered: a test reads what it waits for).
func (o *fakeOrigin) watch() <-chan seen {
	ch := make(chan seen, 1024)
	o.mu.Lock()
	o.arrived = ch
	o.mu.Unlock()
	return ch
}

// blockingCC is the Cache-Control of a blocking reload's answer: three
// target durations of 2 s.
const blockingCC = "public, max-age=6"

// serveLive answers a request for a live playlist in blocking mode, as the
// origin contract says.
func (o *fakeOrigin) serveLive(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	msn, part := -1, -1
	if v, ok := q["_HLS_msn"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 0 {
			noStoreError(w, http.StatusBadRequest)
			return
		}
		msn = n
	}
	if v, ok := q["_HLS_part"]; ok {
		n, err := strconv.Atoi(v[0])
		if err != nil || n < 0 || msn < 0 {
			noStoreError(w, http.StatusBadRequest)
			return
		}
		part = n
	}
	for {
		o.mu.Lock()
		st := o.live[r.URL.Path]
		changed, expire := o.changed, o.expire
		o.mu.Unlock()
		switch {
		case msn < 0:
			o.writeLive(w, r, st, origin.CacheLivePlaylist)
			return
		case msn > st.msn+1: // more than two past the last whole segment
			noStoreError(w, http.StatusBadRequest)
			return
		case st.msn > msn || (part >= 0 && st.msn == msn && st.part >= part):
			o.writeLive(w, r, st, blockingCC)
			return
		}
		select {
		case <-changed:
		case <-expire:
			noStoreError(w, http.StatusServiceUnavailable)
			return
		case <-r.Context().Done():
			return
		}
	}
}

func (o *fakeOrigin) writeLive(w http.ResponseWriter, r *http.Request, st liveState, cc string) {
	sum := sha256.Sum256(st.body)
	h := w.Header()
	h.Set("Content-Type", "application/vnd.apple.mpegurl")
	h.Set("Cache-Control", cc)
	h.Set("ETag", `"`+hex.EncodeToString(sum[:])+`"`)
	if st.signed {
		h.Set(HeaderPolicy, "signed")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(st.body))
}

func noStoreError(w http.ResponseWriter, code int) {
	w.Header().Set("Cache-Control", "no-store")
	http.Error(w, http.StatusText(code), code)
}

// waitPart waits until the hinted part at path is put (true) or is no
// longer hinted (false).
func (o *fakeOrigin) waitPart(r *http.Request) (fakeFile, bool) {
	for {
		o.mu.Lock()
		f, ok := o.files[r.URL.Path]
		hinted := o.hinted[r.URL.Path]
		changed := o.changed
		o.mu.Unlock()
		if ok || !hinted {
			return f, ok
		}
		select {
		case <-changed:
		case <-r.Context().Done():
			return fakeFile{}, false
		}
	}
}

func (o *fakeOrigin) putSigned(path string, body []byte, cc string) {
	o.put(path, body, cc)
	o.mu.Lock()
	f := o.files[path]
	f.signed = true
	o.files[path] = f
	o.mu.Unlock()
}

func (o *fakeOrigin) setHook(h func(w http.ResponseWriter, r *http.Request) bool) {
	o.mu.Lock()
	o.hook = h
	o.mu.Unlock()
}

func (o *fakeOrigin) serve(w http.ResponseWriter, r *http.Request) {
	o.mu.Lock()
	s := seen{r.Method, r.URL.Path, r.URL.Query().Get("token"), r.Header.Get(HeaderEdge), r.Header.Get("If-None-Match"), r.URL.RawQuery}
	o.reqs = append(o.reqs, s)
	f, ok := o.files[r.URL.Path]
	_, live := o.live[r.URL.Path]
	hinted := o.hinted[r.URL.Path]
	hook, arrived := o.hook, o.arrived
	o.mu.Unlock()
	if arrived != nil {
		arrived <- s
	}
	if hook != nil && hook(w, r) {
		return
	}
	if live {
		o.serveLive(w, r)
		return
	}
	if !ok && hinted {
		f, ok = o.waitPart(r)
	}
	if !ok {
		if hlspath.IsPart(r.URL.Path) {
			// A part that does not exist (yet): no-store, as the origin says.
			noStoreError(w, http.StatusNotFound)
			return
		}
		http.Error(w, "not found", http.StatusNotFound)
		return
	}
	sum := sha256.Sum256(f.body)
	etag := `"` + hex.EncodeToString(sum[:12]) + `"`
	h := w.Header()
	h.Set("Content-Type", f.ctype)
	h.Set("Cache-Control", f.cc)
	h.Set("ETag", etag)
	h.Set(HeaderDigest, hex.EncodeToString(sum[:]))
	if f.signed {
		h.Set(HeaderPolicy, "signed")
	}
	http.ServeContent(w, r, "", time.Time{}, bytes.NewReader(f.body))
}

// countQuery returns how many GETs the origin saw for path with the raw
// query q.
func (o *fakeOrigin) countQuery(path, q string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, s := range o.reqs {
		if s.method == http.MethodGet && s.path == path && s.query == q {
			n++
		}
	}
	return n
}

// count returns how many requests of method the origin saw for path.
func (o *fakeOrigin) count(method, path string) int {
	o.mu.Lock()
	defer o.mu.Unlock()
	n := 0
	for _, s := range o.reqs {
		if s.method == method && s.path == path {
			n++
		}
	}
	return n
}

func (o *fakeOrigin) requests() []seen {
	o.mu.Lock()
	defer o.mu.Unlock()
	return append([]seen(nil), o.reqs...)
}

// edge is a running Cache behind a test server.
type edge struct {
	c   *Cache
	srv *httptest.Server
	url string
	// answered gets a signal (coalesced) each time the Cache's ServeHTTP
	// has returned: its counters are up to date.
	answered chan struct{}
}

// startCache runs a Cache (Run until the test ends) behind an httptest
// server. mut adjusts the config and deps; the server URL is in cfg.Self.
func quietLog() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func startCache(t *testing.T, originURL, dir string, mut func(*Config, *Deps)) *edge {
	t.Helper()
	e := &edge{answered: make(chan struct{}, 1)}
	var ready sync.WaitGroup
	ready.Add(1)
	e.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		ready.Wait()
		e.c.ServeHTTP(w, r)
		select {
		case e.answered <- struct{}{}:
		default:
		}
	}))
	t.Cleanup(e.srv.Close)
	e.url = e.srv.URL
	cfg := Config{OriginURL: originURL, CacheDir: dir, Self: e.url, OriginTimeout: 2 * time.Second}
	deps := Deps{Log: quietLog()}
	if mut != nil {
		mut(&cfg, &deps)
	}
	c, err := New(cfg, deps)
	if err != nil {
		t.Fatal(err)
	}
	e.c = c
	ready.Done()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- c.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	select {
	case <-c.scanned:
	case <-time.After(5 * time.Second):
		t.Fatal("disk scan did not finish")
	}
	return e
}

// idle waits until no fetch is in flight (answers may be complete before
// their fetch has stored the object): it waits for each fetch in the flight
// table to be done (done is closed once the fetch has left the table) until
// the table is empty.
func (e *edge) idle(t *testing.T) {
	t.Helper()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		e.c.flightMu.Lock()
		var done []chan struct{}
		for _, f := range e.c.flights {
			done = append(done, f.done)
		}
		e.c.flightMu.Unlock()
		if len(done) == 0 {
			return
		}
		for _, d := range done {
			select {
			case <-d:
			case <-timeout.C:
				t.Fatal("fetches still in flight")
			}
		}
	}
}

// settled returns the cache's stats once no request is in flight: a client
// can read a whole body before the handler has returned and counted it.
func (e *edge) settled(t *testing.T) Stats {
	t.Helper()
	timeout := time.NewTimer(5 * time.Second)
	defer timeout.Stop()
	for {
		s := e.c.Stats()
		if s.Connections == 0 {
			return s
		}
		select {
		case <-e.answered:
		case <-timeout.C:
			t.Fatalf("%d requests still in flight", s.Connections)
		}
	}
}

// stop waits for the fetches in flight and ends a cache's server (its Run
// ends with the test).
func (e *edge) stop(t *testing.T) {
	e.idle(t)
	e.srv.Close()
}

type answer struct {
	code  int
	body  []byte
	hdr   http.Header
	cache string
}

func do(t *testing.T, method, url string, hdr map[string]string) answer {
	t.Helper()
	req, err := http.NewRequest(method, url, nil)
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: reading body: %v", method, url, err)
	}
	return answer{resp.StatusCode, b, resp.Header, resp.Header.Get("Cache-Status")}
}

func get(t *testing.T, url string) answer { t.Helper(); return do(t, http.MethodGet, url, nil) }

// segment returns n deterministic bytes.
func segment(n int, seed byte) []byte {
	b := make([]byte, n)
	for i := range b {
		b[i] = byte(i*7) + seed
	}
	return b
}

func wantBody(t *testing.T, a answer, want []byte) {
	t.Helper()
	if a.code != http.StatusOK {
		t.Fatalf("status %d (%s), want 200: %s", a.code, a.cache, a.body)
	}
	if !bytes.Equal(a.body, want) {
		t.Fatalf("body of %d bytes differs from the %d expected", len(a.body), len(want))
	}
}

func wantStatus(t *testing.T, a answer, prefix string) {
	t.Helper()
	if !strings.HasPrefix(a.cache, prefix) {
		t.Fatalf("Cache-Status %q, want %q...", a.cache, prefix)
	}
}

const (
	segPath  = "/hls/abc/source/seg-0.m4s"
	livePath = "/hls/abc/source/index.m3u8"
)

var _ = origin.CacheImmutable

// fakeClock is a clock tests move by hand (Deps.Now).
type fakeClock struct{ ns atomic.Int64 }

func newFakeClock() *fakeClock {
	c := &fakeClock{}
	c.ns.Store(time.Date(2026, 12, 4, 12, 0, 0, 0, time.UTC).UnixNano())
	return c
}

func (c *fakeClock) Now() time.Time { return time.Unix(0, c.ns.Load()) }

func (c *fakeClock) Advance(d time.Duration) { c.ns.Add(int64(d)) }
