package app

import (
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/config"
	"github.com/shoal-video/shoal/internal/nodeproto"
)

// A stream that ended here keeps its lease while its files are still on
// their way to the store, and while the origin drains; then it is released.
func TestLiveOwnersKeepLeasesWhileSpooled(t *testing.T) {
	t.Parallel()
	store, _ := newTestStore(t)
	ctx := t.Context()
	const id = "spool1abcdefghijklmn"
	var live, spooled atomic.Bool
	o := newLiveOwners(store, "http://origin-a:8080", func(string) bool { return live.Load() }, slog.New(slog.DiscardHandler))
	o.ttl = time.Minute
	o.spooled = func(string) bool { return spooled.Load() }
	if err := o.claim(ctx, id); err != nil {
		t.Fatal(err)
	}
	owner := func() string {
		t.Helper()
		owners, err := store.LiveStreamOwners(ctx, id)
		if err != nil {
			t.Fatal(err)
		}
		return owners[id]
	}
	// Authorized long ago, not live: released unless spooled or draining.
	o.mu.Lock()
	o.held[id] = time.Now().Add(-time.Hour)
	o.mu.Unlock()
	spooled.Store(true)
	o.renew(ctx)
	if got := owner(); got != "http://origin-a:8080" {
		t.Fatalf("owner while the stream is spooled = %q", got)
	}
	spooled.Store(false)
	o.draining.Store(true)
	o.renew(ctx)
	if got := owner(); got != "http://origin-a:8080" {
		t.Fatalf("owner while the origin drains = %q", got)
	}
	o.draining.Store(false)
	o.renew(ctx)
	if got := owner(); got != "" {
		t.Fatalf("owner once nothing holds the stream = %q", got)
	}
	// Here, a lease alone is not a live stream.
	if err := o.claim(ctx, id); err != nil {
		t.Fatal(err)
	}
	if o.isLiveAnywhere(id) {
		t.Fatal("a stream leased here but not in the hub is live")
	}
	live.Store(true)
	if !o.isLiveAnywhere(id) {
		t.Fatal("a stream in the hub is not live")
	}
}

// An origin that proxies a viewer's request for a live stream to the
// origin that ingests it vouches for the viewer's address with the content
// key the origins share, so that a token bound to the viewer's IP holds
// there: the owner sees the viewer's address, not the proxying origin's.
// What the viewer itself claims is dropped on the way, and a vouch under
// the origins' id that the shared key did not sign is not believed.
func TestProxiedViewerKeepsItsAddress(t *testing.T) {
	t.Parallel()
	store, _ := newTestStore(t)
	ctx := t.Context()
	_, contentKey, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.DiscardHandler)
	vouch := newVouchVerifier(originsVouch(contentKey.Public().(ed25519.PublicKey), newEdgeKeys(store).key), prometheus.NewRegistry(), log)
	resolve := newClientIPResolver(config.Config{}, vouch).IP
	owner := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, resolve(r))
	}))
	defer owner.Close()
	const id = "prox1abcdefghijklmno"
	if _, err := store.ClaimLiveStream(ctx, id, owner.URL, time.Minute); err != nil {
		t.Fatal(err)
	}
	get := func(o *liveOwners) string {
		t.Helper()
		h := o.proxy(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "served here") }))
		req := httptest.NewRequest(http.MethodGet, "/hls/"+id+"/master.m3u8?token=t", nil)
		req.RemoteAddr = "203.0.113.9:40000"
		req.Header.Set(nodeproto.ViewerIPHeader, "198.51.100.1") // the viewer's own claim
		req.Header.Set(nodeproto.VouchHeader, "someone 1 AAAA")
		rec := httptest.NewRecorder()
		h.ServeHTTP(rec, req)
		return rec.Body.String()
	}
	b := newLiveOwners(store, "http://origin-b:8080", func(string) bool { return false }, log)
	b.vouchKey, b.clientIP = contentKey, newClientIPResolver(config.Config{}, nil).IP
	if got := get(b); got != "203.0.113.9" {
		t.Fatalf("the owner sees the viewer at %q, want 203.0.113.9", got)
	}
	// Without the vouch, the owner sees the proxying origin.
	plain := newLiveOwners(store, "http://origin-c:8080", func(string) bool { return false }, log)
	if got := get(plain); got != "127.0.0.1" {
		t.Fatalf("without a vouch the owner sees %q, want the proxy's 127.0.0.1", got)
	}
	// Another key under the origins' id.
	_, forged, _ := ed25519.GenerateKey(rand.Reader)
	req, _ := http.NewRequest(http.MethodGet, owner.URL+"/hls/"+id+"/master.m3u8", nil)
	nodeproto.Vouch(req, forged, nodeproto.NodeID(contentKey.Public().(ed25519.PublicKey)), "/hls/"+id+"/master.m3u8", "198.51.100.1", time.Now())
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "127.0.0.1" {
		t.Fatalf("a forged origins' vouch made the owner see %q", body)
	}
}

// When the owner does not answer, the viewer's own request is served from
// the store here, even when the owner's URL has a path (a front proxy's
// prefix): before, the proxied request, with the owner's path and this
// origin's headers, reached the local handler, which answered 404.
func TestProxyFallsBackWithTheViewersRequest(t *testing.T) {
	t.Parallel()
	store, _ := newTestStore(t)
	const id = "prox2abcdefghijklmno"
	if _, err := store.ClaimLiveStream(t.Context(), id, "http://127.0.0.1:1/shoal", time.Minute); err != nil {
		t.Fatal(err)
	}
	o := newLiveOwners(store, "http://origin-b:8080", func(string) bool { return false }, slog.New(slog.DiscardHandler))
	var got *http.Request
	h := o.proxy(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { got = r }))
	req := httptest.NewRequest(http.MethodGet, "/hls/"+id+"/master.m3u8", nil)
	h.ServeHTTP(httptest.NewRecorder(), req)
	if got == nil || got.URL.Path != "/hls/"+id+"/master.m3u8" || got.Header.Get(forwardedHeader) != "" {
		t.Fatalf("the local handler got %+v, want the viewer's request", got)
	}
}
