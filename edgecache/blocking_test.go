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

// llPlaylist is a live LL-HLS playlist (as in the origin contract) whose
// last part is part `part` of segment `msn`, with a preload hint for the
// next part.
func llPlaylist(msn, part int) []byte {
	var b strings.Builder
	b.WriteString("#EXTM3U\n#EXT-X-VERSION:9\n#EXT-X-TARGETDURATION:2\n")
	b.WriteString("#EXT-X-SERVER-CONTROL:CAN-BLOCK-RELOAD=YES,PART-HOLD-BACK=1.5\n#EXT-X-PART-INF:PART-TARGET=0.5\n")
	fmt.Fprintf(&b, "#EXT-X-MEDIA-SEQUENCE:%d\n#EXT-X-MAP:URI=\"init-s1-0-0.mp4\"\n", msn-2)
	for s := msn - 2; s < msn; s++ {
		for p := 0; p < 4; p++ {
			fmt.Fprintf(&b, "#EXT-X-PART:DURATION=0.50000,URI=\"s1-0-%d-p%d.m4s\"\n", s, p)
		}
		fmt.Fprintf(&b, "#EXTINF:2.000,\ns1-0-%d.m4s\n", s)
	}
	for p := 0; p <= part; p++ {
		fmt.Fprintf(&b, "#EXT-X-PART:DURATION=0.50000,URI=\"s1-0-%d-p%d.m4s\"\n", msn, p)
	}
	fmt.Fprintf(&b, "#EXT-X-PRELOAD-HINT:TYPE=PART,URI=\"s1-0-%d-p%d.m4s\"\n", msn, part+1)
	fmt.Fprintf(&b, "#EXT-X-RENDITION-REPORT:URI=\"../720p/index.m3u8\",LAST-MSN=%d,LAST-PART=%d\n", msn, part)
	return []byte(b.String())
}

// waitersClient is a client that keeps n connections to a host.
func waitersClient(t *testing.T, n int) *http.Client {
	tr := &http.Transport{MaxIdleConnsPerHost: n}
	t.Cleanup(tr.CloseIdleConnections)
	return &http.Client{Transport: tr}
}

// getAsync sends a GET and returns the channel its answer (or error) comes on.
func getAsync(client *http.Client, url string) <-chan answerOrErr {
	ch := make(chan answerOrErr, 1)
	go func() {
		resp, err := client.Get(url)
		if err != nil {
			ch <- answerOrErr{err: err}
			return
		}
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		ch <- answerOrErr{answer{resp.StatusCode, b, resp.Header, resp.Header.Get("Cache-Status")}, err}
	}()
	return ch
}

type answerOrErr struct {
	answer
	err error
}

// waitTimeout bounds every wait of these tests: reaching it is a failure.
const waitTimeout = 10 * time.Second

// collect waits for every answer.
func collect(t *testing.T, chs []<-chan answerOrErr) []answer {
	t.Helper()
	out := make([]answer, len(chs))
	for i, ch := range chs {
		select {
		case a := <-ch:
			if a.err != nil {
				t.Fatalf("waiter %d: %v", i, a.err)
			}
			out[i] = a.answer
		case <-time.After(waitTimeout):
			t.Fatalf("waiter %d not answered", i)
		}
	}
	return out
}

// noneAnswered fails if any of chs has an answer now.
func noneAnswered(t *testing.T, chs []<-chan answerOrErr) {
	t.Helper()
	for i, ch := range chs {
		select {
		case a := <-ch:
			t.Fatalf("waiter %d answered early: %d %q %v", i, a.code, a.cache, a.err)
		default:
		}
	}
}

// waitEvents waits for n events on ch.
func waitEvents[T any](t *testing.T, ch <-chan T, n int, what string) []T {
	t.Helper()
	var got []T
	for len(got) < n {
		select {
		case v := <-ch:
			got = append(got, v)
		case <-time.After(waitTimeout):
			t.Fatalf("%d of %d %s", len(got), n, what)
		}
	}
	return got
}

// settle waits for the fetches in flight now to end (and store what they
// store).
func (e *edge) settle(t *testing.T) {
	t.Helper()
	e.c.flightMu.Lock()
	var fs []*fetch
	for _, f := range e.c.flights {
		fs = append(fs, f)
	}
	e.c.flightMu.Unlock()
	for _, f := range fs {
		select {
		case <-f.done:
		case <-time.After(waitTimeout):
			t.Fatalf("fetch of %s not done", f.key)
		}
	}
}

