package app

import (
	"os"
	"path/filepath"
	"testing"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/routing"
)

// TestPolicyKeptWhenRedisLosesData: what Redis told about a stream's or a
// video's playback policy is kept on disk, so that after Redis loses its
// data (restarted empty) or while it is down, signed content still needs a
// token and public content still plays; an id never seen is signed (fail
// closed) and a deleted one is unknown.
func TestPolicyKeptWhenRedisLosesData(t *testing.T) {
	t.Parallel()
	store, rs := newTestStore(t)
	ctx := t.Context()
	signedLS, err := store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "private", PlaybackPolicy: routing.PlaybackSigned})
	if err != nil {
		t.Fatal(err)
	}
	publicV, err := store.CreateVideo(ctx, routing.VideoSpec{Title: "public"})
	if err != nil {
		t.Fatal(err)
	}
	gone, err := store.CreateVideo(ctx, routing.VideoSpec{Title: "deleted"})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(t.TempDir(), "policies")
	p := newPolicyCache(store, dir)
	p.ttl = 0 // ask Redis every time
	if !p.signed(signedLS.ID) || p.signed(publicV.ID) || p.signed(gone.ID) {
		t.Fatal("the policies Redis tells are not answered")
	}
	if err := store.DeleteVideo(ctx, gone.ID); err != nil {
		t.Fatal(err)
	}
	if p.known(gone.ID) {
		t.Fatal("a deleted video is known")
	}
	if _, err := os.Stat(filepath.Join(dir, gone.ID)); !os.IsNotExist(err) {
		t.Fatalf("a deleted video's kept policy is left (%v)", err)
	}

	// Redis loses everything.
	rs.FlushAll(t)
	never := ids.New()
	check := func(when string, p *policyCache) {
		t.Helper()
		if !p.signed(signedLS.ID) {
			t.Errorf("%s: the signed stream became public", when)
		}
		if p.signed(publicV.ID) || !p.known(publicV.ID) {
			t.Errorf("%s: the public video is no longer served as public", when)
		}
		if !p.signed(never) {
			t.Errorf("%s: an id with no record and no kept policy is public", when)
		}
	}
	check("after FLUSHALL", p)
	// A restarted origin (an empty cache) with Redis down reads the same.
	rs.Kill()
	fresh := newPolicyCache(store, dir)
	check("Redis down, fresh cache", fresh)
}
