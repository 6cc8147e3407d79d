package app

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/ingest"
	"github.com/shoal-video/shoal/internal/routing"
	"github.com/shoal-video/shoal/internal/testutil"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// testOrigin is the ingest key check of one origin on a shared Redis: its
// own store (connections) and authorizer, following the key revocations.
type testOrigin struct {
	store   *routing.Store
	keys    *keyAuthorizer
	revoked chan string // the ids whose publisher it was told to disconnect
	logs    *testutil.Buffer
}

func startTestOrigin(t *testing.T, redisURL string) *testOrigin {
	t.Helper()
	store, err := routing.NewStore(redisURL)
	if err != nil {
		t.Fatal(err)
	}
	o := &testOrigin{store: store, revoked: make(chan string, 100), logs: &testutil.Buffer{}}
	o.keys = newKeyAuthorizer(store, slog.New(slog.NewTextHandler(o.logs, nil)))
	o.keys.revoke = func(id string) { o.revoked <- id }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.keys.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("key authorizer: %v", err)
		}
		_ = store.Close()
	})
	// Following: what it accepts from now on is remembered.
	o.waitState(t, followUp)
	return o
}

func (o *testOrigin) waitState(t *testing.T, want int) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	for {
		o.keys.mu.Lock()
		state, changed := o.keys.state, o.keys.changed
		o.keys.mu.Unlock()
		if state == want {
			return
		}
		select {
		case <-changed:
		case <-deadline.C:
			t.Fatalf("the key authorizer's follower is in state %d, want %d", state, want)
		}
	}
}

func (o *testOrigin) accepts(t *testing.T, key, want string) {
	t.Helper()
	if id, err := o.keys.Authorize(t.Context(), key); err != nil || id != want {
		t.Errorf("Authorize = %q, %v; want %q", id, err, want)
	}
}

func (o *testOrigin) refuses(t *testing.T, key string) {
	t.Helper()
	if id, err := o.keys.Authorize(t.Context(), key); err == nil {
		t.Errorf("Authorize accepted a revoked key (stream %s)", id)
	}
}

// TestResetKeyReachesEveryOrigin: a key reset through one origin makes
// every origin on the same Redis disconnect the stream's publisher within
// a second and forget the old key, so that when Redis then goes down the
// old key is refused there while other remembered keys still let their
// publishers reconnect.
func TestResetKeyReachesEveryOrigin(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	a := startTestOrigin(t, rs.URL)
	b := startTestOrigin(t, rs.URL)
	ctx := t.Context()
	reset, _ := a.store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "reset"})
	other, _ := a.store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "other"})
	// Origin b accepted both publishers (and remembers their keys).
	b.accepts(t, reset.StreamKey, reset.ID)
	b.accepts(t, other.StreamKey, other.ID)

	if _, err := a.store.ResetStreamKey(ctx, reset.ID); err != nil {
		t.Fatal(err)
	}
	for _, o := range []*testOrigin{a, b} {
		select {
		case id := <-o.revoked:
			if id != reset.ID {
				t.Errorf("publisher of %s disconnected, want %s", id, reset.ID)
			}
		case <-time.After(time.Second):
			t.Fatal("an origin did not disconnect the publisher within a second of the reset")
		}
	}
	rs.Kill()
	b.waitState(t, followDown)
	b.refuses(t, reset.StreamKey)
	b.accepts(t, other.StreamKey, other.ID)
	a.refuses(t, reset.StreamKey)
}

// TestResetKeyRefusedWhenRedisDiesRightAfter: Redis dies as soon as the
// reset is answered, before anyone waited for the other origin to hear of
// it: that origin still never accepts the old key from its memory.
func TestResetKeyRefusedWhenRedisDiesRightAfter(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	b := startTestOrigin(t, rs.URL)
	store, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	defer store.Close()
	ctx := t.Context()
	reset, _ := store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "reset"})
	other, _ := store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "other"})
	b.accepts(t, reset.StreamKey, reset.ID)
	b.accepts(t, other.StreamKey, other.ID)
	if _, err := store.ResetStreamKey(ctx, reset.ID); err != nil {
		t.Fatal(err)
	}
	rs.Kill()
	b.refuses(t, reset.StreamKey)
	b.accepts(t, other.StreamKey, other.ID)
}