// joinCounter is a Deps.onJoin that reports each join on the returned
// channel.
func joinCounter(d *Deps) <-chan struct{} {
	ch := make(chan struct{}, 256)
	d.onJoin = func() { ch <- struct{}{} }
	return ch
}

// TestBlockingReloadCoalesces: 50 viewers waiting for the same (msn, part)
// of a playlist, spelled in different ways, share one upstream request,
// held by the origin until the part is there, and are all answered from it
// as soon as it is; the answer is then a hit, and plain requests are keyed
// and fetched as before.
func TestBlockingReloadCoalesces(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.publish(livePath, 11, 0, llPlaylist(11, 0), false)
	arrived := o.watch()
	var joined <-chan struct{}
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { joined = joinCounter(d) })
	client := waitersClient(t, 64)

	const n = 50
	chs := make([]<-chan answerOrErr, n)
	for i := range chs {
		q := "?_HLS_msn=11&_HLS_part=1"
		if i%2 == 1 {
			// The same key: leading zeros, another order, ignored parameters.
			q = "?_HLS_part=01&x=y&_HLS_msn=0011"
		}
		chs[i] = getAsync(client, e.url+livePath+q)
	}
	up := waitEvents(t, arrived, 1, "upstream requests")[0]
	if up.path != livePath || up.query != "_HLS_msn=11&_HLS_part=1" || up.edge != "1" {
		t.Fatalf("upstream request %+v, want %s?_HLS_msn=11&_HLS_part=1 with Shoal-Edge: 1", up, livePath)
	}
	waitEvents(t, joined, n-1, "waiters joined the fetch")
	// The origin holds the request: nobody is answered before the part.
	noneAnswered(t, chs)

	want := llPlaylist(11, 1)
	o.publish(livePath, 11, 1, want, false)
	leaders, collapsed := 0, 0
	for i, a := range collect(t, chs) {
		if a.code != http.StatusOK || string(a.body) != string(want) {
			t.Fatalf("waiter %d: %d %q", i, a.code, a.body)
		}
		if cc := a.hdr.Get("Cache-Control"); cc != blockingCC {
			t.Fatalf("waiter %d: Cache-Control %q, want the origin's %q", i, cc, blockingCC)
		}
		switch a.cache {
		case "shoal; fwd=miss; stored; detail=origin":
			leaders++
		case "shoal; fwd=miss; collapsed":
			collapsed++
		default:
			t.Fatalf("waiter %d: Cache-Status %q", i, a.cache)
		}
	}
	if leaders != 1 || collapsed != n-1 {
		t.Fatalf("%d leaders and %d collapsed, want 1 and %d", leaders, collapsed, n-1)
	}
	if got := o.count(http.MethodGet, livePath); got != 1 {
		t.Fatalf("origin saw %d GETs for %d waiters, want 1", got, n)
	}
	e.settle(t)

	// Within the origin's max-age the same (msn, part) is a hit.
	a := get(t, e.url+livePath+"?_HLS_part=1&_HLS_msn=11")
	if a.cache != "shoal; hit" || string(a.body) != string(want) {
		t.Fatalf("blocking reload again: %q %q", a.cache, a.body)
	}
	if got := o.count(http.MethodGet, livePath); got != 1 {
		t.Fatalf("a hit went upstream: %d GETs", got)
	}

	// A plain request is another key, fetched without the parameters and
	// kept for the playlist's second; ignored parameters are the same key.
	o.publish(livePath, 11, 2, llPlaylist(11, 2), false)
	a = get(t, e.url+livePath)
	if a.cache != "shoal; fwd=miss; stored; detail=origin" || string(a.body) != string(llPlaylist(11, 2)) {
		t.Fatalf("plain playlist: %q %q", a.cache, a.body)
	}
	if up := waitEvents(t, arrived, 1, "plain upstream requests")[0]; up.query != "" {
		t.Fatalf("plain upstream request with query %q", up.query)
	}
	e.settle(t)
	if a = get(t, e.url+livePath+"?x=1"); a.cache != "shoal; hit" {
		t.Fatalf("plain playlist again: %q", a.cache)
	}
	if got := o.count(http.MethodGet, livePath); got != 2 {
		t.Fatalf("origin saw %d GETs, want 2", got)
	}
}

