package routing

import (
	"context"
	"errors"
	"fmt"
	"reflect"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/shoal-video/shoal/internal/ids"
	"github.com/shoal-video/shoal/internal/testutil/redistest"
)

// secondStore is a Store on srv (another one there: another origin's
// connection), closed when the test ends.
func secondStore(t *testing.T, srv *testRedis) *Store {
	t.Helper()
	s, err := NewStore(srv.URL)
	if err != nil {
		t.Fatalf("NewStore(%q): %v", srv.URL, err)
	}
	if srv.prefix != "" {
		s.prefix = srv.prefix
	}
	recordScripts(t, s)
	t.Cleanup(func() { _ = s.Close() })
	return s
}

// newTestStore starts a private Redis and returns a Store on it. On a
// cluster (SHOAL_TEST_REDIS=cluster: one per test; or the one
// TestRoutingOnRedisCluster shares) see cluster_test.go.
func newTestStore(t *testing.T) (*Store, *testRedis) {
	t.Helper()
	srv := &testRedis{}
	switch {
	case sharedClusterURL() != "":
		srv.URL = sharedClusterURL()
		srv.prefix = fmt.Sprintf("{shoal-%d}:", testPrefixes.Add(1))
	case onCluster():
		srv.cluster = redistest.StartCluster(t)
		srv.URL = srv.cluster.URL
	default:
		srv.single = redistest.Start(t)
		srv.URL = srv.single.URL
	}
	s := secondStore(t, srv)
	if err := s.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	return s, srv
}

func TestNewStoreBadURL(t *testing.T) {
	t.Parallel()
	for _, u := range []string{"", "http://localhost:6379", "redis://:secretpw@host:notaport/0", "redis://localhost:6379/notadb", "::",
		"redis+cluster://a:1,,b:2/", "redis+cluster://:secretpw@a:1,b/", "redis+cluster://a:1/2", "rediss+cluster://", "redis+cluster://a:1/?x=%zz"} {
		s, err := NewStore(u)
		if err == nil {
			s.Close()
			t.Errorf("NewStore(%q) succeeded, want error", u)
			continue
		}
		if !strings.Contains(err.Error(), "invalid Redis URL") {
			t.Errorf("NewStore(%q) error %q does not say the URL is invalid", u, err)
		}
		if strings.Contains(err.Error(), "secretpw") {
			t.Errorf("NewStore(%q) error leaks the password: %q", u, err)
		}
	}
}

// A redis+cluster:// URL makes a cluster client on its nodes, and names
// keys with the {shoal} hash tag; redis:// keeps the shoal: names.
func TestNewStoreCluster(t *testing.T) {
	t.Parallel()
	s, err := NewStore("redis+cluster://u:pw@127.0.0.1:1,127.0.0.1:2/?dial_timeout=3s")
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	c, ok := s.rdb.(*redis.ClusterClient)
	if !ok || !s.Cluster() {
		t.Fatalf("client %T, Cluster() = %v", s.rdb, s.Cluster())
	}
	o := c.Options()
	if !reflect.DeepEqual(o.Addrs, []string{"127.0.0.1:1", "127.0.0.1:2"}) || o.Username != "u" || o.Password != "pw" ||
		o.DialTimeout != dialTimeout || o.ReadTimeout != ioTimeout || o.MaxRetries != maxRetries {
		t.Fatalf("options = %+v", o)
	}
	if k := s.k(videoPrefix) + "v1"; k != "{shoal}:video:v1" {
		t.Fatalf("key %q", k)
	}
	tls, err := NewStore("rediss+cluster://cache:6380")
	if err != nil {
		t.Fatal(err)
	}
	defer tls.Close()
	if o := tls.rdb.(*redis.ClusterClient).Options(); o.TLSConfig == nil || !reflect.DeepEqual(o.Addrs, []string{"cache:6380"}) {
		t.Fatalf("TLS options = %+v", o)
	}
	single, err := NewStore("redis://127.0.0.1:1/0")
	if err != nil {
		t.Fatal(err)
	}
	defer single.Close()
	if single.Cluster() || single.k(videoPrefix)+"v1" != "shoal:video:v1" {
		t.Fatalf("single Redis: cluster %v, key %q", single.Cluster(), single.k(videoPrefix)+"v1")
	}
}

func TestNewStoreDoesNotConnect(t *testing.T) {
	t.Parallel()
	// Nothing listens on port 1; NewStore must still succeed.
	s, err := NewStore("redis://127.0.0.1:1/0")
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	defer s.Close()
	err = s.Ping(t.Context())
	if !errors.Is(err, ErrUnavailable) || !strings.HasPrefix(err.Error(), "redis unreachable: ") {
		t.Fatalf("Ping = %v, want a 'redis unreachable: ...' error wrapping ErrUnavailable", err)
	}
}

