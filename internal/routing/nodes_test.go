package routing

import (
	"errors"
	"testing"
	"time"
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
	n := Node{ID: "edgea", Role: "edge", Region: "eu", PublicURL: "http://a:8081", PublicKey: "k", TokenID: tok.ID}
	if err := s.JoinNode(ctx, n, time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.JoinNode(ctx, Node{ID: "edgeb", Role: "edge", PublicURL: "http://b:8081", TokenID: AdminTokenID}, 300*time.Millisecond); err != nil {
		t.Fatal(err)
	}
	load := NodeLoad{Connections: 3, Hits: 3, Misses: 1, StreamBytes: map[string]int64{"abc": 10}}
	if err := s.NodeHeartbeat(ctx, "edgea", load, time.Second); err != nil {
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
	// edgeb stops heartbeating: it leaves.
	time.Sleep(400 * time.Millisecond)
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
	if err := s.NodeHeartbeat(ctx, "edgea", load, time.Second); !errors.Is(err, ErrTokenRevoked) {
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

func TestChooseEdge(t *testing.T) {
	t.Parallel()
	if _, reason, ok := ChooseEdge(nil, "abc", ""); ok || reason == "" {
		t.Fatalf("no edges: ok=%v reason=%q", ok, reason)
	}
	nodes := []Node{
		{ID: "e1", Role: "edge", Region: "eu", PublicURL: "http://e1"},
		{ID: "e2", Role: "edge", Region: "eu", PublicURL: "http://e2"},
		{ID: "e3", Role: "edge", Region: "eu", PublicURL: "http://e3"},
		{ID: "u1", Role: "edge", Region: "us", PublicURL: "http://u1"},
		{ID: "w1", Role: "worker", Region: "eu"},
	}
	n, reason, ok := ChooseEdge(nodes, "stream1", "us")
	if !ok || n.ID != "u1" {
		t.Fatalf("us viewer got %s (%s)", n.ID, reason)
	}
	n, reason, _ = ChooseEdge(nodes, "stream1", "ap")
	if n.Role != "edge" || reason == "" {
		t.Fatalf("viewer of an empty region got %+v (%s)", n, reason)
	}
	// Affinity: many streams spread over the eu edges, and one stream's
	// viewers go to at most 2 of them whatever the load.
	seen := map[string]bool{}
	for i := range 50 {
		n, _, _ := ChooseEdge(nodes, "s"+string(rune('a'+i%26))+string(rune('a'+i/26)), "eu")
		seen[n.ID] = true
	}
	if len(seen) != 3 {
		t.Fatalf("50 streams used edges %v, want all 3", seen)
	}
	chosen := map[string]bool{}
	for c := range int64(6) {
		loaded := append([]Node(nil), nodes...)
		for i := range loaded {
			loaded[i].Load.Connections = (int64(i) + c) % 3
		}
		n, _, _ := ChooseEdge(loaded, "one-stream", "eu")
		chosen[n.ID] = true
	}
	if len(chosen) != 2 {
		t.Fatalf("one stream's viewers went to %v, want exactly its 2 affinity edges", chosen)
	}
}