// TestKeyAuthorizerAfterRedisReturns: once Redis is back (here empty, as
// after losing its data) the follower follows again, nothing remembered
// from before is used, and keys are checked against Redis again.
func TestKeyAuthorizerAfterRedisReturns(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	o := startTestOrigin(t, rs.URL)
	ctx := t.Context()
	ls, _ := o.store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "s"})
	o.accepts(t, ls.StreamKey, ls.ID)
	rs.Kill()
	o.waitState(t, followDown)
	o.accepts(t, ls.StreamKey, ls.ID) // remembered
	rs.Restart(t)
	o.waitState(t, followUp)
	if _, err := o.keys.Authorize(ctx, ls.StreamKey); !errors.Is(err, ingest.ErrUnknownKey) {
		t.Errorf("a key the restarted Redis does not know: %v, want ErrUnknownKey", err)
	}
	if !strings.Contains(o.logs.String(), "following stream key resets again") {
		t.Errorf("no log of the follower's return:\n%s", o.logs.String())
	}
}

func TestAuthorizeAPIKeyPublish(t *testing.T) {
	t.Parallel()
	store, rs := newTestStore(t)
	ctx := t.Context()
	ls, _ := store.CreateLiveStream(ctx, routing.LiveStreamSpec{Name: "s"})
	issued, _, err := store.CreateAPIKey(ctx, "dashboard", []string{routing.ScopeStreams})
	if err != nil {
		t.Fatal(err)
	}
	readOnly, _, err := store.CreateAPIKey(ctx, "viewer", []string{routing.ScopeReadOnly, routing.ScopeVideos})
	if err != nil {
		t.Fatal(err)
	}
	const admin = "admin-key-for-the-test"
	for _, c := range []struct {
		name, key, id string
		want          error
	}{
		{"admin key", admin, ls.ID, nil},
		{"issued API key", issued, ls.ID, nil},
		{"an API key without the streams scope", readOnly, ls.ID, ingest.ErrNotPermitted},
		{"the stream key is not an API key", ls.StreamKey, ls.ID, ingest.ErrUnknownKey},
		{"unknown API key", ids.NewSecret("shoal"), ls.ID, ingest.ErrUnknownKey},
		{"garbage", "x", ls.ID, ingest.ErrUnknownKey},
		{"unknown stream", admin, "nosuchstream", ingest.ErrUnknownStream},
		{"invalid id", issued, "../x", ingest.ErrUnknownStream},
	} {
		if err := authorizeAPIKeyPublish(ctx, store, ids.Hash(admin), c.key, c.id); !errors.Is(err, c.want) {
			t.Errorf("%s: %v, want %v", c.name, err, c.want)
		}
	}
	rs.Kill()
	if err := authorizeAPIKeyPublish(ctx, store, ids.Hash(admin), issued, ls.ID); !errors.Is(err, routing.ErrUnavailable) {
		t.Errorf("with Redis down: %v, want ErrUnavailable", err)
	}
}