func TestLiveStreamCRUD(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()

	before := time.Now().Add(-time.Second)
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "my show"})
	if err != nil {
		t.Fatalf("CreateLiveStream: %v", err)
	}
	if !ids.Valid(ls.ID) || len(ls.ID) != 20 {
		t.Errorf("id %q is not a fresh id", ls.ID)
	}
	if !ids.LooksLikeSecret("sk", ls.StreamKey) {
		t.Errorf("stream key %q does not look like sk_<secret>", ls.StreamKey)
	}
	if ls.Name != "my show" || ls.PlaybackPolicy != PlaybackPublic {
		t.Errorf("created %+v", ls)
	}
	if ls.CreatedAt.Before(before) || ls.CreatedAt.After(time.Now().Add(time.Second)) {
		t.Errorf("CreatedAt %v is not now", ls.CreatedAt)
	}

	if ls.StreamKeyHash != ids.Hash(ls.StreamKey) {
		t.Errorf("StreamKeyHash %q, want the hash of %q", ls.StreamKeyHash, ls.StreamKey)
	}
	got, err := s.GetLiveStream(ctx, ls.ID)
	if err != nil {
		t.Fatalf("GetLiveStream: %v", err)
	}
	// Only the hash is stored: the key is seen once, when it is made.
	stored := ls
	stored.StreamKey = ""
	if got != stored {
		t.Errorf("GetLiveStream = %+v, want %+v", got, stored)
	}

	id, err := s.LiveStreamIDByKey(ctx, ls.StreamKey)
	if err != nil || id != ls.ID {
		t.Fatalf("LiveStreamIDByKey = %q, %v; want %q", id, err, ls.ID)
	}

	upd, err := s.UpdateLiveStream(ctx, ls.ID, LiveStreamUpdate{Name: ptr("renamed")})
	if err != nil {
		t.Fatalf("UpdateLiveStream: %v", err)
	}
	want := stored
	want.Name = "renamed"
	if upd != want {
		t.Errorf("UpdateLiveStream = %+v, want %+v", upd, want)
	}
	if got, _ := s.GetLiveStream(ctx, ls.ID); got != want {
		t.Errorf("after update GetLiveStream = %+v, want %+v", got, want)
	}

	if err := s.DeleteLiveStream(ctx, ls.ID); err != nil {
		t.Fatalf("DeleteLiveStream: %v", err)
	}
	if _, err := s.GetLiveStream(ctx, ls.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetLiveStream after delete: %v, want ErrNotFound", err)
	}
	if _, err := s.LiveStreamIDByKey(ctx, ls.StreamKey); !errors.Is(err, ErrNotFound) {
		t.Errorf("LiveStreamIDByKey after delete: %v, want ErrNotFound", err)
	}
	list, err := s.ListLiveStreams(ctx)
	if err != nil || len(list) != 0 {
		t.Errorf("ListLiveStreams after delete = %v, %v; want empty", list, err)
	}
	// Nothing is left behind in Redis but the (bounded) invalidation feed
	// telling edges about the deletion and the id's tombstone (which
	// expires).
	keys, err := allKeys(ctx, s, "*")
	if err != nil || len(leftBehind(s, keys)) != 0 {
		t.Errorf("keys left after delete: %v, %v", keys, err)
	}
	if ttl := s.rdb.TTL(ctx, s.deletedKey(ls.ID)).Val(); ttl <= 0 || ttl > DeletedTTL {
		t.Errorf("the tombstone's TTL is %s", ttl)
	}
	if gone, err := s.WasDeleted(ctx, ls.ID); !gone || err != nil {
		t.Errorf("WasDeleted = %v, %v", gone, err)
	}
	inv, cursor, err := s.Invalidations(ctx, "", 100)
	if err != nil || len(inv) == 0 || !inv[len(inv)-1].Deleted || cursor == "" {
		t.Errorf("invalidations %+v %q %v", inv, cursor, err)
	}
	if more, next, err := s.Invalidations(ctx, cursor, 100); err != nil || len(more) != 0 || next != cursor {
		t.Errorf("after the cursor: %+v %q %v", more, next, err)
	}
}