// TestBlockingReloadPerPart: waiters for different parts (and for a whole
// segment) cause one upstream request per key, each answered when its
// part appears and not before.
func TestBlockingReloadPerPart(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.publish(livePath, 11, 0, llPlaylist(11, 0), false)
	arrived := o.watch()
	var joined <-chan struct{}
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { joined = joinCounter(d) })
	client := waitersClient(t, 32)

	queries := []string{"_HLS_msn=11&_HLS_part=1", "_HLS_msn=11&_HLS_part=3", "_HLS_msn=12"}
	const per = 5
	groups := make([][]<-chan answerOrErr, len(queries))
	for g, q := range queries {
		for range per {
			groups[g] = append(groups[g], getAsync(client, e.url+livePath+"?"+q))
		}
	}
	ups := waitEvents(t, arrived, len(queries), "upstream requests")
	waitEvents(t, joined, len(queries)*(per-1), "waiters joined")
	seenQ := map[string]bool{}
	for _, u := range ups {
		seenQ[u.query] = true
	}
	for _, q := range queries {
		if !seenQ[q] {
			t.Fatalf("no upstream request with %q among %+v", q, ups)
		}
	}
	for _, g := range groups {
		noneAnswered(t, g)
	}

	steps := []struct{ msn, part int }{{11, 1}, {11, 3}, {13, 0}}
	for i, s := range steps {
		body := llPlaylist(s.msn, s.part)
		o.publish(livePath, s.msn, s.part, body, false)
		for _, a := range collect(t, groups[i]) {
			if a.code != http.StatusOK || string(a.body) != string(body) {
				t.Fatalf("%s: %d %q", queries[i], a.code, a.body)
			}
		}
		for _, g := range groups[i+1:] {
			noneAnswered(t, g)
		}
	}
	for _, q := range queries {
		if got := o.countQuery(livePath, q); got != 1 {
			t.Fatalf("origin saw %d GETs with %q, want 1", got, q)
		}
	}
}

// TestBlockingReloadBadParams: malformed parameters are answered 400 by
// the edge, never sent upstream; parameters on other paths are ignored.
func TestBlockingReloadBadParams(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.publish(livePath, 11, 0, llPlaylist(11, 0), false)
	e := startCache(t, o.srv.URL, t.TempDir(), nil)
	const manifest = "/hls/abc/source/manifest.txt"
	bad := []string{
		livePath + "?_HLS_msn=abc",
		livePath + "?_HLS_msn=-1",
		livePath + "?_HLS_msn=+1",
		livePath + "?_HLS_msn=",
		livePath + "?_HLS_msn",
		livePath + "?_HLS_msn=12345678901",
		livePath + "?_HLS_msn=1.5",
		livePath + "?_HLS_msn=1%200",
		livePath + "?_HLS_part=1",
		livePath + "?_HLS_msn=1&_HLS_msn=2",
		livePath + "?_HLS_msn=1&_HLS_part=x",
		livePath + "?_HLS_msn=1&_HLS_part=1&_HLS_part=1",
		livePath + "?%5FHLS_msn=x",
		manifest + "?_HLS_msn=0x10",
		manifest + "?_HLS_part=0",
	}
	for _, u := range bad {
		a := get(t, e.url+u)
		if a.code != http.StatusBadRequest || a.cache != "shoal" || a.hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("%s: %d %q %q, want 400 from the edge, no-store", u, a.code, a.cache, a.hdr.Get("Cache-Control"))
		}
	}
	if reqs := o.requests(); len(reqs) != 0 {
		t.Fatalf("bad parameters went upstream: %+v", reqs)
	}

	// Only rendition playlists and manifests block: elsewhere the
	// parameters are ignored like any other.
	o.put("/hls/abc/master.m3u8", []byte("#EXTM3U\n"), origin.CacheMaster)
	o.put(segPath, segment(100, 1), origin.CacheImmutable)
	wantBody(t, get(t, e.url+"/hls/abc/master.m3u8?_HLS_msn=x"), []byte("#EXTM3U\n"))
	wantBody(t, get(t, e.url+segPath+"?_HLS_msn=1&_HLS_part=x"), segment(100, 1))
	for _, s := range o.requests() {
		if s.query != "" {
			t.Fatalf("ignored parameters went upstream: %+v", s)
		}
	}
}