// TestDevStreamKey: shoal dev prints a working key for its stream on every
// start: the saved one while it is the stream's key, a new one (the old
// reset) when it is not, e.g. for a stream created before keys were stored
// hashed.
func TestDevStreamKey(t *testing.T) {
	t.Parallel()
	store, _ := newTestStore(t)
	ctx := t.Context()
	dir := t.TempDir()
	works := func(ls routing.LiveStream) {
		t.Helper()
		if id, err := store.LiveStreamIDByKey(ctx, ls.StreamKey); err != nil || id != ls.ID || ls.Name != devStreamName {
			t.Fatalf("dev stream %+v: its key resolves to %q, %v", ls, id, err)
		}
	}
	first, err := devStream(ctx, store, dir)
	if err != nil {
		t.Fatal(err)
	}
	works(first)
	if fi, err := os.Stat(filepath.Join(dir, devStreamKeyFile)); err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("saved key file: %v, %v", fi, err)
	}
	again, err := devStream(ctx, store, dir)
	if err != nil || again.ID != first.ID || again.StreamKey != first.StreamKey {
		t.Fatalf("second start: %+v, %v; want the same stream and key", again, err)
	}
	// The key was reset from the dashboard: the next start makes a new one.
	if _, err := store.ResetStreamKey(ctx, first.ID); err != nil {
		t.Fatal(err)
	}
	third, err := devStream(ctx, store, dir)
	if err != nil || third.ID != first.ID || third.StreamKey == first.StreamKey {
		t.Fatalf("after a reset: %+v, %v", third, err)
	}
	works(third)
	// No saved key (a data dir from before): likewise.
	if err := os.Remove(filepath.Join(dir, devStreamKeyFile)); err != nil {
		t.Fatal(err)
	}
	fourth, err := devStream(ctx, store, dir)
	if err != nil || fourth.ID != first.ID || fourth.StreamKey == third.StreamKey {
		t.Fatalf("without the saved key: %+v, %v", fourth, err)
	}
	works(fourth)
	if _, err := store.LiveStreamIDByKey(ctx, third.StreamKey); !errors.Is(err, routing.ErrNotFound) {
		t.Errorf("the replaced key still works: %v", err)
	}
}