func TestMissingLiveStream(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	const id = "doesnotexist"
	if _, err := s.GetLiveStream(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetLiveStream: %v", err)
	}
	if _, err := s.UpdateLiveStream(ctx, id, LiveStreamUpdate{Name: ptr("x")}); !errors.Is(err, ErrNotFound) {
		t.Errorf("UpdateLiveStream: %v", err)
	}
	if err := s.DeleteLiveStream(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteLiveStream: %v", err)
	}
	if _, err := s.ResetStreamKey(ctx, id); !errors.Is(err, ErrNotFound) {
		t.Errorf("ResetStreamKey: %v", err)
	}
	if _, err := s.LiveStreamIDByKey(ctx, "sk_nosuchkey"); !errors.Is(err, ErrNotFound) {
		t.Errorf("LiveStreamIDByKey: %v", err)
	}
	// Updating a missing stream must not create it.
	if n, _ := s.rdb.Exists(ctx, s.liveStreamKey(id)).Result(); n != 0 {
		t.Errorf("UpdateLiveStream of a missing stream created it")
	}
}

func TestResetStreamKey(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "reset me"})
	if err != nil {
		t.Fatal(err)
	}
	reset, err := s.ResetStreamKey(ctx, ls.ID)
	if err != nil {
		t.Fatalf("ResetStreamKey: %v", err)
	}
	if reset.StreamKey == ls.StreamKey || !ids.LooksLikeSecret("sk", reset.StreamKey) {
		t.Fatalf("new key %q (old %q)", reset.StreamKey, ls.StreamKey)
	}
	if reset.ID != ls.ID || reset.Name != ls.Name || !reset.CreatedAt.Equal(ls.CreatedAt) {
		t.Errorf("reset changed more than the key: %+v -> %+v", ls, reset)
	}
	if _, err := s.LiveStreamIDByKey(ctx, ls.StreamKey); !errors.Is(err, ErrNotFound) {
		t.Errorf("old key still resolves: %v", err)
	}
	if id, err := s.LiveStreamIDByKey(ctx, reset.StreamKey); err != nil || id != ls.ID {
		t.Errorf("new key resolves to %q, %v; want %q", id, err, ls.ID)
	}
	if got, _ := s.GetLiveStream(ctx, ls.ID); got.StreamKey != "" || got.StreamKeyHash != ids.Hash(reset.StreamKey) {
		t.Errorf("GetLiveStream shows key %q, hash %q; want no key and the new key's hash", got.StreamKey, got.StreamKeyHash)
	}
	noPlainKeys(t, s, ls.StreamKey, reset.StreamKey)
	if n, _ := allKeys(ctx, s, s.k(streamKeyPrefix)+"*"); len(n) != 1 {
		t.Errorf("stream key index has %d entries, want 1", len(n))
	}
}

func TestConcurrentResetAndDeleteLeaveNoOrphans(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	const streams = 10
	var created []LiveStream
	for range streams {
		ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "race"})
		if err != nil {
			t.Fatal(err)
		}
		created = append(created, ls)
	}
	var wg sync.WaitGroup
	for _, ls := range created {
		// The delete starts once a reset has gone through, while the
		// others are still resetting.
		reset := make(chan struct{})
		var once sync.Once
		for range 4 {
			wg.Go(func() {
				for range 5 {
					_, _ = s.ResetStreamKey(ctx, ls.ID)
					once.Do(func() { close(reset) })
				}
			})
		}
		wg.Go(func() {
			<-reset
			if err := s.DeleteLiveStream(ctx, ls.ID); err != nil {
				t.Errorf("DeleteLiveStream: %v", err)
			}
		})
	}
	wg.Wait()
	keys, err := allKeys(ctx, s, "*")
	if err != nil || len(leftBehind(s, keys)) != 0 {
		t.Errorf("keys left after concurrent resets and deletes: %v, %v", keys, err)
	}
}

// leftBehind is keys without what a deletion leaves on purpose: the
// invalidation feed, the key revocations and tombstones (they expire).
func leftBehind(s *Store, keys []string) []string {
	var out []string
	for _, k := range keys {
		if k != s.k(invalidationsKey) && k != s.k(keyRevocationsKey) && !strings.HasPrefix(k, s.k("deleted:")) {
			out = append(out, k)
		}
	}
	return out
}

func TestListLiveStreamsNewestFirst(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	var want []string
	for i := range 5 {
		ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "stream " + string(rune('a'+i))})
		if err != nil {
			t.Fatal(err)
		}
		want = append([]string{ls.ID}, want...)
		waitClockPast(ls.CreatedAt)
	}
	list, err := s.ListLiveStreams(ctx)
	if err != nil {
		t.Fatalf("ListLiveStreams: %v", err)
	}
	var got []string
	for _, ls := range list {
		got = append(got, ls.ID)
	}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("order %v, want %v", got, want)
	}
}