func TestBlockingKey(t *testing.T) {
	t.Parallel()
	const p = "/hls/abc/source/index.m3u8"
	cases := []struct {
		path, q, key string
		ok           bool
	}{
		{p, "", p, true},
		{p, "token=t", p, true},
		{p, "_HLS_skip=YES", p + "?_HLS_skip=YES", true},
		{p, "_HLS_skip=v2&_HLS_msn=4", p + "?_HLS_msn=4&_HLS_skip=v2", true},
		{p, "_HLS_skip=NO", "", false},
		{p, "_HLS_skip=YES&_HLS_skip=YES", "", false},
		{p, "_HLS_msn=7", p + "?_HLS_msn=7", true},
		{p, "_HLS_msn=007&token=t", p + "?_HLS_msn=7", true},
		{p, "_HLS_part=0&_HLS_msn=0", p + "?_HLS_msn=0&_HLS_part=0", true},
		{p, "_HLS_msn=9999999999&_HLS_part=9999999999", p + "?_HLS_msn=9999999999&_HLS_part=9999999999", true},
		{p, "%5FHLS_msn=3", p + "?_HLS_msn=3", true},
		{p, "_HLS_msn=10000000000", "", false},
		{p, "_HLS_msn=%31", "", false},
		{p, "_HLS_part=1", "", false},
		{p, "_HLS_msn=1&_HLS_msn=1", "", false},
		{"/hls/abc/source/manifest.txt", "_HLS_msn=5&_HLS_part=2", "/hls/abc/source/manifest.txt?_HLS_msn=5&_HLS_part=2", true},
		{"/hls/abc/master.m3u8", "_HLS_msn=x", "/hls/abc/master.m3u8", true},
		{"/hls/abc/source/seg-1.m4s", "_HLS_msn=x", "/hls/abc/source/seg-1.m4s", true},
	}
	for _, tc := range cases {
		key, ok := blockingKey(tc.path, tc.q)
		if key != tc.key || ok != tc.ok {
			t.Errorf("blockingKey(%q, %q) = %q, %v; want %q, %v", tc.path, tc.q, key, ok, tc.key, tc.ok)
		}
	}
}

func FuzzBlockingKey(f *testing.F) {
	for _, q := range []string{"", "_HLS_msn=1", "_HLS_msn=01&_HLS_part=2&token=x", "_HLS_part=1", "%5FHLS_msn=%", "_HLS_msn=1&_HLS_msn=2&"} {
		f.Add(q)
	}
	const p = "/hls/abc/source/index.m3u8"
	f.Fuzz(func(t *testing.T, q string) {
		key, ok := blockingKey(p, q)
		if !ok {
			return
		}
		if key == p {
			return
		}
		rest, found := strings.CutPrefix(key, p+"?_HLS_msn=")
		if !found {
			t.Fatalf("key %q for %q", key, q)
		}
		values := strings.Split(rest, "&_HLS_part=")
		if len(values) > 2 {
			t.Fatalf("key %q for %q", key, q)
		}
		for _, v := range values {
			if n, ok := blockingNumber(v); !ok || n != v {
				t.Fatalf("key %q for %q: value %q not normalized", key, q, v)
			}
		}
		// The key's own query gives the key back (what goes upstream is
		// what the origin's answer is stored under).
		if again, ok := blockingKey(p, key[len(p)+1:]); !ok || again != key {
			t.Fatalf("key %q for %q: its query gives %q, %v", key, q, again, ok)
		}
	})
}