// TestResetKeyOnAnotherOrigin: two origins share one Redis. A key reset
// through one disconnects the publisher on the other at once, and when
// Redis then dies that origin refuses the old key while a key it
// remembers for another stream still lets its publisher back in.
func TestResetKeyOnAnotherOrigin(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	a := startNodeOn(t, rs, "SHOAL_VOD_WORKERS=0")
	b := startNodeOn(t, rs, "SHOAL_VOD_WORKERS=0")
	ls := a.createStream("reset elsewhere")
	other := a.createStream("other")
	// b accepts (and remembers) other's key.
	if err := publish(t, clip(t, 1), b.rtmp+"/"+other.StreamKey).Wait(); err != nil {
		t.Fatalf("publishing other on b: %v", err)
	}
	pub := publish(t, clip(t, 60), b.rtmp+"/"+ls.StreamKey)
	exited := make(chan error, 1)
	go func() { exited <- pub.Wait() }()
	b.waitFor("the stream live on b", 15*time.Second, func() bool { return b.status(ls.ID) == "live" })
	if code, body := a.do(http.MethodPost, "/v1/live-streams/"+ls.ID+"/reset-stream-key", testAdminKey, nil); code != http.StatusOK {
		t.Fatalf("reset through a: %d %s", code, body)
	}
	start := time.Now()
	select {
	case <-exited:
		// b closed the connection; ffmpeg exits when it notices.
		if d := time.Since(start); d > 2*time.Second {
			t.Errorf("the publisher on b was cut off %v after the reset through a", d)
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the publisher on b is still connected 20 s after the reset through a")
	}
	rs.Kill()
	if out, err := exec.Command("ffmpeg", "-v", "error", "-i", clip(t, 1), "-c", "copy", "-f", "flv",
		b.rtmp+"/"+ls.StreamKey).CombinedOutput(); err == nil {
		t.Fatalf("b accepted the reset key while Redis is down\n%s", out)
	}
	if err := publish(t, clip(t, 1), b.rtmp+"/"+other.StreamKey).Wait(); err != nil {
		t.Errorf("b refused a key it remembers while Redis is down: %v", err)
	}
}

// TestLegacyStreamKeyMigratedAtStart: a live stream written before stream
// keys were stored hashed (its plain key in the record) is migrated when
// the origin starts, and its key goes on working.
func TestLegacyStreamKeyMigratedAtStart(t *testing.T) {
	t.Parallel()
	rs := redistest.Start(t)
	opt, err := redis.ParseURL(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	rdb := redis.NewClient(opt)
	defer rdb.Close()
	ctx := t.Context()
	const id, plain = "legacystream", "sk_legacylegacylegacylegacylegacyle"
	// What the old CreateLiveStream wrote.
	if err := rdb.HSet(ctx, "shoal:livestream:"+id, "name", "old show", "stream_key", plain,
		"created_at", time.Now().UTC().Format(time.RFC3339Nano), "playback_policy", "public", "ladder", "", "source_url", "").Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.Set(ctx, "shoal:streamkey:"+ids.Hash(plain), id, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := rdb.ZAdd(ctx, "shoal:livestreams", redis.Z{Score: float64(time.Now().UnixMilli()), Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
	n := startNodeOn(t, rs)
	n.waitFor("the plain key to be replaced by its hash", 10*time.Second, func() bool {
		f := rdb.HGetAll(ctx, "shoal:livestream:"+id).Val()
		_, plainLeft := f["stream_key"]
		return !plainLeft && f["stream_key_hash"] == ids.Hash(plain)
	})
	if code, body := n.get("/v1/live-streams/"+id, testAdminKey); code != http.StatusOK || strings.Contains(string(body), "stream_key") {
		t.Errorf("GET of the migrated stream: %d %s", code, body)
	}
	pub := publish(t, clip(t, 6), n.rtmp+"/"+plain)
	n.waitFor("the stream live with its old key", 15*time.Second, func() bool { return n.status(id) == "live" })
	if err := pub.Wait(); err != nil {
		t.Errorf("publishing with the migrated stream's key: %v", err)
	}
}

// flakyKeys is the real store with Redis failures switched on and off: a
// network between the origin and Redis that flaps. failFeed fails only the
// revocation feed's reads (the follower lags), failAll every call.
type flakyKeys struct {
	*routing.Store
	failFeed, failAll atomic.Bool
}

func (f *flakyKeys) LiveStreamIDByKey(ctx context.Context, key string) (string, error) {
	if f.failAll.Load() {
		return "", routing.ErrUnavailable
	}
	return f.Store.LiveStreamIDByKey(ctx, key)
}

func (f *flakyKeys) KeyRevocations(ctx context.Context, cursor string, block time.Duration) ([]routing.KeyRevocation, string, error) {
	if f.failAll.Load() || f.failFeed.Load() {
		return nil, "", routing.ErrUnavailable
	}
	return f.Store.KeyRevocations(ctx, cursor, block)
}

// TestResetKeyRefusedAfterRedisFlaps: Redis goes away, comes back while
// this origin's follower has not read the feed again, a key is reset on
// another origin, and Redis goes away again: the old key is not let in
// from memory, because a lookup that reached Redis while the follower lagged
// emptied it.
func TestResetKeyRefusedAfterRedisFlaps(t *testing.T) {
	t.Parallel()
	store, _ := newTestStore(t)
	flaky := &flakyKeys{Store: store}
	o := &testOrigin{store: store, revoked: make(chan string, 100), logs: &testutil.Buffer{}}
	o.keys = newKeyAuthorizer(flaky, slog.New(slog.NewTextHandler(o.logs, nil)))
	o.keys.revoke = func(id string) { o.revoked <- id }
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- o.keys.Run(ctx) }()
	defer func() { cancel(); <-done }()
	o.waitState(t, followUp)

	reset, _ := store.CreateLiveStream(t.Context(), routing.LiveStreamSpec{Name: "reset"})
	other, _ := store.CreateLiveStream(t.Context(), routing.LiveStreamSpec{Name: "other"})
	o.accepts(t, reset.StreamKey, reset.ID)
	// Redis goes away: remembered keys let publishers back in.
	flaky.failAll.Store(true)
	o.waitState(t, followDown)
	o.accepts(t, reset.StreamKey, reset.ID)
	// It comes back, but the follower has not read the feed yet; a lookup
	// reaches it.
	flaky.failFeed.Store(true)
	flaky.failAll.Store(false)
	o.accepts(t, other.StreamKey, other.ID)
	// Another origin resets the key; Redis goes away again.
	if _, err := store.ResetStreamKey(t.Context(), reset.ID); err != nil {
		t.Fatal(err)
	}
	flaky.failAll.Store(true)
	o.refuses(t, reset.StreamKey)
}

// newTestStore is a store on a Redis of the test's own.
func newTestStore(t *testing.T) (*routing.Store, *redistest.Server) {
	t.Helper()
	rs := redistest.Start(t)
	store, err := routing.NewStore(rs.URL)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = store.Close() })
	return store, rs
}