func TestAPIKeys(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	key, info, err := s.CreateAPIKey(ctx, "ci", []string{ScopeStreams, ScopeReadOnly})
	if err != nil {
		t.Fatalf("CreateAPIKey: %v", err)
	}
	if !ids.LooksLikeSecret("shoal", key) {
		t.Errorf("key %q does not look like shoal_<secret>", key)
	}
	if !ids.Valid(info.ID) || info.Name != "ci" || info.CreatedAt.IsZero() || info.Legacy {
		t.Errorf("info %+v", info)
	}
	got, err := s.VerifyAPIKey(ctx, key)
	if err != nil || !reflect.DeepEqual(got, info) {
		t.Errorf("VerifyAPIKey = %+v, %v; want %+v", got, err, info)
	}
	for _, bad := range []string{"", "shoal_", key + "x", key[:len(key)-1], strings.ToUpper(key)} {
		if _, err := s.VerifyAPIKey(ctx, bad); !errors.Is(err, ErrNotFound) {
			t.Errorf("VerifyAPIKey(%q) = %v, want ErrNotFound", bad, err)
		}
	}
	// Only the hash is stored.
	keys, _ := allKeys(ctx, s, "*")
	for _, k := range keys {
		if strings.Contains(k, key) {
			t.Errorf("plain key in Redis key name %q", k)
		}
		vals, _ := s.rdb.HGetAll(ctx, k).Result()
		for f, v := range vals {
			if strings.Contains(v, key) {
				t.Errorf("plain key stored in %s field %s", k, f)
			}
		}
	}
}

func TestAPIKeyListAndDelete(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	if list, err := s.ListAPIKeys(ctx); err != nil || len(list) != 0 {
		t.Fatalf("empty ListAPIKeys = %+v, %v", list, err)
	}
	k1, i1, err := s.CreateAPIKey(ctx, "one", []string{ScopeVideos})
	if err != nil {
		t.Fatal(err)
	}
	_, i2, err := s.CreateAPIKey(ctx, "two", []string{ScopeAdmin, ScopeReadOnly})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.ListAPIKeys(ctx)
	if err != nil || !reflect.DeepEqual(list, []APIKey{i1, i2}) {
		t.Fatalf("ListAPIKeys = %+v, %v; want %+v, %+v", list, err, i1, i2)
	}
	if !i2.HasScope(ScopeStreams) || i1.HasScope(ScopeStreams) || !i1.HasScope(ScopeVideos) {
		t.Errorf("HasScope wrong for %+v / %+v", i1, i2)
	}
	if err := s.DeleteAPIKey(ctx, i1.ID); err != nil {
		t.Fatalf("DeleteAPIKey: %v", err)
	}
	if _, err := s.VerifyAPIKey(ctx, k1); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoked key verifies: %v", err)
	}
	if err := s.DeleteAPIKey(ctx, i1.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("second DeleteAPIKey = %v, want ErrNotFound", err)
	}
	if err := s.DeleteAPIKey(ctx, ids.New()); !errors.Is(err, ErrNotFound) {
		t.Errorf("DeleteAPIKey(unknown) = %v, want ErrNotFound", err)
	}
	if list, _ := s.ListAPIKeys(ctx); len(list) != 1 || list[0].ID != i2.ID {
		t.Errorf("after delete: %+v", list)
	}
	if _, _, err := s.CreateAPIKey(ctx, "none", nil); err == nil {
		t.Error("CreateAPIKey without scopes succeeded")
	}
}

// writeLegacyAPIKey stores an API key the way Shoal did before keys had
// scopes and an index (a bare hash, no scopes field).
func writeLegacyAPIKey(t *testing.T, s *Store, name string) (string, string) {
	t.Helper()
	key, id := ids.NewSecret("shoal"), ids.New()
	h := ids.Hash(key)
	if err := s.rdb.HSet(t.Context(), s.k(apiKeyPrefix)+h, fieldID, id, fieldName, name,
		fieldCreatedAt, formatTime(now()), fieldKeyHash, h).Err(); err != nil {
		t.Fatal(err)
	}
	return key, id
}

