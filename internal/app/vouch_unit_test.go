package app

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"log/slog"
	"net/http"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promtest "github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/shoal-video/shoal/internal/nodeproto"
	"github.com/shoal-video/shoal/internal/routing"
)

// The origin's vouch check against the real registry, on its own clock:
// joined edges only, their registered key, fresh; a node that left stops
// being believed once its remembered key expires (nodeKeyTTL); while the
// registry cannot answer, the last known answer stands.
func TestVouchVerifier(t *testing.T) {
	t.Parallel()
	store, rs := newTestStore(t)
	ctx := context.Background()
	join := func(role, tokenID string) (ed25519.PrivateKey, string) {
		pub, priv, _ := ed25519.GenerateKey(nil)
		id := nodeproto.NodeID(pub)
		if err := store.JoinNode(ctx, routing.Node{ID: id, Role: role, Region: "eu", PublicURL: "http://edge.test",
			PublicKey: base64.StdEncoding.EncodeToString(pub), TokenID: tokenID}, time.Hour); err != nil {
			t.Fatal(err)
		}
		return priv, id
	}
	_, tok, err := store.CreateNodeToken(ctx, "test")
	if err != nil {
		t.Fatal(err)
	}
	edgeKey, edgeID := join("edge", tok.ID)
	workerKey, workerID := join("worker", routing.AdminTokenID)

	keys := newEdgeKeys(store)
	v := newVouchVerifier(keys.key, prometheus.NewRegistry(), slog.New(slog.DiscardHandler))
	var clock atomic.Int64
	clock.Store(time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC).UnixNano())
	v.now = func() time.Time { return time.Unix(0, clock.Load()) }
	keys.now = v.now
	now := func() time.Time { return v.now() }
	const target = "/hls/qx3kd7ufmw2hpbz4na5e/master.m3u8?token=abc"
	ask := func(key ed25519.PrivateKey, id string, at time.Time) (string, bool) {
		r, _ := http.NewRequest(http.MethodGet, "http://origin"+target, nil)
		nodeproto.Vouch(r, key, id, target, "203.0.113.7", at)
		return v.vouched(r)
	}
	rejected := func(reason string) float64 { return promtest.ToFloat64(v.rejected.WithLabelValues(reason)) }

	if ip, ok := ask(edgeKey, edgeID, now()); !ok || ip != "203.0.113.7" {
		t.Fatalf("joined edge: %q %v", ip, ok)
	}
	if _, ok := ask(workerKey, workerID, now()); ok || rejected("unknown_node") != 1 {
		t.Fatalf("a worker's vouch was believed (or not counted: %v)", rejected("unknown_node"))
	}
	if _, ok := ask(edgeKey, edgeID, now().Add(-nodeproto.VouchMaxAge-time.Second)); ok || rejected("stale") != 1 {
		t.Fatal("a stale vouch was believed")
	}
	r, _ := http.NewRequest(http.MethodGet, "http://origin"+target, nil)
	if _, ok := v.vouched(r); ok || rejected("malformed") != 0 {
		t.Fatal("a request without a vouch")
	}

	// The edge leaves (its token revoked: its next heartbeat removes it).
	if err := store.RevokeNodeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := store.NodeHeartbeat(ctx, edgeID, routing.NodeLoad{}, time.Hour); !errors.Is(err, routing.ErrTokenRevoked) {
		t.Fatalf("heartbeat after revocation: %v", err)
	}
	if _, ok := ask(edgeKey, edgeID, now()); !ok {
		t.Fatal("the remembered key expired early")
	}
	clock.Add(int64(nodeKeyTTL))
	if _, ok := ask(edgeKey, edgeID, now()); ok || rejected("unknown_node") != 2 {
		t.Fatal("a node that left is still believed")
	}

	// Registry down: the last known answers stand.
	edge2Key, edge2ID := join("edge", routing.AdminTokenID)
	if _, ok := ask(edge2Key, edge2ID, now()); !ok {
		t.Fatal("second edge")
	}
	rs.Kill()
	clock.Add(int64(nodeKeyTTL))
	if _, ok := ask(edge2Key, edge2ID, now()); !ok {
		t.Fatal("a known edge is not believed while Redis is down")
	}
	if _, ok := ask(edgeKey, edgeID, now()); ok {
		t.Fatal("a node known to have left is believed while Redis is down")
	}
	if promtest.ToFloat64(v.accepted) != 4 {
		t.Fatalf("accepted %v, want 4", promtest.ToFloat64(v.accepted))
	}
}
