package routing

import (
	"context"
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestNodeRegistry(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	plain, tok, err := s.CreateNodeToken(ctx, "eu edges")
	if err != nil {
		t.Fatal(err)
	}
	if got, err := s.VerifyNodeToken(ctx, plain); err != nil || got.ID != tok.ID || got.Name != "eu edges" {
		t.Fatalf("VerifyNodeToken = %+v, %v", got, err)
	}
	if _, err := s.VerifyNodeToken(ctx, "nt_wrong"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("wrong token: %v", err)
	}
	expired := watchExpired(t, s)
	// edgea lives a minute: only edgeb's expiry is waited for (a loaded
	// machine took longer than edgea's former second to see it).
	n := Node{ID: "edgea", Role: "edge", Region: "eu", PublicURL: "http://a:8081", PublicKey: "k", TokenID: tok.ID}
	if err := s.JoinNode(ctx, n, time.Minute); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinNode(ctx, Node{ID: "edgeb", Role: "edge", PublicURL: "http://b:8081", TokenID: AdminTokenID}, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	if ttl, err := s.rdb.PTTL(ctx, s.k(nodePrefix)+"edgeb").Result(); err != nil || ttl <= 0 || ttl > 300*time.Millisecond {
		t.Fatalf("edgeb's record lives %s (%v), want at most 300ms", ttl, err)
	}
	load := NodeLoad{Connections: 3, Hits: 3, Misses: 1, StreamBytes: map[string]int64{"abc": 10}}
	if err := s.NodeHeartbeat(ctx, "edgea", load, time.Minute); err != nil {
		t.Fatal(err)
	}
	got, err := s.GetNode(ctx, "edgea")
	if err != nil || got.Load.Connections != 3 || got.Load.HitRatio() != 0.75 || got.Load.StreamBytes["abc"] != 10 || got.Region != "eu" {
		t.Fatalf("GetNode = %+v, %v", got, err)
	}
	list, _ := s.ListNodes(ctx)
	if len(list) != 2 || list[0].ID == list[1].ID {
		t.Fatalf("ListNodes = %+v", list)
	}
	// edgeb stops heartbeating: it leaves once Redis expires its record.
	waitExpired(t, s, expired, s.k(nodePrefix)+"edgeb")
	list, _ = s.ListNodes(ctx)
	if len(list) != 1 || list[0].ID != "edgea" {
		t.Fatalf("after edgeb's TTL: %+v", list)
	}
	if err := s.NodeHeartbeat(ctx, "edgeb", NodeLoad{}, time.Second); !errors.Is(err, ErrNotFound) {
		t.Fatalf("heartbeat of an expired node: %v", err)
	}
	// Revoking the token refuses the next heartbeat and removes the node.
	if err := s.RevokeNodeToken(ctx, tok.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.NodeHeartbeat(ctx, "edgea", load, time.Minute); !errors.Is(err, ErrTokenRevoked) {
		t.Fatalf("heartbeat after revocation: %v", err)
	}
	if _, err := s.VerifyNodeToken(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Fatalf("revoked token still verifies: %v", err)
	}
	if err := s.RevokeNodeToken(ctx, tok.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second revoke: %v", err)
	}
	if list, _ := s.ListNodes(ctx); len(list) != 0 {
		t.Fatalf("nodes left: %+v", list)
	}
}

// watchExpired has s's Redis report the keys it expires and returns them
// as they expire.
func watchExpired(t *testing.T, s *Store) <-chan *redis.Message {
	t.Helper()
	ctx := t.Context()
	srv := serverOf(ctx, t, s)
	if err := srv.ConfigSet(ctx, "notify-keyspace-events", "Ex").Err(); err != nil {
		t.Fatal(err)
	}
	sub := srv.PSubscribe(ctx, "__keyevent@*__:expired")
	t.Cleanup(func() { _ = sub.Close() })
	if _, err := sub.Receive(ctx); err != nil { // the subscription is in place
		t.Fatal(err)
	}
	return sub.Channel()
}

// waitExpired waits until Redis reports that it expired key (it expires
// keys within about 100 ms of their deadline), or the key is found gone:
// reading a key past its deadline expires it, whatever the server's
// active expiry (slow on a loaded machine: a cluster pass once waited
// over 5 s for the report).
func waitExpired(t *testing.T, s *Store, expired <-chan *redis.Message, key string) {
	t.Helper()
	timeout := time.NewTimer(20 * time.Second)
	defer timeout.Stop()
	look := time.NewTicker(100 * time.Millisecond)
	defer look.Stop()
	for {
		select {
		case m := <-expired:
			if m.Payload == key {
				return
			}
		case <-look.C:
			if n, err := s.rdb.Exists(t.Context(), key).Result(); err == nil && n == 0 {
				return
			}
		case <-timeout.C:
			t.Fatalf("%s did not expire", key)
		}
	}
}

func TestPlace(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdef0123456789abcdef")
	noLoad := SameLoads(func(Node) int64 { return 0 })
	if p := Place(nil, "abc", "", secret, noLoad, 3); len(p.Candidates) != 0 || p.Reason == "" {
		t.Fatalf("no edges: %+v", p)
	}
	nodes := []Node{
		{ID: "e1", Role: "edge", Region: "eu", PublicURL: "http://e1"},
		{ID: "e2", Role: "edge", Region: "eu", PublicURL: "http://e2"},
		{ID: "e3", Role: "edge", Region: "eu", PublicURL: "http://e3"},
		{ID: "u1", Role: "edge", Region: "us", PublicURL: "http://u1"},
		{ID: "w1", Role: "worker", Region: "eu"},
		{ID: "q1", Role: "edge", Region: "us", PublicURL: "http://q1", Quarantine: &Quarantine{Reason: "bad bytes"}},
	}
	p := Place(nodes, "stream1", "us", secret, noLoad, 3)
	if len(p.Candidates) != 1 || p.Candidates[0].ID != "u1" {
		t.Fatalf("us viewer got %+v (%s): the quarantined edge must never be offered", p.Candidates, p.Reason)
	}
	p = Place(nodes, "stream1", "ap", secret, noLoad, 2)
	if len(p.Candidates) != 2 || p.Reason == "" {
		t.Fatalf("viewer of an empty region: %+v", p)
	}
	// Many streams spread over the eu edges; a quiet stream stays on one.
	seen := map[string]bool{}
	for i := range 60 {
		p := Place(nodes, fmt.Sprintf("s%d", i), "eu", secret, noLoad, 1)
		seen[p.Candidates[0].ID] = true
	}
	if len(seen) != 3 {
		t.Fatalf("60 streams used edges %v, want all 3", seen)
	}
	// Another secret ranks differently: the ranking is not computable
	// without the origin's key.
	differ := 0
	for i := range 60 {
		a := Place(nodes, fmt.Sprintf("s%d", i), "eu", secret, noLoad, 1).Candidates[0].ID
		b := Place(nodes, fmt.Sprintf("s%d", i), "eu", []byte("another secret of 32 bytes......"), noLoad, 1).Candidates[0].ID
		if a != b {
			differ++
		}
	}
	if differ < 20 {
		t.Fatalf("only %d of 60 streams moved with another secret", differ)
	}
}

// TestPlaceBoundedLoads: viewers of one popular stream fill its first edge
// to the bound, then spread; an edge that claims to be empty (or to have
// room for millions) gets no more than its bounded share.
func TestPlaceBoundedLoads(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdef0123456789abcdef")
	var nodes []Node
	for i := range 6 {
		nodes = append(nodes, Node{ID: fmt.Sprintf("edge%d", i), Role: "edge", PublicURL: fmt.Sprintf("http://e%d", i)})
	}
	// The liar: always reports 0 viewers and declares a huge capacity.
	liar := Place(nodes, "popular", "", secret, SameLoads(func(Node) int64 { return 0 }), 1).Candidates[0].ID
	for i := range nodes {
		if nodes[i].ID == liar {
			nodes[i].Load.MaxViewers = 1 << 40
		}
	}
	reg := NewRegistry(nil, nil)
	const viewers = 1200
	for range viewers {
		p := Place(nodes, "popular", "", secret, reg, 3)
		reg.Assign(p.Candidates[0].ID)
	}
	fair := float64(viewers) / float64(len(nodes))
	used := 0
	for _, n := range nodes {
		got := reg.Assigned(n.ID)
		if float64(got) > (1+LoadSlack)*fair+MinBound {
			t.Errorf("%s got %d viewers, more than the bound %.0f", n.ID, got, (1+LoadSlack)*fair)
		}
		if got > 0 {
			used++
		}
	}
	if used < 5 {
		t.Errorf("a popular stream used %d edges, want at least 5 of 6", used)
	}
	// A declared capacity is a cap.
	small := append([]Node(nil), nodes...)
	for i := range small {
		small[i].Load.MaxViewers = 0
		if small[i].ID == liar {
			small[i].Load.MaxViewers = 3
		}
	}
	reg = NewRegistry(nil, nil)
	for range 60 {
		reg.Assign(Place(small, "popular", "", secret, reg, 1).Candidates[0].ID)
	}
	if got := reg.Assigned(liar); got != 3 {
		t.Errorf("an edge declaring room for 3 viewers got %d", got)
	}
}

func TestRegistryCachesAndWindows(t *testing.T) {
	t.Parallel()
	var calls int
	clock := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	reg := NewRegistry(func(context.Context) ([]Node, error) {
		calls++
		return []Node{{ID: "a", Role: "edge"}}, nil
	}, func() time.Time { return clock })
	for range 5 {
		if n, err := reg.Nodes(t.Context()); err != nil || len(n) != 1 {
			t.Fatal(n, err)
		}
	}
	if calls != 1 {
		t.Fatalf("%d reads within the refresh interval", calls)
	}
	clock = clock.Add(RegistryRefresh)
	_, _ = reg.Nodes(t.Context())
	reg.Invalidate()
	_, _ = reg.Nodes(t.Context())
	if calls != 3 {
		t.Fatalf("%d reads, want 3", calls)
	}
	reg.Assign("a")
	reg.Assign("a")
	if reg.Assigned("a") != 2 || reg.Load(Node{ID: "a", Load: NodeLoad{Viewers: 5}}) != 5 {
		t.Fatalf("assigned %d", reg.Assigned("a"))
	}
	clock = clock.Add(AssignWindow + time.Second)
	if reg.Assigned("a") != 0 {
		t.Fatalf("assignments outlived the window: %d", reg.Assigned("a"))
	}
}

func TestTrustRecords(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	_, tok, err := s.CreateNodeToken(ctx, "t")
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if err := s.JoinNodeCapped(ctx, Node{ID: fmt.Sprintf("n%d", i), Role: "edge", TokenID: tok.ID}, time.Minute, 2); i < 2 && err != nil {
			t.Fatal(err)
		} else if i == 2 && !errors.Is(err, ErrTooManyIdentities) {
			t.Fatalf("third identity: %v", err)
		}
	}
	if err := s.JoinNodeCapped(ctx, Node{ID: "n0", Role: "edge", TokenID: tok.ID}, time.Minute, 2); err != nil {
		t.Fatalf("rejoin with a held identity: %v", err)
	}
	if n, err := s.TokenIdentities(ctx, tok.ID); err != nil || n != 2 {
		t.Fatalf("identities %d %v", n, err)
	}
	// Heartbeats keep an identity counted (its last-seen time moves on):
	// age it, and a heartbeat brings it back to now.
	if err := s.rdb.ZAdd(ctx, s.k(tokenIdentitiesPrefix)+tok.ID, redis.Z{Score: 1, Member: "n1"}).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.NodeHeartbeat(ctx, "n1", NodeLoad{}, time.Minute); err != nil {
		t.Fatal(err)
	}
	if after, _ := s.rdb.ZScore(ctx, s.k(tokenIdentitiesPrefix)+tok.ID, "n1").Result(); after < float64(now().Add(-time.Minute).UnixMilli()) {
		t.Fatalf("a heartbeat left the identity's last-seen time at %v", after)
	}
	if err := s.QuarantineNode(ctx, "n1", "served bad bytes"); err != nil {
		t.Fatal(err)
	}
	_ = s.QuarantineNode(ctx, "n1", "second reason")
	n, err := s.GetNode(ctx, "n1")
	if err != nil || n.Quarantine == nil || n.Quarantine.Reason != "served bad bytes" {
		t.Fatalf("quarantined node: %+v %v", n, err)
	}
	list, _ := s.ListNodes(ctx)
	q := 0
	for _, n := range list {
		if n.Quarantine != nil {
			q++
		}
	}
	if q != 1 {
		t.Fatalf("%d quarantined in the list", q)
	}
	if err := s.ReleaseNode(ctx, "n1"); err != nil {
		t.Fatal(err)
	}
	if err := s.ReleaseNode(ctx, "n1"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second release: %v", err)
	}
	for i := range MaxReportsKept + 5 {
		if err := s.AddDeliveryReport(ctx, "n1", DeliveryReport{Kind: "hash_mismatch", URL: fmt.Sprint(i)}); err != nil {
			t.Fatal(err)
		}
	}
	all, err := s.RecentDeliveryReports(ctx, []string{"n1", "none"}, 100)
	r := all["n1"]
	if err != nil || len(r) != MaxReportsKept || r[0].URL != fmt.Sprint(MaxReportsKept+4) || all["none"] == nil || len(all["none"]) != 0 {
		t.Fatalf("reports: %d %v", len(r), err)
	}
	a, err := s.PlacementSecret(ctx)
	b, err2 := s.PlacementSecret(ctx)
	if err != nil || err2 != nil || len(a) != 32 || string(a) != string(b) {
		t.Fatalf("placement secret: %x %x %v %v", a, b, err, err2)
	}
}

// TestPlaceEgressFull: an edge sending 90% of the egress it declares is
// passed over, whatever its viewer count.
func TestPlaceEgressFull(t *testing.T) {
	t.Parallel()
	secret := []byte("0123456789abcdef0123456789abcdef")
	nodes := []Node{{ID: "a", Role: "edge", PublicURL: "http://a"}, {ID: "b", Role: "edge", PublicURL: "http://b"}}
	noLoad := SameLoads(func(Node) int64 { return 0 })
	first := Place(nodes, "s", "", secret, noLoad, 2).Candidates[0].ID
	for i := range nodes {
		if nodes[i].ID == first {
			nodes[i].Load.MaxEgressBytesPerSec, nodes[i].Load.EgressBytesPerSec = 1000, 950
		}
	}
	if p := Place(nodes, "s", "", secret, noLoad, 2); p.Candidates[0].ID == first || len(p.Candidates) != 2 {
		t.Fatalf("an edge at 95%% of its declared egress came first: %+v", p)
	}
}