func TestLegacyAPIKeys(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	// Issued before scopes: it keeps working, with every scope but admin.
	usedKey, usedID := writeLegacyAPIKey(t, s, "used")
	k, err := s.VerifyAPIKey(ctx, usedKey)
	if err != nil || !k.Legacy || k.ID != usedID || !reflect.DeepEqual(k.Scopes, LegacyAPIKeyScopes) || k.HasScope(ScopeAdmin) {
		t.Fatalf("legacy VerifyAPIKey = %+v, %v", k, err)
	}
	// Two more, never used since: listing finds them.
	_, idleID := writeLegacyAPIKey(t, s, "idle")
	idle2Key, idle2ID := writeLegacyAPIKey(t, s, "idle2")
	_, _, err = s.CreateAPIKey(ctx, "new", []string{ScopeVideos})
	if err != nil {
		t.Fatal(err)
	}
	list, err := s.ListAPIKeys(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := map[string]bool{}
	for _, k := range list {
		names[k.Name] = k.Legacy
	}
	if len(list) != 4 || !names["used"] || !names["idle"] || !names["idle2"] || names["new"] {
		t.Fatalf("ListAPIKeys with legacy keys = %+v", list)
	}
	if err := s.DeleteAPIKey(ctx, idleID); err != nil {
		t.Fatalf("DeleteAPIKey(legacy) = %v", err)
	}
	// A legacy key never listed nor used is found by DeleteAPIKey too.
	s2, _ := newTestStore(t)
	k2, id2 := writeLegacyAPIKey(t, s2, "unseen")
	if err := s2.DeleteAPIKey(ctx, id2); err != nil {
		t.Fatalf("DeleteAPIKey(unseen legacy) = %v", err)
	}
	if _, err := s2.VerifyAPIKey(ctx, k2); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoked legacy key verifies: %v", err)
	}
	if err := s.DeleteAPIKey(ctx, idle2ID); err != nil {
		t.Fatal(err)
	}
	if _, err := s.VerifyAPIKey(ctx, idle2Key); !errors.Is(err, ErrNotFound) {
		t.Errorf("revoked legacy key verifies: %v", err)
	}
	if list, _ := s.ListAPIKeys(ctx); len(list) != 2 {
		t.Errorf("after revoking two legacy keys: %+v", list)
	}
}

func TestRedisDiesAndComesBack(t *testing.T) {
	t.Parallel()
	s, srv := newTestStore(t)
	srv.ownRedis(t)
	ls, err := s.CreateLiveStream(t.Context(), LiveStreamSpec{Name: "before"})
	if err != nil {
		t.Fatal(err)
	}

	srv.Kill()
	ops := map[string]func(context.Context) error{
		"Ping": s.Ping,
		"CreateLiveStream": func(ctx context.Context) error {
			_, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "x"})
			return err
		},
		"GetLiveStream":   func(ctx context.Context) error { _, err := s.GetLiveStream(ctx, ls.ID); return err },
		"ListLiveStreams": func(ctx context.Context) error { _, err := s.ListLiveStreams(ctx); return err },
		"UpdateLiveStream": func(ctx context.Context) error {
			_, err := s.UpdateLiveStream(ctx, ls.ID, LiveStreamUpdate{Name: ptr("y")})
			return err
		},
		"DeleteLiveStream":  func(ctx context.Context) error { return s.DeleteLiveStream(ctx, ls.ID) },
		"ResetStreamKey":    func(ctx context.Context) error { _, err := s.ResetStreamKey(ctx, ls.ID); return err },
		"LiveStreamIDByKey": func(ctx context.Context) error { _, err := s.LiveStreamIDByKey(ctx, ls.StreamKey); return err },
		"CreateAPIKey": func(ctx context.Context) error {
			_, _, err := s.CreateAPIKey(ctx, "k", []string{ScopeAdmin})
			return err
		},
		"VerifyAPIKey": func(ctx context.Context) error { _, err := s.VerifyAPIKey(ctx, "shoal_x"); return err },
		"ListAPIKeys":  func(ctx context.Context) error { _, err := s.ListAPIKeys(ctx); return err },
		"DeleteAPIKey": func(ctx context.Context) error { return s.DeleteAPIKey(ctx, ls.ID) },
	}
	for name, op := range ops {
		// The store's own timeouts must end the call; the context only
		// guards the test against hanging forever.
		ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
		start := time.Now()
		err := op(ctx)
		cancel()
		if err == nil {
			t.Errorf("%s succeeded with Redis dead", name)
			continue
		}
		if !errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
			t.Errorf("%s error %v does not wrap ErrUnavailable", name, err)
		}
		t.Logf("%s failed in %v: %v", name, time.Since(start).Round(time.Millisecond), err)
	}

	srv.Restart(t)
	// The same Store recovers without being recreated; go-redis probes a
	// pool that failed to dial about once a second.
	waitReachable(t, s)
	// The restarted Redis is empty.
	if _, err := s.GetLiveStream(t.Context(), ls.ID); !errors.Is(err, ErrNotFound) {
		t.Errorf("GetLiveStream on the empty restarted Redis: %v, want ErrNotFound", err)
	}
	ls2, err := s.CreateLiveStream(t.Context(), LiveStreamSpec{Name: "after"})
	if err != nil {
		t.Fatalf("CreateLiveStream after restart: %v", err)
	}
	ls2.StreamKey = "" // only its hash is stored
	if got, err := s.GetLiveStream(t.Context(), ls2.ID); err != nil || got != ls2 {
		t.Errorf("GetLiveStream after restart = %+v, %v", got, err)
	}
}

