package fsstore_test

import (
	"bytes"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"testing/iotest"

	"github.com/shoal-video/shoal/internal/storage"
	"github.com/shoal-video/shoal/internal/storage/fsstore"
	"github.com/shoal-video/shoal/internal/storage/storagetest"
)

func newStore(t *testing.T) *fsstore.Store {
	s, err := fsstore.New(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func TestConformance(t *testing.T) {
	t.Parallel()
	storagetest.Run(t, func(t *testing.T) storage.Store { return newStore(t) })
}

func TestNewRefusesEmptyRoot(t *testing.T) {
	t.Parallel()
	if _, err := fsstore.New(""); err == nil {
		t.Fatal("New(\"\") succeeded")
	}
}

// Invalid keys are refused before touching the disk: a root that is a
// file would make any I/O fail with another error.
func TestInvalidKeysBeforeIO(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "file")
	if err := os.WriteFile(file, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	s, err := fsstore.New(file)
	if err != nil {
		t.Fatal(err)
	}
	storagetest.CheckInvalidKeys(t, s)
	if _, err := s.Stat(t.Context(), "ok/key"); err == nil || errors.Is(err, storage.ErrInvalidKey) {
		t.Errorf("Stat of a valid key under a file root: %v, want an I/O error", err)
	}
}

// A failed Put leaves no temporary file; the object is a plain file at
// <root>/<key>; Delete and DeletePrefix leave no empty directories.
func TestFilesOnDisk(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	if _, err := s.Put(ctx, "v1/720p/seg1.m4s", bytes.NewReader([]byte("abc")), 3); err != nil {
		t.Fatal(err)
	}
	if b, err := os.ReadFile(filepath.Join(s.Root(), "v1", "720p", "seg1.m4s")); err != nil || string(b) != "abc" {
		t.Fatalf("file: %q, %v", b, err)
	}
	// Readable by others (a worker, a web server), as written files are.
	if fi, err := os.Stat(filepath.Join(s.Root(), "v1", "720p", "seg1.m4s")); err != nil || fi.Mode().Perm() != 0o644 {
		t.Fatalf("object mode %v, %v; want 0644", fi.Mode(), err)
	}

	if _, err := s.Put(ctx, "v1/720p/seg2.m4s", iotest.TimeoutReader(bytes.NewReader(make([]byte, 100_000))), 100_000); err == nil {
		t.Fatal("Put from a failing reader succeeded")
	}
	if _, err := s.Put(ctx, "v1/720p/seg3.m4s", bytes.NewReader([]byte("abcd")), 3); !errors.Is(err, storage.ErrSizeMismatch) {
		t.Fatalf("Put with a wrong size: %v", err)
	}
	tmp, err := os.ReadDir(filepath.Join(s.Root(), ".tmp"))
	if err != nil || len(tmp) != 0 {
		t.Errorf("temporary files left: %v, %v", tmp, err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "v1", "720p", "seg2.m4s")); !os.IsNotExist(err) {
		t.Errorf("a failed put created the file: %v", err)
	}
	// .tmp is not listed.
	for info, err := range s.List(ctx, "", storage.ListOptions{}) {
		if err != nil || info.Key != "v1/720p/seg1.m4s" {
			t.Errorf("List: %+v, %v", info, err)
		}
	}
	if err := s.Delete(ctx, "v1/720p/seg1.m4s"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "v1")); !os.IsNotExist(err) {
		t.Errorf("Delete left the empty directory v1: %v", err)
	}
	for _, k := range []string{"a/b/c", "a/d"} {
		if _, err := s.Put(ctx, k, bytes.NewReader(nil), 0); err != nil {
			t.Fatal(err)
		}
	}
	if err := s.DeletePrefix(ctx, "a/b/"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "a", "b")); !os.IsNotExist(err) {
		t.Errorf("DeletePrefix left a/b: %v", err)
	}
	if err := s.DeletePrefix(ctx, "a/"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(s.Root(), "a")); !os.IsNotExist(err) {
		t.Errorf("DeletePrefix left a: %v", err)
	}
}

// A key below an object, or an object where a "directory" is, cannot be
// stored on a file system: a clear error, nothing lost.
func TestFileDirectoryClash(t *testing.T) {
	t.Parallel()
	s := newStore(t)
	ctx := t.Context()
	if _, err := s.Put(ctx, "x/obj", bytes.NewReader([]byte("1")), 1); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Put(ctx, "x/obj/below", bytes.NewReader([]byte("2")), 1); err == nil {
		t.Error("Put below an object succeeded")
	}
	if _, err := s.Put(ctx, "x", bytes.NewReader([]byte("3")), 1); err == nil {
		t.Error("Put over a directory succeeded")
	}
	if b, _, err := storage.ReadAll(ctx, s, "x/obj"); err != nil || string(b) != "1" {
		t.Errorf("x/obj = %q, %v", b, err)
	}
}

// The directory walk lists keys in byte order, as S3 does, for random keys
// whose names sort around "/" ("-", ".", digits), with random prefixes and
// StartAfter.
func TestListOrderRandom(t *testing.T) {
	t.Parallel()
	const alphabet = "ab-_0z~" // '-' < '/' < '0' < '_' < 'a' < '~'
	for seed := range uint64(4) {
		rng := rand.New(rand.NewPCG(seed, 17))
		word := func() string {
			b := make([]byte, 1+rng.IntN(3))
			for i := range b {
				b[i] = alphabet[rng.IntN(len(alphabet))]
			}
			return string(b)
		}
		set := map[string]bool{}
		for range 150 {
			parts := make([]string, 1+rng.IntN(3))
			for i := range parts {
				parts[i] = word()
			}
			set[strings.Join(parts, "/")] = true
		}
		// A file system cannot have "a" and "a/b": keep only leaves.
		var keys []string
		for k := range set {
			leaf := true
			for o := range set {
				if strings.HasPrefix(o, k+"/") {
					leaf = false
					break
				}
			}
			if leaf {
				keys = append(keys, k)
			}
		}
		slices.Sort(keys)
		s := newStore(t)
		for _, k := range keys {
			if _, err := s.Put(t.Context(), k, bytes.NewReader(nil), 0); err != nil {
				t.Fatal(err)
			}
		}
		listed := func(prefix, after string) []string {
			var out []string
			for info, err := range s.List(t.Context(), prefix, storage.ListOptions{StartAfter: after}) {
				if err != nil {
					t.Fatal(err)
				}
				out = append(out, info.Key)
			}
			return out
		}
		for range 40 {
			prefix, after := "", ""
			if rng.IntN(2) == 0 {
				prefix = keys[rng.IntN(len(keys))]
				prefix = prefix[:1+rng.IntN(len(prefix))]
				if strings.HasSuffix(prefix, "/") && rng.IntN(2) == 0 {
					prefix = strings.TrimSuffix(prefix, "/")
				}
			}
			if rng.IntN(2) == 0 {
				after = keys[rng.IntN(len(keys))]
				after = after[:1+rng.IntN(len(after))]
			}
			if storage.CheckPrefix(prefix) != nil {
				continue
			}
			var want []string
			for _, k := range keys {
				if strings.HasPrefix(k, prefix) && k > after {
					want = append(want, k)
				}
			}
			if got := listed(prefix, after); !slices.Equal(got, want) {
				t.Fatalf("seed %d: List(%q, after %q) =\n%v\nwant\n%v", seed, prefix, after, got, want)
			}
		}
	}
}
