package app

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/shoal-video/shoal/internal/playback"
	"github.com/shoal-video/shoal/internal/testutil"
)

// The first origin's key is shared; a second origin adopts it (its own
// file replaced); with Redis down an origin keeps its own and says so.
func TestSharedSigningKey(t *testing.T) {
	t.Parallel()
	store, rs := newTestStore(t)
	ctx := t.Context()
	logs := &testutil.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	pathA, pathB := filepath.Join(t.TempDir(), "k.pem"), filepath.Join(t.TempDir(), "k.pem")
	ownB, err := playback.LoadOrCreateKey(pathB)
	if err != nil {
		t.Fatal(err)
	}
	a, err := sharedSigningKey(ctx, store, "content", pathA, log)
	if err != nil {
		t.Fatal(err)
	}
	b, err := sharedSigningKey(ctx, store, "content", pathB, log)
	if err != nil {
		t.Fatal(err)
	}
	if !a.Equal(b) || b.Equal(ownB) {
		t.Fatal("the second origin does not sign with the first one's key")
	}
	if again, err := playback.LoadOrCreateKey(pathB); err != nil || !again.Equal(a) {
		t.Fatalf("the second origin's key file was not replaced: %v", err)
	}
	if st, err := os.Stat(pathB); err != nil || st.Mode().Perm() != playback.KeyFileMode {
		t.Fatalf("the replaced key file: %v %v", st.Mode(), err)
	}
	if !bytes.Contains(logs.Bytes(), []byte("now signs with the key the other origins")) {
		t.Errorf("no log line says the key was replaced:\n%s", logs.String())
	}
	// Another name is another key.
	p, err := sharedSigningKey(ctx, store, "playback", filepath.Join(t.TempDir(), "p.pem"), log)
	if err != nil || p.Equal(a) {
		t.Fatalf("the playback key is the content key (%v)", err)
	}
	rs.Kill()
	pathC := filepath.Join(t.TempDir(), "k.pem")
	c, err := sharedSigningKey(ctx, store, "content", pathC, log)
	if err != nil || c.Equal(a) {
		t.Fatalf("with redis down: %v (want the origin's own key)", err)
	}
	if !bytes.Contains(logs.Bytes(), []byte("could not share the signing key")) {
		t.Errorf("no warning with redis down:\n%s", logs.String())
	}
}

// A Redis that lost its data gets the running origin's keys back from its
// keeper, so that an origin started afterwards adopts them rather than
// offering its own. A key of another origin found there is reported, once,
// with what to do; so is Redis being unreachable, and its return.
func TestSigningKeysKeptInRedis(t *testing.T) {
	t.Parallel()
	store, rs := newTestStore(t)
	ctx := t.Context()
	logs := &testutil.Buffer{}
	log := slog.New(slog.NewTextHandler(logs, nil))
	a, err := sharedSigningKey(ctx, store, "content", filepath.Join(t.TempDir(), "k.pem"), log)
	if err != nil {
		t.Fatal(err)
	}
	k := newSigningKeyKeeper(store, map[string]ed25519.PrivateKey{"content": a}, log)
	if differ := k.check(ctx); len(differ) != 0 {
		t.Fatalf("keys differ at once: %v", differ)
	}

	rs.FlushAll(t) // Redis restarted without its data
	if differ := k.check(ctx); len(differ) != 0 {
		t.Fatalf("after the flush: %v", differ)
	}
	later, err := sharedSigningKey(ctx, store, "content", filepath.Join(t.TempDir(), "k.pem"), log)
	if err != nil {
		t.Fatal(err)
	}
	if !later.Equal(a) {
		t.Fatal("an origin started after Redis lost its data signs with a key of its own")
	}

	// Another origin's key in Redis: this one cannot take it on running.
	rs.FlushAll(t)
	_, other, _ := ed25519.GenerateKey(rand.Reader)
	if _, err := store.ShareSigningKey(ctx, "content", other.Seed()); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if differ := k.check(ctx); len(differ) != 1 || differ[0] != "content" {
			t.Fatalf("with another key in Redis: %v", differ)
		}
	}
	if n := strings.Count(logs.String(), "redis holds another signing key"); n != 1 {
		t.Fatalf("the disagreement was logged %d times, want once:\n%s", n, logs)
	}
	rs.Kill()
	k.check(ctx)
	if !strings.Contains(logs.String(), "could not check the shared signing key") {
		t.Fatalf("Redis down was not reported:\n%s", logs)
	}
}