func TestServerErrorIsNotUnavailable(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	// A key of the wrong type makes Redis answer WRONGTYPE: a bug, not an
	// outage.
	if err := s.rdb.Set(ctx, s.liveStreamKey("wrongtype"), "x", 0).Err(); err != nil {
		t.Fatal(err)
	}
	_, err := s.GetLiveStream(ctx, "wrongtype")
	if err == nil || errors.Is(err, ErrUnavailable) || errors.Is(err, ErrNotFound) {
		t.Errorf("GetLiveStream on a WRONGTYPE key = %v, want a plain error", err)
	}
	if err := s.rdb.HSet(ctx, s.liveStreamKey("corrupt"), fieldName, "n", fieldStreamKeyHash, "x", fieldCreatedAt, "yesterday").Err(); err != nil {
		t.Fatal(err)
	}
	_, err = s.UpdateLiveStream(ctx, "corrupt", LiveStreamUpdate{Name: ptr("m")})
	if err == nil || errors.Is(err, ErrUnavailable) || !strings.Contains(err.Error(), "corrupt record") {
		t.Errorf("UpdateLiveStream on a corrupt record = %v", err)
	}
}

func TestClosedStoreFails(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	if err := s.Close(); err != nil {
		t.Fatalf("Close: %v", err)
	}
	if _, err := s.GetLiveStream(t.Context(), "x"); err == nil {
		t.Errorf("GetLiveStream after Close succeeded")
	}
}

// waitReachable waits until Ping succeeds, for at most 10 s: the Store's
// reconnection is seen only by trying it.
func waitReachable(t *testing.T, s *Store) {
	t.Helper()
	deadline := time.NewTimer(10 * time.Second)
	defer deadline.Stop()
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		err := s.Ping(t.Context())
		if err == nil {
			return
		}
		select {
		case <-tick.C:
		case <-deadline.C:
			t.Fatalf("Store did not reconnect after Redis restarted: %v", err)
		}
	}
}

// waitClockPast returns once the wall clock, which the Store stamps live
// streams with, reads later than at (to the microsecond it stores), so that
// the next record is newer. It takes a few microseconds at most.
func waitClockPast(at time.Time) {
	for !now().After(at) {
		runtime.Gosched()
	}
}

func ptr[T any](v T) *T { return &v }

func TestLadderField(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "ladder", Ladder: "720p:3000k,360p:700k"})
	if err != nil {
		t.Fatal(err)
	}
	got, err := s.GetLiveStream(ctx, ls.ID)
	if err != nil || got.Ladder != "720p:3000k,360p:700k" {
		t.Fatalf("ladder %q, %v", got.Ladder, err)
	}
	upd, err := s.UpdateLiveStream(ctx, ls.ID, LiveStreamUpdate{Ladder: ptr("")})
	if err != nil || upd.Ladder != "" || upd.Name != "ladder" {
		t.Fatalf("after clearing: %+v, %v", upd, err)
	}
	if got, _ := s.GetLiveStream(ctx, ls.ID); got.Ladder != "" {
		t.Fatalf("ladder not cleared: %q", got.Ladder)
	}
}

func TestLiveStreamPlaybackPolicy(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "private", PlaybackPolicy: PlaybackSigned})
	if err != nil || ls.PlaybackPolicy != PlaybackSigned {
		t.Fatalf("CreateLiveStream(signed) = %+v, %v", ls, err)
	}
	if got, err := s.GetLiveStream(ctx, ls.ID); err != nil || got.PlaybackPolicy != PlaybackSigned {
		t.Fatalf("GetLiveStream = %+v, %v", got, err)
	}
	upd, err := s.UpdateLiveStream(ctx, ls.ID, LiveStreamUpdate{PlaybackPolicy: ptr(PlaybackPublic)})
	if err != nil || upd.PlaybackPolicy != PlaybackPublic || upd.Name != "private" {
		t.Fatalf("UpdateLiveStream(public) = %+v, %v", upd, err)
	}
	if got, _ := s.GetLiveStream(ctx, ls.ID); got.PlaybackPolicy != PlaybackPublic {
		t.Fatalf("after update: %+v", got)
	}
	list, err := s.ListLiveStreams(ctx)
	if err != nil || len(list) != 1 || list[0].PlaybackPolicy != PlaybackPublic {
		t.Fatalf("ListLiveStreams = %+v, %v", list, err)
	}
	if _, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "x", PlaybackPolicy: "secret"}); err == nil {
		t.Error("CreateLiveStream accepted an unknown policy")
	}
	if _, err := s.UpdateLiveStream(ctx, ls.ID, LiveStreamUpdate{PlaybackPolicy: ptr("")}); err == nil {
		t.Error("UpdateLiveStream accepted an empty policy")
	}
	if got, _ := s.GetLiveStream(ctx, ls.ID); got.PlaybackPolicy != PlaybackPublic {
		t.Errorf("a refused update changed the policy: %+v", got)
	}
}