// TestBlockingReloadOriginErrors: the origin's 400 (too far ahead) and 503
// (not there in time) reach every waiter of one upstream request, with
// no-store, and are not cached.
func TestBlockingReloadOriginErrors(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	o.publish(livePath, 11, 0, llPlaylist(11, 0), false)
	// The far-future request is held until the waiters are in, then
	// answered (400) by the blocking mode.
	release := make(chan struct{})
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		if r.URL.Query().Get("_HLS_msn") == "20" {
			<-release
		}
		return false
	})
	arrived := o.watch()
	var joined <-chan struct{}
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) { joined = joinCounter(d) })
	client := waitersClient(t, 64)

	const n = 50
	var chs []<-chan answerOrErr
	for range n {
		chs = append(chs, getAsync(client, e.url+livePath+"?_HLS_msn=20"))
	}
	waitEvents(t, arrived, 1, "upstream requests")
	waitEvents(t, joined, n-1, "waiters joined")
	close(release)
	for i, a := range collect(t, chs) {
		if a.code != http.StatusBadRequest || a.hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("waiter %d: %d %q, want 400 no-store", i, a.code, a.hdr.Get("Cache-Control"))
		}
		if a.cache != "shoal; fwd=miss; fwd-status=400; detail=origin" && a.cache != "shoal; fwd=miss; collapsed" {
			t.Fatalf("waiter %d: Cache-Status %q", i, a.cache)
		}
	}
	if got := o.countQuery(livePath, "_HLS_msn=20"); got != 1 {
		t.Fatalf("origin saw %d GETs for %d waiters, want 1", got, n)
	}
	e.settle(t)
	a := get(t, e.url+livePath+"?_HLS_msn=20")
	if a.code != http.StatusBadRequest || a.cache != "shoal; fwd=miss; fwd-status=400; detail=origin" {
		t.Fatalf("400 again: %d %q", a.code, a.cache)
	}
	if got := o.countQuery(livePath, "_HLS_msn=20"); got != 2 {
		t.Fatalf("the 400 was cached: %d GETs", got)
	}
	waitEvents(t, arrived, 1, "upstream requests")

	// 503: every waiter is told, nothing is kept, the next one asks again.
	const q = "_HLS_msn=11&_HLS_part=2"
	chs = chs[:0]
	for range 10 {
		chs = append(chs, getAsync(client, e.url+livePath+"?"+q))
	}
	waitEvents(t, arrived, 1, "upstream requests")
	waitEvents(t, joined, 9, "waiters joined")
	o.expireWaits()
	for i, a := range collect(t, chs) {
		if a.code != http.StatusServiceUnavailable || a.hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("waiter %d: %d %q, want 503 no-store", i, a.code, a.hdr.Get("Cache-Control"))
		}
	}
	e.settle(t)
	next := getAsync(client, e.url+livePath+"?"+q)
	waitEvents(t, arrived, 1, "upstream requests")
	o.publish(livePath, 11, 2, llPlaylist(11, 2), false)
	if a := collect(t, []<-chan answerOrErr{next})[0]; a.code != http.StatusOK || a.cache != "shoal; fwd=miss; stored; detail=origin" {
		t.Fatalf("after a 503: %d %q", a.code, a.cache)
	}
	if got := o.countQuery(livePath, q); got != 2 {
		t.Fatalf("origin saw %d GETs with %q, want 2", got, q)
	}
	if s := e.c.Stats(); s.StaleServed != 0 {
		t.Fatalf("stale answers: %+v", s)
	}
}

// TestBlockingReloadSigned: a signed stream's blocking answer is rewritten
// for the viewer (every URI, part, hint and rendition report included),
// the token goes upstream with the parameters, and hits are checked.
func TestBlockingReloadSigned(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	pl := llPlaylist(11, 1)
	o.publish(livePath, 11, 1, pl, true)
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) {
		d.Access = func(r *http.Request, id string, signed bool) (string, int) {
			tok := r.URL.Query().Get("token")
			if signed && tok != "good" {
				return "", http.StatusForbidden
			}
			return tok, 0
		}
	})
	u := e.url + livePath + "?_HLS_msn=11&_HLS_part=1&token=good"
	a := get(t, u)
	if a.code != http.StatusOK || string(a.body) != string(RewritePlaylist(pl, "good")) {
		t.Fatalf("signed blocking reload: %d %q", a.code, a.body)
	}
	for _, want := range []string{
		`#EXT-X-MAP:URI="init-s1-0-0.mp4?token=good"`,
		`#EXT-X-PART:DURATION=0.50000,URI="s1-0-11-p1.m4s?token=good"`,
		`#EXT-X-PRELOAD-HINT:TYPE=PART,URI="s1-0-11-p2.m4s?token=good"`,
		`#EXT-X-RENDITION-REPORT:URI="../720p/index.m3u8?token=good",LAST-MSN=11,LAST-PART=1`,
		"\ns1-0-10.m4s?token=good\n",
	} {
		if !strings.Contains(string(a.body), want) {
			t.Fatalf("rewritten playlist lacks %q:\n%s", want, a.body)
		}
	}
	reqs := o.requests()
	if len(reqs) != 1 || reqs[0].query != "_HLS_msn=11&_HLS_part=1&token=good" || reqs[0].edge != "1" {
		t.Fatalf("upstream requests %+v", reqs)
	}
	e.settle(t)
	if a = get(t, u); a.cache != "shoal; hit" || string(a.body) != string(RewritePlaylist(pl, "good")) {
		t.Fatalf("signed hit: %q %q", a.cache, a.body)
	}
	if a = get(t, e.url+livePath+"?_HLS_msn=11&_HLS_part=1&token=bad"); a.code != http.StatusForbidden {
		t.Fatalf("bad token on a blocking hit: %d", a.code)
	}
	if a = get(t, e.url+livePath+"?_HLS_msn=11&_HLS_part=2"); a.code != http.StatusForbidden || len(o.requests()) != 1 {
		t.Fatalf("no token on a blocking miss: %d, %d upstream requests", a.code, len(o.requests()))
	}
}

