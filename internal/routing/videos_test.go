package routing

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
)

func TestVideoLifecycle(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	v, err := s.CreateVideo(ctx, VideoSpec{Title: "Cats", Ladder: "360p:700k"})
	if err != nil {
		t.Fatal(err)
	}
	if v.Status != VideoWaiting || v.PlaybackPolicy != PlaybackPublic || v.HasSource() {
		t.Fatalf("new video = %+v", v)
	}
	got, err := s.GetVideo(ctx, v.ID)
	if err != nil || got.Title != "Cats" || got.Ladder != "360p:700k" || !got.CreatedAt.Equal(v.CreatedAt) {
		t.Fatalf("GetVideo = %+v, %v", got, err)
	}
	title := "Dogs"
	if got, err = s.UpdateVideo(ctx, v.ID, VideoUpdate{Title: &title}); err != nil || got.Title != "Dogs" {
		t.Fatalf("UpdateVideo = %+v, %v", got, err)
	}
	if _, err := s.UpdateVideo(ctx, "nosuchvideo", VideoUpdate{Title: &title}); !errors.Is(err, ErrNotFound) {
		t.Fatalf("UpdateVideo(unknown) = %v", err)
	}

	// One upload at a time; after the source arrived, none.
	if err := s.BeginUpload(ctx, v.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginUpload(ctx, v.ID, "tus:abc"); !errors.Is(err, ErrConflict) {
		t.Fatalf("second BeginUpload = %v, want ErrConflict", err)
	}
	if err := s.AbortUpload(ctx, v.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := s.BeginUpload(ctx, v.ID, "tus:abc"); err != nil {
		t.Fatalf("BeginUpload after abort = %v", err)
	}
	if err := s.SourceReceived(ctx, v.ID, "put", SourceInfo{Bytes: 10}); !errors.Is(err, ErrConflict) {
		t.Fatalf("SourceReceived by a stale upload = %v", err)
	}
	if err := s.SourceReceived(ctx, v.ID, "tus:abc", SourceInfo{Bytes: 1234, Duration: 10 * time.Second}); err != nil {
		t.Fatal(err)
	}
	got, _ = s.GetVideo(ctx, v.ID)
	if got.Status != VideoProcessing || got.SourceBytes != 1234 || got.Duration != 10*time.Second || !got.HasSource() {
		t.Fatalf("after SourceReceived: %+v", got)
	}
	err = s.BeginUpload(ctx, v.ID, "put")
	if !errors.Is(err, ErrConflict) {
		t.Fatalf("BeginUpload on a video with a source = %v", err)
	}
	if err := s.DeleteVideo(ctx, v.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.GetVideo(ctx, v.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("GetVideo after delete = %v", err)
	}
	if err := s.DeleteVideo(ctx, v.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete = %v", err)
	}
	if err := s.BeginUpload(ctx, v.ID, "put"); !errors.Is(err, ErrNotFound) {
		t.Fatalf("BeginUpload on a deleted video = %v", err)
	}
}

func TestFailVideoAnnounces(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	v, _ := s.CreateVideo(ctx, VideoSpec{Title: "notes.txt"})
	if err := s.BeginUpload(ctx, v.ID, "put"); err != nil {
		t.Fatal(err)
	}
	if err := s.FailVideo(ctx, v.ID, "put", "not a video file: the format is not recognised"); err != nil {
		t.Fatal(err)
	}
	got, _ := s.GetVideo(ctx, v.ID)
	if got.Status != VideoFailed || got.Error != "not a video file: the format is not recognised" {
		t.Fatalf("failed video = %+v", got)
	}
	evs := readEvents(t, s)
	if len(evs) != 1 || evs[0]["type"] != EventVideoFailed {
		t.Fatalf("events = %v", evs)
	}
	if err := s.BeginUpload(ctx, v.ID, "put"); !errors.Is(err, ErrConflict) {
		t.Fatalf("upload to a failed video = %v", err)
	}
}

func readEvents(t *testing.T, s *Store) []map[string]any {
	t.Helper()
	msgs, err := s.rdb.XRange(t.Context(), s.k(eventsKey), "-", "+").Result()
	if err != nil {
		t.Fatal(err)
	}
	var out []map[string]any
	for _, m := range msgs {
		out = append(out, m.Values)
	}
	return out
}

func TestListVideosPages(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	var want []string
	for i := range 7 {
		v, err := s.CreateVideo(ctx, VideoSpec{Title: fmt.Sprint(i)})
		if err != nil {
			t.Fatal(err)
		}
		want = append([]string{v.ID}, want...) // newest first
	}
	var got []string
	cursor := ""
	for pages := 0; ; pages++ {
		if pages > 5 {
			t.Fatal("too many pages")
		}
		p, err := s.ListVideos(ctx, cursor, 3)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range p.Videos {
			got = append(got, v.ID)
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Fatalf("pages = %v, want %v", got, want)
	}
	// Videos created in one microsecond (one score) page as the others,
	// however many: the page after a cursor among them skipped the first
	// 32 and ended the listing early.
	same, err := s.rdb.ZScore(ctx, s.k(videosIndex), want[0]).Result()
	if err != nil {
		t.Fatal(err)
	}
	for range 60 {
		v, err := s.CreateVideo(ctx, VideoSpec{Title: "burst"})
		if err != nil {
			t.Fatal(err)
		}
		if err := s.rdb.ZAdd(ctx, s.k(videosIndex), redis.Z{Score: same, Member: v.ID}).Err(); err != nil {
			t.Fatal(err)
		}
	}
	seen := map[string]bool{}
	cursor = ""
	for pages := 0; ; pages++ {
		if pages > 40 {
			t.Fatal("too many pages")
		}
		p, err := s.ListVideos(ctx, cursor, 2)
		if err != nil {
			t.Fatal(err)
		}
		for _, v := range p.Videos {
			if seen[v.ID] {
				t.Fatalf("%s listed twice", v.ID)
			}
			seen[v.ID] = true
		}
		if p.Next == "" {
			break
		}
		cursor = p.Next
	}
	if len(seen) != 67 {
		t.Fatalf("the pages listed %d videos of 67", len(seen))
	}
	for _, bad := range []string{"x", "12-", "-abc", "12-ABC", "1.5-abc"} {
		if _, err := s.ListVideos(ctx, bad, 3); !errors.Is(err, ErrInvalidCursor) {
			t.Errorf("ListVideos(cursor %q) = %v, want ErrInvalidCursor", bad, err)
		}
	}
}

func TestVideoPlaybackPolicy(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	v, err := s.CreateVideo(ctx, VideoSpec{PlaybackPolicy: PlaybackSigned})
	if err != nil || v.PlaybackPolicy != PlaybackSigned {
		t.Fatalf("CreateVideo(signed) = %+v, %v", v, err)
	}
	if got, err := s.GetVideo(ctx, v.ID); err != nil || got.PlaybackPolicy != PlaybackSigned {
		t.Fatalf("GetVideo = %+v, %v", got, err)
	}
	if _, err := s.CreateVideo(ctx, VideoSpec{PlaybackPolicy: "secret"}); err == nil {
		t.Error("CreateVideo accepted an unknown policy")
	}
}

// An upload's reservation is a lease: renewed while bytes arrive, taken over
// by the next upload once it ran out (a crashed or stalled client no longer
// keeps the video in 409 forever); the stalled one then learns it lost it.
func TestUploadLease(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	clock := time.Date(2026, 12, 5, 0, 0, 0, 0, time.UTC)
	s.redisClock = func() time.Time { return clock }
	ctx := t.Context()
	v, err := s.CreateVideo(ctx, VideoSpec{Title: "lease"})
	if err != nil {
		t.Fatal(err)
	}
	if err := s.BeginUpload(ctx, v.ID, "put:a"); err != nil {
		t.Fatal(err)
	}
	clock = clock.Add(UploadLease - time.Second)
	if err := s.BeginUpload(ctx, v.ID, "put:b"); !errors.Is(err, ErrConflict) {
		t.Fatalf("within the lease: %v", err)
	}
	if ok, err := s.RenewUpload(ctx, v.ID, "put:a"); !ok || err != nil {
		t.Fatalf("renew: %v %v", ok, err)
	}
	clock = clock.Add(UploadLease - time.Second) // renewed: still held
	if err := s.BeginUpload(ctx, v.ID, "put:b"); !errors.Is(err, ErrConflict) {
		t.Fatalf("after a renewal: %v", err)
	}
	clock = clock.Add(2 * time.Second) // stalled past the lease
	if err := s.BeginUpload(ctx, v.ID, "put:b"); err != nil {
		t.Fatalf("after the lease ran out: %v", err)
	}
	if ok, err := s.RenewUpload(ctx, v.ID, "put:a"); ok || err != nil {
		t.Fatalf("the stalled upload still holds it: %v %v", ok, err)
	}
	if err := s.SourceReceived(ctx, v.ID, "put:a", SourceInfo{Bytes: 1}); err == nil {
		t.Fatal("the stalled upload completed over the new one")
	}
	if err := s.SourceReceived(ctx, v.ID, "put:b", SourceInfo{Bytes: 1}); err != nil {
		t.Fatal(err)
	}
}

// P2P is on unless turned off; turning it off or on again tells the edges
// (an invalidation that keeps the policy), and a change to nothing else
// does not.
func TestP2PFlag(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	count := func() int {
		t.Helper()
		invs, _, err := s.Invalidations(ctx, "", 100)
		if err != nil {
			t.Fatal(err)
		}
		return len(invs)
	}
	off, on := false, true
	v, err := s.CreateVideo(ctx, VideoSpec{PlaybackPolicy: PlaybackSigned})
	if err != nil || v.P2POff {
		t.Fatalf("CreateVideo = %+v, %v; want P2P on", v, err)
	}
	if v, err = s.UpdateVideo(ctx, v.ID, VideoUpdate{P2P: &off}); err != nil || !v.P2POff || count() != 1 {
		t.Fatalf("UpdateVideo(p2p off) = %+v, %v, %d invalidations", v, err, count())
	}
	if invs, _, _ := s.Invalidations(ctx, "", 100); invs[0].ID != v.ID || !invs[0].Signed || invs[0].Deleted {
		t.Fatalf("invalidation %+v", invs[0])
	}
	title := "same flag"
	if v, err = s.UpdateVideo(ctx, v.ID, VideoUpdate{Title: &title, P2P: &off}); err != nil || !v.P2POff || count() != 1 {
		t.Fatalf("UpdateVideo(title) = %+v, %v, %d invalidations", v, err, count())
	}
	if v, err = s.UpdateVideo(ctx, v.ID, VideoUpdate{P2P: &on}); err != nil || v.P2POff || count() != 2 {
		t.Fatalf("UpdateVideo(p2p on) = %+v, %v, %d invalidations", v, err, count())
	}

	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "cam", P2POff: true})
	if err != nil || !ls.P2POff {
		t.Fatalf("CreateLiveStream(p2p off) = %+v, %v", ls, err)
	}
	if got, err := s.GetLiveStream(ctx, ls.ID); err != nil || !got.P2POff {
		t.Fatalf("GetLiveStream = %+v, %v", got, err)
	}
	if got, err := s.UpdateLiveStream(ctx, ls.ID, LiveStreamUpdate{P2P: &on}); err != nil || got.P2POff || count() != 3 {
		t.Fatalf("UpdateLiveStream(p2p on) = %+v, %v, %d invalidations", got, err, count())
	}
	if got, err := s.UpdateLiveStream(ctx, ls.ID, LiveStreamUpdate{P2P: &on}); err != nil || got.P2POff || count() != 3 {
		t.Fatalf("UpdateLiveStream(p2p on again) = %+v, %v, %d invalidations", got, err, count())
	}
}