// noPlainKeys fails unless no key name, field, member or value anywhere in
// Redis holds one of secrets.
func noPlainKeys(t *testing.T, s *Store, secrets ...string) {
	t.Helper()
	ctx := t.Context()
	keys, err := allKeys(ctx, s, "*")
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range keys {
		var texts []string
		switch typ := s.rdb.Type(ctx, k).Val(); typ {
		case "string":
			texts = []string{s.rdb.Get(ctx, k).Val()}
		case "hash":
			for f, v := range s.rdb.HGetAll(ctx, k).Val() {
				texts = append(texts, f, v)
			}
		case "zset":
			texts = s.rdb.ZRange(ctx, k, 0, -1).Val()
		case "set":
			texts = s.rdb.SMembers(ctx, k).Val()
		case "list":
			texts = s.rdb.LRange(ctx, k, 0, -1).Val()
		case "stream":
			for _, m := range s.rdb.XRange(ctx, k, "-", "+").Val() {
				for f, v := range m.Values {
					texts = append(texts, f, fmt.Sprint(v))
				}
			}
		default:
			t.Fatalf("key %s has type %q, which the check does not read", k, typ)
		}
		texts = append(texts, k)
		for _, txt := range texts {
			for _, sec := range secrets {
				if strings.Contains(txt, sec) {
					t.Errorf("Redis key %s holds the plain stream key %q", k, sec)
				}
			}
		}
	}
}

func TestStreamKeysStoredHashed(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	ls, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "hashed"})
	if err != nil {
		t.Fatal(err)
	}
	noPlainKeys(t, s, ls.StreamKey)
	if list, err := s.ListLiveStreams(ctx); err != nil || len(list) != 1 || list[0].StreamKey != "" || list[0].StreamKeyHash != ids.Hash(ls.StreamKey) {
		t.Errorf("ListLiveStreams = %+v, %v; want one stream with its key's hash and no key", list, err)
	}
	upd, err := s.UpdateLiveStream(ctx, ls.ID, LiveStreamUpdate{Name: ptr("x")})
	if err != nil || upd.StreamKey != "" {
		t.Errorf("UpdateLiveStream = %+v, %v; want no plain key", upd, err)
	}
}

// TestMigrateLegacyStreamKey: a live stream written before stream keys were
// stored hashed (plain key in the record, index keyed by its hash) keeps
// working before and after the migration, which leaves only the hash.
func TestMigrateLegacyStreamKey(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	const id, plain = "legacy1", "sk_legacylegacylegacylegacylegacyle"
	// Exactly what the old CreateLiveStream wrote.
	if err := s.rdb.HSet(ctx, s.liveStreamKey(id), fieldName, "old show", fieldLegacyStreamKey, plain,
		fieldCreatedAt, formatTime(now()), fieldPlaybackPolicy, PlaybackPublic, fieldLadder, "", fieldSourceURL, "").Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.Set(ctx, s.k(streamKeyPrefix)+ids.Hash(plain), id, 0).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.ZAdd(ctx, s.k(liveStreamsIndex), redis.Z{Score: 1, Member: id}).Err(); err != nil {
		t.Fatal(err)
	}
	// A record made the new way is left alone.
	fresh, err := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "new"})
	if err != nil {
		t.Fatal(err)
	}
	// Before the migration: the key works, reads never show it.
	if got, err := s.LiveStreamIDByKey(ctx, plain); err != nil || got != id {
		t.Fatalf("legacy key resolves to %q, %v", got, err)
	}
	if ls, err := s.GetLiveStream(ctx, id); err != nil || ls.StreamKey != "" || ls.StreamKeyHash != ids.Hash(plain) {
		t.Fatalf("GetLiveStream(legacy) = %+v, %v", ls, err)
	}

	n, err := s.MigrateStreamKeys(ctx, 1)
	if err != nil || n != 1 {
		t.Fatalf("MigrateStreamKeys = %d, %v; want 1 record migrated", n, err)
	}
	noPlainKeys(t, s, plain, fresh.StreamKey)
	if got, err := s.LiveStreamIDByKey(ctx, plain); err != nil || got != id {
		t.Errorf("after migration the legacy key resolves to %q, %v", got, err)
	}
	if ls, err := s.GetLiveStream(ctx, id); err != nil || ls.Name != "old show" || ls.StreamKeyHash != ids.Hash(plain) {
		t.Errorf("GetLiveStream(legacy) after migration = %+v, %v", ls, err)
	}
	if n, err := s.MigrateStreamKeys(ctx, 100); err != nil || n != 0 {
		t.Errorf("second MigrateStreamKeys = %d, %v; want nothing to do", n, err)
	}
	// Resetting a migrated stream's key revokes the legacy one.
	reset, err := s.ResetStreamKey(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := s.LiveStreamIDByKey(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Errorf("legacy key after reset: %v, want ErrNotFound", err)
	}
	if got, err := s.LiveStreamIDByKey(ctx, reset.StreamKey); err != nil || got != id {
		t.Errorf("new key resolves to %q, %v", got, err)
	}
	if n, _ := allKeys(ctx, s, s.k(streamKeyPrefix)+"*"); len(n) != 2 {
		t.Errorf("stream key index has %d entries, want 2", len(n))
	}
}

