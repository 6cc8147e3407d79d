package routing

import (
	"reflect"
	"slices"
	"testing"
	"time"

	"github.com/shoal-video/shoal/internal/nodeproto"
)

// Origins and workers announce themselves, are listed (origins first) with
// what they transcode with, expire when they stop renewing, and are gone
// at once when they withdraw; the origins list is untouched.
func TestAnnouncedNodes(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	now := time.Date(2026, 12, 5, 12, 0, 0, 0, time.UTC)
	s.clock = func() time.Time { return now }
	s.redisClock = s.clock
	started := now.Add(-time.Hour)
	tc := &nodeproto.Transcoding{Encoder: "software", Decode: "cpu", GPUs: []nodeproto.GPU{}, Ladders: 2, LaddersFrom: "configured",
		Summary: "encoding with software"}
	gpu := &nodeproto.Transcoding{Encoder: "software", Decode: "cuda", Ladders: 14, LaddersFrom: "measured", RealtimeX: 3.5,
		GPUs: []nodeproto.GPU{{Index: 0, Name: "NVIDIA H200", NVDEC: []string{"h264", "hevc"}}}, Summary: "NVIDIA H200: NVDEC yes, NVENC no"}
	worker := AnnouncedNode{ID: "worker-host-12-abcd", Role: RoleWorker, Region: "eu-west", StartedAt: started, Transcode: gpu}
	origin := AnnouncedNode{ID: "origin-b", Role: RoleOrigin, Region: "eu-west", PublicURL: "https://b.example.com", StartedAt: started, Transcode: tc}
	plain := AnnouncedNode{ID: "origin-a", Role: RoleOrigin, PublicURL: "http://a:8080", StartedAt: started}
	for _, n := range []AnnouncedNode{worker, origin, plain} {
		if err := s.AnnounceNode(ctx, n, 30*time.Second); err != nil {
			t.Fatal(err)
		}
	}
	for _, bad := range []AnnouncedNode{
		{ID: "x", Role: "edge", StartedAt: started},
		{ID: "x", Role: RoleOrigin, PublicURL: "ftp://x", StartedAt: started},
		{ID: "x", Role: RoleOrigin, StartedAt: started},
		{Role: RoleWorker, StartedAt: started},
	} {
		if err := s.AnnounceNode(ctx, bad, 0); err == nil {
			t.Errorf("announced %+v", bad)
		}
	}
	for _, n := range []*AnnouncedNode{&worker, &origin, &plain} {
		n.LastSeen = now
	}
	got, err := s.AnnouncedNodes(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if want := []AnnouncedNode{plain, origin, worker}; !reflect.DeepEqual(got, want) {
		t.Fatalf("announced nodes:\n got %+v\nwant %+v", got, want)
	}
	// The record itself expires in Redis too (nothing is left behind by
	// a node that died).
	if ttl, err := s.rdb.PTTL(ctx, s.k(announcedPrefix)+worker.ID).Result(); err != nil || ttl <= 0 || ttl > 30*time.Second {
		t.Errorf("the worker's record has TTL %s (%v), want (0, 30s]", ttl, err)
	}
	// Not in the origins list, nor in the node registry.
	if o, err := s.ListOrigins(ctx); err != nil || len(o) != 0 {
		t.Errorf("origins list after announcing nodes: %q %v", o, err)
	}
	if nodes, err := s.ListNodes(ctx); err != nil || len(nodes) != 0 {
		t.Errorf("node registry after announcing nodes: %+v %v", nodes, err)
	}

	// 20 s later the worker renews its announcement with new figures
	// (its self-benchmark finished); 31 s after the first announcements
	// only it is left.
	now = now.Add(20 * time.Second)
	worker.Transcode = &nodeproto.Transcoding{Encoder: "nvenc", Decode: "cuda", GPUs: gpu.GPUs, Ladders: 20, LaddersFrom: "measured", RealtimeX: 5}
	if err := s.AnnounceNode(ctx, worker, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	worker.LastSeen = now
	now = now.Add(11 * time.Second)
	got, err = s.AnnouncedNodes(ctx)
	if err != nil || !reflect.DeepEqual(got, []AnnouncedNode{worker}) {
		t.Fatalf("after the origins expired: %+v %v, want only %+v", got, err, worker)
	}
	// An announcement prunes the expired ones from the index.
	if err := s.AnnounceNode(ctx, plain, 30*time.Second); err != nil {
		t.Fatal(err)
	}
	if ids, err := s.rdb.ZRange(ctx, s.k(announcedIndex), 0, -1).Result(); err != nil || !slices.Equal(ids, []string{worker.ID, plain.ID}) {
		t.Errorf("index after pruning: %q %v", ids, err)
	}

	// Withdrawn: gone at once, record and index.
	if err := s.WithdrawNode(ctx, worker.ID); err != nil {
		t.Fatal(err)
	}
	got, err = s.AnnouncedNodes(ctx)
	if err != nil || len(got) != 1 || got[0].ID != plain.ID || got[0].Transcode != nil {
		t.Fatalf("after the worker withdrew: %+v %v, want only %s without transcode", got, err, plain.ID)
	}
	if n, err := s.rdb.Exists(ctx, s.k(announcedPrefix)+worker.ID).Result(); err != nil || n != 0 {
		t.Errorf("the withdrawn worker's record is still there (%d, %v)", n, err)
	}

	// A record that vanished (expired in Redis before the index said so)
	// is skipped and pruned from the index.
	if err := s.rdb.Del(ctx, s.k(announcedPrefix)+plain.ID).Err(); err != nil {
		t.Fatal(err)
	}
	if got, err := s.AnnouncedNodes(ctx); err != nil || len(got) != 0 {
		t.Fatalf("after the record vanished: %+v %v", got, err)
	}
	if n, err := s.rdb.ZCard(ctx, s.k(announcedIndex)).Result(); err != nil || n != 0 {
		t.Errorf("index after the record vanished: %d entries (%v)", n, err)
	}
}