// partOwnedBy returns a part path that rendezvous hashing over {self,
// other} gives to other.
func partOwnedBy(t *testing.T, self, other string) string {
	t.Helper()
	for i := 0; i < 1000; i++ {
		p := fmt.Sprintf("/hls/abc/source/s1-0-%d-p1.m4s", i)
		if weight(strings.TrimRight(other, "/"), p) > weight(strings.TrimRight(self, "/"), p) {
			return p
		}
	}
	t.Fatal("no path found")
	return ""
}

// TestPartHint: requests for the preload-hinted part wait on one upstream
// request (from the origin, not a sibling that owns it) and are answered
// when it exists; a part that does not exist yet is not remembered.
func TestPartHint(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	var sibReqs atomic.Int64
	sib := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		sibReqs.Add(1)
		http.Error(w, "not here", http.StatusNotFound)
	}))
	t.Cleanup(sib.Close)
	arrived := o.watch()
	var joined <-chan struct{}
	e := startCache(t, o.srv.URL, t.TempDir(), func(_ *Config, d *Deps) {
		joined = joinCounter(d)
		d.Siblings = func() []Sibling { return []Sibling{{ID: "b", URL: sib.URL}} }
	})
	client := waitersClient(t, 64)
	part := partOwnedBy(t, e.url, sib.URL)
	o.hint(part)

	const n = 50
	var chs []<-chan answerOrErr
	for range n {
		chs = append(chs, getAsync(client, e.url+part))
	}
	if up := waitEvents(t, arrived, 1, "upstream requests")[0]; up.method != http.MethodGet || up.path != part {
		t.Fatalf("upstream request %+v", up)
	}
	waitEvents(t, joined, n-1, "waiters joined")
	noneAnswered(t, chs)
	body := segment(30<<10, 9)
	o.put(part, body, origin.CacheImmutable)
	for i, a := range collect(t, chs) {
		if a.code != http.StatusOK || string(a.body) != string(body) {
			t.Fatalf("waiter %d: %d, %d bytes", i, a.code, len(a.body))
		}
	}
	if g, h := o.count(http.MethodGet, part), o.count(http.MethodHead, part); g != 1 || h != 0 || sibReqs.Load() != 0 {
		t.Fatalf("origin saw %d GETs and %d HEADs, the sibling %d requests; want 1, 0, 0", g, h, sibReqs.Load())
	}
	e.settle(t)
	a := get(t, e.url+part)
	wantBody(t, a, body)
	wantStatus(t, a, "shoal; hit")

	// Not there yet (and not hinted): 404 no-store, asked again next time,
	// served as soon as it exists.
	const missing = "/hls/abc/source/s1-0-16-p0.m4s"
	for i := 1; i <= 2; i++ {
		a = get(t, e.url+missing)
		if a.code != http.StatusNotFound || a.cache != "shoal; fwd=miss; fwd-status=404; detail=origin" || a.hdr.Get("Cache-Control") != "no-store" {
			t.Fatalf("missing part: %d %q %q", a.code, a.cache, a.hdr.Get("Cache-Control"))
		}
		if g := o.count(http.MethodGet, missing); g != i {
			t.Fatalf("missing part remembered: %d GETs after %d requests", g, i)
		}
		e.settle(t)
	}
	o.put(missing, body, origin.CacheImmutable)
	wantBody(t, get(t, e.url+missing), body)

	// The hint moved on without the part: the waiters get the 404.
	const gone = "/hls/abc/source/s1-0-16-p1.m4s"
	o.hint(gone)
	arrived = o.watch()
	w := getAsync(client, e.url+gone)
	waitEvents(t, arrived, 1, "upstream requests")
	o.unhint(gone)
	if a := collect(t, []<-chan answerOrErr{w})[0]; a.code != http.StatusNotFound || a.hdr.Get("Cache-Control") != "no-store" {
		t.Fatalf("hint moved on: %d %q", a.code, a.hdr.Get("Cache-Control"))
	}
}

