package app

import (
	"crypto/ed25519"
	"crypto/rand"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/shoal-video/shoal/internal/config"
)

// The owner of a live stream sits behind a front proxy that serves it
// under a path prefix (its public URL is http://host/shoal, as
// TestProxyFallsBackWithTheViewersRequest has it): the proxying origin's
// vouch must cover the target as the owner receives it (the part after
// the owner's base URL, as an edge's vouch does), or the owner ignores it
// and an IP-bound token fails there.
func TestProxiedVouchUnderOwnerPathPrefix(t *testing.T) {
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
	// The front proxy strips /shoal before the owner's handler.
	owner := httptest.NewServer(http.StripPrefix("/shoal", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.WriteString(w, resolve(r))
	})))
	defer owner.Close()
	const id = "prox3abcdefghijklmno"
	if _, err := store.ClaimLiveStream(ctx, id, owner.URL+"/shoal", time.Minute); err != nil {
		t.Fatal(err)
	}
	b := newLiveOwners(store, "http://origin-b:8080", func(string) bool { return false }, log)
	b.vouchKey, b.clientIP = contentKey, newClientIPResolver(config.Config{}, nil).IP
	h := b.proxy(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { _, _ = io.WriteString(w, "served here") }))
	req := httptest.NewRequest(http.MethodGet, "/hls/"+id+"/master.m3u8?token=t", nil)
	req.RemoteAddr = "203.0.113.9:40000"
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if got := rec.Body.String(); got != "203.0.113.9" {
		t.Fatalf("the owner behind a path prefix sees the viewer at %q, want 203.0.113.9", got)
	}
}
