package routing

import (
	"errors"
	"testing"
)

func TestRestreamsCRUD(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "show"})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRestream(ctx, "nosuchstream12345678", Restream{Name: "x", URL: "rtmp://a/b/c"}, 2); !errors.Is(err, ErrNotFound) {
		t.Fatalf("add to a missing stream: %v", err)
	}
	a, err := s.AddRestream(ctx, ls.ID, Restream{Name: "YouTube", URL: "rtmp://a.rtmp.youtube.com/live2/key1"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.AddRestream(ctx, ls.ID, Restream{Name: "Twitch", URL: "rtmp://live.twitch.tv/app/key2", Rendition: "720p"}, 2)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.AddRestream(ctx, ls.ID, Restream{Name: "third", URL: "rtmp://c/d/e"}, 2); !errors.Is(err, ErrTooMany) {
		t.Fatalf("a third target past the limit of 2: %v", err)
	}
	list, err := s.ListRestreams(ctx, ls.ID)
	if err != nil {
		t.Fatal(err)
	}
	if len(list) != 2 || list[0].ID != a.ID || list[1].ID != b.ID || list[1].Rendition != "720p" || list[0].URL != a.URL {
		t.Fatalf("list %+v", list)
	}
	if err := s.DeleteRestream(ctx, ls.ID, a.ID); err != nil {
		t.Fatal(err)
	}
	if err := s.DeleteRestream(ctx, ls.ID, a.ID); !errors.Is(err, ErrNotFound) {
		t.Fatalf("second delete: %v", err)
	}
	// Deleting the stream deletes its targets.
	if err := s.DeleteLiveStream(ctx, ls.ID); err != nil {
		t.Fatal(err)
	}
	if list, err = s.ListRestreams(ctx, ls.ID); err != nil || len(list) != 0 {
		t.Fatalf("after the stream was deleted: %v %+v", err, list)
	}
}
