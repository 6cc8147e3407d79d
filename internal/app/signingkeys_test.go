package app

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
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