// TestResetLegacyStreamKey: a reset before the migration ran drops the
// plain key too.
func TestResetLegacyStreamKey(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	const id, plain = "legacy2", "sk_legacylegacylegacylegacylegacy22"
	if err := s.rdb.HSet(ctx, s.liveStreamKey(id), fieldName, "old", fieldLegacyStreamKey, plain, fieldCreatedAt, formatTime(now())).Err(); err != nil {
		t.Fatal(err)
	}
	if err := s.rdb.Set(ctx, s.k(streamKeyPrefix)+ids.Hash(plain), id, 0).Err(); err != nil {
		t.Fatal(err)
	}
	reset, err := s.ResetStreamKey(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	noPlainKeys(t, s, plain, reset.StreamKey)
	if _, err := s.LiveStreamIDByKey(ctx, plain); !errors.Is(err, ErrNotFound) {
		t.Errorf("legacy key after reset: %v, want ErrNotFound", err)
	}
}

func TestKeyRevocations(t *testing.T) {
	t.Parallel()
	s, _ := newTestStore(t)
	ctx := t.Context()
	cur, err := s.KeyRevocationsCursor(ctx)
	if err != nil || cur != "0-0" {
		t.Fatalf("KeyRevocationsCursor = %q, %v", cur, err)
	}
	a, _ := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "a"})
	b, _ := s.CreateLiveStream(ctx, LiveStreamSpec{Name: "b"})
	if _, err := s.UpdateLiveStream(ctx, a.ID, LiveStreamUpdate{Name: ptr("renamed")}); err != nil {
		t.Fatal(err)
	}
	// Nothing yet: the block runs out.
	got, next, err := s.KeyRevocations(ctx, cur, 10*time.Millisecond)
	if err != nil || len(got) != 0 || next != cur {
		t.Fatalf("KeyRevocations with none = %v, %q, %v", got, next, err)
	}
	// A reader blocked on the stream hears of a reset at once.
	done := make(chan []KeyRevocation, 1)
	go func() {
		got, _, err := s.KeyRevocations(ctx, cur, 10*time.Second)
		if err != nil {
			t.Error(err)
		}
		done <- got
	}()
	if _, err := s.ResetStreamKey(ctx, a.ID); err != nil {
		t.Fatal(err)
	}
	if got := <-done; len(got) != 1 || got[0].ID != a.ID {
		t.Errorf("blocked reader got %+v, want the reset of %s", got, a.ID)
	}
	if err := s.DeleteLiveStream(ctx, b.ID); err != nil {
		t.Fatal(err)
	}
	got, next, err = s.KeyRevocations(ctx, cur, 0)
	if err != nil || len(got) != 2 || got[0].ID != a.ID || got[1].ID != b.ID || next != got[1].Cursor {
		t.Fatalf("KeyRevocations = %+v, %q, %v; want the reset of a, the deletion of b", got, next, err)
	}
	if last, err := s.KeyRevocationsCursor(ctx); err != nil || last != next {
		t.Errorf("KeyRevocationsCursor = %q, %v; want %q", last, err, next)
	}
}
