package nodeproto

import (
	"crypto/ed25519"
	"crypto/rand"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/originset"
)

// registryServer answers joins and heartbeats signed by pub (as every
// origin of a deployment does, sharing the registry), or the status in
// fail; it counts the requests it got.
type registryServer struct {
	srv  *httptest.Server
	fail atomic.Int32
	got  atomic.Int32
}

func newRegistryServer(t *testing.T, pub ed25519.PublicKey, origins []string) *registryServer {
	t.Helper()
	s := &registryServer{}
	s.srv = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.got.Add(1)
		if code := int(s.fail.Load()); code != 0 {
			http.Error(w, http.StatusText(code), code)
			return
		}
		body, _ := io.ReadAll(r.Body)
		if err := Verify(pub, body, r.Header.Get(SignatureHeader)); err != nil {
			http.Error(w, err.Error(), http.StatusForbidden)
			return
		}
		_ = json.NewEncoder(w).Encode(JoinResponse{ID: NodeID(pub), HeartbeatIntervalSeconds: 2, Origins: origins})
	}))
	t.Cleanup(s.srv.Close)
	return s
}

// The client sends each request to the preferred origin and once more to
// the next on a 502/503/504 or a connection error; a failed origin is
// avoided for originset.AvoidFor; a refusal is not retried elsewhere.
func TestClientFailsOver(t *testing.T) {
	t.Parallel()
	pub, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	var clock atomic.Int64
	clock.Store(time.Now().UnixNano())
	now := func() time.Time { return time.Unix(0, clock.Load()) }
	a := newRegistryServer(t, pub, nil)
	b := newRegistryServer(t, pub, nil)
	set, err := originset.New([]string{a.srv.URL, b.srv.URL}, now)
	if err != nil {
		t.Fatal(err)
	}
	c := &Client{Origins: set, Token: "nt_test", Key: priv}
	ctx := t.Context()
	counts := func(what string, wantA, wantB int32) {
		t.Helper()
		if a.got.Load() != wantA || b.got.Load() != wantB {
			t.Fatalf("%s: A got %d, B %d; want %d and %d", what, a.got.Load(), b.got.Load(), wantA, wantB)
		}
	}
	if _, err := c.Join(ctx, JoinRequest{Role: "edge"}); err != nil {
		t.Fatal(err)
	}
	counts("join", 1, 0)

	a.fail.Store(http.StatusServiceUnavailable)
	r, err := c.Heartbeat(ctx, NodeID(pub), Heartbeat{})
	if err != nil || r.ID != NodeID(pub) {
		t.Fatalf("heartbeat with A answering 503: %+v %v", r, err)
	}
	counts("heartbeat, A failing", 2, 1)
	// A is avoided now.
	if _, err := c.Heartbeat(ctx, NodeID(pub), Heartbeat{}); err != nil {
		t.Fatal(err)
	}
	counts("heartbeat, A avoided", 2, 2)

	// B dies; once A is no longer avoided, it is asked first.
	a.fail.Store(0)
	b.srv.Close()
	clock.Add(int64(originset.AvoidFor + time.Second))
	if _, err := c.Heartbeat(ctx, NodeID(pub), Heartbeat{}); err != nil {
		t.Fatal(err)
	}
	counts("heartbeat, A back", 3, 2)
	// A refuses (a revoked token): that is the answer, not retried.
	a.fail.Store(http.StatusUnauthorized)
	if _, err := c.Heartbeat(ctx, NodeID(pub), Heartbeat{}); err == nil {
		t.Fatal("a refusal was not returned")
	}
	counts("refused", 4, 2)
	// A fails too: B's connection error is the answer.
	a.fail.Store(http.StatusBadGateway)
	if _, err := c.Heartbeat(ctx, NodeID(pub), Heartbeat{}); err == nil {
		t.Fatal("both origins down, and no error")
	}
	counts("both down", 5, 2)
}