// TestBlockingTimeout: the origin may hold a blocking reload or a part
// longer than OriginTimeout; BlockingTimeout bounds that wait.
func TestBlockingTimeout(t *testing.T) {
	t.Parallel()
	const originTimeout = 50 * time.Millisecond
	const part = "/hls/abc/source/s1-0-11-p2.m4s"
	o := newFakeOrigin(t)
	o.publish(livePath, 11, 2, llPlaylist(11, 2), false)
	o.put(part, segment(1000, 2), origin.CacheImmutable)
	o.put(segPath, segment(1000, 3), origin.CacheImmutable)
	// The origin holds every request well past the edge's OriginTimeout
	// before it answers (this test is about time itself).
	o.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		select {
		case <-time.After(6 * originTimeout):
		case <-r.Context().Done():
			return true
		}
		return false
	})
	e := startCache(t, o.srv.URL, t.TempDir(), func(c *Config, _ *Deps) { c.OriginTimeout = originTimeout })
	if e.c.cfg.BlockingTimeout != originTimeout+DefaultBlockingMargin {
		t.Fatalf("default BlockingTimeout %s", e.c.cfg.BlockingTimeout)
	}
	a := get(t, e.url+livePath+"?_HLS_msn=11&_HLS_part=2")
	if a.code != http.StatusOK || string(a.body) != string(llPlaylist(11, 2)) {
		t.Fatalf("slow blocking reload: %d %q", a.code, a.cache)
	}
	wantBody(t, get(t, e.url+part), segment(1000, 2))
	// Everything else is still bounded by OriginTimeout.
	if a = get(t, e.url+segPath); a.code != http.StatusBadGateway {
		t.Fatalf("slow segment: %d %q", a.code, a.cache)
	}

	// An origin that never answers: BlockingTimeout ends the wait.
	o2 := newFakeOrigin(t)
	o2.publish(livePath, 11, 2, llPlaylist(11, 2), false)
	o2.setHook(func(w http.ResponseWriter, r *http.Request) bool {
		<-r.Context().Done()
		return true
	})
	e2 := startCache(t, o2.srv.URL, t.TempDir(), func(c *Config, _ *Deps) {
		c.OriginTimeout = originTimeout
		c.BlockingTimeout = 4 * originTimeout
	})
	start := time.Now()
	a = get(t, e2.url+livePath+"?_HLS_msn=11&_HLS_part=3")
	if a.code != http.StatusBadGateway || a.cache != "shoal; fwd=miss; detail=origin" || time.Since(start) < 4*originTimeout {
		t.Fatalf("origin never answers: %d %q after %s", a.code, a.cache, time.Since(start))
	}

	if _, err := New(Config{OriginURL: "http://o", CacheDir: "x", OriginTimeout: time.Second, BlockingTimeout: time.Millisecond}, Deps{}); err == nil ||
		!strings.Contains(err.Error(), "BlockingTimeout") {
		t.Fatalf("BlockingTimeout below OriginTimeout: %v", err)
	}
}

