package storage_test

import (
	"bytes"
	"errors"
	"io"
	"slices"
	"testing"

	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/internal/storage/storagetest"
)

func newFS(t *testing.T) storage.Store {
	t.Helper()
	s, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// An overlay whose local part stays empty behaves as any store.
func TestOverlayConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storage.Store { return storage.Overlay(newFS(t), newFS(t)) })
}

func TestOverlayReadsLocalFirst(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	local, remote := newFS(t), newFS(t)
	o := storage.Overlay(local, remote)
	put := func(s storage.Store, key, data string) {
		t.Helper()
		if _, err := s.Put(ctx, key, bytes.NewReader([]byte(data)), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	put(local, "v/a", "local a")
	put(remote, "v/a", "remote a")
	put(remote, "v/b", "remote b")
	put(local, "v/c", "local c")
	put(remote, "v/d", "remote d")
	for key, want := range map[string]string{"v/a": "local a", "v/b": "remote b", "v/c": "local c", "v/d": "remote d"} {
		got, info, err := storage.ReadAll(ctx, o, key)
		if err != nil || string(got) != want || info.Size != int64(len(want)) {
			t.Fatalf("%s: %q %+v %v, want %q", key, got, info, err, want)
		}
	}
	if _, err := o.Stat(ctx, "v/e"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("Stat of a key neither holds: %v", err)
	}
	var keys []string
	var sizes []int64
	for info, err := range o.List(ctx, "v/", storage.ListOptions{}) {
		if err != nil {
			t.Fatal(err)
		}
		keys, sizes = append(keys, info.Key), append(sizes, info.Size)
	}
	if !slices.Equal(keys, []string{"v/a", "v/b", "v/c", "v/d"}) || sizes[0] != int64(len("local a")) {
		t.Fatalf("List: %q %v", keys, sizes)
	}
	keys = nil
	for info, err := range o.List(ctx, "v/", storage.ListOptions{StartAfter: "v/b"}) {
		if err != nil {
			t.Fatal(err)
		}
		keys = append(keys, info.Key)
	}
	if !slices.Equal(keys, []string{"v/c", "v/d"}) {
		t.Fatalf("List after v/b: %q", keys)
	}
	// Put goes to remote; deletes reach both.
	put(o, "v/e", "new")
	if _, err := remote.Stat(ctx, "v/e"); err != nil {
		t.Fatalf("Put did not reach remote: %v", err)
	}
	if err := o.Delete(ctx, "v/a"); err != nil {
		t.Fatal(err)
	}
	if _, err := o.Stat(ctx, "v/a"); !errors.Is(err, storage.ErrNotFound) {
		t.Fatalf("after Delete: %v", err)
	}
	if err := o.DeletePrefix(ctx, "v/"); err != nil {
		t.Fatal(err)
	}
	for _, s := range []storage.Store{local, remote} {
		for info, err := range s.List(ctx, "", storage.ListOptions{}) {
			t.Fatalf("left after DeletePrefix: %+v %v", info, err)
		}
	}
}

// An object that leaves the local layer (uploaded, its spool removed)
// while it is being served is read whole from the remote one.
func TestOverlaySeekerAcrossLayers(t *testing.T) {
	t.Parallel()
	ctx := t.Context()
	local, remote := newFS(t), newFS(t)
	o := storage.Overlay(local, remote)
	data := bytes.Repeat([]byte("segment "), 10_000)
	for _, s := range []storage.Store{local, remote} {
		if _, err := s.Put(ctx, "v/seg.m4s", bytes.NewReader(data), int64(len(data))); err != nil {
			t.Fatal(err)
		}
	}
	info, err := o.Stat(ctx, "v/seg.m4s")
	if err != nil {
		t.Fatal(err)
	}
	if err := local.Delete(ctx, "v/seg.m4s"); err != nil {
		t.Fatal(err)
	}
	r := storage.NewSeeker(ctx, o, info)
	defer r.Close()
	got, err := io.ReadAll(r)
	if err != nil || !bytes.Equal(got, data) {
		t.Fatalf("read across layers: %d bytes, %v", len(got), err)
	}
}