// A blocking reload for a position already passed (a lagging player, or
// a client asking for many past positions) is answered with the newest
// answer the edge holds for that playlist, which holds it: no request
// upstream and no new copy in memory per position.
func TestBlockingReloadForAPassedPosition(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	want := llPlaylist(11, 2)
	o.publish(livePath, 11, 2, want, false)
	e := startCache(t, o.srv.URL, t.TempDir(), nil)
	if a := get(t, e.url+livePath+"?_HLS_msn=11&_HLS_part=2"); a.code != http.StatusOK || string(a.body) != string(want) {
		t.Fatalf("blocking reload: %d %q", a.code, a.body)
	}
	e.settle(t)
	for _, q := range []string{"?_HLS_msn=11&_HLS_part=0", "?_HLS_msn=10", "?_HLS_msn=3&_HLS_part=1", "?_HLS_msn=0"} {
		a := get(t, e.url+livePath+q)
		if a.code != http.StatusOK || a.cache != "shoal; hit" || string(a.body) != string(want) {
			t.Fatalf("%s: %d %q %q", q, a.code, a.cache, a.body)
		}
	}
	if got := o.count(http.MethodGet, livePath); got != 1 {
		t.Fatalf("the origin saw %d GETs, want 1", got)
	}
	// A later position is its own request.
	o.publish(livePath, 12, 0, llPlaylist(12, 0), false)
	if a := get(t, e.url+livePath+"?_HLS_msn=12&_HLS_part=0"); a.code != http.StatusOK || string(a.body) != string(llPlaylist(12, 0)) {
		t.Fatalf("a later position: %d %q", a.code, a.body)
	}
	if got := o.count(http.MethodGet, livePath); got != 2 {
		t.Fatalf("the origin saw %d GETs, want 2", got)
	}
}

// A playlist that has ended (VOD, a finished broadcast) does not block at
// the origin: it answers _HLS_msn=N with the whole playlist for any N (and
// max-age=60). Blocking reloads of it are answered from the plain path's
// copy: a viewer counting N upwards costs one origin request and one copy
// in memory, not one per N. The same holds for a finished manifest, for a
// plain request made first, and for the copy on disk after a restart.
func TestBlockingReloadOfAnEndedPlaylist(t *testing.T) {
	t.Parallel()
	o := newFakeOrigin(t)
	vod := []byte("#EXTM3U\n#EXT-X-TARGETDURATION:2\n#EXTINF:2,\nseg-0.m4s\n#EXT-X-ENDLIST\n")
	const manPath = "/hls/abc/source/manifest.txt"
	man := []byte("shoal-manifest 1\nkey 0011223344556677\nid abc\nrendition source\nseq 1\ntime 1\nended 1\nsig AA\n")
	const plainFirst = "/hls/abc/720p/index.m3u8"
	o.put(livePath, vod, origin.CacheEndedPlaylist)
	o.put(manPath, man, origin.CacheEndedPlaylist)
	o.put(plainFirst, vod, origin.CacheEndedPlaylist)
	dir := t.TempDir()
	e := startCache(t, o.srv.URL, dir, nil)
	wantBody(t, get(t, e.url+plainFirst), vod)
	const n = 50
	for i := 1; i <= n; i++ {
		for _, pb := range []struct {
			path string
			body []byte
		}{{livePath, vod}, {manPath, man}, {plainFirst, vod}} {
			a := get(t, fmt.Sprintf("%s%s?_HLS_msn=%d", e.url, pb.path, i))
			wantBody(t, a, pb.body)
			if (i > 1 || pb.path == plainFirst) && a.cache != "shoal; hit" {
				t.Fatalf("%s?_HLS_msn=%d of an ended playlist: Cache-Status %q, want a hit (origin GETs so far: %d)",
					pb.path, i, a.cache, o.count(http.MethodGet, pb.path))
			}
		}
		e.idle(t)
	}
	for _, p := range []string{livePath, manPath, plainFirst} {
		if got := o.count(http.MethodGet, p); got != 1 {
			t.Fatalf("%d blocking reloads of the ended %s: the origin saw %d GETs, want 1", n, p, got)
		}
	}
	e.c.mem.mu.Lock()
	copies := e.c.mem.l.len()
	e.c.mem.mu.Unlock()
	if copies != 3 {
		t.Fatalf("%d copies in memory of 3 ended playlists, want 3", copies)
	}
	e.stop(t)

	// A new cache on the same directory answers from the disk copy.
	e2 := startCache(t, o.srv.URL, dir, nil)
	a := get(t, e2.url+livePath+"?_HLS_msn=1000")
	wantBody(t, a, vod)
	wantStatus(t, a, "shoal; hit")
	if got := o.count(http.MethodGet, livePath); got != 1 {
		t.Fatalf("after a restart the origin saw %d GETs, want 1", got)
	}
}
